"""What clients receive: Pacco's event names, and each payload as the record plus its cursor."""

from __future__ import annotations

from typing import Any

import orjson

from operations.feed import FeedEntry

PENDING = "operation_pending"
COMPLETED = "operation_completed"
REJECTED = "operation_rejected"
SYNC = "operations_sync"
CONNECTED = "connected"
DISCONNECTED = "disconnected"
INITIALIZE = "initialize"

_BY_STATE = {"pending": PENDING, "completed": COMPLETED, "rejected": REJECTED}


def encoded(entry: FeedEntry) -> str:
    """The whole Socket.IO EVENT packet for a change, built once from the stored JSON: the
    record with its cursor spliced in, no parsing and no re-encoding."""
    record = entry.snapshot.decode()
    return f'2["{_BY_STATE[entry.state]}",{record[:-1]},"cursor":"{entry.cursor}"}}]'


class OrjsonModule:
    """The ``json`` interface python-socketio encodes packets with, backed by orjson."""

    @staticmethod
    def dumps(value: Any, **_: Any) -> str:
        return orjson.dumps(value).decode()

    @staticmethod
    def loads(text: str | bytes, **_: Any) -> Any:
        return orjson.loads(text)
