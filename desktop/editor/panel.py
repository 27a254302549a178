"""One open document: the text, its toolbar, find bar, preview and status line."""

from __future__ import annotations

import re
import time
from typing import Callable

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QFont, QKeySequence, QTextCursor
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QMenu, QPlainTextEdit, QSplitter,
                               QTextBrowser, QToolBar, QToolButton, QVBoxLayout, QWidget)

from core.errors import AppError
from desktop import ui
from desktop.editor.find_bar import FindBar
from desktop.editor.history import VersionHistoryDialog

_WORD = re.compile(r"\w+(?:['’]\w+)*")


def count_words(text: str) -> int:
    """Words as a writer counts them: runs of letters/digits, apostrophes inside words allowed."""
    return len(_WORD.findall(text))


class EditorPanel(QWidget):
    """Edits one document of the project. Saves by itself within ~1 s of the last keystroke."""

    # Callables run with each new panel, so other features can add their actions (see __init__).
    extensions: list[Callable[["EditorPanel"], None]] = []

    document_saved = Signal(int, int)     # document id, version
    dirty_changed = Signal(bool)
    title_changed = Signal(str)

    def __init__(self, project, document_id: int, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("EditorPanel")
        self.project = project
        self.document_id = document_id
        doc = project.get_document(document_id)
        self.title = doc.get("title", "")
        self.format = doc.get("format", "markdown")
        self.version = doc.get("version")
        self._saved_text = doc.get("text", "")
        self._dirty = False
        self.last_saved_at: float | None = None
        self.last_error: AppError | None = None

        self.text_edit = QPlainTextEdit()
        self.text_edit.setObjectName("DocumentText")
        font = QFont(self.text_edit.font())
        font.setPointSize(11)
        self.text_edit.setFont(font)
        self.text_edit.document().setDocumentMargin(16)  # before the text: it leaves an undo step
        self.text_edit.setPlainText(self._saved_text)
        self.text_edit.document().clearUndoRedoStacks()
        self.preview = QTextBrowser()
        self.preview.setObjectName("MarkdownPreview")
        self.preview.setOpenExternalLinks(False)
        self.preview.hide()
        self.splitter = QSplitter(Qt.Horizontal)
        self.splitter.addWidget(self.text_edit)
        self.splitter.addWidget(self.preview)
        self.find_bar = FindBar(self.text_edit)

        self.toolbar = QToolBar("Document")
        self.toolbar.setObjectName("EditorToolbar")
        self.toolbar.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.toolbar.setIconSize(self.toolbar.iconSize() * 0.75)
        self.save_action = self._action("save", "Save", QKeySequence.Save, self.save_now,
                                        "Save a version now (it also saves by itself as you type)")
        self.toolbar.addSeparator()
        self.undo_action = self._action("undo", "Undo", QKeySequence.Undo, self.text_edit.undo)
        self.redo_action = self._action("redo", "Redo", QKeySequence.Redo, self.text_edit.redo)
        self.undo_action.setEnabled(False)
        self.redo_action.setEnabled(False)
        self.text_edit.undoAvailable.connect(self.undo_action.setEnabled)
        self.text_edit.redoAvailable.connect(self.redo_action.setEnabled)
        self.toolbar.addSeparator()
        self.find_action = self._action("find", "Find", QKeySequence.Find,
                                        lambda: self.find_bar.open_bar(False))
        self.replace_action = QAction("Replace", self)
        self.replace_action.setShortcut(QKeySequence("Ctrl+H"))
        self.replace_action.setShortcutContext(Qt.WidgetWithChildrenShortcut)
        self.replace_action.triggered.connect(lambda: self.find_bar.open_bar(True))
        self.addAction(self.replace_action)
        self.history_action = self._action("history", "History", None, self.show_history,
                                           "Earlier versions of this document, with restore")
        self.preview_action = self._action("preview", "Preview", QKeySequence("Ctrl+Shift+M"),
                                           None, "Show the Markdown rendered beside the text")
        self.preview_action.setCheckable(True)
        self.preview_action.toggled.connect(self.set_preview_visible)
        self.preview_action.setVisible(self.format == "markdown")
        self.toolbar.addSeparator()
        # Extensions (AI actions …) add their entries here or to this menu.
        self.actions_menu = QMenu("Actions", self)
        self._actions_button = QToolButton()
        self._actions_button.setText("Actions")
        self._actions_button.setMenu(self.actions_menu)
        self._actions_button.setPopupMode(QToolButton.InstantPopup)
        self._actions_menu_action = self.toolbar.addWidget(self._actions_button)
        self._actions_menu_action.setVisible(False)

        self.count_label = QLabel()
        self.count_label.setObjectName("CountLabel")
        self.state_label = QLabel()
        self.state_label.setObjectName("SaveState")
        self.format_label = QLabel("Markdown" if self.format == "markdown" else "Plain text")
        status = QHBoxLayout()
        status.setContentsMargins(10, 2, 10, 2)
        status.addWidget(self.count_label)
        status.addStretch(1)
        status.setSpacing(16)
        status.addWidget(self.format_label)
        status.addWidget(self.state_label)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.toolbar)
        layout.addWidget(self.splitter, 1)
        layout.addWidget(self.find_bar)
        layout.addLayout(status)

        self.autosave_timer = QTimer(self)
        self.autosave_timer.setSingleShot(True)
        self.autosave_timer.setInterval(int(ui.setting_default("autosave_delay_ms", 1000)))
        self.autosave_timer.timeout.connect(self.autosave)
        self._preview_timer = QTimer(self)
        self._preview_timer.setSingleShot(True)
        self._preview_timer.setInterval(250)
        self._preview_timer.timeout.connect(self._render_preview)
        self.text_edit.textChanged.connect(self._text_changed)
        if getattr(project, "read_only", False):
            self.text_edit.setReadOnly(True)
            self.save_action.setEnabled(False)
            self.history_action.setEnabled(False)
        self._update_counts()
        self._update_state()
        if self.format == "markdown" and ui.setting_default("markdown_preview", True):
            self.preview_action.setChecked(True)
        for extend in list(self.extensions):
            extend(self)

    def _action(self, icon_name, text, shortcut, slot, tip: str = "") -> QAction:
        action = QAction(ui.icon(icon_name), text, self)
        if shortcut is not None:
            action.setShortcut(shortcut)
            action.setShortcutContext(Qt.WidgetWithChildrenShortcut)
        if slot is not None:
            action.triggered.connect(slot)
        tip_text = tip or text
        if shortcut is not None:
            tip_text += f" ({QKeySequence(shortcut).toString(QKeySequence.NativeText)})"
        action.setToolTip(tip_text)
        self.toolbar.addAction(action)
        self.addAction(action)
        return action

    def add_menu_action(self, action: QAction) -> None:
        """For extensions: put an action into the Actions menu (shown once it has entries)."""
        self.actions_menu.addAction(action)
        self._actions_menu_action.setVisible(True)

    # -- text and state -----------------------------------------------------------------------
    def text(self) -> str:
        return self.text_edit.toPlainText()

    @property
    def dirty(self) -> bool:
        return self._dirty

    def _text_changed(self) -> None:
        dirty = self.text() != self._saved_text
        if dirty != self._dirty:
            self._dirty = dirty
            self.dirty_changed.emit(dirty)
        if dirty:
            self.autosave_timer.start()  # restarts: saves once typing pauses
        self._update_counts()
        self._update_state()
        if self.preview.isVisible():
            self._preview_timer.start()

    def _update_counts(self) -> None:
        text = self.text()
        words = count_words(text)
        self.count_label.setText(f"{words} word{'s' if words != 1 else ''} · "
                                 f"{len(text)} character{'s' if len(text) != 1 else ''}")

    def _update_state(self) -> None:
        if self.last_error is not None and self._dirty:
            self.state_label.setText("Not saved: " + self.last_error.message)
        elif self._dirty:
            self.state_label.setText("Edited")
        elif self.last_saved_at:
            self.state_label.setText(f"Saved {time.strftime('%H:%M:%S', time.localtime(self.last_saved_at))}"
                                     + (f" · v{self.version}" if self.version else ""))
        else:
            self.state_label.setText(f"Version {self.version}" if self.version else "")

    # -- saving -------------------------------------------------------------------------------
    def save(self, autosave: bool = False) -> int | None:
        """Write the text to the project. Returns the new version, or None if nothing to save."""
        self.autosave_timer.stop()
        text = self.text()
        if autosave and text == self._saved_text and self.last_error is None:
            return None  # a manual save always writes: the user asked for a version
        try:
            version = self.project.save_document(self.document_id, text, autosave=autosave)
        except AppError as exc:
            self.last_error = exc
            self._update_state()
            if not autosave:
                ui.error_box(self, exc, "Could not save")
            return None
        self.last_error = None
        self._saved_text = text
        self.version = version
        self.last_saved_at = time.time()
        if self._dirty:
            self._dirty = False
            self.dirty_changed.emit(False)
        self._update_state()
        self.document_saved.emit(self.document_id, version or 0)
        return version

    def autosave(self) -> int | None:
        return self.save(autosave=True)

    def save_now(self) -> int | None:
        return self.save(autosave=False)

    def flush(self) -> None:
        """Save pending edits (tab closing, project switching, app quitting)."""
        if self._dirty:
            self.save(autosave=True)

    def reload(self) -> None:
        """Take the stored text (after a restore), keeping undo so the user can step back."""
        doc = self.project.get_document(self.document_id)
        self.title = doc.get("title", self.title)
        self.version = doc.get("version")
        self._saved_text = doc.get("text", "")
        if self.text() != self._saved_text:
            cursor = QTextCursor(self.text_edit.document())
            cursor.beginEditBlock()
            cursor.select(QTextCursor.Document)
            cursor.insertText(self._saved_text)
            cursor.endEditBlock()
        self._dirty = False
        self.autosave_timer.stop()
        self._update_counts()
        self._update_state()
        self.title_changed.emit(self.title)

    # -- history and preview ------------------------------------------------------------------
    def history_dialog(self) -> VersionHistoryDialog:
        self.flush()  # so the list includes what is on screen
        dialog = VersionHistoryDialog(self.project, self.document_id, self)
        dialog.accepted.connect(self.reload)
        return dialog

    def show_history(self) -> None:
        dialog = self.history_dialog()
        dialog.setAttribute(Qt.WA_DeleteOnClose)
        dialog.open()

    def set_preview_visible(self, visible: bool) -> None:
        if self.preview_action.isChecked() != visible:
            self.preview_action.setChecked(visible)
            return
        self.preview.setVisible(visible)
        if visible:
            self._render_preview()
            self.splitter.setSizes([1, 1])

    def _render_preview(self) -> None:
        self.preview.setMarkdown(self.text())
