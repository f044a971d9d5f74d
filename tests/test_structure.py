"""The package's import structure (docs/design.md §7): layers import only downwards, and no module cycles.

Every ``import`` of every module counts, those inside functions included, and
importing ``a.b.c`` also runs the ``__init__`` of ``a.b`` (an edge to it, unless
the importer lives inside it). The check runs on the real package, and on
copies with an upward import and a cycle planted, which it must catch.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "npsim"

#: package layer -> the layers it may import (besides itself)
ALLOWED = {
    "base": set(),
    "backend": {"base"},
    "model": {"base", "backend"},
    "learn": {"base", "backend", "model"},
    "io": {"base"},
    "analysis": {"base", "io"},
    "experiment": {"base", "backend", "model", "learn", "io", "analysis"},
    "cli": {"base", "backend", "model", "learn", "io", "analysis", "experiment"},
}


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package at ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def layer(module: str) -> str:
    """The layer of a module: its first subpackage, "cli", or "base" for the top-level modules."""
    parts = module.split(".")
    if len(parts) == 1:
        return "base"
    return parts[1] if parts[1] in ALLOWED else ("cli" if parts[1] == "cli" else "base")


def import_graph(root: Path) -> dict[str, set[tuple[str, int]]]:
    """module -> {(imported npsim module, line)} over all import statements."""
    mods = modules(root)
    top = root.name
    graph: dict[str, set[tuple[str, int]]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in mods else stem for a in node.names]
            for t in targets:
                if t.split(".")[0] != top:
                    continue
                while t not in mods:  # `import npsim.x.y` names a module; trim attributes
                    t = t.rpartition(".")[0]
                graph[mod].add((t, node.lineno))
                parent = t.rpartition(".")[0]
                while parent and not (mod == parent or mod.startswith(parent + ".")):
                    graph[mod].add((parent, node.lineno))  # importing a.b.c runs a.b's __init__
                    parent = parent.rpartition(".")[0]
    return graph


def upward_imports(graph) -> list[str]:
    bad = []
    for mod, edges in graph.items():
        for target, line in sorted(edges):
            a, b = layer(mod), layer(target)
            if a != b and b not in ALLOWED[a]:
                bad.append(f"{mod}:{line} imports {target} ({a} may import only {sorted(ALLOWED[a]) or 'nothing'})")
    return bad


def cycles(graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), or a module importing itself."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w, _ in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or any(t == v for t, _ in graph[v]):
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_every_layer_imports_only_downwards():
    assert upward_imports(import_graph(ROOT)) == []


def test_no_import_cycles():
    assert cycles(import_graph(ROOT)) == []


def test_every_module_belongs_to_a_known_layer():
    top_level = {m for m in modules(ROOT) if m.count(".") == 1 and (ROOT / f"{m.split('.')[1]}.py").is_file()}
    assert top_level == {"npsim.errors", "npsim.registry", "npsim.params", "npsim.cli"}, top_level
    packages = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages == set(ALLOWED) - {"base", "cli"}


@pytest.fixture
def copy(tmp_path):
    dst = tmp_path / "npsim"
    shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def test_a_planted_upward_import_is_caught(copy):
    nodes = copy / "model" / "nodes.py"
    nodes.write_text(nodes.read_text() + "\n\ndef _planted():\n    from ..experiment import config  # noqa\n")
    bad = upward_imports(import_graph(copy))
    assert len(bad) == 2 and all(b.startswith("npsim.model.nodes:") for b in bad), bad
    assert "imports npsim.experiment.config (model may import only ['backend', 'base'])" in bad[0] + bad[1]
    io = copy / "io" / "data" / "locate.py"
    io.write_text(io.read_text() + "\nimport npsim.model.network  # noqa\n")
    assert any(b.startswith("npsim.io.data.locate:") and "npsim.model.network" in b
               for b in upward_imports(import_graph(copy)))


def test_a_planted_cycle_is_caught(copy):
    arrays = copy / "backend" / "arrays.py"
    arrays.write_text(arrays.read_text() + "\n\ndef _planted():\n    from .random import RandomStream  # noqa\n")
    found = cycles(import_graph(copy))
    assert any("npsim.backend.arrays" in c and "npsim.backend.random" in c for c in found), found
    assert upward_imports(import_graph(copy)) == []  # a cycle inside one layer is not an upward import
