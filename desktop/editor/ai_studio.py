"""The text studio in the editor: continue, rewrite, templates, summarise, translate, classify, search.

`TextStudio` is the "Text AI" dock of a window: model pickers, generation controls, results.
`EditorAI` attaches to one EditorPanel: its actions submit core.text jobs through the window's
QtJobs and stream the answer into the document. Models never load or run on the GUI thread.

Hooking in: `install()` adds `attach_to_window` to MainWindow.extensions; it builds the dock and
attaches an EditorAI to every editor the window opens.
"""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence, QTextCursor
from PySide6.QtWidgets import (QComboBox, QDockWidget, QFileDialog, QFormLayout, QHBoxLayout,
                               QInputDialog, QLabel, QPushButton, QTabWidget, QVBoxLayout, QWidget)

from core.errors import AppError
from desktop import ui
from desktop.editor.ai_stream import StreamWriter
from desktop.editor.ai_widgets import (KIND_LABELS, ClassifyView, GenerationControls, ModelPicker,
                                       SearchPanel, TemplateDialog)

CAUSAL, SEQ2SEQ, CLASSIFIER, ENCODER = "causal-lm", "seq2seq", "sequence-classifier", "sentence-encoder"
REWRITE_INSTRUCTIONS = ["Make it shorter", "Make it more formal", "Make it friendlier", "Fix grammar and spelling",
                        "Make it clearer", "Expand it with more detail"]
LANGUAGES = ["English", "German", "French", "Romanian", "Spanish"]


# -- jobs run on the compute worker (module-level, no Qt) ---------------------------------------
def list_models_job(params: dict, ctx) -> dict:
    """Registered models, models in the Hugging Face cache and the bundled encoder, by kind."""
    from core.models import registry

    ctx.progress(0, 0, "Looking for models…")
    models = registry.ModelRegistry().list()
    if params.get("scan_cache", True):
        found, skipped = registry.find_cached_models()
        models += found
    try:
        encoder = registry.inspect_model(registry.default_encoder_path(), name=registry.MINILM_NAME, source="bundled")
        models.append(encoder)
    except AppError:
        pass  # the package is missing: search offers other encoders only
    seen, out = set(), []
    for info in models:
        if info.path not in seen:
            seen.add(info.path)
            out.append(info)
    return {"models": out}


def register_model_job(params: dict, ctx) -> dict:
    """Inspect, hash and register a model; also recorded in the open project."""
    from core.models import registry

    ctx.progress(0, 0, "Checking the model…")
    info = registry.ModelRegistry().register(params["path"], params.get("name"), project=ctx.project,
                                             progress=lambda d, t, m: ctx.progress(d, t, m),
                                             cancelled=lambda: ctx.cancelled)
    return {"model": info}


class TextStudio(QWidget):
    """The Text AI dock's content; holds the model choices and settings shared by all editors."""

    models_changed = Signal()

    def __init__(self, jobs: Callable[[], object] | object, project: Callable[[], object] | object = None,
                 open_document: Callable[[int], object] | None = None,
                 current_editor: Callable[[], object] | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("TextStudio")
        self._jobs = jobs if callable(jobs) else (lambda: jobs)
        self._project = project if callable(project) else (lambda: project)
        self._open_document = open_document
        self._current_editor = current_editor or (lambda: None)
        self.models: list = []
        self.pickers = {kind: ModelPicker(kind) for kind in (CAUSAL, SEQ2SEQ, CLASSIFIER, ENCODER)}
        for picker in self.pickers.values():
            picker.add_requested.connect(self.add_model_dialog)
        self.controls = GenerationControls()
        self.tabs = QTabWidget()
        self.tabs.setObjectName("TextStudioTabs")
        self.tabs.addTab(self._write_tab(), "Write")
        self.tabs.addTab(self._transform_tab(), "Summarise · Translate")
        self.tabs.addTab(self._analyse_tab(), "Classify")
        self.tabs.addTab(self._search_tab(), "Search")
        self.status = QLabel("")
        self.status.setObjectName("TextStudioStatus")
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.status)
        self._search_job = None
        self._index_job = None
        self._model_jobs: set[int] = set()
        self._connected_jobs = None
        self._searched = False
        # After the first search, saved documents are re-indexed once typing has paused, so the
        # next search is instant; before it, nothing loads the encoder just because text was saved.
        self.index_timer = QTimer(self)
        self.index_timer.setSingleShot(True)
        self.index_timer.setInterval(10_000)
        self.index_timer.timeout.connect(self.update_index)

    # -- tabs -----------------------------------------------------------------------------------
    def _editor_button(self, text: str, method: str, tip: str) -> QPushButton:
        button = QPushButton(text)
        button.setToolTip(tip)
        button.clicked.connect(lambda: self._on_editor(method))
        return button

    def _write_tab(self) -> QWidget:
        page = QWidget()
        form = QFormLayout()
        form.addRow("Model", self.pickers[CAUSAL])
        buttons = QHBoxLayout()
        self.continue_button = self._editor_button("Continue", "continue_at_cursor", "Write on from the cursor (Ctrl+Enter)")
        self.stop_button = self._editor_button("Stop", "stop", "Stop the running generation")
        self.rewrite_button = self._editor_button("Rewrite…", "rewrite_selection", "Rewrite the selection")
        self.template_button = self._editor_button("Template…", "generate_from_template", "Generate from a template")
        for b in (self.continue_button, self.stop_button, self.rewrite_button, self.template_button):
            buttons.addWidget(b)
        layout = QVBoxLayout(page)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.controls)
        layout.addStretch(1)
        return page

    def _transform_tab(self) -> QWidget:
        page = QWidget()
        self.source_language = QComboBox()
        self.source_language.addItems(LANGUAGES)
        self.target_language = QComboBox()
        self.target_language.addItems(LANGUAGES)
        self.target_language.setCurrentText("German")
        self.output_choice = QComboBox()
        self.output_choice.setObjectName("OutputChoice")
        self.output_choice.addItem("Into a new document", "new")
        self.output_choice.addItem("In place (replaces the text; Undo brings it back)", "in_place")
        form = QFormLayout()
        form.addRow("Model", self.pickers[SEQ2SEQ])
        form.addRow("From", self.source_language)
        form.addRow("To", self.target_language)
        form.addRow("Result", self.output_choice)
        buttons = QHBoxLayout()
        buttons.addWidget(self._editor_button("Summarise", "summarize", "Summarise the selection or the document"))
        buttons.addWidget(self._editor_button("Translate", "translate", "Translate the selection or the document"))
        layout = QVBoxLayout(page)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addStretch(1)
        return page

    def _analyse_tab(self) -> QWidget:
        page = QWidget()
        self.classify_view = ClassifyView()
        form = QFormLayout()
        form.addRow("Model", self.pickers[CLASSIFIER])
        layout = QVBoxLayout(page)
        layout.addLayout(form)
        layout.addWidget(self._editor_button("Classify", "classify",
                                             "Labels and scores (topic, sentiment …) of the selection or document"))
        layout.addWidget(self.classify_view, 1)
        return page

    def _search_tab(self) -> QWidget:
        page = QWidget()
        self.search_panel = SearchPanel()
        self.search_panel.search_requested.connect(self.search)
        self.search_panel.open_passage.connect(self.open_passage)
        form = QFormLayout()
        form.addRow("Encoder", self.pickers[ENCODER])
        layout = QVBoxLayout(page)
        layout.addLayout(form)
        layout.addWidget(self.search_panel, 1)
        return page

    # -- plumbing -------------------------------------------------------------------------------
    def jobs(self):
        jobs = self._jobs()
        if jobs is None:
            raise AppError("No project is open.", "Open or create a project first.")
        if jobs is not self._connected_jobs:  # a new project brings a new runner
            jobs.finished.connect(self._job_finished)
            jobs.failed.connect(self._job_failed)
            self._connected_jobs = jobs
        return jobs

    def project(self):
        return self._project()

    def model_path(self, kind: str) -> str:
        path = self.pickers[kind].path()
        if not path:
            raise AppError(f"No {KIND_LABELS[kind].lower()} is chosen.",
                           "Use Add… in the Text AI panel to register a model folder "
                           "(config.json, model.safetensors and tokenizer files).")
        return path

    def set_models(self, models: list) -> None:
        self.models = list(models)
        for kind, picker in self.pickers.items():
            picker.set_models([m for m in self.models if m.kind == kind])
        self.models_changed.emit()

    def refresh_models(self, scan_cache: bool = True):
        handle = self.jobs().submit(list_models_job, {"scan_cache": scan_cache}, kind="text.models",
                                    title="Find models", record=False)
        self._model_jobs.add(handle.id)
        return handle

    def add_model_dialog(self, kind: str = "") -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a model folder (config.json + .safetensors)")
        if folder:
            self.register_model(folder)

    def register_model(self, path: str, name: str | None = None):
        handle = self.jobs().submit(register_model_job, {"path": str(path), "name": name}, kind="text.register",
                                    title="Register model")
        self._model_jobs.add(handle.id)
        return handle

    def _job_finished(self, handle) -> None:
        if handle.id in self._model_jobs:
            self._model_jobs.discard(handle.id)
            if "models" in (handle.result or {}):
                self.set_models(handle.result["models"])
            elif "model" in (handle.result or {}):
                info = handle.result["model"]
                self.models = [m for m in self.models if m.path != info.path] + [info]
                self.set_models(self.models)
                self.pickers[info.kind].select(info.path) if info.kind in self.pickers else None
                self.status.setText(f"Registered {info.summary()}")
        elif self._search_job is not None and handle.id == self._search_job.id:
            self._search_job = None
            result = handle.result or {}
            self.search_panel.show_hits(result.get("hits", []))

    def _job_failed(self, handle) -> None:
        if handle.id in self._model_jobs or (self._search_job is not None and handle.id == self._search_job.id):
            self._model_jobs.discard(handle.id)
            if self._search_job is not None and handle.id == self._search_job.id:
                self._search_job = None
                self.search_panel.status.setText(handle.error.message if handle.error else "Search failed.")
            ui.error_box(self, handle.error or AppError("The job failed."), "Text AI")

    def _on_editor(self, method: str) -> None:
        editor = self._current_editor()
        ai = getattr(editor, "ai", None) if editor is not None else None
        if ai is None:
            ui.error_box(self, AppError("No document is open.", "Open a document in the editor first."), "Text AI")
            return
        getattr(ai, method)()

    # -- search ---------------------------------------------------------------------------------
    def search(self, query: str, mode: str = "hybrid", top_k: int = 10):
        from core.text.search import search_job

        try:
            if not query.strip():
                raise AppError("The search query is empty.", "Type a few words describing what you are looking for.")
            params = {"query": query, "mode": mode, "top_k": top_k, "encoder": self.pickers[ENCODER].path()}
            if self._search_job is not None:
                self._search_job.cancel()
            self.search_panel.status.setText("Searching…")
            self._search_job = self.jobs().submit(search_job, params, kind="text.search", title=f"Search “{query[:30]}”")
            self._searched = True
        except AppError as exc:
            ui.error_box(self, exc, "Search")
            return None
        return self._search_job

    def document_saved(self, *_args) -> None:
        if self._searched:
            self.index_timer.start()

    def update_index(self):
        """Bring the search index up to date in a job (incremental: only changed passages are embedded)."""
        from core.text.search import index_job

        if self._index_job is not None and self._index_job.status in ("queued", "running"):
            self.index_timer.start()  # still busy with the last one: try again later
            return None
        try:
            project = self.project()
            if project is None or getattr(project, "read_only", False):
                return None
            self._index_job = self.jobs().submit(index_job, {"encoder": self.pickers[ENCODER].path()},
                                                 kind="text.index", title="Update search index", record=False)
        except AppError:
            return None
        return self._index_job

    def open_passage(self, document_id: int, start: int, end: int):
        """Open the document and select the passage (the result's jump target)."""
        editor = self._open_document(document_id) if self._open_document else None
        if editor is None:
            return None
        cursor = QTextCursor(editor.text_edit.document())
        length = len(editor.text())
        cursor.setPosition(min(start, length))
        cursor.setPosition(min(end, length), QTextCursor.KeepAnchor)
        editor.text_edit.setTextCursor(cursor)
        editor.text_edit.ensureCursorVisible()
        editor.text_edit.setFocus()
        return editor


class EditorAI(QObject):
    """AI actions of one editor panel. At most one generation per editor at a time."""

    generation_started = Signal()
    generation_ended = Signal(str)  # finished | cancelled | failed

    def __init__(self, panel, studio: TextStudio):
        super().__init__(panel)
        self.panel = panel
        self.studio = studio
        self.job = None
        self.writer: StreamWriter | None = None
        self._pending: dict | None = None
        self._connected = None
        panel.ai = self
        panel.document_saved.connect(studio.document_saved)
        self.continue_action = self._menu_action("Continue writing", "Ctrl+Return", self.continue_at_cursor, toolbar=True)
        self.stop_action = self._menu_action("Stop", "Esc", self.stop, toolbar=True)
        self.stop_action.setEnabled(False)
        find_bar = getattr(panel, "find_bar", None)
        if find_bar is not None:  # while generating, Esc stops; afterwards it closes the find bar again
            self.generation_started.connect(lambda: find_bar.escape.setEnabled(False))
            self.generation_ended.connect(lambda _how: find_bar.escape.setEnabled(True))
        self.rewrite_action = self._menu_action("Rewrite selection…", "Ctrl+Shift+R", self.rewrite_selection)
        self.template_action = self._menu_action("Generate from template…", None, self.generate_from_template)
        self.summarize_action = self._menu_action("Summarise", None, self.summarize)
        self.translate_action = self._menu_action("Translate", None, self.translate)
        self.classify_action = self._menu_action("Classify / sentiment", None, self.classify)
        self.last_new_document: int | None = None

    def _menu_action(self, text: str, shortcut: str | None, slot, toolbar: bool = False) -> QAction:
        action = QAction(text, self.panel)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
            action.setShortcutContext(Qt.WidgetWithChildrenShortcut)
        action.triggered.connect(lambda _checked=False: slot())
        self.panel.add_menu_action(action)
        # On the panel too: a shortcut scoped to the toolbar alone only works while the toolbar has focus.
        self.panel.addAction(action)
        if toolbar:
            self.panel.toolbar.addAction(action)
        return action

    # -- state ----------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.job is not None

    def _error(self, exc: AppError) -> None:
        self.studio.status.setText(exc.message)
        ui.error_box(self.panel, exc, "Text AI")

    def _submit(self, fn, params: dict, kind: str, title: str, writer: StreamWriter | None = None,
                pending: dict | None = None):
        jobs = self.studio.jobs()
        if jobs is not self._connected:
            jobs.progress.connect(self._progress)
            jobs.finished.connect(self._finished)
            jobs.failed.connect(self._failed)
            jobs.cancelled.connect(self._cancelled)
            self._connected = jobs
        self.writer, self._pending = writer, pending or {}
        self.job = jobs.submit(fn, params, kind=kind, title=title)
        self.stop_action.setEnabled(True)
        for action in (self.continue_action, self.rewrite_action, self.template_action, self.summarize_action,
                       self.translate_action, self.classify_action):
            action.setEnabled(False)
        self.studio.status.setText(f"{title}…")
        self.generation_started.emit()
        return self.job

    def _end(self, how: str) -> None:
        if self.writer is not None:
            self.writer.finish()
        self.writer, self.job, self._pending = None, None, None
        self.stop_action.setEnabled(False)
        for action in (self.continue_action, self.rewrite_action, self.template_action, self.summarize_action,
                       self.translate_action, self.classify_action):
            action.setEnabled(True)
        self.generation_ended.emit(how)

    def _mine(self, handle) -> bool:
        return self.job is not None and handle.id == self.job.id

    def _progress(self, handle, step, total, message, preview) -> None:
        if not self._mine(handle):
            return
        if self.writer is not None and isinstance(preview, dict) and "text" in preview:
            self.writer.update(preview["text"])
        if isinstance(preview, dict) and preview.get("notice"):
            self.studio.status.setText(preview["notice"])
        elif message:
            self.studio.status.setText(message)

    def _finished(self, handle) -> None:
        if not self._mine(handle):
            return
        result = handle.result or {}
        pending = self._pending or {}
        if self.writer is not None and "text" in result:
            self.writer.update(result["text"])
        what = pending.get("what")
        if what in ("summarize", "translate"):
            self._place_transform(result, pending)
        elif what == "classify":
            scores = result["results"][0]
            self.studio.classify_view.show_scores(
                scores, f"{pending.get('scope', 'Text')} — {result.get('model', '')}")
            self.studio.tabs.setCurrentIndex(2)
        notices = " ".join(result.get("notices") or [])
        if "tokens_per_s" in result:
            self.studio.status.setText(
                f"{result['new_tokens']} tokens, {result['tokens_per_s']:.1f} tokens/s, seed {result['seed']}. {notices}")
        else:
            self.studio.status.setText(("Done. " + notices).strip())
        self._end("finished")

    def _cancelled(self, handle) -> None:
        if self._mine(handle):
            self.studio.status.setText("Stopped. Undo removes what was written.")
            self._end("cancelled")

    def _failed(self, handle) -> None:
        if self._mine(handle):
            error = handle.error or AppError("The job failed.")
            self._end("failed")
            self._error(error)

    # -- actions --------------------------------------------------------------------------------
    def stop(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def _selection(self) -> tuple[int, int, str]:
        cursor = self.panel.text_edit.textCursor()
        return cursor.selectionStart(), cursor.selectionEnd(), cursor.selectedText().replace("\u2029", "\n")

    def _check_ready(self) -> bool:
        if self.busy:
            self.studio.status.setText("Already working on this document; Stop it first.")
            return False
        if self.panel.text_edit.isReadOnly():
            self._error(AppError("This document is read-only.", "Open the project for writing to use AI actions."))
            return False
        return True

    def _generate(self, mode: str, params: dict, title: str, replace: tuple[int, int] | None = None,
                  settings_override: dict | None = None):
        from core.text.generate import generate_job

        if not self._check_ready():
            return None
        try:
            settings = {**self.studio.controls.settings(), **(settings_override or {})}
            full = {"model": self.studio.model_path(CAUSAL), "mode": mode, "settings": settings,
                    "document_id": self.panel.document_id, **params}
            if mode == "rewrite" and not full.get("text", "").strip():
                raise AppError("There is no text to rewrite.", "Select the text you want rewritten first.")
        except AppError as exc:
            self._error(exc)
            return None
        edit = self.panel.text_edit
        if replace is not None:
            writer = StreamWriter(edit, replace[0], replace_to=replace[1])
            writer.begin()  # the selection goes at once; one undo brings it back
        else:
            writer = StreamWriter(edit, edit.textCursor().position())
        return self._submit(generate_job, full, "text.generate", title, writer=writer, pending={"what": "generate"})

    def continue_at_cursor(self):
        cursor = self.panel.text_edit.textCursor()
        position = cursor.selectionEnd()
        cursor.clearSelection()
        cursor.setPosition(position)
        self.panel.text_edit.setTextCursor(cursor)
        return self._generate("continue", {"text": self.panel.text()[:position]}, f"Continue “{self.panel.title}”")

    def rewrite_selection(self, instruction: str | None = None):
        start, end, text = self._selection()
        if not text.strip():
            self._error(AppError("There is no text to rewrite.", "Select the text you want rewritten first."))
            return None
        if instruction is None:
            instruction, ok = QInputDialog.getItem(self.panel, "Rewrite selection", "How should it be rewritten?",
                                                   REWRITE_INSTRUCTIONS, 0, True)
            if not ok:
                return None
        return self._generate("rewrite", {"text": text, "instruction": instruction}, "Rewrite selection",
                              replace=(start, end))

    def generate_from_template(self, template_id: str | None = None, values: dict | None = None,
                               use_suggested: bool = True):
        from core.text import templates

        if values is None:
            try:
                dialog = TemplateDialog(templates.list_templates(), self.panel, current=template_id)
            except AppError as exc:
                self._error(exc)
                return None
            if dialog.exec() != TemplateDialog.Accepted:
                return None
            template_id, values = dialog.template.id, dialog.values()
            suggested = dialog.suggested_settings()
        else:
            suggested = dict(templates.get_template(template_id).settings) if use_suggested else {}
        override = {}
        if suggested.get("preset"):
            from core.text.settings import PRESETS

            override.update({k: v for k, v in PRESETS[suggested["preset"]].to_dict().items()
                             if k in ("temperature", "top_p", "top_k", "repetition_penalty")})
        if suggested.get("max_new_tokens"):
            override["max_new_tokens"] = int(suggested["max_new_tokens"])
        return self._generate("template", {"template": template_id, "fields": values}, "Generate from template",
                              settings_override=override)

    def _scope(self) -> tuple[int, int, str, str]:
        start, end, text = self._selection()
        if text.strip():
            return start, end, text, "Selection"
        whole = self.panel.text()
        return 0, len(whole), whole, "Document"

    def _transform(self, task: str):
        from core.text.seq2seq import run_seq2seq

        if not self._check_ready():
            return None
        start, end, text, scope = self._scope()
        try:
            if not text.strip():
                raise AppError(f"There is no text to {'summarise' if task == 'summarize' else 'translate'}.",
                               "Write or select some text first.")
            params = {"model": self.studio.model_path(SEQ2SEQ), "task": task, "text": text,
                      "source": self.studio.source_language.currentText(),
                      "target": self.studio.target_language.currentText(), "document_id": self.panel.document_id,
                      # The same length control as generation: per part for long texts.
                      "max_new_tokens": self.studio.controls.max_new.value()}
        except AppError as exc:
            self._error(exc)
            return None
        pending = {"what": task, "range": (start, end), "scope": scope,
                   "output": self.studio.output_choice.currentData()}
        title = ("Summarise" if task == "summarize" else "Translate") + f" “{self.panel.title}”"
        return self._submit(run_seq2seq, params, f"text.{task}", title, pending=pending)

    def summarize(self):
        return self._transform("summarize")

    def translate(self):
        return self._transform("translate")

    def _place_transform(self, result: dict, pending: dict) -> None:
        text = result.get("text", "")
        if pending.get("output") == "in_place":
            start, end = pending["range"]
            cursor = QTextCursor(self.panel.text_edit.document())
            cursor.beginEditBlock()  # one undo brings the original back
            cursor.setPosition(start)
            cursor.setPosition(end, QTextCursor.KeepAnchor)
            cursor.insertText(text)
            cursor.endEditBlock()
            return
        project = self.studio.project()
        label = "Summary" if pending["what"] == "summarize" else f"Translation ({self.studio.target_language.currentText()})"
        try:
            doc_id = project.create_document(f"{label} of {self.panel.title}", text, format="markdown")
        except AppError as exc:
            self._error(exc)
            return
        self.last_new_document = doc_id
        if self.studio._open_document:
            self.studio._open_document(doc_id)

    def classify(self):
        from core.text.classify import classify_job

        if self.busy:
            return None
        _, _, text, scope = self._scope()
        try:
            if not text.strip():
                raise AppError("There is no text to classify.", "Write or select some text first.")
            params = {"model": self.studio.model_path(CLASSIFIER), "text": text}
        except AppError as exc:
            self._error(exc)
            return None
        return self._submit(classify_job, params, "text.classify", f"Classify “{self.panel.title}”",
                            pending={"what": "classify", "scope": scope})


# -- window integration ---------------------------------------------------------------------------
def attach_to_window(window) -> TextStudio:
    """MainWindow extension: a Text AI dock, and AI actions on every editor the window opens."""
    studio = TextStudio(jobs=lambda: window.jobs, project=lambda: window.project,
                        open_document=window.open_document, current_editor=window.current_editor)
    dock = QDockWidget("Text AI", window)
    dock.setObjectName("TextAIDock")
    dock.setWidget(studio)
    dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetClosable)
    window.addDockWidget(Qt.RightDockWidgetArea, dock)
    window.text_studio, window.text_dock = studio, dock
    if hasattr(window, "view_menu"):
        window.view_menu.addAction(dock.toggleViewAction())

    def on_editor(editor) -> None:
        if getattr(editor, "ai", None) is None:
            EditorAI(editor, studio)

    # The dock serves editors only: it gives its width back to the canvas and the inspection view,
    # and comes back with an editor tab unless the user switched it off in the View menu.
    wanted = {"shown": True}
    dock.toggleViewAction().triggered.connect(lambda checked: wanted.update(shown=checked))

    def follow_tab(_index: int = -1) -> None:
        dock.setVisible(wanted["shown"] and window.current_editor() is not None)

    window.workspace.currentChanged.connect(follow_tab)
    follow_tab()

    window.editor_opened.connect(on_editor)
    for editor in getattr(window, "editors", lambda: [])():
        on_editor(editor)
    # Models are listed in a job once a project (and so a runner) exists.
    window.project_opened.connect(lambda _p: studio.refresh_models())
    if getattr(window, "jobs", None) is not None:
        studio.refresh_models()
    return studio


def install() -> None:
    from desktop.main_window import MainWindow

    if attach_to_window not in MainWindow.extensions:
        MainWindow.extensions.append(attach_to_window)
