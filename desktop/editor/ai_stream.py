"""Writes generated text into an editor as it streams, as one undo step.

The first insertion opens an edit block (removing the selection when rewriting); every later one
joins it with `joinPreviousEditBlock`, so a single Undo removes the whole generation — or, for a
rewrite, brings the original selection back. The editor is read-only while text streams in, so no
keystroke can land inside the block (programmatic cursors still write to a read-only editor).
"""

from __future__ import annotations

from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import QPlainTextEdit


class StreamWriter:
    def __init__(self, edit: QPlainTextEdit, position: int, replace_to: int | None = None):
        """Insert at `position`; with `replace_to`, the text from position to replace_to is replaced."""
        self.edit = edit
        self.start = position
        self.replace_to = replace_to
        self.written = ""
        self._cursor = QTextCursor(edit.document())
        self._cursor.setPosition(position)
        self._opened = False
        self._was_read_only = edit.isReadOnly()
        edit.setReadOnly(True)

    @property
    def active(self) -> bool:
        return self.edit is not None

    def update(self, full_text: str) -> None:
        """Bring the inserted text up to `full_text` (the whole generation so far; it only grows)."""
        if self.edit is None or not full_text.startswith(self.written):
            # A shorter or different text would mean a stale event; the generation only grows.
            return
        delta = full_text[len(self.written):]
        if not delta and self._opened:
            return
        self._write(delta)
        self.written = full_text

    def _write(self, delta: str) -> None:
        cursor = self._cursor
        if not self._opened:
            cursor.beginEditBlock()
            if self.replace_to is not None:
                cursor.setPosition(self.start)
                cursor.setPosition(self.replace_to, QTextCursor.KeepAnchor)
                cursor.removeSelectedText()
            self._opened = True
        else:
            cursor.joinPreviousEditBlock()
        if delta:
            cursor.insertText(delta)
        cursor.endEditBlock()
        # Keep the end of the generation in view (the editor is read-only meanwhile).
        view = QTextCursor(cursor)
        self.edit.setTextCursor(view)
        self.edit.ensureCursorVisible()

    def begin(self) -> None:
        """Open the block at once (a rewrite removes the selection before the first token)."""
        if not self._opened and self.edit is not None:
            self._write("")

    def finish(self) -> str:
        """Unlock the editor; returns what was written."""
        if self.edit is not None:
            self.edit.setReadOnly(self._was_read_only)
            if self._opened:
                end = QTextCursor(self.edit.document())
                end.setPosition(self.start)
                end.setPosition(self.start + len(self.written), QTextCursor.KeepAnchor)
                self.edit.setTextCursor(end)  # the generation stays selected: easy to see, easy to delete
            self.edit = None
        return self.written
