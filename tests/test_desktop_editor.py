"""The text editor panel through real widgets on a real project file."""

import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QTextCursor

from core.project import Project
from desktop.editor import EditorPanel, count_words

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path):
    project = Project.create(tmp_path / "doc.lienzo")
    yield project
    project.close()


@pytest.fixture
def editor(qtbot, project):
    doc_id = project.create_document("Draft", "Hello world", format="markdown")
    panel = EditorPanel(project, doc_id)
    qtbot.addWidget(panel)
    panel.resize(900, 600)
    panel.show()
    yield panel
    panel.autosave_timer.stop()


def stored_text(path, doc_id):
    """Read the document straight from the file with a separate SQLite connection."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT text FROM documents WHERE id = ?", [doc_id]).fetchone()[0]
    finally:
        conn.close()


def type_at_end(qtbot, panel, text):
    panel.text_edit.moveCursor(QTextCursor.End)
    qtbot.keyClicks(panel.text_edit, text)


def test_autosave_reaches_the_file_within_two_seconds(qtbot, editor, project):
    type_at_end(qtbot, editor, " and more")
    typed_at = time.monotonic()
    assert editor.dirty and editor.state_label.text() == "Edited"
    qtbot.waitUntil(lambda: stored_text(project.path, editor.document_id) == "Hello world and more",
                    timeout=2000)
    assert time.monotonic() - typed_at < 2.0
    assert not editor.dirty and editor.state_label.text().startswith("Saved")
    with Project.open(project.path, read_only=True) as other:  # a second reader sees it too
        assert other.get_document(editor.document_id)["text"] == "Hello world and more"


def test_manual_save_keeps_a_version_and_history_restores_it(qtbot, editor, project):
    editor.text_edit.selectAll()
    qtbot.keyClicks(editor.text_edit, "Second draft")
    v2 = editor.save_now()
    editor.text_edit.selectAll()
    qtbot.keyClicks(editor.text_edit, "Third draft")
    editor.save_now()
    dialog = editor.history_dialog()
    qtbot.addWidget(dialog)
    assert dialog.list.count() == 3
    dialog.select_version(1)
    assert dialog.preview.toPlainText() == "Hello world"
    dialog.select_version(v2)
    assert dialog.preview.toPlainText() == "Second draft"
    qtbot.mouseClick(dialog.restore_button, Qt.LeftButton)
    assert dialog.restored_version == v2
    assert editor.text() == "Second draft" and not editor.dirty
    assert stored_text(project.path, editor.document_id) == "Second draft"
    assert len(project.document_versions(editor.document_id)) == 4  # restore adds, never rewrites
    editor.undo_action.trigger()  # the restore itself can be undone in the editor
    assert editor.text() == "Third draft"


def test_undo_redo_and_counts(qtbot, editor):
    type_at_end(qtbot, editor, " again")
    assert editor.count_label.text() == "3 words · 17 characters"
    assert editor.undo_action.isEnabled()
    editor.undo_action.trigger()
    assert editor.text() == "Hello world"
    assert editor.count_label.text() == "2 words · 11 characters"
    editor.redo_action.trigger()
    assert editor.text() == "Hello world again"
    assert count_words("It's a well-known fact: 42 cats!") == 7
    assert count_words("# Title\n\n- item") == 2


def test_find_and_replace(qtbot, editor):
    editor.text_edit.setPlainText("cat dog Cat bird cat")
    editor.find_action.trigger()
    bar = editor.find_bar
    assert bar.isVisible()
    bar.find_edit.setText("cat")
    assert bar.find()
    assert editor.text_edit.textCursor().selectedText() == "cat"
    bar.replace_edit.setText("fox")
    bar.replace()
    assert editor.text() == "fox dog Cat bird cat"
    bar.case_box.setChecked(True)
    assert bar.replace_all() == 1
    assert editor.text() == "fox dog Cat bird fox"
    bar.case_box.setChecked(False)
    bar.find_edit.setText("CAT")
    assert bar.replace_all() == 1
    assert editor.text() == "fox dog fox bird fox"
    editor.text_edit.undo()  # replace-all is one undo step
    assert editor.text() == "fox dog Cat bird fox"
    bar.find_edit.setText("zebra")
    assert not bar.find() and bar.status.text() == "Not found"
    qtbot.keyClick(bar.find_edit, Qt.Key_Escape)
    assert not bar.isVisible()


def test_markdown_preview_and_plain_text(qtbot, editor, project):
    assert editor.preview_action.isVisible()
    editor.set_preview_visible(True)
    editor.text_edit.setPlainText("# Heading\n\nSome **bold** text")
    qtbot.waitUntil(lambda: "Heading" in editor.preview.toPlainText(), timeout=2000)
    assert "**" not in editor.preview.toPlainText()
    editor.set_preview_visible(False)
    assert not editor.preview.isVisible()
    plain_id = project.create_document("Notes", "plain words", format="plain")
    plain = EditorPanel(project, plain_id)
    qtbot.addWidget(plain)
    assert not plain.preview_action.isVisible() and plain.format_label.text() == "Plain text"


def test_extensions_can_add_actions(qtbot, project):
    from PySide6.QtGui import QAction

    seen = []

    def extension(panel):
        action = QAction("Continue", panel)
        action.triggered.connect(lambda: seen.append((panel.document_id, panel.text())))
        panel.add_menu_action(action)

    EditorPanel.extensions.append(extension)
    try:
        doc_id = project.create_document("Story", "Once upon a time")
        panel = EditorPanel(project, doc_id)
        qtbot.addWidget(panel)
    finally:
        EditorPanel.extensions.remove(extension)
    panel.actions_menu.actions()[0].trigger()
    assert seen == [(doc_id, "Once upon a time")]


def test_read_only_project_cannot_be_edited(qtbot, project, tmp_path):
    doc_id = project.create_document("Draft", "fixed")
    project.close()
    with Project.open(tmp_path / "doc.lienzo", read_only=True) as ro:
        panel = EditorPanel(ro, doc_id)
        qtbot.addWidget(panel)
        assert panel.text_edit.isReadOnly() and not panel.save_action.isEnabled()


def test_typed_text_survives_sigkill(tmp_path):
    """A child process types into the editor, waits for autosave, and is killed: nothing lost."""
    path = tmp_path / "kill.lienzo"
    with Project.create(path) as project:
        doc_id = project.create_document("Draft", "")
    script = textwrap.dedent(f"""
        import os, signal, time
        from PySide6.QtWidgets import QApplication
        from PySide6.QtTest import QTest
        from core.project import Project
        from desktop.editor import EditorPanel
        app = QApplication([])
        project = Project.open({str(path)!r})
        panel = EditorPanel(project, {doc_id})
        panel.show()
        QTest.keyClicks(panel.text_edit, "typed before the crash")
        end = time.monotonic() + 1.8
        while time.monotonic() < end:
            app.processEvents()
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, timeout=60,
                            capture_output=True, text=True)
    assert result.returncode == -9, result.stderr
    with Project.open(path, read_only=True) as project:
        assert project.get_document(doc_id)["text"] == "typed before the crash"
