"""What clients receive: Pacco's event names, and each payload as the record plus its cursor."""

from __future__ import annotations

from collections.abc import Iterable
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
    return f'2["{_BY_STATE[entry.state]}",{_with_cursor(entry)}]'


def synced(entries: Iterable[FeedEntry], cursor: str, recovered: bool) -> str:
    """The whole ``operations_sync`` packet: each record spliced in as :func:`encoded` does."""
    records = ",".join(_with_cursor(entry) for entry in entries)
    flag = "true" if recovered else "false"
    return f'2["{SYNC}",{{"operations":[{records}],"cursor":"{cursor}","recovered":{flag}}}]'


def _with_cursor(entry: FeedEntry) -> str:
    return f'{entry.snapshot.decode()[:-1]},"cursor":"{entry.cursor}"}}'


class OrjsonModule:
    """The ``json`` interface python-socketio encodes packets with, backed by orjson."""

    @staticmethod
    def dumps(value: Any, **_: Any) -> str:
        return orjson.dumps(value).decode()

    @staticmethod
    def loads(text: str | bytes, **_: Any) -> Any:
        return orjson.loads(text)
