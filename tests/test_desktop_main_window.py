"""The main window through real widgets: projects, browser, drops, menus, settings, bad files."""

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QTimer, QUrl
from PySide6.QtGui import QDropEvent, QDragEnterEvent, QKeySequence
from PySide6.QtWidgets import QApplication, QMessageBox

from core import demo
from core.project import Project
from desktop import ui
from desktop.canvas import CanvasPanel
from desktop.editor import EditorPanel
from desktop.main_window import MainWindow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def demo_path(tmp_path):
    return demo.create_demo_project(tmp_path / "Demo.lienzo")


@pytest.fixture
def window(qtbot):
    win = MainWindow()
    qtbot.addWidget(win)
    win.resize(1100, 700)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.close()  # closes the project and shuts the job runner down


def error_boxes(win):
    return [b for b in win.findChildren(QMessageBox) if b.objectName() == "ErrorBox" and b.isVisible()]


def answer_next_dialog(button_text):
    """Click a button of the next modal dialog (confirmations run their own event loop)."""

    def click():
        box = QApplication.activeModalWidget()
        if box is None:
            QTimer.singleShot(10, click)
            return
        for button in box.buttons():
            if button.text().replace("&", "") == button_text:
                button.click()
                return
        raise AssertionError(f"no button {button_text!r} in {[b.text() for b in box.buttons()]}")

    QTimer.singleShot(0, click)


def drop_files(widget, paths):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    pos = QPoint(20, 20)
    enter = QDragEnterEvent(QPointF(pos), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    QApplication.sendEvent(widget, enter)
    assert enter.isAccepted()
    drop = QDropEvent(QPointF(pos), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    QApplication.sendEvent(widget, drop)


def test_opens_project_with_docks_tabs_and_counts(window, demo_path):
    assert window.open_project(demo_path)
    browser = window.browser
    assert browser.count("documents") == 2 and browser.count("images") == 4
    assert browser.categories["images"].text(0) == "Images (4)"
    assert browser.categories["runs"].text(0) == "Runs (0)"
    assert window.workspace.count() == 2  # canvas + the welcome document
    editor = window.current_editor()
    assert isinstance(editor, EditorPanel) and editor.title == demo.WELCOME_TITLE
    assert window.browser_dock.isVisible() and window.jobs_dock.isVisible()
    assert window.dockWidgetArea(window.browser_dock) == Qt.LeftDockWidgetArea
    assert window.dockWidgetArea(window.jobs_dock) == Qt.BottomDockWidgetArea
    assert "Demo" in window.windowTitle()
    window.show_view("canvas")
    assert isinstance(window.workspace.currentWidget(), CanvasPanel)
    window.show_view("editor")
    assert window.current_editor() is editor
    with pytest.raises(Exception) as info:
        window.show_view("no-such-view")  # views from feature modules depend on what is installed
    assert "editor" in info.value.hint


def test_browser_opens_items_and_refreshes_on_changes_from_other_threads(qtbot, window, demo_path):
    import threading

    window.open_project(demo_path)
    notes = next(d for d in window.project.list_documents() if d["title"] == demo.NOTES_TITLE)
    window.browser.tree.itemActivated.emit(window.browser.find_item("documents", notes["id"]), 0)
    assert window.current_editor().document_id == notes["id"]
    image = window.project.list_images()[-1]
    window.browser.tree.itemActivated.emit(window.browser.find_item("images", image["id"]), 0)
    assert window.canvas.current_image_id == image["id"]
    # A write from a worker thread reaches the browser through the queued signal.
    def writes():
        project = window.project
        project.create_document("From a thread")
        project.create_dataset("Good parts", kind="images")
        project.register_model("vae", "Inspector v1", "/models/inspector", {"model.safetensors": "0" * 64})
        project.update_run(project.start_run("train", {"epochs": 1}), status="done")

    worker = threading.Thread(target=writes)
    worker.start()
    worker.join()
    browser = window.browser
    qtbot.waitUntil(lambda: browser.count("documents") == 3, timeout=2000)
    assert browser.categories["datasets"].text(0) == "Datasets (1)"
    assert browser.categories["models"].text(0) == "Models (1)"
    assert browser.categories["runs"].text(0) == "Runs (1)"
    assert browser.categories["runs"].child(0).text(0) == "train #1 · done"
    # An ended run can be deleted (not renamed), after a confirmation.
    run_item = browser.categories["runs"].child(0)
    assert [a.text() for a in browser.context_menu_for(run_item).actions()] == ["Delete…"]
    answer_next_dialog("Delete")
    assert browser.delete_item(run_item)
    assert browser.categories["runs"].text(0) == "Runs (0)" and window.project.list_runs() == []


def test_drop_files_imports_and_lists_skipped_files_with_reasons(qtbot, window, tmp_path):
    assert window.new_project(tmp_path / "fresh")  # the suffix is added
    assert window.project_path == tmp_path / "fresh.lienzo"
    good_png = tmp_path / "good.png"
    Image.fromarray(np.full((16, 24, 3), 120, np.uint8)).save(good_png)
    good_jpg = tmp_path / "photo.jpg"
    Image.fromarray(np.full((10, 10, 3), 60, np.uint8)).save(good_jpg)
    text = tmp_path / "notes.md"
    text.write_text("# Notes\n\nSome text.", encoding="utf-8")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    program = tmp_path / "tool.exe"
    program.write_bytes(b"MZ")
    with qtbot.waitSignal(window.jobs.finished, timeout=10000):
        drop_files(window.browser.tree.viewport(),
                   [good_png, good_jpg, text, broken, empty, program])
    qtbot.waitUntil(lambda: window.browser.count("images") == 2, timeout=2000)
    qtbot.waitUntil(lambda: window.browser.count("documents") == 1, timeout=2000)
    assert window.browser.count("runs") == 1  # the import is a recorded job
    skipped = dict(window.last_import["skipped"])
    assert set(skipped) == {str(broken), str(empty), str(program)}
    assert all(reason for reason in skipped.values())
    assert "not an image or text file" in skipped[str(program)]
    box = window.import_report_box
    assert box.isVisible() and "3 file(s) were skipped" in box.text()
    assert "broken.png" in box.informativeText() and "tool.exe" in box.informativeText()
    assert window.job_panel.tree.topLevelItemCount() == 1


def test_rename_and_delete_with_confirmation(qtbot, window, demo_path):
    window.open_project(demo_path)
    browser = window.browser
    image = window.project.list_images()[0]
    item = browser.find_item("images", image["id"])
    menu = browser.context_menu_for(item)
    assert [a.text() for a in menu.actions()] == ["Open", "Rename…", "Delete…"]

    def type_name():
        dialog = QApplication.activeModalWidget()
        if dialog is None:
            QTimer.singleShot(10, type_name)
            return
        dialog.setTextValue("Renamed picture")
        dialog.accept()

    QTimer.singleShot(0, type_name)
    menu.actions()[1].trigger()  # Rename… asks for the name in a dialog
    assert window.project.get_image(image["id"])["name"] == "Renamed picture"
    assert browser.find_item("images", image["id"]).text(0) == "Renamed picture"
    # Cancel keeps it; confirming deletes it.
    answer_next_dialog("Cancel")
    assert not browser.delete_item(browser.find_item("images", image["id"]))
    assert browser.count("images") == 4
    answer_next_dialog("Delete")
    assert browser.delete_item(browser.find_item("images", image["id"]))
    assert browser.count("images") == 3
    qtbot.waitUntil(lambda: window.canvas.strip.count() == 3, timeout=2000)
    # Deleting an open document closes its tab.
    doc_id = window.current_editor().document_id
    answer_next_dialog("Delete")
    assert browser.delete_item(browser.find_item("documents", doc_id))
    assert window.editor_for(doc_id) is None
    assert browser.categories["documents"].text(0) == "Documents (1)"


def test_file_menu_actions_and_shortcuts(window):
    texts = [a.text().replace("&", "") for a in window.file_menu.actions()]
    for wanted in ("New project…", "Open project…", "Open recent", "Import files…",
                   "Save project as / export…", "Quit"):
        assert wanted in texts
    assert window.new_action.shortcut() == QKeySequence(QKeySequence.New)
    assert window.open_action.shortcut() == QKeySequence(QKeySequence.Open)
    assert window.import_action.shortcut() == QKeySequence("Ctrl+I")
    assert not window.import_action.isEnabled()  # no project yet
    assert window.central.currentWidget() is window.no_project


def test_recent_projects_geometry_and_export(qtbot, tmp_path, demo_path):
    first = MainWindow()
    qtbot.addWidget(first)
    first.restore_window_state()
    first.show()
    first.resize(700, 520)  # the offscreen screen is 800x600
    first.open_project(demo_path)
    copy = first.export_project(tmp_path / "copy.lienzo")
    with Project.open(copy, read_only=True) as exported:
        assert len(exported.list_images()) == 4
    first.close()
    settings_file = ui.settings().fileName()
    assert settings_file.startswith(str(Path(__import__("core.paths").paths.config_dir())))
    second = MainWindow()
    qtbot.addWidget(second)
    second.restore_window_state()
    assert (second.width(), second.height()) == (700, 520)
    assert ui.recent_projects()[0] == str(demo_path.resolve())
    second._fill_recent_menu()
    recent = second.recent_menu.actions()[0]
    assert recent.text() == "Demo.lienzo"
    recent.trigger()
    assert second.project_path == demo_path.resolve()
    second.close()
    gone = tmp_path / "gone.lienzo"
    ui.add_recent_project(str(gone))
    third = MainWindow()
    qtbot.addWidget(third)
    assert not third.open_project(gone)  # a project that no longer exists leaves the list
    assert str(gone) not in ui.recent_projects()
    third.close()


@pytest.mark.parametrize("kind", ["not_sqlite", "newer", "locked"])
def test_bad_project_files_show_message_and_hint_and_app_stays_usable(qtbot, window, tmp_path,
                                                                      demo_path, kind):
    bad = tmp_path / "bad.lienzo"
    holder = None
    if kind == "not_sqlite":
        bad.write_text("just some text, not a database\n" * 10)
    elif kind == "newer":
        demo.create_demo_project(bad)
        with sqlite3.connect(bad) as conn:
            conn.execute("PRAGMA user_version = 999")
    else:
        demo.create_demo_project(bad)
        holder = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(f"""
                import sys, time
                from core.project import Project
                p = Project.open({str(bad)!r})
                print("open", flush=True)
                sys.stdin.readline()
                p.close()
            """)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "open"
    before = bad.read_bytes()
    try:
        assert window.open_project(demo_path)
        assert not window.open_project(bad)
        boxes = error_boxes(window)
        assert len(boxes) == 1
        message, hint = boxes[0].text(), boxes[0].informativeText()
        expected = {"not_sqlite": "not a Lienzo project", "newer": "newer version",
                    "locked": "already open"}[kind]
        assert expected in message and hint
        assert "Traceback" not in message + hint and not boxes[0].detailedText()
        boxes[0].accept()
        # The previous project is still open and working.
        assert window.project is not None and window.project_path == demo_path
        assert window.new_document("After the error") is not None
        if kind != "locked":
            assert bad.read_bytes() == before
    finally:
        if holder is not None:
            holder.communicate("\n", timeout=10)


def test_open_read_only_when_locked_elsewhere_is_possible(qtbot, window, demo_path):
    with Project.open(demo_path):
        assert window.open_project(demo_path, read_only=True)
        assert window.project.read_only and "read-only" in window.windowTitle()
        assert not window.import_action.isEnabled()
        assert window.current_editor().text_edit.isReadOnly()
