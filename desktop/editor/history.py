"""Version history of a document: list of saved versions, a preview, and restore."""

from __future__ import annotations

import datetime as dt

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QHBoxLayout, QLabel, QListWidget,
                               QListWidgetItem, QPlainTextEdit, QSplitter, QVBoxLayout)

from core.errors import AppError
from desktop import ui


def _when(value) -> tuple[str, str]:
    """(short, full): the time alone for today's versions, the date too for older ones."""
    if value in (None, ""):
        return "", ""
    try:
        moment = dt.datetime.fromtimestamp(float(value))
    except (TypeError, ValueError):
        text = str(value).replace("T", " ")[:19]
        return text, text
    full = moment.strftime("%Y-%m-%d %H:%M:%S")
    short = moment.strftime("%H:%M:%S") if moment.date() == dt.date.today() else moment.strftime("%Y-%m-%d %H:%M")
    return short, full


class VersionHistoryDialog(QDialog):
    """Shows every saved version; Restore makes the chosen one the current text (a new version)."""

    def __init__(self, project, document_id: int, parent=None):
        super().__init__(parent)
        self.setObjectName("VersionHistory")
        self.project = project
        self.document_id = document_id
        self.restored_version: int | None = None
        title = project.get_document(document_id).get("title", "")
        self.setWindowTitle(f"History — {title}")
        self.resize(820, 520)
        self.list = QListWidget()
        self.preview = QPlainTextEdit()
        self.preview.setReadOnly(True)
        self.info = QLabel("")
        split = QSplitter(Qt.Horizontal)
        split.addWidget(self.list)
        split.addWidget(self.preview)
        split.setSizes([330, 490])
        buttons = QDialogButtonBox()
        self.restore_button = buttons.addButton("Restore this version", QDialogButtonBox.AcceptRole)
        buttons.addButton(QDialogButtonBox.Close)
        buttons.rejected.connect(self.reject)
        self.restore_button.clicked.connect(self.restore_selected)
        layout = QVBoxLayout(self)
        layout.addWidget(split, 1)
        bottom = QHBoxLayout()
        bottom.addWidget(self.info, 1)
        bottom.addWidget(buttons)
        layout.addLayout(bottom)
        self.list.currentItemChanged.connect(self._show_selected)
        self.reload()

    def reload(self) -> None:
        self.list.clear()
        versions = sorted(self.project.document_versions(self.document_id),
                          key=lambda v: v["version"], reverse=True)
        current = self.project.get_document(self.document_id).get("version")
        for v in versions:
            short, full = _when(v.get("saved_at") or v.get("created_at"))
            tags = [t for t, on in (("autosave", v.get("autosave")),
                                    ("current", v["version"] == current)) if on]
            label = " · ".join([f"Version {v['version']}", *([short] if short else []), *tags])
            tip = full + (f"\n{v['note']}" if v.get("note") else "")
            if v.get("chars") is not None:
                tip += f"\n{v['chars']} characters"
            item = QListWidgetItem(label)
            item.setToolTip(tip.strip())
            item.setData(Qt.UserRole, v["version"])
            self.list.addItem(item)
        if self.list.count():
            self.list.setCurrentRow(0)
        self.info.setText(f"{len(versions)} saved versions")

    def selected_version(self) -> int | None:
        item = self.list.currentItem()
        return None if item is None else item.data(Qt.UserRole)

    def select_version(self, version: int) -> None:
        for row in range(self.list.count()):
            if self.list.item(row).data(Qt.UserRole) == version:
                self.list.setCurrentRow(row)
                return

    def _show_selected(self, *_):
        version = self.selected_version()
        if version is None:
            self.preview.clear()
            return
        self.preview.setPlainText(self.project.get_document_version(self.document_id, version))

    def restore_selected(self) -> None:
        version = self.selected_version()
        if version is None:
            return
        try:
            self.project.restore_document_version(self.document_id, version)
        except AppError as exc:
            ui.error_box(self, exc)
            return
        self.restored_version = version
        self.accept()
