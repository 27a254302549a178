"""Sentence embeddings: mean of the encoder's last hidden states over real tokens, L2-normalised.

The same recipe as sentence-transformers' all-MiniLM-L6-v2 (its Pooling module is mean pooling and
it ends with Normalize), done with plain transformers so no extra package is needed.
"""

from __future__ import annotations

import json
from pathlib import Path

from core.models import registry


def default_encoder_folder() -> Path:
    """The bundled all-MiniLM-L6-v2, its weights checked against the published sha256."""
    return registry.verify_default_encoder()


def max_seq_length(folder: str | Path, tokenizer) -> int:
    config = Path(folder) / "sentence_bert_config.json"
    if config.exists():
        try:
            value = json.loads(config.read_text(encoding="utf-8")).get("max_seq_length")
            if isinstance(value, int) and value > 0:
                return value
        except (OSError, json.JSONDecodeError):
            pass
    limit = getattr(tokenizer, "model_max_length", 512)
    return limit if isinstance(limit, int) and 0 < limit <= 8192 else 512


def encode(entry, texts: list[str], batch_size: int = 32, cancel_event=None, on_batch=None):
    """float32 array (len(texts), dim) of unit vectors."""
    import numpy as np
    import torch

    model, tok = entry.model, entry.tokenizer
    limit = max_seq_length(entry.info.path, tok)
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            if cancel_event is not None and cancel_event.is_set():
                from core.errors import Cancelled
                raise Cancelled()
            batch = tok(texts[start:start + batch_size], padding=True, truncation=True, max_length=limit,
                        return_tensors="pt").to(entry.device)
            hidden = model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, p=2, dim=1).cpu().numpy())
            if on_batch:
                on_batch(min(start + batch_size, len(texts)), len(texts))
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out).astype(np.float32)


def load_encoder(path: str | Path | None = None, cache=None):
    """The cached encoder entry for `path` (default: the bundled MiniLM)."""
    from core.models.cache import default_cache

    cache = cache or default_cache()
    folder = Path(path) if path else default_encoder_folder()
    return cache.text_model(folder, kind=registry.SENTENCE_ENCODER)
