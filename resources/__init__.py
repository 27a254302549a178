"""Files shipped with Lienzo: stylesheet, icons, default settings (and, from other features, templates)."""

from pathlib import Path

RESOURCES_DIR = Path(__file__).resolve().parent


def resource_path(*parts: str) -> Path:
    return RESOURCES_DIR.joinpath(*parts)
