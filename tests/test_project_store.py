"""The project facade on a real SQLite file: every kind of row, transactions, notifications."""

import io
import threading

import pytest
from PIL import Image

from core.project import Change, Project, ProjectError, file_fingerprint
from core.project import store


def _png(color=(200, 30, 30), size=(40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def _has(row: dict, expected: dict) -> bool:
    return {k: row.get(k) for k in expected} == expected


@pytest.fixture
def project(tmp_path):
    with Project.create(tmp_path / "store.lienzo") as p:
        yield p


# -- documents ---------------------------------------------------------------------------------

def test_documents_versions_and_restore(project):
    doc = project.create_document("Chapter 1", "Once", format="plain")
    assert _has(project.get_document(doc), {"title": "Chapter 1", "text": "Once",
                                            "format": "plain", "version": 1})
    assert project.save_document(doc, "Once upon") == 2
    assert project.save_document(doc, "Once upon") == 2  # unchanged text adds nothing
    assert project.save_document(doc, "Once upon a time") == 3
    assert [v["version"] for v in project.document_versions(doc)] == [1, 2, 3]
    assert project.get_document_version(doc, 2) == "Once upon"

    assert project.restore_document_version(doc, 1) == 4
    current = project.get_document(doc)
    assert current["text"] == "Once" and current["version"] == 4
    assert project.get_document_version(doc, 3) == "Once upon a time"  # history kept
    assert project.document_versions(doc)[-1]["note"] == "restored from version 1"
    restore = project.audit_log(action="document.restore_version")[0]
    assert restore["details"] == {"id": doc, "restored": 1, "replaced": 3, "new": 4}
    assert restore["user"]

    with pytest.raises(ProjectError, match="no version 9"):
        project.get_document_version(doc, 9)
    with pytest.raises(ProjectError, match="no document"):
        project.get_document(999)
    with pytest.raises(ProjectError, match="needs a name"):
        project.create_document("   ")
    with pytest.raises(ProjectError, match="format"):
        project.create_document("x", format="docx")


def test_autosaves_coalesce_but_explicit_saves_are_kept(project, monkeypatch):
    doc = project.create_document("Notes")
    clock = [1000.0]
    monkeypatch.setattr(store, "_now", lambda: clock[0])
    assert project.save_document(doc, "a", autosave=True) == 2
    clock[0] += 2
    assert project.save_document(doc, "ab", autosave=True) == 2  # same autosave version
    assert project.get_document_version(doc, 2) == "ab"
    assert project.save_document(doc, "ab") == 2  # explicit save of the same text keeps it
    clock[0] += 2
    assert project.save_document(doc, "abc", autosave=True) == 3  # a kept version is not touched
    clock[0] += store.AUTOSAVE_COALESCE_S + 1
    assert project.save_document(doc, "abcd", autosave=True) == 4  # old autosave: new version
    versions = project.document_versions(doc)
    assert [(v["version"], v["autosave"]) for v in versions] == [(1, 0), (2, 0), (3, 1), (4, 1)]
    assert project.get_document_version(doc, 2) == "ab"


def test_rename_delete_and_list_documents(project):
    a = project.create_document("A", "text a")
    b = project.create_document("B")
    project.rename_document(a, "  Alpha ")
    assert project.get_document(a)["title"] == "Alpha"
    listed = project.list_documents()
    assert {d["id"] for d in listed} == {a, b} and "text" not in listed[0]
    project.save_document(a, "more")
    project.delete_document(a)
    assert [d["id"] for d in project.list_documents()] == [b]
    assert project.db.execute("SELECT count(*) FROM document_versions WHERE document_id = ?",
                              [a]).fetchone()[0] == 0
    actions = [r["action"] for r in project.audit_log()]
    assert "document.rename" in actions and "document.delete" in actions
    with pytest.raises(ProjectError, match="no document"):
        project.delete_document(a)


# -- images ------------------------------------------------------------------------------------

def test_add_image_dedup_thumbnail_and_delete(project):
    data = _png(size=(600, 300))
    image = project.add_image(data, "red.png", origin="generated",
                              params={"seed": 7, "prompt": "red", "versions": {"torch": "2"}})
    assert project.add_image(data, "again.png") == image  # stored once per sha256
    assert project.db.execute("SELECT count(*) FROM image_data").fetchone()[0] == 1
    info = project.get_image(image)
    assert _has(info, {"name": "red.png", "width": 600, "height": 300, "format": "PNG",
                       "mode": "RGB", "bit_depth": 8, "origin": "generated", "size": len(data)})
    assert info["params"]["seed"] == 7
    assert project.image_bytes(image) == data
    thumb = Image.open(io.BytesIO(project.thumbnail_bytes(image)))
    assert thumb.format == "PNG" and thumb.size == (256, 128)
    assert [i["id"] for i in project.list_images(origin="generated")] == [image]
    assert project.list_images(origin="imported") == []

    project.rename_image(image, "crimson.png")
    assert project.get_image(image)["name"] == "crimson.png"
    project.delete_image(image)
    assert project.list_images() == []
    assert project.db.execute("SELECT count(*) FROM image_data").fetchone()[0] == 0
    with pytest.raises(ProjectError, match="not an image"):
        project.add_image(b"hello", "hello.png")
    with pytest.raises(ProjectError, match="origin"):
        project.add_image(data, "x.png", origin="stolen")


# -- data sets ---------------------------------------------------------------------------------

def test_datasets_copied_and_referenced(project, tmp_path):
    good = project.add_image(_png((10, 200, 10)), "good.png", origin="dataset")
    mask = project.add_image(_png((0, 0, 0)), "mask.png", origin="dataset")
    mine = project.add_image(_png((1, 2, 3)), "mine.png")
    assert {i["id"] for i in project.list_images()} == {mine}  # data set images stay out
    assert {i["id"] for i in project.list_images(include_dataset=True)} == {good, mask, mine}

    copied = project.create_dataset("Bottles", meta={"source": "camera 2"})
    ids = project.add_dataset_items(copied, [
        {"split": "train", "label": "good", "image_id": good},
        {"split": "test", "label": "defect", "image_id": mine, "mask_image_id": mask,
         "meta": {"defect": "crack"}},
    ])
    assert len(ids) == 2
    info = project.get_dataset(copied)
    assert info["splits"] == {"train": 1, "test": 1} and info["meta"] == {"source": "camera 2"}
    assert [i["label"] for i in project.dataset_items(copied, split="test")] == ["defect"]
    project.update_dataset_item(ids[0], label="defect", meta={"checked": True})
    assert project.dataset_items(copied)[0]["meta"] == {"checked": True}
    with pytest.raises(ProjectError, match="Unknown data set item fields"):
        project.update_dataset_item(ids[0], colour="red")
    with pytest.raises(ProjectError, match="used by the data set"):
        project.delete_image(mask)

    csv = tmp_path / "table.csv"
    csv.write_text("a,b\n1,2\n")
    table = project.create_dataset("Table", kind="table", storage="referenced", source_path=csv)
    assert (project.get_dataset(table)["source_size"],
            project.get_dataset(table)["source_sha256"]) == file_fingerprint(csv)
    picture = tmp_path / "pic.png"
    picture.write_bytes(_png())
    size, sha = file_fingerprint(picture)
    referenced = project.create_dataset("On disk", storage="referenced", source_path=tmp_path)
    project.add_dataset_items(referenced, [{"split": "train", "path": picture, "size": size,
                                            "sha256": sha, "mask_path": tmp_path / "m.png"}])
    item = project.dataset_items(referenced)[0]
    assert (item["path"], item["size"], item["sha256"]) == (str(picture), size, sha)

    project.rename_dataset(copied, "Bottles v2")
    assert {d["name"]: d["item_count"] for d in project.list_datasets()} == \
        {"Bottles v2": 2, "Table": 0, "On disk": 1}
    project.delete_dataset(copied)
    # its own images went with it, the user's imported image stayed
    assert {i["id"] for i in project.list_images(include_dataset=True)} == {mine}
    with pytest.raises(ProjectError, match="kind"):
        project.create_dataset("x", kind="audio")


# -- models, runs, audit, generations, inspection results, passages ------------------------------

def test_models(project):
    model = project.register_model("vae", "Bottle VAE", "/models/vae",
                                   {"model.safetensors": "ab" * 32}, {"latent": 16})
    assert project.get_model(model)["config"] == {"latent": 16}
    assert [m["id"] for m in project.list_models(kind="vae")] == [model]
    assert project.list_models(kind="gpt") == []
    project.rename_model(model, "VAE 2")
    project.delete_model(model)
    assert project.list_models() == []
    assert [r["action"] for r in project.audit_log()][-3:] == \
        ["model.register", "model.rename", "model.delete"]


def test_runs(project):
    run = project.start_run("train", {"lr": 0.001})
    assert project.get_run(run)["status"] == "queued"
    project.update_run(run, status="running", started_at=100.0)
    project.update_run(run, status="done", metrics={"loss": 0.5}, log="ok", ended_at=160.5)
    row = project.get_run(run)
    assert _has(row, {"status": "done", "metrics": {"loss": 0.5}, "log": "ok",
                      "started_at": 100.0, "ended_at": 160.5, "params": {"lr": 0.001}})
    assert [r["id"] for r in project.list_runs(kind="train")] == [run]
    with pytest.raises(ProjectError, match="run status"):
        project.update_run(run, status="exploded")
    with pytest.raises(ProjectError, match="no run"):
        project.update_run(12345, status="done")


def test_generations_and_inspection_results(project):
    doc = project.create_document("Poem")
    image = project.add_image(_png(), "gen.png", origin="generated")
    run = project.start_run("inspect", {})
    big_seed = 2 ** 64 - 1  # torch seeds exceed SQLite integers
    gen = project.record_generation("image", "tiny-sd", {"steps": 4}, big_seed, "a cat", None,
                                    image_id=image, run_id=run)
    project.record_generation("text", "tiny-gpt", {"temperature": 0.7}, 3, "Once", "upon",
                              document_id=doc)
    gens = project.list_generations(kind="image")
    assert [g["id"] for g in gens] == [gen] and gens[0]["seed"] == big_seed
    model = project.register_model("vae", "m", "/m")
    n = project.add_inspection_results(run, [
        {"model_id": model, "item_path": "/a.png", "score": 0.9, "normalized_score": 1.2,
         "verdict": "defect", "heatmap_image_id": image, "label": "defect", "meta": {"x": 1}},
        {"item_path": "/b.png", "score": 0.1, "verdict": "ok"},
    ])
    assert n == 2
    rows = project.inspection_results(run)
    assert [r["verdict"] for r in rows] == ["defect", "ok"] and rows[0]["meta"] == {"x": 1}
    with pytest.raises(ProjectError, match="Unknown inspection result fields"):
        project.add_inspection_results(run, [{"scor": 1}])
    assert len(project.inspection_results(run)) == 2  # the bad batch left nothing behind
    project.delete_image(image)  # provenance rows survive, pointing nowhere
    assert project.list_generations(kind="image")[0]["image_id"] is None
    assert project.inspection_results(run)[0]["heatmap_image_id"] is None


def test_delete_run_removes_its_results_and_only_its_own_internal_images(project):
    """Heat maps and reconstructions stored for a run go with it; an image another run, a data
    set or the user's gallery still uses stays; a running run is refused."""
    own_map = project.add_image(_png((10, 10, 10)), "heatmap a", origin="dataset")
    own_recon = project.add_image(_png((20, 20, 20)), "reconstruction a", origin="dataset")
    shared_map = project.add_image(_png((30, 30, 30)), "heatmap b", origin="dataset")
    gallery = project.add_image(_png((40, 40, 40)), "heat map from the CLI", origin="generated")
    first, second = project.start_run("inspect", {}, status="running"), project.start_run("inspect", {})
    project.add_inspection_results(first, [
        {"item_path": "a", "heatmap_image_id": own_map, "meta": {"recon_image_id": own_recon}},
        {"item_path": "b", "heatmap_image_id": shared_map},
        {"item_path": "c", "heatmap_image_id": gallery}])
    project.add_inspection_results(second, [{"item_path": "b", "heatmap_image_id": shared_map}])
    with pytest.raises(ProjectError, match="still running"):
        project.delete_run(first)
    project.update_run(first, status="done")
    seen = []
    project.subscribe(seen.append)
    assert project.delete_run(first) == {"results": 3, "images": 2}
    assert first not in [r["id"] for r in project.list_runs()]
    assert project.inspection_results(first) == []
    remaining = {r["id"] for r in project.list_images(include_dataset=True)}
    assert own_map not in remaining and own_recon not in remaining
    assert {shared_map, gallery} <= remaining
    assert project.image_bytes(shared_map)  # its bytes too
    assert Change("runs", "delete", first) in seen
    assert project.audit_log("run.delete")[-1]["details"]["id"] == first
    with pytest.raises(ProjectError, match="no run"):
        project.delete_run(first)


def test_passages_fts_follows_inserts_and_deletes(project):
    doc = project.create_document("Search me", "…")
    with project.transaction():
        for i, text in enumerate(["the quick brown fox", "lazy dogs sleep", "a quick nap"]):
            project.db.execute('INSERT INTO passages (document_id, start, "end", text, model) '
                               "VALUES (?, ?, ?, ?, 'minilm')", [doc, i * 10, i * 10 + 9, text])

    def hits(word):
        return sorted(r[0] for r in project.db.execute(
            "SELECT p.text FROM passages_fts f JOIN passages p ON p.id = f.rowid "
            "WHERE passages_fts MATCH ?", [word]))

    assert hits("quick") == ["a quick nap", "the quick brown fox"]
    project.delete_document(doc)  # cascades to passages and their index entries
    assert hits("quick") == []


# -- transactions, notifications, counts, threads ----------------------------------------------

def test_transaction_rolls_back_everything_and_notifies_only_commits(project):
    seen: list[Change] = []
    unsubscribe = project.subscribe(seen.append)
    with pytest.raises(RuntimeError):
        with project.transaction():
            project.create_document("lost 1")
            project.create_document("lost 2")
            raise RuntimeError("boom")
    assert project.list_documents() == [] and seen == []

    with project.transaction():
        doc = project.create_document("kept")
        try:
            with project.transaction():  # an inner failure undoes only the inner block
                project.create_document("inner, lost")
                raise ValueError
        except ValueError:
            pass
        assert seen == []  # nothing is announced before the commit
    assert [d["title"] for d in project.list_documents()] == ["kept"]
    assert seen == [Change("documents", "insert", doc)]

    seen.clear()
    project.rename_document(doc, "renamed")
    assert Change("documents", "update", doc) in seen
    dataset = project.create_dataset("d")
    seen.clear()
    project.add_dataset_items(dataset, [{"path": f"/x/{i}.png"} for i in range(3)])
    assert seen == [Change("datasets", "update", dataset)]
    unsubscribe()
    project.create_document("quiet")
    assert Change("documents", "insert", doc + 1) not in seen

    def broken(change):
        raise RuntimeError("a broken view")
    project.subscribe(broken)
    assert project.create_document("still saved")  # a failing subscriber changes nothing


def test_counts(project):
    project.create_document("a")
    project.add_image(_png(), "i.png")
    project.add_image(_png((1, 1, 1)), "d.png", origin="dataset")
    project.start_run("x", {})
    counts = project.counts()
    assert _has(counts, {"documents": 1, "images": 1, "datasets": 0, "models": 0, "runs": 1})


def test_threads_share_one_project(project):
    seen_threads = set()
    project.subscribe(lambda change: seen_threads.add(threading.get_ident()))
    errors = []

    def writer(n):
        try:
            for i in range(20):
                doc = project.create_document(f"t{n}-{i}")
                project.save_document(doc, f"text {n} {i}")
                project.list_documents()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert project.counts()["documents"] == 80
    assert len(seen_threads) == 4  # notified on the writing threads
    assert project.integrity_check() == ["ok"]


def test_closed_project_refuses_use(tmp_path):
    project = Project.create(tmp_path / "c.lienzo")
    project.close()
    project.close()  # twice is fine
    with pytest.raises(ProjectError, match="closed"):
        project.list_documents()
    with pytest.raises(ProjectError, match="closed"):
        project.create_document("x")
