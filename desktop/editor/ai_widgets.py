"""Widgets of the text studio: model picker, generation controls, template form, classify results,
semantic search. They only collect input and show results; model work runs in jobs (ai_studio)."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox,
                               QFormLayout, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QListWidget,
                               QListWidgetItem, QPlainTextEdit, QProgressBar, QPushButton, QSpinBox,
                               QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget)

from core.errors import AppError
from core.text.settings import PRESETS, GenerationSettings

KIND_LABELS = {
    "causal-lm": "Text generator",
    "seq2seq": "Summarise / translate model",
    "sequence-classifier": "Classifier",
    "sentence-encoder": "Search encoder",
}


class ModelPicker(QWidget):
    """A combo of the models of one kind (registered, found in the HF cache, bundled) + Add…"""

    add_requested = Signal(str)  # kind
    changed = Signal(str)        # path

    def __init__(self, kind: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.kind = kind
        self.combo = QComboBox()
        self.combo.setObjectName(f"ModelPicker-{kind}")
        self.combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(14)
        self.combo.currentIndexChanged.connect(lambda _i: self.changed.emit(self.path() or ""))
        self.add_button = QPushButton("Add…")
        self.add_button.setToolTip("Register a model folder (Hugging Face layout) or a .safetensors file")
        self.add_button.clicked.connect(lambda: self.add_requested.emit(self.kind))
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.combo, 1)
        layout.addWidget(self.add_button)
        self.set_models([])

    def set_models(self, models: list, select: str | None = None) -> None:
        """models: ModelInfo-like objects (name, path, parameters, size_bytes, source)."""
        from core.models.registry import format_bytes, format_count

        keep = select or self.path()
        self.combo.blockSignals(True)
        self.combo.clear()
        for info in models:
            label = f"{info.name} ({format_count(info.parameters)}, {info.source})"
            self.combo.addItem(label, info.path)
            self.combo.setItemData(self.combo.count() - 1,
                                   f"{info.path}\n{format_count(info.parameters)} parameters, "
                                   f"{format_bytes(info.size_bytes)} on disk, ~{format_bytes(info.memory_fp32)} "
                                   f"to run on the CPU, ~{format_bytes(info.memory_fp16)} on a GPU",
                                   Qt.ToolTipRole)
        if not models and self.kind == "sentence-encoder":
            self.combo.addItem("all-MiniLM-L6-v2 (bundled default)", None)  # search falls back to it
        elif not models:
            self.combo.addItem(f"No {KIND_LABELS.get(self.kind, self.kind).lower()} yet — Add…", None)
        index = self.combo.findData(keep) if keep else -1
        self.combo.setCurrentIndex(max(index, 0))
        self.combo.blockSignals(False)
        self.changed.emit(self.path() or "")

    def path(self) -> str | None:
        return self.combo.currentData()

    def select(self, path: str) -> bool:
        index = self.combo.findData(path)
        if index >= 0:
            self.combo.setCurrentIndex(index)
        return index >= 0


class GenerationControls(QWidget):
    """Temperature, top-p, top-k, repetition penalty, max new tokens, seed, stop strings, presets."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.preset = QComboBox()
        self.preset.setObjectName("PresetCombo")
        self.preset.addItems(list(PRESETS))
        self.preset.setCurrentText("balanced")
        self.preset.currentTextChanged.connect(self.apply_preset)
        self.temperature = self._double(0.0, 2.0, 0.05, "0 = always the most likely word")
        self.top_p = self._double(0.05, 1.0, 0.01, "Sample only from the most likely words covering this share")
        self.top_k = QSpinBox()
        self.top_k.setRange(0, 1000)
        self.top_k.setToolTip("Sample from the k most likely words (0 = no limit)")
        self.repetition = self._double(1.0, 2.0, 0.05, "Above 1 discourages repeating words")
        self.max_new = QSpinBox()
        self.max_new.setObjectName("MaxNewTokens")
        self.max_new.setRange(1, 4096)
        self.seed = QSpinBox()
        self.seed.setRange(-1, 2_000_000_000)
        self.seed.setSpecialValueText("random")  # -1 shows as "random": a new seed each time (recorded)
        self.seed.setValue(-1)
        self.stop = QLineEdit()
        self.stop.setPlaceholderText(r"e.g. \n\n ; THE END")
        self.stop.setToolTip(r"Stop strings, separated by ' ; '. Write \n for a line break.")
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Preset", self.preset)
        form.addRow("Temperature", self.temperature)
        form.addRow("Top-p", self.top_p)
        form.addRow("Top-k", self.top_k)
        form.addRow("Repetition penalty", self.repetition)
        form.addRow("Max new tokens", self.max_new)
        form.addRow("Seed", self.seed)
        form.addRow("Stop at", self.stop)
        self.apply_preset("balanced")

    def _double(self, low, high, step, tip) -> QDoubleSpinBox:
        box = QDoubleSpinBox()
        box.setRange(low, high)
        box.setSingleStep(step)
        box.setDecimals(2)
        box.setToolTip(tip)
        return box

    def apply_preset(self, name: str) -> None:
        preset = PRESETS.get(name)
        if preset is None:
            return
        if self.preset.currentText() != name:
            self.preset.setCurrentText(name)
        self.temperature.setValue(preset.temperature)
        self.top_p.setValue(preset.top_p)
        self.top_k.setValue(preset.top_k)
        self.repetition.setValue(preset.repetition_penalty)
        self.max_new.setValue(preset.max_new_tokens)

    def stop_strings(self) -> list[str]:
        return [s.replace("\\n", "\n") for s in self.stop.text().split(" ; ") if s.strip()]

    def settings(self) -> dict:
        data = {"max_new_tokens": self.max_new.value(), "temperature": round(self.temperature.value(), 3),
                "top_p": round(self.top_p.value(), 3), "top_k": self.top_k.value(),
                "repetition_penalty": round(self.repetition.value(), 3),
                "seed": None if self.seed.value() < 0 else self.seed.value(), "stop": self.stop_strings()}
        GenerationSettings.from_dict(data)  # validates: a bad value is reported before any job starts
        return data


class TemplateDialog(QDialog):
    """Choose a writer's template and fill in its fields."""

    def __init__(self, templates: list, parent: QWidget | None = None, current: str | None = None):
        super().__init__(parent)
        self.setObjectName("TemplateDialog")
        self.setWindowTitle("Generate from a template")
        self.templates = {t.id: t for t in templates}
        self.combo = QComboBox()
        for t in templates:
            self.combo.addItem(t.title, t.id)
        self.description = QLabel()
        self.description.setWordWrap(True)
        self.form_host = QWidget()
        self.form = QFormLayout(self.form_host)
        self.use_settings = QCheckBox("Use the template's suggested length and preset")
        self.use_settings.setChecked(True)
        self.inputs: dict[str, QWidget] = {}
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.button(QDialogButtonBox.Ok).setText("Generate")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.combo)
        layout.addWidget(self.description)
        layout.addWidget(self.form_host, 1)
        layout.addWidget(self.use_settings)
        layout.addWidget(buttons)
        self.combo.currentIndexChanged.connect(self._show)
        if current and self.combo.findData(current) >= 0:
            self.combo.setCurrentIndex(self.combo.findData(current))
        self._show()

    @property
    def template(self):
        return self.templates[self.combo.currentData()]

    def _show(self, *_):
        while self.form.rowCount():
            self.form.removeRow(0)
        self.inputs.clear()
        template = self.template
        self.description.setText(template.description)
        for f in template.fields:
            widget = QPlainTextEdit() if f.multiline else QLineEdit()
            if f.multiline:
                widget.setPlainText(f.default)
                widget.setFixedHeight(70)
            else:
                widget.setText(f.default)
            widget.setObjectName(f"field-{f.name}")
            widget.setToolTip(f.help or f.label)
            self.form.addRow(f.label + (" *" if f.required else ""), widget)
            self.inputs[f.name] = widget

    def values(self) -> dict:
        return {name: (w.toPlainText() if isinstance(w, QPlainTextEdit) else w.text())
                for name, w in self.inputs.items()}

    def set_value(self, name: str, value: str) -> None:
        widget = self.inputs[name]
        widget.setPlainText(value) if isinstance(widget, QPlainTextEdit) else widget.setText(value)

    def suggested_settings(self) -> dict:
        return dict(self.template.settings) if self.use_settings.isChecked() else {}

    def accept(self) -> None:
        try:
            self.template.render(self.values())  # missing required fields are shown here
        except AppError as exc:
            from desktop import ui

            ui.error_box(self, exc, "Template")
            return
        super().accept()


class ClassifyView(QWidget):
    """Labels with their scores, best first, as bars."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.caption = QLabel("Classify a selection or a whole document to see labels and scores here.")
        self.caption.setWordWrap(True)
        self.tree = QTreeWidget()
        self.tree.setObjectName("ClassifyResults")
        self.tree.setHeaderLabels(["Label", "Score", ""])
        self.tree.setRootIsDecorated(False)
        self.tree.header().setSectionResizeMode(2, QHeaderView.Stretch)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.caption)
        layout.addWidget(self.tree, 1)

    def show_scores(self, scores: list[dict], caption: str) -> None:
        self.caption.setText(caption)
        self.tree.clear()
        for row in scores:
            item = QTreeWidgetItem([row["label"], f"{row['score'] * 100:.1f} %", ""])
            self.tree.addTopLevelItem(item)
            bar = QProgressBar()
            bar.setRange(0, 1000)
            bar.setValue(int(row["score"] * 1000))
            bar.setTextVisible(False)
            bar.setMaximumHeight(12)
            self.tree.setItemWidget(item, 2, bar)

    def scores(self) -> list[tuple[str, str]]:
        return [(self.tree.topLevelItem(i).text(0), self.tree.topLevelItem(i).text(1))
                for i in range(self.tree.topLevelItemCount())]


class SearchPanel(QWidget):
    """Query box and results; activating a result asks to open the document at the passage."""

    search_requested = Signal(str, str, int)    # query, mode, top k
    open_passage = Signal(int, int, int)        # document id, start, end

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.query = QLineEdit()
        self.query.setObjectName("SearchQuery")
        self.query.setPlaceholderText("Describe what you are looking for…")
        self.query.returnPressed.connect(self._request)
        self.mode = QComboBox()
        self.mode.addItems(["hybrid", "semantic", "keyword"])
        self.mode.setToolTip("hybrid: meaning and keywords together")
        self.top = QSpinBox()
        self.top.setRange(1, 100)
        self.top.setValue(10)
        self.button = QPushButton("Search")
        self.button.clicked.connect(self._request)
        self.results = QListWidget()
        self.results.setObjectName("SearchResults")
        self.results.setWordWrap(True)
        self.results.itemActivated.connect(self._activated)
        self.results.itemDoubleClicked.connect(self._activated)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.query, 1)
        row.addWidget(self.button)
        options = QHBoxLayout()
        options.addWidget(QLabel("Mode"))
        options.addWidget(self.mode)
        options.addWidget(QLabel("Results"))
        options.addWidget(self.top)
        options.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addLayout(options)
        layout.addWidget(self.results, 1)
        layout.addWidget(self.status)

    def _request(self) -> None:
        self.search_requested.emit(self.query.text(), self.mode.currentText(), self.top.value())

    def show_hits(self, hits: list[dict]) -> None:
        self.results.clear()
        for hit in hits:
            snippet = " ".join(hit["text"].split())
            snippet = snippet[:220] + ("…" if len(snippet) > 220 else "")
            item = QListWidgetItem(f"{hit['title']}  ·  {hit['score']:.3f}\n{snippet}")
            item.setData(Qt.UserRole, (hit["document_id"], hit["start"], hit["end"]))
            item.setToolTip(f"Characters {hit['start']}–{hit['end']} of “{hit['title']}”. Double-click to open.")
            self.results.addItem(item)
        self.status.setText(f"{len(hits)} result{'s' if len(hits) != 1 else ''}" if hits else "No results.")

    def _activated(self, item: QListWidgetItem) -> None:
        doc_id, start, end = item.data(Qt.UserRole)
        self.open_passage.emit(int(doc_id), int(start), int(end))
