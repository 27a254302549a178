"""The generation panel: model, prompt, size, steps, guidance, seed, batch, scheduler, memory mode.

Pure form: it turns its fields into the parameter dict of core.image.generate.run_generation
(`params()`), fills them back from stored parameters (`apply_params()`, for "reuse parameters"),
and shows progress, the seed used and notices. The studio (gen_studio.py) runs the job.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout,
                               QLabel, QPlainTextEdit, QProgressBar, QPushButton, QScrollArea, QSpinBox,
                               QVBoxLayout, QWidget)

from core.image.settings import MEMORY_MODE_LABELS, MEMORY_MODES, load_settings, save_settings
from core.paths import models_dir

MODE_LABELS = {"txt2img": "Text to image", "img2img": "Image to image (current image)",
               "inpaint": "Inpaint (painted mask)", "outpaint": "Outpaint (extend the canvas)"}
DIRECTION_LABELS = {"left": "Left", "right": "Right", "up": "Up", "down": "Down"}
MODEL_DEFAULT = "Model default"
MAX_SEED = 2**32 - 1


def scheduler_choices() -> list[str]:
    from core.image.schedulers import scheduler_names  # no torch: plain names

    return [MODEL_DEFAULT] + scheduler_names()


def find_local_models() -> list[str]:
    """Diffusion models in the user's models folder: pipeline folders and .safetensors checkpoints."""
    found = []
    root = models_dir()
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and (entry / "model_index.json").exists():
            found.append(str(entry))
        elif entry.is_file() and entry.suffix.lower() == ".safetensors":
            found.append(str(entry))
    return found


class GenerationPanel(QWidget):
    generate_requested = Signal()
    cancel_requested = Signal()
    mode_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("GenerationPanel")
        remembered = load_settings()

        self.model = QComboBox()
        self.model.setEditable(True)
        self.model.setObjectName("ModelPicker")
        self.model.setToolTip("A Stable Diffusion folder (diffusers layout) or a single .safetensors checkpoint")
        self.model.setInsertPolicy(QComboBox.NoInsert)
        self.model.lineEdit().setPlaceholderText("Stable Diffusion folder or .safetensors…")
        self.browse_folder = QPushButton("Folder…")
        self.browse_file = QPushButton("File…")
        self.browse_folder.clicked.connect(self._pick_folder)
        self.browse_file.clicked.connect(self._pick_file)
        self.refresh_models(remembered.get("model") or "")

        self.mode = QComboBox()
        self.mode.setMinimumContentsLength(10)
        self.mode.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        for key, label in MODE_LABELS.items():
            self.mode.addItem(label, key)
        self.mode.currentIndexChanged.connect(self._mode_changed)

        self.prompt = QPlainTextEdit()
        self.prompt.setObjectName("Prompt")
        self.prompt.setPlaceholderText("Describe the picture…")
        self.prompt.setFixedHeight(80)
        self.negative = QPlainTextEdit()
        self.negative.setObjectName("NegativePrompt")
        self.negative.setPlaceholderText("What to avoid (optional)")
        self.negative.setFixedHeight(50)

        self.width_box = self._spin(64, 4096, int(remembered["width"]), step=8, suffix=" px")
        self.height_box = self._spin(64, 4096, int(remembered["height"]), step=8, suffix=" px")
        self.steps = self._spin(1, 150, int(remembered["steps"]))
        self.guidance = QDoubleSpinBox()
        self.guidance.setRange(0.0, 30.0)
        self.guidance.setSingleStep(0.5)
        self.guidance.setValue(float(remembered["guidance"]))
        self.seed = self._spin(0, 2**31 - 1, 0)
        self.random_seed = QCheckBox("Random")
        self.random_seed.setChecked(True)
        self.random_seed.toggled.connect(lambda on: self.seed.setEnabled(not on))
        self.seed.setEnabled(False)
        self.batch = self._spin(1, 16, int(remembered["batch"]))
        self.scheduler = QComboBox()
        self.scheduler.addItems(scheduler_choices())
        if remembered["scheduler"] in scheduler_choices():
            self.scheduler.setCurrentText(remembered["scheduler"])
        self.memory_mode = QComboBox()
        self.memory_mode.setMinimumContentsLength(10)
        self.memory_mode.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.memory_mode.setObjectName("MemoryMode")
        for key in MEMORY_MODES:
            self.memory_mode.addItem(MEMORY_MODE_LABELS[key], key)
        self.memory_mode.setCurrentIndex(MEMORY_MODES.index(remembered["memory_mode"]))
        self.memory_mode.setToolTip("For small GPUs: slicing and tiling lower the memory peak; CPU offload "
                                    "keeps only the running part of the model on the GPU (slower)")
        self.strength = QDoubleSpinBox()
        self.strength.setRange(0.01, 1.0)
        self.strength.setSingleStep(0.05)
        self.strength.setValue(0.75)
        self.direction = QComboBox()
        for key, label in DIRECTION_LABELS.items():
            self.direction.addItem(label, key)
        self.direction.setCurrentIndex(1)
        self.extend_by = self._spin(8, 1024, 128, step=8, suffix=" px")

        self.generate_button = QPushButton("Generate")
        self.generate_button.setObjectName("GenerateButton")
        self.generate_button.setDefault(True)
        self.generate_button.clicked.connect(self.generate_requested)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("CancelGeneration")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.progress = QProgressBar()
        self.progress.setObjectName("GenerationProgress")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setObjectName("GenerationStatus")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.seed_label = QLabel("")
        self.seed_label.setObjectName("SeedUsed")
        self.seed_label.setTextInteractionFlags(Qt.TextSelectableByMouse)

        form = QFormLayout()
        self.model.setMinimumContentsLength(12)
        self.model.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        form.addRow("Model", self.model)
        browse_row = QHBoxLayout()
        browse_row.addWidget(self.browse_folder)
        browse_row.addWidget(self.browse_file)
        browse_row.addStretch(1)
        form.addRow("", browse_row)
        form.addRow("Mode", self.mode)
        form.addRow("Prompt", self.prompt)
        form.addRow("Negative", self.negative)
        size_row = QHBoxLayout()
        size_row.addWidget(self.width_box)
        size_row.addWidget(QLabel("×"))
        size_row.addWidget(self.height_box)
        form.addRow("Size", size_row)
        form.addRow("Steps", self.steps)
        form.addRow("Guidance", self.guidance)
        seed_row = QHBoxLayout()
        seed_row.addWidget(self.seed, 1)
        seed_row.addWidget(self.random_seed)
        form.addRow("Seed", seed_row)
        form.addRow("Batch", self.batch)
        form.addRow("Scheduler", self.scheduler)
        form.addRow("Memory", self.memory_mode)
        self.strength_label = QLabel("Strength")
        form.addRow(self.strength_label, self.strength)
        self.direction_label = QLabel("Extend")
        outpaint_row = QHBoxLayout()
        outpaint_row.addWidget(self.direction, 1)
        outpaint_row.addWidget(self.extend_by)
        self.outpaint_row = QWidget()
        self.outpaint_row.setLayout(outpaint_row)
        form.addRow(self.direction_label, self.outpaint_row)
        buttons = QHBoxLayout()
        buttons.addWidget(self.generate_button, 1)
        buttons.addWidget(self.cancel_button)

        inner = QWidget()
        layout = QVBoxLayout(inner)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.seed_label)
        layout.addWidget(self.status)
        layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)  # the form narrows instead
        self.setMinimumWidth(320)
        scroll.setWidget(inner)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self._mode_changed()

    def _spin(self, lo, hi, value, step=1, suffix="") -> QSpinBox:
        box = QSpinBox()
        box.setRange(lo, hi)
        box.setSingleStep(step)
        box.setValue(value)
        if suffix:
            box.setSuffix(suffix)
        return box

    # -- model list ---------------------------------------------------------------------------
    def refresh_models(self, current: str = "", extra: list[str] | None = None) -> None:
        current = current or self.model.currentText()
        items = []
        for path in ([current] if current else []) + list(extra or []) + find_local_models():
            if path and path not in items:
                items.append(path)
        self.model.blockSignals(True)
        self.model.clear()
        self.model.addItems(items)
        self.model.setCurrentText(current)
        self.model.blockSignals(False)

    def set_model(self, path: str) -> None:
        self.refresh_models(str(path))
        self.model.setCurrentText(str(path))

    def _pick_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose a diffusers pipeline folder", str(models_dir()))
        if path:
            self.set_model(path)

    def _pick_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a checkpoint", str(models_dir()),
                                              "Safetensors checkpoints (*.safetensors)")
        if path:
            self.set_model(path)

    # -- mode ---------------------------------------------------------------------------------
    def current_mode(self) -> str:
        return self.mode.currentData()

    def set_mode(self, mode: str) -> None:
        self.mode.setCurrentIndex(list(MODE_LABELS).index(mode))

    def _mode_changed(self, *_):
        mode = self.current_mode()
        uses_image = mode in ("img2img", "inpaint")
        self.strength.setVisible(uses_image)
        self.strength_label.setVisible(uses_image)
        self.outpaint_row.setVisible(mode == "outpaint")
        self.direction_label.setVisible(mode == "outpaint")
        if mode == "inpaint" and self.strength.value() == 0.75:
            self.strength.setValue(1.0)
        elif mode == "img2img" and self.strength.value() == 1.0:
            self.strength.setValue(0.75)
        # The size comes from the current image in these modes.
        self.width_box.setEnabled(mode == "txt2img")
        self.height_box.setEnabled(mode == "txt2img")
        self.mode_changed.emit(mode)

    # -- parameters ---------------------------------------------------------------------------
    def params(self) -> dict:
        """Fields -> run_generation params (images are added by the studio)."""
        mode = self.current_mode()
        params = {"model": self.model.currentText().strip(), "mode": mode,
                  "prompt": self.prompt.toPlainText().strip(),
                  "negative_prompt": self.negative.toPlainText().strip(),
                  "steps": self.steps.value(), "guidance": round(self.guidance.value(), 2),
                  "seed": None if self.random_seed.isChecked() else self.seed.value(),
                  "batch": self.batch.value(), "memory_mode": self.memory_mode.currentData()}
        if self.scheduler.currentText() != MODEL_DEFAULT:
            params["scheduler"] = self.scheduler.currentText()
        if mode == "txt2img":
            params.update(width=self.width_box.value(), height=self.height_box.value())
        if mode in ("img2img", "inpaint"):
            params["strength"] = round(self.strength.value(), 3)
        if mode == "outpaint":
            params["outpaint"] = {"direction": self.direction.currentData(), "pixels": self.extend_by.value()}
        return params

    def remember(self) -> None:
        """Keep the choices for next time (memory mode above all: it depends on the user's GPU)."""
        save_settings(memory_mode=self.memory_mode.currentData(), scheduler=self.scheduler.currentText(),
                      steps=self.steps.value(), guidance=self.guidance.value(), width=self.width_box.value(),
                      height=self.height_box.value(), model=self.model.currentText().strip(),
                      batch=self.batch.value())

    def apply_params(self, params: dict) -> None:
        """Fill the fields from stored parameters (Lienzo's, A1111's or ComfyUI's names)."""
        if params.get("prompt") is not None:
            self.prompt.setPlainText(str(params["prompt"]))
        if params.get("negative_prompt") is not None:
            self.negative.setPlainText(str(params["negative_prompt"]))
        if params.get("steps"):
            self.steps.setValue(int(params["steps"]))
        if params.get("guidance") is not None:
            self.guidance.setValue(float(params["guidance"]))
        if params.get("width") and params.get("height"):
            self.width_box.setValue(int(params["width"]))
            self.height_box.setValue(int(params["height"]))
        if params.get("seed") is not None and 0 <= int(params["seed"]) <= self.seed.maximum():
            self.random_seed.setChecked(False)
            self.seed.setValue(int(params["seed"]))
        scheduler = params.get("scheduler")
        if scheduler:
            match = next((s for s in scheduler_choices() if s.lower() == str(scheduler).lower()), None)
            if match:
                self.scheduler.setCurrentText(match)
        if params.get("strength") is not None:
            self.strength.setValue(float(params["strength"]))
        model = params.get("model")
        if isinstance(model, dict) and model.get("path") and Path(model["path"]).exists():
            self.set_model(model["path"])
        mode = params.get("mode")
        if mode == "txt2img":
            self.set_mode("txt2img")
        if params.get("outpaint"):
            out = params["outpaint"]
            if out.get("direction") in DIRECTION_LABELS:
                self.direction.setCurrentIndex(list(DIRECTION_LABELS).index(out["direction"]))
            if out.get("pixels"):
                self.extend_by.setValue(int(out["pixels"]))

    # -- running state ------------------------------------------------------------------------
    def set_running(self, running: bool) -> None:
        self.generate_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        if running:
            self.progress.setRange(0, 0)  # busy until the first step reports its total
            self.status.setText("Starting…")
            self.status.setProperty("error", False)

    def show_progress(self, step: int, total: int, message: str) -> None:
        if total:
            self.progress.setRange(0, total)
            self.progress.setValue(min(step, total))
        if message:
            self.status.setText(message)

    def show_done(self, seeds: list[int], notices: list[str]) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.seed_label.setText("Seed used: " + ", ".join(str(s) for s in seeds))
        self.status.setText("\n".join(notices) if notices else f"Done: {len(seeds)} image(s) added to the project.")

    def show_error(self, message: str, hint: str = "") -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status.setText(message + (f"\n{hint}" if hint else ""))
        self.status.setProperty("error", True)

    def show_cancelled(self, step: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.status.setText(f"Cancelled at step {step}/{total}." if total else "Cancelled.")
