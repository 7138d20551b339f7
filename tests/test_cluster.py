"""Redis Cluster: every script names keys of one slot, and the whole service (tracking, listing,
live push with recovery, fan-out between two processes, sagas) runs on a real 3-node cluster
started by ``scripts/services.sh start-cluster``."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from operations.pacco.demo import DemoServices
from operations.sagas import RedisSagaStore, SagaStatus
from operations.settings import Settings
from operations.store.keys import Keys, unpack_id
from operations.store.redis_client import open_redis
from operations.store.redis_store import RedisStore
from operations.store.shards import Shards
from tests.live import LiveClient
from tests.sagas_support import Harness, start_trip
from tests.sample_sagas import TripSaga
from tests.support import Publisher, eventually, new_id, pending_command, start_service

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.cluster


@pytest.fixture(scope="session")
def cluster_url(servers: tuple[str, str]) -> Iterator[str]:
    """A node of the 3-node test cluster, started next to the suite's Redis."""
    given = os.environ.get("OPERATIONS_TEST_REDIS_CLUSTER_URL")
    if given:
        yield given
        return
    base = int(os.environ.get("OPERATIONS_REDIS_PORT", "6379")) + 100
    env = {**os.environ, "OPERATIONS_REDIS_CLUSTER_PORT": str(base)}
    subprocess.run([str(ROOT / "scripts" / "services.sh"), "start-cluster"], env=env, check=True)
    yield f"redis://127.0.0.1:{base}/0"


@pytest.fixture
async def cluster(cluster_url: str) -> AsyncIterator[RedisCluster]:
    client = cast(RedisCluster, open_redis(cluster_url, cluster=True))
    await client.initialize()
    yield client
    await client.aclose()


@pytest.fixture
def cluster_settings(settings: Settings, cluster_url: str) -> Settings:
    return replace(settings, redis_url=cluster_url, redis_cluster=True)


def test_every_script_names_keys_of_one_slot() -> None:
    shards = Shards(16)
    keys = Keys("operations", shards)
    sagas = RedisSagaStore(aioredis.Redis(), "operations", shards)
    chance = random.Random(7)
    used = set()
    for _ in range(500):
        op, user = str(uuid.UUID(int=chance.getrandbits(128))), f"user-{chance.randrange(50)}"
        shard = keys.shard(op)
        used.add(shard)
        apply_keys: list[bytes | str] = [
            keys.record(op),
            keys.owners(shard),
            keys.user_index(user, shard),
            keys.index(shard),
            keys.changes(shard),
        ]
        assert len({key_slot(as_bytes(key)) for key in apply_keys}) == 1, apply_keys
        member = f"order_making:{op}"
        saga_shard = shards.of(member)
        saga_keys = [
            sagas.keys.saga(member),
            sagas.keys.outbox(member),
            sagas.keys.lease(member),
            sagas.keys.outbox_index(saga_shard),
            sagas.keys.deadlines(saga_shard),
            sagas.keys.index(saga_shard),
            sagas.keys.tombstones(saga_shard),
            sagas.keys.status_index(saga_shard, "order_making", SagaStatus.COMPLETED),
            # Named by the commit script from the shard's tag, and by the lookups.
            sagas.keys.business_key(saga_shard, f"order-{op}"),
            sagas.keys.overdue(saga_shard, "order_making", "order_approved"),
            sagas.keys.retry(member),
        ]
        assert len({key_slot(key.encode()) for key in saga_keys}) == 1, saga_keys
    assert used == set(range(16)), "operations spread over every shard"
    assert len({key_slot(keys.changes(shard).encode()) for shard in shards}) == 16


async def _final_states(
    publisher: Publisher, users: list[str], count: int, chance: random.Random
) -> dict[str, tuple[str, str]]:
    """Publishes ``count`` operations' messages (some terminal events before their command, some
    duplicated) and returns each operation's owner and final state."""
    finals: dict[str, tuple[str, str]] = {}
    for index in range(count):
        op, user = new_id(), users[index % len(users)]
        command_id = new_id()
        terminal, state = chance.choice(
            [
                ("customer_state_changed", "completed"),
                ("change_customer_state_rejected", "rejected"),
            ]
        )
        order = [("change_customer_state", command_id), (terminal, new_id())]
        if index % 5 == 0:
            order.reverse()  # the outcome before its command
        if index % 7 == 0:
            order.append(order[0])  # a duplicate delivery
        for message, message_id in order:
            await publisher.publish(message, op, user=user, message_id=message_id)
        finals[str(uuid.UUID(op))] = (user, state)  # as the service writes GUIDs
    return finals


async def test_the_service_runs_on_a_redis_cluster(
    cluster_settings: Settings, cluster: RedisCluster, amqp: Any, publisher: Publisher, token: Any
) -> None:
    assert cluster_settings.redis_shards == 16
    users = [str(uuid.uuid4()) for _ in range(3)]
    chance = random.Random(2026)
    async with (
        start_service(cluster_settings) as first,
        start_service(cluster_settings) as second,
    ):
        # An admin on the second process sees what either process consumes.
        admin = LiveClient(second.url)
        await admin.connect({"token": token("ops", "admin")})
        owner = LiveClient(first.url)
        await owner.connect({"token": token(users[0])})
        try:
            finals = await _final_states(publisher, users, 60, chance)
            for op, (_, state) in finals.items():
                await admin.wait_for_state(op, state, timeout=30)
            mine = {op for op, (user, _) in finals.items() if user == users[0]}
            for op in mine:
                await owner.wait_for_state(op, finals[op][1])
            assert {r["id"] for r in owner.records()} == mine, "no other user's operations"
            for records in (admin.records(op) for op in finals):
                pushed = [r["version"] for r in records]
                assert pushed == sorted(set(pushed)), pushed

            versions: dict[str, int] = {}
            async with httpx.AsyncClient(base_url=first.url, timeout=30) as http:
                for op, (user, state) in finals.items():
                    read = await http.get(
                        f"/operations/{op}", headers={"Authorization": f"Bearer {token(user)}"}
                    )
                    assert read.status_code == 200 and read.json()["state"] == state
                    versions[op] = read.json()["version"]
                listed = await _list_all(http, token(users[0]), limit=4)
                assert sorted(r["id"] for r in listed) == sorted(mine), "each once, all of them"
                created = [r["createdAt"] for r in listed]
                assert created == sorted(created, reverse=True), "newest first across shards"
                everyone = await _list_all(http, token("ops", "admin"), limit=9)
                assert sorted(r["id"] for r in everyone) == sorted(finals)
                created = [r["createdAt"] for r in everyone]
                assert created == sorted(created, reverse=True), "newest first across shards"

            # Recovery: the owner drops, misses changes, and comes back with its last cursor.
            cursor = owner.records()[-1]["cursor"]
            assert len(cursor.split(",")) == 16, "one stream position per shard"
            await owner.close()
            missed = await _final_states(publisher, [users[0]], 12, chance)
            for op, (_, state) in missed.items():
                await admin.wait_for_state(op, state, timeout=30)
            back = LiveClient(first.url)
            await back.connect({"token": token(users[0]), "since": cursor})
            try:
                await back.wait_for(lambda c: bool(c.events("operations_sync")), "the sync")
                sync = back.events("operations_sync")[0]
                assert sync["recovered"] is True
                assert {r["id"]: r["state"] for r in sync["operations"]} == {
                    op: state for op, (_, state) in missed.items()
                }
                versions.update({r["id"]: r["version"] for r in sync["operations"]})
            finally:
                await back.close()
        finally:
            await admin.close()
            await owner.close()

    streams = Keys(cluster_settings.key_prefix, Shards(16)).streams
    nodes = set()
    for stream in streams:
        node = cluster.get_node_from_key(stream)
        assert node is not None
        nodes.add(node.name)
    assert len(nodes) == 3, "the shards' streams live on every node"
    applied = sum([await cluster.xlen(stream) for stream in streams])
    # One stream entry per applied change, which is what versions count: duplicates and stale
    # commands (an outcome applied before its command) add none.
    assert applied == sum(versions.values())


async def _list_all(http: httpx.AsyncClient, bearer: str, limit: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        page = await http.get(
            "/operations", params=params, headers={"Authorization": f"Bearer {bearer}"}
        )
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["items"]) <= limit
        found.extend(body["items"])
        cursor = body["next"]
        if cursor is None:
            return found


async def test_order_making_runs_on_a_redis_cluster(
    cluster_settings: Settings, cluster: RedisCluster, amqp: Any, token: Any
) -> None:
    user = str(uuid.uuid4())
    async with (
        start_service(cluster_settings) as service,
        DemoServices(cluster_settings.amqp_url, latency_ms=2),
    ):
        live = LiveClient(service.url)
        await live.connect({"token": token(user)})
        try:
            async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
                operations = []
                for parcels in (1, 2, 3):
                    response = await http.post(
                        "/orders",
                        json={
                            "customerId": user,
                            "parcelIds": [str(uuid.uuid4()) for _ in range(parcels)],
                        },
                        headers={"Authorization": f"Bearer {token(user)}"},
                    )
                    assert response.status_code == 202, response.text
                    operations.append(response.json()["operationId"])
            for operation in operations:
                await live.wait_for_state(operation, "completed", timeout=60)
        finally:
            await live.close()
        store = service.service.sagas
        assert store is not None

        async def finished() -> bool:
            recent = await store.store.recent(10)
            done = {r.id for r in recent if r.status is SagaStatus.COMPLETED}
            return set(operations) <= done

        await eventually(finished, "the sagas to be listed as completed")
        # Found by the customer's id in every shard; the other lookups answer on a cluster too.
        assert {r.id for r in await store.store.holding(user, 10)} == set(operations)
        steps = [("order_making", "order_approved"), ("order_making", "order_created")]
        assert await store.store.overdue_counts(steps) == dict.fromkeys(steps, 0)
        assert await store.store.newly_overdue(steps, 10) == []
        assert await store.store.hold_retry("order_making", operations[0], 5) is True
        assert [e.message for e in await store.store.last_sent("order_making", operations[0])]


async def test_a_changed_shard_count_refuses_to_consume(
    settings: Settings, redis_client: aioredis.Redis, amqp: Any, publisher: Publisher, token: Any
) -> None:
    first_layout = replace(settings, redis_shards_count=4)
    async with start_service(first_layout) as running:
        op = new_id()
        await publisher.publish("change_customer_state", op, user="u1")
        async with httpx.AsyncClient(base_url=running.url) as http:

            async def stored() -> bool:
                read = await http.get(
                    f"/operations/{op}", headers={"Authorization": f"Bearer {token('u1')}"}
                )
                return read.status_code == 200

            await eventually(stored, "the operation")
    from operations.service import Service

    changed = Service(replace(settings, redis_shards_count=8))
    transport = httpx.ASGITransport(app=changed.asgi)
    await changed.start()
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:

            async def refused() -> bool:
                response = await http.get("/ready")
                return response.status_code == 503 and response.json()["checks"]["redis"] is False

            await eventually(refused, "/ready to report the layout")
            await asyncio.sleep(0.3)
            assert not changed.consumer.ready, "nothing is consumed with the wrong layout"
    finally:
        await changed.stop()


async def test_the_sweep_runs_on_a_redis_cluster(cluster: RedisCluster) -> None:
    """Each sweep script touches one shard's slot: expired operations and sagas leave their
    indexes on every node, live ones stay."""
    prefix = f"sweep-{uuid.uuid4().hex[:8]}"
    keys = Keys(prefix, Shards(16))
    # The service's client for a cluster is typed as a Redis (see open_redis), as here.
    client = cast(aioredis.Redis, cluster)
    store = RedisStore(client, ttl_seconds=2, stream_max_length=1_000, keys=keys)
    sagas = RedisSagaStore(client, prefix, Shards(16), tombstone_seconds=60)
    user = "cluster-user"
    expiring = [new_id() for _ in range(64)]
    await store.apply([pending_command(str(uuid.UUID(op)), user) for op in expiring])
    h = Harness.build(sagas, [TripSaga])
    h.coordinator.finished_ttl_seconds = 1
    trips = [new_id() for _ in range(8)]
    for trip in trips:
        await start_trip(h, trip)
        await h.send("trip_confirmed", {}, correlation_id=trip, message_id=new_id())
    await asyncio.sleep(1.2)
    late = expiring[::8]  # keeps every shard they fall in from expiring whole
    await store.apply(
        [pending_command(str(uuid.UUID(op)), user, "add_parcel_to_order") for op in late]
    )
    await asyncio.sleep(1.0)

    assert await store.sweep() > 0
    assert (await sagas.sweep()).sagas == len(trips)
    indexed: set[str] = set()
    for shard in keys.shards:
        for key in (keys.index(shard), keys.user_index(user, shard)):
            members = cast(list[bytes], await cluster.zrange(key, 0, -1))
            indexed |= {unpack_id(member) for member in members}  # GUIDs as their bytes
        assert await cluster.zcard(sagas.keys.index(shard)) == 0
    assert indexed == {str(uuid.UUID(op)) for op in late}
    assert all([await sagas.tombstoned("trip", trip) for trip in trips])
    async for key in cluster.scan_iter(match=f"{prefix}:*"):
        await cluster.delete(key)


def as_bytes(key: bytes | str) -> bytes:
    return key if isinstance(key, bytes) else key.encode()
