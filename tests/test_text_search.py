"""Semantic + keyword search over project documents, with the real all-MiniLM-L6-v2 and real text."""

from __future__ import annotations

import re

import numpy as np
import pytest

from core.errors import AppError
from core.jobs import JobRunner
from core.models.cache import ModelCache
from core.project import Project
from core.text import search as text_search
from core.text.embed import encode, load_encoder
from tests.tiny_models import shared_tiny

# Paraphrases that share almost no words with the speech they describe (index into the chosen speeches).
QUERIES = {
    13: "a young woman impatient for nightfall so that her lover can come to her unseen",  # Juliet
    12: "the host welcomes guests to the feast and teases the ladies into dancing",  # Capulet
    19: "she asks what tortures the tyrant has prepared for her",  # Paulina
    14: "a pleasant dream makes him expect good news",  # Romeo
}


@pytest.fixture(scope="module")
def cache():
    c = ModelCache(device="cpu")
    yield c
    c.clear()


@pytest.fixture(scope="module")
def minilm(cache):
    return load_encoder(cache=cache)


@pytest.fixture(scope="module")
def speeches(shared_data):
    text = (shared_data / "text" / "tiny_shakespeare_en.txt").read_text(encoding="utf-8")
    long = [p for p in re.split(r"\n\s*\n", text) if len(p) > 600]
    step = len(long) // 24
    return [long[i] for i in range(0, 24 * step, step)]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, speeches, minilm):
    project = Project.create(tmp_path_factory.mktemp("search") / "s.lienzo")
    ids = [project.create_document(f"Speech {i}", text) for i, text in enumerate(speeches)]
    stats = text_search.index_project(project, minilm)
    yield project, ids, stats
    project.close()


def test_minilm_vectors_are_unit_length_and_meaningful(minilm):
    vectors = encode(minilm, ["The cat sleeps on the sofa.", "A kitten is napping on the couch.",
                              "Quarterly revenue rose by twelve percent."])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3


def test_query_finds_the_right_document_among_24(indexed, minilm):
    project, ids, stats = indexed
    assert stats["documents"] == 24 and stats["embedded"] == stats["passages"] >= 24
    for index, query in QUERIES.items():
        for mode in ("semantic", "hybrid"):
            hits = text_search.search(project, query, top_k=3, entry=minilm, mode=mode)
            assert hits[0].document_id == ids[index], (mode, query, [h.title for h in hits])
    # Results point at the passage: document id and offsets into its text.
    hit = text_search.search(project, QUERIES[13], top_k=1, entry=minilm)[0]
    document = project.get_document(hit.document_id)
    assert document["text"][hit.start:hit.end] == hit.text
    assert hit.semantic_rank == 1 and hit.similarity > 0.2


def test_keyword_search_and_safe_queries(indexed, minilm):
    project, ids, _ = indexed
    hits = text_search.search(project, "Phaethon Phoebus", top_k=2, mode="keyword")
    assert hits and hits[0].document_id == ids[13] and hits[0].keyword_rank == 1
    # FTS5 syntax in user input is quoted, not executed.
    for query in ['"unbalanced', "NEAR(a b", "title:* OR", "-- ; DROP TABLE passages"]:
        text_search.search(project, query, top_k=2, entry=minilm)
    with pytest.raises(AppError, match="empty"):
        text_search.search(project, "   ", entry=minilm)


def test_passages_cover_paragraphs_with_exact_offsets():
    text = "Title\n\n" + "First paragraph. " * 10 + "\n\n\n" + ("Long sentence number one goes on. " * 60) + "\n\nEnd."
    spans = text_search.split_passages(text)
    assert spans[0][0] == 0  # the short title is merged with the next paragraph
    assert all(e - s <= text_search.MAX_CHARS for s, e in spans)
    covered = "".join(text[s:e] for s, e in spans)
    assert re.sub(r"\s", "", covered) == re.sub(r"\s", "", text)
    assert text_search.split_passages("") == [] and text_search.split_passages("  \n\n ") == []


def test_index_is_incremental_and_follows_document_changes(tmp_path, cache):
    encoder = cache.text_model(shared_tiny("encoder"))
    with Project.create(tmp_path / "inc.lienzo") as project:
        a = project.create_document("A", "Alpha harbour paragraph.\n\nSecond alpha paragraph about ships.")
        b = project.create_document("B", "Bravo report about quarterly sales figures.")
        first = text_search.index_project(project, encoder)
        assert first["updated"] == 2 and first["embedded"] >= 2
        again = text_search.index_project(project, encoder)
        assert again["unchanged"] == 2 and again["embedded"] == 0 and again["updated"] == 0
        # Editing one document re-embeds only its new passage and keeps the other's vectors.
        project.save_document(b, "Bravo report about quarterly sales figures.\n\n" + "A new closing paragraph. " * 12)
        third = text_search.index_project(project, encoder)
        assert third["updated"] == 1 and third["unchanged"] == 1 and third["embedded"] == 1
        hits = text_search.search(project, "closing paragraph", top_k=1, mode="keyword")
        assert hits[0].document_id == b
        project.delete_document(a)
        text_search.index_project(project, encoder)
        with project.lock:
            docs = {r[0] for r in project.db.execute("SELECT DISTINCT document_id FROM passages").fetchall()}
        assert docs == {b}
        assert text_search.search(project, "alpha harbour ships", top_k=3, mode="keyword") == []


def test_search_job_indexes_then_searches_through_the_runner(tmp_path, cache):
    encoder_dir = shared_tiny("encoder")
    with Project.create(tmp_path / "job.lienzo") as project:
        doc = project.create_document("Notes", "The lighthouse keeper counted ships at dawn.")
        runner = JobRunner(project)
        try:
            import functools

            job = runner.submit(functools.partial(text_search.search_job, cache=cache),
                                {"query": "lighthouse", "encoder": str(encoder_dir), "top_k": 3}, kind="text.search")
            job.wait(60)
            assert job.status == "done", job.error
            assert job.result["hits"][0]["document_id"] == doc and job.result["index"]["updated"] == 1
            empty = runner.submit(text_search.search_job, {"query": ""}, kind="text.search")
            empty.wait(30)
            assert empty.status == "failed" and "empty" in empty.error.message
        finally:
            runner.shutdown()
        assert project.get_run(job.run_id)["status"] == "done"
