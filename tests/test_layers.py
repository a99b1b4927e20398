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


def _module_name(path: Path) -> str:
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycle_between_modules_of_app():
    """Every ``app.*`` import, deferred ones inside functions included, forms a graph with
    no cycle (``from app.x import y`` counts as an edge to ``app.x.y`` when that is a module)."""
    files = {_module_name(f): f for f in APP.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, f in files.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in files]
                # ``from pkg import submodule`` needs the submodule, not (only) the package
                edges.update(subs if len(subs) == len(node.names) else [node.module, *subs])
        graph[name] = {e for e in edges if e in files and e != name and e != "app"}
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(m):], m]))
            if m not in state:
                visit(m, [*path, m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
