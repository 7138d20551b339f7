"""Logging: readable lines on a terminal, one JSON object per line otherwise.

Every JSON line has a ``correlation_id`` key: the id of the message (the operation) the line is
about, and ``null`` on lines about no message in particular. A message's handlers set it with
:func:`handling`, and ``extra=`` may also pass one. Every other ``extra=`` field is a key of the
line too, and ``stack_info=True`` adds a ``stack`` key. Inside a recorded trace a line carries its
``trace_id`` and ``span_id``. Tokens and secrets are never logged: the libraries that would log
them are kept quiet, and an ``extra=`` field named like a credential is redacted.

Text that comes from outside (ids in paths, message names, reasons) can hold line breaks and
other control characters. JSON lines escape them by nature; readable lines write them as
``\n``, ``\x1b``, ``\u2028``..., so no input can start a line of its own or move the terminal's
cursor. Only a traceback, which the service writes itself, spans several lines.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import logging
import re
import sys
from collections.abc import Iterator
from typing import Any, Protocol

import orjson

from operations import tracing
from operations.auth.identity import normalise_id

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
# C0 and C1 controls, DEL, and Unicode's line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
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


def escaped(text: str) -> str:
    """``text`` on one line: every control character written as its escape."""
    return _CONTROL.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match[0]
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escaped(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        # A traceback's lines are marked as its own: an error message holding a line break
        # cannot pass for a line of the log.
        return "\n".join(
            f"  | {escaped(line)}" for line in super().formatException(ei).splitlines()
        )

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        correlation = getattr(record, "correlation_id", None)
        return f"{text} [correlation_id={escaped(str(correlation))}]" if correlation else text


class WebSocketLifecycle(logging.Filter):
    """uvicorn and the websockets library log every WebSocket's accepted handshake, opening and
    closing at ``INFO``: three lines per Socket.IO client, noise and cost with thousands of
    them. Those lines are ``DEBUG`` here, shown only when the level is ``DEBUG``; everything
    else of that logger (refused handshakes, errors) is left as it is."""

    LINES = frozenset({'%s - "WebSocket %s" [accepted]', "connection open", "connection closed"})

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or record.msg not in self.LINES:
            return True
        if not logging.getLogger().isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def configure(level: str, stream: object = None, form: str = "auto") -> None:
    """Logs at ``level`` to ``stream`` (standard error), as ``form``: ``text``, ``json``, or
    ``auto``, readable lines on a terminal and JSON otherwise."""
    out = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(out)  # type: ignore[arg-type]
    text = form == "text" or (form == "auto" and getattr(out, "isatty", lambda: False)())
    handler.setFormatter(TextFormatter() if text else JsonFormatter())
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
    server = logging.getLogger("uvicorn.error")
    server.setLevel(max(logging.INFO, root.level))
    for installed in [f for f in server.filters if isinstance(f, WebSocketLifecycle)]:
        server.removeFilter(installed)
    server.addFilter(WebSocketLifecycle())
