"""The dead-letter workbench against the real RabbitMQ and Redis: what the service dead-letters
is kept with its origin and reason, and can be redriven once its cause is fixed (a catalogue, a
saga that has started since), discarded, listed and grouped, by admins only, within bounds."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import orjson
import redis.asyncio as aioredis
from aio_pika.abc import AbstractRobustConnection

from operations.amqp.queues import QueueType
from operations.sagas import RedisSagaStore
from operations.settings import Settings
from operations.store.shards import Shards
from tests.api import bearer
from tests.dead_letter_support import copy_headers, letters, put_copies
from tests.support import Publisher, eventually, start_service

Token = Callable[..., str]


def catalogue(path: Path, events: list[str]) -> Path:
    path.write_text(
        orjson.dumps({"things": {"exchange": "things", "commands": [], "events": events}}).decode()
    )
    return path


async def test_a_message_outside_the_catalogue_is_redriven_and_applied_once_it_is_fixed(
    settings: Settings,
    amqp: AbstractRobustConnection,
    redis_client: aioredis.Redis,
    token: Token,
    tmp_path: Path,
) -> None:
    before = replace(
        settings,
        dead_letter_keep=True,
        sagas=False,
        messages_file=catalogue(tmp_path / "before.json", ["thing_started"]),
    )
    admin = bearer(token("ops", "admin"))
    op = uuid.uuid4().hex
    async with start_service(before) as running:
        # A binding left by an earlier catalogue: thing_done still reaches the queue.
        async with amqp.channel(publisher_confirms=True) as channel:
            things = await channel.declare_exchange("things", "topic", durable=True)
            queue = await channel.declare_queue(before.queue, durable=True, passive=True)
            await queue.bind(things, "thing_done")
            await things.publish(
                aio_pika.Message(
                    b'{"id": "t-1"}',
                    headers={
                        "message_context": '{"user":{"id":"owner"}}',
                        "trace": bytearray(b"\xff\x00"),
                    },
                    correlation_id=op,
                    message_id="m-thing-done",
                    content_type="application/json",
                ),
                routing_key="thing_done",
            )
        async with httpx.AsyncClient(base_url=running.url, timeout=30) as http:

            async def kept() -> list[dict[str, Any]]:
                return await letters(http, admin)

            (first,) = await eventually(kept, "the dead letter to be kept")
            assert first["reason"] == (
                "routing_key: 'thing_done' on exchange 'things' is not in the catalogue"
            )
            assert (first["queue"], first["exchange"], first["routingKey"]) == (
                before.queue,
                "things",
                "thing_done",
            )
            assert (first["correlationId"], first["messageId"]) == (op, "m-thing-done")
            assert first["attempts"] == 1 and first["body"] == '{"id": "t-1"}'
            assert first["bodyEncoding"] == "utf-8"
            assert first["headers"]["trace"] == "base64:/wA="
            assert not any(key.startswith("x-operations-") for key in first["headers"])
            one = await http.get(f"/dead-letters/{first['id']}", headers=admin)
            assert orjson.loads(one.content) == first

            # Redriven before the fix, it fails again and comes back one attempt higher.
            redriven = await http.post(f"/dead-letters/{first['id']}/redrive", headers=admin)
            assert redriven.status_code == 200
            assert orjson.loads(redriven.content) == {"id": first["id"], "redriven": True}

            async def again() -> list[dict[str, Any]]:
                found = await letters(http, admin)
                return found if found and found[0]["id"] != first["id"] else []

            (second,) = await eventually(again, "the redriven message to fail again")
            assert second["attempts"] == 2 and second["headers"]["x-redriven"] == 1
            assert second["headers"]["trace"] == "base64:/wA="
            assert running.service.metrics.dead_letters_redriven.value(queue=before.queue) == 1

    fixed = replace(before, messages_file=catalogue(tmp_path / "after.json", ["thing_done"]))
    async with (
        start_service(fixed) as running,
        httpx.AsyncClient(base_url=running.url, timeout=30) as http,
    ):
        redriven = await http.post(f"/dead-letters/{second['id']}/redrive", headers=admin)
        assert redriven.status_code == 200, redriven.text

        async def applied() -> bool:
            response = await http.get(f"/operations/{op}", headers=admin)
            return response.status_code == 200 and orjson.loads(response.content)["state"] == (
                "completed"
            )

        await eventually(applied, "the redriven message to be applied")
        assert await letters(http, admin) == []
        gone = await http.post(f"/dead-letters/{second['id']}/redrive", headers=admin)
        assert gone.status_code == 404
        assert orjson.loads(gone.content)["code"] == "dead_letter_not_found"


async def test_an_early_saga_message_redriven_after_its_saga_started_is_handled(
    settings: Settings,
    amqp: AbstractRobustConnection,
    publisher: Publisher,
    redis_client: aioredis.Redis,
    token: Token,
) -> None:
    quick = replace(settings, dead_letter_keep=True, saga_early_retries=1, saga_retry_delay_ms=50)
    admin = bearer(token("ops", "admin"))
    op = str(uuid.uuid4())
    store = RedisSagaStore(redis_client, quick.key_prefix, Shards(quick.redis_shards))
    async with (
        start_service(quick) as running,
        httpx.AsyncClient(base_url=running.url, timeout=30) as http,
    ):
        await publisher.publish(
            "order_created", op, user="u", saga="Pending", body={"orderId": "o"}
        )

        async def kept() -> list[dict[str, Any]]:
            return await letters(http, admin, queue=quick.saga_queue)

        (early,) = await eventually(kept, "the early message to be kept")
        assert early["reason"] == (
            "saga message order_created: no saga to take it yet after 1 retries"
        )
        assert (early["exchange"], early["routingKey"]) == ("orders", "order_created")
        assert early["headers"]["Saga"] == "Pending"

        await publisher.publish(
            "make_order",
            op,
            user="u",
            saga="Pending",
            body={"orderId": "o", "customerId": "c", "parcelIds": ["p"]},
        )

        async def steps(*names: str) -> bool:
            loaded = await store.load("order_making", op)
            return loaded is not None and [s.message for s in loaded.record.steps] == list(names)

        await eventually(lambda: steps("make_order"), "the saga to start")
        response = await http.post(f"/dead-letters/{early['id']}/redrive", headers=admin)
        assert response.status_code == 200, response.text
        await eventually(
            lambda: steps("make_order", "order_created"), "the saga to handle the redrive"
        )
        assert await letters(http, admin) == []


async def test_only_admins_reach_the_workbench_and_unknown_ids_are_not_found(
    settings: Settings,
    amqp: AbstractRobustConnection,
    redis_client: aioredis.Redis,
    token: Token,
) -> None:
    kept_settings = replace(settings, dead_letter_keep=True)
    admin, user = bearer(token("ops", "admin")), bearer(token("someone"))
    async with (
        start_service(kept_settings) as running,
        httpx.AsyncClient(base_url=running.url, timeout=30) as http,
    ):
        for method, path in (
            ("GET", "/dead-letters"),
            ("GET", "/dead-letters/groups"),
            ("GET", "/dead-letters/x"),
            ("POST", "/dead-letters/x/redrive"),
            ("POST", "/dead-letters/redrive"),
            ("POST", "/dead-letters/discard"),
            ("DELETE", "/dead-letters/x"),
        ):
            assert (await http.request(method, path)).status_code == 401
            refused = await http.request(method, path, headers=user)
            assert refused.status_code == 403 and orjson.loads(refused.content)["code"] == (
                "forbidden"
            )
        for method, path in (
            ("GET", "/dead-letters/nope"),
            ("POST", "/dead-letters/nope/redrive"),
            ("DELETE", "/dead-letters/nope"),
        ):
            missing = await http.request(method, path, headers=admin)
            assert missing.status_code == 404
            assert orjson.loads(missing.content)["code"] == "dead_letter_not_found"
        bad = await http.post("/dead-letters/redrive", headers=admin, content=b'{"reason": 1}')
        assert bad.status_code == 400 and orjson.loads(bad.content)["code"] == "invalid_body"
        cursor = await http.get("/dead-letters?cursor=zzz", headers=admin)
        assert cursor.status_code == 400
        limit = await http.get("/dead-letters?limit=0", headers=admin)
        assert limit.status_code == 400


async def test_listing_grouping_redriving_and_discarding_groups(
    settings: Settings,
    amqp: AbstractRobustConnection,
    redis_client: aioredis.Redis,
    token: Token,
) -> None:
    kept_settings = replace(settings, dead_letter_keep=True, sagas=False)
    admin = bearer(token("ops", "admin"))
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    queue = kept_settings.dead_letter_queue
    await put_copies(
        amqp,
        queue,
        [copy_headers("bad body", start + dt.timedelta(seconds=n)) for n in range(5)]
        + [
            copy_headers("bad header", start + dt.timedelta(seconds=10 + n), routing_key="unbound")
            for n in range(2)
        ],
    )
    async with (
        start_service(kept_settings) as running,
        httpx.AsyncClient(base_url=running.url, timeout=30) as http,
    ):

        async def all_kept() -> bool:
            return len(await letters(http, admin, limit="200")) == 7

        await eventually(all_kept, "seven dead letters to be kept")
        groups = orjson.loads((await http.get("/dead-letters/groups", headers=admin)).content)
        assert [(g["reason"], g["queue"], g["count"]) for g in groups["items"]] == [
            ("bad header", kept_settings.queue, 2),
            ("bad body", kept_settings.queue, 5),
        ]
        assert groups["items"][1]["first"] < groups["items"][1]["last"]

        # Newest first, page by page, with filters.
        seen: list[str] = []
        cursor: str | None = None
        while True:
            query = {"limit": "2", "reason": "bad body", "queue": kept_settings.queue}
            page = orjson.loads(
                (
                    await http.get(
                        "/dead-letters",
                        params={**query, **({"cursor": cursor} if cursor else {})},
                        headers=admin,
                    )
                ).content
            )
            seen += [item["deadLetteredAt"] for item in page["items"]]
            cursor = page["next"]
            if cursor is None:
                break
        assert len(seen) == 5 and seen == sorted(seen, reverse=True)
        assert len(await letters(http, admin, reason="bad header")) == 2

        # Redriven to orders/unbound, where no queue listens: refused, and kept.
        group = {"reason": "bad header", "queue": kept_settings.queue}
        unroutable = await http.post("/dead-letters/redrive", headers=admin, json=group)
        assert orjson.loads(unroutable.content) == {"redriven": 0, "skipped": 2}
        assert len(await letters(http, admin, reason="bad header")) == 2

        discarded = await http.post("/dead-letters/discard", headers=admin, json=group)
        assert orjson.loads(discarded.content) == {"discarded": 2}
        (one, *_) = await letters(http, admin)
        deleted = await http.delete(f"/dead-letters/{one['id']}", headers=admin)
        assert deleted.status_code == 204
        assert (await http.delete(f"/dead-letters/{one['id']}", headers=admin)).status_code == 404
        metrics = running.service.metrics
        assert metrics.dead_letters_discarded.value(queue=kept_settings.queue) == 3
        assert len(await letters(http, admin)) == 4


async def test_the_bounds_drop_the_oldest_first_and_count_it(
    settings: Settings,
    amqp: AbstractRobustConnection,
    redis_client: aioredis.Redis,
    token: Token,
) -> None:
    bounded = replace(settings, dead_letter_keep=True, sagas=False, dead_letter_max_count=3)
    admin = bearer(token("ops", "admin"))
    now = dt.datetime.now(dt.UTC)
    ages = [dt.timedelta(days=30), *(dt.timedelta(minutes=m) for m in (50, 40, 30, 20, 10))]
    headers = [copy_headers(f"failure {n}", now - age) for n, age in enumerate(ages)]
    await put_copies(amqp, bounded.dead_letter_queue, headers)
    async with (
        start_service(bounded) as running,
        httpx.AsyncClient(base_url=running.url, timeout=30) as http,
    ):
        metrics = running.service.metrics

        async def settled() -> bool:
            dropped = metrics.dead_letters_dropped
            return dropped.value(bound="age") + dropped.value(bound="count") == 3

        await eventually(settled, "three dead letters to be dropped")
        assert metrics.dead_letters_dropped.value(bound="age") == 1
        kept = await letters(http, admin)
        assert [item["reason"] for item in kept] == ["failure 5", "failure 4", "failure 3"]


def test_the_openapi_document_describes_every_dead_letter_route() -> None:
    from operations.deadletters.http import DeadLettersApi
    from operations.deadletters.letters import DeadLetterItem
    from operations.http.openapi import document

    spec = document()
    api = DeadLettersApi.__new__(DeadLettersApi)  # its routes need none of its parts
    routes = {
        (route.path, method.lower())
        for route in api.routes
        for method in route.methods or ()
        if method != "HEAD"
    }
    assert len(routes) == 7
    for path, method in routes:
        responses = spec["paths"][path][method]["responses"]
        assert {"401", "403"} <= set(responses), (path, method)
    item = spec["components"]["schemas"]["DeadLetterItem"]
    assert set(item["required"]) == {
        "id",
        "queue",
        "exchange",
        "routingKey",
        "reason",
        "disposition",
        "correlationId",
        "messageId",
        "deadLetteredAt",
        "attempts",
        "headers",
        "properties",
        "body",
        "bodyEncoding",
        "bodyBytes",
        "bodyTruncated",
    }
    assert DeadLetterItem.__struct_fields__[0] == "id"


async def test_dead_letters_of_quorum_queues_are_kept(
    settings: Settings,
    amqp: AbstractRobustConnection,
    publisher: Publisher,
    redis_client: aioredis.Redis,
    token: Token,
) -> None:
    quorum = replace(settings, dead_letter_keep=True, queue_type=QueueType.QUORUM)
    admin = bearer(token("ops", "admin"))
    op = uuid.uuid4().hex
    async with (
        start_service(quorum) as running,
        httpx.AsyncClient(base_url=running.url, timeout=30) as http,
    ):
        await publisher.publish("order_created", op, user="u", body=b"[1]")

        async def both_kept() -> list[dict[str, Any]]:
            found = await letters(http, admin)
            queues = {letter["queue"] for letter in found}
            return found if queues == {quorum.queue, quorum.saga_queue} else []

        kept = await eventually(both_kept, "a letter from each queue")
        assert len(kept) == 2, kept
        found = {letter["queue"]: letter for letter in kept}
        tracked, saga = found[quorum.queue], found[quorum.saga_queue]
        assert tracked["disposition"] == "applied-in-part"
        assert tracked["reason"] == "body: expected a JSON object, got list"
        assert saga["reason"] == "saga message order_created: body is not a JSON object"
        assert tracked["body"] == saga["body"] == "[1]"
    async with amqp.channel() as channel:
        for name in quorum.dead_letter_queues:
            with contextlib.suppress(aio_pika.exceptions.ChannelClosed):
                await channel.queue_delete(name)
