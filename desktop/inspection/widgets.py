"""Pieces shared by the inspection pages: the state they share, the threshold bar, the histogram /
ROC plots (pyqtgraph), synchronised zoom/pan image views, result thumbnails with PASS/FAIL badges."""

from __future__ import annotations

import getpass
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QImage, QImageReader, QPainter, QPen, QPixmap
from PySide6.QtWidgets import (QComboBox, QFrame, QGraphicsPixmapItem, QGraphicsScene, QGraphicsView,
                               QGridLayout, QHBoxLayout, QLabel, QPushButton, QSlider, QStyle,
                               QStyledItemDelegate, QVBoxLayout, QWidget)

from core.errors import AppError
from core.inspect import session as S
from desktop import ui

pg.setConfigOptions(antialias=True, background="w", foreground="#2b303b", exitCleanup=False)

PASS_COLOR, FAIL_COLOR = QColor("#1b7f3a"), QColor("#c62828")
GOOD_BRUSH, DEFECT_BRUSH = (46, 125, 50, 150), (198, 40, 40, 150)
SLIDER_STEPS = 1000


class InspectionState(QObject):
    """The model, the inspection run and the threshold the pages show. Threshold moves only
    recompute verdicts from stored scores; the change is written to the audit trail once the
    slider rests (and before any report)."""

    model_changed = Signal(object)
    results_changed = Signal()
    threshold_changed = Signal(float)
    data_changed = Signal(set)        # project tables that changed

    def __init__(self, project, jobs, kind: str = S.MODEL_KIND, parent=None):
        super().__init__(parent)
        self.project, self.jobs, self.kind = project, jobs, kind
        self.model: dict | None = None
        self.run_id: int | None = None
        self.results: list[dict] = []
        self.scores = np.zeros(0)
        self.stale = False
        self.threshold = 0.0
        self._moved = False  # the operator moved the threshold and it is not recorded yet
        self.operator = getpass.getuser()
        self._commit = QTimer(self)
        self._commit.setSingleShot(True)
        self._commit.setInterval(800)
        self._commit.timeout.connect(self.commit_threshold)

    # -- model and results ----------------------------------------------------------------------
    def models(self) -> list[dict]:
        return self.project.list_models(self.kind)

    def set_model(self, model_id: int | None, record: bool = True) -> None:
        self.commit_threshold()
        if model_id is None:
            self.model = None
            self.model_changed.emit(None)
            self.load_run(None)
            return
        # A folder recalibrated from the command line since: the project's copy follows it.
        new = S.sync_model(self.project, self.project.get_model(model_id))
        if self.model is not None and self.model["id"] == new["id"] and self.model["config"] == new["config"]:
            return
        if record and not self.project.read_only:
            S.record_model_choice(self.project, self.model, new, user=self.operator)
        self.model = new
        self.threshold = S.current_threshold(self.project, new)
        self.model_changed.emit(new)
        self.threshold_changed.emit(self.threshold)
        run = S.latest_run(self.project, new["id"])
        self.load_run(run)

    def load_run(self, run_id: int | None) -> None:
        self.run_id = run_id
        self.results = self.project.inspection_results(run_id) if run_id else []
        self.scores = np.array([r["score"] for r in self.results], dtype=np.float64)
        # scored with other maps than the model sums now: the threshold does not apply to them
        self.stale = bool(self.model) and S.scored_before_map_change(self.project, self.model, run_id, self.results)
        self.results_changed.emit()

    def reload_results(self) -> None:
        if self.run_id:
            self.load_run(self.run_id)

    # -- threshold ------------------------------------------------------------------------------
    @property
    def calibrated(self) -> float:
        return S.calibrated_threshold(self.model) if self.model else 0.0

    def set_threshold(self, value: float) -> None:
        value = float(value)
        if abs(value - self.threshold) < 1e-15:
            return
        self.threshold = value
        self._moved = True
        self.threshold_changed.emit(value)
        self._commit.start()

    def commit_threshold(self) -> None:
        """Record the threshold the operator moved to (once); a threshold that came from the
        project (a calibration since, say) is not written back as if the operator had set it."""
        self._commit.stop()
        moved, self._moved = self._moved, False
        if not moved or self.model is None or self.project.read_only or self.project.closed:
            return
        S.set_threshold(self.project, self.model, self.threshold, user=self.operator)

    def verdict(self, index: int) -> str:
        return "FAIL" if self.scores[index] >= self.threshold else "PASS"

    def counts(self) -> dict:
        return S.counts(self.scores, self.threshold)

    def score_range(self) -> tuple[float, float]:
        cal = self.calibrated
        values = list(self.scores) + ([cal] if self.model else [])
        if not values:
            return 0.0, 1.0
        lo, hi = min(values), max(values)
        span = max(hi - lo, abs(hi) * 0.1, 1e-6)
        return max(0.0, lo - 0.05 * span) if lo >= 0 else lo - 0.05 * span, hi + 0.1 * span


class ThresholdBar(QFrame):
    """Threshold slider + the PASS/FAIL counts it gives, with a reset to the calibrated value."""

    def __init__(self, state: InspectionState, parent=None):
        super().__init__(parent)
        self.setObjectName("ThresholdBar")
        self.state = state
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setRange(0, SLIDER_STEPS)
        self.slider.setToolTip("Move left: stricter (more parts FAIL). Move right: more lenient.")
        self.value_label = QLabel()
        self.counts_label = QLabel()
        self.counts_label.setObjectName("Counts")
        self.counts_label.setTextFormat(Qt.RichText)
        self.reset_button = QPushButton("Calibrated")
        self.reset_button.setToolTip("Go back to the threshold calibrated at training time")
        self.reset_button.clicked.connect(lambda: state.set_threshold(state.calibrated))
        layout = QHBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 4)
        layout.addWidget(QLabel("Threshold"))
        layout.addWidget(self.slider, 1)
        layout.addWidget(self.value_label)
        layout.addWidget(self.reset_button)
        layout.addWidget(self.counts_label)
        self._range = (0.0, 1.0)
        self._syncing = False
        self.slider.valueChanged.connect(self._moved)
        self.slider.sliderReleased.connect(state.commit_threshold)
        state.threshold_changed.connect(self.sync)
        state.results_changed.connect(self.sync)
        state.model_changed.connect(lambda _m: self.sync())
        self.sync()

    def to_value(self, pos: int) -> float:
        lo, hi = self._range
        return lo + (hi - lo) * pos / SLIDER_STEPS

    def to_pos(self, value: float) -> int:
        lo, hi = self._range
        return int(round((value - lo) / max(hi - lo, 1e-12) * SLIDER_STEPS))

    def _moved(self, pos: int) -> None:
        if not self._syncing:
            self.state.set_threshold(self.to_value(pos))

    def sync(self, *_):
        st = self.state
        self.setEnabled(st.model is not None)
        self._range = st.score_range()
        self._syncing = True
        self.slider.setValue(max(0, min(SLIDER_STEPS, self.to_pos(st.threshold))))
        self._syncing = False
        self.value_label.setText(f"{st.threshold:.4g}  (calibrated {st.calibrated:.4g})" if st.model else "no model")
        c = st.counts()
        self.counts_label.setText(
            f"<b style='color:{PASS_COLOR.name()}'>PASS {c['pass']}</b> &nbsp; "
            f"<b style='color:{FAIL_COLOR.name()}'>FAIL {c['fail']}</b> &nbsp; of {c['total']}")


class ThresholdPlots(QWidget):
    """Score histogram of good vs defect with the threshold line (draggable), ROC with AUROC,
    and the confusion counts. Shown when the results carry labels."""

    def __init__(self, state: InspectionState, parent=None, vertical: bool = False,
                 empty_text: str = "No labels: the histogram, ROC curve and confusion counts need items "
                                   "whose label (good or defect) is known, e.g. the test split of an MVTec "
                                   "data set.", classes: tuple[str, str] = ("good", "defect")):
        super().__init__(parent)
        self.state = state
        self.classes = classes
        self.hist = pg.PlotWidget(title=f"Scores: {classes[0]} vs {classes[1]}")
        self.hist.setLabel("bottom", "anomaly score")
        self.hist.setLabel("left", "items")
        self.hist.addLegend(offset=(-10, 10), brush=pg.mkBrush(255, 255, 255, 210))
        self.line = pg.InfiniteLine(angle=90, movable=True, pen=pg.mkPen("#1d4f7c", width=2),
                                    # below the legend (top right), which hid the label of a threshold far right
                                    label="threshold", labelOpts={"position": 0.7, "color": "#1d4f7c"})
        self.hist.addItem(self.line)
        self.line.sigPositionChangeFinished.connect(lambda l: state.set_threshold(l.value()))
        self.line.sigPositionChangeFinished.connect(lambda _l: state.commit_threshold())
        self.roc = pg.PlotWidget(title="ROC")
        self.roc.setLabel("bottom", "false alarm rate (good parts failed)")
        self.roc.setLabel("left", "catch rate (defects failed)")
        self.roc.setXRange(0, 1)
        self.roc.setYRange(0, 1)
        self.roc.plot([0, 1], [0, 1], pen=pg.mkPen("#9aa3b0", style=Qt.DashLine))
        self.roc_curve = self.roc.plot([], [], pen=pg.mkPen("#2e5c8a", width=2))
        self.roc_point = pg.ScatterPlotItem(size=11, brush=pg.mkBrush("#c62828"))
        self.roc.addItem(self.roc_point)
        self.hist.setMinimumHeight(130 if vertical else 200)
        self.roc.setMinimumHeight(130 if vertical else 200)
        self.auroc_label = QLabel()
        self.auroc_label.setObjectName("AurocLabel")
        self.confusion = QLabel()
        self.confusion.setObjectName("Confusion")
        self.confusion.setTextFormat(Qt.RichText)
        self.empty = QLabel(empty_text)
        self.empty.setObjectName("Placeholder")
        self.empty.setWordWrap(True)
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        if vertical:
            for row, w in enumerate((self.hist, self.roc, self.auroc_label, self.confusion, self.empty)):
                grid.addWidget(w, row, 0)
        else:
            grid.addWidget(self.hist, 0, 0)
            grid.addWidget(self.roc, 0, 1)
            grid.addWidget(self.auroc_label, 1, 1)
            grid.addWidget(self.confusion, 1, 0)
            grid.addWidget(self.empty, 2, 0, 1, 2)
        self._bars: list = []
        self.stats: dict = {}
        state.results_changed.connect(self.refresh)
        state.threshold_changed.connect(self.update_threshold)
        state.model_changed.connect(lambda _m: self.refresh())
        self.refresh()

    def labels(self) -> list:
        return [r.get("label") for r in self.state.results]

    def refresh(self) -> None:
        for item in self._bars:
            self.hist.removeItem(item)
        self._bars = []
        st = self.state
        self.stats = S.threshold_stats(st.scores, self.labels(), st.threshold) if st.results else {"labelled": 0}
        hist = self.stats.get("hist")
        if hist:
            edges = np.array(hist["edges"])
            for name, key, brush in ((self.classes[0], "good", GOOD_BRUSH), (self.classes[1], "defect", DEFECT_BRUSH)):
                curve = pg.PlotDataItem(edges, np.array(hist[key]), stepMode="center", fillLevel=0,
                                        brush=brush, pen=pg.mkPen(brush[:3], width=1), name=name)
                self.hist.addItem(curve)
                self._bars.append(curve)
        roc = self.stats.get("roc")
        self.roc_curve.setData(roc["fpr"], roc["tpr"]) if roc else self.roc_curve.setData([], [])
        has = bool(self.stats.get("labelled"))
        self.empty.setVisible(not has)
        self.update_threshold(st.threshold)

    def update_threshold(self, value: float) -> None:
        self.line.blockSignals(True)
        self.line.setValue(value)
        self.line.blockSignals(False)
        st = self.state
        if not st.results or not self.stats.get("labelled"):
            self.auroc_label.setText("")
            self.confusion.setText("")
            self.roc_point.setData([], [])
            return
        s = S.threshold_stats(st.scores, self.labels(), value)
        self.stats.update({k: s[k] for k in ("confusion", "pass_rate_good", "catch_rate_defect", "f1") if k in s})
        c = s["confusion"]
        fpr = c["fp"] / max(c["fp"] + c["tn"], 1)
        tpr = c["tp"] / max(c["tp"] + c["fn"], 1)
        self.roc_point.setData([fpr], [tpr])
        auroc = s.get("auroc")
        self.auroc_label.setText(f"<b>AUROC {auroc:.3f}</b>" if auroc is not None else "AUROC needs good and defect items")

        def pct(v):
            return "—" if v is None else f"{100 * v:.0f} %"

        self.confusion.setText(
            "<table cellpadding='4'><tr><td></td><th>FAIL</th><th>PASS</th></tr>"
            f"<tr><th>defect</th><td style='color:{FAIL_COLOR.name()}'><b>{c['tp']}</b> caught</td>"
            f"<td>{c['fn']} missed</td></tr>"
            f"<tr><th>good</th><td>{c['fp']} false alarms</td>"
            f"<td style='color:{PASS_COLOR.name()}'><b>{c['tn']}</b> passed</td></tr></table>"
            f"Good parts passed {pct(s.get('pass_rate_good'))} · defects caught {pct(s.get('catch_rate_defect'))}"
            + (f" · F1 {s['f1']:.2f}" if s.get("f1") is not None else "")
            + (f"<br>Best F1 on these items: {s['f1_max']:.2f}, at threshold {s['f1_max_threshold']:.4g}"
               if s.get("f1_max") is not None and s["f1_max"] - s["f1"] > 0.005 else ""))


# -- images ---------------------------------------------------------------------------------------

def qimage_from_gray(arr: np.ndarray) -> QImage:
    arr = np.ascontiguousarray(arr.astype(np.uint8))
    h, w = arr.shape
    return QImage(arr.data, w, h, w, QImage.Format_Grayscale8).copy()


def qimage_from_rgb(arr: np.ndarray) -> QImage:
    arr = np.ascontiguousarray(arr.astype(np.uint8))
    h, w, _ = arr.shape
    return QImage(arr.data, w, h, 3 * w, QImage.Format_RGB888).copy()


def qimage_to_array(img: QImage, gray: bool = False) -> np.ndarray:
    img = img.convertToFormat(QImage.Format_Grayscale8 if gray else QImage.Format_RGB888)
    w, h, bpl = img.width(), img.height(), img.bytesPerLine()
    arr = np.frombuffer(img.constBits(), dtype=np.uint8, count=bpl * h).reshape(h, bpl)
    return (arr[:, :w] if gray else arr[:, :3 * w].reshape(h, w, 3)).copy()


def colormap_lut(name: str) -> np.ndarray:
    try:
        cmap = pg.colormap.get(name)
    except Exception:  # a map missing from this pyqtgraph: fall back to one it always has
        cmap = pg.colormap.get("viridis")
    return cmap.getLookupTable(0.0, 1.0, 256, alpha=False).astype(np.uint8)


def result_image(project, result: dict) -> QImage:
    """The inspected image at its own size (from the project or the file)."""
    if result.get("image_id"):
        img = QImage.fromData(project.image_bytes(result["image_id"]))
    else:
        img = QImage(str(result.get("item_path") or ""))
    if img.isNull():  # source gone: show the reconstruction's size at least
        img = QImage.fromData(project.image_bytes((result.get("meta") or {})["recon_image_id"]))
    return img


def thumbnail(project, result: dict, size: int = 128) -> QPixmap:
    img = None
    if result.get("image_id"):
        img = QImage.fromData(project.thumbnail_bytes(result["image_id"]))
    elif result.get("item_path") and Path(result["item_path"]).is_file():
        reader = QImageReader(str(result["item_path"]))
        s = reader.size()
        if s.isValid():
            reader.setScaledSize(s.scaled(size, size, Qt.KeepAspectRatio))
        img = reader.read()
    if img is None or img.isNull():
        return QPixmap()
    return QPixmap.fromImage(img.scaled(size, size, Qt.KeepAspectRatio, Qt.SmoothTransformation))


class ZoomView(QGraphicsView):
    zoomed = Signal(float)

    def __init__(self, title: str):
        super().__init__()
        self.setObjectName("ImageView")
        self.title = title
        self.setScene(QGraphicsScene(self))
        self.item = QGraphicsPixmapItem()
        self.item.setTransformationMode(Qt.SmoothTransformation)
        self.scene().addItem(self.item)
        self.setDragMode(QGraphicsView.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.AnchorUnderMouse)
        self.setRenderHint(QPainter.SmoothPixmapTransform)

    def wheelEvent(self, event):
        self.zoomed.emit(1.25 if event.angleDelta().y() > 0 else 0.8)


class SyncedViews(QWidget):
    """Original, reconstruction and heat-map overlay side by side; zoom and pan move all three."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.views = [ZoomView("Original"), ZoomView("Reconstruction"), ZoomView("Heat map")]
        layout = QGridLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for col, view in enumerate(self.views):
            title = QLabel(view.title)
            title.setAlignment(Qt.AlignCenter)
            title.setObjectName("ViewTitle")
            layout.addWidget(title, 0, col)
            layout.addWidget(view, 1, col)
            view.zoomed.connect(self.zoom)
            for bar_name in ("horizontalScrollBar", "verticalScrollBar"):
                getattr(view, bar_name)().valueChanged.connect(
                    lambda v, src=view, b=bar_name: self._sync_scroll(src, b, v))
        self.scale = 1.0
        self._fit = True
        self._syncing = False

    def _sync_scroll(self, src, bar_name, value):
        if self._syncing:
            return
        self._syncing = True
        for view in self.views:
            if view is not src:
                getattr(view, bar_name)().setValue(value)
        self._syncing = False

    def set_images(self, original: QImage | None, recon: QImage | None, overlay: QImage | None,
                   keep_view: bool = False) -> None:
        for view, img in zip(self.views, (original, recon, overlay)):
            view.item.setPixmap(QPixmap.fromImage(img) if img is not None else QPixmap())
            view.scene().setSceneRect(view.item.boundingRect())
        if not keep_view:
            self.fit()

    def fit(self) -> None:
        self._fit = True
        for view in self.views:
            view.fitInView(view.item, Qt.KeepAspectRatio)
        self.scale = self.views[0].transform().m11()

    def zoom(self, factor: float) -> None:
        self._fit = False
        self.scale = max(0.05, min(self.scale * factor, 40.0))
        for view in self.views:
            view.resetTransform()
            view.scale(self.scale, self.scale)

    def resizeEvent(self, event):
        super().resizeEvent(event)
        if self._fit:
            QTimer.singleShot(0, self.fit)


def overlay(original: QImage, amap: np.ndarray, vmax: float, opacity: float, lut: np.ndarray) -> QImage:
    """Blend the colour-mapped anomaly map (values 0..vmax) over the image; opacity grows with the
    value so normal areas stay visible."""
    w, h = original.width(), original.height()
    small = qimage_from_gray((np.clip(amap / max(vmax, 1e-12), 0, 1) * 255).astype(np.uint8))
    level = qimage_to_array(small.scaled(w, h, Qt.IgnoreAspectRatio, Qt.SmoothTransformation), gray=True)
    base = qimage_to_array(original).astype(np.float32)
    color = lut[level].astype(np.float32)
    alpha = (opacity * np.clip(level.astype(np.float32) / 255.0 * 1.6 + 0.15, 0, 1))[..., None]
    return qimage_from_rgb(base * (1 - alpha) + color * alpha)


class ColorScale(QLabel):
    """The colour bar of the heat map with its value range (0, threshold, top)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumSize(120, 34)
        self.setToolTip("Heat-map colours: the tick marks the threshold")
        self.lut = colormap_lut("inferno")
        self.vmax = 1.0
        self.threshold = 0.5

    def set_scale(self, lut, vmax, threshold):
        self.lut, self.vmax, self.threshold = lut, vmax, threshold
        self.update()

    def paintEvent(self, event):
        p = QPainter(self)
        w, h = self.width(), self.height()
        bar = np.repeat(self.lut[None, :, :], 12, axis=0)
        p.drawImage(QRectF(0, 0, w, 12), qimage_from_rgb(bar))
        p.setPen(QPen(QColor("#2b303b")))
        f = QFont(self.font())
        f.setPointSizeF(8)
        p.setFont(f)
        p.drawText(QRectF(0, 14, 60, 18), Qt.AlignLeft, "0")
        p.drawText(QRectF(w - 40, 14, 40, 18), Qt.AlignRight, f"{self.vmax:.3g}")
        if self.vmax > 0 and 0 < self.threshold < self.vmax:
            x = w * self.threshold / self.vmax
            p.setPen(QPen(QColor("#1d4f7c"), 2))
            p.drawLine(int(x), 0, int(x), 14)
            p.drawText(QRectF(x - 25, 14, 50, 18), Qt.AlignCenter, f"{self.threshold:.3g}")
        p.end()


# -- the result grid ------------------------------------------------------------------------------

ROLE_INDEX = Qt.UserRole + 1


class ResultDelegate(QStyledItemDelegate):
    """Paints a result: thumbnail, name, score and a PASS/FAIL badge computed at paint time from
    the state's threshold, so a threshold move repaints verdicts without touching the model."""

    def __init__(self, state: InspectionState, view, parent=None):
        super().__init__(parent)
        self.state, self.view = state, view
        self.cache: dict[int, QPixmap] = {}

    def grid_mode(self) -> bool:
        return self.view.viewMode() == self.view.ViewMode.IconMode

    def sizeHint(self, option, index):
        return QSize(150, 178) if self.grid_mode() else QSize(300, 58)

    def pixmap(self, i: int, size: int) -> QPixmap:
        if i not in self.cache:
            self.cache[i] = thumbnail(self.state.project, self.state.results[i], 128)
        pm = self.cache[i]
        return pm.scaled(size, size, Qt.KeepAspectRatio, Qt.SmoothTransformation) if not pm.isNull() else pm

    def paint(self, painter: QPainter, option, index):
        i = index.data(ROLE_INDEX)
        if i is None or i >= len(self.state.results):
            return
        result = self.state.results[i]
        verdict = self.state.verdict(i)
        r = option.rect.adjusted(3, 3, -3, -3)
        painter.save()
        selected = bool(option.state & QStyle.State_Selected)
        painter.setPen(QPen(QColor("#2e5c8a") if selected else QColor("#d5d9e0"), 2 if selected else 1))
        painter.setBrush(QBrush(QColor("#e6eef8") if selected else QColor("#ffffff")))
        painter.drawRoundedRect(r, 5, 5)
        name = (result.get("meta") or {}).get("name") or Path(str(result.get("item_path"))).name
        label = result.get("label") or ""
        grid = self.grid_mode()
        if grid:
            pm = self.pixmap(i, 128)
            pic = QRectF(r.x() + (r.width() - pm.width()) / 2, r.y() + 4, pm.width(), pm.height())
            badge = QRectF(r.right() - 48, r.y() + 6, 44, 18)
            text = QRectF(r.x() + 4, r.bottom() - 38, r.width() - 8, 36)
        else:
            pm = self.pixmap(i, r.height() - 8)
            pic = QRectF(r.x() + 4, r.y() + 4, pm.width(), pm.height())
            badge = QRectF(r.right() - 52, r.y() + (r.height() - 18) / 2, 46, 18)
            text = QRectF(r.x() + r.height() + 6, r.y() + 4, r.width() - r.height() - 64, r.height() - 8)
        if not pm.isNull():
            painter.drawPixmap(pic.toRect(), pm)
        color = FAIL_COLOR if verdict == "FAIL" else PASS_COLOR
        painter.setPen(Qt.NoPen)
        painter.setBrush(color)
        painter.drawRoundedRect(badge, 4, 4)
        f = QFont(option.font)
        f.setBold(True)
        f.setPointSizeF(8)
        painter.setFont(f)
        painter.setPen(QColor("white"))
        painter.drawText(badge, Qt.AlignCenter, verdict)
        f.setBold(False)
        painter.setFont(f)
        painter.setPen(QColor("#2b303b"))
        fm = painter.fontMetrics()
        line1 = fm.elidedText(name, Qt.ElideMiddle, int(text.width()))
        line2 = f"score {result['score']:.4g}" + (f" · {label}" if label else "")
        painter.drawText(text, Qt.AlignLeft | Qt.AlignTop, line1 + "\n" + line2)
        painter.restore()


def pick_combo(combo: QComboBox, data) -> None:
    i = combo.findData(data)
    if i >= 0:
        combo.setCurrentIndex(i)


def run_job(owner, fn, params: dict, kind: str, title: str, done=None, failed=None):
    """Submit a job through the window's QtJobs; `done(handle)` / `failed(handle)` on the GUI thread."""
    jobs = owner.state.jobs
    handle = jobs.submit(fn, params, kind=kind, title=title)

    def on_finished(h):
        if h is handle:
            cleanup()
            if done:
                done(h)

    def on_other(h):
        if h is handle:
            cleanup()
            if h.status == "failed":
                if failed:
                    failed(h)
                elif h.error is not None:
                    ui.error_box(owner, h.error, title)
            elif failed:
                failed(h)

    def cleanup():
        for sig, slot in ((jobs.finished, on_finished), (jobs.failed, on_other), (jobs.cancelled, on_other)):
            try:
                sig.disconnect(slot)
            except (RuntimeError, TypeError):
                pass

    jobs.finished.connect(on_finished)
    jobs.failed.connect(on_other)
    jobs.cancelled.connect(on_other)
    return handle


def error(owner, exc: AppError, title: str = "Inspection") -> None:
    ui.error_box(owner, exc, title)
