"""Small shared pieces of the desktop: icons, stylesheet, settings, error and confirm dialogs."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

# No `Qt` namespace here: its first use costs ~15 ms, which this module (loaded before the first
# paint) must not pay; the dialogs below import it when they are shown.
from PySide6.QtCore import QSettings
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QMessageBox, QWidget

from core import paths
from core.errors import AppError

# resources/ sits beside desktop/ in the checkout and in an installed tree alike.
RESOURCES_DIR = Path(__file__).resolve().parents[1] / "resources"


def resource_path(*parts: str) -> Path:
    return RESOURCES_DIR.joinpath(*parts)


@lru_cache(maxsize=None)
def icon(name: str) -> QIcon:
    """An icon from resources/icons (SVG, drawn for Lienzo)."""
    path = resource_path("icons", f"{name}.svg")
    return QIcon(str(path)) if path.exists() else QIcon()


def stylesheet() -> str:
    """The Qt stylesheet; `@RESOURCES@` stands for the resources folder (icons in url())."""
    path = resource_path("style.qss")
    if not path.exists():
        return ""
    return path.read_text(encoding="utf-8").replace("@RESOURCES@", RESOURCES_DIR.as_posix())


@lru_cache(maxsize=1)
def defaults() -> dict:
    """Default settings shipped in resources/settings.json."""
    import json

    try:
        return json.loads(resource_path("settings.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def setting_default(key: str, fallback):
    return defaults().get(key, fallback)


def settings() -> QSettings:
    """The user's settings as an INI file in Lienzo's config folder (private per test run)."""
    return QSettings(str(paths.config_dir() / "lienzo.ini"), QSettings.IniFormat)


def recent_projects() -> list[str]:
    value = settings().value("recent_projects", [])
    if isinstance(value, str):  # QSettings INI returns a single entry as a plain string
        value = [value]
    return [str(v) for v in (value or [])]


def add_recent_project(path: str) -> list[str]:
    limit = int(setting_default("recent_projects_max", 10))
    items = [p for p in recent_projects() if p != path]
    items.insert(0, path)
    items = items[:limit]
    store = settings()
    store.setValue("recent_projects", items)
    store.sync()
    return items


def remove_recent_project(path: str) -> None:
    store = settings()
    store.setValue("recent_projects", [p for p in recent_projects() if p != path])
    store.sync()


def error_box(parent: QWidget | None, exc: BaseException, title: str = "Lienzo") -> QMessageBox:
    """Show an error without blocking: the message, the hint, and a traceback only for real bugs.

    Non-modal-blocking (`open()`), so a job or a test never waits on it; the box is returned.
    """
    import traceback

    from PySide6.QtCore import Qt

    box = QMessageBox(parent)
    box.setObjectName("ErrorBox")
    box.setWindowTitle(title)
    box.setIcon(QMessageBox.Warning if isinstance(exc, AppError) else QMessageBox.Critical)
    if isinstance(exc, AppError):
        box.setText(exc.message)
        if exc.hint:
            box.setInformativeText(exc.hint)
    else:
        box.setText(f"Something went wrong: {type(exc).__name__}: {exc}")
        box.setInformativeText("Lienzo is still running. Please report this with the details.")
        box.setDetailedText("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    box.setAttribute(Qt.WA_DeleteOnClose)
    box.setWindowModality(Qt.WindowModal if parent is not None else Qt.ApplicationModal)
    box.open()
    return box


def info_box(parent: QWidget | None, title: str, text: str, details: str = "") -> QMessageBox:
    from PySide6.QtCore import Qt

    box = QMessageBox(parent)
    box.setObjectName("InfoBox")
    box.setWindowTitle(title)
    box.setIcon(QMessageBox.Information)
    box.setText(text)
    if details:
        box.setInformativeText(details)
    box.setAttribute(Qt.WA_DeleteOnClose)
    box.open()
    return box


def confirm(parent: QWidget | None, title: str, text: str, action: str = "Delete") -> bool:
    """Ask before destructive changes; the default button is the safe one."""
    box = QMessageBox(parent)
    box.setObjectName("ConfirmBox")
    box.setWindowTitle(title)
    box.setIcon(QMessageBox.Question)
    box.setText(text)
    ok = box.addButton(action, QMessageBox.DestructiveRole)
    cancel = box.addButton(QMessageBox.Cancel)
    box.setDefaultButton(cancel)
    box.exec()
    return box.clickedButton() is ok
