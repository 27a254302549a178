"""Search over a project's documents: semantic (sentence embeddings) and keyword (SQLite FTS5), fused.

Documents are cut into passages along paragraph boundaries; each passage row keeps its document id,
character offsets, text and embedding (float32 bytes) in the project's `passages` table, whose FTS5
index the schema's triggers keep in step. Indexing is incremental: a document whose passages are
unchanged is skipped, and within a changed document only passages with new text are embedded again.
Rankings are combined by reciprocal rank fusion (Cormack et al. 2009): robust, no score scaling.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from core.errors import AppError

RRF_K = 60
CANDIDATES = 100
TARGET_CHARS = 700  # about 150 words: enough context for MiniLM (256 tokens), small enough to point at
MAX_CHARS = 1200
MIN_CHARS = 200


@dataclass
class SearchHit:
    document_id: int
    title: str
    passage_id: int
    start: int
    end: int
    text: str
    score: float
    semantic_rank: int | None = None
    keyword_rank: int | None = None
    similarity: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


# -- passages -----------------------------------------------------------------------------------
def _sentence_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    spans, pos = [], start
    for match in re.finditer(r"[.!?;:]\s+", text[start:end]):
        cut = start + match.end()
        if cut - pos >= MIN_CHARS:
            spans.append((pos, cut))
            pos = cut
    if pos < end:
        spans.append((pos, end))
    # Still too long (no punctuation): hard cuts at whitespace.
    out = []
    for s, e in spans:
        while e - s > MAX_CHARS:
            cut = text.rfind(" ", s + TARGET_CHARS, s + MAX_CHARS)
            cut = cut if cut > s else s + MAX_CHARS
            out.append((s, cut))
            s = cut
        out.append((s, e))
    return out


def split_passages(text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of passages: paragraphs, short ones merged, long ones split."""
    paragraphs = []
    for match in re.finditer(r"\S(?:.*?\S)?(?=\n\s*\n|\s*\Z)", text, flags=re.S):
        paragraphs.append((match.start(), match.end()))
    spans: list[tuple[int, int]] = []
    for start, end in paragraphs:
        if end - start > MAX_CHARS:
            spans.extend(_sentence_spans(text, start, end))
        elif spans and (spans[-1][1] - spans[-1][0] < MIN_CHARS) and end - spans[-1][0] <= TARGET_CHARS:
            spans[-1] = (spans[-1][0], end)  # merge a short paragraph (a heading, a line) with the next
        else:
            spans.append((start, end))
    return [(s, e) for s, e in spans if text[s:e].strip()]


def encoder_tag(entry) -> str:
    """The name stored with each embedding: vectors from different encoders never mix."""
    from core.models import registry

    try:
        if Path(entry.info.path).resolve() == registry.default_encoder_path().resolve():
            return registry.MINILM_NAME
    except AppError:
        pass
    digest = hashlib.sha256(str(Path(entry.info.path).resolve()).encode()).hexdigest()[:8]
    return f"{entry.info.name}@{digest}"


def index_project(project, entry, progress=None, cancel_event=None, batch_size: int = 32) -> dict:
    """Bring the passages table up to date with the documents. Returns counts of what was done."""
    import numpy as np

    from core.text.embed import encode

    tag = encoder_tag(entry)
    stats = {"documents": 0, "unchanged": 0, "updated": 0, "passages": 0, "embedded": 0, "reused": 0,
             "removed": 0}
    with project.lock:
        existing_docs = {r["id"] for r in project.db.query("SELECT id FROM documents")}
        stale = [r["document_id"] for r in project.db.query(
            "SELECT DISTINCT document_id FROM passages WHERE document_id IS NOT NULL")
            if r["document_id"] not in existing_docs]
    if stale:
        with project.transaction():
            for doc_id in stale:
                project.db.execute("DELETE FROM passages WHERE document_id = ?", [doc_id])
        stats["removed"] = len(stale)
    plans = []  # (doc_id, [(start, end, text)], {text: embedding bytes})
    for doc in project.list_documents():
        stats["documents"] += 1
        text = project.get_document(doc["id"])["text"] or ""
        spans = [(s, e, text[s:e]) for s, e in split_passages(text)]
        with project.lock:
            rows = list(project.db.query(
                'SELECT start, "end", text, model, embedding FROM passages WHERE document_id = ? ORDER BY start',
                [doc["id"]]))
        same = [(r["start"], r["end"], r["text"]) for r in rows] == spans
        if same and all(r["model"] == tag and r["embedding"] for r in rows):
            stats["unchanged"] += 1
            stats["passages"] += len(rows)
            continue
        known = {r["text"]: r["embedding"] for r in rows if r["model"] == tag and r["embedding"]}
        plans.append((doc["id"], spans, known))
    todo = sorted({t for _, spans, known in plans for _, _, t in spans if t not in known})
    vectors: dict[str, bytes] = {}
    if todo:
        def on_batch(done, total):
            if progress:
                progress(done, total, f"Embedding passages {done}/{total}")

        matrix = encode(entry, todo, batch_size=batch_size, cancel_event=cancel_event, on_batch=on_batch)
        vectors = {t: np.ascontiguousarray(v, dtype=np.float32).tobytes() for t, v in zip(todo, matrix)}
    for doc_id, spans, known in plans:
        with project.transaction():
            project.db.execute("DELETE FROM passages WHERE document_id = ?", [doc_id])
            if spans:
                project.db["passages"].insert_all(
                    [{"document_id": doc_id, "start": s, "end": e, "text": t,
                      "embedding": known.get(t) or vectors[t], "model": tag} for s, e, t in spans])
        stats["updated"] += 1
        stats["passages"] += len(spans)
        stats["reused"] += sum(1 for _, _, t in spans if t in known)
    stats["embedded"] = len(todo)
    return stats


# -- queries ------------------------------------------------------------------------------------
# Words too common to say anything about a passage; they would only add noise to the keyword ranking.
STOPWORDS = frozenset("""a an and are as at be but by for from has have he her his i if in into is it its me my
no not of on or our she so than that the their them then there these they this to was we were what when where
which who will with you your""".split())


def fts_query(query: str) -> str:
    """A safe FTS5 expression: every word quoted (no operator injection), any word may match."""
    words = re.findall(r"\w+", query.lower())
    kept = [w for w in words if w not in STOPWORDS] or words
    return " OR ".join(f'"{w}"' for w in dict.fromkeys(kept))


def keyword_ranking(project, query: str, limit: int = CANDIDATES) -> list[int]:
    expression = fts_query(query)
    if not expression:
        return []
    with project.lock:
        rows = project.db.execute(
            "SELECT rowid FROM passages_fts WHERE passages_fts MATCH ? ORDER BY bm25(passages_fts) LIMIT ?",
            [expression, limit]).fetchall()
    return [r[0] for r in rows]


def semantic_ranking(project, entry, query: str, limit: int = CANDIDATES) -> tuple[list[int], dict[int, float]]:
    import numpy as np

    from core.text.embed import encode

    tag = encoder_tag(entry)
    with project.lock:
        rows = project.db.execute(
            "SELECT id, embedding FROM passages WHERE model = ? AND embedding IS NOT NULL", [tag]).fetchall()
    if not rows:
        return [], {}
    ids = np.array([r[0] for r in rows])
    matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
    q = encode(entry, [query])[0]
    if q.shape[0] != matrix.shape[1]:
        raise AppError("The stored passages were embedded with another encoder.", "Rebuild the search index.")
    sims = matrix @ q
    order = np.argsort(-sims)[:limit]
    return [int(ids[i]) for i in order], {int(ids[i]): float(sims[i]) for i in order}


def search(project, query: str, top_k: int = 10, entry=None, mode: str = "hybrid") -> list[SearchHit]:
    """Best passages for `query`: mode hybrid (semantic + keyword fused), semantic or keyword."""
    if not query.strip():
        raise AppError("The search query is empty.", "Type a few words describing what you are looking for.")
    if mode not in ("hybrid", "semantic", "keyword"):
        raise AppError(f"Unknown search mode '{mode}'.", "Use hybrid, semantic or keyword.")
    rankings: dict[str, list[int]] = {}
    similarity: dict[int, float] = {}
    if mode in ("hybrid", "semantic"):
        if entry is None:
            raise AppError("Semantic search needs a sentence encoder.", "Load the default encoder or use keyword mode.")
        rankings["semantic"], similarity = semantic_ranking(project, entry, query)
    if mode in ("hybrid", "keyword"):
        rankings["keyword"] = keyword_ranking(project, query)
    scores: dict[int, float] = {}
    ranks: dict[str, dict[int, int]] = {name: {} for name in rankings}
    for name, ids in rankings.items():
        for rank, pid in enumerate(ids, start=1):
            scores[pid] = scores.get(pid, 0.0) + 1.0 / (RRF_K + rank)
            ranks[name][pid] = rank
    best = sorted(scores, key=lambda pid: (-scores[pid], pid))[:top_k]
    if not best:
        return []
    marks = ",".join("?" * len(best))
    with project.lock:
        rows = {r["id"]: r for r in project.db.query(
            f'SELECT p.id, p.document_id, p.start, p."end", p.text, d.title FROM passages p '
            f"JOIN documents d ON d.id = p.document_id WHERE p.id IN ({marks})", best)}
    return [SearchHit(document_id=rows[pid]["document_id"], title=rows[pid]["title"], passage_id=pid,
                      start=rows[pid]["start"], end=rows[pid]["end"], text=rows[pid]["text"], score=scores[pid],
                      semantic_rank=ranks.get("semantic", {}).get(pid), keyword_rank=ranks.get("keyword", {}).get(pid),
                      similarity=similarity.get(pid))
            for pid in best if pid in rows]


# -- jobs ---------------------------------------------------------------------------------------
def _cache(cache):
    from core.models.cache import default_cache

    return cache or default_cache()


def index_job(params: dict, ctx, cache=None) -> dict:
    """Job: update the project's passages. params: encoder (folder, default MiniLM)."""
    from core.text.embed import load_encoder

    if ctx.project is None:
        raise AppError("Search needs an open project.", "Open or create a project first.")
    ctx.progress(0, 0, "Loading the sentence encoder…")
    entry = load_encoder(params.get("encoder"), cache)
    with _cache(cache).guard(entry, "embedding passages"):
        stats = index_project(ctx.project, entry, progress=ctx.progress, cancel_event=ctx.cancel_event)
    ctx.check_cancelled()
    ctx.metrics.update(stats)
    return stats


def search_job(params: dict, ctx, cache=None) -> dict:
    """Job: params query, top_k, mode, encoder. Updates the index first, then searches."""
    from core.text.embed import load_encoder

    if ctx.project is None:
        raise AppError("Search needs an open project.", "Open or create a project first.")
    mode = params.get("mode", "hybrid")
    query = params.get("query", "")
    if not query.strip():
        raise AppError("The search query is empty.", "Type a few words describing what you are looking for.")
    entry = None
    stats = {}
    if mode != "keyword":
        ctx.progress(0, 0, "Loading the sentence encoder…")
        entry = load_encoder(params.get("encoder"), cache)
        if not ctx.project.read_only:
            with _cache(cache).guard(entry, "embedding passages"):
                stats = index_project(ctx.project, entry, progress=ctx.progress, cancel_event=ctx.cancel_event)
    ctx.check_cancelled()
    hits = search(ctx.project, query, int(params.get("top_k") or 10), entry, mode)
    ctx.metrics.update(hits=len(hits))
    return {"hits": [h.to_dict() for h in hits], "index": stats, "query": query}
