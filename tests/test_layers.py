"""The package's layers, read from its source (nothing is imported): imports flow one way, from
the public modules through the shared layer (eventstream._runtime) to the backends and the leaf
modules everything may use, and no module-level import runs in a circle.

- ``eventstream._runtime`` imports no public module at run time: only itself, the leaves and
  ``eventstream.errors``; ``backend.py`` alone imports the backends, to load the chosen one
  (``eventstream.config`` may be named for types only).
- A backend (``eventstream._pure``, ``eventstream._noop``, the compiled ``ext/``) imports at run
  time only the leaves; it may name other shared types under ``TYPE_CHECKING``.
- A leaf imports no other eventstream module but a leaf.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "eventstream"

#: What the compiled module (and any backend) may import at run time: modules that import no
#: eventstream module but one another.
LEAVES = frozenset(
    {
        "eventstream.errors",
        "eventstream._runtime.forks",
        "eventstream._runtime.librdkafka",
        "eventstream._runtime.records",
        "eventstream._runtime.telemetry.metrics",
        "eventstream._runtime.wire",
    }
)
BACKENDS = ("eventstream._pure", "eventstream._noop", "eventstream._core")


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    #: "top": run when the module is imported; "function": when a function runs; "types": under
    #: ``if TYPE_CHECKING``, never run.
    kind: str
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({self.kind}, line {self.line})"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
KNOWN = frozenset(MODULES) | {"eventstream._core"}


def _resolve(name: str) -> str | None:
    """The eventstream module ``name`` (a module, or a name in one) is in."""
    while name and name not in KNOWN:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _edges(module: str, path: Path) -> Iterator[Edge]:
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]

    def targets(node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        base = node.module or ""
        if node.level:
            parent = package[: len(package) - node.level + 1]
            base = ".".join([*parent, base] if base else parent)
        return [f"{base}.{alias.name}" for alias in node.names]

    def visit(node: ast.AST, kind: str) -> Iterator[Edge]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for statement in child.body:
                    yield from visit_one(statement, "types")
                for statement in child.orelse:
                    yield from visit_one(statement, kind)
            else:
                yield from visit_one(child, kind)

    def visit_one(node: ast.AST, kind: str) -> Iterator[Edge]:
        if isinstance(node, ast.Import | ast.ImportFrom):
            for name in targets(node):
                target = _resolve(name) if name.startswith("eventstream") else None
                if target is not None and target != module:
                    yield Edge(module, target, kind, node.lineno)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from visit(node, "function" if kind == "top" else kind)
        else:
            yield from visit(node, kind)

    yield from visit(ast.parse(path.read_text(encoding="utf-8")), "top")


EDGES = [edge for module, path in MODULES.items() for edge in _edges(module, path)]


def _compiled_edges() -> Iterator[Edge]:
    """The compiled module's Python imports (ext/*.pyx, *.pxi), all of which run."""
    pattern = re.compile(
        r"^\s*(?:from\s+(eventstream[\w.]*)\s+import\s+(\w+)|import\s+(eventstream[\w.]*))"
    )
    for path in sorted((ROOT / "ext").glob("*.p[yx][xi]")):
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            match = pattern.match(text)
            if match is None:
                continue
            name = f"{match[1]}.{match[2]}" if match[1] else match[3]
            target = _resolve(name)
            assert target is not None, f"{path.name}:{number} imports {name}, not in the package"
            yield Edge(f"eventstream._core ({path.name})", target, "top", number)


def _within(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_the_graph_is_read() -> None:
    """The reading itself works: known edges are found, with their kinds."""
    found = {(e.source, e.target, e.kind) for e in EDGES}
    assert ("eventstream.consumer", "eventstream._runtime.consuming", "top") in found
    assert ("eventstream._runtime.backend", "eventstream._pure", "function") in found
    assert ("eventstream._runtime.backend", "eventstream._core", "function") in found
    assert any(e.target == "eventstream._runtime.wire" for e in _compiled_edges())


def test_no_module_level_import_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for edge in EDGES:
        if edge.kind == "top":
            graph.setdefault(edge.source, set()).add(edge.target)
    done: set[str] = set()
    path: list[str] = []

    def walk(module: str) -> None:
        if module in path:
            cycle = [*path[path.index(module) :], module]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        path.append(module)
        for target in sorted(graph.get(module, ())):
            walk(target)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        walk(module)


def test_the_shared_layer_imports_no_public_module() -> None:
    allowed = LEAVES | {"eventstream._build_info"}
    wrong = [
        str(edge)
        for edge in EDGES
        if _within(edge.source, "eventstream._runtime")
        and not _within(edge.target, "eventstream._runtime")
        and edge.target not in allowed
        and not (edge.kind == "types" and edge.target == "eventstream.config")
        and not (
            edge.source == "eventstream._runtime.backend"
            and edge.kind == "function"
            and _within(edge.target, *BACKENDS)
        )
    ]
    assert wrong == []


def _backend_of(module: str) -> str | None:
    return next((b for b in BACKENDS if _within(module.split(" ")[0], b)), None)


def test_backends_import_only_leaves_at_run_time() -> None:
    wrong = [
        str(edge)
        for edge in [*EDGES, *_compiled_edges()]
        if (backend := _backend_of(edge.source)) is not None
        and edge.kind != "types"
        and not _within(edge.target, backend)
        and edge.target not in LEAVES
    ]
    assert wrong == []
    public = [
        str(edge)
        for edge in EDGES
        if _backend_of(edge.source) is not None
        and not _within(edge.target, "eventstream._runtime", *BACKENDS)
        and edge.target not in LEAVES
    ]
    assert public == [], "a backend names a public module, even for types"


def test_leaves_import_only_leaves() -> None:
    wrong = [
        str(edge)
        for edge in EDGES
        if edge.source in LEAVES and edge.kind != "types" and edge.target not in LEAVES
    ]
    assert wrong == []
