"""The project browser: a tree of the project's objects with counts, drop-to-import, rename, delete."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QPoint, Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QInputDialog, QMenu, QTreeWidget,
                               QTreeWidgetItem, QVBoxLayout, QWidget)

from core.errors import AppError
from desktop import ui

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".text", ".rst", ".csv_text"}

# (key, label, icon) in display order.
CATEGORIES = (
    ("documents", "Documents", "document"),
    ("images", "Images", "image"),
    ("datasets", "Datasets", "dataset"),
    ("models", "Models", "model"),
    ("runs", "Runs", "run"),
)
KIND_ROLE = Qt.UserRole
ID_ROLE = Qt.UserRole + 1


def import_files_job(params: dict, ctx) -> dict:
    """Job: import dropped or chosen files into ctx.project; never stops on one bad file.

    Images go through the store's image import (which checks format, size and pixel caps), text
    files become documents. Returns counts and the skipped files with their reasons.
    """
    project = ctx.project
    paths = [Path(p) for p in params["paths"]]
    images, texts, skipped = [], [], []
    for path in paths:
        suffix = path.suffix.lower()
        if path.is_dir():
            images.append(path)  # the store searches folders for images
        elif not path.exists():
            skipped.append((str(path), "file not found"))
        elif suffix in TEXT_SUFFIXES:
            texts.append(path)
        elif suffix in IMAGE_SUFFIXES or not suffix:
            images.append(path)  # the store checks the content and says why it refuses a file
        else:
            skipped.append((str(path), f"not an image or text file ({suffix})"))
    image_ids, document_ids = [], []
    if images:
        def report_progress(step, total, message):
            ctx.check_cancelled()  # raising here stops the import between two files
            ctx.progress(step, total + len(texts), message)

        report = project.import_images([str(p) for p in images], progress=report_progress)
        image_ids.extend(report.imported)
        skipped.extend((str(p), reason) for p, reason in report.skipped)
    for index, path in enumerate(texts):
        ctx.check_cancelled()
        try:
            document_ids.append(project.import_text_file(str(path)))
        except AppError as exc:
            skipped.append((str(path), exc.message.removeprefix(f"{path.name}: ")))
        ctx.progress(index + 1, len(texts), f"Imported {path.name}")
    ctx.metrics.update(images=len(image_ids), documents=len(document_ids), skipped=len(skipped))
    return {"images": image_ids, "documents": document_ids, "skipped": skipped}


class _Tree(QTreeWidget):
    """The tree itself, accepting file drops from the desktop's file manager."""

    files_dropped = Signal(list)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.setDragDropMode(QAbstractItemView.DropOnly)

    def dragEnterEvent(self, event):
        if event.mimeData().hasUrls():
            event.acceptProposedAction()
        else:
            super().dragEnterEvent(event)

    def dragMoveEvent(self, event):
        if event.mimeData().hasUrls():
            event.acceptProposedAction()
        else:
            super().dragMoveEvent(event)

    def dropEvent(self, event):
        urls = event.mimeData().urls()
        paths = [u.toLocalFile() for u in urls if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.files_dropped.emit(paths)
        else:
            event.ignore()


class ProjectBrowser(QWidget):
    """Shows the project's objects; asks the main window to open them; imports dropped files."""

    open_document = Signal(int)
    open_image = Signal(int)
    open_item = Signal(str, int)          # kind, id (datasets, models, runs: for later views)
    import_requested = Signal(list)       # paths; the main window runs the import as a job
    item_deleted = Signal(str, int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("ProjectBrowser")
        self.project = None
        self.tree = _Tree()
        self.tree.setObjectName("BrowserTree")
        self.tree.setHeaderHidden(True)
        self.tree.setContextMenuPolicy(Qt.CustomContextMenu)
        self.tree.customContextMenuRequested.connect(self._context_menu)
        self.tree.itemActivated.connect(self._activated)
        self.tree.files_dropped.connect(self.import_requested)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tree)
        self.categories: dict[str, QTreeWidgetItem] = {}
        for key, label, icon_name in CATEGORIES:
            item = QTreeWidgetItem([label])
            item.setIcon(0, ui.icon(icon_name))
            item.setData(0, KIND_ROLE, "category")
            item.setData(0, ID_ROLE, key)
            item.setFlags(Qt.ItemIsEnabled)
            self.tree.addTopLevelItem(item)
            self.categories[key] = item
        self.categories["documents"].setExpanded(True)
        self.categories["images"].setExpanded(True)
        self.setToolTip("Drop images or text files here to import them into the project.")

    # -- content ------------------------------------------------------------------------------
    def set_project(self, project) -> None:
        self.project = project
        self.refresh()

    def refresh(self, tables: set[str] | None = None) -> None:
        """Reload the categories whose tables changed (all of them when `tables` is None)."""
        wanted = {key for key, *_ in CATEGORIES}
        if tables is not None:
            # Tables map to categories by prefix: document_versions -> documents, dataset_items -> datasets.
            wanted = {key for key in wanted for t in tables if t and t.startswith(key[:-1])}
        for key in wanted:
            self._fill(key, self._rows(key) if self.project is not None else [])

    def _rows(self, key: str) -> list[tuple[int, str, str]]:
        """(id, label, tooltip) rows for one category."""
        p = self.project
        if key == "documents":
            return [(d["id"], d.get("title") or f"Document {d['id']}",
                     f"{d.get('format', '')} document") for d in p.list_documents()]
        if key == "images":
            rows = []
            for i in p.list_images():
                size = f"{i.get('width', '?')}×{i.get('height', '?')}"
                rows.append((i["id"], i.get("name") or f"Image {i['id']}",
                             f"{size} {i.get('format', '')} {i.get('mode', '')}, {i.get('origin', '')}"))
            return rows
        if key == "datasets":
            return [(d["id"], d.get("name") or f"Dataset {d['id']}",
                     f"{d.get('kind', '')}, {d.get('storage', '')}") for d in p.list_datasets()]
        if key == "models":
            return [(m["id"], m.get("name") or f"Model {m['id']}",
                     f"{m.get('kind', '')}: {m.get('path', '')}") for m in p.list_models()]
        if key == "runs":
            runs = sorted(p.list_runs(), key=lambda r: r["id"], reverse=True)
            return [(r["id"], f"{r.get('kind', 'run')} #{r['id']} · {r.get('status', '')}",
                     str(r.get("params", ""))[:200]) for r in runs[:200]]
        return []

    def _fill(self, key: str, rows) -> None:
        parent = self.categories[key]
        label = dict((k, lbl) for k, lbl, _ in CATEGORIES)[key]
        parent.setText(0, f"{label} ({len(rows)})")
        selected = self.current()
        parent.takeChildren()
        icon_name = dict((k, i) for k, _, i in CATEGORIES)[key]
        for row_id, text, tip in rows:
            child = QTreeWidgetItem([text])
            child.setIcon(0, ui.icon(icon_name))
            child.setToolTip(0, tip)
            child.setData(0, KIND_ROLE, key)
            child.setData(0, ID_ROLE, row_id)
            parent.addChild(child)
            if selected == (key, row_id):
                self.tree.setCurrentItem(child)

    def count(self, key: str) -> int:
        return self.categories[key].childCount()

    def find_item(self, key: str, row_id: int) -> QTreeWidgetItem | None:
        parent = self.categories[key]
        for i in range(parent.childCount()):
            if parent.child(i).data(0, ID_ROLE) == row_id:
                return parent.child(i)
        return None

    def current(self) -> tuple[str, int] | None:
        item = self.tree.currentItem()
        if item is None or item.data(0, KIND_ROLE) == "category":
            return None
        return item.data(0, KIND_ROLE), item.data(0, ID_ROLE)

    # -- actions ------------------------------------------------------------------------------
    def _activated(self, item: QTreeWidgetItem) -> None:
        kind, row_id = item.data(0, KIND_ROLE), item.data(0, ID_ROLE)
        if kind == "documents":
            self.open_document.emit(row_id)
        elif kind == "images":
            self.open_image.emit(row_id)
        elif kind in ("datasets", "models", "runs"):
            self.open_item.emit(kind, row_id)

    def _context_menu(self, pos: QPoint) -> None:
        item = self.tree.itemAt(pos)
        menu = self.context_menu_for(item) if item is not None else None
        if menu is not None and not menu.isEmpty():
            menu.exec(self.tree.viewport().mapToGlobal(pos))

    def context_menu_for(self, item: QTreeWidgetItem) -> QMenu | None:
        """The menu for an item: open, rename, delete (runs: delete only, once they have ended)."""
        if self.project is None:
            return None
        kind = item.data(0, KIND_ROLE)
        menu = QMenu(self)
        if kind == "category":
            menu.addAction(ui.icon("import"), "Import files…", lambda: self.import_requested.emit([]))
            return menu
        if kind in ("documents", "images"):
            menu.addAction("Open", lambda: self._activated(item))
        if not self.project.read_only:
            if kind != "runs":
                menu.addAction("Rename…", lambda: self.rename_item(item))
            menu.addAction("Delete…", lambda: self.delete_item(item))
        return menu

    def _name(self, item: QTreeWidgetItem) -> str:
        return item.text(0)

    def rename_item(self, item: QTreeWidgetItem, new_name: str | None = None) -> bool:
        """Rename through the store; asks for the name unless given."""
        kind, row_id = item.data(0, KIND_ROLE), item.data(0, ID_ROLE)
        if new_name is None:
            new_name, ok = QInputDialog.getText(self, "Rename", "New name:", text=self._name(item))
            if not ok:
                return False
        new_name = new_name.strip()
        if not new_name:
            return False
        rename = {"documents": self.project.rename_document, "images": self.project.rename_image,
                  "datasets": self.project.rename_dataset, "models": self.project.rename_model}[kind]
        try:
            rename(row_id, new_name)
        except AppError as exc:
            ui.error_box(self, exc)
            return False
        self.refresh({kind})
        return True

    def delete_item(self, item: QTreeWidgetItem, ask: bool = True) -> bool:
        """Delete through the store, after a confirmation that names the object."""
        kind, row_id = item.data(0, KIND_ROLE), item.data(0, ID_ROLE)
        noun = {"documents": "document", "images": "image", "datasets": "data set",
                "models": "model", "runs": "run"}[kind]
        extra = {"documents": " Its saved versions go with it.",
                 "runs": " Its inspection results, heat maps and reconstructions go with it."}.get(kind, "")
        if ask and not ui.confirm(self, f"Delete {noun}",
                                  f"Delete the {noun} “{self._name(item)}” from the project?{extra}"
                                  " This cannot be undone."):
            return False
        delete = {"documents": self.project.delete_document, "images": self.project.delete_image,
                  "datasets": self.project.delete_dataset, "models": self.project.delete_model,
                  "runs": self.project.delete_run}[kind]
        try:
            delete(row_id)
        except AppError as exc:
            ui.error_box(self, exc)
            return False
        self.item_deleted.emit(kind, row_id)
        self.refresh({kind})
        return True
