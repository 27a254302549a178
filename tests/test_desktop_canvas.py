"""The image canvas through real widgets on a real project file with real images."""

import io

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication

from core.errors import AppError
from core.project import Project
from desktop.canvas import CanvasPanel, export_image_file


def png(array, mode=None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG") if mode else \
        Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def project(tmp_path):
    project = Project.create(tmp_path / "img.lienzo")
    rgb = np.zeros((60, 80, 3), np.uint8)
    rgb[10, 20] = (200, 100, 50)
    project.add_image(png(rgb), "dots.png")
    grey16 = np.full((40, 30), 1000, np.uint16)
    grey16[5, 7] = 54321
    project.add_image(png(grey16), "deep.png")
    big = np.random.default_rng(0).integers(0, 255, (900, 1200, 3), dtype=np.uint8)
    project.add_image(png(big), "big.png")
    yield project
    project.close()


@pytest.fixture
def canvas(qtbot, project):
    panel = CanvasPanel(project)
    qtbot.addWidget(panel)
    panel.resize(800, 600)
    panel.show()
    qtbot.waitExposed(panel)
    return panel


def image_id(project, name):
    return next(i["id"] for i in project.list_images() if i["name"] == name)


def hover(canvas, x, y):
    """Move the mouse over image pixel (x, y) and return the readout."""
    from PySide6.QtCore import QEvent
    from PySide6.QtGui import QMouseEvent

    view = canvas.view
    local = QPointF(view.mapFromScene(QPointF(x + 0.5, y + 0.5)))
    # A real move event (QTest.mouseMove skips moves to where the cursor already is).
    event = QMouseEvent(QEvent.MouseMove, local, QPointF(view.viewport().mapToGlobal(local)),
                        Qt.NoButton, Qt.NoButton, Qt.NoModifier)
    QApplication.sendEvent(view.viewport(), event)
    return canvas.pixel_info


def test_thumbnail_strip_lists_every_image_and_switches(qtbot, canvas, project):
    assert canvas.strip.count() == 3
    assert sorted(canvas.strip.image_ids()) == sorted(i["id"] for i in project.list_images())
    assert all(not canvas.strip.item(i).icon().isNull() for i in range(3))
    dots = image_id(project, "dots.png")
    with qtbot.waitSignal(canvas.image_shown, timeout=1000) as shown:
        canvas.strip.setCurrentRow(canvas.strip.image_ids().index(dots))
    assert shown.args == [dots] and canvas.current_image_id == dots
    assert "80×60" in canvas.title_label.text()


def test_pixel_coordinates_and_values_under_the_cursor(qtbot, canvas, project):
    canvas.show_image(image_id(project, "dots.png"))
    canvas.view.set_zoom(4.0)
    canvas.view.centerOn(20, 10)
    assert hover(canvas, 20, 10) == "x 20, y 10 · RGB 200 100 50"
    assert hover(canvas, 21, 10) == "x 21, y 10 · RGB 0 0 0"
    canvas.show_image(image_id(project, "deep.png"))
    canvas.view.set_zoom(4.0)
    canvas.view.centerOn(7, 5)
    assert hover(canvas, 7, 5) == "x 7, y 5 · grey 54321"


def test_zoom_with_wheel_fit_and_actual_size(qtbot, canvas, project):
    canvas.show_image(image_id(project, "big.png"))
    view = canvas.view
    assert view.zoom < 1.0  # a big image fits the window at first
    view.actual_size()
    assert view.zoom == pytest.approx(1.0)
    center = view.viewport().rect().center()
    event = QWheelEvent(QPointF(center), QPointF(view.viewport().mapToGlobal(center)), QPoint(0, 0),
                        QPoint(0, 120), Qt.NoButton, Qt.NoModifier, Qt.NoScrollPhase, False)
    QApplication.sendEvent(view.viewport(), event)
    assert view.zoom == pytest.approx(1.25)
    canvas.fit_action.trigger()
    visible = view.mapToScene(view.viewport().rect()).boundingRect()
    assert visible.width() >= 1200 - 1 and visible.height() >= 900 - 1
    canvas.actual_action.trigger()
    assert view.zoom == pytest.approx(1.0)
    view.set_zoom(1000)
    assert view.zoom == pytest.approx(view.max_zoom)


def test_pan_by_dragging(qtbot, canvas, project):
    canvas.show_image(image_id(project, "big.png"))
    view = canvas.view
    view.set_zoom(2.0)
    before = view.mapToScene(view.viewport().rect().center())
    start = view.viewport().rect().center()
    qtbot.mousePress(view.viewport(), Qt.LeftButton, pos=start)
    from PySide6.QtTest import QTest

    for step in range(1, 6):
        QTest.mouseMove(view.viewport(), start + QPoint(20 * step, 10 * step))
    qtbot.mouseRelease(view.viewport(), Qt.LeftButton, pos=start + QPoint(100, 50))
    after = view.mapToScene(view.viewport().rect().center())
    assert after.x() < before.x() - 20 and after.y() < before.y() - 10


def test_export_keeps_bytes_or_converts(canvas, project, tmp_path):
    dots = image_id(project, "dots.png")
    canvas.show_image(dots)
    same = canvas.export_current(str(tmp_path / "copy.png"))
    assert same.read_bytes() == project.image_bytes(dots)
    jpg = export_image_file(project, dots, tmp_path / "copy.jpg")
    with Image.open(jpg) as img:
        assert img.format == "JPEG" and img.size == (80, 60)
    deep = image_id(project, "deep.png")
    tif = export_image_file(project, deep, tmp_path / "deep.tif")
    with Image.open(tif) as img:
        assert img.format == "TIFF" and np.asarray(img)[5, 7] == 54321
    with pytest.raises(AppError) as info:
        export_image_file(project, dots, tmp_path / "copy.xyz")
    assert ".xyz" in info.value.message and info.value.hint


def test_canvas_follows_project_changes_and_empty_state(qtbot, canvas, project):
    for image in project.list_images():
        project.delete_image(image["id"])
    canvas.refresh()
    assert canvas.strip.count() == 0 and canvas.current_image_id is None
    assert canvas.stack.currentWidget() is canvas.empty
    assert not canvas.export_action.isEnabled()
    new = project.add_image(png(np.full((8, 8, 3), 9, np.uint8)), "new.png")
    canvas.refresh()
    assert canvas.current_image_id == new and canvas.stack.currentWidget() is canvas.view


def test_extensions_add_side_panels_and_layers(qtbot, project):
    from PySide6.QtWidgets import QGraphicsRectItem, QLabel

    def extension(panel):
        panel.add_side_panel(QLabel("controls"), "Generate")
        panel.mask = panel.view.add_layer(QGraphicsRectItem(0, 0, 4, 4), z=2)

    CanvasPanel.extensions.append(extension)
    try:
        panel = CanvasPanel(project)
        qtbot.addWidget(panel)
    finally:
        CanvasPanel.extensions.remove(extension)
    assert panel.side_tabs.count() == 1 and panel.side_tabs.tabText(0) == "Generate"
    assert panel.mask.scene() is panel.view.scene() and panel.mask.zValue() == 2
