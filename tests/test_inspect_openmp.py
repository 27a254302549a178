"""Importing core.inspect chooses how OpenMP's idle threads wait (before torch loads): a short spin
with GNU OpenMP on Linux, sleeping elsewhere, and never over a policy the user set."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = ("import core.inspect, os; "
         "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))")


def _settings_after_import(**env) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env={**clean, **env},
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="GNU OpenMP's spin count: Linux only")
def test_linux_waits_briefly_then_sleeps():
    assert _settings_after_import() == ["None", "3000"]


def test_a_policy_the_user_set_is_kept():
    assert _settings_after_import(OMP_WAIT_POLICY="ACTIVE") == ["ACTIVE", "None"]
    assert _settings_after_import(GOMP_SPINCOUNT="5000")[1] == "5000"
