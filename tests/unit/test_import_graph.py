"""No import cycle inside ``driftline/``: every import statement counts, the lazy ones inside functions and
those under ``TYPE_CHECKING`` included (a cycle broken only by importing late is still two modules that
cannot be read, or tested, one without the other)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "driftline"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module → the driftline modules it imports (``from a.b import c`` counts ``a.b``, and ``a.b.c``
    when that is a module)."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path}: relative import"
                base = node.module or ""
                imported.add(base)
                imported.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {m for m in imported if m in modules and m != name and not name.startswith(f"{m}.")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
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
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_of_driftline_imports_itself_back() -> None:
    graph = import_graph()
    assert len(graph) > 50 and "driftline.streaming.loop" in graph["driftline.app.run"]
    assert cycles(graph) == []


PROCESSING = ("driftline.pipeline", "driftline.stage", "driftline.merge", "driftline.events", "driftline.events.join",
              "driftline.grouping", "driftline.audit", "driftline.outcome", "driftline.version_tracking",
              "driftline.registry", "driftline.sinks", "driftline.protocols")
"""Processing: it returns outcomes and writes through the Store and ControlSink protocols only."""
CLIENTS = ("confluent_kafka", "clickhouse_connect", "chdb", "driftline.connectors.kafka", "driftline.connectors.clickhouse")


def third_party(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_processing_imports_no_kafka_or_clickhouse_client() -> None:
    graph = import_graph()
    reached, todo = set(), list(PROCESSING)
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo += graph[module]
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    imported = {name: module for module in reached for name in third_party(paths[module])}
    clients = {name: module for name, module in imported.items() if name.startswith(CLIENTS)}
    assert clients == {}, f"processing reaches a Kafka or ClickHouse client: {clients}"
    assert "driftline.engine.monitor" in reached  # (the walk went somewhere)
