"""A strip of the project's image thumbnails (from the store's small PNG thumbnails)."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImage, QPainter, QPixmap
from PySide6.QtWidgets import QListView, QListWidget, QListWidgetItem

from desktop import ui


class ImageStrip(QListWidget):
    image_chosen = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("ImageStrip")
        size = int(ui.setting_default("thumbnail_size", 96))
        self.setViewMode(QListView.IconMode)
        self.setFlow(QListView.LeftToRight)
        self.setWrapping(False)
        self.setMovement(QListView.Static)
        self.setResizeMode(QListView.Adjust)
        self.setIconSize(QSize(size, size))
        self.setGridSize(QSize(size + 32, size + 30))
        self.setSpacing(4)
        self.setWordWrap(False)
        self.setFixedHeight(size + 46)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAsNeeded)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setTextElideMode(Qt.ElideRight)
        self._icons: dict[tuple[int, str], QIcon] = {}
        self.currentItemChanged.connect(self._chosen)

    def reload(self, project) -> None:
        """Rebuild the strip from the project, keeping the selection and cached thumbnails."""
        current = self.current_image_id()
        self.blockSignals(True)
        self.clear()
        if project is not None:
            for info in project.list_images():
                key = (info["id"], info.get("sha256", ""))
                icon = self._icons.get(key)
                if icon is None:
                    thumb = QImage.fromData(project.thumbnail_bytes(info["id"]) or b"")
                    icon = self._square_icon(thumb) if not thumb.isNull() else ui.icon("image")
                    self._icons[key] = icon
                item = QListWidgetItem(icon, info.get("name") or f"Image {info['id']}")
                item.setData(Qt.UserRole, info["id"])
                item.setToolTip(f"{info.get('name', '')}\n{info.get('width')}×{info.get('height')} "
                                f"{info.get('format', '')} {info.get('mode', '')}")
                item.setTextAlignment(Qt.AlignHCenter | Qt.AlignTop)
                self.addItem(item)
                if info["id"] == current:
                    self.setCurrentItem(item)
        self.blockSignals(False)

    def _square_icon(self, thumb: QImage) -> QIcon:
        """Centre the thumbnail in a square, so every cell lines up whatever the aspect ratio."""
        side = self.iconSize().width()
        scaled = thumb.scaled(side, side, Qt.KeepAspectRatio, Qt.SmoothTransformation)
        square = QPixmap(side, side)
        square.fill(Qt.transparent)
        painter = QPainter(square)
        painter.drawImage((side - scaled.width()) // 2, (side - scaled.height()) // 2, scaled)
        painter.end()
        return QIcon(square)

    def image_ids(self) -> list[int]:
        return [self.item(i).data(Qt.UserRole) for i in range(self.count())]

    def current_image_id(self) -> int | None:
        item = self.currentItem()
        return None if item is None else item.data(Qt.UserRole)

    def select_image(self, image_id: int) -> None:
        for i in range(self.count()):
            if self.item(i).data(Qt.UserRole) == image_id:
                self.blockSignals(True)
                self.setCurrentRow(i)
                self.blockSignals(False)
                self.scrollToItem(self.item(i))
                return

    def _chosen(self, item, _previous=None) -> None:
        if item is not None:
            self.image_chosen.emit(item.data(Qt.UserRole))
