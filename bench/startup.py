"""Start-up benchmark: Lienzo's main window vs a bare PySide6 QMainWindow, same machine, same run.

Measures, for several alternating repetitions, the wall time from process start (just before
the child is spawned) to the first painted main window, and for Lienzo also to the complete
window (menus, project browser and job docks painted) and to the window painted with the demo
project open. Lienzo paints its frame (styled, sized, titled, still empty) first and builds the
rest right after, so the user sees the window at once. Then the resident memory of the idle app
(psutil) before any model is loaded, 1.5 s after the project is shown and again after `--idle`
seconds. Prints the medians and the ratios. Targets: window <= 1.5x the bare window, RSS <= 250 MB.

    .venv/bin/python bench/startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]

BARE = r"""
import sys, time
from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication, QMainWindow
app = QApplication(sys.argv[:1])
window = QMainWindow()
window.setWindowTitle("bare")
window.resize(1280, 800)
class FirstPaint(QObject):
    done = False
    def eventFilter(self, obj, event):
        if not self.done and event.type() == QEvent.Paint and hasattr(obj, "window") and obj.window() is window:
            self.done = True
            QTimer.singleShot(0, lambda: (print(f"lienzo-paint window {time.time():.6f}", flush=True), app.exit(0)))
        return False
probe = FirstPaint()
app.installEventFilter(probe)
window.show()
sys.exit(app.exec())
"""


# For reference only (the target's baseline is BARE): the same bare window with one line of text
# in it, which makes Qt set up its fonts, a one-off cost that any window with text pays.
BARE_TEXT = BARE.replace('window.setWindowTitle("bare")',
                         'window.setWindowTitle("bare")\n'
                         'from PySide6.QtWidgets import QLabel\n'
                         'window.setCentralWidget(QLabel("Hello"))')


# The same app with the feature modules (image studio, text AI, inspection) left out, to tell
# the shell's own cost from theirs.
CORE_ONLY = r"""
import sys
import desktop.app
desktop.app.install_features = lambda: None
from desktop.launcher import main
sys.exit(main(sys.argv[1:]))
"""


def spawn(cmd: list[str], env: dict, stages: tuple[str, ...]) -> tuple[dict[str, float], subprocess.Popen]:
    """Start `cmd`; return the seconds from spawn to each probe stage, and the live process."""
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    times: dict[str, float] = {}
    while not all(stage in times for stage in stages):
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{cmd} ended before painting (exit {proc.wait()})")
        if line.startswith("lienzo-paint "):
            _, stage, stamp = line.split()
            times[stage] = float(stamp) - start
    return times, proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--idle", type=float, default=8.0,
                        help="seconds idle before the second RSS reading (start-up jobs finish)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="lienzo-bench-") as tmp:
        env = dict(os.environ, LIENZO_DATA_DIR=f"{tmp}/data", LIENZO_CONFIG_DIR=f"{tmp}/config",
                   LIENZO_STARTUP_PROBE="1", HF_HUB_OFFLINE="1")
        env.setdefault("QT_QPA_PLATFORM", "offscreen")
        lienzo = [sys.executable, "-m", "desktop", "--size", "1280x800"]
        bare = [sys.executable, "-c", BARE]

        # First run creates the demo project (a one-off cost, reported apart).
        first, proc = spawn(lienzo, env, ("window", "project"))
        stop(proc)

        bare_times, text_times, window_times, built_times, project_times = [], [], [], [], []
        for _ in range(args.repeat):  # alternate, so machine load hits both alike
            times, proc = spawn(bare, env, ("window",))
            stop(proc)
            bare_times.append(times["window"])
            times, proc = spawn([sys.executable, "-c", BARE_TEXT], env, ("window",))
            stop(proc)
            text_times.append(times["window"])
            times, proc = spawn(lienzo, env, ("window", "built", "project"))
            stop(proc)
            window_times.append(times["window"])
            built_times.append(times["built"])
            project_times.append(times["project"])

        times, proc = spawn(lienzo, env, ("window", "project"))
        process = psutil.Process(proc.pid)
        time.sleep(1.5)
        rss_early_mb = process.memory_info().rss / 2**20
        time.sleep(max(0.0, args.idle - 1.5))
        rss_mb = process.memory_info().rss / 2**20
        stop(proc)

        _, proc = spawn([sys.executable, "-c", CORE_ONLY, "--size", "1280x800"], env,
                        ("window", "project"))
        time.sleep(args.idle)
        rss_core_mb = psutil.Process(proc.pid).memory_info().rss / 2**20
        stop(proc)

    bare_med = statistics.median(bare_times)
    window_med = statistics.median(window_times)
    built_med = statistics.median(built_times)
    text_med = statistics.median(text_times)
    project_med = statistics.median(project_times)
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"QT_QPA_PLATFORM={env['QT_QPA_PLATFORM']}, {args.repeat} repetitions (medians)")
    print(f"bare PySide6 QMainWindow, first paint:     {bare_med * 1000:7.0f} ms")
    print(f"  (reference: the bare window with a label:{text_med * 1000:7.0f} ms, Qt's font set-up)")
    print(f"Lienzo main window (frame), first paint:   {window_med * 1000:7.0f} ms   "
          f"ratio {window_med / bare_med:.2f}x (target <= 1.5x)")
    print(f"Lienzo complete window (menus, docks):     {built_med * 1000:7.0f} ms   "
          f"ratio {built_med / bare_med:.2f}x")
    print(f"Lienzo with demo project painted:          {project_med * 1000:7.0f} ms   "
          f"ratio {project_med / bare_med:.2f}x")
    print(f"first run (creates the demo project):      {first['project'] * 1000:7.0f} ms")
    print(f"resident memory 1.5 s after the project:   {rss_early_mb:7.0f} MB")
    print(f"idle resident memory after {args.idle:.0f} s, no model: {rss_mb:6.0f} MB   (target <= 250 MB;"
          " includes what start-up jobs of the features import)")
    print(f"same, without the feature modules:         {rss_core_mb:7.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
