"""Streaming text generation with a causal language model: continue, rewrite, template, free prompt.

`model.generate` runs on the calling (job) thread and feeds a TextIteratorStreamer; a helper
thread, which runs no torch operations, reads the text as it comes, cuts it at stop strings and
hands it on. (Generating on a fresh thread would give it an OpenMP team of its own beside the job
thread's, and GNU OpenMP then throttles every idle thread's spin: the job ran at 0.85 of a bare
generate on 2 cores, 0.93-0.97 now; bench/README.md.) A StoppingCriteria polls the job's cancel
event, so Stop takes effect after the current token. Chat models get their chat template;
plain models continue the raw text. A prompt longer than the context is trimmed with a notice.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from core.errors import AppError, Cancelled
from core.models import registry
from core.text.settings import GenerationSettings

MODES = ("continue", "rewrite", "template", "prompt")


@dataclass
class GenerationResult:
    text: str
    prompt: str
    prompt_tokens: int
    new_tokens: int
    seconds: float
    first_token_s: float | None
    finish: str  # eos | length | stop | cancelled
    seed: int
    notices: list[str] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["tokens_per_s"] = self.tokens_per_s
        return data


def library_versions() -> dict:
    """Recorded with every output: the same seed can give other text under other versions."""
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}


# -- prompts ------------------------------------------------------------------------------------
def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def make_prompt(tokenizer, mode: str, content: str, instruction: str = "") -> str:
    """The text the model sees. Chat models get a user turn through their template."""
    if mode not in MODES:
        raise AppError(f"Unknown generation mode '{mode}'.", f"Use one of: {', '.join(MODES)}.")
    chat = has_chat_template(tokenizer)
    if mode == "continue":
        if not chat:
            return content
        user = f"Continue the following text. Reply with the continuation only.\n\n{content}"
    elif mode == "rewrite":
        if not chat:
            return f"Instruction: {instruction}\n\nText:\n{content}\n\nRewritten text:\n"
        user = f"Rewrite the following text. {instruction}\nReply with the rewritten text only.\n\n{content}"
    else:  # template or free prompt: the content is the request itself
        if not chat:
            return content
        user = content
    return tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                         add_generation_prompt=True)


def context_length(model, tokenizer) -> int | None:
    """Tokens the model can attend to (prompt + new tokens), when it has a fixed limit."""
    config = model.config
    for key in ("n_positions", "max_position_embeddings", "n_ctx", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else None


def _encode(tokenizer, text: str, chat: bool) -> list[int]:
    # A chat template already writes its special tokens as text; adding them again doubles BOS.
    return list(tokenizer(text, add_special_tokens=not chat)["input_ids"])


def encode_prompt(tokenizer, mode: str, content: str, instruction: str, context: int | None,
                  max_new_tokens: int) -> tuple[list[int], str, list[str], int]:
    """(prompt ids, prompt text, notices, max new tokens) fitted into the model's context."""
    notices: list[str] = []
    if mode == "rewrite" and not content.strip():
        raise AppError("There is no text to rewrite.", "Select the text you want rewritten first.")
    if mode == "rewrite" and not instruction.strip():
        raise AppError("The rewrite instruction is empty.", "Say how to rewrite, e.g. 'Make it shorter and friendlier'.")
    if mode in ("template", "prompt") and not content.strip():
        raise AppError("The prompt is empty.", "Write what you want the model to produce.")
    if context and max_new_tokens > context - 8:
        new_max = max(1, context // 2)
        notices.append(f"Max new tokens lowered from {max_new_tokens} to {new_max}: "
                       f"this model's context holds only {context} tokens.")
        max_new_tokens = new_max
    chat = has_chat_template(tokenizer)
    prompt = make_prompt(tokenizer, mode, content, instruction)
    ids = _encode(tokenizer, prompt, chat)
    if not ids:
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if bos is None:
            raise AppError("There is nothing to continue from.", "Write a few words first.")
        ids = [bos]  # an empty document: start a fresh text
    budget = context - max_new_tokens if context else None
    if budget and len(ids) > budget:
        original = len(ids)
        overhead = len(_encode(tokenizer, make_prompt(tokenizer, mode, "", instruction), chat))
        keep = budget - overhead - 2  # decode/encode round trips may merge tokens differently
        if keep < 1:
            raise AppError(f"The instruction alone is longer than this model's context ({context} tokens).",
                           "Shorten the instruction or lower max new tokens.")
        content_ids = tokenizer(content, add_special_tokens=False)["input_ids"]
        content = tokenizer.decode(content_ids[-keep:], skip_special_tokens=True)
        prompt = make_prompt(tokenizer, mode, content, instruction)
        ids = _encode(tokenizer, prompt, chat)
        if len(ids) > budget:
            ids = ids[-budget:]
        notices.append(f"The prompt was {original} tokens but this model's context is {context} tokens "
                       f"({max_new_tokens} kept for new text): only the last {len(ids)} tokens were used.")
    return ids, prompt, notices, max_new_tokens


# -- streaming ----------------------------------------------------------------------------------
def _stopping_criteria(*events: threading.Event):
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class EventStop(StoppingCriteria):
        """Stops every sequence once any event is set (user cancel, stop string seen)."""

        def __call__(self, input_ids, scores, **kwargs):
            hit = any(e.is_set() for e in events)
            return torch.full((input_ids.shape[0],), hit, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([EventStop()])


def _streamer(tokenizer):
    from transformers import TextIteratorStreamer

    class CountingStreamer(TextIteratorStreamer):
        """Also counts generated tokens and notes when the first one arrived."""

        def __init__(self, tok):
            super().__init__(tok, skip_prompt=True, skip_special_tokens=True)
            self.tokens = 0
            self.first_token_at: float | None = None

        def put(self, value):
            if not (self.skip_prompt and self.next_tokens_are_prompt):
                if self.first_token_at is None:
                    self.first_token_at = time.perf_counter()
                self.tokens += int(value.numel())
            super().put(value)

    return CountingStreamer(tokenizer)


def sampling_kwargs(settings: GenerationSettings, tokenizer) -> dict:
    """generate() arguments for the settings; greedy decoding when the temperature is 0."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    kwargs = dict(max_new_tokens=settings.max_new_tokens, pad_token_id=pad,
                  repetition_penalty=float(settings.repetition_penalty))
    if settings.greedy:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    else:
        kwargs.update(do_sample=True, temperature=float(settings.temperature), top_p=float(settings.top_p),
                      top_k=int(settings.top_k))
    return kwargs


def stream_generate(model, tokenizer, ids: list[int], settings: GenerationSettings, *,
                    cancel_event: threading.Event | None = None,
                    on_text: Callable[[str, int], None] | None = None) -> GenerationResult:
    """Generate after `ids`, calling on_text(new_text, tokens_so_far) as text arrives."""
    import torch

    settings = settings if settings.seed is not None else settings.with_seed()
    cancel_event = cancel_event or threading.Event()
    stop_seen = threading.Event()
    device = next(model.parameters()).device
    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
    streamer = _streamer(tokenizer)
    kwargs = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), streamer=streamer,
                  stopping_criteria=_stopping_criteria(cancel_event, stop_seen),
                  **sampling_kwargs(settings, tokenizer))
    stops = settings.stop
    hold = max((len(s) for s in stops), default=1) - 1  # text that may be the start of a stop string
    reading: dict = {"text": "", "finish": None}

    def read() -> None:
        full, emitted = "", 0
        try:
            for chunk in streamer:
                full += chunk
                if stops:
                    cut = min((i for i in (full.find(s, max(0, emitted - hold)) for s in stops) if i >= 0),
                              default=-1)
                    if cut >= 0:
                        full, reading["finish"] = full[:cut], "stop"
                        stop_seen.set()
                        break
                safe = len(full) - hold if stops else len(full)
                if safe > emitted:
                    if on_text:
                        on_text(full[emitted:safe], streamer.tokens)
                    emitted = safe
            if emitted < len(full) and on_text:
                on_text(full[emitted:], streamer.tokens)
        except BaseException as exc:  # a failing listener stops generation; re-raised on the caller's thread
            reading["error"] = exc
            stop_seen.set()
        reading["text"] = full

    torch.manual_seed(settings.seed)
    started = time.perf_counter()
    reader = threading.Thread(target=read, name="lienzo-generate-text", daemon=True)
    reader.start()
    try:
        with torch.inference_mode():
            output_ids = model.generate(**kwargs)
    finally:
        # After an error generate() never ends the stream; the reader stops at the first end signal.
        streamer.text_queue.put(streamer.stop_signal)
        reader.join()
    if "error" in reading:
        raise reading["error"]
    full, finish = reading["text"], reading["finish"]
    seconds = time.perf_counter() - started
    new_tokens = int(output_ids.shape[1] - len(ids))
    if cancel_event.is_set() and finish is None:
        finish = "cancelled"
    elif finish is None:
        finish = "length" if new_tokens >= settings.max_new_tokens else "eos"
    first = streamer.first_token_at - started if streamer.first_token_at else None
    return GenerationResult(text=full, prompt="", prompt_tokens=len(ids), new_tokens=new_tokens,
                            seconds=seconds, first_token_s=first, finish=finish, seed=settings.seed)


# -- the job ------------------------------------------------------------------------------------
def generate_job(params: dict, ctx, on_text: Callable[[str], None] | None = None, cache=None) -> dict:
    """Job: generate text. params: model (folder), mode (continue|rewrite|template|prompt), text,
    instruction, template + fields (mode template), settings (dict or preset name), document_id.

    Progress previews carry {"text": all text so far}, so a throttled listener never loses any.
    A stopped job records what it produced, then ends as cancelled.
    """
    from core.models.cache import default_cache

    cache = cache or default_cache()
    mode = params.get("mode", "prompt")
    settings = GenerationSettings.from_dict(params.get("settings") or {}).with_seed()
    content, instruction = params.get("text", ""), params.get("instruction", "")
    if mode == "template":
        from core.text import templates

        content = templates.render(params["template"], params.get("fields") or {})
    if not params.get("model"):
        raise AppError("No text generation model is chosen.", "Pick a model in the model picker first.")
    ctx.progress(0, 0, "Loading model…")
    entry = cache.text_model(params["model"], kind=registry.CAUSAL_LM)
    ctx.check_cancelled()
    ids, prompt, notices, max_new = encode_prompt(
        entry.tokenizer, mode, content, instruction, context_length(entry.model, entry.tokenizer),
        settings.max_new_tokens)
    settings.max_new_tokens = max_new
    for notice in notices:
        ctx.log(notice)
        ctx.progress(0, max_new, notice, preview={"text": "", "notice": notice})
    so_far = [""]

    def sink(delta: str, tokens: int) -> None:
        so_far[0] += delta  # strings grow in place when only one reference exists: no re-join per token
        if on_text:
            on_text(delta)
        ctx.progress(min(tokens, max_new), max_new, "Generating…", preview={"text": so_far[0]})

    with cache.guard(entry, "generating text"):
        result = stream_generate(entry.model, entry.tokenizer, ids, settings, cancel_event=ctx.cancel_event,
                                 on_text=sink)
    result.prompt, result.notices = prompt, notices
    # Always a last event (step == total passes the throttle) so listeners hold the whole text.
    ctx.progress(max_new, max_new, "Stopped" if result.finish == "cancelled" else "Done",
                 preview={"text": result.text, "final": True})
    ctx.metrics.update(new_tokens=result.new_tokens, tokens_per_s=round(result.tokens_per_s, 2),
                       first_token_s=result.first_token_s, finish=result.finish)
    out = result.to_dict()
    out["generation_id"] = record(ctx.project, entry.info.name, entry.info.path, mode, settings, prompt,
                                  result, instruction=instruction, template=params.get("template"),
                                  document_id=params.get("document_id"), run_id=ctx.run_id)
    if result.finish == "cancelled":
        raise Cancelled()
    return out


def record(project, model_name: str, model_path: str, mode: str, settings: GenerationSettings, prompt: str,
           result: GenerationResult, *, kind: str = "text", run_id=None, document_id=None, **extra) -> int | None:
    """Store the generation's provenance in the project (no-op without one)."""
    if project is None:
        return None
    params = {"mode": mode, "model_path": model_path, **settings.to_dict(), "finish": result.finish,
              "new_tokens": result.new_tokens, "seconds": round(result.seconds, 3), "notices": result.notices,
              "versions": library_versions(), **{k: v for k, v in extra.items() if v}}
    return project.record_generation(kind, model_name, params, settings.seed, prompt, result.text,
                                     document_id=document_id, run_id=run_id)
