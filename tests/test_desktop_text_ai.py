"""The text studio in the real editor (offscreen): streaming, Stop, one-step undo, rewrite, templates,
summarise/translate, classify, search jumps, model picker — tiny real models through the job runner."""

from __future__ import annotations

import pytest
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import QMessageBox

from core.jobs import JobRunner
from core.models import registry
from core.project import Project
from desktop.editor import EditorPanel
from desktop.editor.ai_studio import EditorAI, TextStudio
from desktop.editor.ai_widgets import GenerationControls, TemplateDialog
from desktop.jobs_qt import QtJobs
from tests.tiny_models import build_gpt2, shared_tiny

TIMEOUT = 30_000


@pytest.fixture(scope="module")
def long_gpt2(tmp_path_factory):
    # A long context, so a generation runs long enough to be stopped half-way.
    return build_gpt2(tmp_path_factory.mktemp("long") / "gpt2", n_positions=2048)


@pytest.fixture(scope="module")
def model_infos(long_gpt2):
    return [registry.inspect_model(long_gpt2, name="long gpt2"),
            registry.inspect_model(shared_tiny("gpt2-chat"), name="chat gpt2"),
            registry.inspect_model(shared_tiny("t5"), name="tiny t5"),
            registry.inspect_model(shared_tiny("classifier"), name="tiny classifier"),
            registry.inspect_model(shared_tiny("encoder"), name="tiny encoder")]


@pytest.fixture
def env(qtbot, tmp_path, model_infos):
    project = Project.create(tmp_path / "ai.lienzo")
    jobs = QtJobs(JobRunner(project))
    panels: dict[int, EditorPanel] = {}

    def open_document(doc_id):
        if doc_id not in panels:
            panels[doc_id] = EditorPanel(project, doc_id)
            qtbot.addWidget(panels[doc_id])
            EditorAI(panels[doc_id], studio)
        return panels[doc_id]

    studio = TextStudio(jobs=jobs, project=project, open_document=open_document,
                        current_editor=lambda: next(iter(panels.values()), None))
    qtbot.addWidget(studio)
    studio.set_models(model_infos)
    doc = project.create_document("Story", "Once upon a time, the harbour was quiet.")
    panel = open_document(doc)
    panel.show()
    studio.controls.seed.setValue(11)
    yield project, jobs, studio, panel, panels
    jobs.shutdown()
    project.close()


def wait_end(qtbot, ai):
    with qtbot.waitSignal(ai.generation_ended, timeout=TIMEOUT) as blocker:
        pass
    return blocker.args[0]


def error_boxes(widget):
    return [b for b in widget.findChildren(QMessageBox) if b.objectName() == "ErrorBox"]


def test_continue_streams_into_the_editor_and_one_undo_removes_it(qtbot, env):
    project, jobs, studio, panel, _ = env
    original = panel.text()
    studio.controls.max_new.setValue(40)
    cursor = panel.text_edit.textCursor()
    cursor.movePosition(QTextCursor.End)
    panel.text_edit.setTextCursor(cursor)
    growth = []
    panel.text_edit.textChanged.connect(lambda: growth.append(len(panel.text())))
    with qtbot.waitSignal(panel.ai.generation_ended, timeout=TIMEOUT) as ended:
        job = panel.ai.continue_at_cursor()
        assert panel.text_edit.isReadOnly()  # nothing typed can land inside the generation
    assert ended.args == ["finished"] and job.status == "done"
    generated = job.result["text"]
    assert panel.text() == original + generated and generated
    assert len(set(growth)) >= 2  # the text arrived in several pieces
    assert not panel.text_edit.isReadOnly()
    gen = project.list_generations("text")[0]
    assert gen["output"] == generated and gen["document_id"] == panel.document_id and gen["seed"] == 11
    panel.text_edit.undo()
    assert panel.text() == original  # one undo removes the whole generation
    panel.text_edit.redo()
    assert panel.text() == original + generated


def test_stop_midway_keeps_partial_text_and_undo_removes_it(qtbot, env):
    project, jobs, studio, panel, _ = env
    original = panel.text()
    studio.controls.max_new.setValue(1500)
    stopped = []

    def stop_on_first_text(handle, step, total, message, preview):
        if panel.ai.job is not None and preview and preview.get("text") and not stopped:
            stopped.append(len(preview["text"]))
            panel.ai.stop_action.trigger()  # the Stop button

    jobs.progress.connect(stop_on_first_text)
    panel.text_edit.moveCursor(QTextCursor.End)
    job = panel.ai.continue_at_cursor()
    assert wait_end(qtbot, panel.ai) == "cancelled"
    assert job.status == "cancelled" and stopped
    partial = panel.text()[len(original):]
    assert panel.text().startswith(original) and partial
    gen = project.list_generations("text")[0]
    assert gen["params"]["finish"] == "cancelled" and gen["output"] == partial
    assert gen["params"]["new_tokens"] < 1500
    assert panel.ai.stop_action.isEnabled() is False and panel.ai.continue_action.isEnabled()
    panel.text_edit.undo()
    assert panel.text() == original


def test_escape_stops_a_generation_even_with_the_find_bar_open(qtbot, env):
    """Esc is both Stop and "close the find bar": while generating it stops the generation (it
    used to be ambiguous, so neither happened); then it closes the find bar again."""
    from PySide6.QtCore import Qt

    project, jobs, studio, panel, _ = env
    studio.controls.max_new.setValue(1500)
    panel.find_action.trigger()
    assert panel.find_bar.isVisible()
    pressed = []

    def press_escape_on_first_text(handle, step, total, message, preview):
        if panel.ai.job is not None and preview and preview.get("text") and not pressed:
            pressed.append(True)
            qtbot.keyClick(panel.find_bar.find_edit, Qt.Key_Escape)

    jobs.progress.connect(press_escape_on_first_text)
    panel.text_edit.moveCursor(QTextCursor.End)
    job = panel.ai.continue_at_cursor()
    assert wait_end(qtbot, panel.ai) == "cancelled"
    assert pressed and job.status == "cancelled"
    assert panel.find_bar.isVisible()  # that Esc was the Stop
    qtbot.keyClick(panel.find_bar.find_edit, Qt.Key_Escape)
    assert not panel.find_bar.isVisible()
    # The other toolbar shortcut works from the text too: Ctrl+Return continues writing.
    studio.controls.max_new.setValue(4)
    with qtbot.waitSignal(panel.ai.generation_ended, timeout=TIMEOUT) as ended:
        qtbot.keyClick(panel.text_edit, Qt.Key_Return, Qt.ControlModifier)
    assert ended.args == ["finished"]


def test_rewrite_selection_replaces_it_in_one_undo_step(qtbot, env):
    project, jobs, studio, panel, _ = env
    studio.pickers["causal-lm"].select(str(shared_tiny("gpt2-chat")))
    studio.controls.max_new.setValue(12)
    original = panel.text()
    start = original.index("the harbour")
    cursor = panel.text_edit.textCursor()
    cursor.setPosition(start)
    cursor.setPosition(start + len("the harbour"), QTextCursor.KeepAnchor)
    panel.text_edit.setTextCursor(cursor)
    job = panel.ai.rewrite_selection("Make it more formal")
    assert wait_end(qtbot, panel.ai) == "finished"
    new_text = job.result["text"]
    assert panel.text() == original[:start] + new_text + original[start + len("the harbour"):]
    assert "Make it more formal" in job.result["prompt"]
    panel.text_edit.undo()
    assert panel.text() == original


def test_empty_selection_and_missing_model_are_clear_errors(qtbot, env):
    project, jobs, studio, panel, _ = env
    panel.text_edit.moveCursor(QTextCursor.End)
    assert panel.ai.rewrite_selection("Shorter") is None
    boxes = error_boxes(panel)
    assert boxes and "no text to rewrite" in boxes[-1].text() and "Select" in boxes[-1].informativeText()
    studio.set_models([])
    assert panel.ai.continue_at_cursor() is None
    assert "No text generator is chosen" in error_boxes(panel)[-1].text()
    assert not panel.text_edit.isReadOnly() and panel.ai.job is None


def test_template_dialog_and_generation(qtbot, env):
    project, jobs, studio, panel, _ = env
    from core.text import templates

    dialog = TemplateDialog(templates.list_templates(), panel, current="report")
    qtbot.addWidget(dialog)
    assert set(dialog.inputs) == {"subject", "period", "data", "audience"}
    dialog.accept()  # required fields empty: refused with a message, dialog stays
    assert dialog.result() == 0 and "Fill in" in error_boxes(dialog)[-1].text()
    dialog.set_value("subject", "Paper costs")
    dialog.set_value("data", "Costs rose 12 %.")
    dialog.accept()
    assert dialog.result() == TemplateDialog.Accepted
    assert dialog.suggested_settings()["max_new_tokens"] == 450

    studio.pickers["causal-lm"].select(str(shared_tiny("gpt2-chat")))
    panel.text_edit.moveCursor(QTextCursor.End)
    before = panel.text()
    job = panel.ai.generate_from_template("social_media_post", {"message": "Launch day!"})
    assert wait_end(qtbot, panel.ai) == "finished"
    assert panel.text() == before + job.result["text"]
    assert "Launch day!" in job.result["prompt"] and job.result["new_tokens"] <= 80
    assert project.list_generations()[0]["params"]["template"] == "social_media_post"


def test_summarise_into_new_document_and_translate_in_place(qtbot, env):
    project, jobs, studio, panel, panels = env
    studio.controls.max_new.setValue(8)
    job = panel.ai.summarize()
    assert wait_end(qtbot, panel.ai) == "finished"
    new_id = panel.ai.last_new_document
    new_doc = project.get_document(new_id)
    assert new_doc["title"] == "Summary of Story" and new_doc["text"] == job.result["text"]
    assert new_id in panels  # opened in the editor
    original = panel.text()
    studio.output_choice.setCurrentIndex(studio.output_choice.findData("in_place"))
    studio.target_language.setCurrentText("French")
    job = panel.ai.translate()
    assert wait_end(qtbot, panel.ai) == "finished"
    assert job.result["prefix"] == "translate English to French: "
    assert panel.text() == job.result["text"]
    panel.text_edit.undo()
    assert panel.text() == original


def test_classify_shows_labels_and_scores(qtbot, env):
    project, jobs, studio, panel, _ = env
    studio.pickers["sequence-classifier"].select(str(shared_tiny("classifier")))
    panel.ai.classify()
    assert wait_end(qtbot, panel.ai) == "finished"
    rows = studio.classify_view.scores()
    assert {label for label, _ in rows} == {"negative", "positive"}
    assert all(score.endswith("%") for _, score in rows)
    assert studio.tabs.currentIndex() == 2


def test_search_results_jump_to_the_passage(qtbot, env):
    project, jobs, studio, panel, panels = env
    target = project.create_document("Lighthouse", "Intro line.\n\n" + "The keeper counted ships at dawn. " * 3)
    studio.pickers["sentence-encoder"].select(str(shared_tiny("encoder")))
    with qtbot.waitSignal(jobs.finished, timeout=TIMEOUT):
        studio.search("keeper ships", "hybrid", 5)
    qtbot.waitUntil(lambda: studio.search_panel.results.count() > 0, timeout=TIMEOUT)
    item = studio.search_panel.results.item(0)
    doc_id, start, end = item.data(0x0100)
    assert doc_id == target
    studio.search_panel._activated(item)
    editor = panels[target]
    selected = editor.text_edit.textCursor().selectedText().replace("\u2029", "\n")
    assert selected == project.get_document(target)["text"][start:end] and "keeper" in selected
    studio.search("   ")
    assert "empty" in error_boxes(studio)[-1].text()
    # After a search, saving a document schedules an incremental index update.
    project.save_document(target, project.get_document(target)["text"] + "\n\nA lantern burned all night.")
    panels[target].document_saved.emit(target, 2)
    assert studio.index_timer.isActive()
    with qtbot.waitSignal(jobs.finished, timeout=TIMEOUT) as done:
        studio.update_index()
    assert done.args[0].result["updated"] == 1 and done.args[0].result["embedded"] == 1


def test_model_picker_lists_registers_and_refuses_bad_folders(qtbot, env, tmp_path):
    project, jobs, studio, panel, _ = env
    with qtbot.waitSignal(jobs.finished, timeout=TIMEOUT):
        studio.register_model(str(shared_tiny("classifier")), name="my classifier")
    assert studio.pickers["sequence-classifier"].combo.currentText().startswith("my classifier")
    assert project.list_models()[0]["name"] == "my classifier"  # also recorded in the project
    with qtbot.waitSignal(jobs.finished, timeout=TIMEOUT):
        studio.refresh_models(scan_cache=False)
    encoders = [studio.pickers["sentence-encoder"].combo.itemText(i)
                for i in range(studio.pickers["sentence-encoder"].combo.count())]
    assert any(registry.MINILM_NAME in e for e in encoders)
    (tmp_path / "not_a_model").mkdir()
    with qtbot.waitSignal(jobs.failed, timeout=TIMEOUT):
        studio.register_model(str(tmp_path / "not_a_model"))
    assert "holds no model weights" in error_boxes(studio)[-1].text()


def test_generation_controls_presets_and_validation(qtbot):
    controls = GenerationControls()
    qtbot.addWidget(controls)
    controls.apply_preset("deterministic")
    assert controls.settings()["temperature"] == 0.0 and controls.settings()["seed"] is None
    controls.apply_preset("creative")
    controls.stop.setText(r"\n\n ; THE END")
    assert controls.settings()["stop"] == ["\n\n", "THE END"]
    controls.seed.setValue(42)
    assert controls.settings()["seed"] == 42


def test_main_window_gets_the_dock_and_every_editor_its_actions(qtbot, tmp_path, monkeypatch):
    from desktop.editor.ai_studio import attach_to_window
    from desktop.main_window import MainWindow

    monkeypatch.setattr(MainWindow, "extensions", [attach_to_window])
    path = tmp_path / "win.lienzo"
    with Project.create(path) as project:
        project.create_document("Chapter 1", "It was a dark and stormy night.")
    window = MainWindow()
    qtbot.addWidget(window)
    assert window.open_project(path)
    try:
        assert window.text_dock.widget() is window.text_studio
        editor = window.current_editor()
        assert isinstance(editor.ai, EditorAI)
        assert any(a.text() == "Continue writing" for a in editor.actions_menu.actions())
        picker = window.text_studio.pickers["sentence-encoder"]
        qtbot.waitUntil(lambda: picker.path() is not None, timeout=TIMEOUT)  # models listed in a job
        assert registry.MINILM_NAME in picker.combo.currentText()
        second = window.new_document("Chapter 2")
        assert isinstance(second.ai, EditorAI) and second.ai is not editor.ai
    finally:
        window.close_project()


def test_text_ai_dock_follows_editor_tabs(qtbot, tmp_path):
    """The Text AI dock shows with an editor tab and gives its room back to the canvas."""
    from core.project import Project
    from desktop.editor import ai_studio
    from desktop.main_window import MainWindow

    ai_studio.install()
    project = Project.create(tmp_path / "dock.lienzo")
    doc_id = project.create_document("Draft", "Some words.")
    project.close()
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    window.open_project(str(tmp_path / "dock.lienzo"))
    editor = window.open_document(doc_id)
    qtbot.waitUntil(lambda: window.current_editor() is editor)
    assert window.text_dock.isVisible()
    window.workspace.setCurrentWidget(window.canvas)
    assert not window.text_dock.isVisible()
    window.workspace.setCurrentWidget(editor)
    assert window.text_dock.isVisible()
    window.close()
