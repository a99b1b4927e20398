"""The architecture's import rules, checked on the source (ARCHITECTURE.md, STYLE.md principle 4)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app"
HEAVY = ("torch", "transformers", "diffusers", "audiocraft")
QT = ("PySide6", "pyqtgraph")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(sub: str) -> list[Path]:
    return sorted((APP / sub).rglob("*.py")) if (APP / sub).is_dir() else []


def test_engine_imports_nothing_of_ours_above_it():
    for f in _modules("engine"):
        bad = {m for m in _imports(f) if m.startswith("app.") and not m.startswith("app.engine")}
        assert not bad, f"{f.relative_to(APP)} imports {bad}"


def test_qt_only_under_ui_and_torch_only_under_models():
    for f in APP.rglob("*.py"):
        rel = f.relative_to(APP).parts
        mods = {m.split(".")[0] for m in _imports(f)}
        if rel[0] != "ui":
            assert not mods & set(QT), f"Qt imported in {f}"
        if rel[0] != "models":
            assert not mods & set(HEAVY), f"torch-family imported in {f}"


def test_importing_the_cli_and_engine_loads_no_heavy_module():
    code = (
        "import sys, app.cli, app.engine.mastering.chain, app.engine.analysis\n"
        f"bad = [m for m in {HEAVY + QT!r} if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
