"""The image studio on the canvas: generation panel, mask tools, gallery, previews, undo/redo.

`ImageStudio(canvas, jobs)` adds itself to a CanvasPanel: two side tabs (Generate, Gallery) and
toolbar actions (undo, redo, brush, eraser, size, clear, invert). Generation runs as a job through
the Qt job adapter (never on the GUI thread); progress brings a latent preview that is shown on
the canvas until the real image arrives. Each result is already in the project when it shows up.
`install()` registers the studio with the main window (one line in desktop/canvas/__init__.py).
"""

from __future__ import annotations

import time

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QAction, QActionGroup, QImage, QKeySequence, QUndoCommand, QUndoStack
from PySide6.QtWidgets import QLabel, QSpinBox

from core.errors import AppError
from core.paths import data_dir
from desktop import ui
from desktop.canvas.gen_gallery import GalleryPanel
from desktop.canvas.gen_mask import MaskLayer
from desktop.canvas.gen_panel import GenerationPanel

JOB_KIND = "image.generate"


def pil_to_qimage(image) -> QImage:
    image = image.convert("RGB")
    data = image.tobytes()
    return QImage(data, image.width, image.height, image.width * 3, QImage.Format_RGB888).copy()


class ShowImage(QUndoCommand):
    """A change of the picture on the canvas (a new generation placed on it)."""

    def __init__(self, studio: "ImageStudio", before: int | None, after: int, text: str):
        super().__init__(text)
        self.studio, self.before, self.after = studio, before, after

    def redo(self):
        self.studio.show_on_canvas(self.after)

    def undo(self):
        if self.before is not None:
            self.studio.show_on_canvas(self.before)


class ImageStudio(QObject):
    def __init__(self, canvas, jobs, parent: QObject | None = None):
        super().__init__(parent or canvas)
        self.canvas = canvas
        self.jobs = jobs
        self.handle = None
        self._preview_shown = False
        self._target_size: tuple[int, int] | None = None
        self.undo_stack = QUndoStack(self)
        self.panel = GenerationPanel()
        self.gallery = GalleryPanel(canvas.project)
        self.mask = MaskLayer(canvas.view, self.undo_stack, self)
        if canvas.project is not None:
            # Diffusion models registered in the project join the picker (missing files are left out).
            from pathlib import Path

            registered = [m["path"] for m in canvas.project.list_models(kind="diffusion")
                          if m.get("path") and Path(m["path"]).exists()]
            self.panel.refresh_models(extra=registered)
        canvas.add_side_panel(self.panel, "Generate")
        canvas.add_side_panel(self.gallery, "Gallery")
        canvas.image_studio = self
        self._make_actions()

        self.panel.generate_requested.connect(self.generate)
        self.panel.cancel_requested.connect(self.cancel)
        self.panel.mode_changed.connect(self._mode_changed)
        self.gallery.show_requested.connect(self.place_on_canvas)
        self.gallery.reuse_requested.connect(self.panel.apply_params)
        self.gallery.status_message.connect(canvas.status_message)
        canvas.image_shown.connect(self._image_shown)
        jobs.progress.connect(self._progress)
        jobs.finished.connect(self._finished)
        jobs.failed.connect(self._failed)
        jobs.cancelled.connect(self._cancelled)
        if canvas.view.has_image():
            self.mask.reset(canvas.view.image.width(), canvas.view.image.height())

    # -- toolbar ------------------------------------------------------------------------------
    def _make_actions(self) -> None:
        bar = self.canvas.toolbar
        first = bar.actions()[0] if bar.actions() else None
        self.undo_action = self.undo_stack.createUndoAction(self, "Undo")
        self.undo_action.setIcon(ui.icon("undo"))
        self.undo_action.setShortcut(QKeySequence.Undo)
        self.redo_action = self.undo_stack.createRedoAction(self, "Redo")
        self.redo_action.setIcon(ui.icon("redo"))
        self.redo_action.setShortcut(QKeySequence.Redo)
        self.brush_action = QAction("Brush", self, checkable=True)
        self.brush_action.setToolTip("Paint the inpainting mask (B)")
        self.brush_action.setShortcut(QKeySequence("B"))
        self.eraser_action = QAction("Eraser", self, checkable=True)
        self.eraser_action.setToolTip("Erase the inpainting mask (E)")
        self.eraser_action.setShortcut(QKeySequence("E"))
        group = QActionGroup(self)
        group.setExclusionPolicy(QActionGroup.ExclusionPolicy.ExclusiveOptional)
        group.addAction(self.brush_action)
        group.addAction(self.eraser_action)
        self.brush_action.toggled.connect(self._tool_changed)
        self.eraser_action.toggled.connect(self._tool_changed)
        self.brush_size = QSpinBox()
        self.brush_size.setObjectName("BrushSize")
        self.brush_size.setRange(1, 512)
        self.brush_size.setValue(self.mask.brush_size)
        self.brush_size.setSuffix(" px")
        self.brush_size.setToolTip("Brush size")
        self.brush_size.valueChanged.connect(self.mask.set_brush_size)
        self.clear_mask_action = QAction("Clear mask", self)
        self.clear_mask_action.triggered.connect(self.mask.clear)
        self.invert_mask_action = QAction("Invert mask", self)
        self.invert_mask_action.triggered.connect(self.mask.invert)
        actions = [self.undo_action, self.redo_action, None, self.brush_action, self.eraser_action]
        for action in actions:
            if action is None:
                bar.insertSeparator(first) if first else bar.addSeparator()
            elif first:
                bar.insertAction(first, action)
            else:
                bar.addAction(action)
        size_label = QLabel(" Size ")
        if first:
            bar.insertWidget(first, size_label)
            bar.insertWidget(first, self.brush_size)
            bar.insertAction(first, self.clear_mask_action)
            bar.insertAction(first, self.invert_mask_action)
            bar.insertSeparator(first)
        for action in (self.undo_action, self.redo_action, self.brush_action, self.eraser_action,
                       self.clear_mask_action, self.invert_mask_action):
            action.setShortcutContext(Qt.WidgetWithChildrenShortcut)
            self.canvas.addAction(action)

    def _tool_changed(self, *_):
        tool = "brush" if self.brush_action.isChecked() else "eraser" if self.eraser_action.isChecked() else "none"
        self.mask.set_tool(tool)

    def _mode_changed(self, mode: str) -> None:
        if mode == "inpaint" and not self.eraser_action.isChecked():
            self.brush_action.setChecked(True)  # inpainting starts with painting the mask

    # -- canvas -------------------------------------------------------------------------------
    def _image_shown(self, image_id: int) -> None:
        image = self.canvas.view.image
        self.mask.reset(image.width(), image.height())

    def show_on_canvas(self, image_id: int) -> None:
        self.canvas.refresh()
        self.canvas.show_image(image_id)

    def place_on_canvas(self, image_id: int) -> None:
        """Put an image on the canvas as an undoable change."""
        before = self.canvas.current_image_id
        if before == image_id:
            return
        self.undo_stack.push(ShowImage(self, before, image_id, "Show image"))

    # -- generation ---------------------------------------------------------------------------
    def generate(self):
        if self.handle is not None and self.handle.status in ("queued", "running"):
            return None
        params = self.panel.params()
        try:
            params = self._complete(params)
        except AppError as exc:
            self.panel.show_error(exc.message, exc.hint)
            return None
        self.panel.remember()
        self.panel.set_running(True)
        self._preview_shown = False
        self._before_id = self.canvas.current_image_id
        title = "Image: " + (params.get("prompt") or "(no prompt)")[:40]
        self.handle = self.jobs.submit(_run, params, kind=JOB_KIND, title=title)
        return self.handle

    def _complete(self, params: dict) -> dict:
        if not params["model"]:
            raise AppError("No model chosen.", "Pick a Stable Diffusion folder or .safetensors file in Model.")
        mode = params["mode"]
        if mode != "txt2img":
            image_id = self.canvas.current_image_id
            if image_id is None:
                raise AppError(f"{self.panel.mode.currentText()} needs a picture on the canvas.",
                               "Show an image first (from the strip below or the gallery).")
            params["init_image"] = {"image_id": image_id}
            self._target_size = (self.canvas.view.image.width(), self.canvas.view.image.height())
        else:
            self._target_size = (params["width"], params["height"])
        if mode == "inpaint":
            if self.mask.is_empty():
                raise AppError("The mask is empty: nothing is marked for repainting.",
                               "Paint over the area to change with the Brush, then Generate.")
            folder = data_dir() / "cache" / "masks"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"mask-{time.time_ns()}.png"
            path.write_bytes(self.mask.mask_png())
            params["mask"] = str(path)  # a path: job parameters are recorded as JSON
        return params

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.panel.status.setText("Cancelling…")

    def _ours(self, handle) -> bool:
        return self.handle is not None and handle is self.handle

    def _progress(self, handle, step, total, message, preview) -> None:
        if not self._ours(handle):
            return
        self.panel.show_progress(step, total, message)
        if preview is not None:
            image = pil_to_qimage(preview)
            if self._target_size:
                image = image.scaled(*self._target_size, Qt.IgnoreAspectRatio, Qt.SmoothTransformation)
            self.canvas.view.set_image(image, fit=not self._preview_shown)
            self._preview_shown = True

    def _finished(self, handle) -> None:
        if not self._ours(handle):
            return
        outcome = handle.result
        self.panel.set_running(False)
        self.panel.show_done([r.seed for r in outcome.results], outcome.notices)
        self.gallery.refresh()
        ids = [r.image_id for r in outcome.results if r.image_id is not None]
        if ids:
            self.undo_stack.push(ShowImage(self, self._before_id, ids[0], "Generate"))
            self.gallery.select(ids[0])

    def _failed(self, handle) -> None:
        if not self._ours(handle):
            return
        self.panel.set_running(False)
        error = handle.error
        self.panel.show_error(getattr(error, "message", str(error)), getattr(error, "hint", ""))
        self._restore()

    def _cancelled(self, handle) -> None:
        if not self._ours(handle):
            return
        self.panel.set_running(False)
        self.panel.show_cancelled(handle.step, handle.total)
        self.gallery.refresh()  # earlier images of a batch are kept
        self._restore()

    def _restore(self) -> None:
        """After a preview: the real picture again."""
        if self._preview_shown:
            self.canvas.refresh()
            if self._before_id is not None:
                self.canvas.show_image(self._before_id)
            self._preview_shown = False


def _run(params, ctx):
    from core.image.generate import run_generation  # torch and diffusers load in the worker

    return run_generation(params, ctx)


# -- main window hook-up --------------------------------------------------------------------------
def _attach(window) -> None:
    def opened(_project):
        if window.canvas is not None and window.jobs is not None:
            studio = ImageStudio(window.canvas, window.jobs)
            window.image_studio = studio
            if window.signals is not None:
                window.signals.changed.connect(
                    lambda tables: studio.gallery.refresh() if {"generations", "images"} & set(tables) else None)

    window.project_opened.connect(opened)
    if window.project is not None and getattr(window, "image_studio", None) is None:
        opened(window.project)  # installed after a project was already open


def install() -> None:
    from desktop.main_window import MainWindow

    if _attach not in MainWindow.extensions:
        MainWindow.extensions.append(_attach)
