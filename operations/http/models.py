"""The HTTP API's typed models (msgspec): what each route reads from its query string or body, and
what it answers. Routes validate their input through :func:`read_query` and :func:`read_body`,
encode their answers from these types, and ``GET /openapi.json`` is generated from them
(:mod:`operations.http.openapi`). The saga routes' models are in :mod:`operations.sagas.models`.

Every body goes through :func:`bounded_body` (a size limit, never read whole) and
:func:`read_body` (the bounded JSON decoder, :mod:`operations.documents`, then the model), so a
refused body is refused before the route does anything with it.

msgspec is used for its speed: it validates and encodes several times faster than the
alternatives, and the record read by ``GET /operations/{id}`` is encoded by it. That record,
:class:`~operations.records.Operation`, is the store's own type, answered as it is read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import UNSET, Meta, UnsetType
from starlette.requests import Request

from operations import documents
from operations.auth.identity import MAX_ID_LENGTH, id_problem
from operations.envelope import MAX_TEXT_LENGTH
from operations.errors import DocumentError, InvalidBody, InvalidQuery, PayloadTooLarge
from operations.records import Operation as Operation  # the one record type, answered as it is
from operations.states import State
from operations.store.listing import MAX_PAGE
from operations.timestamps import Timestamp

MAX_WAIT_SECONDS = 60
DEFAULT_PAGE = 50
MAX_CURSOR_LENGTH = 200
MAX_WHERE = 100  # characters of a body's offending path quoted back


class Error(msgspec.Struct):
    """Every error answer: a machine-readable ``code`` (snake_case) and a human ``reason``."""

    code: str
    reason: str


class Health(msgspec.Struct):
    status: Literal["ok"] = "ok"


class ReadinessReport(msgspec.Struct):
    """Whether each dependency (``rabbitmq``, ``redis``) is connected."""

    status: Literal["ready", "unavailable"]
    checks: dict[str, bool]


class Transition(msgspec.Struct, rename="camel"):
    """One applied change of an operation. Entries written by older versions may lack the
    later fields; those are left out, never sent as null."""

    version: int | UnsetType = UNSET
    state: State | UnsetType = UNSET
    name: str | UnsetType = UNSET
    message: Annotated[str, Meta(description="The message name.")] | UnsetType = UNSET
    message_id: str | UnsetType | None = UNSET
    code: str | UnsetType | None = UNSET
    reason: str | UnsetType | None = UNSET
    at: Timestamp | UnsetType = UNSET
    sent_at: Timestamp | UnsetType | None = UNSET


class History(msgspec.Struct):
    """An operation's transitions, oldest first."""

    id: str
    items: list[Transition]


class OperationPage(msgspec.Struct):
    """A page of operations, newest first; ``next`` is the cursor of the next page, or null."""

    items: list[Operation]
    next: str | None


class ReadOperation(msgspec.Struct):
    """The query of ``GET /operations/{id}``."""

    wait: Annotated[
        float,
        Meta(
            ge=0,
            le=MAX_WAIT_SECONDS,
            description="With If-None-Match: wait up to this many seconds for the operation to"
            " change or finish.",
        ),
    ] = 0.0


class ListOperations(msgspec.Struct, rename="camel"):
    """The query of ``GET /operations``."""

    state: State | None = None
    name: (
        Annotated[str, Meta(max_length=MAX_TEXT_LENGTH, description="The display name, exactly.")]
        | None
    ) = None
    user_id: (
        Annotated[
            str, Meta(max_length=MAX_ID_LENGTH, description="Admins only: one user's operations.")
        ]
        | None
    ) = None
    limit: Annotated[int, Meta(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE
    cursor: (
        Annotated[
            str,
            Meta(max_length=MAX_CURSOR_LENGTH, description="The `next` of the previous page."),
        ]
        | None
    ) = None

    def __post_init__(self) -> None:
        for field, value, longest in (
            ("name", self.name, MAX_TEXT_LENGTH),
            ("userId", self.user_id, MAX_ID_LENGTH),
            ("cursor", self.cursor, MAX_CURSOR_LENGTH),
        ):
            if value and (problem := id_problem(value, longest)) is not None:
                raise InvalidQuery(field, f"{field} {problem}")


Query = TypeVar("Query", bound=msgspec.Struct)
Body = TypeVar("Body")


def read_query(params: Mapping[str, str], model: type[Query]) -> Query:
    """The query string as ``model``; raises :class:`InvalidQuery` naming the parameter and what
    it must be. Unknown parameters are ignored."""
    try:
        return msgspec.convert(dict(params), model, strict=False)
    except msgspec.ValidationError as error:
        field, _ = _located(str(error))
        raise InvalidQuery(field, f"{field} must be {expectation(model, field)}") from None


async def bounded_body(request: Request, limit: int) -> bytes:
    """The body; raises :class:`PayloadTooLarge` once it is known to exceed ``limit`` bytes,
    by its ``Content-Length`` or as it arrives: it is never read whole."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit():
        digits = declared.lstrip("0")  # int() refuses over 4,300 digits
        if len(digits) > len(str(limit)) or int(digits or "0") > limit:
            raise PayloadTooLarge(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def read_body(
    raw: bytes, model: type[Body], invalid: type[InvalidBody] = InvalidBody, lenient: bool = False
) -> Body:
    """The JSON body as ``model``; raises ``invalid`` naming the field and the fault. The body is
    decoded by :func:`operations.documents.decode`, so it nests at most
    :data:`~operations.documents.MAX_DEPTH` levels and its integers fit in 64 bits. With
    ``lenient``, as a .NET client may write it: a field's name is matched in any letter case
    (PascalCase), and a null field counts as absent."""
    try:
        document = documents.decode(raw)
    except DocumentError as error:
        where = error.where.lstrip(".")
        if not where.isprintable():  # keys are the client's: never a raw newline in a log line
            where = where.encode("unicode_escape").decode("ascii")
        if len(where) > MAX_WHERE:
            where = where[:MAX_WHERE] + "…"
        if not where:
            raise invalid("", f"the body must be a JSON object: {error.reason}") from None
        raise invalid(where, f"the body at {where}: {error.reason.rsplit(': ', 1)[-1]}") from None
    if not isinstance(document, dict):
        raise invalid("", "the body must be a JSON object")
    if lenient and isinstance(model, type) and issubclass(model, msgspec.Struct):
        names = {name.lower(): name for name in model.__struct_encode_fields__}
        document = {
            names.get(key.lower(), key): value
            for key, value in document.items()
            if value is not None
        }
    try:
        return msgspec.convert(document, model)
    except msgspec.ValidationError as error:
        field, reason = _located(str(error))
        raise invalid(field, reason) from None


_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`$")


def _located(text: str) -> tuple[str, str]:
    """A msgspec validation message as (field, reason): ``limit``, ``parcelIds[0]``."""
    match = _AT.match(text)
    assert match is not None
    message, path = match["message"], (match["path"] or "").lstrip(".")
    missing = _MISSING.match(message)
    if missing:
        field = f"{path}.{missing['name']}" if path else missing["name"]
        return field, f"{field} is required"
    if not path:
        return "", message
    if "matching regex '\\\\S'" in message:
        return path, f"{path} must not be blank"
    return path, f"{path}: {message[:1].lower()}{message[1:]}"


def expectation(model: type[msgspec.Struct], field: str) -> str:
    """What a field of a query model must be, in words, from its type and constraints."""
    described = msgspec.inspect.type_info(model)
    assert isinstance(described, msgspec.inspect.StructType)
    for info in described.fields:
        if info.encode_name == field:
            return _describe(info.type)
    return "valid"


def _describe(kind: msgspec.inspect.Type) -> str:
    if isinstance(kind, msgspec.inspect.Metadata):
        return _describe(kind.type)
    if isinstance(kind, msgspec.inspect.UnionType):
        members = [t for t in kind.types if not isinstance(t, msgspec.inspect.NoneType)]
        return " or ".join(_describe(member) for member in members)
    if isinstance(kind, msgspec.inspect.EnumType):
        return "one of " + ", ".join(str(member.value) for member in kind.cls)
    if isinstance(kind, msgspec.inspect.IntType):
        return f"a whole number{_bounds(kind.ge, kind.le)}"
    if isinstance(kind, msgspec.inspect.FloatType):
        return f"a number{_bounds(kind.ge, kind.le)}"
    if isinstance(kind, msgspec.inspect.StrType):
        longest = kind.max_length
        return "a string" + ("" if longest is None else f" of at most {longest} characters")
    return "valid"


def _bounds(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f" from {low:g} to {high:g}"
    if low is not None:
        return f" of at least {low:g}"
    return "" if high is None else f" of at most {high:g}"


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


_encoder = msgspec.json.Encoder()
