"""The import contract of ``operations`` and ``hub`` (docs/architecture.md, "Layers"): no import
cycles, and the layers written down there. The graph is built with ``ast`` from the source files,
so it counts every import, at the top of a module, inside a function or under TYPE_CHECKING."""

from __future__ import annotations

import ast
import re
from collections import deque
from collections.abc import Iterable
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("operations", "hub")
LAYERS_DOC = ROOT / "docs" / "architecture.md"

# What the hub may import of operations: the push reads the feed and nothing else of the store.
HUB_USES = {
    "operations.errors",
    "operations.feed",
    "operations.auth.identity",
    "operations.metrics",
    "operations.auth.tokens",
    "operations.tasks",
}
# Outside libraries the hub must not import: Redis is reached through the feed.
HUB_AVOIDS = {"redis"}
# The only importers of the hub: the wiring and the command line.
HUB_IMPORTERS = {"operations.service", "operations.cli"}

# The store layer: the store package (Redis, the keys, the change streams...), the records, the
# change feed, and the sagas' and dead letters' stores (a package counts for all its modules).
STORE = {
    "operations.deadletters.store",
    "operations.feed",
    "operations.records",
    "operations.sagas.store",
    "operations.store",
}
# The HTTP surface; every module of ours that imports starlette must be in it (a package counts
# for all its modules).
HTTP = {
    "hub.page",
    "operations.assembly",
    "operations.deadletters.http",
    "operations.deadletters.openapi",
    "operations.http",
    "operations.pacco.models",
    "operations.pacco.openapi",
    "operations.pacco.orders",
    "operations.sagas.http",
    "operations.sagas.http_bulk",
    "operations.sagas.http_start",
    "operations.sagas.models",
    "operations.sagas.openapi",
    "operations.service",
}
HTTP_LIBRARIES = {"starlette", "socketio", "engineio"}

# The plumbing beneath the tracking path: RabbitMQ and who is asking. Like the store, it knows
# no HTTP route.
PLUMBING = {"operations.amqp", "operations.auth"}

# The order-making sample (Pacco's AIOrderMakingSaga, POST /orders, the simulated services):
# only the wiring, the command line and the sample itself import it.
SAMPLE = {"operations.pacco"}
SAMPLE_IMPORTERS = {"operations.service", "operations.cli"}

# The Python client (docs/clients.md): it imports, of operations, only what a client needs, and
# none of the server's libraries, so that a service using it carries none of the server.
CLIENT = {"operations.client"}
CLIENT_USES = {
    "operations.backoff",
    "operations.errors",
    "operations.records",
    "operations.states",
    "operations.timestamps",
}
CLIENT_AVOIDS = {"starlette", "uvicorn", "redis", "aio_pika", "aiormq", "hub"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {
        module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    }


def _imported(name: str, node: ast.Import | ast.ImportFrom) -> Iterable[str]:
    """The modules one import statement of module ``name`` names, ours resolved to a module."""
    ours = modules()
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = name if ours[name].name == "__init__.py" else name.rpartition(".")[0]
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, *([base] if base else [])])
        # `from package import module` imports the module; `from module import name`, the module.
        targets = [f"{base}.{alias.name}" for alias in node.names]
        targets = [target if target in ours else base for target in targets]
    for target in targets:
        if target.split(".")[0] not in PACKAGES:
            yield target
            continue
        while target not in ours and "." in target:
            target = target.rpartition(".")[0]
        if target in ours:
            yield target


@cache
def imports() -> dict[str, frozenset[str]]:
    """Each module's imports: our modules by name, outside ones as written."""
    graph: dict[str, frozenset[str]] = {}
    for name, path in modules().items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                found.update(_imported(name, node))
        found.discard(name)
        graph[name] = frozenset(found)
    return graph


def internal() -> dict[str, set[str]]:
    """Our modules' imports of each other."""
    ours = modules()
    return {
        name: {target for target in targets if target in ours}
        for name, targets in imports().items()
    }


def in_layer(name: str, layer: set[str]) -> bool:
    return any(name == member or name.startswith(member + ".") for member in layer)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: one path for each strongly connected group of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph[node]:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_loop(graph, group) for group in groups]


def _loop(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    """A path from the group's first module back to itself, within the group."""
    start, members = group[0], set(group)
    parents: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in sorted(graph[node] & members):
            if target == start:
                path = [node]
                while (parent := parents[path[-1]]) is not None:
                    path.append(parent)
                return [*reversed(path), start]
            if target not in parents:
                parents[target] = node
                queue.append(target)
    return group


def chain(graph: dict[str, set[str]], start: str, goal: set[str]) -> list[str] | None:
    """A chain of imports from ``start`` to a module in the layer ``goal``, if there is one."""
    parents: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in sorted(graph[node]):
            if target in parents or target == start:
                continue
            parents[target] = node
            if in_layer(target, goal):
                path = [target]
                while path[-1] != start:
                    path.append(parents[path[-1]])
                return list(reversed(path))
            queue.append(target)
    return None


# -- the graph itself ---------------------------------------------------------------------


def test_the_graph_holds_every_module_and_resolves_imports() -> None:
    graph = imports()
    assert len(graph) > 80
    assert "operations.feed" in graph["hub.hub"]  # absolute import of ours
    assert "hub.recovering" in graph["hub.hub"]  # relative import of a sibling
    assert "operations.sagas.saga" in graph["operations.sagas"]  # relative, from a package
    assert "operations.store.keys" in graph["operations.feed"]
    assert "starlette.applications" in graph["operations.service"]  # outside, as written


def test_a_cycle_is_found_and_shown_as_a_path() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert cycles(graph) == [["a", "b", "c", "a"], ["e", "e"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_every_module_the_contract_names_exists() -> None:
    named = HUB_USES | HUB_IMPORTERS | STORE | HTTP | PLUMBING | SAMPLE | SAMPLE_IMPORTERS
    named |= CLIENT | CLIENT_USES
    assert sorted(named - set(modules())) == []


def test_the_layers_are_written_down_in_the_architecture_page() -> None:
    text = LAYERS_DOC.read_text(encoding="utf-8")
    section = re.search(r"^## Layers\n(.*?)(?=^## )", text, re.M | re.S)
    assert section is not None, "docs/architecture.md has no Layers section"
    named = set(re.findall(r"`([\w.]+)`", section[1]))
    rules = HUB_USES | HUB_IMPORTERS | STORE | PLUMBING | SAMPLE | {"hub"} | HUB_AVOIDS
    rules |= CLIENT | CLIENT_USES
    assert sorted(rules - named) == []
    assert "tests/test_imports.py" in section[1]


# -- the contract -------------------------------------------------------------------------


def test_there_are_no_import_cycles() -> None:
    assert cycles(internal()) == []


def test_the_hub_uses_the_feed_and_a_few_shared_parts_only() -> None:
    wrong = {
        (name, target)
        for name, targets in imports().items()
        if in_layer(name, {"hub"})
        for target in targets
        if (target.startswith("operations") and target not in HUB_USES)
        or target.split(".")[0] in HUB_AVOIDS
    }
    assert sorted(wrong) == []


def test_nothing_imports_the_hub_but_the_wiring_and_the_command_line() -> None:
    wrong = {
        (name, target)
        for name, targets in internal().items()
        if not in_layer(name, {"hub"}) and name not in HUB_IMPORTERS
        for target in targets
        if in_layer(target, {"hub"})
    }
    assert sorted(wrong) == []


def test_the_store_and_the_plumbing_reach_no_http_module() -> None:
    graph = internal()
    lower = sorted(name for name in graph if in_layer(name, STORE | PLUMBING))
    assert len(lower) > len(STORE)
    found = {name: chain(graph, name, HTTP | {"hub"}) for name in lower}
    assert {name: path for name, path in found.items() if path is not None} == {}
    outside = {
        (name, target)
        for name, targets in imports().items()
        if in_layer(name, STORE | PLUMBING)
        for target in targets
        if target.split(".")[0] in HTTP_LIBRARIES
    }
    assert sorted(outside) == []


def test_every_module_that_imports_starlette_is_in_the_http_layer() -> None:
    users = {
        name
        for name, targets in imports().items()
        if any(target.split(".")[0] == "starlette" for target in targets)
    }
    assert sorted(name for name in users if not in_layer(name, HTTP)) == []


def test_only_the_wiring_and_the_command_line_import_the_order_making_sample() -> None:
    wrong = {
        (name, target)
        for name, targets in internal().items()
        if not in_layer(name, SAMPLE) and name not in SAMPLE_IMPORTERS
        for target in targets
        if in_layer(target, SAMPLE)
    }
    assert sorted(wrong) == []


def test_the_client_reaches_only_what_a_client_needs_and_none_of_the_server() -> None:
    graph = internal()
    client = {name for name in graph if in_layer(name, CLIENT)}
    assert len(client) > 3
    reached, queue = set(client), deque(client)
    while queue:
        for target in graph[queue.popleft()] - reached:
            reached.add(target)
            queue.append(target)
    assert sorted(name for name in reached if not in_layer(name, CLIENT | CLIENT_USES)) == []
    outside = {
        (name, target)
        for name, targets in imports().items()
        if name in reached
        for target in targets
        if target.split(".")[0] in CLIENT_AVOIDS
    }
    assert sorted(outside) == []
