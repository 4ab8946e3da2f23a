"""The dependency rule of the packages: taan_core imports neither taan_viz nor the study.

taan_viz reads taan_core; taan_study uses both; nothing points back. Checked two ways: every
import statement in taan_core's source (including imports inside functions, which run late),
and every taan_core module imported in a fresh interpreter.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import taan_core

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("taan_viz", "taan_study")


def _imported_names(tree: ast.AST) -> list[tuple[int, str]]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append((node.lineno, node.module))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in FORBIDDEN:
            names.append((node.lineno, node.value))  # importlib.import_module("taan_viz") and the like
    return names


def test_taan_core_source_names_no_viz_or_study_import():
    bad = []
    for path in sorted((ROOT / "taan_core").rglob("*.py")):
        for line, name in _imported_names(ast.parse(path.read_text(), str(path))):
            if name.split(".")[0] in FORBIDDEN:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not bad, "\n".join(bad)


def test_importing_every_taan_core_module_loads_no_viz_or_study():
    modules = sorted(m.name for m in pkgutil.walk_packages(taan_core.__path__, "taan_core."))
    assert "taan_core.relatedness" in modules and "taan_core.cli" in modules
    code = (
        "import importlib, sys\n"
        f"forbidden = {FORBIDDEN!r}\n"
        "bad = []\n"
        f"for name in ['taan_core', *{modules!r}]:\n"
        "    importlib.import_module(name)\n"
        "    loaded = sorted(m for m in sys.modules if m.split('.')[0] in forbidden)\n"
        "    if loaded:\n"
        "        bad.append(f'{name}: {loaded}')\n"
        "        break\n"
        "print('\\n'.join(bad)); sys.exit(1 if bad else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_study_draws_without_starting_processes():
    # The study is an application: it calls taan_viz's plotting API, never the taan-viz executable.
    spawners = {"system", "popen", "execv", "execvp", "spawnv", "spawnvp", "startfile"}
    for path in sorted((ROOT / "taan_study").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        names = {name.split(".")[0] for _, name in _imported_names(tree)}
        assert "subprocess" not in names, f"{path.relative_to(ROOT)} imports subprocess"
        calls = [node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr in spawners]
        assert not calls, f"{path.relative_to(ROOT)} starts processes with {calls}"
