"""core/ must never import Qt or desktop: checked by import-linter and by a plain source scan."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("PySide6", "shiboken6", "desktop")


def test_core_sources_never_import_qt_or_desktop():
    offenders = []
    for path in (ROOT / "core").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in FORBIDDEN:
                    offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert not offenders, offenders


def test_import_linter_contract_holds():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_importing_core_pulls_in_no_qt():
    code = ("import sys, core.jobs, core.errors, core.cli, core.project; "
            "assert not any(m.startswith(('PySide6', 'desktop')) for m in sys.modules), "
            "[m for m in sys.modules if m.startswith(('PySide6','desktop'))]")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
