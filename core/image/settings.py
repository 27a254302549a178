"""Remembered image-studio choices (memory mode, scheduler, last model...) in the user config folder."""

from __future__ import annotations

import json

from core.paths import config_dir

FILE_NAME = "image_studio.json"
MEMORY_MODES = ("none", "attention_slicing", "vae_tiling", "cpu_offload")
MEMORY_MODE_LABELS = {"none": "Fastest (no memory saving)", "attention_slicing": "Attention slicing",
                      "vae_tiling": "Attention slicing + VAE tiling",
                      "cpu_offload": "Model CPU offload (+ slicing and tiling)"}
DEFAULTS = {"memory_mode": "none", "scheduler": "DPM++ 2M", "steps": 25, "guidance": 7.0,
            "width": 512, "height": 512, "model": "", "batch": 1}


def load_settings() -> dict:
    path = config_dir() / FILE_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        data = {}
    merged = {**DEFAULTS, **{k: v for k, v in data.items() if k in DEFAULTS}}
    if merged["memory_mode"] not in MEMORY_MODES:
        merged["memory_mode"] = "none"
    return merged


def save_settings(**changes) -> dict:
    data = load_settings()
    data.update({k: v for k, v in changes.items() if k in DEFAULTS})
    path = config_dir() / FILE_NAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tmp.replace(path)
    return data
