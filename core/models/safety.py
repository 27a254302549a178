"""Checks made before any model folder or file is loaded: safetensors only, no remote code."""

from __future__ import annotations

import json
from pathlib import Path

from core.errors import AppError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

CONVERT_HINT = (
    "Lienzo loads only .safetensors weights, because pickle files can run code when opened. "
    "If you trust the file, convert it once with the original library, e.g. in Python: "
    "model = AutoModel.from_pretrained(folder); model.save_pretrained(new_folder, safe_serialization=True) "
    "— or for a single checkpoint: torch.load(path, weights_only=True) then safetensors.torch.save_file(...)."
)


def refuse_pickle_file(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise AppError(f"'{path.name}' is a pickle checkpoint, which Lienzo does not open.", CONVERT_HINT)


def require_safetensors(folder: Path) -> list[Path]:
    """The folder's safetensors files (recursively); a clear error if it only has pickle weights."""
    folder = Path(folder)
    if not folder.exists():
        raise AppError(f"The model folder '{folder}' does not exist.", "Choose an existing folder.")
    if folder.is_file():
        refuse_pickle_file(folder)
        if folder.suffix.lower() == ".safetensors":
            return [folder]
        raise AppError(f"'{folder.name}' is not a model file Lienzo can open.",
                       "Choose a model folder or a .safetensors file.")
    safetensors = sorted(folder.rglob("*.safetensors"))
    if safetensors:
        return safetensors
    pickles = sorted(p for p in folder.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise AppError(
            f"The model in '{folder.name}' has only pickle weights ({pickles[0].name}).", CONVERT_HINT)
    raise AppError(f"'{folder}' holds no model weights (.safetensors).",
                   "Choose a folder saved with save_pretrained (config.json + model.safetensors).")


def refuse_remote_code(config: dict, where: str) -> None:
    """Models whose code lives in the repository (auto_map) would need trust_remote_code: refused."""
    if config.get("auto_map") or config.get("trust_remote_code"):
        raise AppError(
            f"The model in '{where}' needs its own Python code (trust_remote_code), which Lienzo never runs.",
            "Use a model whose architecture is built into transformers or diffusers.")


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AppError(f"'{path.name}' is missing in '{path.parent}'.",
                       "The folder is not a complete model; copy it again.") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AppError(f"'{path}' is not valid JSON ({exc}).", "The file is damaged; copy the model again.") from None
