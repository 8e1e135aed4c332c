"""The import structure of ``migrator``: no cycles, the rehearsal wall, one-way layers.

Pure AST: no module under ``migrator/`` is imported, so this runs in well under a second
and sees every import statement -- at module level, inside functions and under
``if TYPE_CHECKING:`` alike, because a cycle that only exists at run time or only for
the type checker is still a cycle a reader has to untangle.

An import resolves to the module it names: ``from migrator.x import y`` is an edge to
``migrator.x.y`` if that is a module, else to ``migrator.x``; ``import migrator.x.y`` is an
edge to ``migrator.x.y`` (the parent packages it also initialises are not counted);
a package's ``__init__.py`` is the package module itself.

Check by hand with:  pytest -n 0 -p no:cacheprovider tests/test_layers.py
"""

from __future__ import annotations

import ast
import itertools
from collections import deque
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path

import pytest

PACKAGE = "migrator"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / PACKAGE

REHEARSAL = "migrator.rehearsal"
# The only modules outside the rehearsal wing that may start it: the CLI (``sim serve``,
# ``sim proxy``) and the dry-run, which runs the engine against a rehearsal world.
REHEARSAL_CLIENTS = ("migrator.dryrun", "migrator.cli")

# importer -> imported -> line numbers of the import statements
Graph = dict[str, dict[str, list[int]]]


def module_name(path: Path, root: Path = PACKAGE_DIR) -> str:
    """``migrator/a/b.py`` -> ``migrator.a.b``; ``migrator/a/__init__.py`` -> ``migrator.a``."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _nearest_module(name: str, modules: set[str]) -> str | None:
    """The longest prefix of the dotted ``name`` that is a module (``a.b.c`` -> ``a.b`` if ``a.b.c`` is not)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _imports(tree: ast.AST, importer: str, is_package: bool, modules: set[str]) -> Iterator[tuple[str, int]]:
    """Every ``migrator`` module that ``tree`` imports, with the line of the statement."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _nearest_module(alias.name, modules)
                if target is not None:
                    yield target, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # Relative: level 1 is the importer's own package.
                package = importer.split(".") if is_package else importer.split(".")[:-1]
                drop = node.level - 1
                base_parts = package[: len(package) - drop] if drop else package
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            targets = {
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else _nearest_module(base, modules)
                for alias in node.names
            }
            for target in sorted(t for t in targets if t is not None):
                yield target, node.lineno


@cache
def import_graph(root: Path = PACKAGE_DIR) -> Graph:
    """Import edges between the modules under ``root``; every module is a key, even one that imports nothing."""
    files = {module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    modules = set(files)
    graph: Graph = {name: {} for name in files}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for target, line in _imports(tree, name, _is_package(path), modules):
            if target != name:
                graph[name].setdefault(target, []).append(line)
    for imported in graph.values():
        for lines in imported.values():
            lines.sort()
    return graph


def _source(module: str, root: Path = PACKAGE_DIR) -> str:
    relative = Path(*module.split(".")[1:])
    as_package = root / relative / "__init__.py"
    return str((as_package if as_package.exists() else (root / relative).with_suffix(".py")).relative_to(root.parent))


def _strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's algorithm, iteratively; only components of two or more modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            advanced = False
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    advanced = True
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def _shortest_path(graph: Graph, start: str, goal: str, allowed: set[str]) -> list[str]:
    previous: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            break
        for succ in sorted(graph[node]):
            if succ in allowed and succ not in previous:
                previous[succ] = node
                queue.append(succ)
    path: list[str] = []
    step: str | None = goal
    while step is not None:
        path.append(step)
        step = previous[step]
    return path[::-1]


def find_cycles(graph: Graph) -> list[list[str]]:
    """For every edge that lies on a cycle, the shortest cycle through it, each listed once.

    Not every elementary cycle (there can be exponentially many), but every import that
    takes part in one shows up, so the list doubles as a checklist of imports to remove.
    A cycle is returned as ``[a, b, ..., a]`` starting at its alphabetically first module.
    """
    cycles: set[tuple[str, ...]] = set()
    for component in _strongly_connected(graph):
        members = set(component)
        for source in component:
            for target in graph[source]:
                if target not in members:
                    continue
                loop = [source, *_shortest_path(graph, target, source, members)[:-1]]
                first = loop.index(min(loop))
                cycles.add(tuple(loop[first:] + loop[:first]))
    return [[*cycle, cycle[0]] for cycle in sorted(cycles)]


def _describe(graph: Graph, importer: str, imported: str) -> str:
    lines = ", ".join(str(line) for line in graph[importer][imported])
    return f"{_source(importer)}:{lines}: {importer} imports {imported}"


def _violations(graph: Graph, importers: Iterable[str], forbidden: tuple[str, ...]) -> list[str]:
    return [
        _describe(graph, importer, imported)
        for importer in sorted(importers)
        for imported in sorted(graph[importer])
        if any(_within(imported, prefix) for prefix in forbidden)
    ]


def _in_layer(graph: Graph, prefix: str) -> list[str]:
    return [module for module in graph if _within(module, prefix)]


def _report(title: str, problems: list[str]) -> str:
    return f"{title} ({len(problems)}):\n  " + "\n  ".join(problems)


# --- the helper itself ------------------------------------------------------------------


def test_import_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("from . import leaf\n")
    (root / "sub" / "leaf.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from pkg.top import Thing\n"
        "def later():\n"
        "    import pkg.sub.other\n"
        "from ..top import name\n"
        "from pkg.sub import other, not_a_module\n"
    )
    (root / "sub" / "other.py").write_text("")
    (root / "top.py").write_text("import os\nfrom pkg.sub.leaf import later\n")
    graph = import_graph.__wrapped__(root)
    assert graph["pkg.sub"] == {"pkg.sub.leaf": [1]}
    assert graph["pkg.sub.leaf"] == {"pkg.top": [3, 6], "pkg.sub.other": [5, 7], "pkg.sub": [7]}
    assert graph["pkg.top"] == {"pkg.sub.leaf": [2]}
    assert find_cycles(graph) == [["pkg.sub", "pkg.sub.leaf", "pkg.sub"], ["pkg.sub.leaf", "pkg.top", "pkg.sub.leaf"]]
    assert graph["pkg"] == {}


def test_the_graph_covers_the_package() -> None:
    graph = import_graph()
    assert {"migrator", "migrator.plan", "migrator.dryrun", "migrator.rehearsal.world.state"} <= set(graph)
    assert "migrator.rehearsal.world.model" in graph["migrator.rehearsal.world.state"]


# --- no cycles ----------------------------------------------------------------------------


def test_no_import_cycles_in_the_rehearsal_wing() -> None:
    cycles = [" -> ".join(c) for c in find_cycles(import_graph()) if all(_within(m, REHEARSAL) for m in c)]
    assert not cycles, _report("import cycles in migrator.rehearsal", cycles)


def test_no_import_cycles_anywhere() -> None:
    graph = import_graph()
    found = find_cycles(graph)
    edges = sorted({(a, b) for cycle in found for a, b in itertools.pairwise(cycle)})
    assert not found, (
        _report("import cycles in migrator", [" -> ".join(cycle) for cycle in found])
        + "\n"
        + _report("imports on those cycles", [_describe(graph, a, b) for a, b in edges])
    )


# --- the rehearsal wall ---------------------------------------------------------------------


def test_rehearsal_imports_nothing_of_the_tool() -> None:
    """The simulated AWS stands in for the real one: it must not share code with the tool it tests."""
    graph = import_graph()
    problems = [
        _describe(graph, importer, imported)
        for importer in sorted(_in_layer(graph, REHEARSAL))
        for imported in sorted(graph[importer])
        if not _within(imported, REHEARSAL) and imported != PACKAGE
    ]
    assert not problems, _report("rehearsal modules importing the tool", problems)


def test_rehearsal_takes_only_the_version_from_the_package_root() -> None:
    graph = import_graph()
    problems: list[str] = []
    for importer in sorted(_in_layer(graph, REHEARSAL)):
        if PACKAGE not in graph[importer]:
            continue
        path = PACKAGE_DIR.parent / _source(importer)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == PACKAGE and not node.level:
                names = [alias.name for alias in node.names if alias.name != "__version__"]
                names = [name for name in names if f"{PACKAGE}.{name}" not in graph]
                if names:
                    problems.append(f"{_source(importer)}:{node.lineno}: from {PACKAGE} import {', '.join(names)}")
            elif isinstance(node, ast.Import) and any(alias.name == PACKAGE for alias in node.names):
                problems.append(f"{_source(importer)}:{node.lineno}: import {PACKAGE}")
    assert not problems, _report("rehearsal modules taking more than __version__ from migrator", problems)


def test_only_the_cli_and_the_dry_run_start_the_rehearsal_world() -> None:
    graph = import_graph()
    importers = [
        module
        for module in graph
        if not _within(module, REHEARSAL) and not any(_within(module, client) for client in REHEARSAL_CLIENTS)
    ]
    problems = _violations(graph, importers, (REHEARSAL,))
    assert not problems, _report("modules outside the CLI and dry-run importing the rehearsal world", problems)


# Inside the wing: `world` (data, live state, CA) at the bottom; KMS, the query APIs, the XKS proxy and Secrets
# Manager each build on it alone; `server`, `serve_main` and `proxy_main` compose them and are imported by none.
REHEARSAL_ALLOWED: dict[str, tuple[str, ...]] = {
    "migrator.rehearsal.world": ("migrator.rehearsal.world",),
    "migrator.rehearsal.kms": ("migrator.rehearsal.kms", "migrator.rehearsal.world"),
    "migrator.rehearsal.query": ("migrator.rehearsal.query", "migrator.rehearsal.world"),
    "migrator.rehearsal.xks": ("migrator.rehearsal.xks", "migrator.rehearsal.world"),
    "migrator.rehearsal.secrets_api": ("migrator.rehearsal.world",),
}


@pytest.mark.parametrize("part", sorted(REHEARSAL_ALLOWED))
def test_rehearsal_parts_build_only_on_the_world(part: str) -> None:
    graph = import_graph()
    allowed = REHEARSAL_ALLOWED[part]
    problems = [
        _describe(graph, importer, imported)
        for importer in sorted(_in_layer(graph, part))
        for imported in sorted(graph[importer])
        if _within(imported, REHEARSAL) and not any(_within(imported, prefix) for prefix in allowed)
    ]
    assert not problems, _report(f"{part} importing more than {', '.join(allowed)}", problems)


# --- layers, one way ------------------------------------------------------------------------

LAYER_RULES: dict[str, tuple[str, ...]] = {
    # migrator.aws is the bottom layer, held to a stricter rule: test_aws_imports_only_aws.
    "migrator.plan": (
        "migrator.fleet",
        "migrator.capture",
        "migrator.journal",
        "migrator.preflight",
        "migrator.engine",
        "migrator.cli",
        "migrator.dryrun",
        "migrator.report",
    ),
    "migrator.journal": (
        "migrator.fleet",
        "migrator.capture",
        "migrator.aws",
        "migrator.preflight",
        "migrator.engine",
        "migrator.cli",
        "migrator.dryrun",
        "migrator.report",
    ),
    "migrator.preflight": (
        "migrator.fleet",
        "migrator.capture",
        "migrator.engine",
        "migrator.cli",
        "migrator.dryrun",
        "migrator.report",
    ),
    "migrator.engine": ("migrator.fleet", "migrator.capture", "migrator.cli", "migrator.dryrun", "migrator.report"),
    "migrator.dryrun": ("migrator.fleet", "migrator.capture", "migrator.cli", "migrator.report"),
    # The change record reads the engine's summary and the journal; only the CLI imports it.
    "migrator.report": ("migrator.cli", "migrator.dryrun", "migrator.preflight", "migrator.aws", "migrator.capture"),
    # Capture reads the account with aws/ and preflight's probes and writes a world file; only the CLI imports it.
    "migrator.capture": (
        "migrator.fleet",
        "migrator.cli",
        "migrator.dryrun",
        "migrator.engine",
        "migrator.journal",
        "migrator.report",
    ),
    # The fleet drives the engine's per-store runs; it never reaches the CLI, the rehearsal or a report.
    "migrator.fleet": ("migrator.cli", "migrator.dryrun", "migrator.report", "migrator.capture"),
}
# The one downward exception: the journal knows the secret type so that it can refuse to store one.
LAYER_EXCEPTIONS: dict[str, tuple[str, ...]] = {"migrator.journal": ("migrator.aws.secret_refs",)}


@pytest.mark.parametrize("layer", sorted(LAYER_RULES))
def test_layer_imports_only_downwards(layer: str) -> None:
    graph = import_graph()
    excepted = [f"imports {module}" for module in LAYER_EXCEPTIONS.get(layer, ())]
    problems = [
        p
        for p in _violations(graph, _in_layer(graph, layer), LAYER_RULES[layer])
        if not any(p.endswith(e) for e in excepted)
    ]
    assert not problems, _report(f"{layer} importing a layer it must not", problems)


def test_aws_imports_only_aws() -> None:
    """Stricter than the layer rule: the AWS wrappers depend on nothing else in the tool."""
    graph = import_graph()
    problems = [
        _describe(graph, importer, imported)
        for importer in sorted(_in_layer(graph, "migrator.aws"))
        for imported in sorted(graph[importer])
        if not _within(imported, "migrator.aws") and imported != PACKAGE
    ]
    assert not problems, _report("migrator.aws importing outside itself", problems)
