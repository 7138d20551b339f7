"""Recovery after a reconnect: the operations that changed after a client's last cursor, as the
feed reads them back from the change streams, or word that the cursor cannot be recovered from."""

from __future__ import annotations

from dataclasses import dataclass

from operations.auth.identity import Principal
from operations.feed import ChangeFeed, FeedEntry


@dataclass(frozen=True)
class Sync:
    entries: list[FeedEntry]  # the latest change of each operation, oldest first
    cursor: str
    recovered: bool
    scanned: int = 0  # stream entries read to build it
    too_far: bool = False  # given up: more than the limit of entries to read


async def changes_since(
    feed: ChangeFeed, since: str, until: str, principal: Principal, limit: int = 1 << 62
) -> Sync:
    """The latest change of each operation the principal may see that changed after ``since``
    and up to ``until`` (inclusive), oldest change first, each with its cursor. Past ``limit``
    entries read (everyone's changes), it gives up: ``recovered`` false and ``too_far`` true."""
    missed = await feed.missed(since, until, principal.may_read, limit)
    if not missed.complete:
        return Sync([], until, False, missed.scanned, missed.too_far)
    return Sync(list(missed.entries), until, True, missed.scanned)
