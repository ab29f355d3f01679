"""The shape of the code, checked: no import cycles, imports only go down the
layers docs/architecture.md draws, and no module grows past ~500 lines
without a stated reason.

Every ``import`` counts, at module level or inside a function: a lazy import
is still a dependency, only a cheaper one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("runtime", "spec", "hooks")

#: modules allowed past MAX_LINES, and why
LARGE_OK: dict[str, str] = {}
MAX_LINES = 520


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            out[_module_name(path)] = path
    return out


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The project module an imported name belongs to (longest known prefix)."""
    parts = name.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in known:
            return cand
        parts.pop()
    return None


def import_graph() -> dict[str, set[str]]:
    known = _modules()
    graph: dict[str, set[str]] = {m: set() for m in known}
    for mod, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        is_pkg = path.name == "__init__.py"
        base = mod.split(".") if is_pkg else mod.split(".")[:-1]
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = base[:len(base) - node.level + 1]
                    prefix = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                names = [f"{prefix}.{a.name}" for a in node.names] + [prefix]
            for n in names:
                target = _resolve(n, known)
                if target and target != mod and not mod.startswith(target + "."):
                    graph[mod].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


#: what each layer may import (prefixes); checked for the leaves that everything
#: else stands on, so they stay leaves
LEAF_RULES = {
    "runtime.errors": (),
    "runtime.syscalls": ("runtime.errors", "runtime.ctlite"),
    "runtime.ctlite": (),  # the part of ctypes syscalls uses, on _ctypes alone
    "runtime.fastjson": (),
    "runtime.log": ("runtime.fastjson",),  # json log lines: fastjson, a leaf itself
    "spec": ("spec", "runtime.fastjson"),  # fastjson: a leaf itself (JSON without json/re)
}


@pytest.mark.parametrize("leaf", sorted(LEAF_RULES))
def test_leaves_stay_leaves(leaf):
    graph = import_graph()
    allowed = LEAF_RULES[leaf]
    for mod, deps in graph.items():
        if mod == leaf or mod.startswith(leaf + "."):
            # an allowed module's parent package (runtime/__init__.py) comes with it
            bad = [d for d in deps if not any(d == a or d.startswith(a + ".")
                                              or a.startswith(d + ".") for a in allowed)]
            assert not bad, f"{mod} imports {bad}: a leaf layer may import only {allowed}"


def test_the_lower_layers_never_import_the_lifecycle():
    """container/commands/cli are the top: nothing below them imports them."""
    graph = import_graph()
    top = ("runtime.cli", "runtime.commands", "runtime.container")
    for mod, deps in graph.items():
        if mod.startswith(top):
            continue
        bad = sorted(d for d in deps if d.startswith(top))
        assert not bad, f"{mod} imports {bad} from the lifecycle layer above it"


def test_no_module_is_too_large_without_a_reason():
    big = {}
    for mod, path in _modules().items():
        n = len(path.read_text().splitlines())
        if n > MAX_LINES and mod not in LARGE_OK:
            big[mod] = n
    assert not big, f"modules over {MAX_LINES} lines (split them, or say why in LARGE_OK): {big}"
