"""What a model path holds: a diffusers folder or a single checkpoint, and which model family.

Single files are recognised from their tensor names (read from the safetensors header, no weights
loaded), so an unknown or unsupported family gets a clear message before anything heavy happens.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from core.errors import AppError
from core.models.safety import refuse_pickle_file, require_safetensors, read_json

RESOURCES = Path(__file__).resolve().parents[2] / "resources" / "diffusers"

# diffusers pipeline classes Lienzo drives, by family.
FOLDER_CLASSES = {
    "StableDiffusionPipeline": "sd", "StableDiffusionImg2ImgPipeline": "sd",
    "StableDiffusionInpaintPipeline": "sd", "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusionXLImg2ImgPipeline": "sdxl", "StableDiffusionXLInpaintPipeline": "sdxl",
}

FAMILY_NAMES = {"sd1": "Stable Diffusion 1.x", "sd2": "Stable Diffusion 2.x", "sdxl": "Stable Diffusion XL",
                "sd": "Stable Diffusion"}

SUPPORTED_HINT = ("Lienzo runs Stable Diffusion 1.x, 2.x and XL models (and their inpainting versions), "
                  "as a diffusers folder or a single .safetensors checkpoint.")


SD_CONVERT_HINT = (
    "Lienzo opens only .safetensors weights, because pickle files (.ckpt, .bin, .pt) can run code when opened. "
    "Most models are also published as .safetensors: download that file instead. If you trust this file, "
    "convert it once in Python: sd = torch.load(path, map_location='cpu', weights_only=True); "
    "sd = sd.get('state_dict', sd); safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items() "
    "if hasattr(v, 'contiguous')}, 'model.safetensors').")


@dataclass
class ModelSource:
    path: Path
    kind: str            # "folder" or "file"
    family: str          # sd1, sd2, sdxl (sd for folders of the SD 1/2 pipeline class)
    inpainting: bool     # UNet with 9 input channels (image + mask + masked image latents)
    config_dir: Path | None = None   # for single files: the shipped diffusers config folder

    @property
    def name(self) -> str:
        return self.path.stem if self.kind == "file" else self.path.name

    @property
    def is_xl(self) -> bool:
        return self.family == "sdxl"


def safetensors_header(path: Path) -> dict:
    """The JSON header of a .safetensors file: tensor name -> {dtype, shape, offsets}."""
    try:
        with open(path, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            if size > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(fh.read(size))
    except (OSError, ValueError, struct.error) as exc:
        raise AppError(f"'{path.name}' is not a readable .safetensors file ({exc}).",
                       "The file may be incomplete; download or copy it again.") from None
    header.pop("__metadata__", None)
    return header


def _shape(header: dict, key: str):
    entry = header.get(key)
    return tuple(entry["shape"]) if entry else None


def detect_checkpoint_family(header: dict, name: str = "checkpoint") -> tuple[str, bool]:
    """(family, inpainting) from tensor names of an original (LDM/SGM-layout) checkpoint."""
    conv_in = _shape(header, "model.diffusion_model.input_blocks.0.0.weight")
    if conv_in is None:
        known = {
            "model.diffusion_model.joint_blocks.0.context_block.attn.qkv.weight": "Stable Diffusion 3",
            "double_blocks.0.img_attn.qkv.weight": "Flux",
            "model.diffusion_model.double_blocks.0.img_attn.qkv.weight": "Flux",
        }
        for key, what in known.items():
            if key in header:
                raise AppError(f"'{name}' is a {what} model, which Lienzo cannot run yet.", SUPPORTED_HINT)
        if any(k.startswith(("unet.", "vae.", "text_encoder.")) for k in header) or "conv_in.weight" in header:
            raise AppError(f"'{name}' holds a single diffusers component, not a whole Stable Diffusion checkpoint.",
                           "Choose the pipeline folder (with model_index.json) or a full checkpoint file.")
        raise AppError(f"'{name}' is not a model family Lienzo knows (no Stable Diffusion UNet inside).",
                       SUPPORTED_HINT)
    inpainting = len(conv_in) == 4 and conv_in[1] == 9
    if any(k.startswith("conditioner.embedders.1.") for k in header):
        return "sdxl", inpainting
    if any(k.startswith("conditioner.embedders.0.model.") for k in header):
        raise AppError(f"'{name}' is a Stable Diffusion XL refiner, which Lienzo does not run on its own.",
                       "Use an SDXL base model.")
    if any(k.startswith("cond_stage_model.model.") for k in header):
        return "sd2", inpainting
    if any(k.startswith("cond_stage_model.transformer.") for k in header):
        return "sd1", inpainting
    raise AppError(f"'{name}' has a diffusion UNet but no text encoder Lienzo recognises.", SUPPORTED_HINT)


def inspect_model(path: str | Path, config_dir: str | Path | None = None) -> ModelSource:
    """Classify `path`; raises AppError for pickles, non-pipelines and unknown families."""
    path = Path(path).expanduser()
    if not path.exists():
        raise AppError(f"The model '{path}' does not exist.", "Choose a diffusers folder or a .safetensors file.")
    if path.is_file():
        try:
            refuse_pickle_file(path)
        except AppError as exc:
            raise AppError(exc.message, SD_CONVERT_HINT) from None
        if path.suffix.lower() != ".safetensors":
            raise AppError(f"'{path.name}' is not a model file Lienzo can open.",
                           "Choose a diffusers folder or a .safetensors checkpoint.")
        family, inpainting = detect_checkpoint_family(safetensors_header(path), path.name)
        if config_dir is None:
            config_dir = RESOURCES / (family + ("-inpaint" if inpainting else ""))
        config_dir = Path(config_dir)
        if not (config_dir / "model_index.json").exists():
            raise AppError(f"The configuration for {FAMILY_NAMES.get(family, family)} is missing ('{config_dir}').",
                           "Reinstall Lienzo; its resources folder is incomplete.")
        return ModelSource(path, "file", family, inpainting, config_dir)

    index_path = path / "model_index.json"
    if not index_path.exists():
        if (path / "config.json").exists() or list(path.glob("*.safetensors")):
            raise AppError(f"'{path.name}' is a single model, not a diffusion pipeline (no model_index.json).",
                           "Choose the pipeline's top folder (it holds model_index.json, unet/, vae/, "
                           "text_encoder/, tokenizer/ and scheduler/).")
        raise AppError(f"'{path.name}' is not a diffusion pipeline folder (no model_index.json).",
                       "Choose a folder saved with diffusers' save_pretrained, or a .safetensors checkpoint.")
    index = read_json(index_path)
    cls = index.get("_class_name", "")
    if cls not in FOLDER_CLASSES:
        raise AppError(f"'{path.name}' is a {cls or 'unnamed'} pipeline, a model family Lienzo does not run.",
                       SUPPORTED_HINT)
    require_safetensors(path)  # refuses folders with pickle weights only, with the conversion hint
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        if not (path / sub).is_dir():
            raise AppError(f"The pipeline '{path.name}' lacks its '{sub}' folder.",
                           "Copy the whole pipeline folder again.")
    unet_cfg = read_json(path / "unet" / "config.json")
    inpainting = unet_cfg.get("in_channels") == 9
    family = FOLDER_CLASSES[cls]
    if family == "sd":
        family = "sd2" if unet_cfg.get("cross_attention_dim") == 1024 else "sd1"
    return ModelSource(path, "folder", family, inpainting)
