"""Where Lienzo keeps its files on this machine (platformdirs), overridable for tests."""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "Lienzo"


def data_dir() -> Path:
    """User data folder: demo project, models folder. LIENZO_DATA_DIR overrides (tests, portable use)."""
    override = os.environ.get("LIENZO_DATA_DIR")
    if override:
        path = Path(override)
    else:
        import platformdirs  # only when needed: it is a measurable part of the GUI's start-up

        path = Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_dir() -> Path:
    override = os.environ.get("LIENZO_CONFIG_DIR")
    if override:
        path = Path(override)
    else:
        import platformdirs

        path = Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir() -> Path:
    """Default folder where the user puts local models (one sub-folder per model)."""
    path = data_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def demo_project_path() -> Path:
    return data_dir() / "Demo.lienzo"
