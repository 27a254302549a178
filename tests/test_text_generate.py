"""Generation, rewrite, templates, summarise/translate and classify through jobs, with tiny real models."""

from __future__ import annotations

import functools
import json
import shutil
import threading

import pytest

from core.errors import AppError
from core.jobs import JobRunner
from core.models.cache import ModelCache
from core.project import Project
from core.text import templates
from core.text.classify import classify_job
from core.text.generate import context_length, encode_prompt, generate_job, make_prompt, stream_generate
from core.text.seq2seq import run_seq2seq, split_for_encoder, task_prefix
from core.text.settings import PRESETS, GenerationSettings
from tests.tiny_models import shared_tiny


@pytest.fixture(scope="module")
def cache():
    c = ModelCache(device="cpu")
    yield c
    c.clear()


@pytest.fixture(scope="module")
def gpt2(cache):
    return cache.text_model(shared_tiny("gpt2"))


@pytest.fixture()
def project(tmp_path):
    with Project.create(tmp_path / "p.lienzo") as p:
        yield p


@pytest.fixture()
def runner(project):
    r = JobRunner(project)
    yield r
    r.shutdown()


def run_job(runner, fn, params, cache, **kw):
    events = []
    runner.add_listener(events.append)
    job = runner.submit(functools.partial(fn, cache=cache, **kw), params, kind="text.test")
    assert job.wait(60)
    runner.remove_listener(events.append)
    return job, events


def test_streams_records_and_repeats_with_a_seed(runner, project, cache):
    params = {"model": str(shared_tiny("gpt2")), "mode": "continue", "text": "The harbour at dawn",
              "settings": {"max_new_tokens": 24, "seed": 7, "temperature": 0.9}}
    streamed = []
    job, events = run_job(runner, generate_job, params, cache, on_text=streamed.append)
    assert job.status == "done", job.error
    result = job.result
    assert result["new_tokens"] == 24 and result["finish"] == "length" and result["seed"] == 7
    assert "".join(streamed) == result["text"] and len(streamed) > 3  # arrived piece by piece
    previews = [e.preview["text"] for e in events if e.type == "progress" and e.preview and "text" in e.preview]
    assert previews[-1] == result["text"]
    assert all(b.startswith(a) for a, b in zip(previews, previews[1:]))  # each preview extends the last
    assert result["tokens_per_s"] > 0 and result["first_token_s"] is not None
    gen = project.list_generations("text")[0]
    assert gen["id"] == result["generation_id"] and gen["seed"] == 7 and gen["output"] == result["text"]
    assert gen["prompt"] == "The harbour at dawn" and gen["run_id"] == job.run_id
    assert gen["params"]["temperature"] == 0.9 and "transformers" in gen["params"]["versions"]
    assert project.get_run(job.run_id)["metrics"]["new_tokens"] == 24
    again, _ = run_job(runner, generate_job, params, cache)
    assert again.result["text"] == result["text"]


def test_stop_at_any_moment_keeps_and_records_partial_text(runner, project, cache):
    params = {"model": str(shared_tiny("gpt2")), "mode": "continue", "text": "Once upon a time",
              "settings": {"max_new_tokens": 100, "seed": 1}}
    pieces = []
    holder = {}

    def on_text(delta):
        pieces.append(delta)
        if len(pieces) == 4:
            holder["job"].cancel()  # what the Stop button does

    runner.add_listener(lambda e: holder.setdefault("job", e.job))
    job = runner.submit(functools.partial(generate_job, cache=cache, on_text=on_text), params, kind="text.generate")
    holder["job"] = job
    job.wait(60)
    assert job.status == "cancelled"
    gen = project.list_generations("text")[0]
    assert gen["params"]["finish"] == "cancelled" and gen["params"]["new_tokens"] < 100
    assert gen["output"] == "".join(pieces)


def test_stop_strings_cut_the_text(gpt2):
    ids, *_ = encode_prompt(gpt2.tokenizer, "continue", "The quick brown fox", "", 128, 40)
    full = stream_generate(gpt2.model, gpt2.tokenizer, ids, GenerationSettings(max_new_tokens=40, seed=3))
    stop = full.text[12:15]
    cut = stream_generate(gpt2.model, gpt2.tokenizer, ids, GenerationSettings(max_new_tokens=40, seed=3, stop=[stop]))
    assert cut.finish == "stop" and cut.text == full.text[:full.text.find(stop)]
    greedy1 = stream_generate(gpt2.model, gpt2.tokenizer, ids, PRESETS["deterministic"])
    greedy2 = stream_generate(gpt2.model, gpt2.tokenizer, ids, PRESETS["deterministic"])
    assert greedy1.text == greedy2.text


def test_chat_models_use_their_template_plain_models_raw_text(cache, gpt2):
    chat = cache.text_model(shared_tiny("gpt2-chat"))
    prompt = make_prompt(chat.tokenizer, "continue", "Hello there")
    assert prompt.startswith("<|user|>") and prompt.endswith("<|assistant|>") and "Hello there" in prompt
    assert make_prompt(gpt2.tokenizer, "continue", "Hello there") == "Hello there"
    rewrite = make_prompt(gpt2.tokenizer, "rewrite", "Some text.", "Make it formal")
    assert "Make it formal" in rewrite and rewrite.rstrip().endswith("Rewritten text:")


def test_prompt_longer_than_context_is_trimmed_with_a_notice(runner, project, cache, gpt2):
    long_text = "The lighthouse keeper wrote letters to the sea. " * 80
    ids, prompt, notices, max_new = encode_prompt(gpt2.tokenizer, "continue", long_text, "",
                                                  context_length(gpt2.model, gpt2.tokenizer), 40)
    assert len(ids) + max_new <= 128 and notices and "only the last" in notices[0]
    assert long_text.endswith(prompt[-40:])  # the end of the text, nearest the cursor, is kept
    _, _, notices2, max_new2 = encode_prompt(gpt2.tokenizer, "continue", "Hi", "", 128, 500)
    assert max_new2 == 64 and "lowered" in notices2[0]
    job, events = run_job(runner, generate_job, {"model": str(shared_tiny("gpt2")), "mode": "continue",
                                                 "text": long_text, "settings": {"max_new_tokens": 30}}, cache)
    assert job.status == "done" and job.result["notices"]
    assert any(e.preview and e.preview.get("notice") for e in events if e.type == "progress")
    assert project.list_generations()[0]["params"]["notices"] == job.result["notices"]


def test_rewrite_and_template_modes(runner, project, cache):
    model = str(shared_tiny("gpt2-chat"))
    job, _ = run_job(runner, generate_job, {"model": model, "mode": "rewrite", "text": "it is good",
                                            "instruction": "Make it formal", "settings": {"max_new_tokens": 8}}, cache)
    assert job.status == "done" and "Make it formal" in job.result["prompt"]
    for bad, message in (({"mode": "rewrite", "text": "   ", "instruction": "x"}, "no text to rewrite"),
                         ({"mode": "rewrite", "text": "abc", "instruction": ""}, "instruction is empty"),
                         ({"mode": "prompt", "text": ""}, "prompt is empty"),
                         ({"mode": "template", "template": "report", "fields": {"subject": "Q3"}}, "Fill in"),
                         ({"mode": "template", "template": "nope"}, "no template")):
        job, _ = run_job(runner, generate_job, {"model": model, **bad}, cache)
        assert job.status == "failed" and message in job.error.message, (bad, job.error)
    job, _ = run_job(runner, generate_job, {
        "model": model, "mode": "template", "template": "customer_service_reply",
        "fields": {"customer_message": "My parcel is late."}, "settings": {"max_new_tokens": 6}}, cache)
    assert job.status == "done" and "My parcel is late." in job.result["prompt"]
    assert project.list_generations()[0]["params"]["template"] == "customer_service_reply"


def test_wrong_model_kind_and_bad_settings(runner, cache):
    job, _ = run_job(runner, generate_job, {"model": str(shared_tiny("classifier")), "text": "x"}, cache)
    assert job.status == "failed" and "causal-lm" in job.error.message
    with pytest.raises(AppError, match="temperature"):
        GenerationSettings.from_dict({"temperature": -1})
    with pytest.raises(AppError, match="Unknown preset"):
        GenerationSettings.from_dict({"preset": "wild"})
    assert GenerationSettings.from_dict({"preset": "creative", "seed": 5}).temperature == 1.1
    job, _ = run_job(runner, generate_job, {"text": "x"}, cache)
    assert job.status == "failed" and "No text generation model" in job.error.message


def test_templates_ship_the_eight_content_types_and_user_copies_win(tmp_path):
    ids = {t.id for t in templates.list_templates()}
    assert ids >= {"article", "blog_post", "script_narrative", "technical_documentation", "social_media_post",
                   "customer_service_reply", "report", "business_proposal"}
    for t in templates.list_templates():
        values = {f.name: f"<{f.name}>" for f in t.fields}
        text = t.render(values)
        assert all(f"<{f.name}>" in text for f in t.fields) and "{" not in text, t.id
    path = templates.copy_for_editing("social_media_post")
    path.write_text(path.read_text().replace("At most three sentences.", "One sentence only."))
    assert "One sentence only." in templates.render("social_media_post", {"message": "Launch"})
    (path.parent / "broken.md").write_text("no header")
    assert "broken" not in {t.id for t in templates.list_templates()}
    with pytest.raises(AppError, match="no header"):
        templates.parse_template(path.parent / "broken.md")
    (path.parent / "undeclared.md").write_text("---\ntitle: X\nfields: []\n---\nHi {who}")
    with pytest.raises(AppError, match="does not declare: who"):
        templates.parse_template(path.parent / "undeclared.md")


def test_summarise_and_translate_with_t5(runner, project, cache):
    model = str(shared_tiny("t5"))
    t5 = cache.text_model(model)
    assert task_prefix(t5.model.config, "summarize") == "summarize: "
    assert task_prefix(t5.model.config, "translate", "English", "French") == "translate English to French: "
    job, events = run_job(runner, run_seq2seq, {"model": model, "task": "summarize", "document_id": None,
                                                "text": "Sales grew in the third quarter. Customers asked about refunds.",
                                                "max_new_tokens": 12}, cache)
    assert job.status == "done", job.error
    assert job.result["prefix"] == "summarize: " and job.result["pieces"] == 1
    gen = project.list_generations()[0]
    assert gen["params"]["mode"] == "summarize" and gen["output"] == job.result["text"]
    long_text = "\n\n".join(f"Paragraph {i}. " + "The harbour was busy at dawn. " * 12 for i in range(4))
    job, events = run_job(runner, run_seq2seq, {"model": model, "task": "translate", "text": long_text,
                                                "max_new_tokens": 4}, cache)
    assert job.status == "done" and job.result["pieces"] >= 4 and job.result["notices"]
    assert job.result["text"].count("\n\n") >= job.result["pieces"] - 1  # paragraphs kept apart
    pieces = split_for_encoder(t5.tokenizer, long_text, 40)
    assert all(len(t5.tokenizer(p)["input_ids"]) <= 41 for p in pieces)
    for params, message in (({"text": "  "}, "no text to summarise"),
                            ({"text": "x", "model": str(shared_tiny("gpt2"))}, "seq2seq"),
                            ({"text": "x", "task": "paraphrase"}, "Unknown task")):
        job, _ = run_job(runner, run_seq2seq, {"model": model, "task": "summarize", **params}, cache)
        assert job.status == "failed" and message in job.error.message, job.error


def test_t5_task_prefix_from_config(tmp_path):
    folder = shutil.copytree(shared_tiny("t5"), tmp_path / "t5")
    config = json.loads((folder / "config.json").read_text())
    config["task_specific_params"] = {"summarization": {"prefix": "tl;dr: "}}
    (folder / "config.json").write_text(json.dumps(config))
    t5 = ModelCache(device="cpu").text_model(folder)
    assert task_prefix(t5.model.config, "summarize") == "tl;dr: "


def test_classify_labels_and_scores(runner, cache):
    model = str(shared_tiny("classifier"))
    job, _ = run_job(runner, classify_job, {"model": model, "texts": ["Great service, thank you!",
                                                                      "The parcel never came. " * 200]}, cache)
    assert job.status == "done", job.error
    for scores in job.result["results"]:
        assert {r["label"] for r in scores} == {"negative", "positive"}
        assert abs(sum(r["score"] for r in scores) - 1) < 1e-5
        assert scores[0]["score"] >= scores[1]["score"]
    job, _ = run_job(runner, classify_job, {"model": model, "text": ""}, cache)
    assert job.status == "failed" and "no text to classify" in job.error.message
    job, _ = run_job(runner, classify_job, {"model": str(shared_tiny("t5")), "text": "x"}, cache)
    assert job.status == "failed" and "sequence-classifier" in job.error.message


def test_generation_cancel_event_stops_generate_thread(gpt2):
    event = threading.Event()
    ids, *_ = encode_prompt(gpt2.tokenizer, "continue", "Hello", "", 128, 60)
    seen = []

    def on_text(delta, tokens):
        seen.append(tokens)
        if tokens >= 5:
            event.set()

    result = stream_generate(gpt2.model, gpt2.tokenizer, ids, GenerationSettings(max_new_tokens=60, seed=2),
                             cancel_event=event, on_text=on_text)
    assert result.finish == "cancelled" and result.new_tokens < 15
    assert threading.active_count() < 20  # the generate thread ended


def test_the_model_runs_on_the_calling_thread_and_text_is_read_on_another(gpt2):
    # A fresh thread running the model would start a second OpenMP team beside the job thread's,
    # and GNU OpenMP then slows every idle thread's wait: the model must stay on the job's thread.
    ids, *_ = encode_prompt(gpt2.tokenizer, "continue", "Hello", "", 128, 20)
    model_threads, text_threads = set(), set()
    hook = gpt2.model.register_forward_pre_hook(lambda module, args: model_threads.add(threading.get_ident()))
    try:
        result = stream_generate(gpt2.model, gpt2.tokenizer, ids, GenerationSettings(max_new_tokens=20, seed=4),
                                 on_text=lambda delta, tokens: text_threads.add(threading.get_ident()))
    finally:
        hook.remove()
    assert result.new_tokens == 20 and result.text
    assert model_threads == {threading.get_ident()}
    assert text_threads and threading.get_ident() not in text_threads


def test_a_failing_listener_or_model_ends_generation_with_its_error(gpt2):
    ids, *_ = encode_prompt(gpt2.tokenizer, "continue", "Hello", "", 128, 60)
    calls = []

    def broken_listener(delta, tokens):
        calls.append(tokens)
        raise OSError("the preview pane is gone")

    before = threading.active_count()
    with pytest.raises(OSError, match="preview pane"):
        stream_generate(gpt2.model, gpt2.tokenizer, ids, GenerationSettings(max_new_tokens=60, seed=2),
                        on_text=broken_listener)
    assert len(calls) == 1 and threading.active_count() == before  # generation stopped, nothing left running

    def broken_model(module, args):
        raise RuntimeError("out of memory")

    hook = gpt2.model.register_forward_pre_hook(broken_model)
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            stream_generate(gpt2.model, gpt2.tokenizer, ids, GenerationSettings(max_new_tokens=60, seed=2),
                            on_text=lambda delta, tokens: None)
    finally:
        hook.remove()
    assert threading.active_count() == before  # neither path leaves a reader waiting
