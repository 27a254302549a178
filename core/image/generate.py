"""Generation as a job: text-to-image, image-to-image, inpainting and outpainting.

`run_generation(params, ctx)` is a plain job function (see core/jobs.py). Each image is written
into the project (with its parameters and provenance) as soon as it exists, so nothing is held
only in memory. Progress carries a cheap latent preview; Cancel stops within one denoising step.
"""

from __future__ import annotations

import io
import random
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from core.errors import AppError, Cancelled
from core.image import memory
from core.image.metadata import png_bytes
from core.image.settings import MEMORY_MODES, load_settings

MODES = ("txt2img", "img2img", "inpaint", "outpaint")
DIRECTIONS = ("left", "right", "up", "down")
MAX_SEED = 2**32 - 1
MASK_BLUR = 4          # px: soft edge where generated and original pixels meet
OUTPAINT_OVERLAP = 16  # px of the original repainted so the seam blends
PREVIEW_INTERVAL_S = 0.1


class _NullContext:
    """Lets the engine run outside a JobRunner (benchmarks, scripts)."""

    def __init__(self):
        self.cancel_event = threading.Event()
        self.metrics: dict = {}
        self.project = None
        self.run_id = None

    def progress(self, step, total, message="", preview=None):
        pass

    def check_cancelled(self):
        if self.cancel_event.is_set():
            raise Cancelled()

    def log(self, line):
        pass


@dataclass
class GenerationResult:
    image: Any                 # PIL image
    seed: int
    params: dict               # everything recorded (JSON-safe)
    png: bytes                 # PNG with A1111 + Lienzo metadata
    image_id: int | None = None
    generation_id: int | None = None


@dataclass
class GenerationOutcome:
    results: list[GenerationResult]
    notices: list[str] = field(default_factory=list)
    load_seconds: float = 0.0
    reused_model: bool = False
    seconds_per_step: float = 0.0


# -- inputs -------------------------------------------------------------------------------------
def _open_image(value, what: str, project=None):
    """PIL image from a PIL image, bytes, a path or a project image id ({'image_id': n} or int)."""
    from PIL import Image, UnidentifiedImageError

    if value is None:
        return None
    if hasattr(value, "convert") and hasattr(value, "size"):
        return value
    try:
        if isinstance(value, dict) or isinstance(value, int) and not isinstance(value, bool):
            image_id = value["image_id"] if isinstance(value, dict) else value
            if project is None:
                raise AppError(f"The {what} refers to a project image, but no project is open.", "Open the project.")
            data = project.image_bytes(image_id)
            img = Image.open(io.BytesIO(data))
        elif isinstance(value, (bytes, bytearray)):
            img = Image.open(io.BytesIO(value))
        else:
            path = Path(value).expanduser()
            if not path.is_file():
                raise AppError(f"The {what} '{path}' does not exist.", "Choose an existing image file.")
            img = Image.open(path)
        img.load()
        return img
    except (UnidentifiedImageError, OSError) as exc:
        raise AppError(f"The {what} is not a readable image ({exc}).", "Choose a PNG, JPEG or WebP file.") from None


def round_size(value: int, multiple: int, what: str, notices: list[str]) -> int:
    value = int(value)
    if value <= 0:
        raise AppError(f"The {what} must be positive (got {value}).", f"Use a multiple of {multiple}, e.g. 512.")
    rounded = max(multiple, int(round(value / multiple)) * multiple)
    if rounded != value:
        notices.append(f"{what.capitalize()} {value} rounded to {rounded} (the model works in multiples of {multiple}).")
    return rounded


def _number(params: dict, key: str, typ, default, lo, hi, what: str):
    value = params.get(key)
    if value is None or value == "":
        return default
    try:
        value = typ(value)
    except (TypeError, ValueError):
        raise AppError(f"The {what} must be a number (got {params.get(key)!r}).", f"Use a value from {lo} to {hi}.") from None
    if not lo <= value <= hi:
        raise AppError(f"The {what} {value} is out of range.", f"Use a value from {lo} to {hi}.")
    return value


def _mode(params: dict) -> str:
    if params.get("mode"):
        mode = str(params["mode"])
        if mode not in MODES:
            raise AppError(f"Unknown generation mode '{mode}'.", "Use txt2img, img2img, inpaint or outpaint.")
        return mode
    if params.get("outpaint"):
        return "outpaint"
    if params.get("mask") is not None:
        return "inpaint"
    if params.get("init_image") is not None:
        return "img2img"
    return "txt2img"


def prepare_mask(mask, size: tuple[int, int], notices: list[str]):
    """Binary L mask (255 = repaint) at `size`; an empty mask is an error (nothing to do)."""
    import numpy as np
    from PIL import Image

    if mask.mode in ("RGBA", "LA") and mask.getextrema()[-1][0] < 255:
        mask = mask.getchannel("A")  # painted strokes on a transparent layer
    mask = mask.convert("L")
    if mask.size != size:
        notices.append(f"The mask ({mask.size[0]}×{mask.size[1]}) was resized to {size[0]}×{size[1]}.")
        mask = mask.resize(size, Image.Resampling.NEAREST)
    arr = (np.asarray(mask) > 127).astype(np.uint8) * 255
    if not arr.any():
        raise AppError("The mask is empty: nothing is marked for repainting.",
                       "Paint the area to change in white (or with the brush), or use image-to-image instead.")
    return Image.fromarray(arr, "L")


def outpaint_canvas(image, direction: str, pixels: int, multiple: int, notices: list[str]):
    """(extended image, mask): the image padded in `direction`, the new strip (+ overlap) marked."""
    import numpy as np
    from PIL import Image

    if direction not in DIRECTIONS:
        raise AppError(f"Unknown outpainting direction '{direction}'.", "Use left, right, up or down.")
    pixels = int(pixels)
    if pixels <= 0:
        raise AppError("The outpainting extension must be positive.", "Extend by e.g. 128 pixels.")
    w, h = image.size
    horizontal = direction in ("left", "right")
    total = (w if horizontal else h) + pixels
    new_total = max(multiple, -(-total // multiple) * multiple)  # round up so the strip is never smaller
    if new_total != total:
        notices.append(f"Extension {pixels} px grown to {pixels + new_total - total} px so the size is a multiple of {multiple}.")
    pixels += new_total - total
    arr = np.asarray(image.convert("RGB"))
    pad = {"left": ((0, 0), (pixels, 0)), "right": ((0, 0), (0, pixels)),
           "up": ((pixels, 0), (0, 0)), "down": ((0, pixels), (0, 0))}[direction]
    # Edge-replicated pixels give the model the neighbouring colours to continue from.
    extended = np.pad(arr, pad + ((0, 0),), mode="edge")
    mask = np.zeros(extended.shape[:2], np.uint8)
    ov = min(OUTPAINT_OVERLAP, (w if horizontal else h) // 4)
    if direction == "left":
        mask[:, : pixels + ov] = 255
    elif direction == "right":
        mask[:, w - ov:] = 255
    elif direction == "up":
        mask[: pixels + ov, :] = 255
    else:
        mask[h - ov:, :] = 255
    return Image.fromarray(extended, "RGB"), Image.fromarray(mask, "L")


def composite(original, generated, mask):
    """Keep the original outside the mask (soft edge), the generated pixels inside."""
    from PIL import Image, ImageFilter

    soft = mask.filter(ImageFilter.GaussianBlur(MASK_BLUR)) if MASK_BLUR else mask
    # Blurring shrinks the marked area's edge; max() keeps everything painted fully repainted.
    from PIL import ImageChops

    soft = ImageChops.lighter(soft, mask)
    return Image.composite(generated.convert("RGB"), original.convert("RGB"), soft)


@lru_cache(maxsize=1)
def library_versions() -> dict:
    import importlib.metadata as md

    import core

    out = {"lienzo": core.__version__}
    for name in ("diffusers", "torch", "transformers"):  # cached: the same for the whole session
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = ""
    return out


# -- the job --------------------------------------------------------------------------------------
def run_generation(params: dict, ctx=None) -> GenerationOutcome:
    """Job function. params: model, prompt, negative_prompt, steps, guidance, width, height, seed,
    batch, scheduler, memory_mode, init_image, strength, mask, outpaint={direction, pixels},
    prediction_type (epsilon | v_prediction, for SD 2.x files), device, config_dir, out (a PNG path; with batch > 1 the index is appended)."""
    ctx = ctx or _NullContext()
    # The remembered settings fill what the caller left out (read only then: it is a file read).
    settings = load_settings() if any(params.get(k) is None for k in ("steps", "guidance", "memory_mode")) \
        else {}
    notices: list[str] = []
    model_path = params.get("model")
    if not model_path:
        raise AppError("No model chosen.", "Choose a Stable Diffusion folder or .safetensors file.")
    mode = _mode(params)
    prompt = str(params.get("prompt") or "")
    negative = str(params.get("negative_prompt") or "")
    steps = _number(params, "steps", int, settings.get("steps"), 1, 150, "number of steps")
    guidance = _number(params, "guidance", float, settings.get("guidance"), 0.0, 30.0, "guidance scale")
    batch = _number(params, "batch", int, 1, 1, 64, "batch count")
    memory_mode = params.get("memory_mode") or settings.get("memory_mode")
    if memory_mode not in MEMORY_MODES:
        raise AppError(f"Unknown memory mode '{memory_mode}'.", "Choose one of: " + ", ".join(MEMORY_MODES) + ".")
    seed = params.get("seed")
    try:
        seed = None if seed is None or seed == "" else int(seed)
    except (TypeError, ValueError):
        raise AppError(f"The seed must be a whole number (got {seed!r}).", "Use e.g. 1234, or leave it empty for a random seed.") from None
    if seed is None or seed < 0:
        seed = random.SystemRandom().randint(0, MAX_SEED)  # random, but reported and recorded
    if seed > MAX_SEED:
        raise AppError(f"The seed {seed} is too large.", f"Use a seed from 0 to {MAX_SEED}, or -1 for random.")
    default_strength = 0.75 if mode == "img2img" else 1.0
    strength = _number(params, "strength", float, default_strength, 0.01, 1.0, "strength")

    project = ctx.project
    init = _open_image(params.get("init_image"), "init image", project)
    mask_in = _open_image(params.get("mask"), "mask", project)
    if mode in ("img2img", "inpaint", "outpaint") and init is None:
        raise AppError(f"{mode} needs a starting image.", "Choose an init image (or the current canvas image).")
    if mode == "inpaint" and mask_in is None:
        raise AppError("Inpainting needs a mask.", "Paint the area to repaint, or choose a mask image.")

    ctx.progress(0, 0, "Loading model…")
    from core.image.pipelines import apply_memory_mode, load_pipeline

    loaded, reused = load_pipeline(model_path, memory_mode=memory_mode, device=params.get("device"),
                                   config_dir=params.get("config_dir"))
    ctx.check_cancelled()
    multiple = loaded.vae_scale_factor

    # -- sizes, images, mask --
    mask = None
    outpaint_meta: dict = {}
    if mode == "outpaint":
        out = params["outpaint"] if isinstance(params.get("outpaint"), dict) else {}
        init = init.convert("RGB")
        rw = round_size(init.size[0], multiple, "image width", notices)
        rh = round_size(init.size[1], multiple, "image height", notices)
        if (rw, rh) != init.size:
            init = init.resize((rw, rh))
        before = init.size
        init, mask = outpaint_canvas(init, out.get("direction", "right"), out.get("pixels", 128), multiple, notices)
        width, height = init.size
        outpaint_meta = {"direction": out.get("direction", "right"),
                         "pixels": (width - before[0]) + (height - before[1])}
    else:
        if params.get("width") or params.get("height"):
            width = round_size(params.get("width") or params.get("height"), multiple, "width", notices)
            height = round_size(params.get("height") or params.get("width"), multiple, "height", notices)
        elif init is not None:
            width = round_size(init.size[0], multiple, "width", notices)
            height = round_size(init.size[1], multiple, "height", notices)
        else:
            width = height = loaded.default_size
        if init is not None:
            init = init.convert("RGB")
            if init.size != (width, height):
                notices.append(f"The init image ({init.size[0]}×{init.size[1]}) was resized to {width}×{height}.")
                init = init.resize((width, height), resample=3)  # bicubic
        if mode == "inpaint":
            mask = prepare_mask(mask_in, (width, height), notices)
    pipe_mode = {"outpaint": "inpaint"}.get(mode, mode)
    if loaded.inpainting_unet and mode in ("txt2img", "img2img"):
        # An inpainting checkpoint: text-to-image and image-to-image are inpainting with everything marked.
        from PIL import Image

        if init is None:
            init = Image.new("RGB", (width, height), (127, 127, 127))
            strength = 1.0
        mask = Image.new("L", (width, height), 255)
        pipe_mode = "inpaint"

    # -- memory: refuse early, from an estimate, rather than crash midway --
    dtype_bytes = 2 if "16" in str(loaded.dtype) else 4
    needed = memory.estimate_generation_bytes(
        int(loaded.pipe.unet.config.block_out_channels[0]), int(loaded.pipe.vae.config.block_out_channels[0]),
        width, height, dtype_bytes=dtype_bytes, cfg=guidance > 1.0, memory_mode=memory_mode)
    memory.check_fits(needed, memory.available_bytes(loaded.device), width, height, memory_mode, loaded.device)

    from core.image.schedulers import SCHEDULERS, canonical_name, make_scheduler

    scheduler_name = canonical_name(params["scheduler"]) if params.get("scheduler") else loaded.default_scheduler
    scheduler_config = dict(loaded.base_scheduler_config)
    prediction = params.get("prediction_type")
    if prediction:
        # SD 2.x 512 px "base" checkpoints predict noise, the 768 px ones v: the weights do not say which.
        if prediction not in ("epsilon", "v_prediction"):
            raise AppError(f"Unknown prediction type '{prediction}'.", "Use epsilon or v_prediction.")
        scheduler_config["prediction_type"] = prediction
    versions = library_versions()
    source = loaded.source
    model_meta = {"name": source.name, "hash": loaded.model_hash, "family": source.family,
                  "kind": source.kind, "path": str(source.path)}

    import torch

    from core.image.preview import latents_to_preview

    outcome = GenerationOutcome(results=[], notices=notices, load_seconds=loaded.load_seconds, reused_model=reused)
    step_times: list[float] = []
    last_preview = [0.0]
    with loaded.lock:  # one generation at a time per loaded model
        pipe = loaded.variant(pipe_mode)
        # A fresh scheduler per generation: no state carried over, and the choice costs no reload.
        if scheduler_name in SCHEDULERS:
            pipe.scheduler = make_scheduler(scheduler_name, scheduler_config)
        else:  # a scheduler kind Lienzo has no name for: the model's own, fresh
            import diffusers

            cls = getattr(diffusers, loaded.base_scheduler_config["_class_name"])
            pipe.scheduler = cls.from_config(scheduler_config)
        apply_memory_mode(loaded, pipe, memory_mode)
        for index in range(batch):
            ctx.check_cancelled()
            item_seed = (seed + index) % (MAX_SEED + 1)
            last = [time.perf_counter()]

            def on_step(p, i, t, kwargs, index=index):
                now = time.perf_counter()
                if i > 0:  # the first interval also holds prompt encoding: not a denoising step
                    step_times.append(now - last[0])
                last[0] = now
                if ctx.cancel_event.is_set():
                    raise Cancelled()  # stops now: the remaining steps and the decode are skipped
                per = int(getattr(p, "_num_timesteps", 0) or steps)
                preview = None
                if now - last_preview[0] >= PREVIEW_INTERVAL_S or i + 1 == per:
                    # Only as often as the GUI can show it: fast GPUs must not pay for unseen previews.
                    preview = latents_to_preview(kwargs["latents"], xl=source.is_xl)
                    last_preview[0] = now
                ctx.progress(index * per + i + 1, batch * per,
                             f"Image {index + 1}/{batch} · step {i + 1}/{per}", preview=preview)
                return kwargs

            # A CPU generator gives the same noise on every device: same seed, same picture.
            generator = torch.Generator("cpu").manual_seed(item_seed)
            call = dict(prompt=prompt, negative_prompt=negative or None, num_inference_steps=steps,
                        guidance_scale=guidance, generator=generator, callback_on_step_end=on_step,
                        callback_on_step_end_tensor_inputs=["latents"])
            if pipe_mode == "txt2img":
                call.update(width=width, height=height)
            elif pipe_mode == "img2img":
                call.update(image=init, strength=strength)
            else:
                call.update(image=init, mask_image=mask, width=width, height=height, strength=strength)
            try:
                image = pipe(**call).images[0]
            except (Cancelled, AppError):
                raise
            except Exception as exc:
                if memory.is_out_of_memory(exc):
                    from core.models.cache import free_memory

                    free_memory()
                    raise memory.out_of_memory_error(memory_mode, width, height, loaded.device) from None
                raise
            if mask is not None and mode in ("inpaint", "outpaint"):
                image = composite(init, image, mask)
            item = {"mode": mode, "prompt": prompt, "negative_prompt": negative, "steps": steps,
                    "guidance": guidance, "width": width, "height": height, "seed": item_seed,
                    "scheduler": scheduler_name, "batch_index": index, "batch_count": batch,
                    "memory_mode": memory_mode, "device": loaded.device, "dtype": str(loaded.dtype).replace("torch.", ""),
                    "model": model_meta, "versions": versions}
            if mode != "txt2img":
                item["strength"] = strength
            if prediction:
                item["prediction_type"] = prediction
            if mode == "outpaint":
                item["outpaint"] = dict(outpaint_meta)
            if notices:
                item["notices"] = list(notices)
            data = png_bytes(image, item)
            result = GenerationResult(image=image, seed=item_seed, params=item, png=data)
            if project is not None:
                # Stored at once: a crash or a cancel later in the batch loses nothing already made.
                result.image_id = project.add_image(data, f"{mode} {item_seed}.png", origin="generated", params=item)
                result.generation_id = project.record_generation(
                    "image", source.name, item, item_seed, prompt, f"image:{result.image_id}",
                    image_id=result.image_id, run_id=ctx.run_id)
            if params.get("out"):
                out_path = Path(params["out"])
                if batch > 1:
                    out_path = out_path.with_name(f"{out_path.stem}-{index + 1}{out_path.suffix}")
                from core.image.metadata import export_png

                export_png(image, item, out_path)
                result.params = {**item}
            outcome.results.append(result)
            ctx.log(f"image {index + 1}/{batch}: seed {item_seed}")
    outcome.seconds_per_step = sum(step_times) / len(step_times) if step_times else 0.0
    ctx.metrics.update({"seeds": [r.seed for r in outcome.results], "seconds_per_step": outcome.seconds_per_step,
                        "load_seconds": loaded.load_seconds, "reused_model": reused,
                        "image_ids": [r.image_id for r in outcome.results], "notices": notices})
    return outcome
