"""Loaded models kept in memory between requests, within a memory budget.

Loading a model costs seconds; keeping it costs memory. The cache keeps the most recently used
models until a new one would exceed the budget, then unloads the least recently used. A CUDA
out-of-memory error becomes an AppError with a hint, and the model that hit it is unloaded so the
next attempt starts clean. torch and transformers are imported here only when something loads.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from core.errors import AppError
from core.models import registry
from core.models.registry import ModelInfo


@dataclass
class LoadedModel:
    key: str
    info: ModelInfo
    model: Any
    tokenizer: Any
    device: str
    dtype: Any
    nbytes: int
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)


# -- device and precision -----------------------------------------------------------------------
def choose_device(prefer: str | None = None):
    """(device, dtype): CUDA in half precision when available, CPU in float32 otherwise.

    bfloat16 is preferred to float16 where the GPU has it: same memory, and T5-style models
    overflow in float16. LIENZO_DEVICE=cpu forces the CPU.
    """
    import torch

    preference = prefer or os.environ.get("LIENZO_DEVICE") or "auto"
    try:
        from core import device as core_device
    except ImportError:  # core.device belongs to another part of the house; keep working without it
        if preference.startswith("cuda") and not torch.cuda.is_available():
            raise AppError("No CUDA GPU is available.", "Use the CPU, or check the NVIDIA driver and the torch build.")
        use_cuda = preference != "cpu" and torch.cuda.is_available()
        device = torch.device(preference if preference.startswith("cuda") else "cuda") if use_cuda else torch.device("cpu")
    else:
        # core.device picks the device (and sets CPU threads to the physical cores); we pick the precision.
        device = core_device.choose_device(preference)
    if device.type != "cuda":
        return "cpu", torch.float32
    return str(device), (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


def default_budget(device: str) -> int:
    """Bytes the cache may hold: LIENZO_MODEL_BUDGET_MB, else 85 % of the GPU or half the RAM."""
    override = os.environ.get("LIENZO_MODEL_BUDGET_MB")
    if override:
        return int(float(override) * 1024 * 1024)
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.get_device_properties(device).total_memory * 0.85)
    try:
        import psutil

        return int(psutil.virtual_memory().total * 0.5)
    except ImportError:  # psutil is a dependency, but a budget is better than a crash
        return 8 << 30


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:
        pass
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def module_bytes(model: Any) -> int:
    try:
        params = sum(p.numel() * p.element_size() for p in model.parameters())
        buffers = sum(b.numel() * b.element_size() for b in model.buffers())
        return int(params + buffers)
    except AttributeError:
        return 0


# -- loading ------------------------------------------------------------------------------------
def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def load_tokenizer(folder: str | Path):
    """The folder's tokenizer (local files only, no remote code); AppError when it has none."""
    folder = Path(folder)
    if not registry.has_tokenizer(folder):
        raise AppError(f"The model in '{folder.name}' has no tokenizer files.",
                       "Copy tokenizer.json (or vocab/merges files) and tokenizer_config.json into the folder, "
                       "as saved by tokenizer.save_pretrained().")
    _quiet_transformers()
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except Exception as exc:
        raise AppError(f"The tokenizer in '{folder.name}' could not be loaded: {type(exc).__name__}: {exc}",
                       "The tokenizer files may be damaged or need code Lienzo does not run.") from None


_MODEL_CLASSES = {
    registry.CAUSAL_LM: "AutoModelForCausalLM",
    registry.SEQ2SEQ: "AutoModelForSeq2SeqLM",
    registry.SEQUENCE_CLASSIFIER: "AutoModelForSequenceClassification",
    registry.SENTENCE_ENCODER: "AutoModel",
}


def load_text_model(info: ModelInfo, device: str, dtype) -> tuple[Any, Any]:
    """(model, tokenizer) for a text model folder: safetensors only, local files only, eval mode."""
    if info.kind not in _MODEL_CLASSES:
        raise AppError(f"'{info.name}' is a {info.kind} model, not a text model.", "Choose a text model.")
    tokenizer = load_tokenizer(info.path)
    _quiet_transformers()
    import transformers

    cls = getattr(transformers, _MODEL_CLASSES[info.kind])
    try:
        model = cls.from_pretrained(info.path, local_files_only=True, use_safetensors=True,
                                    trust_remote_code=False, dtype=dtype)
        model.to(device)
    except Exception as exc:
        if is_out_of_memory(exc):
            raise
        raise AppError(f"The model '{info.name}' could not be loaded: {type(exc).__name__}: {exc}",
                       "The files may be incomplete or made for another architecture; copy the model again.") from None
    model.eval()
    return model, tokenizer


# -- the cache ----------------------------------------------------------------------------------
OOM_HINT = ("Close other models or programs, choose a smaller model, lower max new tokens, "
            "or set LIENZO_DEVICE=cpu to run on the processor.")


class ModelCache:
    """Loaded models by key, least recently used unloaded first when the budget would be exceeded."""

    def __init__(self, budget_bytes: int | None = None, device: str | None = None, dtype=None):
        self._device, self._dtype = device, dtype
        self._budget = budget_bytes
        self._models: dict[str, LoadedModel] = {}
        self._lock = threading.RLock()

    # device and budget are resolved lazily so that creating a cache imports no torch
    @property
    def device(self) -> str:
        if self._device is None:
            self._device, default_dtype = choose_device()
            self._dtype = self._dtype or default_dtype
        return self._device

    @property
    def dtype(self):
        if self._dtype is None:
            _, self._dtype = choose_device(self.device)
        return self._dtype

    @property
    def budget_bytes(self) -> int:
        if self._budget is None:
            self._budget = default_budget(self.device)
        return self._budget

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(m.nbytes for m in self._models.values())

    def loaded(self) -> list[str]:
        with self._lock:
            return sorted(self._models, key=lambda k: self._models[k].last_used)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._models

    def text_model(self, path: str | Path, kind: str | None = None, info: ModelInfo | None = None) -> LoadedModel:
        """Load (or reuse) a text model folder; checks the folder before any weights are read."""
        if info is None:
            resolved = str(Path(path).expanduser().resolve())
            with self._lock:  # a loaded model is reused without reading its folder again
                for entry in self._models.values():
                    if entry.info.path and str(Path(entry.info.path).resolve()) == resolved and (
                            kind is None or entry.info.kind == kind):
                        entry.last_used = time.monotonic()
                        return entry
        info = info or registry.inspect_model(path)
        if kind and info.kind != kind:
            raise AppError(f"'{info.name}' is a {info.kind} model; this action needs a {kind} model.",
                           _kind_hint(kind))
        key = self.key_for(info.path, info.kind)
        return self.get_or_load(key, lambda device, dtype: load_text_model(info, device, dtype),
                                estimate_bytes=info.memory_bytes(_dtype_bytes(self.dtype)), info=info)

    def key_for(self, path: str | Path, kind: str) -> str:
        return f"{kind}:{Path(path).resolve()}"

    def get_or_load(self, key: str, loader: Callable[[str, Any], tuple[Any, Any]], estimate_bytes: int = 0,
                    info: ModelInfo | None = None) -> LoadedModel:
        """The cached entry for `key`, or `loader(device, dtype) -> (model, tokenizer)` run and cached."""
        with self._lock:
            entry = self._models.get(key)
            if entry is not None:
                entry.last_used = time.monotonic()
                return entry
            budget = self.budget_bytes
            if estimate_bytes > budget:
                raise AppError(
                    f"This model needs about {registry.format_bytes(estimate_bytes)} of memory; "
                    f"the budget is {registry.format_bytes(budget)}.",
                    "Choose a smaller model, or raise the budget with LIENZO_MODEL_BUDGET_MB.")
            self._make_room(estimate_bytes)
            try:
                model, tokenizer = loader(self.device, self.dtype)
            except Exception as exc:
                if is_out_of_memory(exc):
                    free_memory()
                    raise AppError(f"Not enough memory to load '{info.name if info else key}'.", OOM_HINT) from None
                raise
            nbytes = module_bytes(model) or estimate_bytes
            entry = LoadedModel(key=key, info=info or ModelInfo(path=key, name=key, kind=""), model=model,
                                tokenizer=tokenizer, device=self.device, dtype=self.dtype, nbytes=nbytes)
            self._models[key] = entry
            self._make_room(0)  # the estimate may have been low: keep the budget honest
            return entry

    def _make_room(self, needed: int) -> None:
        while self._models and self.used_bytes + needed > self.budget_bytes:
            oldest = min(self._models.values(), key=lambda m: m.last_used)
            if needed == 0 and len(self._models) == 1:
                return  # never unload the only model we just loaded
            self.unload(oldest.key)

    def unload(self, key: str) -> bool:
        with self._lock:
            entry = self._models.pop(key, None)
        if entry is None:
            return False
        entry.model = entry.tokenizer = None
        del entry
        free_memory()
        return True

    def clear(self) -> None:
        for key in list(self._models):
            self.unload(key)

    @contextlib.contextmanager
    def guard(self, entry: LoadedModel, action: str = "running the model"):
        """Turn out-of-memory inside the block into an AppError and unload the model that hit it."""
        try:
            with entry.lock:
                entry.last_used = time.monotonic()
                yield entry
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            self.unload(entry.key)
            raise AppError(f"Out of memory while {action} with '{entry.info.name}'; the model was unloaded.",
                           OOM_HINT) from None


def _dtype_bytes(dtype) -> int:
    return getattr(dtype, "itemsize", 4) or 4


def _kind_hint(kind: str) -> str:
    return {
        registry.CAUSAL_LM: "Choose a text generator (GPT-2, Llama, Qwen … a …ForCausalLM model).",
        registry.SEQ2SEQ: "Choose a text-to-text model (T5, BART, Marian).",
        registry.SEQUENCE_CLASSIFIER: "Choose a classifier (a …ForSequenceClassification model).",
        registry.SENTENCE_ENCODER: "Choose a sentence encoder (e.g. all-MiniLM-L6-v2).",
    }.get(kind, "Choose another model.")


_default_cache: ModelCache | None = None
_default_lock = threading.Lock()


def default_cache() -> ModelCache:
    """The process-wide cache shared by the studios (one budget for all loaded models)."""
    global _default_cache
    with _default_lock:
        if _default_cache is None:
            _default_cache = ModelCache()
        return _default_cache
