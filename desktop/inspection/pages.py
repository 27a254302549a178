"""The steps of the inspection workflow, one page each: Data, Train, Inspect, Threshold, Report,
Audit trail. Every long piece of work is a job (import, training, inspection, report data)."""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QImage, QPixmap, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (QAbstractItemView, QButtonGroup, QCheckBox, QComboBox, QFileDialog, QGridLayout,
                               QGroupBox, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QListView,
                               QListWidget, QPlainTextEdit, QProgressBar, QPushButton, QRadioButton,
                               QSlider, QSpinBox, QSplitter, QTableView, QTextBrowser, QVBoxLayout, QWidget)

from core.errors import AppError
from core.inspect import session as S
from core.inspect.maps import PART_TYPE_TEXT, PART_TYPES, unsure_choice_note
from desktop import ui
from desktop.inspection.widgets import (ROLE_INDEX, ColorScale, InspectionState, ResultDelegate, SyncedViews,
                                        ThresholdBar, ThresholdPlots, colormap_lut, error, overlay, pick_combo,
                                        qimage_from_gray, result_image, run_job)

ITEM_ROLE = Qt.UserRole + 2
CHOOSE_MAPS_TIP = ("First try every combination of the model's anomaly maps on those images and keep the one "
                   "that ranks them best (needs 5 good and 5 defective images)")
MAP_TEXT = {"own": "VAE", "features": "VAE features", "context": "context", "context_features": "context features"}


def map_names(use) -> str:
    """The anomaly maps a model sums, as an operator reads them."""
    return " + ".join(MAP_TEXT.get(name, name) for name in use)


def heading(text: str, help_text: str = "") -> QWidget:
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 4)
    title = QLabel(text)
    title.setObjectName("StepTitle")
    layout.addWidget(title)
    if help_text:
        sub = QLabel(help_text)
        sub.setObjectName("Placeholder")
        sub.setWordWrap(True)
        layout.addWidget(sub)
    return box


def compact(combo: QComboBox, chars: int = 14) -> QComboBox:
    """Long names must not widen the page: the combo shows `chars` characters and elides."""
    combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(chars)
    return combo


def dataset_combo(state: InspectionState, kind: str = "images") -> QComboBox:
    combo = compact(QComboBox(), 16)
    fill_datasets(combo, state, kind)
    return combo


def fill_datasets(combo: QComboBox, state: InspectionState, kind: str = "images") -> None:
    current = combo.currentData()
    combo.blockSignals(True)
    combo.clear()
    for ds in state.project.list_datasets():
        if ds["kind"] == kind:
            combo.addItem(ui.icon("dataset"), f"{ds['name']} ({ds['item_count'] if kind == 'images' else (ds.get('meta') or {}).get('rows', '?')})", ds["id"])
    if current is not None:
        pick_combo(combo, current)
    combo.blockSignals(False)
    if combo.currentData() != current:
        combo.currentIndexChanged.emit(combo.currentIndex())


def fill_models(combo: QComboBox, state: InspectionState) -> None:
    combo.blockSignals(True)
    combo.clear()
    for m in state.models():
        metrics = (m.get("config") or {}).get("metrics") or {}
        auroc = metrics.get("image_auroc", metrics.get("roc_auc"))
        combo.addItem(ui.icon("model"), m["name"] + (f"  (AUROC {auroc:.2f})" if auroc is not None else ""), m["id"])
    if state.model is not None:
        pick_combo(combo, state.model["id"])
    combo.blockSignals(False)


def square_icon(img: QImage, size: int, defect: bool) -> QPixmap:
    """The thumbnail centred on a square tile (so the grid lines up), framed red for defects."""
    from PySide6.QtGui import QColor, QPainter, QPen

    pm = QPixmap(size, size)
    pm.fill(QColor("#eceef2"))
    scaled = img.scaled(size - 6, size - 6, Qt.KeepAspectRatio, Qt.SmoothTransformation)
    p = QPainter(pm)
    p.drawImage((size - scaled.width()) // 2, (size - scaled.height()) // 2, scaled)
    if defect:
        p.setPen(QPen(QColor("#c62828"), 4))
        p.drawRect(2, 2, size - 4, size - 4)
    p.end()
    return pm


# == 1. Data ========================================================================================

class DataPage(QWidget):
    imported = Signal(int)

    def __init__(self, state: InspectionState, parent=None):
        super().__init__(parent)
        self.state = state
        self.last_import: dict | None = None
        self.storage = QComboBox()
        self.storage.addItem("Copy into the project", "copied")
        self.storage.addItem("Reference in place", "referenced")
        self.storage.setToolTip("Copy: the project holds the images. Reference: the project remembers where they "
                                "are (path, size and checksum), for large data sets.")
        self.import_button = QPushButton(ui.icon("import"), "Import folder…")
        self.import_button.setToolTip("A folder in the MVTec layout (train/good, test/<type>) or with good/ and "
                                      "defect sub-folders")
        self.import_button.clicked.connect(lambda: self.import_folder())
        self.csv_button = QPushButton(ui.icon("import"), "Import CSV…")
        self.csv_button.clicked.connect(lambda: self.import_csv())
        self.datasets = dataset_combo(state)
        self.datasets.currentIndexChanged.connect(lambda _i: self.show_dataset())
        self.filter = QComboBox()
        for text, key in (("All items", None), ("Training (train)", "train"), ("Test", "test"),
                          ("Good", "good"), ("Defect", "defect")):
            self.filter.addItem(text, key)
        self.filter.currentIndexChanged.connect(lambda _i: self.apply_filter())
        self.summary = QLabel()
        self.summary.setObjectName("Summary")
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.RichText)
        self.grid = QListView()
        self.grid.setObjectName("DataGrid")
        self.grid.setViewMode(QListView.IconMode)
        self.grid.setIconSize(QSize(112, 112))
        self.grid.setGridSize(QSize(140, 158))
        self.grid.setTextElideMode(Qt.ElideMiddle)
        self.grid.setResizeMode(QListView.Adjust)
        self.grid.setMovement(QListView.Static)
        self.grid.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.grid.setWordWrap(True)
        self.model = QStandardItemModel(self)
        self.grid.setModel(self.model)
        self.good_button = QPushButton("Mark good")
        self.good_button.clicked.connect(lambda: self.mark("good"))
        self.defect_button = QPushButton("Mark defect")
        self.defect_button.clicked.connect(lambda: self.mark(S.DEFECT))
        self.corrupt = QListWidget()
        self.corrupt.setObjectName("CorruptList")
        self.corrupt.setMaximumHeight(90)
        self.corrupt_label = QLabel("Files that could not be read")
        top = QHBoxLayout()
        top.addWidget(self.import_button)
        top.addWidget(self.storage)
        top.addWidget(self.csv_button)
        top.addStretch(1)
        top.addWidget(QLabel("Data set"))
        top.addWidget(self.datasets)
        bar = QHBoxLayout()
        bar.addWidget(self.filter)
        bar.addStretch(1)
        bar.addWidget(QLabel("Selected items:"))
        bar.addWidget(self.good_button)
        bar.addWidget(self.defect_button)
        layout = QVBoxLayout(self)
        layout.addWidget(heading("1 · Data", "Import images of good parts (and, if you have them, of defects). "
                                 "Training learns from the good images of the train split; labelled test "
                                 "images measure how well a model works."))
        layout.addLayout(top)
        layout.addWidget(self.summary)
        layout.addLayout(bar)
        layout.addWidget(self.grid, 1)
        layout.addWidget(self.corrupt_label)
        layout.addWidget(self.corrupt)
        self._pending: list[QStandardItem] = []
        self._thumb_timer = QTimer(self)
        self._thumb_timer.setInterval(0)
        self._thumb_timer.timeout.connect(self._load_thumbs)
        self.show_dataset()

    def dataset_id(self) -> int | None:
        return self.datasets.currentData()

    def import_folder(self, root: str | None = None, storage: str | None = None, name: str | None = None):
        if root is None:
            root = QFileDialog.getExistingDirectory(self, "Import an image data set folder", str(Path.home()))
            if not root:
                return None
        if storage is not None:
            pick_combo(self.storage, storage)
        params = {"root": str(root), "storage": self.storage.currentData(), "name": name}
        self.import_button.setEnabled(False)
        return run_job(self, S.import_job, params, "inspect.import", f"Import data set {Path(root).name}",
                       done=self._imported, failed=lambda h: self._import_failed(h))

    def import_csv(self, path: str | None = None, name: str | None = None):
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Import a table (CSV)", str(Path.home()),
                                                  "CSV tables (*.csv *.tsv *.txt);;All files (*)")
            if not path:
                return None
        return run_job(self, S.import_job, {"csv": str(path), "name": name}, "inspect.import",
                       f"Import table {Path(path).name}", done=self._imported,
                       failed=lambda h: self._import_failed(h))

    def _import_failed(self, handle):
        self.import_button.setEnabled(True)
        if handle.status == "failed" and handle.error is not None:
            error(self, handle.error, "Import failed")

    def _imported(self, handle):
        self.import_button.setEnabled(True)
        self.last_import = handle.result
        fill_datasets(self.datasets, self.state, "images")
        ds = self.state.project.get_dataset(handle.result["dataset_id"])
        if ds["kind"] == "images":
            pick_combo(self.datasets, ds["id"])
            self.show_dataset()
        self.imported.emit(ds["id"])

    def show_dataset(self) -> None:
        self.model.clear()
        self._pending = []
        self.corrupt.clear()
        ds_id = self.dataset_id()
        if ds_id is None:
            self.summary.setText("No image data set yet. Import a folder to begin.")
            self.corrupt_label.hide()
            self.corrupt.hide()
            return
        summary = S.dataset_summary(self.state.project, ds_id)
        c = summary["counts"]
        parts = [f"<b>{summary['total']}</b> images"]
        for split in ("train", "test"):
            g, d = c.get((split, "good"), 0), c.get((split, "defect"), 0)
            if g or d:
                parts.append(f"{split}: <b>{g}</b> good, <b>{d}</b> defect")
        sizes = summary["sizes"]
        dims = [tuple(int(v) for v in k.split("×")) for k in sizes if "?" not in k]
        if dims:
            ws, hs = [d[0] for d in dims], [d[1] for d in dims]
            size_text = (f"all {dims[0][0]}×{dims[0][1]} px" if len(dims) == 1 else
                         f"sizes {min(ws)}–{max(ws)} × {min(hs)}–{max(hs)} px ({len(dims)} different)")
            parts.append(size_text)
        parts.append(f"{'copied into the project' if summary['storage'] == 'copied' else 'referenced in place'}")
        self.summary.setText(" · ".join(parts))
        for path, reason in summary["skipped"]:
            self.corrupt.addItem(f"{Path(path).name}: {reason}")
        self.corrupt_label.setText(f"Files that could not be read ({len(summary['skipped'])})")
        self.corrupt_label.setVisible(bool(summary["skipped"]))
        self.corrupt.setVisible(bool(summary["skipped"]))
        for item in self.state.project.dataset_items(ds_id):
            meta = item.get("meta") or {}
            label = item["label"] or "good"
            text = f"{meta.get('name', '')}\n{item['split']} · {label}"
            entry = QStandardItem(text)
            entry.setEditable(False)
            entry.setData(item, ITEM_ROLE)
            entry.setToolTip(f"{meta.get('source', item.get('path'))}\n{meta.get('width')}×{meta.get('height')} px")
            entry.setForeground(Qt.darkRed if label != "good" else Qt.black)
            self.model.appendRow(entry)
            self._pending.append(entry)
        self.apply_filter()
        self._thumb_timer.start()

    def _load_thumbs(self) -> None:
        """A few thumbnails per event-loop turn, so a big data set never freezes the window."""
        for _ in range(24):
            if not self._pending or self.state.project.closed:
                self._thumb_timer.stop()
                return
            entry = self._pending.pop(0)
            item = entry.data(ITEM_ROLE)
            if item.get("image_id"):
                img = QImage.fromData(self.state.project.thumbnail_bytes(item["image_id"]))
            else:
                from PySide6.QtGui import QImageReader

                reader = QImageReader(item.get("path") or "")
                if reader.size().isValid():
                    reader.setScaledSize(reader.size().scaled(112, 112, Qt.KeepAspectRatio))
                img = reader.read()
            if not img.isNull():
                entry.setIcon(square_icon(img, 112, (entry.data(ITEM_ROLE)["label"] or "good") != "good"))

    def apply_filter(self) -> None:
        key = self.filter.currentData()
        for row in range(self.model.rowCount()):
            item = self.model.item(row).data(ITEM_ROLE)
            label = "good" if (item["label"] or "good") == "good" else "defect"
            hide = key is not None and key not in (item["split"], label)
            self.grid.setRowHidden(row, hide)

    def selected_items(self) -> list[dict]:
        return [self.model.itemFromIndex(i).data(ITEM_ROLE) for i in self.grid.selectionModel().selectedIndexes()]

    def mark(self, label: str) -> int:
        items = self.selected_items()
        if not items or self.state.project.read_only:
            return 0
        rows = [i.row() for i in self.grid.selectionModel().selectedIndexes()]
        for item in items:
            if (item["label"] or "good") != label:
                S.set_item_label(self.state.project, item["id"], label)
        self.show_dataset()
        for row in rows:
            self.grid.selectionModel().select(self.model.index(row, 0), self.grid.selectionModel().SelectionFlag.Select)
        return len(items)

    def refresh(self, tables: set) -> None:
        if "datasets" in tables:
            fill_datasets(self.datasets, self.state, "images")


# == 2. Train =======================================================================================

class TrainPage(QWidget):
    trained = Signal(int)

    def __init__(self, state: InspectionState, parent=None):
        super().__init__(parent)
        self.state = state
        self.handle = None
        self.datasets = dataset_combo(state)
        self.part_type = QComboBox()
        for key in PART_TYPES:
            self.part_type.addItem(key.capitalize(), key)
            self.part_type.setItemData(self.part_type.count() - 1, PART_TYPE_TEXT[key].capitalize(), Qt.ToolTipRole)
        self.part_type.setToolTip("What the parts look like sets which anomaly maps score them: "
                                  + "; ".join(f"{k.capitalize()}: {t}" for k, t in PART_TYPE_TEXT.items()) + ".")
        self.datasets.currentIndexChanged.connect(lambda _i: self._dataset_changed())
        self._dataset_changed()
        self.presets = QButtonGroup(self)
        preset_box = QHBoxLayout()
        for i, key in enumerate(S.PRESETS):
            button = QRadioButton(key.capitalize())
            button.setToolTip(S.PRESET_TEXT[key])
            button.setProperty("preset", key)
            self.presets.addButton(button, i)
            preset_box.addWidget(button)
            if key == "fast":
                button.setChecked(True)
        self.preset_text = QLabel(S.PRESET_TEXT["fast"])
        self.preset_text.setObjectName("Placeholder")
        self.preset_text.setWordWrap(True)
        self.presets.idToggled.connect(lambda _i, on: on and self._preset_changed())
        preset_box.addWidget(self.preset_text, 1)
        self.advanced_button = QPushButton("Advanced settings ▸")
        self.advanced_button.setCheckable(True)
        self.advanced_button.toggled.connect(self._toggle_advanced)
        self.advanced = QGroupBox("Advanced settings")
        form = QGridLayout(self.advanced)
        self.image_size = QComboBox()
        for s in (64, 128, 192, 256, 384, 512):
            self.image_size.addItem(f"{s} px", s)
        self.stop_by = QComboBox()
        self.stop_by.addItem("Time budget (seconds)", "time")
        self.stop_by.addItem("Epochs", "epochs")
        self.budget = QSpinBox()
        self.budget.setRange(1, 36000)
        self.latent = QSpinBox()
        self.latent.setRange(2, 256)
        self.flips = QCheckBox("Flips (the part may appear mirrored)")
        self.rot90 = QCheckBox("90° rotations (the part may appear turned)")
        self.flips.setText("Flips")
        self.flips.setToolTip("The part may appear mirrored")
        self.rot90.setText("90° rotations")
        self.rot90.setToolTip("The part may appear turned by 90°")
        # Two compact rows, so the loss curve and reconstructions stay in view.
        form.addWidget(QLabel("Image size"), 0, 0)
        form.addWidget(self.image_size, 0, 1)
        form.addWidget(QLabel("Stop after"), 0, 2)
        form.addWidget(self.stop_by, 0, 3)
        form.addWidget(self.budget, 0, 4)
        form.addWidget(QLabel("Latent size"), 1, 0)
        form.addWidget(self.latent, 1, 1)
        form.addWidget(QLabel("Augmentation"), 1, 2)
        form.addWidget(self.flips, 1, 3)
        form.addWidget(self.rot90, 1, 4)
        form.setColumnStretch(5, 1)
        self.advanced.hide()
        self.name = QLineEdit()
        self.name.setPlaceholderText("Model name (optional)")
        self.start_button = QPushButton(ui.icon("run"), "Start training")
        self.start_button.setObjectName("PrimaryButton")
        self.start_button.clicked.connect(lambda: self.start())
        self.cancel_button = QPushButton(ui.icon("cancel"), "Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.resume_button = QPushButton(ui.icon("run"), "Resume")
        self.resume_button.clicked.connect(lambda: self.resume())
        self.progress = QProgressBar()
        self.eta = QLabel("")
        self.loss_plot = pg.PlotWidget(title="Training loss")
        self.loss_plot.setLabel("bottom", "step")
        self.loss_plot.setLabel("left", "loss")
        self.loss_curve = self.loss_plot.plot([], [], pen=pg.mkPen("#2e5c8a", width=2))
        self.recon_box = QGroupBox("Live reconstructions (top: original, bottom: reconstruction)")
        self.recon_grid = QHBoxLayout(self.recon_box)
        self.recon_labels = []
        for _ in range(3):
            pair = QVBoxLayout()
            a, b = QLabel(), QLabel()
            for lab in (a, b):
                lab.setFixedSize(104, 104)
                lab.setAlignment(Qt.AlignCenter)
                lab.setObjectName("ReconCell")
            pair.addWidget(a)
            pair.addWidget(b)
            self.recon_grid.addLayout(pair)
            self.recon_labels.append((a, b))
        self.result = QLabel("")
        self.result.setObjectName("Summary")
        self.result.setWordWrap(True)
        self.result.setTextFormat(Qt.RichText)
        self.refresh_resume()
        top = QHBoxLayout()
        top.addWidget(QLabel("Data set"))
        top.addWidget(self.datasets)
        top.addWidget(QLabel("Parts"))
        top.addWidget(self.part_type)
        top.addWidget(QLabel("Preset"))
        top.addLayout(preset_box, 1)
        run = QHBoxLayout()
        run.addWidget(self.advanced_button)
        run.addWidget(self.name, 1)
        run.addWidget(self.start_button)
        run.addWidget(self.cancel_button)
        run.addWidget(self.resume_button)
        prog = QHBoxLayout()
        prog.addWidget(self.progress, 1)
        prog.addWidget(self.eta)
        lower = QHBoxLayout()
        lower.addWidget(self.loss_plot, 1)
        lower.addWidget(self.recon_box)
        layout = QVBoxLayout(self)
        layout.addWidget(heading("2 · Train", "Pick a data set, what its parts look like (Parts: patterned, "
                                 "textured or general) and a preset. Training runs in the background; "
                                 "you can keep working or cancel it. The model is saved in the project."))
        layout.addLayout(top)
        layout.addLayout(run)
        layout.addWidget(self.advanced)
        layout.addLayout(prog)
        layout.addLayout(lower, 1)
        layout.addWidget(self.result)
        self._preset_changed()

    def preset(self) -> str:
        return self.presets.checkedButton().property("preset")

    def _dataset_changed(self) -> None:
        known = S.last_part_type(self.state.project, self.datasets.currentData())
        if known in PART_TYPES:
            pick_combo(self.part_type, known)

    def set_preset(self, key: str) -> None:
        for b in self.presets.buttons():
            if b.property("preset") == key:
                b.setChecked(True)

    def _preset_changed(self) -> None:
        key = self.preset()
        p = S.PRESETS[key]
        self.preset_text.setText(S.PRESET_TEXT[key])
        pick_combo(self.image_size, p["image_size"])
        self.stop_by.setCurrentIndex(0)
        self.budget.setValue(int(p["time_budget"]))
        self.latent.setValue(int(p["latent"]))
        self.flips.setChecked(bool(p["flips"]))
        self.rot90.setChecked(bool(p["rot90"]))

    def _toggle_advanced(self, on: bool) -> None:
        self.advanced.setVisible(on)
        self.advanced_button.setText("Advanced settings ▾" if on else "Advanced settings ▸")

    def overrides(self) -> dict:
        size = int(self.image_size.currentData())
        out = {"image_size": size, "latent": self.latent.value(), "flips": self.flips.isChecked(),
               "rot90": self.rot90.isChecked(), "patch": min(64, size), "part_type": self.part_type.currentData()}
        if self.stop_by.currentData() == "epochs":
            out.update(epochs=self.budget.value(), time_budget=None)
        else:
            out.update(time_budget=self.budget.value(), epochs=None)
        return out

    def start(self, extra: dict | None = None):
        ds_id = self.datasets.currentData()
        if ds_id is None:
            error(self, AppError("There is no data set to train on.", "Import one in step 1 · Data."))
            return None
        overrides = {**self.overrides(), **(extra or {})}
        params = S.new_training(self.state.project.get_dataset(ds_id), self.preset(), overrides,
                                self.name.text().strip() or None)
        return self._submit(params, f"Train inspector on {self.datasets.currentText()}")

    def resume(self):
        """Go on with the latest training that stopped early, from its last checkpoint."""
        found = S.resumable_training(self.state.project)
        if found is None:
            return None
        return self._submit(dict(found["params"]), f"Resume training {found['params'].get('name', '')}")

    def refresh_resume(self) -> None:
        found = S.resumable_training(self.state.project) if not self.state.project.closed else None
        running = self.handle is not None and self.handle.status in ("queued", "running")
        self.resume_button.setVisible(found is not None and not running)
        if found is not None:
            self.resume_button.setToolTip(f"{found['params'].get('name')}: stopped at step {found['step']}; "
                                          "training goes on from there")

    def _submit(self, params: dict, title: str):
        self.loss_curve.setData([], [])
        for a, b in self.recon_labels:
            a.clear(), b.clear()
        self.result.setText("")
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)
        self.handle = run_job(self, S.train_job, params, "inspect.train", title,
                              done=self._finished, failed=self._stopped)
        self.state.jobs.progress.connect(self._progress)
        self.refresh_resume()
        return self.handle

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.cancel_button.setEnabled(False)
            self.eta.setText("Cancelling…")

    def _progress(self, handle, step, total, message, preview) -> None:
        if handle is not self.handle:
            return
        if total:
            self.progress.setRange(0, total)
            self.progress.setValue(min(step, total))
        if not isinstance(preview, dict):
            return
        losses = preview.get("losses") or []
        if losses:
            xs, ys = zip(*losses)
            self.loss_curve.setData(list(xs), list(ys))
        if preview.get("eta") is not None:
            self.eta.setText(f"ETA {preview['eta'] // 60}:{preview['eta'] % 60:02d} · {message.split('·')[0].strip()}")
        for (a, b), pair in zip(self.recon_labels, preview.get("recons") or []):
            for lab, arr in zip((a, b), pair):
                lab.setPixmap(QPixmap.fromImage(qimage_from_gray(arr)).scaled(104, 104, Qt.KeepAspectRatio,
                                                                              Qt.SmoothTransformation))

    def _done_ui(self) -> None:
        try:
            self.state.jobs.progress.disconnect(self._progress)
        except (RuntimeError, TypeError):
            pass
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setRange(0, 1)
        self.refresh_resume()

    def _finished(self, handle) -> None:
        # The last reconstructions can come in reports the runner throttled away.
        self._progress(handle, handle.step, handle.total, handle.message, handle.last_preview)
        self._done_ui()
        self.progress.setValue(1)
        r = handle.result
        m = r.get("metrics") or {}

        def f(v, pct=False):
            return "—" if v is None else (f"{100 * v:.0f} %" if pct else f"{v:.3f}")

        self.eta.setText(f"Finished in {r['train_seconds']:.0f} s")
        text = (f"Model <b>{r['name']}</b> saved in the project ({r['part_type']} parts, {r['steps']} steps, "
                f"threshold {r['threshold']:.4g}).")
        if m:
            text += (f"<br>On the labelled test images: image AUROC <b>{f(m.get('image_auroc'))}</b>, pixel AUROC "
                     f"{f(m.get('pixel_auroc'))}, good parts passed {f(m.get('pass_rate_good'), True)}, "
                     f"defects caught {f(m.get('catch_rate_defect'), True)}.")
        if len(r.get("views") or []) > 1:
            text += (f"<br>The good images come in {len(r['views'])} shapes, each judged against good parts of "
                     f"its own shape: {'; '.join(r['views'])}.")
        self.result.setText(text)
        self.trained.emit(r["model_id"])

    def _stopped(self, handle) -> None:
        self._done_ui()
        if handle.status == "cancelled":
            self.eta.setText("Cancelled — nothing was registered" + (
                "; Resume goes on from the last checkpoint." if self.resume_button.isVisible() else "."))
        elif handle.error is not None:
            self.eta.setText("Failed")
            error(self, handle.error, "Training failed")

    def refresh(self, tables: set) -> None:
        if "datasets" in tables:
            fill_datasets(self.datasets, self.state, "images")


# == 3. Inspect =====================================================================================

class InspectPage(QWidget):
    inspected = Signal(int)

    def __init__(self, state: InspectionState, parent=None):
        super().__init__(parent)
        self.state = state
        self.handle = None
        self.setAcceptDrops(True)
        self.models = compact(QComboBox(), 18)
        self.models.currentIndexChanged.connect(self._model_picked)
        self.source = compact(QComboBox(), 14)
        self.folder_button = QPushButton(ui.icon("open"), "Folder…")
        self.folder_button.clicked.connect(lambda: self.inspect_folder())
        self.inspect_button = QPushButton(ui.icon("run"), "Inspect")
        self.inspect_button.setObjectName("PrimaryButton")
        self.inspect_button.clicked.connect(lambda: self.inspect())
        self.cancel_button = QPushButton(ui.icon("cancel"), "Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(lambda: self.handle and self.handle.cancel())
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(120)
        self.progress.hide()  # shown while an inspection runs
        self.bar = ThresholdBar(state)
        self.list = QListView()
        self.list.setObjectName("ResultGrid")
        self.list.setViewMode(QListView.IconMode)
        self.list.setResizeMode(QListView.Adjust)
        self.list.setMovement(QListView.Static)
        self.list.setUniformItemSizes(True)
        self.list.setSpacing(2)
        self.list_model = QStandardItemModel(self)
        self.list.setModel(self.list_model)
        self.delegate = ResultDelegate(state, self.list, self)
        self.list.setItemDelegate(self.delegate)
        self.list.selectionModel().currentChanged.connect(lambda cur, _p: self.show_result(cur.data(ROLE_INDEX)))
        self.grid_toggle = QPushButton("List")
        self.grid_toggle.setCheckable(True)
        self.grid_toggle.toggled.connect(self.set_list_mode)
        self.show_filter = QComboBox()
        self.show_filter.addItem("All", None)
        self.show_filter.addItem("FAIL only", "FAIL")
        self.show_filter.addItem("PASS only", "PASS")
        self.show_filter.currentIndexChanged.connect(lambda _i: self.apply_filter())
        self.sort = QComboBox()
        self.sort.addItem("In order", "order")
        self.sort.addItem("Score ↓", "score")
        self.sort.setToolTip("Highest score first")
        self.sort.currentIndexChanged.connect(lambda _i: self.fill())
        self.views = SyncedViews()
        self.opacity = QSlider(Qt.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(60)
        self.opacity.setMaximumWidth(160)
        self.opacity.setMinimumWidth(80)
        self.opacity.valueChanged.connect(lambda _v: self.redraw_overlay())
        self.cmap = QComboBox()
        for name in ("inferno", "viridis", "turbo", "plasma", "magma"):
            self.cmap.addItem(name, name)
        self.cmap.currentIndexChanged.connect(lambda _i: self.redraw_overlay())
        self.scale_mode = QComboBox()
        self.scale_mode.addItem("0 – 2× threshold", "threshold")
        self.scale_mode.addItem("0 – image max", "max")
        self.scale_mode.setToolTip("Colour scale of the heat map")
        self.scale_mode.currentIndexChanged.connect(lambda _i: self.redraw_overlay())
        self.color_scale = ColorScale()
        self.fit_button = QPushButton(ui.icon("fit"), "Fit")
        self.fit_button.clicked.connect(self.views.fit)
        self.detail = QLabel("")
        self.detail.setObjectName("Summary")
        self.detail.setWordWrap(True)
        self.detail.setMinimumWidth(120)
        self.detail.setTextFormat(Qt.RichText)
        self.confirm_button = QPushButton("Confirm good")
        self.confirm_button.setToolTip("A false alarm: this part is good. Add it to the training data for the next retrain")
        self.confirm_button.clicked.connect(lambda: self.confirm_good())
        self.prev_button = QPushButton("◀")
        self.prev_button.clicked.connect(lambda: self.step(-1))
        self.next_button = QPushButton("▶")
        self.next_button.clicked.connect(lambda: self.step(1))
        self.next_fail_button = QPushButton("Next FAIL ▶▶")
        self.next_fail_button.clicked.connect(lambda: self.step(1, fail_only=True))
        self.prev_button.setToolTip("Previous item (← or P)")
        self.next_button.setToolTip("Next item (→ or N)")
        self.next_fail_button.setToolTip("Next FAIL (F; Shift+F goes back)")

        top = QHBoxLayout()
        top.addWidget(QLabel("Model"))
        top.addWidget(self.models, 1)
        top.addWidget(QLabel("Images"))
        top.addWidget(self.source, 1)
        top.addWidget(self.folder_button)
        top.addWidget(self.inspect_button)
        top.addWidget(self.cancel_button)
        top.addWidget(self.progress)
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        lt = QHBoxLayout()
        lt.addWidget(self.show_filter)
        lt.addWidget(self.sort)
        lt.addWidget(self.grid_toggle)
        lv.addLayout(lt)
        lv.addWidget(self.list, 1)
        right = QWidget()
        rv = QVBoxLayout(right)
        rv.setContentsMargins(0, 0, 0, 0)
        rv.addWidget(self.views, 1)
        tools = QHBoxLayout()
        tools.addWidget(QLabel("Opacity"))
        tools.addWidget(self.opacity)
        tools.addWidget(self.cmap)
        tools.addWidget(self.scale_mode)
        tools.addWidget(self.color_scale)
        tools.addWidget(self.fit_button)
        tools.addStretch(1)
        rv.addLayout(tools)
        nav = QHBoxLayout()
        nav.addWidget(self.detail, 1)
        nav.addWidget(self.confirm_button)
        nav.addWidget(self.prev_button)
        nav.addWidget(self.next_button)
        nav.addWidget(self.next_fail_button)
        rv.addLayout(nav)
        split = QSplitter(Qt.Horizontal)
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        split.setSizes([420, 640])
        layout = QVBoxLayout(self)
        layout.addWidget(heading("3 · Inspect", "Choose a model and the images to check (a data set, a folder, "
                                 "or drop files here). Select an item to compare it with its reconstruction and "
                                 "see where it differs."))
        layout.addLayout(top)
        layout.addWidget(self.bar)
        layout.addWidget(split, 1)
        self.current: int | None = None
        self._amap = None
        self._original = None
        self._dropped: list[str] = []
        self.list.installEventFilter(self)
        for view in self.views.views:
            view.installEventFilter(self)
        state.results_changed.connect(self.fill)
        state.threshold_changed.connect(self._threshold_moved)
        state.model_changed.connect(lambda _m: self.refresh_models())
        self.refresh_models()
        self.refresh_sources()
        self.fill()

    # -- keyboard -------------------------------------------------------------------------------
    def navigation_key(self, event) -> bool:
        """→/N/J next, ←/P/K previous, F next FAIL, Shift+F previous FAIL. Handled by an event
        filter on the list and the image views, so it works wherever the focus is in the page."""
        key, shift = event.key(), bool(event.modifiers() & Qt.ShiftModifier)
        if key == Qt.Key_F:
            self.step(-1 if shift else 1, fail_only=True)
        elif key in (Qt.Key_Right, Qt.Key_N, Qt.Key_J, Qt.Key_Down):
            self.step(1)
        elif key in (Qt.Key_Left, Qt.Key_P, Qt.Key_K, Qt.Key_Up):
            self.step(-1)
        else:
            return False
        return True

    def eventFilter(self, obj, event) -> bool:
        from PySide6.QtCore import QEvent

        if event.type() == QEvent.KeyPress and not event.modifiers() & (Qt.ControlModifier | Qt.AltModifier):
            if self.navigation_key(event):
                return True
        return super().eventFilter(obj, event)

    def keyPressEvent(self, event) -> None:
        if not self.navigation_key(event):
            super().keyPressEvent(event)

    # -- choices --------------------------------------------------------------------------------
    def refresh_models(self) -> None:
        fill_models(self.models, self.state)

    def _model_picked(self, _i) -> None:
        model_id = self.models.currentData()
        if model_id is not None and (self.state.model is None or self.state.model["id"] != model_id):
            self.state.set_model(model_id)

    def refresh_sources(self) -> None:
        current = self.source.currentData()
        self.source.blockSignals(True)
        self.source.clear()
        for ds in self.state.project.list_datasets():
            if ds["kind"] != "images":
                continue
            self.source.addItem(f"{ds['name']} · test split", {"dataset_id": ds["id"], "split": "test"})
            self.source.addItem(f"{ds['name']} · all items", {"dataset_id": ds["id"], "split": None})
        if self._dropped:
            self.source.addItem(f"{len(self._dropped)} file(s) / folder", {"paths": list(self._dropped)})
        if current is not None:
            i = self.source.findData(current)
            if i >= 0:
                self.source.setCurrentIndex(i)
        self.source.blockSignals(False)

    def inspect_folder(self, folder: str | None = None):
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Inspect the images of a folder", str(Path.home()))
            if not folder:
                return None
        return self.inspect_paths([folder])

    def inspect_paths(self, paths: list[str]):
        self._dropped = [str(p) for p in paths]
        self.refresh_sources()
        self.source.setCurrentIndex(self.source.count() - 1)
        return self.inspect()

    def dragEnterEvent(self, event):
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event):
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.inspect_paths(paths)

    def inspect(self):
        if self.state.model is None:
            error(self, AppError("There is no model to inspect with.", "Train one in step 2 · Train."))
            return None
        source = self.source.currentData()
        if not source:
            error(self, AppError("There are no images to inspect.", "Import a data set, choose a folder, or drop files."))
            return None
        self.state.commit_threshold()
        params = {"model_id": self.state.model["id"], **source}
        self.inspect_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)
        self.progress.show()
        self.handle = run_job(self, S.inspect_job, params, "inspect", f"Inspect with {self.state.model['name']}",
                              done=self._finished, failed=self._stopped)
        self.state.jobs.progress.connect(self._progress)
        return self.handle

    def _progress(self, handle, step, total, message, preview) -> None:
        if handle is not self.handle:
            return
        if total:
            self.progress.setRange(0, total)
            self.progress.setValue(step)
        if isinstance(preview, dict) and preview.get("run_id"):
            # Results are in the project as each chunk is scored: show them as they come.
            if self.state.run_id != preview["run_id"] or len(self.state.results) != preview.get("done"):
                self.state.load_run(preview["run_id"])

    def _end(self) -> None:
        try:
            self.state.jobs.progress.disconnect(self._progress)
        except (RuntimeError, TypeError):
            pass
        self.inspect_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.progress.hide()

    def _finished(self, handle) -> None:
        self._end()
        self.state.load_run(handle.result["run_id"])
        if handle.result.get("skipped"):
            lines = "\n".join(f"• {Path(p).name}: {r}" for p, r in handle.result["skipped"][:20])
            ui.info_box(self, "Inspection", f"{len(handle.result['skipped'])} file(s) could not be read:", lines)
        self.inspected.emit(handle.result["run_id"])

    def _stopped(self, handle) -> None:
        self._end()
        if handle.status == "failed" and handle.error is not None:
            error(self, handle.error, "Inspection failed")
        if handle.run_id:
            self.state.load_run(handle.run_id)  # what was scored before the stop is kept

    # -- the result list ------------------------------------------------------------------------
    def set_list_mode(self, on: bool) -> None:
        self.list.setViewMode(QListView.ListMode if on else QListView.IconMode)
        self.grid_toggle.setText("Grid" if on else "List")
        self.list.doItemsLayout()

    def order(self) -> list[int]:
        idx = list(range(len(self.state.results)))
        if self.sort.currentData() == "score":
            idx.sort(key=lambda i: -self.state.scores[i])
        return idx

    def fill(self) -> None:
        keep = self.current
        self.list_model.clear()
        self.delegate.cache.clear()
        for i in self.order():
            item = QStandardItem()
            item.setEditable(False)
            item.setData(i, ROLE_INDEX)
            self.list_model.appendRow(item)
        self.apply_filter()
        if keep is not None and keep < len(self.state.results):
            self.select(keep)
        elif self.state.results:
            self.select(self.order()[0])
        else:
            self.current = None
            self.views.set_images(None, None, None)
            self.detail.setText("No results yet." if self.state.model else "")

    def apply_filter(self) -> None:
        want = self.show_filter.currentData()
        for row in range(self.list_model.rowCount()):
            i = self.list_model.item(row).data(ROLE_INDEX)
            self.list.setRowHidden(row, want is not None and self.state.verdict(i) != want)

    def _threshold_moved(self, _v) -> None:
        self.apply_filter()
        self.list.viewport().update()
        self.redraw_overlay(keep_view=True)
        self._update_detail()

    def row_of(self, i: int) -> int:
        for row in range(self.list_model.rowCount()):
            if self.list_model.item(row).data(ROLE_INDEX) == i:
                return row
        return -1

    def select(self, i: int) -> None:
        row = self.row_of(i)
        if row >= 0:
            self.list.setCurrentIndex(self.list_model.index(row, 0))
            self.show_result(i)

    def step(self, delta: int, fail_only: bool = False) -> int | None:
        rows = [r for r in range(self.list_model.rowCount()) if not self.list.isRowHidden(r)]
        if not rows:
            return None
        order = [self.list_model.item(r).data(ROLE_INDEX) for r in rows]
        pos = order.index(self.current) if self.current in order else -1
        n = len(order)
        for k in range(1, n + 1):
            cand = order[(pos + delta * k) % n] if pos >= 0 else order[0 if delta > 0 else -1]
            if not fail_only or self.state.verdict(cand) == "FAIL":
                self.select(cand)
                return cand
            if pos < 0:
                pos = 0
        return None

    # -- the detail -----------------------------------------------------------------------------
    def show_result(self, i) -> None:
        if i is None or i >= len(self.state.results):
            return
        same = self.current == i
        self.current = i
        r = self.state.results[i]
        meta = r.get("meta") or {}
        project = self.state.project
        self._original = result_image(project, r).convertToFormat(QImage.Format_RGB888)
        w, h = self._original.width(), self._original.height()
        recon = QImage.fromData(project.image_bytes(meta["recon_image_id"])).scaled(
            w, h, Qt.IgnoreAspectRatio, Qt.SmoothTransformation)
        amap_img = QImage.fromData(project.image_bytes(r["heatmap_image_id"])).convertToFormat(QImage.Format_Grayscale8)
        from desktop.inspection.widgets import qimage_to_array

        self._amap = qimage_to_array(amap_img, gray=True).astype(np.float32) / 255.0 * float(meta.get("map_scale", 1))
        self.views.set_images(self._original, recon, self._overlay(), keep_view=same)
        self._update_detail()

    def _overlay(self) -> QImage | None:
        if self._amap is None or self._original is None:
            return None
        thr = self.state.threshold
        vmax = 2 * thr if self.scale_mode.currentData() == "threshold" else float(self._amap.max() or 1)
        lut = colormap_lut(self.cmap.currentData())
        self.color_scale.set_scale(lut, vmax, thr)
        return overlay(self._original, self._amap, vmax, self.opacity.value() / 100.0, lut)

    def redraw_overlay(self, keep_view: bool = True) -> None:
        img = self._overlay()
        if img is not None:
            from PySide6.QtGui import QPixmap as _P

            self.views.views[2].item.setPixmap(_P.fromImage(img))

    def _update_detail(self) -> None:
        i = self.current
        if i is None or i >= len(self.state.results):
            self.detail.setText("")
            self.confirm_button.setEnabled(False)
            return
        r = self.state.results[i]
        v = self.state.verdict(i)
        color = "#c62828" if v == "FAIL" else "#1b7f3a"
        name = (r.get("meta") or {}).get("name") or r["item_path"]
        label = r.get("label")
        self.detail.setText(f"<b>{name}</b> · score {r['score']:.4g} · <b style='color:{color}'>{v}</b>"
                            + (f" · label: {label}" if label else ""))
        confirmed = (r.get("meta") or {}).get("confirmed_good")
        if confirmed:
            self.detail.setText(self.detail.text() + " · <i>confirmed good</i>")
        self.confirm_button.setEnabled(v == "FAIL" and not confirmed and not S.label_is_defect(label)
                                       and not self.state.project.read_only)

    def confirm_good(self, i: int | None = None) -> dict | None:
        i = self.current if i is None else i
        if i is None or self.state.model is None:
            return None
        result = dict(self.state.results[i])
        try:
            out = S.confirm_good(self.state.project, result, self.state.model, user=self.state.operator)
        except AppError as exc:
            error(self, exc)
            return None
        self.state.reload_results()
        self.select(i)
        window = self.window()
        if hasattr(window, "statusBar"):
            window.statusBar().showMessage("Added to the training data as good; retrain to use it.", 6000)
        return out


# == 4. Threshold ===================================================================================

class ThresholdPage(QWidget):
    def __init__(self, state: InspectionState, parent=None):
        super().__init__(parent)
        self.state = state
        self.bar = ThresholdBar(state)
        self.plots = ThresholdPlots(state)
        self.alarms = QListWidget()
        self.alarms.setObjectName("FalseAlarms")
        self.alarms.setMaximumHeight(72)
        self.confirm_button = QPushButton("Confirm selected as good")
        self.confirm_button.clicked.connect(lambda: self.confirm_selected())
        self.explain = QLabel("")
        self.explain.setObjectName("Placeholder")
        self.explain.setWordWrap(True)
        self.calibrate_handle = None
        self.calibrate_button = QPushButton(ui.icon("run"), "Calibrate on labelled images")
        self.calibrate_button.setToolTip("Set the model's threshold where F1 is best on the labelled images of "
                                         "the inspected data set (written to the model, recorded in the audit trail)")
        self.calibrate_button.clicked.connect(lambda: self.calibrate())
        self.choose_maps = QCheckBox("choose the maps too")
        self.choose_maps.setToolTip(CHOOSE_MAPS_TIP)
        self.calibrate_progress = QProgressBar()
        self.calibrate_progress.setMaximumWidth(120)
        self.calibrate_progress.hide()
        self.calibrate_cancel = QPushButton(ui.icon("cancel"), "Cancel")
        self.calibrate_cancel.clicked.connect(lambda: self.calibrate_handle and self.calibrate_handle.cancel())
        self.calibrate_cancel.hide()
        self.calibrate_result = QLabel("")
        self.calibrate_result.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(heading("4 · Threshold", "Every part scoring at or above the threshold FAILs. Move the "
                                 "slider (or drag the line in the histogram): verdicts and counts update at once, "
                                 "without running the model again. Each change is recorded in the audit trail."))
        layout.addWidget(self.bar)
        row = QHBoxLayout()
        for w in (self.calibrate_button, self.choose_maps, self.calibrate_progress, self.calibrate_cancel):
            row.addWidget(w)
        row.addWidget(self.calibrate_result, 1)
        layout.addLayout(row)
        layout.addWidget(self.plots, 1)
        low = QHBoxLayout()
        box = QVBoxLayout()
        note = QLabel("FAIL items not labelled as defects — confirm real false alarms as good; "
                      "they join the training data for the next retrain:")
        note.setWordWrap(True)
        box.addWidget(note)
        box.addWidget(self.alarms)
        low.addLayout(box, 1)
        low.addWidget(self.confirm_button, 0, Qt.AlignBottom)
        layout.addLayout(low)
        layout.addWidget(self.explain)
        state.results_changed.connect(self.fill_alarms)
        state.threshold_changed.connect(lambda _v: self.fill_alarms())
        self._model_maps = (None, None)
        self.fill_alarms()

    def fill_alarms(self) -> None:
        self.alarms.clear()
        st = self.state
        for i, r in enumerate(st.results):
            if st.verdict(i) == "FAIL" and not S.label_is_defect(r.get("label")):
                name = (r.get("meta") or {}).get("name") or r["item_path"]
                done = (r.get("meta") or {}).get("confirmed_good")
                self.alarms.addItem(f"{name} · score {r['score']:.4g} · label {r.get('label') or 'unknown'}"
                                    + (" · confirmed good" if done else ""))
                self.alarms.item(self.alarms.count() - 1).setData(Qt.UserRole, i)
        self.confirm_button.setEnabled(self.alarms.count() > 0 and not st.project.read_only)
        self._enable_calibrate()
        cal = st.model["config"]["calibration"] if st.model else {}
        if cal:
            odd = len(cal.get("left_out") or ())
            how = (f"at training from {cal.get('n_good', 'the')} held-out good images (their mean + "
                   f"{cal.get('sd_multiple', 3.0):.3g} standard deviations"
                   + (f"; {odd} of them, far above the others, left out)" if odd else ")")
                   if cal.get("method") == "good_holdout"
                   else f"where F1 is best on {cal.get('n_good', 0) + cal.get('n_labelled', 0)} labelled images")
            use = (st.model["config"].get("map") or {}).get("use")
            maps = f" The model sums these anomaly maps: {map_names(use)}." if use else ""
            if self._model_maps[0] is not st.model:  # read from its folder once per model, not per slider move
                self._model_maps = (st.model, S.model_maps(st.model))
            heat, scored, available = self._model_maps[1]
            # A model with one map (a patterned part type) has nothing to choose from.
            self.choose_maps.setEnabled(len(available) > 1)
            if len(available) < 2:
                self.choose_maps.setChecked(False)
            self.choose_maps.setToolTip(CHOOSE_MAPS_TIP if len(available) > 1 else
                                        "This model has the VAE's map alone (patterned parts): there is nothing "
                                        "to choose")
            if scored != heat:
                maps += (f" Part scores leave out the {map_names([n for n in heat if n not in scored])} map, "
                         "which the heat map shows.")
            if st.stale:
                maps += (" The inspection shown was scored before these maps were chosen: its scores are on "
                         "another scale; inspect again for verdicts that hold.")
            self.explain.setText(f"The calibrated threshold {cal['threshold']:.4g} was set {how}.{maps}")

    # -- calibration on labelled images -----------------------------------------------------------
    def _enable_calibrate(self) -> None:
        st = self.state
        running = self.calibrate_handle is not None and self.calibrate_handle.status in ("queued", "running")
        self.calibrate_button.setEnabled(st.model is not None and st.model.get("kind") == S.MODEL_KIND
                                         and not st.project.read_only and not running)

    def calibration_source(self) -> dict | None:
        """The labelled images to calibrate on: the data set of the inspection shown, else the test
        split of the data set the model was trained on."""
        st = self.state
        if st.model is None:
            return None
        if st.run_id:
            params = st.project.get_run(st.run_id).get("params") or {}
            if params.get("dataset_id"):
                return {"dataset_id": params["dataset_id"], "split": params.get("split")}
        dataset_id = (st.model.get("config") or {}).get("dataset_id")
        return {"dataset_id": dataset_id, "split": "test"} if dataset_id else None

    def calibrate(self):
        st = self.state
        source = self.calibration_source()
        if source is None:
            error(self, AppError("There is no labelled data set to calibrate on.",
                                 "Inspect a data set with images labelled good and defective (step 3), "
                                 "then calibrate."))
            return None
        st.commit_threshold()
        params = {"model_id": st.model["id"], **source, "choose_maps": self.choose_maps.isChecked()}
        self.calibrate_button.setEnabled(False)
        self.calibrate_result.setText("")
        self.calibrate_progress.setRange(0, 0)
        self.calibrate_progress.show()
        self.calibrate_cancel.show()
        self.calibrate_handle = run_job(self, S.calibrate_job, params, "inspect.calibrate",
                                        f"Calibrate {st.model['name']}", done=self._calibrated,
                                        failed=self._calibration_stopped)
        st.jobs.progress.connect(self._calibration_progress)
        return self.calibrate_handle

    def _calibration_progress(self, handle, step, total, message, preview) -> None:
        if handle is self.calibrate_handle and total:
            self.calibrate_progress.setRange(0, total)
            self.calibrate_progress.setValue(step)

    def _calibration_end(self) -> None:
        try:
            self.state.jobs.progress.disconnect(self._calibration_progress)
        except (RuntimeError, TypeError):
            pass
        self.calibrate_progress.hide()
        self.calibrate_cancel.hide()
        self._enable_calibrate()

    def _calibrated(self, handle) -> None:
        self._calibration_end()
        res = handle.result
        self.state.set_model(res["model_id"])  # the new calibration (and maps) come in
        text = (f"Threshold {res['threshold']:.4g}: F1 is best there on {res['n_good']} good and "
                f"{res['n_defect']} defective images.")
        if res.get("subsets"):
            best = res["subsets"][0]
            pixel = "" if best["pixel_auroc"] is None else f", pixel AUROC {best['pixel_auroc']:.3f}"
            text += f" Maps chosen: {map_names(res['maps'])} (image AUROC {best['image_auroc']:.3f}{pixel} on them)."
            if res.get("higher_not_kept"):
                text += " " + unsure_choice_note(res["higher_not_kept"], map_names)
        if self.state.stale:  # the inspection shown was scored with the earlier maps
            text += " The scores shown were made with the earlier maps: inspect again to see the new ones."
        if res.get("skipped"):
            text += f" {len(res['skipped'])} image(s) could not be read."
        self.calibrate_result.setText(text)

    def _calibration_stopped(self, handle) -> None:
        self._calibration_end()
        if handle.status == "failed" and handle.error is not None:
            error(self, handle.error, "Calibration failed")
        elif handle.status == "cancelled":
            self.calibrate_result.setText("Calibration cancelled; the model is unchanged.")

    def confirm_selected(self) -> int:
        rows = [self.alarms.item(i).data(Qt.UserRole) for i in range(self.alarms.count())
                if self.alarms.item(i).isSelected()]
        if not rows and self.alarms.currentItem() is not None:
            rows = [self.alarms.currentItem().data(Qt.UserRole)]
        rows = [i for i in rows if not (self.state.results[i].get("meta") or {}).get("confirmed_good")]
        for i in rows:
            S.confirm_good(self.state.project, dict(self.state.results[i]), self.state.model, user=self.state.operator)
        if rows:
            self.state.reload_results()
        return len(rows)


# == 5. Report ======================================================================================

def write_pdf(html: str, images: dict[str, bytes], path) -> Path:
    """Print the report HTML to a PDF (A4) with Qt's own text layout."""
    from PySide6.QtCore import QMarginsF, QSizeF, QUrl
    from PySide6.QtGui import QPageLayout, QPageSize, QPdfWriter, QTextDocument

    writer = QPdfWriter(str(path))
    writer.setPageLayout(QPageLayout(QPageSize(QPageSize.A4), QPageLayout.Portrait, QMarginsF(15, 15, 15, 15),
                                     QPageLayout.Millimeter))
    writer.setResolution(150)
    writer.setTitle("Lienzo inspection report")
    writer.setCreator("Lienzo")
    doc = QTextDocument()
    for name, png in images.items():
        doc.addResource(QTextDocument.ImageResource, QUrl(name), QImage.fromData(png))
    doc.setHtml(html)
    rect = writer.pageLayout().paintRectPixels(writer.resolution())
    doc.setPageSize(QSizeF(rect.size()))
    doc.print_(writer)
    return Path(path)


class ReportPage(QWidget):
    exported = Signal(str, str)   # format, path

    def __init__(self, state: InspectionState, parent=None):
        super().__init__(parent)
        self.state = state
        self.operator = QLineEdit(state.operator)
        self.operator.textChanged.connect(lambda t: setattr(state, "operator", t.strip() or state.operator))
        self.runs = compact(QComboBox(), 22)
        self.runs.currentIndexChanged.connect(lambda _i: self._run_picked())
        self.buttons = {}
        top = QHBoxLayout()
        top.addWidget(QLabel("Operator"))
        top.addWidget(self.operator)
        top.addWidget(QLabel("Inspection"))
        top.addWidget(self.runs, 1)
        self.delete_button = QPushButton(ui.icon("delete"), "Delete…")
        self.delete_button.setToolTip("Delete this inspection run with its results and heat maps")
        self.delete_button.clicked.connect(lambda: self.delete_run())
        top.addWidget(self.delete_button)
        row = QHBoxLayout()
        for fmt, text in (("csv", "Export CSV…"), ("html", "Export HTML…"), ("pdf", "Export PDF…")):
            b = QPushButton(ui.icon("export"), text)
            b.clicked.connect(lambda _c=False, f=fmt: self.export(f))
            self.buttons[fmt] = b
            row.addWidget(b)
        self.preview = QTextBrowser()
        self.preview.setObjectName("ReportPreview")
        self.status = QLabel("")
        self.status.setObjectName("Placeholder")
        self.preview_button = QPushButton(ui.icon("preview"), "Preview")
        self.preview_button.clicked.connect(lambda: self.refresh_preview())
        row.addWidget(self.preview_button)
        row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(heading("5 · Report", "Export the results at the current threshold: a CSV for other "
                                 "programs, or an HTML/PDF report with the model, its training data, metrics and "
                                 "every FAIL with its heat map. Your name and the time are on it."))
        layout.addLayout(top)
        layout.addLayout(row)
        layout.addWidget(self.preview, 1)
        layout.addWidget(self.status)
        self.handle = None
        state.results_changed.connect(self.refresh_runs)
        state.model_changed.connect(lambda _m: self.refresh_runs())
        self.refresh_runs()

    def refresh_runs(self) -> None:
        self.runs.blockSignals(True)
        self.runs.clear()
        if self.state.model is not None:
            for run in self.state.project.list_runs("inspect"):
                if (run.get("params") or {}).get("model_id") != self.state.model["id"]:
                    continue
                when = datetime.datetime.fromtimestamp(run["created_at"]).strftime("%Y-%m-%d %H:%M")
                n = (run.get("metrics") or {}).get("inspected")
                self.runs.addItem(f"Run {run['id']} · {when}" + (f" · {n} items" if n else "") + f" · {run['status']}",
                                  run["id"])
        if self.state.run_id is not None:
            pick_combo(self.runs, self.state.run_id)
        self.runs.blockSignals(False)
        for b in self.buttons.values():
            b.setEnabled(self.state.run_id is not None)
        self.delete_button.setEnabled(self.state.run_id is not None and not self.state.project.read_only)

    def delete_run(self, ask: bool = True) -> bool:
        """Delete the shown run (results, heat maps, reconstructions) after a confirmation."""
        run_id = self.state.run_id
        if run_id is None:
            return False
        if ask and not ui.confirm(self, "Delete inspection run",
                                  f"Delete run {run_id} with its results, heat maps and reconstructions? "
                                  "Reports already exported stay. This cannot be undone."):
            return False
        try:
            self.state.project.delete_run(run_id)
        except AppError as exc:
            error(self, exc)
            return False
        remaining = [r["id"] for r in self.state.project.list_runs("inspect")
                     if (r.get("params") or {}).get("model_id") == (self.state.model or {}).get("id")]
        self.state.load_run(remaining[0] if remaining else None)
        self.status.setText(f"Deleted run {run_id}.")
        return True

    def _run_picked(self) -> None:
        run_id = self.runs.currentData()
        if run_id is not None and run_id != self.state.run_id:
            self.state.load_run(run_id)

    def _data(self, params, ctx):
        from core.inspect import report as R

        ctx.progress(0, 1, "collecting the report data")
        data = R.report_data(ctx.project, params["run_id"], params["threshold"], params["operator"])
        ctx.progress(1, 1, "report data ready")
        return data

    def export(self, fmt: str, path: str | None = None):
        if self.state.run_id is None:
            error(self, AppError("There is no inspection to report.", "Inspect some images in step 3 first."))
            return None
        if path is None:
            filters = {"csv": "CSV (*.csv)", "html": "HTML (*.html)", "pdf": "PDF (*.pdf)"}
            suggestion = str(Path.home() / f"inspection-run{self.state.run_id}.{fmt}")
            path, _ = QFileDialog.getSaveFileName(self, f"Export {fmt.upper()}", suggestion, filters[fmt])
            if not path:
                return None
        self.state.commit_threshold()
        params = {"run_id": self.state.run_id, "threshold": self.state.threshold,
                  "operator": self.operator.text().strip() or self.state.operator}
        self.status.setText(f"Preparing the {fmt.upper()} report…")
        self.handle = run_job(self, self._data, params, "inspect.report", f"Report ({fmt.upper()})",
                              done=lambda h: self._write(h.result, fmt, path))
        return self.handle

    def _write(self, data: dict, fmt: str, path: str) -> None:
        from core.inspect import report as R

        try:
            if fmt == "csv":
                R.write_csv(data, path)
            elif fmt == "html":
                R.write_html(data, path)
            else:
                html, images = R.render_html(data, embed=False)
                write_pdf(html, images, path)
            R.record(self.state.project, data, fmt, path)
        except OSError as exc:
            error(self, AppError(f"The report could not be written to {path} ({exc.strerror or exc}).",
                                 "Choose another folder."))
            return
        self.status.setText(f"Saved {fmt.upper()}: {path}")
        self._show(data)
        self.exported.emit(fmt, str(path))

    def refresh_preview(self):
        if self.state.run_id is None:
            return None
        params = {"run_id": self.state.run_id, "threshold": self.state.threshold,
                  "operator": self.operator.text().strip() or self.state.operator}
        return run_job(self, self._data, params, "inspect.report", "Report preview", done=lambda h: self._show(h.result))

    def _show(self, data: dict) -> None:
        from PySide6.QtCore import QUrl
        from PySide6.QtGui import QTextDocument

        from core.inspect import report as R

        html, images = R.render_html(data, embed=False)
        doc = self.preview.document()
        for name, png in images.items():
            doc.addResource(QTextDocument.ImageResource, QUrl(name), QImage.fromData(png))
        self.preview.setHtml(html)


# == Audit trail ====================================================================================

class AuditPage(QWidget):
    COLUMNS = ("When", "Who", "Action", "What", "Old", "New")
    ACTION_TEXT = {"inspect.train": "Training", "inspect.threshold": "Threshold change",
                   "inspect.model": "Model change", "inspect.report": "Report",
                   "inspect.confirm_good": "Confirmed good", "inspect.label": "Label change",
                   "inspect.dataset.import": "Data set import", "model.register": "Model registered",
                   "dataset.create": "Data set created", "dataset.delete": "Data set deleted",
                   "model.delete": "Model deleted", "model.rename": "Model renamed",
                   "model.update": "Recalibrated"}

    def __init__(self, state: InspectionState, parent=None):
        super().__init__(parent)
        self.state = state
        self.table = QTableView()
        self.table.setObjectName("AuditTable")
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)  # the trail cannot be edited
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setAlternatingRowColors(True)
        self.table.setSortingEnabled(True)
        self.table.verticalHeader().hide()
        self.model = QStandardItemModel(self)
        self.table.setModel(self.model)
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setMaximumHeight(90)
        self.details.setPlaceholderText("Click a row to see everything recorded with it.")
        self.table.clicked.connect(self._show_details)
        layout = QVBoxLayout(self)
        layout.addWidget(heading("Audit trail", "Who trained, changed a threshold or a model, confirmed a part "
                                 "or made a report, and when. Read-only: nothing here can be edited."))
        layout.addWidget(self.table, 1)
        layout.addWidget(self.details)
        self.rows: list[dict] = []
        self.refresh()

    def refresh(self, *_):
        self.rows = S.audit_rows(self.state.project)
        self.model.clear()
        self.model.setHorizontalHeaderLabels(self.COLUMNS)
        for n, row in enumerate(self.rows):
            when = datetime.datetime.fromtimestamp(row["time"]).strftime("%Y-%m-%d %H:%M:%S")
            cells = [when, row["user"], self.ACTION_TEXT.get(row["action"], row["action"]), row["what"],
                     row["old"], row["new"]]
            items = []
            for text in cells:
                it = QStandardItem(text)
                it.setEditable(False)
                it.setData(n, Qt.UserRole)
                items.append(it)
            self.model.appendRow(items)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeToContents)
        header.setSectionResizeMode(3, QHeaderView.Stretch)

    def _show_details(self, index) -> None:
        import json

        n = self.model.item(index.row(), 0).data(Qt.UserRole)
        self.details.setPlainText(json.dumps(self.rows[n]["details"], indent=1, default=str))
