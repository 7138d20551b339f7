"""Logging: readable lines on a terminal, one JSON object per line otherwise.

A record's ``correlation_id`` (passed with ``extra=``) is written on its line.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys

import orjson

_EXTRA_FIELDS = ("correlation_id", "message_id")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in _EXTRA_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                line[field] = value
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
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aio_pika", "aiormq", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
