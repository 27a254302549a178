"""Lienzo's Qt face. Talks to core through the job API and the project facade only."""

import sys


def _reserve_bool_references() -> None:
    """PySide6 6.12 on Python 3.11 returns True from `Signal.emit()` without a new reference, so
    every emit made from Python takes one reference away from True. After a few thousand emits
    (a training job's progress, pyqtgraph redraws) the interpreter aborts with "bool_dealloc".
    True and False are static singletons that are never freed, so a large reserve of references
    is harmless; Python 3.12+ makes them immortal and needs nothing."""
    if sys.version_info >= (3, 12) or hasattr(sys, "gettotalrefcount"):  # immortal, or a debug build
        return
    import ctypes

    for obj in (True, False):
        ctypes.c_ssize_t.from_address(id(obj)).value += 1 << 40


_reserve_bool_references()
