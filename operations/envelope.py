"""The :class:`Envelope`: everything the service reads from a delivered AMQP message, whatever
bus wrote it, and the readers of its parts that every wire format shares.

Reading is total: a message either becomes an envelope, possibly with ``problems`` (the parts
that could not be read; the rest is still applied), or raises :class:`EnvelopeError` when nothing
useful can be read. Each bus's format (:mod:`operations.formats`) builds envelopes with these
readers. Nothing here touches the broker or the store.

The saga intake reads its messages' headers, ``message_context`` and ids through the same functions
(:func:`header`, :func:`message_context`, :func:`operation_id`, :func:`message_id`), so both
consumers read one message alike.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from operations import documents
from operations.auth.identity import MAX_ID_LENGTH, normalise_id
from operations.errors import DocumentError, EnvelopeError
from operations.states import MessageKind, State

MAX_TEXT_LENGTH = 2_000
_DEPTH = documents.MAX_DEPTH


class Delivered(Protocol):
    """The parts of a delivered message the envelope reads; aio-pika's IncomingMessage fits."""

    @property
    def exchange(self) -> str | None: ...
    @property
    def routing_key(self) -> str | None: ...
    @property
    def body(self) -> bytes: ...
    @property
    def headers(self) -> Mapping[str, Any]: ...
    @property
    def correlation_id(self) -> str | None: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def timestamp(self) -> dt.datetime | None: ...
    @property
    def content_type(self) -> str | None: ...


@dataclass(slots=True)
class Envelope:
    """What one message says. Built once per message and never changed (not frozen only because
    a frozen dataclass costs three times as much to build, and one is built per message)."""

    message: str
    exchange: str
    kind: MessageKind
    state: State
    operation_id: str | None
    message_id: str | None
    user_id: str | None
    name: str
    code: str | None = None
    reason: str | None = None
    sent_at: dt.datetime | None = None
    problems: tuple[str, ...] = ()
    trace_id: str | None = None
    """``message_context.traceId`` as sent (a trace to link to when no traceparent came)."""


def operation_id(raw: str | None) -> str | None:
    """The correlation id as the operation's id (a GUID in one spelling), None when there is
    none; raises :class:`EnvelopeError` when it cannot be an id."""
    if raw is None or raw.strip() == "":
        return None
    if len(raw) > MAX_ID_LENGTH or not raw.isprintable():
        raise EnvelopeError(
            "correlation_id", f"must be printable and at most {MAX_ID_LENGTH} characters"
        )
    return normalise_id(raw)


def message_id(raw: str | None) -> str | None:
    """The message id, None when there is none; raises :class:`EnvelopeError` when too long."""
    if raw is None or raw == "":
        return None
    if len(raw) > MAX_ID_LENGTH:
        raise EnvelopeError("message_id", f"must be at most {MAX_ID_LENGTH} characters")
    return raw


def header(headers: Mapping[str, Any], name: str) -> Any:
    """An AMQP header by its name in any letter case (``Saga``, ``saga``), or None. The one
    case-insensitive lookup: every reader of headers, and of a ``message_context``'s fields
    (camelCase or .NET's PascalCase), goes through it."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, candidate in headers.items():
        if isinstance(key, str) and key.lower() == wanted:
            return candidate
    return None


def named_fields(
    fields: Mapping[str, Any], names: Iterable[str], keep: bool = True
) -> dict[str, Any]:
    """The entries of ``fields`` (AMQP headers, or a ``message_context`` object), keys as sent,
    whose names, in any letter case, are among ``names``; with ``keep=False``, the others."""
    wanted = {name.lower() for name in names}
    return {
        key: value
        for key, value in fields.items()
        if (isinstance(key, str) and key.lower() in wanted) is keep
    }


def header_text(value: Any) -> str | None:
    """An AMQP header's value as text, leniently: str as it is, bytes decoded with undecodable
    bytes replaced; None for any other type. For headers that are read, not judged."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return None


def as_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


def text_or_problem(raw: Any, label: str, problems: list[str], expected: str) -> str | None:
    """``raw`` as text; else a problem naming ``label`` and what was ``expected``, and None."""
    text = as_text(raw)
    if text is None:
        problems.append(f"{label}: expected {expected}, got {type(raw).__name__}")
    return text


def saga_state(raw: Any, problems: list[str]) -> State | None:
    if raw is None:
        return None
    text = text_or_problem(raw, "headers.Saga", problems, "UTF-8 text")
    return None if text is None else State.from_saga_header(text)


def message_context(
    headers: Mapping[str, Any], max_bytes: int, problems: list[str], *, kept: bool = False
) -> dict[str, Any]:
    """The ``message_context`` header's object with its keys as sent; ``{}`` when there is none
    or it cannot be read (the reason then goes to ``problems``). It may be JSON text (str or
    bytes) of at most ``max_bytes``, or an AMQP table.

    ``kept``: the context is kept and sent on (as a saga keeps it), so it is also held to the
    document bounds (:mod:`operations.documents`) and one that breaks them raises
    :class:`DocumentError`; the tracking path reads only a few short texts of it."""
    raw = header(headers, "message_context")
    if raw is None:
        return {}
    if isinstance(raw, Mapping):  # an AMQP table instead of JSON text
        return _table(raw, problems) if kept else dict(raw)
    if not kept and isinstance(raw, bytes | bytearray) and len(raw) <= max_bytes:
        # The usual case, read without decoding it to text first (orjson checks the UTF-8); on
        # any failure the slow path below names the problem.
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
        else:
            if isinstance(value, dict):
                return value
    size = len(raw) if isinstance(raw, bytes | bytearray | memoryview) else None
    text = as_text(raw)
    if text is None:
        problems.append("headers.message_context: expected UTF-8 JSON text")
        return {}
    size = size if size is not None else len(text.encode())
    if size > max_bytes:
        problems.append(f"headers.message_context: {size} bytes exceeds the limit of {max_bytes}")
        return {}
    if kept:
        return _kept(text, problems)
    return json_object(text, "headers.message_context", problems, bounded=False)


def _kept(text: str, problems: list[str]) -> dict[str, Any]:
    try:
        value = documents.decode(text)
    except DocumentError as error:
        if error.where == "" and error.reason.startswith("not valid JSON"):
            problems.append("headers.message_context: not valid JSON")
            return {}
        raise DocumentError("", f"headers.message_context: {error.reason}") from None
    if not isinstance(value, dict):
        problems.append(
            f"headers.message_context: expected a JSON object, got {type(value).__name__}"
        )
        return {}
    return value


def _table(raw: Mapping[Any, Any], problems: list[str]) -> dict[str, Any]:
    """An AMQP table as a context to keep: only if it is JSON as it stands."""
    try:
        text = orjson.dumps(raw).decode()
    except TypeError:
        problems.append("headers.message_context: an AMQP table holding values JSON cannot hold")
        return {}
    return _kept(text, problems)


def json_object(
    raw: str | bytes, field: str, problems: list[str], bounded: bool = True
) -> dict[str, Any]:
    """``bounded``: held to the document bounds (a body is; the context, of which only a few
    short texts are read, need not be)."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        problems.append(f"{field}: not valid JSON")
        return {}
    if bounded and _may_nest_too_deep(raw):
        try:
            documents.check(value)
        except DocumentError as error:
            problems.append(f"{field}: {error.reason}")
            return {}
    if not isinstance(value, dict):
        problems.append(f"{field}: expected a JSON object, got {type(value).__name__}")
        return {}
    return value


def _may_nest_too_deep(raw: str | bytes | bytearray) -> bool:
    """Whether ``raw`` holds enough brackets to nest past the bound, counted at C speed, so that
    almost every message skips the walk of :func:`documents.check`."""
    if isinstance(raw, str):
        return raw.count("[") + raw.count("{") > _DEPTH
    return raw.count(b"[") + raw.count(b"{") > _DEPTH


def folded(mapping: Mapping[Any, Any]) -> dict[str, Any]:
    """Keys folded to lower case, so camelCase and PascalCase read alike."""
    return {str(key).lower(): value for key, value in mapping.items()}


def text_field(fields: Mapping[str, Any], key: str, label: str, problems: list[str]) -> str | None:
    value = fields.get(key)
    if value is None:
        return None
    text = text_or_problem(value, label, problems, "a string")
    if text is None:
        return None
    text = text.strip()
    if len(text) > MAX_TEXT_LENGTH:
        problems.append(f"{label}: longer than {MAX_TEXT_LENGTH} characters, cut")
        text = text[:MAX_TEXT_LENGTH]
    return text or None


def context_user(context: Mapping[str, Any], problems: list[str]) -> str | None:
    user = context.get("user")
    if user is None:
        return None
    if not isinstance(user, Mapping):
        problems.append(f"message_context.user: expected an object, got {type(user).__name__}")
        return None
    return user_id(
        text_field(folded(user), "id", "message_context.user.id", problems),
        "message_context.user.id",
        problems,
    )


def header_user(raw: Any, label: str, problems: list[str]) -> str | None:
    """A user id carried as a header's value (``label`` names where): text, else a problem."""
    if raw is None:
        return None
    text = text_or_problem(raw, label, problems, "a string")
    return None if text is None else user_id(text.strip() or None, label, problems)


def rejection(
    fields: Mapping[str, Any], where: str, problems: list[str]
) -> tuple[str | None, str | None]:
    """A rejected message's ``code`` and ``reason``, from its own fields (keys folded) found at
    ``where`` (the body, a MassTransit envelope's message, a CloudEvent's data)."""
    code = text_field(fields, "code", f"{where}.code", problems)
    return code, text_field(fields, "reason", f"{where}.reason", problems)


def user_id(raw: str | None, label: str, problems: list[str]) -> str | None:
    """A user id as read from a message (``label`` names where): the operation's owner, or None
    when there is none or it breaks the rule a token's ``sub`` is held to, so that no one could
    sign in as that user (the reason then goes to ``problems``)."""
    if raw is None:
        return None
    if len(raw) > MAX_ID_LENGTH or not raw.isprintable():
        problems.append(f"{label}: not printable, or longer than {MAX_ID_LENGTH} characters")
        return None
    return normalise_id(raw)


def context_user_id(context: Mapping[str, Any]) -> str | None:
    """``user.id`` of a ``message_context`` object (keys as sent), read as :func:`parse` reads
    it: the operation's owner, or None."""
    return context_user(folded(context), [])


def context_trace_id(context: Mapping[str, Any]) -> str | None:
    """``traceId`` of a ``message_context`` object (keys as sent), as :func:`parse` reads it."""
    value = header(context, "traceId")
    return value if isinstance(value, str) else None
