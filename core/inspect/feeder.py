"""Training batches made ahead in a background thread, so that the network does not wait for them.

Making a batch (sampling patches and whole images, drawing the synthetic defects and foreign
regions) is CPU work. Done between the steps, it left a GPU waiting: on an H200 a 120-s
magnetic_tile job made 881 steps, 1461 with the batches made ahead (bench/README.md, sixteenth
session). The thread alone draws from the random generators, in the same order as before, so a
seed still gives the same batches; each batch comes with the generators' states just after it was
made, which is where a resumed run must start.

On the CPU the thread makes its batches with one OpenMP thread, so it never starts a team of its
own. GNU OpenMP counts the threads of every team in the process, and once they outnumber the cores
its idle threads spin 100 times instead of GOMP_SPINCOUNT (core/openmp_wait.py) before they sleep:
with the feeder's team beside the training thread's, magnetic_tile's step (VAE + two context
batches, 2 cores) took 0.92-0.97 s; single-threaded, 0.70-0.84 s (bench/README.md, twenty-second
session). Making a batch is no faster on two threads (0.047 s against 0.042 s on one). On a GPU the
cores are otherwise idle and the thread keeps them all.
"""

from __future__ import annotations

import queue
import threading

import torch

DEPTH = 3  # batches made ahead: enough to cover a slow one, few enough to keep memory small


class BatchFeeder:
    """Calls `make()` (which returns a tuple of CPU tensors, or of lists of them) in a thread and
    hands its batches out in order, on `device`. `generators` are the torch.Generators `make`
    draws from: nothing else may draw from them while the feeder runs."""

    def __init__(self, make, generators, device, depth: int = DEPTH):
        self._make, self._generators, self._device = make, list(generators), torch.device(device)
        self._pin = self._device.type == "cuda"
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        threads = torch.get_num_threads()
        self._single_threaded = self._device.type == "cpu" and threads > 1
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), name="lienzo-batches", daemon=True)
        self._thread.start()
        started.wait()
        if self._single_threaded:
            # torch.set_num_threads also sets the count that threads started later begin with; put
            # that back (this thread's own count never changed; the feeder's stays at one).
            torch.set_num_threads(threads)

    def _run(self, started: threading.Event) -> None:
        try:
            if self._single_threaded:
                # Read first: a thread takes the process-wide count at its first parallel op, and
                # the caller puts that count back to its own as soon as this thread has started.
                torch.get_num_threads()
                torch.set_num_threads(1)
        finally:
            started.set()  # the caller waits for this
        try:
            while not self._stop.is_set():
                batch = self._make()
                if self._pin:
                    batch = _map(batch, lambda t: t.pin_memory())
                states = [g.get_state() for g in self._generators]
                self._put((batch, states))
        except BaseException as exc:  # handed to the training loop, which raises it there
            self._put(exc)

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def next(self):
        """(the next batch on the device, the generators' states right after it was made)."""
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        batch, states = item
        return _map(batch, lambda t: t.to(self._device, non_blocking=self._pin)), states

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get_nowait()  # unblock a waiting put
            except queue.Empty:
                pass
            self._thread.join(timeout=0.05)

    def __enter__(self) -> "BatchFeeder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _map(batch, fn):
    if torch.is_tensor(batch):
        return fn(batch)
    return type(batch)(_map(b, fn) for b in batch)
