"""The import layers of subnetscope, read from the source (``ast``), imports inside functions included.

- no import cycle among subnetscope modules, apart from the known ones listed in :data:`KNOWN_CYCLE_EDGES`;
- ``subnetscope.kernels.*`` is the bottom layer: it imports only itself, ``dtypes`` and ``errors``.

Imports under ``if TYPE_CHECKING:`` count too (a type-only cycle still ties two modules together, and
import-linter counts them by default). ``from a import b``
counts as an import of ``a`` and, when ``a.b`` is a module, of ``a.b``; a module's own enclosing packages
are not counted (Python has imported them before the module runs).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "subnetscope"

#: Import cycles that exist today (issue 15 names them), each broken by one of its edges listed here as
#: (importer, imported). Remove an entry when its cycle is gone (the test fails on an entry whose edge no
#: longer exists, so the list stays true); never add one: break the new cycle instead.
KNOWN_CYCLE_EDGES: frozenset[tuple[str, str]] = frozenset(
    {
        # anatomy/ulp -> comparison -> fp8 -> report/table -> anatomy/ulp (the ULP table renderer)
        ("subnetscope.report.table", "subnetscope.anatomy.ulp"),
        # io/checkpoint <-> io/legacy (legacy uses checkpoint's private _merge and _load_index)
        ("subnetscope.io.checkpoint", "subnetscope.io.legacy"),
        # train/hooks <-> train/mask
        ("subnetscope.train.mask", "subnetscope.train.hooks"),
    }
)

#: what the kernels may import from subnetscope besides themselves
KERNEL_DEPENDENCIES = frozenset({"subnetscope.dtypes", "subnetscope.errors"})


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node``: module level, in functions, in classes, in any block."""
    for child in ast.walk(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str) -> set[str]:
    """The subnetscope modules that ``module`` imports, anywhere in its file."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: set[str] = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            target = _resolve(module, path.name == "__init__.py", node)
            names = [target] + [f"{target}.{a.name}" for a in node.names]
        found.update(n for n in names if n in MODULES)
    # a module's own packages are imported before it runs: naming one (``from . import x``) adds no edge
    return {n for n in found if n != module and not module.startswith(n + ".")}


GRAPH = {m: imports_of(m) for m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_walk_sees_imports_inside_functions_and_relative_ones():
    # the overlap pass imports the compare kernel inside a function, cli modules import lazily: both seen
    assert "subnetscope.kernels.compare" in GRAPH["subnetscope.measures.overlap"]
    assert "subnetscope.kernels.native" in GRAPH["subnetscope.kernels.registry"]  # from . import native
    assert "subnetscope.dtypes" in GRAPH["subnetscope.kernels.native"]  # from ..dtypes import ...
    # the package's lazy __getattr__ imports the registry inside a function (and under TYPE_CHECKING)
    assert GRAPH["subnetscope.kernels"] == {"subnetscope.kernels.registry"}
    assert "subnetscope.train.mask" in GRAPH["subnetscope.train.hooks"]  # only under TYPE_CHECKING


def test_the_cycle_finder_finds_a_cycle_through_three_modules():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_apart_from_the_known_ones():
    graph = {m: {t for t in ts if (m, t) not in KNOWN_CYCLE_EDGES} for m, ts in GRAPH.items()}
    cycles = _cycles(graph)
    assert not cycles, "import cycles (break them; do not add to KNOWN_CYCLE_EDGES):\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


@pytest.mark.parametrize("edge", sorted(KNOWN_CYCLE_EDGES), ids=lambda e: f"{e[0]}->{e[1]}")
def test_every_known_cycle_edge_still_closes_a_cycle(edge):
    importer, imported = edge
    assert imported in GRAPH.get(importer, set()), (
        f"{importer} no longer imports {imported}: remove the entry from KNOWN_CYCLE_EDGES"
    )
    others = KNOWN_CYCLE_EDGES - {edge}
    graph = {m: {t for t in ts if (m, t) not in others} for m, ts in GRAPH.items()}
    assert any(importer in c and imported in c for c in _cycles(graph)), (
        f"{importer} -> {imported} is no longer part of a cycle: remove the entry from KNOWN_CYCLE_EDGES"
    )


def test_kernels_are_the_bottom_layer():
    bad = {
        m: sorted(t for t in ts if not t.startswith("subnetscope.kernels") and t not in KERNEL_DEPENDENCIES)
        for m, ts in GRAPH.items()
        if m == "subnetscope.kernels" or m.startswith("subnetscope.kernels.")
    }
    bad = {m: ts for m, ts in bad.items() if ts}
    assert not bad, f"kernels import outside kernels/, dtypes, errors: {bad}"
    assert len([m for m in MODULES if m.startswith("subnetscope.kernels.")]) >= 12
