"""`lienzo text …` through the real entry point, in-process, with tiny models and a real project."""

from __future__ import annotations

import json

import pytest

from core.project import Project
from desktop.launcher import main
from tests.tiny_models import shared_tiny


def test_generate_streams_to_stdout_and_records(tmp_path, capsys):
    project_path = tmp_path / "cli.lienzo"
    Project.create(project_path).close()
    code = main(["text", "generate", "--model", str(shared_tiny("gpt2")), "--prompt", "The harbour",
                 "--max-new-tokens", "12", "--temperature", "0.7", "--seed", "5", "--project", str(project_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "12 tokens in" in err and "seed 5" in err
    with Project.open(project_path) as project:
        gen = project.list_generations("text")[0]
    assert out.rstrip("\n") == gen["output"] and gen["seed"] == 5 and gen["params"]["temperature"] == 0.7
    # Same seed, same text.
    assert main(["text", "generate", "--model", str(shared_tiny("gpt2")), "--prompt", "The harbour",
                 "--max-new-tokens", "12", "--temperature", "0.7", "--seed", "5"]) == 0
    assert capsys.readouterr().out == out


def test_summarize_translate_classify(tmp_path, capsys):
    source = tmp_path / "in.txt"
    source.write_text("Sales grew in the third quarter.\n\nCustomers asked about refunds.", encoding="utf-8")
    assert main(["text", "summarize", "--model", str(shared_tiny("t5")), "--file", str(source),
                 "--max-new-tokens", "8"]) == 0
    assert main(["text", "translate", "--model", str(shared_tiny("t5")), "--text", "Good morning.",
                 "--target", "French", "--max-new-tokens", "5"]) == 0
    capsys.readouterr()
    assert main(["text", "classify", "--model", str(shared_tiny("classifier")), "--text", "Great!", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert {s["label"] for s in scores} == {"negative", "positive"}


def test_search_a_project(tmp_path, capsys):
    path = tmp_path / "docs.lienzo"
    with Project.create(path) as project:
        project.create_document("Harbour", "The fishing boats leave the harbour before sunrise.")
        wanted = project.create_document("Budget", "The quarterly budget shows higher costs for paper.")
    code = main(["text", "search", "--project", str(path), "budget costs", "--top", "2",
                 "--encoder", str(shared_tiny("encoder")), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    hits = json.loads(out)
    assert hits[0]["document_id"] == wanted and hits[0]["start"] == 0 and hits[0]["end"] > 10


@pytest.mark.parametrize("argv, message", [
    (["text", "generate", "--model", "{tmp}", "--prompt", "x"], "holds no model weights"),
    (["text", "classify", "--model", "{clf}", "--file", "{tmp}/missing.txt"], "does not exist"),
    (["text", "summarize", "--model", "{clf}", "--text", "x"], "needs a seq2seq model"),
    (["text", "search", "--project", "{tmp}/none.lienzo", "q"], "does not exist"),
])
def test_bad_input_exits_2_with_error_and_hint(tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path, clf=shared_tiny("classifier")) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"error: " in err and message in err and "hint: " in err


def test_templates_and_models_listing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert main(["text", "templates"]) == 0
    assert "customer_service_reply" in capsys.readouterr().out
    assert main(["text", "models", "--register", str(shared_tiny("gpt2")), "--name", "tiny"]) == 0
    assert "registered: tiny" in capsys.readouterr().out
    assert main(["text", "models"]) == 0
    assert "causal-lm" in capsys.readouterr().out
    assert main(["text", "models", "--verify", "tiny"]) == 0
    assert "match their recorded sha256" in capsys.readouterr().out
    assert main(["text", "models", "--verify", "nope"]) == 2
    assert "No registered model named 'nope'" in capsys.readouterr().err
