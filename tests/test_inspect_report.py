"""Inspection session and reports (no Qt): a real tiny model trained for a few seconds on a real
subset of magnetic_tile, scored, re-thresholded, and reported as CSV and HTML."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.errors import AppError
from core.jobs import JobRunner
from core.project import Project

TINY = {"image_size": 64, "patch": 32, "batch": 8, "time_budget": 3, "latent": 8}
SUBSET = (("train/good", 12), ("test/good", 4), ("test/blowhole", 3), ("test/crack", 2))


def copy_subset(shared: Path, dest: Path, corrupt: bool = False) -> Path:
    """About twenty real images (with their masks) in MVTec layout; optionally one damaged file."""
    src = shared / "qa" / "magnetic_tile"
    for sub, n in SUBSET:
        (dest / sub).mkdir(parents=True, exist_ok=True)
        for f in sorted((src / sub).iterdir())[:n]:
            shutil.copy(f, dest / sub / f.name)
            kind = sub.split("/")[1]
            if sub.startswith("test/") and kind != "good":
                mask = src / "ground_truth" / kind / f"{f.stem}_mask.png"
                (dest / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
                shutil.copy(mask, dest / "ground_truth" / kind / mask.name)
    if corrupt:
        (dest / "train" / "good" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        (dest / "train" / "good" / "empty.png").write_bytes(b"")
    return dest


def run(runner: JobRunner, fn, params, kind="inspect"):
    handle = runner.submit(fn, params, kind=kind)
    assert handle.wait(300)
    assert handle.status == "done", handle.error
    return handle


def prepare_project(shared: Path, tmp: Path) -> dict:
    """Project with an imported data set, a trained model and one inspection of the test split."""
    from core.inspect import session as S

    data = copy_subset(shared, tmp / "data", corrupt=True)
    path = tmp / "qa.lienzo"
    project = Project.create(path)
    runner = JobRunner(project)
    try:
        imp = run(runner, S.import_job, {"root": str(data), "storage": "copied"}, "inspect.import").result
        trained = run(runner, S.train_job, {"dataset_id": imp["dataset_id"], "preset": "fast",
                                            "overrides": TINY, "out": str(tmp / "model")}, "inspect.train").result
        inspected = run(runner, S.inspect_job, {"model_id": trained["model_id"], "dataset_id": imp["dataset_id"],
                                                "split": "test"}).result
    finally:
        runner.shutdown()
        project.close()
    return {"path": path, "data": data, "dataset_id": imp["dataset_id"], "import": imp,
            "model_id": trained["model_id"], "model_name": trained["name"], "run_id": inspected["run_id"]}


@pytest.fixture(scope="module")
def prepared(shared_data, tmp_path_factory):
    return prepare_project(shared_data, tmp_path_factory.mktemp("inspect_report"))


@pytest.fixture
def project(prepared):
    with Project.open(prepared["path"]) as p:
        yield p


def test_import_lists_bad_files_and_keeps_the_layout(prepared, project):
    from core.inspect import session as S

    skipped = dict((Path(p).name, why) for p, why in prepared["import"]["skipped"])
    assert set(skipped) == {"broken.jpg", "empty.png"}
    assert "empty" in skipped["empty.png"]
    summary = S.dataset_summary(project, prepared["dataset_id"])
    assert summary["counts"] == {("train", "good"): 12, ("test", "good"): 4, ("test", "defect"): 5}
    assert len(summary["skipped"]) == 2
    items = project.dataset_items(prepared["dataset_id"], split="test")
    assert sum(1 for i in items if i["mask_image_id"]) == 5


def test_model_registered_with_metrics_and_results_stored(prepared, project):
    model = project.get_model(prepared["model_id"])
    cfg = model["config"]
    assert model["kind"] == "inspector" and Path(model["path"], "model.safetensors").is_file()
    assert cfg["dataset_id"] == prepared["dataset_id"] and cfg["metrics"]["n_images"] == 9
    assert 0.0 <= cfg["metrics"]["image_auroc"] <= 1.0
    results = project.inspection_results(prepared["run_id"])
    assert len(results) == 9
    for r in results:
        assert r["heatmap_image_id"] and r["meta"]["recon_image_id"]
        assert r["verdict"] == ("FAIL" if r["score"] >= r["meta"]["threshold"] else "PASS")
    assert any(a["action"] == "inspect.train" for a in project.audit_log())


def test_rethreshold_follows_the_scores_and_is_audited(prepared, project):
    from core.inspect import session as S

    model = project.get_model(prepared["model_id"])
    scores = np.array([r["score"] for r in project.inspection_results(prepared["run_id"])])
    thr = float(np.median(scores))
    assert S.counts(scores, thr)["fail"] == int((scores >= thr).sum())
    assert S.verdicts(scores, thr).count("FAIL") == int((scores >= thr).sum())
    norm = S.normalized_scores(scores, model["config"]["calibration"], thr)
    assert ((norm >= 0.5) == (scores >= thr)).all()
    old = S.set_threshold(project, model, thr, user="tester")
    assert S.current_threshold(project, model) == pytest.approx(thr)
    row = project.audit_log("inspect.threshold")[-1]
    assert row["user"] == "tester" and row["details"]["old"] == pytest.approx(old)
    assert row["details"]["new"] == pytest.approx(thr)
    labels = [r["label"] for r in project.inspection_results(prepared["run_id"])]
    stats = S.threshold_stats(scores, labels, thr)
    from sklearn.metrics import roc_auc_score

    y = [0 if lab == "good" else 1 for lab in labels]
    assert stats["auroc"] == pytest.approx(roc_auc_score(y, scores))
    c = stats["confusion"]
    assert c["tp"] + c["fn"] == 5 and c["fp"] + c["tn"] == 4
    assert stats["f1_max"] == pytest.approx(max(S.threshold_stats(scores, labels, t)["f1"] for t in scores))
    assert S.threshold_stats(scores, labels, stats["f1_max_threshold"])["f1"] == pytest.approx(stats["f1_max"])


def test_csv_and_html_reports(prepared, project, tmp_path):
    from core.inspect import report as R

    scores = sorted(r["score"] for r in project.inspection_results(prepared["run_id"]))
    thr = scores[-3]  # three items FAIL
    data = R.report_data(project, prepared["run_id"], thr, operator="Ana QA")
    assert data["counts"] == {"total": 9, "fail": 3, "pass": 6}
    out = R.write_csv(data, tmp_path / "r.csv")
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [k for k in rows[0]][:4] == ["path", "score", "normalized_score", "verdict"] and "label" in rows[0]
    assert len(rows) == 9 and sum(r["verdict"] == "FAIL" for r in rows) == 3
    for r in rows:
        assert (float(r["score"]) >= thr * (1 - 1e-6)) == (r["verdict"] == "FAIL")
    html = R.write_html(data, tmp_path / "r.html").read_text(encoding="utf-8")
    assert prepared["model_name"] in html and "Ana QA" in html
    assert (f"<th>Best F1 (any threshold)</th><td>{data['stats']['f1_max']:.3f}</td><th>at threshold</th>\n"
            f"<td>{data['stats']['f1_max_threshold']:.3f}</td>") in html
    fails = [r["name"] for r in data["rows"] if r["verdict"] == "FAIL"]
    section = html.split("FAIL items (3)")[1].split("All items")[0]
    for name in fails:
        assert name in section
    assert len(re.findall(r'<img src="data:image/png;base64,', section)) == 6  # image + heat map per FAIL
    R.record(project, data, "html", tmp_path / "r.html")
    assert project.audit_log("inspect.report")[-1]["details"]["fail"] == 3


def test_confirm_good_adds_the_item_to_training(prepared, project):
    from core.inspect import session as S

    model = project.get_model(prepared["model_id"])
    result = next(r for r in project.inspection_results(prepared["run_id"]) if r["label"] == "good")
    result["run_id"] = prepared["run_id"]
    before = len(project.dataset_items(prepared["dataset_id"], split="train"))
    S.confirm_good(project, result, model, user="tester")
    item = [i for i in project.dataset_items(prepared["dataset_id"]) if i["id"] == result["meta"]["dataset_item_id"]][0]
    assert item["split"] == "train" and item["label"] == "good"
    assert len(project.dataset_items(prepared["dataset_id"], split="train")) == before + 1
    assert project.audit_log("inspect.confirm_good")[-1]["details"]["new"] == "good"


def test_bad_inputs_are_clear_errors(tmp_path, project):
    from core.inspect import session as S

    (tmp_path / "empty").mkdir()
    with pytest.raises(AppError, match="No images"):
        S.import_folder(project, tmp_path / "empty")
    with pytest.raises(AppError, match="preset"):
        S.train_params("sloppy")
    with pytest.raises(AppError, match="no images to inspect"):
        S.inspect_items(project, {"paths": [str(tmp_path / "empty")]})


def test_a_stopped_inspection_keeps_what_it_scored(prepared, project):
    """Each chunk's results are committed as soon as it is scored: a stop (or a crash) mid-run
    loses nothing already computed."""
    from core.inspect import session as S

    runner = JobRunner(project)
    seen = []

    def listener(event):
        if event.type == "progress" and isinstance(event.preview, dict) and event.preview.get("run_id"):
            seen.append(event.preview["done"])
            event.job.cancel()  # stop after the first chunk

    runner.add_listener(listener)
    try:
        handle = runner.submit(S.inspect_job, {"model_id": prepared["model_id"], "dataset_id": prepared["dataset_id"],
                                               "split": "test", "chunk": 2}, kind="inspect")
        assert handle.wait(120)
    finally:
        runner.shutdown()
    assert handle.status == "cancelled" and seen[0] == 2
    assert len(project.inspection_results(handle.run_id)) == 2
    assert project.get_run(handle.run_id)["status"] == "cancelled"


def test_runs_scored_with_other_maps_than_the_model_sums_now_are_marked(tmp_path):
    from core.inspect import session as S

    def run_with(p, model_id, meta):
        run_id = p.start_run("inspect", {"model_id": model_id}, status="running")
        p.add_inspection_results(run_id, [{"model_id": model_id, "item_path": "a.png", "score": 1.0,
                                           "normalized_score": 0.5, "verdict": "FAIL", "meta": meta}])
        return run_id

    with Project.create(tmp_path / "qa.lienzo") as p:
        model_id = p.register_model(S.MODEL_KIND, "m", str(tmp_path), config={"calibration": {"threshold": 1.0}})
        before_recording = run_with(p, model_id, {})  # runs from before the maps were recorded
        all_maps = run_with(p, model_id, {"maps": ["own", "features", "context"]})
        model = p.get_model(model_id)
        assert not any(S.scored_before_map_change(p, model, r) for r in (before_recording, all_maps, None))
        p.update_model_config(model_id, {"calibration": {"threshold": 2.0}, "map": {"use": ["own"]}},
                              details={"old_maps": None, "maps": ["own"], "new_threshold": 2.0})
        model = p.get_model(model_id)
        own = run_with(p, model_id, {"maps": ["own"]})
        assert S.scored_before_map_change(p, model, before_recording)
        assert S.scored_before_map_change(p, model, all_maps)
        assert not S.scored_before_map_change(p, model, own)
        assert not S.scored_before_map_change(p, model, run_with(p, model_id, {}))  # recorded after the change
        p.update_model_config(model_id, {"calibration": {"threshold": 1.5}},  # all maps chosen again
                              details={"old_maps": ["own"], "maps": None, "new_threshold": 1.5})
        model = p.get_model(model_id)
        assert S.scored_before_map_change(p, model, own)
        assert not S.scored_before_map_change(p, model, all_maps)
