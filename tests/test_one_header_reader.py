"""One header reader: a case-insensitive lookup of an AMQP header (or of a ``message_context``
field) is written once, in ``operations/envelope.py`` (``header``), and every other module calls
it, as every filter of fields by name in any letter case calls ``named_fields``. A hand-written
lookup or filter (a loop over a mapping's keys comparing ``key.lower()`` to a name, or looking it
up in a set of names) fails here."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READER = Path("operations/envelope.py")
# Not header lookups, and left as they are on purpose:
ALLOWED = {
    # A saga's message body field, looked up by a Python attribute name.
    (Path("operations/sagas/saga.py"), "get"),
    # A setting's value matched against its options.
    (Path("operations/setting_values.py"), "parse"),
}


def _loop_names(tree: ast.AST) -> set[str]:
    """The names bound by ``for`` loops and comprehensions in ``tree``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.For | ast.AsyncFor | ast.comprehension):
            names.update(n.id for n in ast.walk(node.target) if isinstance(n, ast.Name))
    return names


def _lowered_name(node: ast.expr) -> str | None:
    """``name`` when ``node`` is ``name.lower()``."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "lower"
        and isinstance(node.func.value, ast.Name)
    ):
        return node.func.value.id
    return None


def hand_written_lookups(path: Path) -> list[str]:
    """Where a function of ``path`` compares ``key.lower()`` for a ``key`` it loops over."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    found: list[str] = []
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    for function in functions:
        if (path, function.name) in ALLOWED:
            continue
        inner = {id(n) for f in ast.walk(function) if f is not function for n in _nested(f)}
        loops = _loop_names(function)
        for node in ast.walk(function):
            if id(node) in inner or not isinstance(node, ast.Compare):
                continue
            if all(isinstance(op, ast.In | ast.NotIn) for op in node.ops):
                sides: tuple[ast.expr, ...] = (node.left,)  # ``key.lower() in names``
            elif all(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
                sides = (node.left, *node.comparators)
            else:
                continue
            for side in sides:
                if _lowered_name(side) in loops:
                    found.append(f"{path}:{node.lineno} in {function.name}")
    return found


def _nested(node: ast.AST) -> list[ast.AST]:
    """Every node of a function defined inside another (it is checked on its own)."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return list(ast.walk(node))
    return []


def test_only_the_envelope_module_looks_headers_up_in_any_letter_case() -> None:
    sources = sorted(
        path.relative_to(ROOT)
        for folder in ("operations", "hub")
        for path in (ROOT / folder).rglob("*.py")
    )
    assert READER in sources
    assert hand_written_lookups(READER), "the one reader is found by this check"
    found = [place for path in sources if path != READER for place in hand_written_lookups(path)]
    assert found == [], (
        "a case-insensitive lookup written again; call operations.envelope.header instead"
    )
