"""The canvas tab: toolbar, image view, thumbnail strip, and room for side panels."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QFileDialog, QLabel, QSizePolicy, QSplitter, QStackedWidget, QTabWidget,
                               QToolBar, QVBoxLayout, QWidget)

from core.errors import AppError
from desktop import ui
from desktop.canvas.strip import ImageStrip
from desktop.canvas.view import ImageView, load_qimage

EXPORT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF",
                  ".tiff": "TIFF", ".webp": "WEBP"}


def export_image_file(project, image_id: int, dest: str | Path) -> Path:
    """Write a project image to `dest`, converting to the format its extension names.

    Same format: the stored bytes as they are (no re-encoding). Otherwise PIL converts, dropping
    alpha for JPEG and reducing 16-bit to 8-bit where the target cannot hold it.
    """
    dest = Path(dest)
    suffix = dest.suffix.lower()
    if suffix not in EXPORT_FORMATS:
        raise AppError(f"Cannot export to “{dest.name}”: unknown image type “{suffix or 'none'}”.",
                       "Use one of: " + ", ".join(sorted(EXPORT_FORMATS)) + ".")
    info = project.get_image(image_id)
    data = project.image_bytes(image_id)
    target = EXPORT_FORMATS[suffix]
    try:
        if str(info.get("format", "")).upper() in (target, "JPG" if target == "JPEG" else target):
            dest.write_bytes(data)
            return dest
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            if target == "JPEG" and image.mode not in ("RGB", "L"):
                image = image.convert("RGB") if image.mode not in ("I;16", "I") else \
                    image.point(lambda v: v / 256).convert("L")
            elif target in ("WEBP", "BMP") and image.mode in ("I;16", "I"):
                image = image.point(lambda v: v / 256).convert("L")
            image.save(dest, format=target)
    except OSError as exc:
        raise AppError(f"Could not write “{dest}”: {exc}",
                       "Check that the folder exists and that you may write there.") from exc
    return dest


class CanvasPanel(QWidget):
    """Shows project images. `status_message` carries the pixel readout for the status bar."""

    extensions: list[Callable[["CanvasPanel"], None]] = []

    image_shown = Signal(int)
    status_message = Signal(str)

    def __init__(self, project=None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("CanvasPanel")
        self.project = project
        self.current_image_id: int | None = None
        self.pixel_info = ""
        self.view = ImageView()
        self.strip = ImageStrip()
        self.strip.image_chosen.connect(self.show_image)
        self.empty = QLabel("No images in this project yet.\n\nDrop image files on the project "
                            "browser (left) or use File ▸ Import files… to add some.")
        self.empty.setObjectName("Placeholder")
        self.empty.setAlignment(Qt.AlignCenter)
        self.empty.setWordWrap(True)  # long lines would set a wide minimum for the whole window
        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.view)
        self.side_tabs = QTabWidget()
        self.side_tabs.setObjectName("CanvasSide")
        self.side_tabs.hide()
        self.splitter = QSplitter(Qt.Horizontal)
        self.splitter.addWidget(self.stack)
        self.splitter.addWidget(self.side_tabs)
        self.splitter.setStretchFactor(0, 1)

        # Top bar: for extensions (generation, mask tools); shown once something is in it.
        self.toolbar = QToolBar("Canvas")
        self.toolbar.setObjectName("CanvasToolbar")
        self.toolbar.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.toolbar.setIconSize(self.toolbar.iconSize() * 0.75)
        # Bottom bar under the image: view controls and what is shown. Its own row, so tools
        # added above can never push zoom and export out of sight.
        self.view_bar = QToolBar("View")
        self.view_bar.setObjectName("CanvasViewBar")
        self.view_bar.setToolButtonStyle(Qt.ToolButtonIconOnly)
        self.view_bar.setIconSize(self.view_bar.iconSize() * 0.75)
        self.zoom_out_action = self._action("zoom-out", "Zoom out", QKeySequence.ZoomOut,
                                            lambda: self.view.zoom_by(0.8))
        self.zoom_in_action = self._action("zoom-in", "Zoom in", QKeySequence.ZoomIn,
                                           lambda: self.view.zoom_by(1.25))
        self.fit_action = self._action("fit", "Fit", QKeySequence("F"), self.view.fit)
        self.actual_action = self._action("actual-size", "100%", QKeySequence("1"),
                                          self.view.actual_size)
        self.view_bar.addSeparator()
        self.export_action = self._action("export", "Export image…", QKeySequence("Ctrl+E"),
                                          self.export_current)
        self.view_bar.widgetForAction(self.export_action).setToolButtonStyle(
            Qt.ToolButtonTextBesideIcon)
        self.title_label = QLabel("")
        self.title_label.setObjectName("ImageTitle")
        self.zoom_label = QLabel("")
        spacer = QWidget()
        spacer.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)
        self.view_bar.addWidget(spacer)
        self.view_bar.addWidget(self.title_label)
        self.view_bar.addWidget(self.zoom_label)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.toolbar)
        layout.addWidget(self.splitter, 1)
        layout.addWidget(self.view_bar)
        layout.addWidget(self.strip)

        self.view.pixel_hovered.connect(self._hovered)
        self.view.pixel_left.connect(self._left)
        self.view.zoom_changed.connect(lambda z: self.zoom_label.setText(f"  {z * 100:.0f}%  "))
        self._update_actions()
        for extend in list(self.extensions):
            extend(self)
        self.toolbar.setVisible(bool(self.toolbar.actions()))
        self.toolbar.installEventFilter(self)  # shows the bar when an action arrives later
        if project is not None:
            self.set_project(project)

    def _action(self, icon_name, text, shortcut, slot) -> QAction:
        action = QAction(ui.icon(icon_name), text, self)
        action.setShortcut(shortcut)
        action.setShortcutContext(Qt.WidgetWithChildrenShortcut)
        action.setToolTip(f"{text} ({QKeySequence(shortcut).toString(QKeySequence.NativeText)})")
        action.triggered.connect(slot)
        self.view_bar.addAction(action)
        self.addAction(action)
        return action

    def eventFilter(self, obj, event):
        if obj is self.toolbar and event.type() == QEvent.ActionAdded:
            self.toolbar.show()
        return super().eventFilter(obj, event)

    def add_side_panel(self, widget: QWidget, title: str) -> None:
        """For extensions: a tab on the right of the image (generation controls, gallery …)."""
        self.side_tabs.addTab(widget, title)
        self.side_tabs.show()
        self.splitter.setSizes([3 * max(self.width(), 400) // 4, max(self.width(), 400) // 4])

    # -- content ------------------------------------------------------------------------------
    def set_project(self, project) -> None:
        self.project = project
        self.current_image_id = None
        self.view.clear_image()
        self.refresh()

    def refresh(self) -> None:
        """Reload thumbnails; keep the shown image if it still exists, else show the first."""
        self.strip.reload(self.project)
        ids = self.strip.image_ids()
        if self.current_image_id in ids:
            self.strip.select_image(self.current_image_id)
        elif ids:
            self.show_image(ids[0])
        else:
            self.current_image_id = None
            self.view.clear_image()
            self.title_label.setText("")
        self.stack.setCurrentWidget(self.view if ids else self.empty)
        self._update_actions()

    def show_image(self, image_id: int) -> None:
        if self.project is None:
            return
        try:
            info = self.project.get_image(image_id)
            image = load_qimage(self.project.image_bytes(image_id))
        except AppError as exc:
            ui.error_box(self, exc)
            return
        if image.isNull():
            ui.error_box(self, AppError(f"Image “{info.get('name')}” cannot be displayed.",
                                        "Export it and open it in another program to check it."))
            return
        self.current_image_id = image_id
        self.view.set_image(image)
        self.stack.setCurrentWidget(self.view)
        self.strip.select_image(image_id)
        self.title_label.setText(f"{info.get('name', '')}  ·  {image.width()}×{image.height()}"
                                 f"  ·  {info.get('mode', '')}")
        self._update_actions()
        self.image_shown.emit(image_id)

    def _update_actions(self) -> None:
        has = self.current_image_id is not None
        for action in (self.zoom_in_action, self.zoom_out_action, self.fit_action,
                       self.actual_action, self.export_action):
            action.setEnabled(has)

    # -- readout and export -------------------------------------------------------------------
    def _hovered(self, x: int, y: int, value: str) -> None:
        self.pixel_info = f"x {x}, y {y} · {value}"
        self.status_message.emit(self.pixel_info)

    def _left(self) -> None:
        self.pixel_info = ""
        self.status_message.emit("")

    def export_current(self, dest: str | None = None) -> Path | None:
        if self.current_image_id is None or self.project is None:
            return None
        if not dest:
            info = self.project.get_image(self.current_image_id)
            ext = {"JPEG": ".jpg", "TIFF": ".tif"}.get(str(info.get("format", "PNG")).upper(),
                                                         "." + str(info.get("format", "png")).lower())
            stem = Path(str(info.get("name") or "image")).stem
            dest, _ = QFileDialog.getSaveFileName(
                self, "Export image", str(Path.home() / f"{stem}{ext}"),
                "Images (*.png *.jpg *.jpeg *.bmp *.tif *.tiff *.webp)")
            if not dest:
                return None
        try:
            path = export_image_file(self.project, self.current_image_id, dest)
        except AppError as exc:
            ui.error_box(self, exc, "Export failed")
            return None
        self.status_message.emit(f"Exported to {path}")
        return path
