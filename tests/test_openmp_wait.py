"""Importing core chooses how OpenMP's idle threads wait, before torch loads: a short spin with GNU
OpenMP on Linux, sleeping elsewhere, and never over a policy the user set. The GUI's entry point
gets it too, whichever job (text, image, inspection) loads torch first."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)"


def _settings_after(imports: str, **env) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", f"import os, sys, {imports}; {SETTINGS}"], cwd=ROOT,
                         env={**clean, "QT_QPA_PLATFORM": "offscreen", **env},
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="GNU OpenMP's spin count: Linux only")
@pytest.mark.parametrize("imports", ["core", "core.inspect", "desktop.launcher, desktop.app"])
def test_linux_waits_briefly_then_sleeps_before_torch_loads(imports):
    assert _settings_after(imports) == ["None", "3000", "False"]


def test_a_policy_the_user_set_is_kept():
    assert _settings_after("core", OMP_WAIT_POLICY="ACTIVE")[:2] == ["ACTIVE", "None"]
    assert _settings_after("core", GOMP_SPINCOUNT="5000")[1] == "5000"
