"""The inpainting mask, painted on the canvas: brush, eraser, size, clear, invert — all undoable.

The mask is an ARGB image the size of the shown picture, drawn as a translucent red layer above it
(`ImageView.add_layer`). Painted pixels (alpha > 0) are repainted by the model. While the brush or
the eraser is active the view stops panning, so drags paint instead.
"""

from __future__ import annotations

import io

import numpy as np
from PySide6.QtCore import QEvent, QObject, QPointF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPen, QPixmap, QUndoCommand
from PySide6.QtWidgets import QGraphicsPixmapItem, QGraphicsView

MASK_COLOR = QColor(230, 40, 60)
MASK_OPACITY = 0.5


def alpha_array(image: QImage) -> np.ndarray:
    """The alpha channel of an ARGB32-premultiplied image as an (h, w) uint8 array (a copy)."""
    image = image.convertToFormat(QImage.Format_ARGB32_Premultiplied)
    ptr = image.constBits()
    arr = np.frombuffer(ptr, np.uint8, count=image.sizeInBytes()).reshape(image.height(), image.bytesPerLine())
    # Little-endian ARGB32 lies in memory as B, G, R, A.
    return arr[:, : image.width() * 4].reshape(image.height(), image.width(), 4)[:, :, 3].copy()


def image_from_alpha(alpha: np.ndarray) -> QImage:
    h, w = alpha.shape
    rgba = np.zeros((h, w, 4), np.uint8)
    a = alpha.astype(np.uint16)
    # Premultiplied: colour channels scaled by alpha.
    rgba[:, :, 0] = (MASK_COLOR.blue() * a // 255).astype(np.uint8)
    rgba[:, :, 1] = (MASK_COLOR.green() * a // 255).astype(np.uint8)
    rgba[:, :, 2] = (MASK_COLOR.red() * a // 255).astype(np.uint8)
    rgba[:, :, 3] = alpha
    return QImage(rgba.data, w, h, w * 4, QImage.Format_ARGB32_Premultiplied).copy()


class MaskEdit(QUndoCommand):
    """One stroke, a clear or an invert: the mask before and after."""

    def __init__(self, layer: "MaskLayer", before: QImage, after: QImage, text: str, applied: bool = True):
        super().__init__(text)
        self.layer, self.before, self.after = layer, before, after
        self._skip_first = applied  # the stroke is already on screen when it is pushed

    def redo(self):
        if self._skip_first:
            self._skip_first = False
            return
        self.layer.set_mask_image(self.after)

    def undo(self):
        self.layer.set_mask_image(self.before)


class MaskLayer(QObject):
    """Paints on a mask layer over `view`; edits go on `undo_stack`."""

    changed = Signal()
    TOOLS = ("none", "brush", "eraser")

    def __init__(self, view, undo_stack, parent: QObject | None = None):
        super().__init__(parent)
        self.view = view
        self.undo_stack = undo_stack
        self.tool = "none"
        self.brush_size = 32
        self.mask = QImage()
        self.item = QGraphicsPixmapItem()
        self.item.setOpacity(MASK_OPACITY)
        self.item.setAcceptedMouseButtons(Qt.NoButton)
        view.add_layer(self.item, 2.0)
        self._stroke_before: QImage | None = None
        self._last: QPointF | None = None
        self._drag_mode = view.dragMode()
        view.viewport().installEventFilter(self)

    # -- state --------------------------------------------------------------------------------
    def reset(self, width: int, height: int) -> None:
        """A blank mask for a picture of this size (kept as it is when the size is the same)."""
        if not self.mask.isNull() and (self.mask.width(), self.mask.height()) == (width, height):
            return
        self.mask = QImage(max(width, 1), max(height, 1), QImage.Format_ARGB32_Premultiplied)
        self.mask.fill(Qt.transparent)
        self._refresh()

    def set_mask_image(self, image: QImage) -> None:
        self.mask = QImage(image)
        self._refresh()

    def _refresh(self) -> None:
        self.item.setPixmap(QPixmap.fromImage(self.mask))
        self.changed.emit()

    def set_tool(self, tool: str) -> None:
        if tool not in self.TOOLS:
            raise ValueError(tool)
        self.tool = tool
        painting = tool != "none"
        self.view.setDragMode(QGraphicsView.NoDrag if painting else self._drag_mode)
        self.view.viewport().setCursor(Qt.CrossCursor if painting else Qt.ArrowCursor)

    def set_brush_size(self, size: int) -> None:
        self.brush_size = max(1, int(size))

    def is_empty(self) -> bool:
        return self.mask.isNull() or not alpha_array(self.mask).any()

    def coverage(self) -> float:
        """Share of the picture marked for repainting (0..1)."""
        if self.mask.isNull():
            return 0.0
        return float((alpha_array(self.mask) > 0).mean())

    def mask_png(self) -> bytes:
        """The mask as an 8-bit PNG: white = repaint, black = keep."""
        from PIL import Image

        arr = np.where(alpha_array(self.mask) > 0, 255, 0).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(arr, "L").save(buffer, format="PNG")
        return buffer.getvalue()

    # -- whole-mask edits (undoable) ----------------------------------------------------------
    def clear(self) -> None:
        if self.mask.isNull():
            return
        before = QImage(self.mask)
        self.mask.fill(Qt.transparent)
        self._refresh()
        self.undo_stack.push(MaskEdit(self, before, QImage(self.mask), "Clear mask"))

    def invert(self) -> None:
        if self.mask.isNull():
            return
        before = QImage(self.mask)
        self.mask = image_from_alpha(np.where(alpha_array(self.mask) > 0, 0, 255).astype(np.uint8))
        self._refresh()
        self.undo_stack.push(MaskEdit(self, before, QImage(self.mask), "Invert mask"))

    # -- painting -----------------------------------------------------------------------------
    def paint_stroke(self, points: list[tuple[float, float]]) -> None:
        """Paint (or erase) along image-pixel points as one undoable stroke (also used by tests)."""
        if self.mask.isNull() or not points:
            return
        before = QImage(self.mask)
        self._paint_segment(QPointF(*points[0]), QPointF(*points[0]))
        for a, b in zip(points, points[1:]):
            self._paint_segment(QPointF(*a), QPointF(*b))
        self._refresh()
        self.undo_stack.push(MaskEdit(self, before, QImage(self.mask),
                                      "Erase mask" if self.tool == "eraser" else "Paint mask"))

    def _paint_segment(self, a: QPointF, b: QPointF) -> None:
        painter = QPainter(self.mask)
        painter.setRenderHint(QPainter.Antialiasing, False)  # a mask is binary
        if self.tool == "eraser":
            painter.setCompositionMode(QPainter.CompositionMode_Clear)
        pen = QPen(MASK_COLOR, self.brush_size, Qt.SolidLine, Qt.RoundCap, Qt.RoundJoin)
        painter.setPen(pen)
        painter.drawLine(a, b)
        painter.end()

    def eventFilter(self, obj, event):
        if self.tool == "none" or self.mask.isNull():
            return False
        kind = event.type()
        if kind == QEvent.MouseButtonPress and event.button() == Qt.LeftButton:
            self._stroke_before = QImage(self.mask)
            self._last = self.view.mapToScene(event.position().toPoint())
            self._paint_segment(self._last, self._last)
            self._refresh()
            return True
        if kind == QEvent.MouseMove and self._last is not None:
            point = self.view.mapToScene(event.position().toPoint())
            self._paint_segment(self._last, point)
            self._last = point
            self._refresh()
            return True
        if kind == QEvent.MouseButtonRelease and self._last is not None:
            self._last = None
            before, self._stroke_before = self._stroke_before, None
            self.undo_stack.push(MaskEdit(self, before, QImage(self.mask),
                                          "Erase mask" if self.tool == "eraser" else "Paint mask"))
            return True
        return False
