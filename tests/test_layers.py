"""The import layers of subnetscope, read from the source (``ast``), imports inside functions included.

- no import cycle among subnetscope modules (break a new one; there is no allow-list);
- ``subnetscope.kernels.*`` is the bottom layer: it imports only itself, ``dtypes`` and ``errors``;
- computation (everything but :data:`PRESENTATION`: io, kernels, engine, measures, results, comparison,
  series, overlap, fp8, delta, train, anatomy, ...) never imports rendering (``subnetscope.render``, a
  ``subnetscope.report`` module other than the ``report.schema`` re-export) or the CLI (``subnetscope.cli``).

Imports under ``if TYPE_CHECKING:`` count too (a type-only cycle still ties two modules together, and
import-linter counts them by default). ``from a import b``
counts as an import of ``a`` and, when ``a.b`` is a module, of ``a.b``; a module's own enclosing packages
are not counted (Python has imported them before the module runs).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "subnetscope"

#: what the kernels may import from subnetscope besides themselves
KERNEL_DEPENDENCIES = frozenset({"subnetscope.dtypes", "subnetscope.errors"})

#: the modules that present results to people (or drive a whole study and write its figures and page):
#: the only ones that may import rendering and the CLI
PRESENTATION = (
    "subnetscope.render",
    "subnetscope.cli",
    "subnetscope.study",
    "subnetscope.demo",
    "subnetscope.__main__",
)

#: the only ``subnetscope.report`` modules computation may import: the compatibility re-export of the schema
REPORT_SHIM = frozenset({"subnetscope.report", "subnetscope.report.schema"})


def _under(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _presentation_imports(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """Computation modules that import rendering or the CLI, with what they import."""
    bad = {}
    for m, ts in graph.items():
        if _under(m, PRESENTATION) or _under(m, ("subnetscope.report",)):
            continue
        hits = sorted(
            t
            for t in ts
            if _under(t, ("subnetscope.render", "subnetscope.cli"))
            or (_under(t, ("subnetscope.report",)) and t not in REPORT_SHIM)
        )
        if hits:
            bad[m] = hits
    return bad


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
    assert "subnetscope.comparison" in GRAPH["subnetscope"]  # only under TYPE_CHECKING


def test_the_cycle_finder_finds_a_cycle_through_three_modules():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles (break them):\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_kernels_are_the_bottom_layer():
    bad = {
        m: sorted(t for t in ts if not t.startswith("subnetscope.kernels") and t not in KERNEL_DEPENDENCIES)
        for m, ts in GRAPH.items()
        if m == "subnetscope.kernels" or m.startswith("subnetscope.kernels.")
    }
    bad = {m: ts for m, ts in bad.items() if ts}
    assert not bad, f"kernels import outside kernels/, dtypes, errors: {bad}"
    assert len([m for m in MODULES if m.startswith("subnetscope.kernels.")]) >= 12


def test_computation_never_imports_rendering_or_the_cli():
    bad = _presentation_imports(GRAPH)
    assert not bad, f"computation modules import rendering or the CLI: {bad}"


def test_the_presentation_rule_names_the_forbidden_imports():
    # checked on a made-up graph, so the rule is known to bite (the real graph has no violation left)
    graph = {
        "subnetscope.series": {"subnetscope.render.table", "subnetscope.results.schema"},
        "subnetscope.fp8": {"subnetscope.report.table"},
        "subnetscope.train.sub_vs_full": {"subnetscope.cli.common"},
        "subnetscope.anatomy.rank": {"subnetscope.report.schema"},
        "subnetscope.cli.compare_cmd": {"subnetscope.render.table"},
        "subnetscope.render.series": {"subnetscope.series"},
    }
    assert _presentation_imports(graph) == {
        "subnetscope.series": ["subnetscope.render.table"],
        "subnetscope.fp8": ["subnetscope.report.table"],
        "subnetscope.train.sub_vs_full": ["subnetscope.cli.common"],
    }
    # the computation modules the issue names are in the checked set, and rendering sits under render/
    for m in ("subnetscope.comparison", "subnetscope.series", "subnetscope.overlap", "subnetscope.fp8",
              "subnetscope.io.checkpoint", "subnetscope.engine.run", "subnetscope.measures.compare",
              "subnetscope.results.schema", "subnetscope.delta.export", "subnetscope.train.sub_vs_full"):  # fmt: skip
        assert m in MODULES and not _under(m, PRESENTATION)
    assert {"subnetscope.render.table", "subnetscope.render.plots", "subnetscope.render.html"} <= set(MODULES)
