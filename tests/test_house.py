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
