"""The image view: QGraphicsView with wheel zoom about the cursor, hand-drag pan, pixel readout."""

from __future__ import annotations

import io

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QImage, QPainter, QPixmap
from PySide6.QtWidgets import QGraphicsPixmapItem, QGraphicsRectItem, QGraphicsScene, QGraphicsView

from desktop import ui


def load_qimage(data: bytes) -> QImage:
    """Decode image bytes with Qt, falling back to PIL for what Qt cannot read."""
    image = QImage.fromData(data)
    if not image.isNull():
        return image
    from PIL import Image  # only for unusual files; PIL already guarded the import

    with Image.open(io.BytesIO(data)) as pil:
        pil = pil.convert("RGBA")
        buffer = io.BytesIO()
        pil.save(buffer, format="PNG")
    return QImage.fromData(buffer.getvalue())


def pixel_value_text(image: QImage, x: int, y: int) -> str:
    """The value at (x, y) in the image's own terms: grey, RGB or RGBA, 16-bit where it is."""
    color = image.pixelColor(x, y)
    fmt = image.format()
    if fmt == QImage.Format_Grayscale16:
        return f"grey {round(color.redF() * 65535)}"
    if fmt in (QImage.Format_Grayscale8, QImage.Format_Indexed8) and image.isGrayscale():
        return f"grey {color.red()}"
    if fmt in (QImage.Format_RGBA64, QImage.Format_RGBX64, QImage.Format_RGBA64_Premultiplied):
        values = [round(c * 65535) for c in (color.redF(), color.greenF(), color.blueF())]
        alpha = f" A {round(color.alphaF() * 65535)}" if image.hasAlphaChannel() else ""
        return "RGB " + " ".join(map(str, values)) + alpha
    if image.hasAlphaChannel():
        return f"RGBA {color.red()} {color.green()} {color.blue()} {color.alpha()}"
    return f"RGB {color.red()} {color.green()} {color.blue()}"


def _checker_brush(size: int = 8) -> QBrush:
    tile = QPixmap(size * 2, size * 2)
    tile.fill(QColor("#cfd3da"))
    painter = QPainter(tile)
    painter.fillRect(0, 0, size, size, QColor("#f2f3f5"))
    painter.fillRect(size, size, size, size, QColor("#f2f3f5"))
    painter.end()
    return QBrush(tile)


class ImageView(QGraphicsView):
    """Shows one image. Wheel zooms about the cursor, dragging pans, moving reports the pixel."""

    pixel_hovered = Signal(int, int, str)   # x, y, value text
    pixel_left = Signal()
    zoom_changed = Signal(float)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("ImageView")
        self.setScene(QGraphicsScene(self))
        self.setDragMode(QGraphicsView.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.AnchorViewCenter)
        self.setRenderHint(QPainter.SmoothPixmapTransform, False)  # show real pixels when zoomed
        self.setMouseTracking(True)
        # Panning works by dragging; scroll bars would only clutter the picture.
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.viewport().setMouseTracking(True)
        self.min_zoom = float(ui.setting_default("canvas_min_zoom", 0.02))
        self.max_zoom = float(ui.setting_default("canvas_max_zoom", 32.0))
        self.image = QImage()
        self.checker = QGraphicsRectItem()
        self.checker.setBrush(_checker_brush())
        self.checker.setPen(Qt.NoPen)
        self.checker.setZValue(-1)
        self.pixmap_item = QGraphicsPixmapItem()
        self.pixmap_item.setZValue(0)
        self.pixmap_item.setTransformationMode(Qt.FastTransformation)
        self.scene().addItem(self.checker)
        self.scene().addItem(self.pixmap_item)
        self._fit_mode = True

    # -- content ------------------------------------------------------------------------------
    def set_image(self, image: QImage, fit: bool = True) -> None:
        self.image = image
        self.pixmap_item.setPixmap(QPixmap.fromImage(image))
        rect = QRectF(0, 0, image.width(), image.height())
        self.checker.setRect(rect)
        self.checker.setVisible(image.hasAlphaChannel())
        self.scene().setSceneRect(rect.adjusted(-rect.width(), -rect.height(),
                                                rect.width(), rect.height()))
        if fit:
            self.fit_or_actual()

    def clear_image(self) -> None:
        self.image = QImage()
        self.pixmap_item.setPixmap(QPixmap())
        self.checker.setVisible(False)

    def has_image(self) -> bool:
        return not self.image.isNull()

    def add_layer(self, item, z: float = 1.0):
        """Put a scene item above the image (mask, overlays); coordinates are image pixels."""
        item.setZValue(z)
        self.scene().addItem(item)
        return item

    def image_rect(self) -> QRectF:
        return QRectF(0, 0, self.image.width(), self.image.height())

    # -- zoom ---------------------------------------------------------------------------------
    @property
    def zoom(self) -> float:
        return self.transform().m11()

    def set_zoom(self, zoom: float, anchor_under_mouse: bool = False) -> None:
        zoom = max(self.min_zoom, min(self.max_zoom, zoom))
        previous = self.transformationAnchor()
        if not anchor_under_mouse:
            self.setTransformationAnchor(QGraphicsView.AnchorViewCenter)
        factor = zoom / self.zoom
        self.scale(factor, factor)
        self.setTransformationAnchor(previous)
        self._fit_mode = False
        self.zoom_changed.emit(self.zoom)

    def zoom_by(self, factor: float, anchor_under_mouse: bool = False) -> None:
        self.set_zoom(self.zoom * factor, anchor_under_mouse)

    def fit(self) -> None:
        if not self.has_image():
            return
        self.fitInView(self.image_rect(), Qt.KeepAspectRatio)
        self._fit_mode = True
        self.zoom_changed.emit(self.zoom)

    def actual_size(self) -> None:
        self.resetTransform()
        if self.has_image():
            self.centerOn(self.image_rect().center())
        self._fit_mode = False
        self.zoom_changed.emit(self.zoom)

    def fit_or_actual(self) -> None:
        """Large images fit the window; small ones show at 100 % (not blown up)."""
        if not self.has_image():
            return
        view = self.viewport().size()
        if self.image.width() > view.width() or self.image.height() > view.height():
            self.fit()
        else:
            self.actual_size()
            self._fit_mode = True

    def wheelEvent(self, event):
        delta = event.angleDelta().y()
        if delta == 0 or not self.has_image():
            return super().wheelEvent(event)
        self.zoom_by(1.25 ** (delta / 120), anchor_under_mouse=True)
        event.accept()

    def resizeEvent(self, event):
        super().resizeEvent(event)
        if self._fit_mode:
            self.fit_or_actual()

    # -- pixel readout ------------------------------------------------------------------------
    def pixel_at(self, view_pos) -> tuple[int, int] | None:
        scene = self.mapToScene(view_pos)
        return self.pixel_at_scene(scene)

    def pixel_at_scene(self, scene: QPointF) -> tuple[int, int] | None:
        if not self.has_image():
            return None
        x, y = int(scene.x() // 1), int(scene.y() // 1)
        if 0 <= x < self.image.width() and 0 <= y < self.image.height():
            return x, y
        return None

    def mouseMoveEvent(self, event):
        super().mouseMoveEvent(event)
        pixel = self.pixel_at(event.position().toPoint())
        if pixel is None:
            self.pixel_left.emit()
        else:
            x, y = pixel
            self.pixel_hovered.emit(x, y, pixel_value_text(self.image, x, y))

    def leaveEvent(self, event):
        super().leaveEvent(event)
        self.pixel_left.emit()
