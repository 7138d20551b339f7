"""Logging: readable lines on a terminal, one JSON object per line otherwise.

Every JSON line has a ``correlation_id`` key: the id of the message (the operation) the line is
about, and ``null`` on lines about no message in particular. A message's handlers set it with
:func:`handling`, and ``extra=`` may also pass one. Tokens and secrets are never logged.
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
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "correlation_id", None) is None:
            record.correlation_id = _correlation.get()
        return True


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
        message_id = getattr(record, "message_id", None)
        if message_id is not None:
            line["message_id"] = message_id
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


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
