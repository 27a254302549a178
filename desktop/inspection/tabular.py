"""The same train / inspect / threshold / report flow for a CSV table: a sortable table of the
records with their scores and verdicts instead of images."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QFileDialog, QHBoxLayout, QLabel, QProgressBar,
                               QPushButton, QSplitter, QTableView, QVBoxLayout, QWidget)

from core.errors import AppError
from core.inspect import session as S
from desktop import ui
from desktop.inspection.pages import ReportPage, compact, fill_datasets, fill_models, heading
from desktop.inspection.widgets import (FAIL_COLOR, PASS_COLOR, InspectionState, ThresholdBar, ThresholdPlots,
                                        error, pick_combo, run_job)

MAX_VALUE_COLUMNS = 12


class RecordsModel(QAbstractTableModel):
    """Rows of the latest table inspection; verdicts follow the state's threshold live."""

    def __init__(self, state: InspectionState, parent=None):
        super().__init__(parent)
        self.state = state
        self.columns: list[str] = []
        state.results_changed.connect(self.reset)
        state.threshold_changed.connect(self._verdicts_changed)

    def reset(self) -> None:
        self.beginResetModel()
        values = ((self.state.results[0].get("meta") or {}).get("values") or {}) if self.state.results else {}
        self.columns = ["row", "score", "verdict", "label"] + list(values)[:MAX_VALUE_COLUMNS]
        self.endResetModel()

    def _verdicts_changed(self, _v) -> None:
        if self.state.results:
            self.dataChanged.emit(self.index(0, 2), self.index(self.rowCount() - 1, 2))

    def rowCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(self.state.results)

    def columnCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(self.columns)

    def headerData(self, section, orientation, role=Qt.DisplayRole):
        if role == Qt.DisplayRole and orientation == Qt.Horizontal and section < len(self.columns):
            return self.columns[section]
        return None

    def data(self, index, role=Qt.DisplayRole):
        r = self.state.results[index.row()]
        col = self.columns[index.column()]
        meta = r.get("meta") or {}
        if col == "row":
            value = meta.get("row")
        elif col == "score":
            value = r["score"]
        elif col == "verdict":
            value = self.state.verdict(index.row())
        elif col == "label":
            value = r.get("label") or ""
        else:
            value = (meta.get("values") or {}).get(col, "")
        if role == Qt.UserRole:  # sort key
            return value
        if role == Qt.DisplayRole:
            return f"{value:.5g}" if isinstance(value, float) else str(value)
        if role == Qt.ForegroundRole and col == "verdict":
            return QColor(FAIL_COLOR if value == "FAIL" else PASS_COLOR)
        return None


class SortProxy(QSortFilterProxyModel):
    def lessThan(self, left, right):
        a, b = left.data(Qt.UserRole), right.data(Qt.UserRole)
        try:
            return float(a) < float(b)
        except (TypeError, ValueError):
            return str(a) < str(b)


class TabularPage(QWidget):
    trained = Signal(int)

    def __init__(self, project, jobs, parent=None):
        super().__init__(parent)
        self.state = InspectionState(project, jobs, S.TABLE_MODEL_KIND, self)
        self.import_button = QPushButton(ui.icon("import"), "Import CSV…")
        self.import_button.clicked.connect(lambda: self.import_csv())
        self.datasets = compact(QComboBox(), 16)
        self.preset = QComboBox()
        for key in S.TABLE_PRESETS:
            self.preset.addItem(key.capitalize(), key)
        self.train_button = QPushButton(ui.icon("run"), "Train")
        self.train_button.clicked.connect(lambda: self.train())
        self.models = compact(QComboBox(), 18)
        self.models.currentIndexChanged.connect(self._model_picked)
        self.inspect_button = QPushButton(ui.icon("find"), "Score the table")
        self.inspect_button.setObjectName("PrimaryButton")
        self.inspect_button.clicked.connect(lambda: self.inspect())
        self.cancel_button = QPushButton(ui.icon("cancel"), "Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(lambda: self.handle and self.handle.cancel())
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(160)
        self.progress.hide()  # shown while a job of this page runs
        self.info = QLabel("")
        self.info.setObjectName("Summary")
        self.info.setWordWrap(True)
        self.bar = ThresholdBar(self.state)
        self.records = RecordsModel(self.state, self)
        self.proxy = SortProxy(self)
        self.proxy.setSourceModel(self.records)
        self.table = QTableView()
        self.table.setObjectName("RecordsTable")
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().hide()
        self.plots = ThresholdPlots(self.state, vertical=True, empty_text=(
            "No label column: the histogram, ROC curve and confusion counts need a column marking "
            "anomalies (1) and normal rows (0), named 'label' by default."), classes=("normal", "anomaly"))
        self.report = ReportPage(self.state)
        self.report.layout().itemAt(0).widget().hide()  # the page heading: this page has its own
        self.report.preview.setMaximumHeight(0)
        self.report.preview.hide()
        self.report.preview_button.hide()
        row1 = QHBoxLayout()
        row1.addWidget(self.import_button)
        row1.addWidget(QLabel("Table"))
        row1.addWidget(self.datasets, 1)
        row1.addWidget(QLabel("Preset"))
        row1.addWidget(self.preset)
        row1.addWidget(self.train_button)
        row1.addStretch(1)
        row2 = QHBoxLayout()
        row2.addWidget(QLabel("Model"))
        row2.addWidget(self.models, 1)
        row2.addWidget(self.inspect_button)
        row2.addWidget(self.cancel_button)
        row2.addWidget(self.progress)
        split = QSplitter(Qt.Horizontal)
        split.addWidget(self.table)
        split.addWidget(self.plots)
        split.setSizes([640, 360])
        layout = QVBoxLayout(self)
        layout.addWidget(heading("Tabular (CSV)", "Records such as transactions or sensor readings: train on the "
                                 "normal rows (rows labelled as anomalies are left out), score every row, set the "
                                 "threshold and export the report."))
        layout.addLayout(row1)
        layout.addLayout(row2)
        layout.addWidget(self.info)
        layout.addWidget(self.bar)
        layout.addWidget(split, 1)
        layout.addWidget(self.report)
        self.handle = None
        self.state.model_changed.connect(lambda _m: fill_models(self.models, self.state))
        self.refresh_datasets()
        self.refresh_models()
        models = self.state.models()
        if models:
            self.state.set_model(models[0]["id"], record=False)

    def refresh_datasets(self) -> None:
        fill_datasets(self.datasets, self.state, "table")

    def refresh_models(self) -> None:
        fill_models(self.models, self.state)

    def _model_picked(self, _i) -> None:
        model_id = self.models.currentData()
        if model_id is not None and (self.state.model is None or self.state.model["id"] != model_id):
            self.state.set_model(model_id)

    def import_csv(self, path: str | None = None):
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Import a table (CSV)", str(Path.home()),
                                                  "CSV tables (*.csv *.tsv *.txt);;All files (*)")
            if not path:
                return None
        return run_job(self, S.import_job, {"csv": str(path)}, "inspect.import", f"Import table {Path(path).name}",
                       done=self._imported)

    def _imported(self, handle) -> None:
        self.refresh_datasets()
        pick_combo(self.datasets, handle.result["dataset_id"])

    def _busy(self, on: bool) -> None:
        self.train_button.setEnabled(not on)
        self.inspect_button.setEnabled(not on)
        self.cancel_button.setEnabled(on)
        self.progress.setVisible(on)
        self.progress.setRange(0, 0 if on else 1)
        if not on:
            self.progress.setValue(1)
            try:
                self.state.jobs.progress.disconnect(self._progress)
            except (RuntimeError, TypeError):
                pass

    def _progress(self, handle, step, total, message, preview) -> None:
        if handle is self.handle and total:
            self.progress.setRange(0, total)
            self.progress.setValue(min(step, total))
            self.info.setText(message)

    def _start(self, fn, params, kind, title, done):
        self._busy(True)
        self.handle = run_job(self, fn, params, kind, title, done=done, failed=self._failed)
        self.state.jobs.progress.connect(self._progress)
        return self.handle

    def _failed(self, handle) -> None:
        self._busy(False)
        if handle.status == "failed" and handle.error is not None:
            error(self, handle.error, "Tabular inspection")
        elif handle.status == "cancelled":
            self.info.setText("Cancelled.")

    def train(self, overrides: dict | None = None):
        ds = self.datasets.currentData()
        if ds is None:
            error(self, AppError("There is no table to train on.", "Import a CSV first."))
            return None
        params = {"dataset_id": ds, "preset": self.preset.currentData(), "overrides": overrides or {}}
        return self._start(S.table_train_job, params, "inspect.train", f"Train table model on {self.datasets.currentText()}",
                           self._trained)

    def _trained(self, handle) -> None:
        self._busy(False)
        r = handle.result
        m = r.get("metrics") or {}
        auc = m.get("roc_auc")
        self.info.setText(f"Model {r['name']} saved" + (f"; ROC-AUC {auc:.3f} on the labelled rows." if auc else ".")
                          + (" Warnings: " + "; ".join(r["warnings"][:3]) if r.get("warnings") else ""))
        self.refresh_models()
        self.state.set_model(r["model_id"])
        self.trained.emit(r["model_id"])

    def inspect(self):
        ds = self.datasets.currentData()
        if self.state.model is None or ds is None:
            error(self, AppError("Choose a table and a model first.", "Import a CSV and train a model on it."))
            return None
        self.state.commit_threshold()
        return self._start(S.table_inspect_job, {"model_id": self.state.model["id"], "dataset_id": ds}, "inspect",
                           f"Score table with {self.state.model['name']}", self._inspected)

    def _inspected(self, handle) -> None:
        self._busy(False)
        self.state.load_run(handle.result["run_id"])
        c = self.state.counts()
        self.info.setText(f"{c['total']} rows scored: {c['fail']} FAIL, {c['pass']} PASS. Click a column header "
                          "to sort.")
        self.report.refresh_runs()
