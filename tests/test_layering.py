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

import pytest

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


@pytest.mark.slow
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


# ----------------------------------------------------------------------------------------------
# No import cycles among the three packages' modules.

PACKAGES = ("taan_core", "taan_viz", "taan_study")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _runtime_imports(tree: ast.AST) -> list[ast.AST]:
    """Import nodes that run (at import time or inside functions); ``if TYPE_CHECKING:`` blocks
    never run, so they are left out."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in skipped]


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports, including the packages whose ``__init__`` an
    import runs (importing ``a.b.c`` runs ``a.b``), and imports inside functions."""
    modules = _modules()

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        deps: set[str] = set()
        for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            for target in targets:
                found = known(target)
                if found is None:
                    continue
                deps.add(found)
                parts = found.split(".")
                deps.update(p for p in (".".join(parts[:i]) for i in range(1, len(parts)))
                            if p in modules and not module.startswith(p + "."))
        deps.discard(module)
        graph[module] = deps
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_import_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_sees_function_level_and_package_imports():
    graph = import_graph()
    # Imported inside a function, and through a package's __init__.
    assert "taan_core.relatedness" in graph["taan_core.cli"]
    assert "taan_core.checkpoint" in graph["taan_core.relatedness"]


def test_no_import_cycles_among_the_packages():
    cycles = import_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)
