"""Qt side of the job engine: a signal adapter over core.jobs.JobRunner and the job panel.

The runner calls its listeners on the worker thread. `QtJobs` forwards every event through one
internal signal with a queued connection, so all public signals fire on the GUI thread and slots
may touch widgets freely. The worker never waits on the GUI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Qt, QTimer, Signal, Slot
from PySide6.QtWidgets import (QHBoxLayout, QHeaderView, QLabel, QProgressBar, QPushButton,
                               QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget)

if TYPE_CHECKING:  # core.jobs loads with the first project, after the window is painted
    from core.jobs import JobEvent, JobHandle, JobRunner

# Same values as core.jobs.FINAL_STATES (checked by the tests).
FINAL_STATES = ("done", "failed", "cancelled")


class QtJobs(QObject):
    """Adapts a JobRunner to Qt signals (all emitted on the thread that owns this object)."""

    queued = Signal(object)                    # JobHandle
    started = Signal(object)                   # JobHandle
    progress = Signal(object, int, int, str, object)  # handle, step, total, message, preview
    finished = Signal(object)                  # handle (handle.result holds the result)
    failed = Signal(object)                    # handle (handle.error is an AppError)
    cancelled = Signal(object)                 # handle
    changed = Signal(object)                   # any event about this handle

    _relay = Signal(object)                    # JobEvent, crosses threads

    def __init__(self, runner: JobRunner, parent: QObject | None = None):
        super().__init__(parent)
        self.runner = runner
        self._relay.connect(self._dispatch, Qt.QueuedConnection)
        runner.add_listener(self._on_event)

    def submit(self, fn, params: dict | None = None, *, kind: str, title: str | None = None,
               record: bool = True) -> JobHandle:
        return self.runner.submit(fn, params, kind=kind, title=title, record=record)

    def jobs(self) -> list[JobHandle]:
        return self.runner.jobs()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Detach from the runner, cancel its jobs and wait for the worker to stop."""
        self.runner.remove_listener(self._on_event)
        self.runner.shutdown(cancel=True, timeout=timeout)

    # Worker thread: do nothing but hand the event over.
    def _on_event(self, event: JobEvent) -> None:
        self._relay.emit(event)

    @Slot(object)
    def _dispatch(self, event: JobEvent) -> None:
        handle = event.job
        self.changed.emit(handle)  # first, so the panel is up to date when the others fire
        if event.type == "queued":
            self.queued.emit(handle)
        elif event.type == "started":
            self.started.emit(handle)
        elif event.type == "progress":
            self.progress.emit(handle, event.step, event.total, event.message, event.preview)
        elif event.type == "finished":
            self.finished.emit(handle)
        elif event.type == "failed":
            self.failed.emit(handle)
        elif event.type == "cancelled":
            self.cancelled.emit(handle)


def format_elapsed(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 3600:
        return f"{seconds // 60}:{seconds % 60:02d}"
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


STATUS_TEXT = {"queued": "Queued", "running": "Running", "done": "Done", "failed": "Failed",
               "cancelled": "Cancelled"}

COL_TITLE, COL_STATUS, COL_PROGRESS, COL_MESSAGE, COL_ELAPSED, COL_ACTION = range(6)


class JobPanel(QWidget):
    """Lists queued, running and finished jobs: progress bar, message, elapsed time, Cancel."""

    def __init__(self, jobs: QtJobs | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("JobPanel")
        self.tree = QTreeWidget()
        self.tree.setObjectName("JobList")
        self.tree.setRootIsDecorated(False)
        self.tree.setAlternatingRowColors(True)
        self.tree.setHeaderLabels(["Job", "Status", "Progress", "Message", "Elapsed", ""])
        header = self.tree.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(COL_TITLE, QHeaderView.Interactive)
        header.setSectionResizeMode(COL_MESSAGE, QHeaderView.Stretch)
        self.tree.setColumnWidth(COL_TITLE, 220)
        self.tree.setColumnWidth(COL_STATUS, 80)
        self.tree.setColumnWidth(COL_PROGRESS, 160)
        self.tree.setColumnWidth(COL_ELAPSED, 70)
        self.tree.setColumnWidth(COL_ACTION, 80)
        self.empty_label = QLabel("No jobs yet. Long work (generation, training, imports) "
                                  "shows up here with its progress and a Cancel button.")
        self.empty_label.setObjectName("Placeholder")
        self.empty_label.setWordWrap(True)
        self.clear_button = QPushButton("Clear finished")
        self.clear_button.clicked.connect(self.clear_finished)
        top = QHBoxLayout()
        top.addWidget(self.empty_label, 1)
        top.addWidget(self.clear_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(self.tree)
        self._items: dict[int, QTreeWidgetItem] = {}
        self._handles: dict[int, JobHandle] = {}
        self._bars: dict[int, QProgressBar] = {}
        self._buttons: dict[int, QPushButton | None] = {}
        # Elapsed times tick once a second, only while something runs.
        self._ticker = QTimer(self)
        self._ticker.setInterval(1000)
        self._ticker.timeout.connect(self._tick)
        self.jobs: QtJobs | None = None
        self.set_jobs(jobs)

    def set_jobs(self, jobs: QtJobs | None) -> None:
        """Follow another runner (when another project is opened); the list starts empty."""
        if self.jobs is not None:
            try:
                self.jobs.changed.disconnect(self.update_job)
            except (RuntimeError, TypeError):
                pass
        self.jobs = jobs
        self.tree.clear()
        self._items.clear(), self._handles.clear(), self._bars.clear(), self._buttons.clear()
        if jobs is not None:
            jobs.changed.connect(self.update_job)  # fires for progress events too
            for handle in jobs.jobs():
                self.update_job(handle)
        self._update_empty()

    def item_for(self, job_id: int) -> QTreeWidgetItem | None:
        return self._items.get(job_id)

    def cancel_button(self, job_id: int) -> QPushButton | None:
        return self._buttons.get(job_id)

    def progress_bar(self, job_id: int) -> QProgressBar | None:
        return self._bars.get(job_id)

    @Slot(object)
    def update_job(self, handle: JobHandle) -> None:
        item = self._items.get(handle.id)
        if item is None:
            item = self._add_row(handle)
        item.setText(COL_TITLE, handle.title)
        item.setToolTip(COL_TITLE, f"{handle.title} ({handle.kind})")
        item.setText(COL_STATUS, STATUS_TEXT.get(handle.status, handle.status))
        bar = self._bars[handle.id]
        if handle.status == "running" and not handle.total:
            bar.setRange(0, 0)  # busy indicator until the job tells its size
        else:
            total = max(handle.total, 1)
            bar.setRange(0, total)
            bar.setValue(total if handle.status == "done" else min(handle.step, total))
        message = handle.message
        if handle.status == "failed" and handle.error is not None:
            # The user sees the sentence, the hint in the tooltip; tracebacks stay in the run log.
            message = getattr(handle.error, "message", str(handle.error))
            item.setToolTip(COL_MESSAGE, getattr(handle.error, "hint", "") or message)
        elif handle.status == "cancelled":
            message = "Cancelled" + (f" at step {handle.step}/{handle.total}" if handle.total else "")
        elif handle.status == "done" and not message:
            message = "Finished"
        item.setText(COL_MESSAGE, message)
        item.setText(COL_ELAPSED, format_elapsed(handle.elapsed))
        item.setData(COL_STATUS, Qt.UserRole, handle.status)
        button = self._buttons.get(handle.id)
        if button is not None:
            if handle.status in FINAL_STATES:
                # Item views re-show index widgets on layout, so the button is removed, not hidden.
                self.tree.removeItemWidget(item, COL_ACTION)
                self._buttons[handle.id] = None
            else:
                button.setEnabled(not handle.cancel_requested)
        if any(h.status in ("queued", "running") for h in self._handles.values()):
            if not self._ticker.isActive():
                self._ticker.start()
        else:
            self._ticker.stop()
        self._update_empty()

    def _add_row(self, handle: JobHandle) -> QTreeWidgetItem:
        item = QTreeWidgetItem()
        self.tree.insertTopLevelItem(0, item)  # newest first
        bar = QProgressBar()
        bar.setTextVisible(True)
        bar.setMaximumHeight(18)
        button = QPushButton("Cancel")
        button.setObjectName("CancelJob")
        button.clicked.connect(lambda: self._cancel(handle))
        self.tree.setItemWidget(item, COL_PROGRESS, bar)
        self.tree.setItemWidget(item, COL_ACTION, button)
        self._items[handle.id], self._handles[handle.id] = item, handle
        self._bars[handle.id], self._buttons[handle.id] = bar, button
        return item

    def _cancel(self, handle: JobHandle) -> None:
        handle.cancel()
        if self._buttons.get(handle.id) is not None:
            self._buttons[handle.id].setEnabled(False)
        item = self._items[handle.id]
        if handle.status == "running":
            item.setText(COL_MESSAGE, "Cancelling…")

    def _tick(self) -> None:
        for job_id, handle in self._handles.items():
            if handle.status == "running":
                self._items[job_id].setText(COL_ELAPSED, format_elapsed(handle.elapsed))

    def clear_finished(self) -> None:
        for job_id, handle in list(self._handles.items()):
            if handle.status in FINAL_STATES:
                item = self._items.pop(job_id)
                self.tree.takeTopLevelItem(self.tree.indexOfTopLevelItem(item))
                del self._handles[job_id], self._bars[job_id], self._buttons[job_id]
        self._update_empty()

    def running_count(self) -> int:
        return sum(h.status in ("queued", "running") for h in self._handles.values())

    def _update_empty(self) -> None:
        has_jobs = bool(self._handles)
        self.empty_label.setVisible(not has_jobs)
        self.tree.setVisible(has_jobs)
        self.clear_button.setVisible(any(h.status in FINAL_STATES for h in self._handles.values()))
