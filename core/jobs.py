"""Long work runs as jobs: a plain function `run(params, ctx)` executed on one compute worker.

The function reports with `ctx.progress(...)` and stops at `ctx.check_cancelled()`. The runner
records every job in the project's runs table (when it has a project) and tells listeners what
happened. Listeners are called from the worker thread; the Qt adapter turns them into signals.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from core.errors import AppError, Cancelled

JobFunction = Callable[[dict, "JobContext"], Any]

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINAL_STATES = (DONE, FAILED, CANCELLED)

# About ten progress updates a second is smooth to the eye and cheap for the GUI.
PROGRESS_INTERVAL_S = 0.1


@dataclass
class JobEvent:
    """What listeners receive. `type` is one of queued, started, progress, log (a line of the job's
    log, in `message`), finished, failed, cancelled."""

    type: str
    job: "JobHandle"
    step: int = 0
    total: int = 0
    message: str = ""
    preview: Any = None


@dataclass
class JobHandle:
    """A submitted job as seen from outside the worker."""

    id: int
    kind: str
    title: str
    params: dict
    status: str = QUEUED
    step: int = 0
    total: int = 0
    message: str = ""
    queued_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    result: Any = None
    error: AppError | None = None
    run_id: int | None = None
    # The latest preview reported, throttled or not: a view that missed the last one (reports
    # close together at the end of a job) shows it when the job finishes.
    last_preview: Any = None
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    def cancel(self) -> None:
        """Ask the job to stop; a queued job never starts, a running one stops at its next check."""
        self._cancel.set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends. Returns False on timeout. Never call from the GUI thread."""
        return self._done.wait(timeout)

    @property
    def elapsed(self) -> float:
        if self.started_at is None:
            return 0.0
        return (self.finished_at or time.time()) - self.started_at


class JobContext:
    """Handed to a job function: progress reporting, cancellation, logging, run metrics."""

    def __init__(self, handle: JobHandle, runner: "JobRunner"):
        self._handle = handle
        self._runner = runner
        self._last_progress = 0.0
        self._last_edge: tuple[int, int] | None = None
        self._log: list[str] = []
        self.metrics: dict = {}

    @property
    def project(self):
        return self._runner.project

    @property
    def run_id(self) -> int | None:
        return self._handle.run_id

    @property
    def cancelled(self) -> bool:
        return self._handle._cancel.is_set()

    @property
    def cancel_event(self) -> threading.Event:
        """For library hooks (stopping criteria, diffusion callbacks) that poll an event."""
        return self._handle._cancel

    def check_cancelled(self) -> None:
        if self._handle._cancel.is_set():
            raise Cancelled()

    def progress(self, step: int, total: int, message: str = "", preview: Any = None) -> None:
        """Report progress. Throttled to about ten a second; the first and the last always pass."""
        handle = self._handle
        handle.step, handle.total, handle.message = step, total, message
        if preview is not None:
            handle.last_preview = preview
        now = time.monotonic()
        # The first and last report always pass, once: a job that keeps reporting step 0 (a
        # stream with no known length) is throttled like any other.
        is_edge = bool(step <= 0 or (total and step >= total)) and (step, total) != self._last_edge
        if not is_edge and now - self._last_progress < PROGRESS_INTERVAL_S:
            return
        if is_edge:
            self._last_edge = (step, total)
        self._last_progress = now
        self._runner._emit(JobEvent("progress", handle, step, total, message, preview))

    def log(self, line: str) -> None:
        """Add a line to the job's log (stored with its run) and pass it to listeners."""
        self._log.append(line)
        self._runner._emit(JobEvent("log", self._handle, message=line))

    @property
    def log_text(self) -> str:
        return "\n".join(self._log)


class JobRunner:
    """Runs jobs one at a time on a single worker thread (a GPU runs one model job at a time)."""

    def __init__(self, project=None):
        self.project = project
        self._queue: queue.Queue[tuple[JobHandle, JobFunction] | None] = queue.Queue()
        self._listeners: list[Callable[[JobEvent], None]] = []
        self._jobs: list[JobHandle] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._work, name="lienzo-compute", daemon=True)
        self._closed = False
        self._worker.start()

    # -- public API ---------------------------------------------------------------------------
    def add_listener(self, listener: Callable[[JobEvent], None]) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[JobEvent], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def submit(self, fn: JobFunction, params: dict | None = None, *, kind: str,
               title: str | None = None, record: bool = True) -> JobHandle:
        """Queue `fn(params, ctx)`. With `record` and a project, a runs-table row follows the job."""
        if self._closed:
            raise AppError("The job runner has been shut down.", "Restart the application.")
        params = dict(params or {})
        handle = JobHandle(id=next(self._ids), kind=kind, title=title or kind, params=params)
        if record and self.project is not None:
            handle.run_id = self.project.start_run(kind, params, status=QUEUED)
        with self._lock:
            self._jobs.append(handle)
        self._emit(JobEvent("queued", handle))
        self._queue.put((handle, fn))
        return handle

    def jobs(self) -> list[JobHandle]:
        with self._lock:
            return list(self._jobs)

    def shutdown(self, cancel: bool = True, timeout: float | None = 10.0) -> None:
        """Stop accepting work; cancel what is queued or running (if asked) and wait for the worker."""
        self._closed = True
        if cancel:
            for job in self.jobs():
                if job.status in (QUEUED, RUNNING):
                    job.cancel()
        self._queue.put(None)
        self._worker.join(timeout)

    # -- worker -------------------------------------------------------------------------------
    def _emit(self, event: JobEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a broken listener must not kill the worker
                traceback.print_exc()

    def _record(self, handle: JobHandle, **fields) -> None:
        if handle.run_id is None or self.project is None:
            return
        try:
            self.project.update_run(handle.run_id, **fields)
        except Exception:  # the project may have been closed under a finishing job
            traceback.print_exc()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            handle, fn = item
            self._run_one(handle, fn)

    def _run_one(self, handle: JobHandle, fn: JobFunction) -> None:
        ctx = JobContext(handle, self)
        if handle._cancel.is_set():
            handle.status = CANCELLED
            handle.finished_at = time.time()
            self._record(handle, status=CANCELLED, ended_at=handle.finished_at)
            self._emit(JobEvent("cancelled", handle))
            handle._done.set()
            return
        handle.status = RUNNING
        handle.started_at = time.time()
        self._record(handle, status=RUNNING, started_at=handle.started_at)
        self._emit(JobEvent("started", handle))
        try:
            handle.result = fn(handle.params, ctx)
            handle.status = DONE
        except Cancelled:
            handle.status = CANCELLED
        except AppError as exc:
            handle.status, handle.error = FAILED, exc
        except MemoryError:
            handle.status = FAILED
            handle.error = AppError("The computer ran out of memory during this job.",
                                    "Close other programs, or use smaller images or a smaller model.")
        except BaseException as exc:  # unexpected (SystemExit too: it must not kill the worker):
            ctx._log.append(traceback.format_exc())  # in the run log only; listeners get a sentence
            handle.status = FAILED
            handle.error = AppError(f"{handle.title} failed: {type(exc).__name__}: {exc}",
                                    "The details are in the run log. Please report this.")
        handle.finished_at = time.time()
        if handle.error is not None:  # listeners learn of it from the "failed" event
            ctx._log.append(str(handle.error))
        self._record(handle, status=handle.status, ended_at=handle.finished_at,
                     metrics=ctx.metrics or None, log=ctx.log_text or None)
        event_type = {DONE: "finished", FAILED: "failed", CANCELLED: "cancelled"}[handle.status]
        self._emit(JobEvent(event_type, handle))
        handle._done.set()
