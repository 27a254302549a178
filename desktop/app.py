"""Starting the GUI: QApplication, style, error hooks, the main window, `--screenshot`.

The window is shown before the project is opened and long before any of torch, transformers or
diffusers could be imported: those load later, inside jobs, when a feature needs a model.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication

from core.errors import AppError
from desktop import ui

DEFAULT_SIZE = (1280, 800)
# Set by bench/startup.py: print "lienzo-paint <stage> <time.time()>" on the first paints.
PROBE_ENV = "LIENZO_STARTUP_PROBE"


def parse_size(size: str | None) -> tuple[int, int]:
    if not size:
        return DEFAULT_SIZE
    try:
        width, height = (int(v) for v in str(size).lower().split("x"))
    except ValueError:
        raise AppError(f"Window size “{size}” is not WIDTHxHEIGHT.", "Use for example --size 1280x800.")
    if not (320 <= width <= 8192 and 240 <= height <= 8192):
        raise AppError(f"Window size {width}x{height} is out of range.",
                       "Use a width of 320–8192 and a height of 240–8192 pixels.")
    return width, height


class _FirstPaint(QObject):
    """Calls back once, after the first paint event of any widget inside `window`."""

    def __init__(self, window, callback):
        super().__init__(window)
        self.window, self.callback, self.done = window, callback, False

    def eventFilter(self, obj, event):
        if (not self.done and event.type() == QEvent.Paint and hasattr(obj, "window")
                and obj.window() is self.window):
            self.done = True
            QApplication.instance().removeEventFilter(self)
            QTimer.singleShot(0, self.callback)  # after this paint has finished
        return False


def when_painted(window, callback) -> None:
    QApplication.instance().installEventFilter(_FirstPaint(window, callback))


def install_excepthook(window, interactive: bool = True) -> None:
    """Unexpected errors show a dialog and the app goes on; non-interactive runs exit 1."""

    import traceback

    def hook(exc_type, exc, tb):
        if issubclass(exc_type, KeyboardInterrupt):
            QApplication.quit()
            return
        if not issubclass(exc_type, AppError):
            traceback.print_exception(exc_type, exc, tb)
        if not interactive:
            print(f"error: {exc}", file=sys.stderr)
            QApplication.exit(1)
            return
        try:
            ui.error_box(window, exc, "Lienzo")
        except Exception:  # never let the hook itself kill the app
            traceback.print_exc()

    def thread_hook(args):  # threads outside the job runner: log, do not die silently
        traceback.print_exception(args.exc_type, args.exc_value, args.exc_traceback)

    sys.excepthook = hook
    threading.excepthook = thread_hook


# (module, what it adds). Each module has install(), which registers MainWindow extensions.
FEATURES = (
    ("desktop.canvas.gen_studio", "generation panel, mask tools and gallery on the canvas"),
    ("desktop.editor.ai_studio", "Text AI dock and AI actions in every editor"),
    ("desktop.inspection", "the QA inspection view (View ▸ Inspection, --view inspection)"),
)


def install_features() -> list[str]:
    """Attach the feature modules (they extend MainWindow, EditorPanel, CanvasPanel).

    Called after the window's first paint: their widgets and imports then never delay it. A
    feature that fails to load is reported and left out; the rest of Lienzo still opens.
    Returns one line per feature that failed.
    """
    import importlib
    import traceback

    problems = []
    for module, _what in FEATURES:
        try:
            importlib.import_module(module).install()
        except Exception as exc:  # a broken feature must not keep the app from starting
            traceback.print_exc()
            problems.append(f"{module}: {type(exc).__name__}: {exc}")
    return problems


def run_gui(project=None, screenshot=None, view=None, size=None) -> int:
    """Open the main window on `project` (default: the demo project, made on first run)."""
    from desktop.main_window import MainWindow

    probe = os.environ.get(PROBE_ENV)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Lienzo")
    app.setApplicationDisplayName("Lienzo")
    app.setStyle("Fusion")
    app.setStyleSheet(ui.stylesheet())
    try:
        width, height = parse_size(size)
    except AppError as exc:
        print(f"error: {exc.message}\nhint: {exc.hint}", file=sys.stderr)
        return 2

    # The frame paints first; its contents, then the features and the project follow (first_paint).
    window = MainWindow(build=False)
    install_excepthook(window, interactive=screenshot is None)
    if screenshot:
        window.resize(width, height)
        window.job_shutdown_timeout = 0.3  # a screenshot run need not wait for start-up jobs
    else:
        window.restore_window_state(state=False)  # docks: once the features have added theirs
        if size:
            window.resize(width, height)
    status = {"rc": 0}

    def fail(message: str, hint: str) -> None:
        status["rc"] = 2
        if screenshot:
            print(f"error: {message}\nhint: {hint}", file=sys.stderr)
            window.close()
            app.exit(2)
        else:
            ui.error_box(window, AppError(message, hint))

    def load_project():
        if project:
            opened = window.open_project(project)
        else:
            from core.demo import ensure_demo_project

            try:
                opened = window.open_project(ensure_demo_project())
            except AppError as exc:
                ui.error_box(window, exc)
                opened = False
        if not opened and screenshot:
            status["rc"] = 2
            print(f"error: could not open {project or 'the demo project'}", file=sys.stderr)
        if view and window.project is not None:
            window.show_view(view)
        if probe:
            when_painted(window, lambda: print(f"lienzo-paint project {time.time():.6f}", flush=True))
        if screenshot:
            # Let the layout settle and the new content paint, then grab.
            when_painted(window, lambda: QTimer.singleShot(150, take_screenshot))
            window.update()

    def take_screenshot():
        app.processEvents()
        if not window.grab().save(str(screenshot)):
            print(f"error: could not write the screenshot to {screenshot}", file=sys.stderr)
            status["rc"] = 2
        else:
            print(f"screenshot saved: {screenshot}", file=sys.stderr)
        window.close()
        app.exit(status["rc"])

    def first_paint():
        if probe:
            print(f"lienzo-paint window {time.time():.6f}", flush=True)
        app.setWindowIcon(ui.icon("lienzo"))
        window.build()
        # Paint the complete window before the features load and the project opens.
        when_painted(window, add_features_and_project)
        window.update()

    def add_features_and_project():
        if probe:
            print(f"lienzo-paint built {time.time():.6f}", flush=True)
        problems = install_features()
        window.apply_extensions()
        if problems:
            text = "Some parts of Lienzo could not be loaded and are left out"
            if screenshot:
                print(f"warning: {text}:\n" + "\n".join(problems), file=sys.stderr)
            else:
                ui.error_box(window, AppError(text + ":\n" + "\n".join(problems),
                                              "The rest works. Please report this."))
        if not screenshot:
            window.restore_window_state(geometry=False)
        if view and view not in window.views:
            fail(f"the view “{view}” is not available in this version of Lienzo.",
                 f"available views: {', '.join(sorted(window.views))}.")
            return
        load_project()

    # Show first, then add the features and open the project: the user sees the window at once.
    when_painted(window, first_paint)
    window.show()
    rc = app.exec()
    if window.isVisible():
        window.close()
    return rc or status["rc"]
