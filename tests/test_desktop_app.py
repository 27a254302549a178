"""Starting the GUI: screenshot mode, lazy ML imports, views, errors that do not kill the app."""

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QMessageBox

from core.errors import AppError
from desktop.app import install_excepthook, parse_size
from desktop.main_window import MainWindow

ROOT = Path(__file__).resolve().parents[1]


def run(args, **kwargs):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, **kwargs)


def test_screenshot_of_demo_before_any_ml_import(tmp_path):
    """The window paints before torch/transformers/diffusers load (features load them in jobs)."""
    shot = tmp_path / "canvas.png"
    code = textwrap.dedent(f"""
        import sys
        from desktop import app

        heavy_at_first_paint = []
        original = app.when_painted

        def when_painted(window, callback):
            def record_then_go_on():
                if not heavy_at_first_paint:
                    heavy_at_first_paint.append(
                        [m for m in ("torch", "transformers", "diffusers") if m in sys.modules])
                callback()
            original(window, record_then_go_on)

        app.when_painted = when_painted
        rc = app.run_gui(screenshot={str(shot)!r}, view="canvas")
        print("HEAVY", heavy_at_first_paint[0])
        sys.exit(rc)
    """)
    result = run(["-c", code])
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
    image = QImage(str(shot))
    assert (image.width(), image.height()) == (1280, 800)
    # the demo project was made on first run in the (private) user data folder
    assert (Path(os.environ["LIENZO_DATA_DIR"]) / "Demo.lienzo").exists()


def test_lienzo_command_screenshot_with_project_view_and_size(tmp_path):
    from core.demo import create_demo_project

    project = create_demo_project(tmp_path / "mine.lienzo")
    shot = tmp_path / "editor.png"
    result = run(["-m", "desktop", "--screenshot", str(shot), "--project", str(project),
                  "--view", "editor", "--size", "1280x720"])
    assert result.returncode == 0, result.stderr
    image = QImage(str(shot))
    assert (image.width(), image.height()) == (1280, 720)
    # the window really drew something: many distinct colours, not a blank grab
    colours = {image.pixel(x, y) for x in range(0, 1280, 16) for y in range(0, 720, 16)}
    assert len(colours) > 20


def test_unknown_view_and_bad_project_give_clear_errors(tmp_path):
    code = ("import sys; from desktop.app import run_gui; "
            f"sys.exit(run_gui(screenshot={str(tmp_path / 'x.png')!r}, view='nonsense'))")
    result = run(["-c", code])
    assert result.returncode == 2
    assert "nonsense" in result.stderr and "available views: canvas, editor" in result.stderr
    assert not (tmp_path / "x.png").exists()
    bad = tmp_path / "bad.lienzo"
    bad.write_text("not a project")
    result = run(["-m", "desktop", "--screenshot", str(tmp_path / "y.png"), "--project", str(bad)])
    assert result.returncode == 2 and "could not open" in result.stderr


def test_parse_size():
    assert parse_size(None) == (1280, 800) and parse_size("800x600") == (800, 600)
    for bad in ("big", "10x10", "100000x800"):
        with pytest.raises(AppError):
            parse_size(bad)


def test_excepthook_shows_a_dialog_and_the_app_goes_on(qtbot):
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    saved = sys.excepthook, threading.excepthook
    try:
        install_excepthook(window)
        try:
            raise ValueError("boom in a slot")
        except ValueError as exc:
            sys.excepthook(type(exc), exc, exc.__traceback__)
        boxes = [b for b in window.findChildren(QMessageBox) if b.isVisible()]
        assert len(boxes) == 1 and "boom in a slot" in boxes[0].text()
        assert "Traceback" in boxes[0].detailedText()
        boxes[0].accept()
        err = AppError("The model is missing.", "Pick another model.")
        sys.excepthook(AppError, err, None)
        box = [b for b in window.findChildren(QMessageBox) if b.isVisible()][-1]
        assert box.text() == "The model is missing." and box.informativeText() == "Pick another model."
        assert window.isVisible()
    finally:
        sys.excepthook, threading.excepthook = saved
        window.close()


def test_a_broken_feature_is_reported_and_left_out(tmp_path):
    shot = tmp_path / "shot.png"
    code = ("import sys; from desktop import app; "
            "app.FEATURES = app.FEATURES + (('desktop.no_such_feature', 'nothing'),); "
            f"sys.exit(app.run_gui(screenshot={str(shot)!r}, view='editor'))")
    result = run(["-c", code])
    assert result.returncode == 0, result.stderr
    assert "could not be loaded" in result.stderr and "desktop.no_such_feature" in result.stderr
    assert shot.exists()


def test_first_paint_shows_the_frame_then_the_window_builds_itself(tmp_path):
    """The first paint needs only the frame; the docks, menus and features come right after,
    before the project opens. The frame's imports leave out the browser, jobs and editor."""
    code = textwrap.dedent("""
        import sys
        from desktop import app

        seen = []
        original = app.when_painted

        def when_painted(window, callback):
            def record_then_go_on():
                seen.append((window.built, window.centralWidget() is not None,
                             "desktop.browser" in sys.modules, "desktop.jobs_qt" in sys.modules,
                             window.project is not None))
                callback()
            original(window, record_then_go_on)

        app.when_painted = when_painted
        rc = app.run_gui(screenshot=sys.argv[1])
        for entry in seen:
            print("PAINT", *entry)
        sys.exit(rc)
    """)
    result = run(["-c", code, str(tmp_path / "shot.png")])
    assert result.returncode == 0, result.stderr
    paints = [line.split()[1:] for line in result.stdout.splitlines() if line.startswith("PAINT")]
    # frame: not built, nothing inside, none of the heavier desktop modules, no project
    assert paints[0] == ["False", "False", "False", "False", "False"]
    # complete window painted before the project opens
    assert paints[1] == ["True", "True", "True", "True", "False"]
    assert paints[-1][-1] == "True"


def test_main_window_built_later_is_the_same_window(qtbot):
    window = MainWindow(build=False)
    qtbot.addWidget(window)
    assert not window.built and window.centralWidget() is None
    window.build()
    window.build()  # idempotent
    assert window.built
    assert [a.text() for a in window.menuBar().actions()] == ["&File", "&View", "&Help"]
    assert window.centralWidget() is window.central and window.central.count() == 2
    assert window.project_label.text() == "No project"
    assert window.browser_dock.widget() is window.browser
