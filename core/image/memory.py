"""Memory: an estimate made before generating (clear refusal instead of a crash) and OOM messages.

The estimate is deliberately simple — activations grow linearly with the pixel count (PyTorch's
scaled-dot-product attention does not materialise the n^2 attention matrix) — and errs high.
"""

from __future__ import annotations

from core.errors import AppError
from core.image.settings import MEMORY_MODE_LABELS

NEXT_MODE = {"none": "attention_slicing", "attention_slicing": "vae_tiling", "vae_tiling": "cpu_offload",
             "cpu_offload": None}
UNET_FACTOR = 40    # live activation tensors of the UNet's widest level, measured order of magnitude
VAE_FACTOR = 6      # live tensors of the VAE decoder at full resolution
VAE_TILE = 512      # diffusers' default tile size in pixels


def estimate_generation_bytes(unet_channels: int, vae_channels: int, width: int, height: int, *,
                              dtype_bytes: int, batch: int = 1, cfg: bool = True,
                              memory_mode: str = "none") -> int:
    """Working memory (beyond the weights) one generation needs, in bytes."""
    tokens = (width // 8) * (height // 8)
    unet = (2 if cfg else 1) * batch * tokens * unet_channels * dtype_bytes * UNET_FACTOR
    pixels = width * height
    if memory_mode in ("vae_tiling", "cpu_offload"):
        pixels = min(pixels, VAE_TILE * VAE_TILE)
    vae = batch * pixels * vae_channels * dtype_bytes * VAE_FACTOR
    return unet + vae


def available_bytes(device: str) -> int:
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def check_fits(needed: int, available: int, width: int, height: int, memory_mode: str, device: str) -> None:
    if needed <= available * 0.9:
        return
    gib = 1024 ** 3
    hint = f"Use a smaller size (this one needs about {needed / gib:.1f} GiB, {available / gib:.1f} GiB are free)"
    nxt = NEXT_MODE.get(memory_mode)
    if nxt and device.startswith("cuda"):
        hint += f", or switch the memory mode to '{MEMORY_MODE_LABELS[nxt]}'"
    raise AppError(f"A {width}×{height} image does not fit in the memory of this {device.upper()} device.",
                   hint + ".")


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def out_of_memory_error(memory_mode: str, width: int, height: int, device: str) -> AppError:
    nxt = NEXT_MODE.get(memory_mode)
    if device.startswith("cuda") and nxt:
        hint = (f"Switch the memory mode to '{MEMORY_MODE_LABELS[nxt]}' (memory mode '{nxt}'), "
                "or use a smaller size or batch.")
    else:
        hint = "Use a smaller size or batch, or close other programs that use memory."
    return AppError(f"Out of memory on the {device.upper()} while generating {width}×{height}.", hint)
