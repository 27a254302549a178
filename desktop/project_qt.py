"""Project change notifications as a Qt signal.

`Project.subscribe` calls back from whatever thread committed (a job's worker, the GUI). The
callback only emits a signal; a queued connection brings it to the GUI thread, and a short timer
coalesces bursts (an import of 500 images) into one `changed` per table set.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Qt, QTimer, Signal, Slot


class ProjectSignals(QObject):
    changed = Signal(set)       # names of the tables that changed since the last emission
    change = Signal(object)     # every single Change, for views that want row detail

    _relay = Signal(object)

    def __init__(self, project, parent: QObject | None = None, coalesce_ms: int = 50):
        super().__init__(parent)
        self.project = project
        self._pending: set[str] = set()
        self._active = True
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(coalesce_ms)
        self._timer.timeout.connect(self._flush)
        self._relay.connect(self._on_change, Qt.QueuedConnection)
        self._unsubscribe = project.subscribe(self._callback)

    def detach(self) -> None:
        """Stop listening (the project is being closed)."""
        self._active = False
        self._timer.stop()
        if callable(self._unsubscribe):
            try:
                self._unsubscribe()
            except Exception:  # unsubscribing from a closed project is harmless
                pass

    def _callback(self, change) -> None:  # any thread
        if self._active:
            self._relay.emit(change)

    @Slot(object)
    def _on_change(self, change) -> None:
        if not self._active:
            return
        self.change.emit(change)
        self._pending.add(getattr(change, "table", "") or "")
        if not self._timer.isActive():
            self._timer.start()

    def _flush(self) -> None:
        tables, self._pending = self._pending, set()
        if tables and self._active:
            self.changed.emit(tables)
