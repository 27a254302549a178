"""Loading Stable Diffusion pipelines (folder or single file) and keeping them loaded.

Always local files only and safetensors only. Single-file checkpoints get their configuration from
resources/diffusers/<family> (and the CLIP tokenizer from resources/diffusers/clip_tokenizer), so
loading never reaches the network. The pipeline stays in the shared model cache between
generations: changing the prompt, the scheduler, the attention slicing or the VAE tiling reuses it;
only model CPU offload (which places the weights differently) loads it again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import AppError
from core.image.families import ModelSource, inspect_model
from core.image.settings import MEMORY_MODES
from core.paths import data_dir

KIND = "diffusion"

# diffusers scheduler class -> the name Lienzo shows and records
SCHEDULER_CLASS_NAMES = {"DDIMScheduler": "DDIM", "EulerDiscreteScheduler": "Euler",
                         "EulerAncestralDiscreteScheduler": "Euler a", "DPMSolverMultistepScheduler": "DPM++ 2M",
                         "UniPCMultistepScheduler": "UniPC", "LMSDiscreteScheduler": "LMS",
                         "HeunDiscreteScheduler": "Heun", "PNDMScheduler": "PNDM"}

SINGLE_FILE_CLASSES = {("sd1", False): "StableDiffusionPipeline", ("sd2", False): "StableDiffusionPipeline",
                       ("sd1", True): "StableDiffusionInpaintPipeline",
                       ("sd2", True): "StableDiffusionInpaintPipeline",
                       ("sdxl", False): "StableDiffusionXLPipeline", ("sdxl", True): "StableDiffusionXLInpaintPipeline"}


@dataclass
class LoadedPipeline:
    """A loaded model and the pipelines built on its components (they share the weights)."""

    source: ModelSource
    pipe: Any
    device: str
    dtype: Any
    offload: bool
    load_seconds: float
    model_hash: str
    base_scheduler_config: dict
    default_scheduler: str
    key: str = ""
    memory_mode_applied: str | None = None
    variants: dict = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def vae_scale_factor(self) -> int:
        return int(getattr(self.pipe, "vae_scale_factor", 8) or 8)

    @property
    def default_size(self) -> int:
        return int(self.pipe.unet.config.sample_size) * self.vae_scale_factor

    @property
    def inpainting_unet(self) -> bool:
        return int(self.pipe.unet.config.in_channels) == 9

    def variant(self, mode: str):
        """The pipeline for 'txt2img', 'img2img' or 'inpaint', built once from the shared components."""
        if mode == "txt2img" and not self.inpainting_unet:
            return self.pipe
        if self.inpainting_unet:
            mode = "inpaint"  # a 9-channel UNet only runs in the inpainting pipeline
        if mode not in self.variants:
            import diffusers

            base = type(self.pipe).__name__
            xl = "XL" in base
            cls_name = {("img2img", False): "StableDiffusionImg2ImgPipeline",
                        ("img2img", True): "StableDiffusionXLImg2ImgPipeline",
                        ("inpaint", False): "StableDiffusionInpaintPipeline",
                        ("inpaint", True): "StableDiffusionXLInpaintPipeline"}[(mode, xl)]
            if base == cls_name:
                self.variants[mode] = self.pipe
            else:
                variant = getattr(diffusers, cls_name).from_pipe(self.pipe)
                variant.set_progress_bar_config(disable=True)
                if self.offload:
                    variant.enable_model_cpu_offload(device=self.device)
                self.variants[mode] = variant
        return self.variants[mode]

    def all_pipelines(self):
        return [self.pipe] + [v for v in self.variants.values() if v is not self.pipe]


def _quiet() -> None:
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.disable_progress_bar()
    dlog.set_verbosity_error()
    tlog.disable_progress_bar()
    tlog.set_verbosity_error()
    logging.getLogger("diffusers").setLevel(logging.ERROR)


def choose_device_dtype(device: str | None = None):
    """CUDA in half precision when available (the usual for SD weights), CPU in float32 otherwise."""
    import torch

    from core.models.cache import choose_device

    dev, _ = choose_device(device)
    return dev, (torch.float16 if dev.startswith("cuda") else torch.float32)


# -- model hash (A1111's "Model hash" is the first 10 hex digits of the file's sha256) ----------------
_hash_lock = threading.Lock()


def model_hash(source: ModelSource) -> str:
    """sha256 of the checkpoint (or of the folder's weight files), cached by path, size and mtime."""
    import hashlib

    from core.models.registry import sha256_file

    files = [source.path] if source.kind == "file" else sorted(source.path.rglob("*.safetensors"))
    stamp = [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    cache_path = data_dir() / "cache" / "model_hashes.json"
    key = str(source.path.resolve())
    with _hash_lock:
        try:
            cache = json.loads(cache_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            cache = {}
        entry = cache.get(key)
        if entry and entry.get("stamp") == stamp:
            return entry["sha256"]
        if source.kind == "file":
            digest = sha256_file(source.path)
        else:
            h = hashlib.sha256()
            for f in files:
                h.update(f.relative_to(source.path).as_posix().encode() + b"\0" + sha256_file(f).encode())
            digest = h.hexdigest()
        cache[key] = {"stamp": stamp, "sha256": digest}
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache), encoding="utf-8")
        tmp.replace(cache_path)
        return digest


# -- loading -------------------------------------------------------------------------------------------
def _folder_variant(path: Path) -> str | None:
    """'fp16' when a folder holds only fp16-variant weights (diffusion_pytorch_model.fp16.safetensors)."""
    unet = path / "unet"
    if list(unet.glob("diffusion_pytorch_model.safetensors")) or list(unet.glob("*.safetensors.index.json")):
        return None
    if list(unet.glob("*.fp16.safetensors")):
        return "fp16"
    return None


def _build_pipeline(source: ModelSource, dtype):
    _quiet()
    import diffusers

    if source.kind == "folder":
        index = json.loads((source.path / "model_index.json").read_text(encoding="utf-8"))
        cls = getattr(diffusers, index["_class_name"])
        kwargs: dict = {}
        if "XL" not in cls.__name__:
            # The NSFW checker is a separate model some folders carry; Lienzo does not run it.
            kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        variant = _folder_variant(source.path)
        return cls.from_pretrained(str(source.path), local_files_only=True, use_safetensors=True,
                                   dtype=dtype, variant=variant, **kwargs)

    from core.image.tokenizer import clip_tokenizer

    cls = getattr(diffusers, SINGLE_FILE_CLASSES[(source.family, source.inpainting)])
    kwargs = {}
    if "XL" not in cls.__name__:
        kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    # Shipped config folders carry no tokenizer: it is built from the shipped CLIP merges.
    if not (source.config_dir / "tokenizer").is_dir():
        kwargs["tokenizer"] = clip_tokenizer("!" if source.family == "sd2" else "<|endoftext|>")
    if source.family == "sdxl" and not (source.config_dir / "tokenizer_2").is_dir():
        kwargs["tokenizer_2"] = clip_tokenizer("!")
    return cls.from_single_file(str(source.path), config=str(source.config_dir), local_files_only=True,
                                dtype=dtype, **kwargs)


def _load(source: ModelSource, device: str, dtype, offload: bool):
    try:
        pipe = _build_pipeline(source, dtype)
    except AppError:
        raise
    except Exception as exc:
        from core.image.memory import is_out_of_memory

        if is_out_of_memory(exc):
            raise
        if "expected shape" in str(exc) and source.kind == "file":
            from core.image.families import FAMILY_NAMES

            raise AppError(f"The weights in '{source.name}' do not fit the {FAMILY_NAMES[source.family]} "
                           f"architecture ({str(exc).split(' If you want')[0]}).",
                           "The checkpoint is an unusual variant of its family; use its diffusers folder "
                           "(model_index.json, unet/, vae/ …) instead.") from None
        raise AppError(f"The model '{source.name}' could not be loaded: {type(exc).__name__}: {exc}",
                       "The files may be incomplete or belong to another model family; copy the model again "
                       "or choose another one.") from None
    pipe.set_progress_bar_config(disable=True)
    if offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    return pipe


def _estimate_bytes(source: ModelSource) -> int:
    if source.kind == "file":
        return source.path.stat().st_size
    return sum(f.stat().st_size for f in source.path.rglob("*.safetensors"))


def load_pipeline(path: str | Path, *, memory_mode: str = "none", device: str | None = None,
                  config_dir: str | Path | None = None, cache=None,
                  on_status=None) -> tuple[LoadedPipeline, bool]:
    """(loaded pipeline, reused) — reused is True when the model was already in memory.

    `config_dir` replaces the shipped config folder for single files (tests, unusual models).
    """
    from core.models.cache import default_cache
    from core.models.registry import ModelInfo

    if memory_mode not in MEMORY_MODES:
        raise AppError(f"Unknown memory mode '{memory_mode}'.", "Choose one of: " + ", ".join(MEMORY_MODES) + ".")
    cache = cache or default_cache()
    # Fast path for the next generation with the same model: one stat() instead of re-inspecting the
    # folder and re-choosing the device (milliseconds that would count against every image).
    quick = (str(path), str(config_dir or ""), device, memory_mode == "cpu_offload", os.environ.get("LIENZO_DEVICE"))
    known = _resolved.get(quick)
    if known is not None:
        stamp, key = known
        try:
            fresh = Path(path).expanduser().stat().st_mtime_ns == stamp
        except OSError:
            fresh = False
        if fresh and key in cache:
            try:
                return cache.get_or_load(key, _stale_loader).model, True
            except _Stale:  # unloaded meanwhile by another thread: take the full path
                pass
    source = inspect_model(path, config_dir=config_dir)
    dev, dtype = choose_device_dtype(device)
    # CPU offload moves weights between RAM and the GPU; without a GPU there is nothing to offload to.
    offload = memory_mode == "cpu_offload" and dev.startswith("cuda")
    stamp = source.path.stat().st_mtime_ns
    key = f"{KIND}:{source.path.resolve()}:{stamp}:{dev}:{dtype}:{'offload' if offload else 'resident'}:{config_dir or ''}"
    reused = key in cache
    if not reused:
        # One diffusion model at a time: switching models must not make memory grow.
        for other in [k for k in cache.loaded() if k.startswith(KIND + ":")]:
            cache.unload(other)
        if on_status:
            on_status(f"Loading {source.name}…")

    def loader(_device, _dtype):
        start = time.perf_counter()
        pipe = _load(source, dev, dtype, offload)
        scheduler_cfg = dict(pipe.scheduler.config)
        loaded = LoadedPipeline(source=source, pipe=pipe, device=dev, dtype=dtype, offload=offload,
                                load_seconds=0.0, model_hash=model_hash(source),
                                base_scheduler_config=scheduler_cfg,
                                default_scheduler=SCHEDULER_CLASS_NAMES.get(type(pipe.scheduler).__name__,
                                                                            type(pipe.scheduler).__name__),
                                key=key)
        loaded.load_seconds = time.perf_counter() - start
        return loaded, None

    info = ModelInfo(path=str(source.path), name=source.name, kind=KIND)
    entry = cache.get_or_load(key, loader, estimate_bytes=_estimate_bytes(source), info=info)
    _resolved[quick] = (stamp, key)
    return entry.model, reused


_resolved: dict[tuple, tuple[int, str]] = {}


class _Stale(Exception):
    pass


def _stale_loader(*_):
    raise _Stale()


def apply_memory_mode(loaded: LoadedPipeline, pipe, memory_mode: str) -> None:
    """Attention slicing and VAE tiling are switched per generation (no reload), only when they change:
    walking every attention module costs milliseconds."""
    # Tracked on the loaded model: its pipelines share the UNet and VAE these settings live in.
    if loaded.memory_mode_applied == memory_mode:
        return
    loaded.memory_mode_applied = memory_mode
    if memory_mode == "none":
        pipe.disable_attention_slicing()
        pipe.vae.disable_tiling()
    else:
        pipe.enable_attention_slicing()
        if memory_mode in ("vae_tiling", "cpu_offload"):
            pipe.vae.enable_tiling()
        else:
            pipe.vae.disable_tiling()


def unload_pipelines(cache=None) -> None:
    from core.models.cache import default_cache

    cache = cache or default_cache()
    for key in [k for k in cache.loaded() if k.startswith(KIND + ":")]:
        cache.unload(key)
