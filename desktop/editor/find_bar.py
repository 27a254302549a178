"""Find and replace bar shown under the text (Ctrl+F, Ctrl+H); Esc hides it."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QShortcut, QTextCursor, QTextDocument
from PySide6.QtWidgets import (QCheckBox, QFrame, QGridLayout, QLabel, QLineEdit, QPlainTextEdit,
                               QPushButton)


class FindBar(QFrame):
    def __init__(self, text_edit: QPlainTextEdit, parent=None):
        super().__init__(parent)
        self.setObjectName("FindBar")
        self.text_edit = text_edit
        self.find_edit = QLineEdit()
        self.find_edit.setPlaceholderText("Find")
        self.find_edit.setClearButtonEnabled(True)
        self.replace_edit = QLineEdit()
        self.replace_edit.setPlaceholderText("Replace with")
        self.case_box = QCheckBox("Match case")
        self.status = QLabel("")
        self.status.setMinimumWidth(110)
        self.next_button = QPushButton("Next")
        self.prev_button = QPushButton("Previous")
        self.replace_button = QPushButton("Replace")
        self.replace_all_button = QPushButton("Replace all")
        close = QPushButton("Close")
        grid = QGridLayout(self)
        grid.setContentsMargins(8, 4, 8, 4)
        grid.addWidget(self.find_edit, 0, 0)
        grid.addWidget(self.prev_button, 0, 1)
        grid.addWidget(self.next_button, 0, 2)
        grid.addWidget(self.case_box, 0, 3)
        grid.addWidget(self.status, 0, 4)
        grid.addWidget(self.replace_edit, 1, 0)
        grid.addWidget(self.replace_button, 1, 1)
        grid.addWidget(self.replace_all_button, 1, 2)
        grid.addWidget(close, 1, 4)
        grid.setColumnStretch(0, 1)
        self.next_button.clicked.connect(lambda: self.find(backward=False))
        self.prev_button.clicked.connect(lambda: self.find(backward=True))
        self.find_edit.returnPressed.connect(lambda: self.find(backward=False))
        self.replace_button.clicked.connect(self.replace)
        self.replace_all_button.clicked.connect(self.replace_all)
        close.clicked.connect(self.close_bar)
        # Kept so the editor's AI can switch it off while its own Esc (Stop) is live: two enabled
        # shortcuts on one key are ambiguous in Qt, and then neither fires.
        self.escape = QShortcut(QKeySequence(Qt.Key_Escape), self, self.close_bar)
        self.hide()

    def open_bar(self, replace: bool = False) -> None:
        selected = self.text_edit.textCursor().selectedText()
        if selected and "\u2029" not in selected:
            self.find_edit.setText(selected)
        self.show()
        (self.replace_edit if replace and self.find_edit.text() else self.find_edit).setFocus()
        self.find_edit.selectAll()

    def close_bar(self) -> None:
        self.hide()
        self.text_edit.setFocus()

    def _flags(self, backward: bool = False) -> QTextDocument.FindFlag:
        flags = QTextDocument.FindFlag(0)
        if self.case_box.isChecked():
            flags |= QTextDocument.FindCaseSensitively
        if backward:
            flags |= QTextDocument.FindBackward
        return flags

    def find(self, backward: bool = False) -> bool:
        """Select the next match, wrapping around the document once."""
        needle = self.find_edit.text()
        if not needle:
            return False
        if self.text_edit.find(needle, self._flags(backward)):
            self.status.setText("")
            return True
        cursor = self.text_edit.textCursor()
        cursor.movePosition(QTextCursor.End if backward else QTextCursor.Start)
        self.text_edit.setTextCursor(cursor)
        found = self.text_edit.find(needle, self._flags(backward))
        self.status.setText("" if found else "Not found")
        return found

    def _selection_matches(self) -> bool:
        selected = self.text_edit.textCursor().selectedText()
        needle = self.find_edit.text()
        if self.case_box.isChecked():
            return selected == needle
        return selected.lower() == needle.lower()

    def replace(self) -> bool:
        """Replace the current match (if selected) and move to the next one."""
        if not self.find_edit.text():
            return False
        if not self._selection_matches() and not self.find():
            return False
        self.text_edit.textCursor().insertText(self.replace_edit.text())
        self.find()
        return True

    def replace_all(self) -> int:
        """Replace every match in one undo step."""
        needle, replacement = self.find_edit.text(), self.replace_edit.text()
        if not needle:
            return 0
        document = self.text_edit.document()
        edit = QTextCursor(document)
        edit.beginEditBlock()
        count = 0
        cursor = document.find(needle, 0, self._flags())
        while not cursor.isNull():
            cursor.insertText(replacement)
            count += 1
            cursor = document.find(needle, cursor.position(), self._flags())
        edit.endEditBlock()
        self.status.setText(f"{count} replaced")
        return count
