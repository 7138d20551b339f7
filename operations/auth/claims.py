"""Claims given on the command line (``operations token --claim KEY=VALUE``), so a development
token can be shaped like an identity provider's.

``VALUE`` is read as JSON when it is JSON (``7``, ``true``, ``["admin"]``, ``{"a": 1}``) and is a
string otherwise. A dotted ``KEY`` builds nested objects: ``realm_access.roles=["admin"]`` gives
``{"realm_access": {"roles": ["admin"]}}``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from operations.errors import OperationsError


class ClaimError(OperationsError):
    """A bad ``--claim`` option of ``operations token``."""

    code = "invalid_claim"


def parse_claims(options: Iterable[str]) -> dict[str, Any]:
    claims: dict[str, Any] = {}
    for option in options:
        key, sep, raw = option.partition("=")
        path = key.strip().split(".")
        if not sep or "" in path:
            raise ClaimError(f"--claim {option!r} is not KEY=VALUE with a KEY like a or a.b")
        place = claims
        for depth, part in enumerate(path[:-1]):
            inner = place.setdefault(part, {})
            if not isinstance(inner, dict):
                where = ".".join(path[: depth + 1])
                raise ClaimError(f"--claim {key!r}: {where!r} is already a value, not an object")
            place = inner
        if path[-1] in place:
            raise ClaimError(f"--claim {key!r} is given more than once")
        place[path[-1]] = _value(raw)
    return claims


def _value(raw: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
