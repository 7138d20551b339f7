"""Listing kept dead letters while more arrive: a page reads on from the last letter it read,
so a letter kept meanwhile neither repeats another nor hides one."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis

from operations.deadletters.letters import DeadLetterItem, StoredLetter
from operations.deadletters.store import DeadLetterStore

START = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)


def letter(at: dt.datetime) -> StoredLetter:
    item = DeadLetterItem(
        uuid.uuid4().hex, "q", "orders", "create_order", "bad", "not-applied", None, None,
        at.isoformat(), 1, {}, {}, "{}", "utf-8", 2, False,
    )  # fmt: skip
    return StoredLetter(item, {}, int(at.timestamp() * 1000))


@pytest.mark.parametrize("kept", [3, 300], ids=["one-chunk", "several-chunks"])
async def test_a_letter_kept_while_a_page_is_read_repeats_none_and_hides_none(
    redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch, kept: int
) -> None:
    store = DeadLetterStore(redis_client, f"t-{uuid.uuid4().hex[:8]}", 10_000, 10**9)
    now = START + dt.timedelta(days=1)
    earlier = [letter(START + dt.timedelta(seconds=i)) for i in range(kept)]
    for each in earlier:
        await store.keep(each, now)
    newer = letter(START + dt.timedelta(hours=1))
    read = redis_client.zrevrangebyscore
    calls = 0

    async def then_one_more(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        chunk = await read(*args, **kwargs)
        if calls == 1:
            await store.keep(newer, now)  # kept between the page's reads
        return chunk

    monkeypatch.setattr(redis_client, "zrevrangebyscore", then_one_more)
    page = await store.page(None, None, kept + 10, None)
    ids = [item.id for item in page.items]
    assert len(ids) == len(set(ids)), "a letter listed twice"
    assert set(ids) == {each.item.id for each in earlier}
    assert calls >= 2
