"""The gallery of the project's generated images, with their parameters: show, reuse, export, import."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QLabel, QListView, QListWidget, QListWidgetItem,
                               QPushButton, QVBoxLayout, QWidget)

from core.errors import AppError
from desktop import ui


def export_png_with_metadata(project, image_id: int, dest: str | Path) -> Path:
    """Write a project image as PNG carrying its parameters (A1111 `parameters` + Lienzo JSON)."""
    import io

    from PIL import Image

    from core.image.metadata import export_png, read_png_parameters

    dest = Path(dest)
    if dest.suffix.lower() != ".png":
        dest = dest.with_name(dest.name + ".png")
    data = project.image_bytes(image_id)
    if read_png_parameters(data):
        # Generated PNGs already carry the metadata: copy the stored bytes, no re-encoding.
        tmp = dest.with_name(dest.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(dest)
        return dest
    params = project.get_image(image_id).get("params") or {}
    with Image.open(io.BytesIO(data)) as image:
        return export_png(image.convert("RGBA") if image.mode in ("RGBA", "LA", "P") else image.convert("RGB"),
                          params, dest)


def describe(params: dict) -> str:
    model = params.get("model") or {}
    lines = [params.get("prompt") or "(no prompt)"]
    if params.get("negative_prompt"):
        lines.append(f"Negative: {params['negative_prompt']}")
    lines.append(f"{params.get('mode', '')} · seed {params.get('seed')} · {params.get('steps')} steps · "
                 f"guidance {params.get('guidance')} · {params.get('scheduler', '')}")
    lines.append(f"{params.get('width')}×{params.get('height')} · model {model.get('name', params.get('model_name', ''))}")
    return "\n".join(lines)


class GalleryPanel(QWidget):
    show_requested = Signal(int)          # image id
    reuse_requested = Signal(dict)        # parameters
    status_message = Signal(str)

    def __init__(self, project=None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("GalleryPanel")
        self.project = project
        self.list = QListWidget()
        self.list.setObjectName("GalleryList")
        self.list.setViewMode(QListView.IconMode)
        self.list.setResizeMode(QListView.Adjust)
        self.list.setMovement(QListView.Static)
        self.list.setIconSize(QSize(96, 96))
        self.list.setGridSize(QSize(112, 124))
        self.list.setWordWrap(True)
        self.list.itemDoubleClicked.connect(lambda item: self.show_requested.emit(item.data(Qt.UserRole)))
        self.list.currentItemChanged.connect(self._selected)
        self.details = QLabel("")
        self.details.setObjectName("GalleryDetails")
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.show_button = QPushButton("Show")
        self.reuse_button = QPushButton("Reuse parameters")
        self.reuse_button.setObjectName("ReuseParameters")
        self.export_button = QPushButton("Export PNG…")
        self.import_button = QPushButton("Import PNG…")
        self.import_button.setToolTip("Import PNGs made by Lienzo, A1111 or ComfyUI with their parameters")
        self.show_button.clicked.connect(lambda: self._with_current(self.show_requested.emit))
        self.reuse_button.clicked.connect(self.reuse_current)
        self.export_button.clicked.connect(lambda: self.export_current())
        self.import_button.clicked.connect(lambda: self.import_files())
        buttons = QHBoxLayout()
        for b in (self.show_button, self.reuse_button):
            buttons.addWidget(b)
        buttons2 = QHBoxLayout()
        for b in (self.export_button, self.import_button):
            buttons2.addWidget(b)
        self.empty = QLabel("Generated images appear here with their parameters.")
        self.empty.setObjectName("Placeholder")
        self.empty.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.empty)
        layout.addWidget(self.list, 1)
        layout.addWidget(self.details)
        layout.addLayout(buttons)
        layout.addLayout(buttons2)
        self._params: dict[int, dict] = {}
        self.refresh()

    def set_project(self, project) -> None:
        self.project = project
        self.refresh()

    def refresh(self) -> None:
        """One entry per generated image (newest first) plus imported PNGs that carry parameters."""
        current = self.current_image_id()
        self.list.blockSignals(True)
        self.list.clear()
        self._params.clear()
        entries: list[tuple[int, dict]] = []
        if self.project is not None:
            seen = set()
            for gen in self.project.list_generations("image"):
                if gen.get("image_id") and gen["image_id"] not in seen:
                    seen.add(gen["image_id"])
                    entries.append((gen["image_id"], gen.get("params") or {}))
            for image in self.project.list_images(origin="imported"):
                if image.get("params") and image["id"] not in seen:
                    entries.append((image["id"], image["params"]))
        for image_id, params in entries:
            try:
                thumb = QImage.fromData(self.project.thumbnail_bytes(image_id) or b"")
            except AppError:
                continue  # deleted meanwhile
            icon = QIcon(QPixmap.fromImage(thumb)) if not thumb.isNull() else ui.icon("image")
            # Seeds are long; the start of the prompt tells the pictures apart (details below the list).
            label = (params.get("prompt") or "").strip().split("\n")[0][:18] or f"#{image_id}"
            item = QListWidgetItem(icon, label)
            item.setData(Qt.UserRole, image_id)
            item.setToolTip(describe(params))
            self.list.addItem(item)
            self._params[image_id] = params
            if image_id == current:
                self.list.setCurrentItem(item)
        self.list.blockSignals(False)
        has = bool(entries)
        self.empty.setVisible(not has)
        if self.list.currentItem() is None and has:
            self.list.setCurrentRow(0)
        self._selected(self.list.currentItem())

    def image_ids(self) -> list[int]:
        return [self.list.item(i).data(Qt.UserRole) for i in range(self.list.count())]

    def current_image_id(self) -> int | None:
        item = self.list.currentItem()
        return None if item is None else item.data(Qt.UserRole)

    def select(self, image_id: int) -> None:
        for i in range(self.list.count()):
            if self.list.item(i).data(Qt.UserRole) == image_id:
                self.list.setCurrentRow(i)
                return

    def params_of(self, image_id: int) -> dict:
        return dict(self._params.get(image_id) or {})

    def _selected(self, item, _previous=None) -> None:
        has = item is not None
        for b in (self.show_button, self.reuse_button, self.export_button):
            b.setEnabled(has)
        self.details.setText(describe(self._params.get(item.data(Qt.UserRole), {})) if has else "")

    def _with_current(self, fn) -> None:
        image_id = self.current_image_id()
        if image_id is not None:
            fn(image_id)

    def reuse_current(self) -> None:
        image_id = self.current_image_id()
        if image_id is not None:
            self.reuse_requested.emit(self.params_of(image_id))

    def export_current(self, dest: str | None = None) -> Path | None:
        image_id = self.current_image_id()
        if image_id is None or self.project is None:
            return None
        if not dest:
            dest, _ = QFileDialog.getSaveFileName(self, "Export PNG with parameters",
                                                  str(Path.home() / f"lienzo-{image_id}.png"), "PNG (*.png)")
            if not dest:
                return None
        try:
            path = export_png_with_metadata(self.project, image_id, dest)
        except (AppError, OSError) as exc:
            ui.error_box(self, exc if isinstance(exc, AppError) else
                         AppError(f"Could not write “{dest}”: {exc}", "Choose another folder."), "Export failed")
            return None
        self.status_message.emit(f"Exported to {path}")
        return path

    def import_files(self, paths: list[str] | None = None) -> list[int]:
        if self.project is None:
            return []
        if not paths:
            paths, _ = QFileDialog.getOpenFileNames(self, "Import PNGs with parameters", str(Path.home()),
                                                    "PNG (*.png)")
        from core.image.metadata import import_png

        ids = []
        for path in paths or []:
            try:
                image_id, _params = import_png(self.project, path)
                ids.append(image_id)
            except AppError as exc:
                ui.error_box(self, exc, "Import failed")
        self.refresh()
        if ids:
            self.select(ids[-1])
        return ids
