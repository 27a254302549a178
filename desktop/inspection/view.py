"""The Inspection view: the QA workflow as steps down the left side (Data, Train, Inspect,
Threshold, Report, Audit trail, Tabular), each a page on the right."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import QHBoxLayout, QListWidget, QListWidgetItem, QScrollArea, QStackedWidget, QWidget

from core.inspect import session as S
from desktop import ui
from desktop.inspection.pages import AuditPage, DataPage, InspectPage, ReportPage, ThresholdPage, TrainPage
from desktop.inspection.tabular import TabularPage
from desktop.inspection.widgets import InspectionState

STEPS = (("data", "1  Data", "dataset"), ("train", "2  Train", "run"), ("inspect", "3  Inspect", "find"),
         ("threshold", "4  Threshold", "fit"), ("report", "5  Report", "export"),
         ("audit", "Audit trail", "history"), ("tabular", "Tabular (CSV)", "document"))

STYLE = """
QLabel#StepTitle { font-size: 14pt; font-weight: 600; color: #1d4f7c; }
QListWidget#InspectionSteps { background: #eceef2; border: none; border-right: 1px solid #d5d9e0; font-size: 11pt; }
QListWidget#InspectionSteps::item { padding: 8px 6px; }
QListWidget#InspectionSteps::item:selected { background: #cfdcee; color: #1b2533; font-weight: 600; }
QFrame#ThresholdBar { background: #f4f6fa; border: 1px solid #d5d9e0; border-radius: 5px; }
QLabel#Counts { font-size: 11pt; }
QLabel#ViewTitle { font-weight: 600; color: #414958; }
QLabel#ReconCell { background: #3a3f48; }
QPushButton#PrimaryButton { background: #2e5c8a; color: white; border-color: #2e5c8a; font-weight: 600; }
QPushButton#PrimaryButton:disabled { background: #9db3cc; border-color: #9db3cc; }
"""


class FitScroll(QScrollArea):
    """Gives its page the whole viewport, and scrolls only below the page's minimum size.
    (widgetResizable would size pages with word-wrapped labels by their preferred height.)"""

    def fit(self) -> None:
        page = self.widget()
        if page is not None:
            view, least = self.viewport().size(), page.minimumSizeHint()
            page.resize(max(view.width(), least.width()), max(view.height(), least.height()))

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self.fit()

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.fit()


class InspectionView(QWidget):
    """One per open project; its pages share an InspectionState (model, run, threshold)."""

    def __init__(self, project, jobs, signals=None, parent=None):
        super().__init__(parent)
        self.setObjectName("InspectionView")
        self.setStyleSheet(STYLE)
        self.project = project
        self.state = InspectionState(project, jobs, S.MODEL_KIND, self)
        self.steps = QListWidget()
        self.steps.setObjectName("InspectionSteps")
        self.steps.setFixedWidth(150)
        self.steps.setIconSize(QSize(18, 18))
        self.stack = QStackedWidget()
        self.data = DataPage(self.state)
        self.train = TrainPage(self.state)
        self.inspect = InspectPage(self.state)
        self.threshold = ThresholdPage(self.state)
        self.report = ReportPage(self.state)
        self.audit = AuditPage(self.state)
        self.tabular = TabularPage(project, jobs, self)
        self.pages = {"data": self.data, "train": self.train, "inspect": self.inspect,
                      "threshold": self.threshold, "report": self.report, "audit": self.audit,
                      "tabular": self.tabular}
        for key, text, icon in STEPS:
            item = QListWidgetItem(ui.icon(icon), text)
            item.setData(Qt.UserRole, key)
            self.steps.addItem(item)
            # Each page scrolls when the window is narrow (docks of other features beside it), so
            # the view never forces the window wider than the screen.
            scroll = FitScroll()
            scroll.setFrameShape(QScrollArea.NoFrame)
            scroll.setWidget(self.pages[key])
            self.stack.addWidget(scroll)
        self.steps.currentRowChanged.connect(self._step_changed)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.steps)
        layout.addWidget(self.stack, 1)
        # Moving on after each step: a new data set goes to training, a new model to inspection.
        self.data.imported.connect(self._imported)
        self.train.trained.connect(self._trained)
        if signals is not None:
            signals.changed.connect(self.project_changed)
        models = self.state.models()
        if models:
            self.state.set_model(models[0]["id"], record=False)
        self.steps.setCurrentRow(0)

    def show_step(self, key: str) -> QWidget:
        for row in range(self.steps.count()):
            if self.steps.item(row).data(Qt.UserRole) == key:
                self.steps.setCurrentRow(row)
        return self.pages[key]

    def _step_changed(self, row: int) -> None:
        self.state.commit_threshold()
        self.stack.setCurrentIndex(row)
        if self.stack.currentWidget().widget() is self.audit:
            self.audit.refresh()

    def _imported(self, dataset_id: int) -> None:
        if self.project.get_dataset(dataset_id)["kind"] == "table":  # a CSV: the tabular flow
            from desktop.inspection.widgets import pick_combo

            self.tabular.refresh_datasets()
            pick_combo(self.tabular.datasets, dataset_id)
            self.show_step("tabular")
            return
        self.inspect.refresh_sources()
        for page in (self.train,):
            page.refresh({"datasets"})
        from desktop.inspection.widgets import pick_combo

        pick_combo(self.train.datasets, dataset_id)

    def _trained(self, model_id: int) -> None:
        self.inspect.refresh_models()
        self.state.set_model(model_id)
        self.inspect.refresh_models()

    def project_changed(self, tables: set) -> None:
        if "datasets" in tables:
            self.data.refresh(tables)
            self.train.refresh(tables)
            self.inspect.refresh_sources()
            self.tabular.refresh_datasets()
        if "models" in tables:
            self.inspect.refresh_models()
            self.tabular.refresh_models()
        if "audit" in tables and self.stack.currentWidget().widget() is self.audit:
            self.audit.refresh()

    def hideEvent(self, event) -> None:
        # The main window removes (hides) its tabs before it closes the project: a threshold moved
        # by keyboard less than a second ago is written to the audit trail now.
        if not self.project.closed:
            self.state.commit_threshold()
            self.tabular.state.commit_threshold()
        super().hideEvent(event)

    def shutdown(self) -> None:
        self.data._thumb_timer.stop()
        self.state.commit_threshold()
        self.tabular.state.commit_threshold()
