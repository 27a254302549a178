"""The main window: project browser, tabbed workspace (editors, canvas), job panel, menus."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from typing import TYPE_CHECKING

# Only what the first paint needs loads with this module (see MainWindow.build): PySide6 makes a
# class's Python enums when the class is first imported, a few milliseconds each.
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QLabel, QMainWindow, QStackedWidget, QWidget

from core.errors import AppError
from desktop import ui

if TYPE_CHECKING:
    from PySide6.QtGui import QAction, QCloseEvent
    from PySide6.QtWidgets import QMenu

    from desktop.canvas import CanvasPanel
    from desktop.editor import EditorPanel
    from desktop.jobs_qt import QtJobs
    from desktop.project_qt import ProjectSignals


def _is_editor(widget) -> bool:
    # The editor and canvas modules load with the first project, after the window has painted.
    from desktop.editor import EditorPanel

    return isinstance(widget, EditorPanel)

PROJECT_FILTER = "Lienzo projects (*.lienzo);;All files (*)"


class MainWindow(QMainWindow):
    """One window, one open project at a time (or none, after a failed open)."""

    # Callables run once with the new window, so later features can add docks, menus and views.
    extensions: list[Callable[["MainWindow"], None]] = []

    project_opened = Signal(object)
    project_closed = Signal()
    editor_opened = Signal(object)     # EditorPanel

    def __init__(self, parent: QWidget | None = None, build: bool = True):
        """build=False makes only the window's frame (what the app paints first, before most of
        desktop/ is imported, like a bare window); `build()` adds everything inside it."""
        super().__init__(parent)
        self.setObjectName("MainWindow")
        self.setWindowTitle("Lienzo")
        self.built = False
        self.project = None
        self.project_path: Path | None = None
        self.jobs: QtJobs | None = None
        self.signals: ProjectSignals | None = None
        self.canvas: CanvasPanel | None = None
        self.last_import: dict | None = None
        self._import_jobs: set[int] = set()
        self.job_shutdown_timeout = 2.0  # seconds to wait for jobs to stop when closing
        self.views: dict[str, Callable[[], None]] = {"editor": self.show_editor_view,
                                                      "canvas": self.show_canvas_view}

        self._applied_extensions: list[Callable] = []
        if build:
            self.build()

    def build(self) -> None:
        """The workspace, status bar, docks (browser, jobs), menus and extensions; idempotent."""
        if self.built:
            return
        from PySide6.QtCore import Qt
        from PySide6.QtWidgets import QDockWidget, QTabWidget

        from desktop.browser import ProjectBrowser
        from desktop.jobs_qt import JobPanel

        self.built = True
        self.setWindowIcon(ui.icon("lienzo"))
        # Any widget with text makes Qt set up its fonts (~25 ms), so none exists before this.
        self.central = QStackedWidget()
        self.setCentralWidget(self.central)
        self.pixel_label = QLabel("")
        self.pixel_label.setObjectName("PixelInfo")
        self.project_label = QLabel("")
        self.statusBar().addPermanentWidget(self.pixel_label)
        self.statusBar().addPermanentWidget(self.project_label)
        # Central area: the workspace tabs, or a welcome page when no project is open.
        self.workspace = QTabWidget()
        self.workspace.setObjectName("Workspace")
        self.workspace.setTabsClosable(True)
        self.workspace.setMovable(True)
        self.workspace.setDocumentMode(True)
        self.workspace.tabCloseRequested.connect(self.close_tab)
        self.no_project = self._make_no_project_page()
        self.central.addWidget(self.no_project)
        self.central.addWidget(self.workspace)

        self.browser = ProjectBrowser()
        self.browser.open_document.connect(self.open_document)
        self.browser.open_image.connect(self.show_image)
        self.browser.import_requested.connect(lambda paths: self.import_files(paths or None))
        self.browser.item_deleted.connect(self._item_deleted)
        self.browser_dock = QDockWidget("Project", self)
        self.browser_dock.setObjectName("ProjectDock")
        self.browser_dock.setWidget(self.browser)
        self.browser_dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetClosable)
        self.addDockWidget(Qt.LeftDockWidgetArea, self.browser_dock)

        self.job_panel = JobPanel()
        self.jobs_dock = QDockWidget("Jobs", self)
        self.jobs_dock.setObjectName("JobsDock")
        self.jobs_dock.setWidget(self.job_panel)
        self.jobs_dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetClosable)
        self.addDockWidget(Qt.BottomDockWidgetArea, self.jobs_dock)
        self.resizeDocks([self.browser_dock], [250], Qt.Horizontal)
        self.resizeDocks([self.jobs_dock], [120], Qt.Vertical)
        self._make_menus()
        self._update_project_state()
        self.apply_extensions()

    def apply_extensions(self) -> None:
        """Run the extensions not yet applied (the app installs features after the first paint)."""
        if not self.built:
            return  # build() applies them
        for extend in list(self.extensions):
            if extend not in self._applied_extensions:
                self._applied_extensions.append(extend)
                extend(self)

    # -- construction -------------------------------------------------------------------------
    def _make_no_project_page(self) -> QWidget:
        from PySide6.QtCore import Qt
        from PySide6.QtWidgets import QPushButton, QVBoxLayout

        page = QWidget()
        layout = QVBoxLayout(page)
        layout.addStretch(1)
        title = QLabel("No project is open")
        title.setObjectName("EmptyTitle")
        title.setAlignment(Qt.AlignCenter)
        text = QLabel("Create a new project, open an existing one, or reopen the demo project.")
        text.setObjectName("Placeholder")
        text.setAlignment(Qt.AlignCenter)
        layout.addWidget(title)
        layout.addWidget(text)
        for label, slot in (("New project…", lambda: self.new_project()),
                            ("Open project…", lambda: self.open_project_dialog()),
                            ("Open the demo project", self.open_demo_project)):
            button = QPushButton(label)
            button.setMaximumWidth(260)
            button.clicked.connect(slot)
            layout.addWidget(button, 0, Qt.AlignHCenter)
        layout.addStretch(2)
        return page

    def _add(self, menu: QMenu, text: str, slot, shortcut=None, icon_name: str | None = None) -> QAction:
        from PySide6.QtGui import QAction

        action = QAction(ui.icon(icon_name) if icon_name else ui.icon("none"), text, self)
        if shortcut is not None:
            action.setShortcut(shortcut)
        action.triggered.connect(lambda checked=False: slot())
        menu.addAction(action)
        return action

    def _make_menus(self) -> None:
        from PySide6.QtGui import QAction, QKeySequence

        bar = self.menuBar()
        self.file_menu = bar.addMenu("&File")
        self.new_action = self._add(self.file_menu, "&New project…", self.new_project,
                                    QKeySequence.New, "new")
        self.open_action = self._add(self.file_menu, "&Open project…", self.open_project_dialog,
                                     QKeySequence.Open, "open")
        self.open_read_only_action = self._add(
            self.file_menu, "Open read-&only…", lambda: self.open_project_dialog(read_only=True))
        self.recent_menu = self.file_menu.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        self._fill_recent_menu()
        self.file_menu.addSeparator()
        self.new_document_action = self._add(self.file_menu, "New &document", self.new_document,
                                             QKeySequence("Ctrl+Shift+N"), "document")
        self.import_action = self._add(self.file_menu, "&Import files…", self.import_files,
                                       QKeySequence("Ctrl+I"), "import")
        self.export_action = self._add(self.file_menu, "Save project &as / export…",
                                       self.export_project, QKeySequence.SaveAs, "export")
        self.file_menu.addSeparator()
        self.close_project_action = self._add(self.file_menu, "&Close project", self.close_project,
                                              QKeySequence("Ctrl+Shift+W"))
        self.quit_action = self._add(self.file_menu, "&Quit", self.close, QKeySequence.Quit)
        self.quit_action.setMenuRole(QAction.QuitRole)

        self.view_menu = bar.addMenu("&View")
        self.editor_view_action = self._add(self.view_menu, "&Editor", self.show_editor_view,
                                            QKeySequence("Ctrl+1"), "editor")
        self.canvas_view_action = self._add(self.view_menu, "&Canvas", self.show_canvas_view,
                                            QKeySequence("Ctrl+2"), "canvas")
        self.view_menu.addSeparator()
        self.view_menu.addAction(self.browser_dock.toggleViewAction())
        self.view_menu.addAction(self.jobs_dock.toggleViewAction())

        self.help_menu = bar.addMenu("&Help")
        self._add(self.help_menu, "&About Lienzo", self.show_about)

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = ui.recent_projects()
        for path in recent:
            action = self.recent_menu.addAction(Path(path).name)
            action.setToolTip(path)
            action.setStatusTip(path)
            action.triggered.connect(lambda checked=False, p=path: self.open_project(p))
        if not recent:
            self.recent_menu.addAction("(none yet)").setEnabled(False)

    # -- projects -----------------------------------------------------------------------------
    def open_project(self, path: str | Path, create: bool = False, read_only: bool = False) -> bool:
        """Open (or create) a project. On failure the message and hint are shown; the window
        stays as it was, with the previous project still open."""
        from core.project import Project  # sqlite-utils loads here, after the window exists

        path = Path(path)
        try:
            project = Project.create(path) if create else Project.open(path, read_only=read_only)
        except AppError as exc:
            if not create and not path.exists():
                ui.remove_recent_project(str(path.resolve()))  # gone: drop it from Open recent
            ui.error_box(self, exc, "Could not open the project" if not create
                         else "Could not create the project")
            return False
        self.close_project()
        self.project = project
        self.project_path = path
        from core.jobs import JobRunner
        from desktop.canvas import CanvasPanel
        from desktop.jobs_qt import QtJobs
        from desktop.project_qt import ProjectSignals

        self.jobs = QtJobs(JobRunner(project), self)
        self.jobs.finished.connect(self._job_finished)
        self.jobs.failed.connect(self._job_failed)
        self.job_panel.set_jobs(self.jobs)
        self.signals = ProjectSignals(project, self)
        self.signals.changed.connect(self._project_changed)
        self.browser.set_project(project)
        self.canvas = CanvasPanel(project)
        self.canvas.status_message.connect(self.pixel_label.setText)
        self.workspace.addTab(self.canvas, ui.icon("canvas"), "Canvas")
        documents = project.list_documents()
        if documents:
            self.open_document(documents[0]["id"])
        ui.add_recent_project(str(path.resolve()))
        self._update_project_state()
        self.project_opened.emit(project)
        return True

    def open_project_dialog(self, read_only: bool = False) -> bool:
        start = str(self.project_path.parent) if self.project_path else str(Path.home())
        title = "Open project read-only" if read_only else "Open project"
        from PySide6.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(self, title, start, PROJECT_FILTER)
        return self.open_project(path, read_only=read_only) if path else False

    def open_demo_project(self) -> bool:
        from core.demo import ensure_demo_project

        return self.open_project(ensure_demo_project())

    def new_project(self, path: str | Path | None = None) -> bool:
        if path is None:
            from PySide6.QtWidgets import QFileDialog

            path, _ = QFileDialog.getSaveFileName(self, "New project", str(Path.home() / "Untitled.lienzo"),
                                                  PROJECT_FILTER)
            if not path:
                return False
        path = Path(path)
        if path.suffix != ".lienzo":
            path = path.with_name(path.name + ".lienzo")
        return self.open_project(path, create=True)

    def close_project(self) -> None:
        """Save editors, stop jobs, close the file. Safe to call with nothing open."""
        if self.project is None:
            return
        for editor in self.editors():
            editor.flush()
        if self.signals is not None:
            self.signals.detach()
            self.signals.deleteLater()
            self.signals = None
        if self.jobs is not None:
            # Jobs are asked to stop; one stuck where it cannot check (a library import, a long
            # model call) is not waited for long: its later writes fail cleanly on the closed file.
            self.jobs.shutdown(timeout=self.job_shutdown_timeout)
            self.job_panel.set_jobs(None)
            self.jobs.deleteLater()
            self.jobs = None
        while self.workspace.count():
            widget = self.workspace.widget(0)
            self.workspace.removeTab(0)
            widget.deleteLater()
        self.canvas = None
        self.browser.set_project(None)
        project, self.project = self.project, None
        try:
            project.close()
        except AppError as exc:
            ui.error_box(self, exc)
        self.project_path = None
        self._update_project_state()
        self.project_closed.emit()

    def export_project(self, dest: str | Path | None = None) -> Path | None:
        """Save a copy of the whole project (a consistent snapshot) under another name."""
        if self.project is None:
            return None
        if dest is None:
            suggestion = self.project_path.with_name(self.project_path.stem + " copy.lienzo")
            from PySide6.QtWidgets import QFileDialog

            dest, _ = QFileDialog.getSaveFileName(self, "Save a copy of the project as",
                                                  str(suggestion), PROJECT_FILTER)
            if not dest:
                return None
        for editor in self.editors():
            editor.flush()
        try:
            self.project.export_copy(dest)
        except AppError as exc:
            ui.error_box(self, exc, "Export failed")
            return None
        self.statusBar().showMessage(f"Project saved as {dest}", 5000)
        return Path(dest)

    def _update_project_state(self) -> None:
        has = self.project is not None
        self.central.setCurrentWidget(self.workspace if has else self.no_project)
        for action in (self.export_action, self.close_project_action,
                       self.editor_view_action, self.canvas_view_action):
            action.setEnabled(has)
        writable = has and not self.project.read_only
        self.import_action.setEnabled(writable)
        self.new_document_action.setEnabled(writable)
        self.browser.setEnabled(has)
        if has:
            read_only = " (read-only)" if getattr(self.project, "read_only", False) else ""
            self.setWindowTitle(f"{self.project_path.stem}{read_only} — Lienzo")
            shown = str(self.project_path)
            home = str(Path.home())
            if shown.startswith(home + "/"):
                shown = "~" + shown[len(home):]
            self.project_label.setText(shown)
            self.project_label.setToolTip(str(self.project_path))
        else:
            self.setWindowTitle("Lienzo")
            self.project_label.setText("No project")

    # -- project changes ----------------------------------------------------------------------
    def _project_changed(self, tables: set) -> None:
        self.browser.refresh(tables)
        if self.canvas is not None and any(t.startswith("image") for t in tables):
            self.canvas.refresh()
        if any(t.startswith("document") for t in tables):
            self._sync_editor_titles()

    def _sync_editor_titles(self) -> None:
        titles = {d["id"]: d.get("title", "") for d in self.project.list_documents()}
        for index in range(self.workspace.count()):
            widget = self.workspace.widget(index)
            if _is_editor(widget):
                if widget.document_id not in titles:
                    continue
                widget.title = titles[widget.document_id]
                self._set_editor_tab_text(widget)

    def _item_deleted(self, kind: str, row_id: int) -> None:
        if kind == "documents":
            for index in reversed(range(self.workspace.count())):
                widget = self.workspace.widget(index)
                if _is_editor(widget) and widget.document_id == row_id:
                    widget.autosave_timer.stop()
                    widget._dirty = False  # the document is gone: nothing to save
                    self.workspace.removeTab(index)
                    widget.deleteLater()

    # -- workspace ----------------------------------------------------------------------------
    def editors(self) -> list[EditorPanel]:
        return [self.workspace.widget(i) for i in range(self.workspace.count())
                if _is_editor(self.workspace.widget(i))]

    def editor_for(self, document_id: int) -> EditorPanel | None:
        for editor in self.editors():
            if editor.document_id == document_id:
                return editor
        return None

    def current_editor(self) -> EditorPanel | None:
        widget = self.workspace.currentWidget()
        return widget if _is_editor(widget) else None

    def open_document(self, document_id: int) -> EditorPanel | None:
        if self.project is None:
            return None
        editor = self.editor_for(document_id)
        if editor is None:
            from desktop.editor import EditorPanel

            try:
                editor = EditorPanel(self.project, document_id)
            except AppError as exc:
                ui.error_box(self, exc)
                return None
            editor.dirty_changed.connect(lambda _d, e=editor: self._set_editor_tab_text(e))
            editor.title_changed.connect(lambda _t, e=editor: self._set_editor_tab_text(e))
            self.workspace.addTab(editor, ui.icon("document"), editor.title)
            self._set_editor_tab_text(editor)
            self.editor_opened.emit(editor)
        self.workspace.setCurrentWidget(editor)
        editor.text_edit.setFocus()
        return editor

    def _set_editor_tab_text(self, editor: EditorPanel) -> None:
        index = self.workspace.indexOf(editor)
        if index >= 0:
            self.workspace.setTabText(index, ("• " if editor.dirty else "") + editor.title)
            self.workspace.setTabToolTip(index, f"{editor.title} ({editor.format})")

    def new_document(self, title: str = "Untitled") -> EditorPanel | None:
        if self.project is None:
            return None
        try:
            document_id = self.project.create_document(title, "", format="markdown")
        except AppError as exc:
            ui.error_box(self, exc)
            return None
        return self.open_document(document_id)

    def close_tab(self, index: int) -> None:
        widget = self.workspace.widget(index)
        if _is_editor(widget):
            widget.flush()
        if widget is self.canvas:
            self.workspace.removeTab(index)  # kept: View ▸ Canvas brings it back
            return
        self.workspace.removeTab(index)
        widget.deleteLater()

    def ensure_canvas(self) -> CanvasPanel | None:
        if self.canvas is None:
            return None
        if self.workspace.indexOf(self.canvas) < 0:
            self.workspace.addTab(self.canvas, ui.icon("canvas"), "Canvas")
        return self.canvas

    def show_image(self, image_id: int) -> None:
        canvas = self.ensure_canvas()
        if canvas is not None:
            canvas.show_image(image_id)
            self.workspace.setCurrentWidget(canvas)

    def show_editor_view(self) -> None:
        if self.project is None:
            return
        editor = self.current_editor() or (self.editors()[0] if self.editors() else None)
        if editor is None:
            documents = self.project.list_documents()
            editor = self.open_document(documents[0]["id"]) if documents else self.new_document()
        if editor is not None:
            self.workspace.setCurrentWidget(editor)

    def show_canvas_view(self) -> None:
        canvas = self.ensure_canvas()
        if canvas is not None:
            self.workspace.setCurrentWidget(canvas)

    def register_view(self, name: str, show: Callable[[], None]) -> None:
        """Later features add views (`--view NAME`) here."""
        self.views[name] = show

    def show_view(self, name: str) -> None:
        show = self.views.get(name)
        if show is None:
            raise AppError(f"Unknown view “{name}”.",
                           "Available views: " + ", ".join(sorted(self.views)) + ".")
        show()

    # -- imports (as a job, so big imports never freeze the window) ---------------------------
    def import_files(self, paths: list[str] | None = None):
        if self.project is None or self.jobs is None:
            return None
        if self.project.read_only:
            ui.error_box(self, AppError("This project is open read-only, so nothing can be imported.",
                                        "Open it normally (File ▸ Open project…) to import files."))
            return None
        if not paths:
            from PySide6.QtWidgets import QFileDialog

            paths, _ = QFileDialog.getOpenFileNames(
                self, "Import files", str(Path.home()),
                "Images and text (*.png *.jpg *.jpeg *.bmp *.tif *.tiff *.webp *.txt *.md);;All files (*)")
            if not paths:
                return None
        from desktop.browser import import_files_job

        handle = self.jobs.submit(import_files_job, {"paths": [str(p) for p in paths]},
                                  kind="import", title=f"Import {len(paths)} file(s)")
        self._import_jobs.add(handle.id)
        return handle

    def _job_finished(self, handle) -> None:
        if handle.id not in self._import_jobs:
            return
        self._import_jobs.discard(handle.id)
        result = handle.result or {}
        self.last_import = result
        images, documents = len(result.get("images", [])), len(result.get("documents", []))
        skipped = result.get("skipped", [])
        summary = f"Imported {images} image(s) and {documents} document(s)."
        self.statusBar().showMessage(summary, 8000)
        if skipped:
            lines = "\n".join(f"• {Path(p).name}: {reason}" for p, reason in skipped[:30])
            more = f"\n… and {len(skipped) - 30} more" if len(skipped) > 30 else ""
            self.import_report_box = ui.info_box(
                self, "Import", f"{summary} {len(skipped)} file(s) were skipped:", lines + more)
        if result.get("documents") and not result.get("images"):
            self.open_document(result["documents"][-1])
        elif result.get("images"):
            self.show_image(result["images"][-1])

    def _job_failed(self, handle) -> None:
        self._import_jobs.discard(handle.id)
        if handle.error is not None:
            self.statusBar().showMessage(handle.error.message, 8000)

    # -- window state -------------------------------------------------------------------------
    def restore_window_state(self, geometry: bool = True, state: bool = True) -> None:
        """Size and place the window, and put docks and toolbars back where the user left them."""
        from PySide6.QtCore import QByteArray

        store = ui.settings()
        if geometry:
            saved = store.value("window/geometry")
            if isinstance(saved, QByteArray) and not saved.isEmpty():
                self.restoreGeometry(saved)
            else:
                width, height = ui.setting_default("window_size", [1280, 800])
                self.resize(width, height)
        if state:
            saved = store.value("window/state")
            if isinstance(saved, QByteArray) and not saved.isEmpty():
                self.restoreState(saved)

    def save_window_state(self) -> None:
        store = ui.settings()
        store.setValue("window/geometry", self.saveGeometry())
        store.setValue("window/state", self.saveState())
        store.sync()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.save_window_state()
        self.close_project()
        super().closeEvent(event)

    def show_about(self) -> None:
        import core

        ui.info_box(self, "About Lienzo", f"Lienzo {core.__version__}",
                    "An offline studio for text, images and visual inspection, with local models.")
