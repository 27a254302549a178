"""Training batches made ahead in a background thread, so that the network does not wait for them.

Making a batch (sampling patches and whole images, drawing the synthetic defects and foreign
regions) is CPU work. Done between the steps, it left a GPU waiting: on an H200 a 120-s
magnetic_tile job made 881 steps, 1461 with the batches made ahead (bench/README.md, sixteenth
session). The thread alone draws from the random generators, in the same order as before, so a
seed still gives the same batches; each batch comes with the generators' states just after it was
made, which is where a resumed run must start.
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
        self._thread = threading.Thread(target=self._run, name="lienzo-batches", daemon=True)
        self._thread.start()

    def _run(self) -> None:
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
