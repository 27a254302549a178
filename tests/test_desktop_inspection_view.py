"""The Inspection view, driven as an operator would (offscreen, real widgets, real project, real tiny
model trained for a few seconds on a real magnetic_tile subset)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyqtgraph")

from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl  # noqa: E402
from PySide6.QtGui import QDropEvent  # noqa: E402
from PySide6.QtWidgets import QAbstractItemView  # noqa: E402

from core.jobs import JobRunner  # noqa: E402
from core.project import Project  # noqa: E402
from tests.test_inspect_report import TINY, copy_subset, prepare_project  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prepared(shared_data, tmp_path_factory):
    return prepare_project(shared_data, tmp_path_factory.mktemp("inspection_view"))


def make_view(qtbot, path):
    from desktop.inspection.view import InspectionView
    from desktop.jobs_qt import QtJobs
    from desktop.project_qt import ProjectSignals

    project = Project.open(path)
    jobs = QtJobs(JobRunner(project))
    signals = ProjectSignals(project)
    view = InspectionView(project, jobs, signals)
    view.resize(1280, 760)
    qtbot.addWidget(view)
    view.show()
    return view, project, jobs, signals


@pytest.fixture
def opened(qtbot, prepared):
    view, project, jobs, signals = make_view(qtbot, prepared["path"])
    yield view
    view.shutdown()
    signals.detach()
    jobs.shutdown()
    project.close()


def wait_job(qtbot, handle, timeout=120_000):
    qtbot.waitUntil(lambda: handle.status in ("done", "failed", "cancelled"), timeout=timeout)
    qtbot.wait(50)  # let the queued finished signal reach the page


def test_import_train_inspect_as_an_operator(qtbot, shared_data, tmp_path):
    data = copy_subset(shared_data, tmp_path / "tiles", corrupt=True)
    project = Project.create(tmp_path / "op.lienzo")
    project.close()
    view, project, jobs, signals = make_view(qtbot, tmp_path / "op.lienzo")
    try:
        # 1. Data: import in place, corrupt files listed with their reasons, counts and sizes.
        page = view.show_step("data")
        wait_job(qtbot, page.import_folder(str(data), storage="referenced", name="tiles"))
        assert page.datasets.currentText().startswith("tiles")
        assert "12</b> good" in page.summary.text() and "5</b> defect" in page.summary.text()
        assert "px" in page.summary.text() and "referenced in place" in page.summary.text()
        reasons = [page.corrupt.item(i).text() for i in range(page.corrupt.count())]
        assert len(reasons) == 2 and any("broken.jpg" in r and "not a readable image" in r for r in reasons)
        qtbot.waitUntil(lambda: not page._pending, timeout=10_000)
        assert page.model.rowCount() == 21 and not page.model.item(0).icon().isNull()
        # mark one test image as a defect; the label changes and the audit trail says so
        row = next(r for r in range(page.model.rowCount())
                   if page.model.item(r).data(Qt.UserRole + 2)["split"] == "test"
                   and page.model.item(r).data(Qt.UserRole + 2)["label"] == "good")
        page.grid.setCurrentIndex(page.model.index(row, 0))
        assert page.mark("defect") == 1
        assert "3</b> good" in page.summary.text()
        assert project.audit_log("inspect.label")[-1]["details"]["new"] == "defect"
        page.filter.setCurrentIndex(page.filter.findData("defect"))
        visible = [r for r in range(page.model.rowCount()) if not page.grid.isRowHidden(r)]
        assert len(visible) == 6

        # 2. Train: preset + advanced settings, live loss curve, result registered with metrics.
        train = view.show_step("train")
        assert train.advanced.isHidden()
        train.advanced_button.click()
        assert train.advanced.isVisible()
        train.set_preset("fast")
        assert train.image_size.currentData() == 128
        train.image_size.setCurrentIndex(train.image_size.findData(64))
        train.budget.setValue(4)
        train.latent.setValue(8)
        # Tiles are textured, but a patterned model (the VAE's map alone) goes through the rest of the steps.
        assert train.part_type.currentData() == "general" and train.part_type.count() == 3
        train.part_type.setCurrentIndex(train.part_type.findData("patterned"))
        handle = train.start({"patch": 32, "batch": 8})
        assert not train.start_button.isEnabled() and train.cancel_button.isEnabled()
        wait_job(qtbot, handle)
        assert handle.status == "done", handle.error
        assert train.start_button.isEnabled()
        xs, _ys = train.loss_curve.getData()
        assert xs is not None and len(xs) >= 1
        # reconstructions from the run's checkpoints, beside their originals
        assert all(not a.pixmap().isNull() and not b.pixmap().isNull() for a, b in train.recon_labels)
        assert "Finished" in train.eta.text()
        assert "saved in the project (patterned parts" in train.result.text()
        models = project.list_models("inspector")
        assert len(models) == 1 and models[0]["config"]["settings"]["image_size"] == 64
        assert models[0]["config"]["training"]["part_type"] == "patterned"
        # Training for this data set again starts from the part type chosen for it before.
        from desktop.inspection.pages import TrainPage

        again = TrainPage(view.state)
        qtbot.addWidget(again)
        assert again.part_type.currentData() == "patterned"
        # its one map leaves nothing for labelled images to choose
        assert not view.show_step("threshold").choose_maps.isEnabled()
        assert models[0]["config"]["metrics"]["n_images"] == 9
        assert view.state.model["id"] == models[0]["id"]

        # 3. Inspect the test split: list with badges, three synced views, keyboard navigation.
        inspect = view.show_step("inspect")
        inspect.source.setCurrentIndex(0)  # "tiles · test split"
        handle = inspect.inspect()
        wait_job(qtbot, handle)
        assert handle.status == "done", handle.error
        assert len(view.state.results) == 9 and inspect.list_model.rowCount() == 9
        assert all(not v.item.pixmap().isNull() for v in inspect.views.views)
        original = inspect.views.views[0].item.pixmap()
        assert inspect.views.views[1].item.pixmap().size() == original.size()  # recon at the image's size
        first = inspect.current
        qtbot.keyClick(inspect.list, Qt.Key_Right)
        assert inspect.current != first
        qtbot.keyClick(inspect.list, Qt.Key_Left)
        assert inspect.current == first
        # zoom one view: the others follow
        inspect.views.zoom(2.0)
        scales = {round(v.transform().m11(), 4) for v in inspect.views.views}
        assert len(scales) == 1
        bar = inspect.views.views[0].horizontalScrollBar()
        if bar.maximum() > 0:  # pan one view: the others follow
            bar.setValue(bar.maximum() // 2)
            assert {v.horizontalScrollBar().value() for v in inspect.views.views} == {bar.maximum() // 2}
        # next FAIL with a threshold that fails exactly the top-scoring item
        top = int(np.argmax(view.state.scores))
        view.state.set_threshold(float(view.state.scores[top]))
        qtbot.keyClick(inspect.list, Qt.Key_F)  # keyboard: next FAIL
        assert inspect.current == top and "FAIL" in inspect.detail.text()
        qtbot.keyClick(inspect.list, Qt.Key_N)
        assert inspect.current != top
        qtbot.keyClick(inspect.list, Qt.Key_F, Qt.ShiftModifier)  # previous FAIL
        assert inspect.current == top
        # opacity and colour scale redraw the overlay
        before = inspect.views.views[2].item.pixmap().toImage()
        inspect.opacity.setValue(100)
        inspect.cmap.setCurrentIndex(inspect.cmap.findData("viridis"))
        assert inspect.views.views[2].item.pixmap().toImage() != before
        assert inspect.color_scale.threshold == pytest.approx(view.state.threshold)

        # files dropped on the view are inspected with the same model
        mime = QMimeData()
        files = sorted((data / "test" / "crack").iterdir())
        mime.setUrls([QUrl.fromLocalFile(str(f)) for f in files])
        event = QDropEvent(QPointF(50, 50), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
        inspect.dropEvent(event)
        wait_job(qtbot, inspect.handle)
        assert inspect.handle.status == "done"
        assert [Path(r["item_path"]).name for r in view.state.results] == [f.name for f in files]

        # 5. Delete that run from the report step, after confirming: its results and the images only
        # it used go; the first run (which shares identical heat maps) stays whole and is shown.
        from tests.test_desktop_main_window import answer_next_dialog

        def image_ids(rows):
            return {r["heatmap_image_id"] for r in rows} | {r["meta"]["recon_image_id"] for r in rows}

        dropped, first_run = view.state.run_id, project.list_runs("inspect")[-1]["id"]
        kept = image_ids(project.inspection_results(first_run))
        only_dropped = image_ids(view.state.results) - kept
        report = view.show_step("report")
        answer_next_dialog("Cancel")
        assert not report.delete_run() and view.state.run_id == dropped
        answer_next_dialog("Delete")
        assert report.delete_run()
        assert [r["id"] for r in project.list_runs("inspect")] == [first_run]
        assert view.state.run_id == first_run and len(view.state.results) == 9
        stored = {r["id"] for r in project.list_images(include_dataset=True)}
        assert kept <= stored and not (only_dropped & stored)
    finally:
        view.shutdown()
        signals.detach()
        jobs.shutdown()
        project.close()


def test_training_can_be_cancelled(qtbot, opened):
    train = opened.show_step("train")
    train.set_preset("fast")
    train.image_size.setCurrentIndex(train.image_size.findData(64))
    train.budget.setValue(600)
    before = len(opened.project.list_models("inspector"))
    handle = train.start({"patch": 32, "batch": 8, "checkpoint_every_s": 0.5})
    checkpoint = Path(handle.params["out"]) / "checkpoint" / "checkpoint.json"
    qtbot.waitUntil(lambda: handle.status == "running" and checkpoint.is_file(), timeout=60_000)
    train.cancel_button.click()
    wait_job(qtbot, handle, timeout=60_000)
    assert handle.status == "cancelled"
    assert "Cancelled" in train.eta.text() and train.start_button.isEnabled()
    assert len(opened.project.list_models("inspector")) == before
    assert opened.project.get_run(handle.run_id)["status"] == "cancelled"
    # the checkpoint it left lets the training go on where it stopped
    assert train.resume_button.isVisible()
    import json

    saved = json.loads(checkpoint.read_text())["step"]
    steps = []
    opened.state.jobs.progress.connect(lambda h, step, total, msg, prev: step > 0 and steps.append(step))
    resumed = train.resume()
    assert resumed.params["out"] == handle.params["out"]
    qtbot.waitUntil(lambda: bool(steps), timeout=60_000)
    assert saved < steps[0] <= saved + 3  # counting on from the checkpoint (reports are throttled)
    train.cancel()
    wait_job(qtbot, resumed, timeout=60_000)
    assert resumed.status == "cancelled"


def test_threshold_slider_updates_counts_without_the_model(qtbot, opened, prepared):
    st = opened.state
    assert st.model["id"] == prepared["model_id"] and len(st.results) == 9
    page = opened.show_step("threshold")
    bar = page.bar
    inspect = opened.inspect
    cal = st.model["config"]["calibration"]
    assert f"{cal['threshold']:.4g} was set at training" in page.explain.text()
    assert cal["method"] == "good_holdout"  # it says which bound: it widens for few held-out images
    assert f"{cal['n_good']} held-out good images (their mean + {cal['sd_multiple']:.3g} standard" in page.explain.text()
    assert "left out" not in page.explain.text()
    # a model whose calibration left out odd held-out images says how many (score.far_above_the_rest)
    cal.update(left_out=[1], left_out_scores=[9.9])
    try:
        page.fill_alarms()
        assert "standard deviations; 1 of them, far above the others, left out)" in page.explain.text()
    finally:
        cal.update(left_out=[], left_out_scores=[])
        page.fill_alarms()
    # the model scores parts without its context map and says so
    assert json.loads((Path(st.model["path"]) / "config.json").read_text())["map"]["score_leaves_out"] == ["context"]
    assert "Part scores leave out the context map, which the heat map shows." in page.explain.text()
    for pos in (50, 300, 600, 900):
        bar.slider.setValue(pos)
        thr = bar.to_value(pos)
        assert st.threshold == pytest.approx(thr)
        expected_fail = int((st.scores >= thr).sum())
        assert st.counts()["fail"] == expected_fail
        assert f"FAIL {expected_fail}" in bar.counts_label.text()
        assert f"FAIL {expected_fail}" in inspect.bar.counts_label.text()  # the other page follows
        badges = [st.verdict(inspect.list_model.item(r).data(Qt.UserRole + 1)) for r in range(9)]
        assert badges.count("FAIL") == expected_fail
        c = page.plots.stats["confusion"]
        assert c["tp"] + c["fp"] == expected_fail
    # moving counts differ across the range, as the scores say
    bar.slider.setValue(0)
    assert st.counts()["fail"] == 9
    bar.slider.setValue(1000)
    assert st.counts()["fail"] == 0
    # every part passes, so F1 is 0: the page says what the best threshold on these items would give
    from core.inspect import session as S

    labels = [r["label"] for r in st.results]
    best = max(S.threshold_stats(st.scores, labels, t)["f1"] for t in st.scores)
    assert best > 0 and f"Best F1 on these items: {best:.2f}" in page.plots.confusion.text()
    # histogram, ROC with AUROC from the labels
    from sklearn.metrics import roc_auc_score

    y = [0 if r["label"] == "good" else 1 for r in st.results]
    assert f"AUROC {roc_auc_score(y, st.scores):.3f}" in page.plots.auroc_label.text()
    assert len(page.plots._bars) == 2 and page.plots.roc_curve.getData()[0] is not None
    # the change is written to the audit trail once the slider rests
    n = len(opened.project.audit_log("inspect.threshold"))
    bar.slider.setValue(450)
    qtbot.waitUntil(lambda: len(opened.project.audit_log("inspect.threshold")) == n + 1, timeout=3000)
    row = opened.project.audit_log("inspect.threshold")[-1]
    assert row["details"]["new"] == pytest.approx(bar.to_value(450))
    # dragging the histogram line moves the threshold too
    page.plots.line.setValue(float(np.median(st.scores)))
    page.plots.line.sigPositionChangeFinished.emit(page.plots.line)
    assert st.threshold == pytest.approx(float(np.median(st.scores)))


def test_confirm_false_alarm_joins_training_data(qtbot, opened, prepared):
    st = opened.state
    good = [i for i, r in enumerate(st.results) if r["label"] == "good"]
    st.set_threshold(float(min(st.scores[i] for i in good)))  # every good item FAILs: false alarms
    page = opened.show_step("threshold")
    assert page.alarms.count() >= len(good)
    page.alarms.setCurrentRow(0)
    i = page.alarms.item(0).data(Qt.UserRole)
    item_id = st.results[i]["meta"]["dataset_item_id"]
    assert page.confirm_selected() == 1
    item = next(x for x in opened.project.dataset_items(prepared["dataset_id"]) if x["id"] == item_id)
    assert item["split"] == "train" and item["label"] == "good"
    assert st.results[i]["meta"]["confirmed_good"]
    assert opened.project.audit_log("inspect.confirm_good")[-1]["details"]["dataset_item_id"] == item_id


def test_reports_csv_html_pdf(qtbot, opened, prepared, tmp_path):
    st = opened.state
    thr = float(sorted(st.scores)[-2])  # two FAILs
    st.set_threshold(thr)
    page = opened.show_step("report")
    page.operator.setText("Ana QA")
    paths = {}
    for fmt in ("csv", "html", "pdf"):
        with qtbot.waitSignal(page.exported, timeout=60_000) as blocker:
            page.export(fmt, str(tmp_path / f"report.{fmt}"))
        assert blocker.args == [fmt, str(tmp_path / f"report.{fmt}")]
        paths[fmt] = tmp_path / f"report.{fmt}"
    with open(paths["csv"], newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9 and {"path", "score", "verdict", "label"} <= set(rows[0])
    fails = [r for r in rows if r["verdict"] == "FAIL"]
    assert len(fails) == 2 and all(float(r["score"]) >= thr * (1 - 1e-9) for r in fails)
    html = paths["html"].read_text(encoding="utf-8")
    assert prepared["model_name"] in html and "Ana QA" in html and "FAIL items (2)" in html
    for r in fails:
        assert Path(r["path"]).name in html
    pdf = paths["pdf"].read_bytes()
    assert pdf.startswith(b"%PDF") and pdf.rstrip().endswith(b"%%EOF")
    assert len(__import__("re").findall(rb"/Type\s*/Page\b", pdf)) >= 1
    assert len(pdf) > 20_000  # the FAIL thumbnails and heat maps are in it
    reports = opened.project.audit_log("inspect.report")[-3:]
    assert [r["details"]["format"] for r in reports] == ["csv", "html", "pdf"]
    assert all(r["user"] == "Ana QA" for r in reports)
    assert "Inspection report" in page.preview.toPlainText()


def test_audit_trail_is_a_read_only_table(qtbot, opened, prepared):
    st = opened.state
    st.set_threshold(st.threshold * 1.1)
    st.commit_threshold()
    st.set_model(None)
    st.set_model(prepared["model_id"])  # choosing a model is recorded
    # The folder was recalibrated from the command line meanwhile: choosing the model again brings
    # the new calibration in, and the operator's threshold set on the old scale lapses.
    from core.inspect import store

    folder = Path(st.model["path"])
    original = store.read_config(folder)
    try:
        store.write_config(folder, {**original, "calibration": {**original["calibration"], "threshold": 0.123},
                                    "map": {**original["map"], "use": ["own"]}})
        st.set_model(None)
        st.set_model(prepared["model_id"])
        assert st.calibrated == st.threshold == 0.123
        # the inspection shown was scored with all the model's maps: its scores do not fit the threshold
        assert st.stale and "scored before these maps were chosen" in opened.show_step("threshold").explain.text()
    finally:
        store.write_config(folder, original)
    page = opened.show_step("audit")
    actions = {page.model.item(r, 2).text() for r in range(page.model.rowCount())}
    assert {"Training", "Threshold change", "Model registered", "Data set import", "Model change",
            "Recalibrated"} <= actions
    assert page.table.editTriggers() == QAbstractItemView.NoEditTriggers
    assert all(not page.model.item(r, c).isEditable() for r in range(page.model.rowCount()) for c in range(6))
    row = next(r for r in range(page.model.rowCount()) if page.model.item(r, 2).text() == "Threshold change")
    assert page.model.item(row, 4).text() and page.model.item(row, 5).text()  # old -> new
    page.table.clicked.emit(page.model.index(row, 0))
    assert '"new"' in page.details.toPlainText()


def test_calibrate_on_labelled_images_from_the_threshold_page(qtbot, opened, prepared):
    from PySide6.QtWidgets import QMessageBox

    from core.inspect import mapchoice
    from core.inspect import session as S
    from core.inspect import store

    st = opened.state
    page = opened.show_step("threshold")
    assert page.calibrate_button.isEnabled()
    assert page.calibration_source() == {"dataset_id": prepared["dataset_id"], "split": "test"}
    before = dict(st.model["config"]["calibration"])
    st.set_threshold(before["threshold"] * 3)  # an operator's threshold on the old calibration
    # Choosing the maps needs five good and five defective images: a clear message, nothing changed.
    assert page.choose_maps.isEnabled()  # a general model: several maps to choose from
    page.choose_maps.setChecked(True)
    handle = page.calibrate()
    assert not page.calibrate_button.isEnabled() and page.calibrate_cancel.isVisible()
    wait_job(qtbot, handle)
    boxes = [b for b in page.findChildren(QMessageBox) if b.objectName() == "ErrorBox"]
    assert handle.status == "failed" and "at least 5 good and 5 defective" in boxes[-1].text()
    assert st.model["config"]["calibration"] == before and page.calibrate_button.isEnabled()
    page.choose_maps.setChecked(False)
    handle = page.calibrate()
    wait_job(qtbot, handle)
    assert handle.status == "done", handle.error
    res = handle.result
    folder = store.read_config(st.model["path"])
    assert res["method"] == "f1_optimal" == folder["calibration"]["method"]
    assert st.calibrated == st.threshold == res["threshold"] == folder["calibration"]["threshold"]
    assert f"F1 is best there on {res['n_good']} good and {res['n_defect']} defective" in page.calibrate_result.text()
    assert f"where F1 is best on {res['n_good'] + res['n_defect']} labelled images" in page.explain.text()
    # F1-optimal on the labelled test items' scores (the same scores the inspection stored)
    tested = {i["id"] for i in opened.project.dataset_items(prepared["dataset_id"], split="test")}
    rows = [r for r in st.results if r["meta"]["dataset_item_id"] in tested]
    scores, labels = [r["score"] for r in rows], [r["label"] for r in rows]
    best = max(S.threshold_stats(scores, labels, t)["f1"] for t in scores)
    assert S.threshold_stats(scores, labels, res["threshold"])["f1"] == pytest.approx(best)
    assert opened.project.audit_log("model.update")[-1]["details"]["new_threshold"] == res["threshold"]
    # How a choice of maps reads (a data set this small cannot make one): the maps kept, and why a
    # higher-scoring subset was not, in the app's names for the maps
    handle.result = {**res, "maps": ["own", "features"],
                     "higher_not_kept": {"maps": ["own"], "beats_all_maps": 0.6, "needs": mapchoice.CONFIDENCE},
                     "subsets": [{"maps": ["own", "features"], "image_auroc": 0.9, "pixel_auroc": 0.8, "score": 1.7,
                                  "beats_all_maps": 0.0}]}
    with warnings.catch_warnings():  # its progress slot was disconnected when the job ended
        warnings.simplefilter("ignore", RuntimeWarning)
        page._calibrated(handle)
    text = page.calibrate_result.text()
    assert "Maps chosen: VAE + VAE features (image AUROC 0.900, pixel AUROC 0.800 on them)." in text
    assert text.endswith("VAE scored higher on these images but beat all the maps in only 60% of resamples "
                         "(needs 90%): label more images to choose it surely.")


def test_tabular_flow(qtbot, opened, shared_data, tmp_path):
    src = shared_data / "tabular" / "odds_thyroid.csv"
    lines = src.read_text().splitlines()
    normal = [ln for ln in lines[1:] if ln.endswith(",0")][:240]
    anomalies = [ln for ln in lines[1:] if ln.endswith(",1")][:20]
    csv_path = tmp_path / "thyroid.csv"
    csv_path.write_text("\n".join([lines[0]] + normal + anomalies) + "\n")
    # a CSV imported on the Data step opens the tabular flow
    wait_job(qtbot, opened.show_step("data").import_csv(str(csv_path)))
    page = opened.tabular
    assert opened.stack.currentWidget().widget() is page
    assert page.datasets.currentText().startswith("thyroid")
    handle = page.train({"epochs": 15, "time_budget": 10})
    wait_job(qtbot, handle)
    assert handle.status == "done", handle.error
    assert page.state.model is not None and "ROC-AUC" in page.info.text()
    handle = page.inspect()
    wait_job(qtbot, handle)
    st = page.state
    assert len(st.results) == 260 and page.proxy.rowCount() == 260
    # sortable by score
    col = page.records.columns.index("score")
    page.table.sortByColumn(col, Qt.DescendingOrder)
    first = float(page.proxy.index(0, col).data())
    assert first == pytest.approx(float(st.scores.max()), rel=1e-4)
    # threshold slider re-labels rows at once
    page.bar.slider.setValue(500)
    verdict_col = page.records.columns.index("verdict")
    shown = [page.proxy.index(r, verdict_col).data() for r in range(260)]
    assert shown.count("FAIL") == int((st.scores >= st.threshold).sum())
    assert page.plots.stats.get("auroc") is not None
    with qtbot.waitSignal(page.report.exported, timeout=30_000):
        page.report.export("csv", str(tmp_path / "rows.csv"))
    with open(tmp_path / "rows.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 260


def test_main_window_view_and_screenshot(qtbot, prepared, tmp_path):
    from desktop.inspection import install
    from desktop.main_window import MainWindow

    install()
    window = MainWindow()
    qtbot.addWidget(window)
    assert "inspection" in window.views
    assert window.open_project(prepared["path"], read_only=True)
    window.show_view("inspection")
    view = window.inspection_view()
    assert window.workspace.currentWidget() is view and view.state.model is not None
    window.close_project()
    assert window.inspection_view() is None
    shot = tmp_path / "inspection.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.run([sys.executable, "-m", "desktop", "--screenshot", str(shot), "--view", "inspection",
                           "--project", str(prepared["path"])], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    from PySide6.QtGui import QImage

    img = QImage(str(shot))
    assert img.width() == 1280 and img.height() == 800
