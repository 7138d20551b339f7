"""The house rules the code itself can be checked against: no two public classes in the package
(``operations`` and ``hub``) share a name, so a name read anywhere means one thing."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("operations", "hub")


def public_classes(root: Path) -> dict[str, list[str]]:
    """Each public class name defined at the top level of a module under ``root``'s packages,
    with the modules that define it."""
    defined: dict[str, list[str]] = defaultdict(list)
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in tree.body:
                if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                    defined[node.name].append(path.relative_to(root).as_posix())
    return defined


def test_the_check_sees_every_module() -> None:
    defined = public_classes(ROOT)
    assert defined["Saga"] == ["operations/sagas/saga.py"]
    assert defined["Operation"] == ["operations/records.py"]
    assert len(defined) > 100


def test_no_two_public_classes_share_a_name() -> None:
    twins = {name: where for name, where in public_classes(ROOT).items() if len(where) > 1}
    assert twins == {}, "public classes defined twice: " + "; ".join(
        f"{name} ({', '.join(where)})" for name, where in sorted(twins.items())
    )


# One word per concept in the saga wing (the glossary in docs/architecture.md): a saga type's
# name is ``saga_name``, never ``saga: str`` (``saga`` is one running saga); a saga type is
# ``saga_type`` and the registry of them ``saga_types``, never ``kind``, ``kinds`` or ``types``.
SAGA_WING = ("operations/sagas",)
NOT_SAGA_TYPES = {"kind", "kinds", "types"}


def _is_str(annotation: ast.expr | None) -> bool:
    if annotation is None:
        return False
    return ast.unparse(annotation).replace(" ", "") in {"str", "str|None", "None|str"}


def saga_names_called_saga(source: str) -> list[str]:
    """Where a parameter or a class's field named ``saga`` holds a string (a saga name)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            a = node.args
            for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs]:
                if arg.arg == "saga" and _is_str(arg.annotation):
                    found.append(f"line {arg.lineno}: parameter saga")
        elif isinstance(node, ast.ClassDef):
            for statement in node.body:
                if (
                    isinstance(statement, ast.AnnAssign)
                    and isinstance(statement.target, ast.Name)
                    and statement.target.id == "saga"
                    and _is_str(statement.annotation)
                ):
                    found.append(f"line {statement.lineno}: field {node.name}.saga")
    return found


def saga_types_called_otherwise(source: str) -> list[str]:
    """Where a name, a parameter or an attribute set on ``self`` is ``kind``, ``kinds`` or
    ``types`` (a keyword passed to another module's function keeps that function's name)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name) and node.id in NOT_SAGA_TYPES:
            found.append(f"line {node.lineno}: name {node.id}")
        elif isinstance(node, ast.arg) and node.arg in NOT_SAGA_TYPES:
            found.append(f"line {node.lineno}: parameter {node.arg}")
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in NOT_SAGA_TYPES
            and isinstance(node.ctx, ast.Store)
        ):
            found.append(f"line {node.lineno}: attribute {node.attr}")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in (
            NOT_SAGA_TYPES
        ):
            found.append(f"line {node.lineno}: method {node.name}")
    return found


def test_the_word_checks_see_what_they_look_for() -> None:
    old = (
        "class Pending:\n    saga: str\n"
        "def load(saga: str, saga_id: str) -> None:\n    kind = types.get(saga)\n"
        "class Api:\n    def __init__(self, kinds: list[str] | None) -> None:\n"
        "        self.types = kinds\n"
    )
    assert len(saga_names_called_saga(old)) == 2
    assert len(saga_types_called_otherwise(old)) == 5
    new = (
        "class Pending:\n    saga_name: str\n"
        "def load(saga_name: str, saga: Saga[Any]) -> None:\n"
        "    saga_type = saga_types.get(saga_name)\n    send(kind=MessageKind.EVENT)\n"
    )
    assert saga_names_called_saga(new) == saga_types_called_otherwise(new) == []


def test_a_saga_name_is_never_called_saga() -> None:
    found = {
        path.relative_to(ROOT).as_posix(): where
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if (where := saga_names_called_saga(path.read_text(encoding="utf-8")))
    }
    assert found == {}, f"a saga name is saga_name, not saga: {found}"


def test_the_saga_wing_calls_a_saga_type_a_saga_type() -> None:
    paths = sorted(path for wing in SAGA_WING for path in (ROOT / wing).rglob("*.py"))
    assert ROOT / "operations/sagas/registry.py" in paths
    found = {
        path.relative_to(ROOT).as_posix(): where
        for path in paths
        if (where := saga_types_called_otherwise(path.read_text(encoding="utf-8")))
    }
    assert found == {}, f"a saga type is saga_type, the registry saga_types: {found}"
