"""JSON documents from outside the service, held to fixed bounds before anything keeps or sends
them: HTTP bodies, saga messages' bodies and the saga data they become.

A document may nest at most :data:`MAX_DEPTH` arrays and objects, and its integers must fit in a
signed 64-bit integer (what every JSON encoder the service uses, and .NET's ``long``, can write).
Anything else raises :class:`DocumentError`, naming where it broke the bound; callers turn it into
a ``400`` (HTTP) or a dead letter (AMQP). The walk is iterative, so no document can make it recurse.
"""

from __future__ import annotations

from typing import Any

import msgspec

from operations.errors import DocumentError

MAX_DEPTH = 32
MIN_INTEGER = -(2**63)
MAX_INTEGER = 2**63 - 1


def decode(raw: bytes | str) -> Any:
    """The JSON document in ``raw``, within the bounds; raises :class:`DocumentError` when it is
    not JSON or breaks a bound."""
    try:
        document = msgspec.json.decode(raw)
    except msgspec.DecodeError as error:
        raise DocumentError("", f"not valid JSON: {error}") from None
    except RecursionError:
        raise DocumentError("", f"nested more than {MAX_DEPTH} levels deep") from None
    check(document)
    return document


def check(document: Any) -> None:
    """Raises :class:`DocumentError` when ``document`` (decoded JSON) nests deeper than
    :data:`MAX_DEPTH` or holds an integer outside the signed 64-bit range."""
    stack: list[tuple[Any, int, str]] = [(document, 0, "")]
    while stack:
        value, depth, where = stack.pop()
        if isinstance(value, dict):
            if depth >= MAX_DEPTH:
                raise DocumentError(where, f"nested more than {MAX_DEPTH} levels deep")
            stack.extend((item, depth + 1, f"{where}.{key}") for key, item in value.items())
        elif isinstance(value, list):
            if depth >= MAX_DEPTH:
                raise DocumentError(where, f"nested more than {MAX_DEPTH} levels deep")
            stack.extend((item, depth + 1, f"{where}[{n}]") for n, item in enumerate(value))
        elif isinstance(value, int) and not MIN_INTEGER <= value <= MAX_INTEGER:
            raise DocumentError(where, "an integer outside the signed 64-bit range")
