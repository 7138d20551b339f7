"""The change feed against a real Redis, over both protocols: every applied change reaches the
listeners once, in apply order, with its record and cursor, from one stream or from several."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis

from operations.auth.identity import Principal
from operations.feed import ChangeFeed, FeedEntry
from operations.metrics import Registry
from operations.records import ApplyOutcome, Change
from operations.store.keys import Keys
from operations.store.redis_store import RedisStore
from operations.store.shards import Shards
from tests.support import eventually, new_id, pending_command


@contextlib.asynccontextmanager
async def listened_feed(
    redis_url: str, keys: Keys, protocol: int, *, own_reads: bool = False
) -> AsyncIterator[tuple[ChangeFeed, list[FeedEntry]]]:
    """A started change feed on a client of its own speaking RESP ``protocol`` (with ``own_reads``,
    another such client for its range reads), and the list it hands every entry to; stopped and
    its clients closed after."""
    client = aioredis.Redis.from_url(redis_url, protocol=protocol)
    reads = aioredis.Redis.from_url(redis_url, protocol=protocol) if own_reads else None
    feed = ChangeFeed(client, keys, Registry(), reads=reads)
    received: list[FeedEntry] = []
    feed.subscribe(received.extend)
    await feed.start()
    try:
        yield feed, received
    finally:
        await feed.stop()
        await client.aclose()
        if reads is not None:
            await reads.aclose()


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("shards", [1, 4])
async def test_every_applied_change_reaches_the_listener_once_in_order(
    servers: tuple[str, str], redis_client: aioredis.Redis, protocol: int, shards: int
) -> None:
    keys = Keys(f"feed-{new_id()[:8]}", Shards(shards))
    store = RedisStore(redis_client, ttl_seconds=60, keys=keys)
    await store.apply([pending_command(new_id(), "before")])  # already there: not handed out
    async with listened_feed(servers[1], keys, protocol) as (feed, received):
        start = await feed.start_cursor()
        assert len(start.split(",")) == shards
        ops = [new_id() for _ in range(40)]
        users = [f"user-{index % 3}" if index % 5 else None for index in range(40)]
        applied: list[Change] = []
        for first in range(0, 40, 8):
            batch = [
                pending_command(op, user)
                for op, user in zip(ops[first : first + 8], users[first : first + 8], strict=True)
            ]
            for change in await store.apply(batch):
                assert isinstance(change, Change) and change.outcome is ApplyOutcome.APPLIED
                applied.append(change)
            await asyncio.sleep(0.01)

        async def all_received() -> bool:
            return len(received) >= 40

        await eventually(all_received, "40 changes from the feed")
        await asyncio.sleep(0.05)
        assert len(received) == 40
        by_op = {entry.operation_id: entry for entry in received}
        assert set(by_op) == set(ops)
        for op, user, change in zip(ops, users, applied, strict=True):
            entry = by_op[op]
            assert entry.user_id == user
            assert entry.state == "pending"
            assert entry.snapshot == change.snapshot
            assert orjson.loads(entry.snapshot)["id"] == op
            # The cursor names this change's entry in its own shard's stream.
            assert change.cursor in entry.cursor.split(",")
        # One shard's changes arrive in the order they were applied.
        for shard in range(shards):
            mine = [e.operation_id for e in received if keys.shard(e.operation_id) == shard]
            assert mine == [op for op in ops if keys.shard(op) == shard]
        assert received[-1].cursor == feed.last_cursor


def latest_of(entries: list[FeedEntry]) -> list[FeedEntry]:
    """The latest change of each operation, oldest first."""
    latest: dict[str, FeedEntry] = {}
    for entry in entries:
        latest.pop(entry.operation_id, None)
        latest[entry.operation_id] = entry
    return list(latest.values())


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("shards", [1, 4])
async def test_what_a_reader_missed_is_read_back_as_the_feed_handed_it_out(
    servers: tuple[str, str], redis_client: aioredis.Redis, protocol: int, shards: int
) -> None:
    """The feed's range read (a reconnecting client's recovery) gives, between two cursors it
    handed out, the latest change of each operation the reader may see, oldest first, each
    entry as the tail read it; it reads at most its limit of entries, and serves no cursor
    of another layout or one past the other."""
    keys = Keys(f"feed-{new_id()[:8]}", Shards(shards))
    store = RedisStore(redis_client, ttl_seconds=60, keys=keys)
    async with listened_feed(servers[1], keys, protocol, own_reads=True) as (feed, received):
        since = await feed.start_cursor()
        ops = [new_id() for _ in range(12)]
        owners = {op: "alice" if index % 3 else "bob" for index, op in enumerate(ops)}
        await store.apply([pending_command(op, owners[op]) for op in ops])
        await store.apply([pending_command(op, owners[op], "add_parcel") for op in ops[:6]])

        async def all_received() -> bool:
            return len(received) >= 18

        await eventually(all_received, "18 changes from the feed")
        until = feed.last_cursor
        alice = Principal("alice", frozenset())

        def as_read(entries: list[FeedEntry]) -> list[FeedEntry]:
            if shards == 1:
                return entries  # each with its own change's cursor, in apply order
            return sorted(entry._replace(cursor=until) for entry in entries)

        def got(entries: list[FeedEntry]) -> list[FeedEntry]:
            return entries if shards == 1 else sorted(entries)

        missed = await feed.missed(since, until, alice.may_read)
        assert (missed.complete, missed.scanned, missed.too_far) == (True, 18, False)
        mine = [entry for entry in received if entry.user_id == "alice"]
        assert got(missed.entries) == as_read(latest_of(mine))
        assert {entry.operation_id for entry in missed.entries} == {
            op for op in ops if owners[op] == "alice"
        }

        later = await feed.missed(received[9].cursor, until, lambda _: True)
        assert later.complete and later.scanned == 8
        assert got(later.entries) == as_read(latest_of(received[10:]))

        everyone = await feed.missed(since, until, lambda _: True, limit=18)
        assert everyone.complete and len(everyone.entries) == 12
        bounded = await feed.missed(since, until, lambda _: True, limit=17)
        assert (bounded.complete, bounded.entries, bounded.too_far) == (False, [], True)

        other_layout = ",".join(["0-0"] * (shards + 1))
        for start, end in (("garbage", until), (other_layout, until), (until, since)):
            refused = await feed.missed(start, end, lambda _: True)
            assert (refused.complete, refused.entries) == (False, []), (start, end)

        assert feed.ahead(until, since) and not feed.ahead(since, until)
        assert not feed.ahead("garbage", since) and not feed.ahead(until, other_layout)


# Modules that read the change streams besides the feed: the benchmark, which times a run from
# the stream's own entry ids.
STREAM_READERS_OUTSIDE = {"operations/bench/push.py"}


def test_only_the_feed_reads_the_change_streams() -> None:
    """One reader of stream entries: no other module of the service reads a stream."""
    root = Path(__file__).resolve().parent.parent
    reads = re.compile(r"\b(xrange|xrevrange|xread|xreadgroup|xinfo_stream|xinfo)\b", re.I)
    readers = {
        path.relative_to(root).as_posix()
        for package in ("operations", "hub")
        for path in (root / package).rglob("*.py")
        if reads.search(path.read_text(encoding="utf-8"))
    }
    assert readers - STREAM_READERS_OUTSIDE == {"operations/store/changes.py", "operations/feed.py"}
