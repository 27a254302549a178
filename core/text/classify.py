"""Classify text (topic, sentiment …) with a sequence-classification model: labels and scores.

Long texts are cut into pieces the model can read and the class probabilities averaged, so a whole
document can be analysed, not only its first 512 tokens.
"""

from __future__ import annotations

from core.errors import AppError
from core.models import registry


def classify_text(entry, text: str, cancel_event=None, max_pieces: int = 64) -> list[dict]:
    """[{label, score}] sorted by score, for one text (pieces averaged)."""
    import torch

    model, tok = entry.model, entry.tokenizer
    if not text.strip():
        raise AppError("There is no text to classify.", "Select some text or choose a document that is not empty.")
    limit = getattr(tok, "model_max_length", 512)
    limit = min(limit if isinstance(limit, int) and limit > 0 else 512,
                getattr(model.config, "max_position_embeddings", 512) or 512, 512)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    step = max(8, limit - 4)  # room for [CLS]/[SEP]-style tokens
    pieces = [ids[i:i + step] for i in range(0, len(ids), step)][:max_pieces] or [[]]
    multi_label = getattr(model.config, "problem_type", None) == "multi_label_classification"
    total = None
    with torch.inference_mode():
        for piece in pieces:
            if cancel_event is not None and cancel_event.is_set():
                from core.errors import Cancelled
                raise Cancelled()
            batch = tok(tok.decode(piece), return_tensors="pt", truncation=True, max_length=limit).to(entry.device)
            logits = model(**batch).logits[0].float()
            probs = torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1)
            total = probs if total is None else total + probs
    probs = (total / len(pieces)).tolist()
    id2label = getattr(model.config, "id2label", None) or {}
    labels = [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(len(probs))]
    return sorted(({"label": l, "score": float(p)} for l, p in zip(labels, probs)), key=lambda r: -r["score"])


def classify_job(params: dict, ctx, cache=None) -> dict:
    """Job: params model, text (or texts: list), document_id. Returns {"results": [[{label, score}]...],
    "labels": top labels, "model"}."""
    from core.models.cache import default_cache

    if not params.get("model"):
        raise AppError("No classifier is chosen.", "Pick a sequence-classification model first.")
    texts = params.get("texts") or [params.get("text") or ""]
    cache = cache or default_cache()
    ctx.progress(0, len(texts), "Loading model…")
    entry = cache.text_model(params["model"], kind=registry.SEQUENCE_CLASSIFIER)
    results = []
    with cache.guard(entry, "classifying"):
        for i, text in enumerate(texts):
            ctx.check_cancelled()
            results.append(classify_text(entry, text, ctx.cancel_event))
            ctx.progress(i + 1, len(texts), f"Classified {i + 1} of {len(texts)}")
    top = [r[0]["label"] for r in results]
    ctx.metrics.update(texts=len(texts), top=top[:10])
    return {"results": results, "labels": top, "model": entry.info.name}
