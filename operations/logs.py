"""Logging: readable lines on a terminal, one JSON object per line otherwise.

Every JSON line has a ``correlation_id`` key: the id of the message (the operation) the line is
about, and ``null`` on lines about no message in particular. A message's handlers set it with
:func:`handling`, and ``extra=`` may also pass one. Every other ``extra=`` field is a key of the
line too, and ``stack_info=True`` adds a ``stack`` key. Inside a recorded trace a line carries its
``trace_id`` and ``span_id``. Tokens and secrets are never logged: the libraries that would log
them are kept quiet, and an ``extra=`` field named like a credential is redacted.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import logging
import sys
from collections.abc import Iterator
from typing import Protocol

import orjson

from . import tracing
from .identity import normalise_id

_QUIET = (
    "aio_pika",
    "aiormq",
    "uvicorn.access",
    "websockets",
    "engineio",
    "socketio",
    "aiohttp",
    "httpx",
    "httpcore",
)
# What every LogRecord has of its own; anything else on a record came from ``extra=``.
_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "correlation_id",
    "message_id",
    "trace_id",
    "span_id",
}
_CREDENTIAL_WORDS = ("token", "secret", "password", "authorization", "cookie", "credential")
REDACTED = "[redacted]"
_correlation: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "correlation_id", default=None
)


class _Correlated(Protocol):
    @property
    def correlation_id(self) -> str | None: ...


def logged_id(message: _Correlated) -> str | None:
    """The correlation id that lines about a delivered message carry: its operation id, spelled
    as the store spells it (GUIDs normalised), so every line about one operation has the same."""
    return normalise_id(message.correlation_id or "") or None


@contextlib.contextmanager
def handling(correlation_id: str | None) -> Iterator[None]:
    """Log lines inside carry this correlation id."""
    token = _correlation.set(correlation_id)
    try:
        yield
    finally:
        _correlation.reset(token)


class CorrelationFilter(logging.Filter):
    """Stamps a record with the correlation id and the trace it was logged in."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "correlation_id", None) is None:
            record.correlation_id = _correlation.get()
        ids = tracing.current_ids()
        if ids is not None and getattr(record, "trace_id", None) is None:
            record.trace_id, record.span_id = ids
        return True


def extra_fields(record: logging.LogRecord) -> dict[str, object]:
    """The fields ``extra=`` put on a record, credentials redacted."""
    return {
        key: REDACTED if any(word in key.lower() for word in _CREDENTIAL_WORDS) else value
        for key, value in record.__dict__.items()
        if key not in _RECORD_FIELDS and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "correlation_id": getattr(record, "correlation_id", None),
        }
        for optional in ("message_id", "trace_id", "span_id"):
            value = getattr(record, optional, None)
            if value is not None:
                line[optional] = value
        for key, value in extra_fields(record).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=repr).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        correlation = getattr(record, "correlation_id", None)
        return f"{text} [correlation_id={correlation}]" if correlation else text


def configure(level: str, stream: object = None) -> None:
    out = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(out)  # type: ignore[arg-type]
    is_tty = getattr(out, "isatty", lambda: False)()
    handler.setFormatter(TextFormatter() if is_tty else JsonFormatter())
    handler.addFilter(CorrelationFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries that log whole frames or requests at DEBUG (handshakes carry tokens) never go
    # below WARNING, whatever the level asked for.
    for noisy in _QUIET:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # uvicorn hands this logger of its own to the websockets library, which logs every frame at
    # DEBUG, Socket.IO's CONNECT frame and its token included; its INFO lines are worth keeping.
    logging.getLogger("uvicorn.error").setLevel(max(logging.INFO, root.level))
