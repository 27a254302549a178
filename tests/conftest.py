"""Shared test set-up: headless Qt, no network, a private data folder, the shared real data."""

import os
import sys
from pathlib import Path

import pytest

import core  # noqa: F401  (before any test loads torch: sets how OpenMP threads wait)

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# shared/ lies beside the checkout (and beside CI's clone).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _private_user_folders(tmp_path_factory, monkeypatch):
    """Keep settings, demo project and models of tests out of the real user folders."""
    base = tmp_path_factory.mktemp("userdirs")
    monkeypatch.setenv("LIENZO_DATA_DIR", str(base / "data"))
    monkeypatch.setenv("LIENZO_CONFIG_DIR", str(base / "config"))


@pytest.fixture(autouse=True)
def _window_extensions_per_test():
    """Features register themselves on MainWindow for the whole process (the app installs each
    once); a test that installs one must not change the windows of the tests after it."""
    module = sys.modules.get("desktop.main_window")
    saved = list(module.MainWindow.extensions) if module else []
    yield
    module = sys.modules.get("desktop.main_window")
    if module is not None:
        module.MainWindow.extensions[:] = saved


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real data sets; tests using it skip with a clear message where it is absent."""
    if not SHARED_DATA.exists():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (see shared/data/README.md)")
    return SHARED_DATA
