"""scaleflow's modules import each other without cycles, counting imports inside functions too: a
cycle means two modules each need the other, so neither can be read (or tested) on its own. The same
holds between packages (`scaleflow.data`, `scaleflow.training`, a top-level module such as
`scaleflow.manifest`), whose imports follow the layers written in the README's Architecture section."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "scaleflow"


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(("scaleflow", *path.relative_to(PACKAGE).with_suffix("").parts))
        out[name.removesuffix(".__init__")] = path
    return out


@functools.lru_cache(maxsize=None)  # parsed once for all the tests here (read-only)
def import_graph() -> dict[str, set[str]]:
    """module -> the scaleflow modules it imports (at module level or inside a function)."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                candidates = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            if isinstance(node, ast.ImportFrom) and any(c in known for c in candidates[1:]):
                candidates = candidates[1:]  # `from package import module`: the module is what is used
            for candidate in candidates:
                while candidate and candidate not in known:
                    candidate = candidate.rpartition(".")[0]
                # A package's own __init__ runs before any of its modules anyway: not a dependency.
                if candidate and candidate != name and not name.startswith(candidate + "."):
                    imported.add(candidate)
        graph[name] = imported
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_scaleflow_has_no_import_cycle():
    assert cycles(import_graph()) == []


# ------------------------------------------------------------------------------------ packages
README = PACKAGE.parent / "README.md"


def package_of(module: str) -> str:
    """`scaleflow.data.csv` -> `scaleflow.data`; a top-level module (`scaleflow.manifest`) is its own."""
    return ".".join(module.split(".")[:2])


def package_graph() -> dict[str, dict[str, list[str]]]:
    """package -> {package it imports: the module imports that make it so ("a.x -> b.y")}."""
    graph: dict[str, dict[str, list[str]]] = {}
    for module, imported in import_graph().items():
        edges = graph.setdefault(package_of(module), {})
        for other in sorted(imported):
            if package_of(other) != package_of(module):
                edges.setdefault(package_of(other), []).append(f"{module} -> {other}")
    graph.pop("scaleflow", None)  # the root __init__ (the version): every module may read it
    return graph


def describe(edges: list[tuple[str, str]], graph: dict[str, dict[str, list[str]]]) -> str:
    return "\n".join(f"  {a} -> {b}: {', '.join(graph[a][b])}" for a, b in edges)


def layers() -> list[tuple[str, list[str]]]:
    """The README's layer table (Architecture): [(layer, [package, ...] in row order)], bottom first."""
    rows = []
    table = README.read_text().split("<!-- layers -->")[1].split("<!-- /layers -->")[0]
    for line in table.splitlines():
        match = re.match(r"\|\s*(\d+ [^|]+?)\s*\|([^|]*)\|", line)
        if match:
            rows.append((match[1], [f"scaleflow.{name}" for name in re.findall(r"`([\w.]+)`", match[2])]))
    return rows


def test_the_cycle_finder_finds_a_package_cycle_and_names_its_modules():
    graph = {"scaleflow.a": {"scaleflow.b": ["scaleflow.a.x -> scaleflow.b.y"]},
             "scaleflow.b": {"scaleflow.a": ["scaleflow.b.z -> scaleflow.a"]}, "scaleflow.c": {}}
    assert cycles({p: set(e) for p, e in graph.items()}) == [["scaleflow.a", "scaleflow.b"]]
    assert describe([("scaleflow.b", "scaleflow.a")], graph) == "  scaleflow.b -> scaleflow.a: scaleflow.b.z -> scaleflow.a"


def test_scaleflow_packages_have_no_import_cycle():
    """Between packages too (scaleflow.data, scaleflow.training, ...; a top-level module is its own):
    a package that needs a package which needs it back can be understood only together with it."""
    graph = package_graph()
    found = cycles({p: set(edges) for p, edges in graph.items()})
    position = {package: i for i, package in enumerate(p for _, packages in layers() for p in packages)}
    report = []
    for component in found:
        inside = [(a, b) for a in component for b in sorted(graph[a]) if b in component]
        # The edges that close the cycle: those going up the README's layer order (unlisted: all).
        closing = [(a, b) for a, b in inside if position.get(b, len(position)) > position.get(a, -1)]
        report.append(f"closed by:\n{describe(closing or inside, graph)}\nall edges inside:\n{describe(inside, graph)}")
    assert not found, "import cycles between packages:\n" + "\n\n".join(report)


def test_every_package_is_in_exactly_one_layer_of_the_readme():
    listed = [package for _, packages in layers() for package in packages]
    assert len(layers()) >= 5 and len(listed) == len(set(listed)), listed
    packages = set(package_graph())
    missing = sorted(packages - set(listed))
    assert not missing, (f"not in the README's layer table (Architecture): {', '.join(missing)}; add each to "
                         "the row of the lowest layer whose packages it may import")
    assert not set(listed) - packages, f"no such package: {sorted(set(listed) - packages)}"


def test_packages_import_only_lower_layers_and_earlier_packages_of_their_row():
    """The README's layer order: every dependency points down, so a package can be read, tested and
    changed with only what is below it."""
    order = {package: (index, layer) for index, (layer, _) in enumerate(layers()) for package in _}
    position = {package: i for i, package in enumerate(p for _, packages in layers() for p in packages)}
    graph = package_graph()
    upward = [(a, b) for a in sorted(graph) for b in sorted(graph[a])
              if a in position and b in position and position[b] > position[a]]
    assert not upward, "imports that go up the README's layers (Architecture):\n" + "\n".join(
        f"  {a} ({order[a][1]}) -> {b} ({order[b][1]}): {', '.join(graph[a][b])}" for a, b in upward)
