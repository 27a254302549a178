"""Device and dtype choice for model work: CUDA when present (with mixed precision), CPU otherwise
(training in bfloat16 where the CPU has it in hardware).

CPU threads are set to the physical cores: hyper-threads and oversubscription slow small conv nets
down several-fold. A CUDA out-of-memory error becomes an AppError with a hint instead of a crash.
"""

from __future__ import annotations

import contextlib
import os

from core.errors import AppError


def physical_cores() -> int:
    """Real cores available to this process (not hyper-threads); at least 1."""
    try:
        import psutil

        cores = psutil.cpu_count(logical=False) or 0
    except Exception:  # psutil missing or unable to tell
        cores = 0
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = os.cpu_count() or 1
    if cores <= 0:
        cores = allowed
    return max(1, min(cores, allowed))


def set_cpu_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads (default: physical cores). Returns the number set."""
    import torch

    n = int(threads or physical_cores())
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def choose_device(preference: str = "auto"):
    """'auto' -> cuda if available else cpu; 'cuda' without a GPU is a clear error."""
    import torch

    preference = (preference or "auto").lower()
    if preference not in ("auto", "cpu", "cuda") and not preference.startswith("cuda:"):
        raise AppError(f"Unknown device '{preference}'.", "Use auto, cpu or cuda.")
    if preference == "cpu":
        set_cpu_threads()
        return torch.device("cpu")
    if preference.startswith("cuda"):
        if not torch.cuda.is_available():
            raise AppError("No CUDA GPU is available to this installation of torch.",
                           "Use --device cpu (or auto), or install a CUDA build of torch.")
        return torch.device(preference)
    if torch.cuda.is_available():
        return torch.device("cuda")
    set_cpu_threads()
    return torch.device("cpu")


def conv_layout(module, device):
    """The module's 4-D weights in channels-last order on the CPU, where oneDNN's convolutions then
    skip reordering every input and weight: scoring a 128-px tile 1.4-2x faster on an AVX2 CPU,
    results equal to 1e-5 (bench/README.md, eighteenth session). Unmeasured on CUDA: left as is."""
    import torch

    if getattr(device, "type", str(device)) == "cpu":
        module.to(memory_format=torch.channels_last)
    return module


def amp_dtype(device):
    """Mixed-precision dtype for autocast on this device, or None for full precision (CPU)."""
    import torch

    if getattr(device, "type", str(device)) != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device):
    """A context manager running the block in mixed precision on CUDA, a no-op elsewhere."""
    import torch

    dtype = amp_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX-512 BF16 or AMX): there, oneDNN's bf16
    convolutions are faster than float32 ones; elsewhere they are emulated and slower."""
    import torch

    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(bool(check()) for check in checks if check is not None)


def training_autocast(device):
    """The mixed precision of training steps: as autocast on CUDA; on a CPU with native bfloat16,
    bfloat16 too (the weights and the optimiser stay float32). Scoring stays in float32 on the CPU,
    so that a model scores the same on every CPU it is taken to. On an AVX-512 BF16 CPU a textured
    inspector made 1.23-1.35x the steps in 10 minutes with the same AUROCs (bench/README.md, session 32)."""
    import torch

    if getattr(device, "type", str(device)) == "cpu" and cpu_has_native_bf16():
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return autocast(device)


def synchronize(device) -> None:
    """Wait for queued GPU work, so wall-clock timings mean something; nothing to wait for on CPU."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def oom_guard(what: str = "This job"):
    """Turn out-of-memory errors (GPU or CPU) into an AppError that tells the user what to change."""
    import torch

    try:
        yield
    except torch.cuda.OutOfMemoryError:
        with contextlib.suppress(Exception):
            torch.cuda.empty_cache()
        raise AppError(f"{what} ran out of GPU memory.",
                       "Use a smaller image size or batch size, close other GPU programs, or use --device cpu.") from None
    except MemoryError:
        raise AppError(f"{what} ran out of memory.",
                       "Use a smaller image size or batch size, or close other programs.") from None
    except RuntimeError as exc:  # CPU allocator failures arrive as RuntimeError
        if "out of memory" in str(exc).lower() or "can't allocate memory" in str(exc).lower():
            raise AppError(f"{what} ran out of memory.",
                           "Use a smaller image size or batch size, or close other programs.") from None
        raise


def describe(device) -> str:
    import torch

    if getattr(device, "type", "") == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
