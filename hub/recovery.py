"""Recovery after a reconnect: the operations that changed after a client's last cursor, as the
feed reads them back from the change streams, or word that the cursor cannot be recovered from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from operations.auth.identity import Principal
from operations.feed import ChangeFeed, FeedEntry


@dataclass(frozen=True)
class Sync:
    operations: list[dict[str, Any]]
    cursor: str
    recovered: bool
    scanned: int = 0  # stream entries read to build it
    too_far: bool = False  # given up: more than the limit of entries to read

    def to_json(self) -> dict[str, Any]:
        return {"operations": self.operations, "cursor": self.cursor, "recovered": self.recovered}


async def changes_since(
    feed: ChangeFeed, since: str, until: str, principal: Principal, limit: int = 1 << 62
) -> Sync:
    """The latest record of each operation the principal may see that changed after ``since``
    and up to ``until`` (inclusive), oldest change first, each with its cursor. Past ``limit``
    entries read (everyone's changes), it gives up: ``recovered`` false and ``too_far`` true."""
    missed = await feed.missed(since, until, principal.may_read, limit)
    if not missed.complete:
        return Sync([], until, False, missed.scanned, missed.too_far)
    return Sync([_record(entry) for entry in missed.entries], until, True, missed.scanned)


def _record(entry: FeedEntry) -> dict[str, Any]:
    record: dict[str, Any] = orjson.loads(entry.snapshot)
    record["cursor"] = entry.cursor
    return record
