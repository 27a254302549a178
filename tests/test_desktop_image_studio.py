"""The image studio on the canvas, driven with pytest-qt and the tiny pipeline on a real project."""

import io

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QPointF, Qt
from PySide6.QtTest import QTest

from core.image.metadata import read_png_parameters
from core.jobs import JobRunner
from core.project import Project
from desktop.canvas import CanvasPanel
from desktop.canvas.gen_studio import ImageStudio
from desktop.jobs_qt import QtJobs
from tests.tiny_diffusion import shared_tiny_pipeline


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(shared_tiny_pipeline(tmp_path_factory))


def png_bytes(color, size=(64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def studio(qtbot, tmp_path, model):
    project = Project.create(tmp_path / "studio.lienzo")
    project.add_image(png_bytes((30, 90, 200)), "start.png")
    project.register_model("diffusion", "tiny-sd", model, {}, {})
    jobs = QtJobs(JobRunner(project))
    canvas = CanvasPanel(project)
    qtbot.addWidget(canvas)
    studio = ImageStudio(canvas, jobs)
    assert model in [studio.panel.model.itemText(i) for i in range(studio.panel.model.count())]
    canvas.resize(1000, 700)
    canvas.show()
    qtbot.waitExposed(canvas)
    panel = studio.panel
    panel.set_model(model)
    panel.prompt.setPlainText("a blue whale")
    panel.steps.setValue(3)
    panel.width_box.setValue(64)
    panel.height_box.setValue(64)
    panel.random_seed.setChecked(False)
    panel.seed.setValue(77)
    yield studio
    jobs.shutdown()
    project.close()


def run_and_wait(qtbot, studio, timeout=60000):
    QTest.mouseClick(studio.panel.generate_button, Qt.LeftButton)
    handle = studio.handle
    assert handle is not None, studio.panel.status.text()
    qtbot.waitUntil(lambda: handle.status in ("done", "failed", "cancelled") and
                    studio.panel.generate_button.isEnabled(), timeout=timeout)
    return handle


def test_text_to_image_adds_result_gallery_and_undo(qtbot, studio):
    canvas, project = studio.canvas, studio.canvas.project
    start_id = canvas.current_image_id
    previews = []
    studio.jobs.progress.connect(lambda h, s, t, m, p: previews.append(p) if p is not None else None)
    handle = run_and_wait(qtbot, studio)
    assert handle.status == "done", studio.panel.status.text()
    generated = project.list_images(origin="generated")
    assert len(generated) == 1
    new_id = generated[0]["id"]
    assert canvas.current_image_id == new_id
    assert "77" in studio.panel.seed_label.text()
    assert previews, "live previews reach the GUI"
    assert studio.gallery.image_ids() == [new_id]
    assert studio.panel.progress.value() == studio.panel.progress.maximum()
    # undo / redo of the canvas change
    studio.undo_action.trigger()
    assert canvas.current_image_id == start_id
    studio.redo_action.trigger()
    assert canvas.current_image_id == new_id
    # remembered settings
    from core.image.settings import load_settings

    assert load_settings()["steps"] == 3


def test_reuse_parameters_and_export_png_with_metadata(qtbot, studio, tmp_path):
    panel = studio.panel
    panel.scheduler.setCurrentText("Euler a")
    run_and_wait(qtbot, studio)
    panel.prompt.setPlainText("something else")
    panel.random_seed.setChecked(True)
    panel.steps.setValue(9)
    QTest.mouseClick(studio.gallery.reuse_button, Qt.LeftButton)
    assert panel.prompt.toPlainText() == "a blue whale" and panel.steps.value() == 3
    assert not panel.random_seed.isChecked() and panel.seed.value() == 77
    assert panel.scheduler.currentText() == "Euler a"
    out = studio.gallery.export_current(str(tmp_path / "export.png"))
    params = read_png_parameters(out)
    assert params["seed"] == 77 and params["scheduler"] == "Euler a" and params["model"]["hash"]
    with Image.open(out) as img:
        img.load()
        assert "Seed: 77" in img.text["parameters"]


def test_import_a1111_png_shows_in_gallery_and_reuses(qtbot, studio, tmp_path):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", "a castle\nNegative prompt: fog\nSteps: 12, Sampler: Euler, CFG scale: 5, "
                                "Seed: 99, Size: 64x64, Model: x")
    path = tmp_path / "a1111.png"
    Image.new("RGB", (64, 64), "gray").save(path, pnginfo=info)
    ids = studio.gallery.import_files([str(path)])
    assert studio.gallery.current_image_id() == ids[0]
    studio.gallery.reuse_current()
    assert studio.panel.prompt.toPlainText() == "a castle" and studio.panel.seed.value() == 99
    assert studio.panel.scheduler.currentText() == "Euler" and studio.panel.steps.value() == 12


def paint(qtbot, studio, points):
    view = studio.canvas.view
    vp = view.viewport()
    pos = [view.mapFromScene(QPointF(x, y)) for x, y in points]
    QTest.mousePress(vp, Qt.LeftButton, Qt.NoModifier, pos[0])
    for p in pos[1:]:
        QTest.mouseMove(vp, p)
    QTest.mouseRelease(vp, Qt.LeftButton, Qt.NoModifier, pos[-1])


def test_mask_brush_eraser_clear_invert_undo_and_inpaint(qtbot, studio):
    panel, mask, canvas = studio.panel, studio.mask, studio.canvas
    panel.set_mode("inpaint")
    assert studio.brush_action.isChecked()
    studio.brush_size.setValue(16)
    # empty mask: a clear message, no job
    QTest.mouseClick(panel.generate_button, Qt.LeftButton)
    assert studio.handle is None and "mask is empty" in panel.status.text()
    paint(qtbot, studio, [(10, 32), (30, 32), (50, 32)])
    painted = mask.coverage()
    assert 0.1 < painted < 0.6
    studio.eraser_action.setChecked(True)
    paint(qtbot, studio, [(48, 32), (54, 32)])
    assert mask.coverage() < painted
    studio.undo_action.trigger()  # the erase stroke
    assert mask.coverage() == pytest.approx(painted)
    mask.invert()
    assert mask.coverage() == pytest.approx(1 - painted)
    studio.undo_action.trigger()
    assert mask.coverage() == pytest.approx(painted)
    mask.clear()
    assert mask.is_empty()
    studio.undo_action.trigger()
    assert mask.coverage() == pytest.approx(painted)
    studio.brush_action.setChecked(False)  # drags pan again

    original = np.asarray(Image.open(io.BytesIO(canvas.project.image_bytes(canvas.current_image_id))).convert("RGB"))
    handle = run_and_wait(qtbot, studio)
    assert handle.status == "done", panel.status.text()
    result = handle.result.results[0]
    assert result.params["mode"] == "inpaint"
    out = np.asarray(result.image.convert("RGB")).astype(int)
    # rows far from the painted band keep the original pixels
    assert np.abs(out[:8] - original[:8]).max() <= 2 and np.abs(out[-8:] - original[-8:]).max() <= 2


def test_img2img_and_outpaint_from_the_current_image(qtbot, studio):
    panel, canvas = studio.panel, studio.canvas
    panel.set_mode("img2img")
    panel.strength.setValue(0.5)
    handle = run_and_wait(qtbot, studio)
    assert handle.status == "done" and handle.result.results[0].params["strength"] == 0.5
    panel.set_mode("outpaint")
    panel.direction.setCurrentIndex(1)  # right
    panel.extend_by.setValue(32)
    handle = run_and_wait(qtbot, studio)
    assert handle.status == "done", panel.status.text()
    assert handle.result.results[0].image.size == (96, 64)
    assert canvas.view.image.width() == 96


def test_cancel_stops_the_job_and_restores_the_picture(qtbot, studio):
    panel, canvas = studio.panel, studio.canvas
    start_id = canvas.current_image_id
    panel.steps.setValue(150)
    seen = []

    def on_progress(handle, step, total, message, preview):
        if step >= 1 and not seen:
            seen.append(step)
            QTest.mouseClick(panel.cancel_button, Qt.LeftButton)

    studio.jobs.progress.connect(on_progress)
    handle = run_and_wait(qtbot, studio)
    assert handle.status == "cancelled"
    assert handle.step < 150 and "Cancelled" in panel.status.text()
    assert canvas.current_image_id == start_id and canvas.project.list_images(origin="generated") == []


def test_errors_are_shown_in_the_panel(qtbot, studio, tmp_path):
    panel = studio.panel
    panel.set_model(str(tmp_path))  # not a pipeline
    handle = run_and_wait(qtbot, studio)
    assert handle.status == "failed" and "not a diffusion pipeline" in panel.status.text()
    panel.set_model("")
    QTest.mouseClick(panel.generate_button, Qt.LeftButton)
    assert "No model chosen" in panel.status.text()


def test_memory_mode_choice_is_remembered(qtbot, studio):
    from core.image.settings import load_settings
    from desktop.canvas.gen_panel import GenerationPanel

    studio.panel.memory_mode.setCurrentIndex(1)
    run_and_wait(qtbot, studio)
    assert load_settings()["memory_mode"] == "attention_slicing"
    again = GenerationPanel()
    qtbot.addWidget(again)
    assert again.memory_mode.currentData() == "attention_slicing"


def test_main_window_gets_the_studio_on_its_canvas(qtbot, tmp_path):
    from desktop.canvas import gen_studio
    from desktop.main_window import MainWindow

    gen_studio.install()
    try:
        window = MainWindow()
        qtbot.addWidget(window)
        assert window.open_project(tmp_path / "w.lienzo", create=True)
        studio = window.image_studio
        tabs = [window.canvas.side_tabs.tabText(i) for i in range(window.canvas.side_tabs.count())]
        assert tabs == ["Generate", "Gallery"] and studio.canvas is window.canvas
        assert studio.undo_action in window.canvas.toolbar.actions()
        window.close_project()
    finally:
        MainWindow.extensions.remove(gen_studio._attach)


def test_typing_in_the_prompt_does_not_trigger_tool_shortcuts(qtbot, studio):
    panel = studio.panel
    panel.prompt.setFocus()
    QTest.keyClicks(panel.prompt, " be")
    assert panel.prompt.toPlainText().startswith(" be")  # typed where the cursor was
    assert not studio.brush_action.isChecked() and not studio.eraser_action.isChecked()
    studio.canvas.view.setFocus()
    QTest.keyClick(studio.canvas.view, Qt.Key_B)
    assert studio.brush_action.isChecked()
