"""Model folders: `model.safetensors` + `config.json`. Nothing is ever unpickled. config.json holds
the sha256 of the weights, so a file altered or swapped after training is refused, not trusted.
Training checkpoints (for resume) use the same two formats.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from pathlib import Path

from core.errors import AppError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
FORMAT = "lienzo-inspector"
FORMAT_VERSION = 1


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def library_versions() -> dict:
    import numpy
    import safetensors
    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
           "safetensors": safetensors.__version__}
    try:
        import sklearn

        out["scikit-learn"] = sklearn.__version__
    except ImportError:
        pass
    return out


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_tensors(path: Path, tensors: dict, metadata: dict | None = None) -> str:
    """Write tensors as safetensors atomically; returns the file's sha256."""
    from safetensors.torch import save

    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)
    _atomic_write_bytes(Path(path), data)
    return hashlib.sha256(data).hexdigest()


def save_model(folder: str | os.PathLike, tensors: dict, config: dict) -> dict:
    """Write a model folder; returns the config written (with files_sha256 and versions)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise AppError(f"'{folder}' exists and is not a folder.", "Choose a new folder name for the model.")
    folder.mkdir(parents=True, exist_ok=True)
    digest = save_tensors(folder / WEIGHTS, tensors, metadata={"format": FORMAT})
    config = dict(config)
    config["format"] = FORMAT
    config["format_version"] = FORMAT_VERSION
    config["files_sha256"] = {WEIGHTS: digest}
    config.setdefault("library_versions", library_versions())
    write_config(folder, config)
    return config


def write_config(folder: Path, config: dict) -> None:
    _atomic_write_bytes(Path(folder) / CONFIG, json.dumps(config, indent=2, sort_keys=True).encode("utf-8"))


def read_config(folder: str | os.PathLike) -> dict:
    folder = Path(folder)
    if not folder.exists():
        raise AppError(f"The model folder '{folder}' does not exist.", "Check the path, or train a model first.")
    if not folder.is_dir():
        raise AppError(f"'{folder}' is not a model folder.",
                       "Give the folder written by 'lienzo inspect train' (config.json + model.safetensors).")
    path = folder / CONFIG
    if not path.is_file():
        raise AppError(f"The model folder '{folder}' has no {CONFIG}.",
                       "The folder is incomplete; copy the whole model folder again or retrain.")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AppError(f"{CONFIG} in '{folder}' is damaged ({exc}).",
                       "Copy the model folder again or retrain.") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise AppError(f"'{folder}' is not a Lienzo inspector model.",
                       "Give a folder written by 'lienzo inspect train' or 'train-table'.")
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise AppError(f"The model in '{folder}' was written by a newer Lienzo.", "Update Lienzo to use it.")
    return config


def load_model(folder: str | os.PathLike) -> tuple[dict, dict]:
    """(config, tensors) of a model folder, after checking the weights' sha256. Never unpickles."""
    from safetensors.torch import load

    folder = Path(folder)
    config = read_config(folder)
    path = folder / WEIGHTS
    if not path.is_file():
        raise AppError(f"The model folder '{folder}' has no {WEIGHTS}.",
                       "The weights file is missing; copy the whole model folder again or retrain.")
    data = path.read_bytes()
    expected = (config.get("files_sha256") or {}).get(WEIGHTS)
    if not expected or hashlib.sha256(data).hexdigest() != expected:
        raise AppError(f"The weights in '{folder}' do not match their recorded checksum (altered or damaged).",
                       "Lienzo refuses modified model files; copy the original folder again or retrain.")
    try:
        tensors = load(data)
    except Exception as exc:  # safetensors raises its own error types
        raise AppError(f"The weights in '{folder}' cannot be read ({exc}).", "Copy the model folder again.") from None
    return config, tensors
