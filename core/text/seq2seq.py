"""Summarise and translate with text-to-text models (T5, BART, Marian) through AutoModelForSeq2SeqLM.

transformers 5 removed the summarization and translation pipelines, so the task prefix ("summarize: ",
"translate English to German: ") is added here — from the model's own task_specific_params when it
has them. Long texts are cut into pieces that fit the encoder (paragraphs first), each piece is
processed in turn with progress and cancel between pieces and inside generate.
"""

from __future__ import annotations

import re
import time

from core.errors import AppError
from core.models import registry

TASKS = ("summarize", "translate")
# T5 was trained on these pairs; other models (Marian, fine-tuned T5) ignore or override them.
DEFAULT_SOURCE, DEFAULT_TARGET = "English", "German"


def task_prefix(config, task: str, source: str = DEFAULT_SOURCE, target: str = DEFAULT_TARGET) -> str:
    """The text put before the input; none for models that do one task by construction (Marian)."""
    model_type = getattr(config, "model_type", "")
    if model_type in ("marian", "bart", "pegasus", "mbart", "m2m_100"):
        return ""
    specific = getattr(config, "task_specific_params", None) or {}
    if task == "summarize":
        return (specific.get("summarization") or {}).get("prefix", "summarize: ")
    key = f"translation_{_code(source)}_to_{_code(target)}"
    return (specific.get(key) or {}).get("prefix", f"translate {source} to {target}: ")


def _code(language: str) -> str:
    return {"english": "en", "german": "de", "french": "fr", "romanian": "ro", "spanish": "es"}.get(
        language.lower(), language.lower()[:2])


def split_for_encoder(tokenizer, text: str, max_tokens: int, merge_paragraphs: bool = True) -> list[str]:
    """Pieces of at most `max_tokens` tokens, cut between paragraphs, then sentences, then words.

    Summaries merge short paragraphs (fewer, fuller pieces); translations keep one paragraph per
    piece so the layout survives.
    """

    def size(s: str) -> int:
        return len(tokenizer(s, add_special_tokens=False)["input_ids"])

    def by_words(sentence: str) -> list[str]:
        out, chunk = [], []
        for word in sentence.split():
            if chunk and size(" ".join(chunk + [word])) > max_tokens:
                out.append(" ".join(chunk))
                chunk = []
            chunk.append(word)
        return out + ([" ".join(chunk)] if chunk else [])

    units: list[str] = []
    for para in (p.strip() for p in re.split(r"\n\s*\n", text)):
        if not para:
            continue
        if size(para) <= max_tokens:
            units.append(para)
            continue
        current = ""
        for sentence in re.split(r"(?<=[.!?;])\s+", para):
            for part in (by_words(sentence) if size(sentence) > max_tokens else [sentence]):
                candidate = f"{current} {part}".strip()
                if current and size(candidate) > max_tokens:
                    units.append(current)
                    current = part
                else:
                    current = candidate
        if current:
            units.append(current)
    if not merge_paragraphs:
        return units
    pieces: list[str] = []
    for unit in units:
        if pieces and size(pieces[-1] + "\n\n" + unit) <= max_tokens:
            pieces[-1] += "\n\n" + unit
        else:
            pieces.append(unit)
    return pieces


def encoder_limit(model, tokenizer) -> int:
    limit = getattr(tokenizer, "model_max_length", None)
    if not isinstance(limit, int) or limit <= 0 or limit > 100_000:
        limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", 512)
    return int(min(limit, 1024))


def run_seq2seq(params: dict, ctx, cache=None) -> dict:
    """Job: params model, task (summarize|translate), text, source, target, max_new_tokens, num_beams,
    document_id. Returns {"text", "pieces", "prefix", "seconds", "notices", "generation_id"}."""
    import torch

    from core.models.cache import default_cache
    from core.text.generate import _stopping_criteria, library_versions

    task = params.get("task", "summarize")
    if task not in TASKS:
        raise AppError(f"Unknown task '{task}'.", "Use summarize or translate.")
    text = params.get("text") or ""
    if not text.strip():
        raise AppError("There is no text to " + ("summarise." if task == "summarize" else "translate."),
                       "Select some text or choose a document that is not empty.")
    if not params.get("model"):
        raise AppError("No text-to-text model is chosen.", "Pick a T5, BART or Marian model first.")
    cache = cache or default_cache()
    ctx.progress(0, 0, "Loading model…")
    entry = cache.text_model(params["model"], kind=registry.SEQ2SEQ)
    model, tok = entry.model, entry.tokenizer
    prefix = task_prefix(model.config, task, params.get("source") or DEFAULT_SOURCE,
                         params.get("target") or DEFAULT_TARGET)
    limit = encoder_limit(model, tok)
    prefix_tokens = len(tok(prefix, add_special_tokens=False)["input_ids"])
    pieces = split_for_encoder(tok, text, max(16, limit - prefix_tokens - 2), merge_paragraphs=task == "summarize")
    notices = []
    if len(pieces) > 1:
        notices.append(f"The text is longer than the model reads at once ({limit} tokens): "
                       f"it was processed in {len(pieces)} parts.")
    max_new = int(params.get("max_new_tokens") or (150 if task == "summarize" else min(limit, 512)))
    gen = dict(max_new_tokens=max_new, num_beams=int(params.get("num_beams") or 1), do_sample=False,
               stopping_criteria=_stopping_criteria(ctx.cancel_event))
    if task == "summarize":
        gen["min_new_tokens"] = min(int(params.get("min_new_tokens") or 0), max_new)
    outputs = []
    started = time.perf_counter()
    with cache.guard(entry, "summarising" if task == "summarize" else "translating"):
        for i, piece in enumerate(pieces):
            ctx.check_cancelled()
            ctx.progress(i, len(pieces), f"Part {i + 1} of {len(pieces)}", preview={"text": "\n\n".join(outputs)})
            batch = tok(prefix + piece, return_tensors="pt", truncation=True, max_length=limit).to(entry.device)
            with torch.inference_mode():
                out = model.generate(**batch, **gen)
            ctx.check_cancelled()
            outputs.append(tok.decode(out[0], skip_special_tokens=True).strip())
    # A translation keeps one paragraph per piece (even an empty one) so the layout survives.
    result_text = "\n\n".join(outputs) if task == "translate" else " ".join(o for o in outputs if o)
    seconds = time.perf_counter() - started
    ctx.progress(len(pieces), len(pieces), "Done", preview={"text": result_text, "final": True})
    ctx.metrics.update(parts=len(pieces), seconds=round(seconds, 3))
    generation_id = None
    if ctx.project is not None:
        generation_id = ctx.project.record_generation(
            "text", entry.info.name,
            {"mode": task, "model_path": entry.info.path, "prefix": prefix, "source": params.get("source"),
             "target": params.get("target"), **{k: v for k, v in gen.items() if k != "stopping_criteria"},
             "parts": len(pieces), "notices": notices, "versions": library_versions()},
            None, text, result_text, document_id=params.get("document_id"), run_id=ctx.run_id)
    return {"text": result_text, "pieces": len(pieces), "prefix": prefix, "seconds": seconds,
            "notices": notices, "generation_id": generation_id, "task": task}


def summarize_job(params: dict, ctx) -> dict:
    return run_seq2seq({**params, "task": "summarize"}, ctx)


def translate_job(params: dict, ctx) -> dict:
    return run_seq2seq({**params, "task": "translate"}, ctx)

