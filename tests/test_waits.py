"""Long-polls and ``Prefer: wait`` share Redis fairly (issue #23, finding 2): hundreds of waits
woken at once read nothing from Redis, another user's reads and ``/ready`` stay at 200, a user
past the cap of waits is refused, a saturated pool shows in ``/ready``, and a cancel's
compensation is not left to the deadline watcher by a failed first attempt."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from operations.errors import SettingsError
from operations.pacco.demo.services import DemoServices
from operations.records import Operation
from operations.sagas.store import Loaded
from operations.settings import Settings
from tests.api import bearer, order_with_id, recorded, started_order
from tests.scrape import Scrape
from tests.support import Publisher, RunningService, eventually, serve_process, start_service

Token = Callable[..., str]


async def tracked(http: httpx.AsyncClient, operation: str, user_token: str) -> dict[str, Any]:
    record: dict[str, Any] = (await recorded(http, operation, bearer(user_token))).json()
    return record


async def waits_in_progress(http: httpx.AsyncClient) -> float:
    page = Scrape((await http.get("/metrics")).text)
    return page.value("operations_waits", route="operation") or 0.0


async def test_300_long_polls_woken_at_once_leave_other_users_reads_and_ready_at_200(
    settings: Settings,
    redis_client: aioredis.Redis,
    amqp: object,
    publisher: Publisher,
    token: Token,
) -> None:
    """User A long-polls his own order 300 times, then cancels it. While all 300 wake, B reads
    his own operation and /ready: every answer is 200. Every long-poll answers with the final
    record, and the order ends rejected (cancelled) within seconds, not the watcher's 30."""
    env = {"OPERATIONS_MAX_WAITS_PER_USER": "1000"}  # this test is about the pool, not the cap
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    async with (
        serve_process(settings, env) as served,
        httpx.AsyncClient(base_url=served.url, timeout=90, limits=limits) as http,
    ):
        alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
        operation = await started_order(http, token(alice))
        bobs = str(uuid.uuid4())
        await publisher.publish("create_order", bobs, user=bob)
        await tracked(http, bobs, token(bob))

        polls = [
            asyncio.create_task(
                http.get(
                    f"/operations/{operation}?wait=60",
                    headers=bearer(token(alice), **{"If-None-Match": "*"}),
                )
            )
            for _ in range(300)
        ]

        async def all_waiting() -> bool:
            return await waits_in_progress(http) == 300

        await eventually(all_waiting, "300 long-polls to wait", timeout=30, every=0.1)

        answers: list[tuple[str, int]] = []
        stop = asyncio.Event()

        async def meanwhile() -> None:
            for _ in range(2_000):
                read = await http.get(f"/operations/{bobs}", headers=bearer(token(bob)))
                ready = await http.get("/ready")
                answers.extend([("bob", read.status_code), ("ready", ready.status_code)])
                if stop.is_set():
                    return

        observer = asyncio.create_task(meanwhile())
        began = time.monotonic()
        cancelled = await http.post(f"/operations/{operation}/cancel", headers=bearer(token(alice)))
        assert cancelled.status_code == 202, cancelled.text
        done, _ = await asyncio.wait(polls, timeout=25)
        took = time.monotonic() - began
        stop.set()
        await asyncio.wait_for(observer, 30)
        final = await http.get(f"/operations/{operation}", headers=bearer(token(alice)))

    assert len(done) == 300, f"{300 - len(done)} long-polls still waiting after {took:.1f}s"
    assert (final.json()["state"], final.json()["code"]) == ("rejected", "cancelled")
    # If-None-Match: * matches every version: each long-poll ends with 304 and the final ETag.
    outcomes = [(poll.result().status_code, poll.result().headers.get("ETag")) for poll in polls]
    bad = [outcome for outcome in outcomes if outcome != (304, final.headers["ETag"])]
    assert not bad, f"{len(bad)} long-polls did not end with the final record, e.g. {bad[:3]}"
    assert took < 15, f"the cancelled order took {took:.1f}s to end"
    failed = [answer for answer in answers if answer[1] != 200]
    assert not failed and len(answers) >= 2, (failed[:5], len(answers))


async def test_a_user_past_the_cap_of_waits_is_refused_and_others_still_wait(
    settings: Settings,
    redis_client: aioredis.Redis,
    amqp: object,
    publisher: Publisher,
    token: Token,
) -> None:
    async with (
        start_service(replace(settings, max_waits_per_user=2)) as running,
        httpx.AsyncClient(base_url=running.url, timeout=30) as http,
    ):
        alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
        mine, bobs = str(uuid.uuid4()), str(uuid.uuid4())
        await publisher.publish("create_order", mine, user=alice)
        await publisher.publish("create_order", bobs, user=bob)
        await tracked(http, mine, token(alice))
        await tracked(http, bobs, token(bob))

        def long_poll(operation: str, user: str, wait: float = 20) -> Any:
            return http.get(
                f"/operations/{operation}?wait={wait}",
                headers=bearer(token(user), **{"If-None-Match": '"1"'}),
            )

        waiting = [asyncio.create_task(long_poll(mine, alice)) for _ in range(2)]
        await eventually(lambda: _waits(running, 2), "two long-polls to wait")

        refused = await long_poll(mine, alice)
        assert refused.status_code == 429, refused.text
        assert refused.json()["code"] == "too_many_waits"
        assert refused.headers["Retry-After"] == "5"
        # Refused before the lookup: an id that is not even Alice's gets the same answer.
        assert (await long_poll(bobs, alice)).status_code == 429
        started = await http.post(
            "/sagas/order_making",
            json=order_with_id(),
            headers=bearer(token(alice), Prefer="wait=20"),
        )
        assert started.status_code == 202, started.text
        assert "Preference-Applied" not in started.headers
        refusals = running.service.metrics.wait_refusals
        assert refusals.value(route="operation") == 2
        assert refusals.value(route="saga_start") == 1

        bobs_wait = asyncio.create_task(long_poll(bobs, bob))
        await eventually(lambda: _waits(running, 3), "Bob's long-poll to wait")
        await publisher.publish("order_created", bobs, user=bob)
        assert (await asyncio.wait_for(bobs_wait, 10)).json()["state"] == "completed"

        await publisher.publish("order_created", mine, user=alice)
        for poll in await asyncio.wait_for(asyncio.gather(*waiting), 10):
            assert poll.status_code == 200 and poll.json()["state"] == "completed"
        # Her waits are over, so she may wait again (for a finished operation: 304 at once).
        assert (await long_poll(mine, alice, 0.5)).status_code in (200, 304)


async def _waits(running: RunningService, count: int) -> bool:
    return running.service.metrics.waits.value(route="operation") == count


async def test_prefer_wait_answers_the_final_record_without_a_read_per_change(
    settings: Settings,
    service: RunningService,
    http: httpx.AsyncClient,
    token: Token,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = service.service.store
    read = store.get
    reads: list[str] = []

    async def counted(operation_id: str) -> Operation | None:
        reads.append(operation_id)
        return await read(operation_id)

    monkeypatch.setattr(store, "get", counted)
    async with DemoServices(settings.amqp_url, latency_ms=0):
        response = await http.post(
            "/sagas/order_making",
            json=order_with_id(),
            headers=bearer(token("u"), Prefer="wait=30"),
        )
    assert response.status_code == 200, response.text
    record = response.json()
    assert record["state"] == "completed" and record["version"] >= 5
    # One read when the wait begins; every change after it came with the feed.
    assert reads.count(record["id"]) == 1, reads


async def test_ready_fails_while_the_redis_pool_is_saturated(
    settings: Settings, redis_client: aioredis.Redis, amqp: object
) -> None:
    async with (
        start_service(replace(settings, redis_pool_size=6, wait_reads=2)) as running,
        httpx.AsyncClient(base_url=running.url, timeout=30) as http,
    ):
        from operations.store.redis_client import pool_usage

        client = running.service.store.redis
        pool = client.connection_pool
        held: list[AbstractConnection] = []
        try:
            for _ in range(6):
                usage = pool_usage(client)
                assert usage is not None
                if usage.saturated:
                    break
                held.append(await pool.get_connection())  # type: ignore[no-untyped-call]
            saturated = await http.get("/ready")
            assert saturated.status_code == 503, saturated.text
            assert saturated.json()["checks"]["redis-pool"] is False
            metrics = (await http.get("/metrics")).text
            assert 'operations_redis_pool{measure="size"} 6.0' in metrics
        finally:
            for connection in held:
                await pool.release(connection)

        async def ready() -> bool:
            answer = await http.get("/ready")
            return answer.status_code == 200 and answer.json()["checks"]["redis-pool"] is True

        await eventually(ready, "/ready to be 200 once the pool has room")


class FailingOnceAfterCommit:
    """The coordinator's store, whose first load after a commit fails as a saturated pool
    makes it fail: the compensation a cancel starts finds Redis busy at its first try."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.armed = False
        self.failed = 0

    async def commit(self, *args: Any, **kwargs: Any) -> Any:
        committed = await self.inner.commit(*args, **kwargs)
        self.armed = self.failed == 0
        return committed

    async def load(self, saga: str, saga_id: str) -> Loaded | None:
        if self.armed:
            self.armed = False
            self.failed += 1
            raise RedisConnectionError("No connection available.")
        loaded: Loaded | None = await self.inner.load(saga, saga_id)
        return loaded

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_cancel_whose_first_compensation_attempt_fails_ends_within_seconds(
    service: RunningService, http: httpx.AsyncClient, token: Token
) -> None:
    user = str(uuid.uuid4())
    operation = await started_order(http, token(user))
    sagas = service.service.sagas
    assert sagas is not None and sagas.coordinator is not None
    flaky = FailingOnceAfterCommit(sagas.coordinator.store)
    sagas.coordinator.store = flaky

    began = time.monotonic()
    cancelled = await http.post(f"/operations/{operation}/cancel", headers=bearer(token(user)))
    assert cancelled.status_code == 202, cancelled.text

    async def rejected() -> dict[str, Any] | None:
        read = await http.get(f"/operations/{operation}", headers=bearer(token(user)))
        record: dict[str, Any] = read.json()
        return record if record["state"] == "rejected" else None

    record = await eventually(rejected, "the cancelled order to end", timeout=20)
    took = time.monotonic() - began
    assert flaky.failed == 1
    assert record["code"] == "cancelled"
    assert took < 10, f"the cancelled order took {took:.1f}s to end"


def test_the_shares_of_redis_are_settings_checked_at_start_up() -> None:
    defaults = Settings.from_env({})
    assert (defaults.redis_pool_size, defaults.wait_reads, defaults.max_waits_per_user) == (
        100,
        16,
        50,
    )
    read = Settings.from_env(
        {
            "OPERATIONS_REDIS_POOL_SIZE": "40",
            "OPERATIONS_WAIT_READS": "8",
            "OPERATIONS_MAX_WAITS_PER_USER": "5",
        }
    )
    assert (read.redis_pool_size, read.wait_reads, read.max_waits_per_user) == (40, 8, 5)
    for variable, value in [
        ("OPERATIONS_REDIS_POOL_SIZE", "2"),
        ("OPERATIONS_WAIT_READS", "0"),
        ("OPERATIONS_WAIT_READS", "100"),  # not less than the pool: waiters could take it all
        ("OPERATIONS_MAX_WAITS_PER_USER", "0"),
    ]:
        with pytest.raises(SettingsError, match=variable):
            Settings.from_env({variable: value})
