"""A client that reconnects with its last cursor (``since``): the missed changes in one
``operations_sync``, cursors that cannot be recovered, and the race between loading the
sync and going live."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from hub import hub as hub_module
from hub.recovery import Sync, changes_since
from operations.feed import ChangeFeed, FeedEntry
from operations.settings import Settings
from operations.store.keys import Keys
from tests.hub_support import (
    Token,
    assert_goes_live_after,
    assert_monotonic,
    publish_version,
    reached,
    versions,
)
from tests.live import LiveClient
from tests.support import Publisher, RunningService, eventually, uid


async def test_reconnect_with_since_recovers_missed_updates(
    clients: Callable[[], LiveClient],
    publisher: Publisher,
    token: Token,
    settings: Settings,
    redis_client: aioredis.Redis,
) -> None:
    user, first, second = uid(), uid(), uid()
    live = clients()
    await live.connect({"token": token(user)})
    await publisher.publish("create_order", first, user=user)
    seen = await live.wait_for_state(first, "pending")
    await live.close()

    await publisher.publish("add_parcel_to_order", first, user=user, name="add_parcel_to_order")
    await publisher.publish("order_created", first, user=user)
    await publisher.publish("create_order", second, user=user)
    await publisher.publish("create_order", uid(), user=uid())  # someone else's
    keys = Keys(settings.key_prefix)

    async def applied() -> bool:
        first_version = await redis_client.hget(keys.record(first), "v")
        return first_version == b"3" and await redis_client.exists(keys.record(second)) == 1

    await eventually(applied, "the missed changes to be applied")

    back = clients()
    await back.connect({"token": token(user), "since": seen["cursor"]})
    await back.wait_for(lambda c: bool(c.events("operations_sync")), "operations_sync")
    assert back.received[0][0] == "operations_sync"
    (sync,) = back.events("operations_sync")
    assert sync["recovered"] is True
    assert [(r["id"], r["state"], r["version"]) for r in sync["operations"]] == [
        (first, "completed", 3),
        (second, "pending", 1),
    ]
    third = uid()
    await publisher.publish("create_order", third, user=user)
    live_record = await back.wait_for_state(third, "pending")
    assert live_record["cursor"] > sync["cursor"]


async def test_a_cursor_that_is_too_old_is_not_recovered(
    clients: Callable[[], LiveClient],
    publisher: Publisher,
    token: Token,
    settings: Settings,
    redis_client: aioredis.Redis,
) -> None:
    user = uid()
    live = clients()
    await live.connect({"token": token(user)})
    op = uid()
    await publisher.publish("create_order", op, user=user)
    old = (await live.wait_for_state(op, "pending"))["cursor"]
    for _ in range(3):
        await publisher.publish("create_order", uid(), user=user)
    await live.wait_for(lambda c: len(c.records()) == 4, "four events")
    await redis_client.xtrim(Keys(settings.key_prefix).changes(0), maxlen=1, approximate=False)

    for since in (old, "garbage", "99999999999999-0"):
        again = clients()
        await again.connect({"token": token(user), "since": since})
        await again.wait_for(lambda c: bool(c.events("operations_sync")), "operations_sync")
        (sync,) = again.events("operations_sync")
        assert (sync["recovered"], sync["operations"]) == (False, []), since
        await again.close()


@pytest.mark.slow
async def test_no_update_is_lost_between_the_sync_and_going_live(
    clients: Callable[[], LiveClient], publisher: Publisher, token: Token
) -> None:
    """A stream of changes keeps flowing while clients reconnect with their last cursor."""
    user = uid()
    ops = [uid() for _ in range(40)]
    steps = ["create_order", "add_parcel_to_order", "assign_vehicle_to_order", "order_approved"]
    first = clients()
    await first.connect({"token": token(user)})
    await publisher.publish("create_order", ops[0], user=user, name="create_order")
    cursor = (await first.wait_for_state(ops[0], "pending"))["cursor"]
    await first.close()

    async def stream() -> None:
        for step in steps:
            for op in ops:
                await publisher.publish(step, op, user=user, name=step)
                await asyncio.sleep(0.001)

    streaming = asyncio.create_task(stream())
    views: list[LiveClient] = []
    while not streaming.done():
        view = clients()
        await view.connect({"token": token(user), "since": cursor})
        views.append(view)
        await asyncio.sleep(0.05)
    await streaming
    for view in views:
        await view.wait_for(
            lambda c: all(any(r["state"] == "completed" for r in c.records(op)) for op in ops),
            "every operation to complete in every view",
        )
        assert view.received[0][0] == "operations_sync"
        assert_monotonic(view.records())
    assert len(views) >= 3


class FeedWatch:
    """The changes a feed hands to its listeners, seen after the hub's listener has them."""

    def __init__(self, feed: ChangeFeed) -> None:
        self.entries: list[FeedEntry] = []
        feed.subscribe(self.entries.extend)

    async def has(self, ops: list[str], version: int) -> bool:
        seen = {
            entry.operation_id
            for entry in self.entries
            if orjson.loads(entry.snapshot)["version"] == version
        }
        return seen >= set(ops)


@pytest.mark.parametrize("pause", ["before the read", "after the read"])
async def test_changes_applied_while_a_sync_loads_follow_it_live(
    service: RunningService,
    clients: Callable[..., LiveClient],
    publisher: Publisher,
    token: Token,
    monkeypatch: pytest.MonkeyPatch,
    pause: str,
) -> None:
    """The hub is held inside loading a reconnecting client's sync (before or after it reads the
    streams) while the same operations change again; the client then sees every version once,
    in order: the sync, then the changes applied meanwhile, live."""
    user, ops = uid(), [uid() for _ in range(5)]
    first = clients()
    await first.connect({"token": token(user)})
    await publish_version(publisher, ops, user, 1)
    await first.wait_for(reached(first, ops, 1), "version 1 of every operation")
    cursor = first.records()[-1]["cursor"]
    await first.close()
    watch = FeedWatch(service.service.feed)
    await publish_version(publisher, ops, user, 2)
    await eventually(lambda: watch.has(ops, 2), "version 2 to reach the hub")

    loading, release = asyncio.Event(), asyncio.Event()
    load = changes_since

    async def held_load(*args: Any) -> Sync:
        sync = await load(*args) if pause == "after the read" else None
        loading.set()
        await release.wait()
        return sync or await load(*args)

    monkeypatch.setattr(hub_module, "changes_since", held_load)
    back = clients()
    await back.connect({"token": token(user), "since": cursor})
    await asyncio.wait_for(loading.wait(), timeout=15)
    await publish_version(publisher, ops, user, 3)
    await eventually(lambda: watch.has(ops, 3), "version 3 to reach the hub")
    assert back.received == [], "an event before the sync"
    release.set()
    await back.wait_for(reached(back, ops, 3), "version 3 of every operation")
    await publish_version(publisher, ops, user, 4)
    await back.wait_for(reached(back, ops, 4), "version 4 of every operation")

    (sync,) = back.events("operations_sync")
    assert sync["recovered"] is True
    assert sorted((r["id"], r["version"]) for r in sync["operations"]) == sorted(
        (op, 2) for op in ops
    )
    assert versions(back, ops) == {op: [2, 3, 4] for op in ops}
    assert_goes_live_after(back, sync)
