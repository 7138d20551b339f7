"""Ids that look like key names, against a running service on the real servers: an id never
names another operation's or saga's key, a read never tells whether an id exists by its error,
a script that fails leaves nothing behind (and its message can be redriven once the cause is
gone), and an operation's history is capped. And every key is named in
``operations/store/keys.py``."""

from __future__ import annotations

import ast
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis

from operations.sagas import RedisSagaStore, SagaStatus
from operations.sagas.records import OutboxEntry, SagaRecord
from operations.settings import Settings
from operations.states import State
from operations.store.keys import DeadLetterKeys, Keys, SagaKeys, member_of, split_member
from operations.store.shards import Shards
from tests.api import bearer
from tests.dead_letter_support import letters
from tests.support import Publisher, RunningService, eventually, start_service

Token = Callable[..., str]


def plain_id() -> str:
    """An id that is not a GUID: the service keeps it as it is."""
    return f"id-{uuid.uuid4().hex[:16]}"


async def record_of(http: httpx.AsyncClient, op: str, headers: dict[str, str]) -> dict[str, Any]:
    async def fetch() -> dict[str, Any] | None:
        response = await http.get(f"/operations/{op}", headers=headers)
        return orjson.loads(response.content) if response.status_code == 200 else None

    return await eventually(fetch, f"operation {op}")


async def test_an_id_ending_in_history_is_an_operation_of_its_own(
    service: RunningService,
    publisher: Publisher,
    http: httpx.AsyncClient,
    token: Token,
    settings: Settings,
    redis_client: aioredis.Redis,
) -> None:
    alice, bob = plain_id(), plain_id()
    forged = f"{(target := plain_id())}:history"
    await publisher.publish("create_order", forged, user=alice)
    await record_of(http, forged, bearer(token(alice)))
    await publisher.publish("create_order", target, user=bob)
    await publisher.publish("order_created", target, user=bob)

    async def completed() -> dict[str, Any] | None:
        record = await record_of(http, target, bearer(token(bob)))
        return record if record["state"] == "completed" else None

    assert (await eventually(completed, "bob's operation"))["userId"] == bob
    for op, owner, steps in ((forged, alice, 1), (target, bob, 2)):
        history = await http.get(f"/operations/{op}/history", headers=bearer(token(owner)))
        assert history.status_code == 200
        assert [entry["version"] for entry in orjson.loads(history.content)["items"]] == list(
            range(1, steps + 1)
        )
    keys = Keys(settings.key_prefix)
    for op in (forged, target):
        key = keys.record(op)  # the history is in the record
        assert 0 < await redis_client.ttl(key) <= settings.operation_ttl_seconds, key


async def test_forged_ids_get_the_same_404_as_unknown_ones_on_every_route(
    service: RunningService,
    publisher: Publisher,
    http: httpx.AsyncClient,
    token: Token,
) -> None:
    bob, mallory = plain_id(), plain_id()
    started = await http.post(
        "/orders",
        headers=bearer(token(bob)),
        json={"customerId": bob, "parcelIds": [str(uuid.uuid4())]},
    )
    assert started.status_code == 202, started.text
    order_op = orjson.loads(started.content)["operationId"]
    plain_op = plain_id()
    await publisher.publish("create_order", plain_op, user=bob)
    for op in (order_op, plain_op):
        await record_of(http, op, bearer(token(bob)))

    async def saga_started() -> bool:
        response = await http.get(f"/operations/{order_op}/saga", headers=bearer(token(bob)))
        return response.status_code == 200

    await eventually(saga_started, "bob's saga")
    suffixes = ["", ":history", ":outbox", ":outbox:lease", ":lease", ":seen", "}:x", "{0}"]
    probes = [f"{op}{suffix}" for op in (order_op, plain_op) for suffix in suffixes]
    unknown = plain_id()
    as_mallory = bearer(token(mallory))

    async def answers(op: str) -> list[tuple[int, str]]:
        replies = [
            await http.get(f"/operations/{op}", headers=as_mallory),
            await http.get(f"/operations/{op}/history", headers=as_mallory),
            await http.get(f"/operations/{op}/saga", headers=as_mallory),
            await http.post(f"/operations/{op}/cancel", headers=as_mallory),
        ]
        return [(reply.status_code, orjson.loads(reply.content)["code"]) for reply in replies]

    expected = await answers(unknown)
    assert expected == [(404, "operation_not_found")] * 4
    for op in probes:
        assert await answers(op) == expected, op
    # Bob's own operations are untouched by the probes.
    assert (await record_of(http, plain_op, bearer(token(bob))))["version"] == 1


async def test_a_key_of_the_wrong_type_dead_letters_the_message_and_writes_nothing(
    settings: Settings,
    publisher: Publisher,
    token: Token,
    redis_client: aioredis.Redis,
) -> None:
    kept = replace(settings, dead_letter_keep=True, sagas=False)
    keys = Keys(kept.key_prefix)
    admin = bearer(token("ops", "admin"))
    op, owner = plain_id(), plain_id()
    tampered = keys.user_index(owner, keys.shard(op))
    await redis_client.set(tampered, "tampered")
    async with (
        start_service(kept) as running,
        httpx.AsyncClient(base_url=running.url, timeout=30) as http,
    ):
        await publisher.publish("create_order", op, user=owner, message_id="m-tampered")
        (letter,) = await eventually(lambda: letters(http, admin), "the dead letter")
        assert letter["correlationId"] == op and "WRONGTYPE" in letter["reason"]
        assert tampered in letter["reason"]
        assert await redis_client.exists(keys.record(op)) == 0
        assert await redis_client.zscore(keys.index(0), op) is None

        # Once the cause is gone, the redrive applies the message.
        await redis_client.delete(tampered)
        redriven = await http.post(f"/dead-letters/{letter['id']}/redrive", headers=admin)
        assert redriven.status_code == 200, redriven.text
        record = await record_of(http, op, bearer(token(owner)))
        assert (record["state"], record["version"]) == ("pending", 1)
        assert await redis_client.ttl(keys.record(op)) > 0


async def test_the_history_keeps_the_newest_transitions_up_to_the_cap(
    settings: Settings, publisher: Publisher, token: Token
) -> None:
    capped = replace(settings, max_history=5, sagas=False)
    op, owner = plain_id(), plain_id()
    async with (
        start_service(capped) as running,
        httpx.AsyncClient(base_url=running.url, timeout=30) as http,
    ):
        for step in range(8):
            await publisher.publish("create_order", op, user=owner, name=f"step-{step}")
        await publisher.publish("order_created", op, user=owner)

        async def finished() -> dict[str, Any] | None:
            record = await record_of(http, op, bearer(token(owner)))
            return record if record["state"] == "completed" else None

        assert (await eventually(finished, "the last step"))["version"] == 9
        response = await http.get(f"/operations/{op}/history", headers=bearer(token(owner)))
        items = orjson.loads(response.content)["items"]
        assert [entry["version"] for entry in items] == [5, 6, 7, 8, 9]
        assert [entry["state"] for entry in items][-1] == "completed"


def _record(saga_id: str) -> SagaRecord:
    return SagaRecord("trip", saga_id, SagaStatus.PENDING, {"n": 1}, correlation_id=saga_id)


def _entry(message_id: str) -> OutboxEntry:
    return OutboxEntry(message_id, "trips", "trip_requested", {}, State.PENDING, None, {})


async def test_a_saga_id_ending_in_outbox_cannot_touch_another_sagas_outbox(
    settings: Settings, redis_client: aioredis.Redis
) -> None:
    store = RedisSagaStore(redis_client, settings.key_prefix)
    victim = plain_id()
    forged = f"{victim}:outbox"
    assert await store.commit(_record(victim), 0, [_entry("m-1")], 60)
    assert await store.commit(_record(forged), 0, [_entry("m-2")], 60)
    assert await store.commit(_record(f"{victim}:outbox:lease"), 0, [], 60)
    assert await store.lease_outbox("trip", forged, "mallory", 30)
    assert await store.lease_outbox("trip", victim, "relay", 30)

    pending = await store.outbox("trip", victim)
    assert [entry.message_id for _, entry in pending.entries] == ["m-1"]
    loaded = await store.load("trip", forged)
    assert loaded is not None and loaded.record.id == forged
    await store.acknowledge("trip", forged, [stored for stored, _ in pending.entries])
    assert len((await store.outbox("trip", victim)).entries) == 1


async def test_a_saga_commit_meeting_a_key_of_the_wrong_type_writes_nothing(
    settings: Settings, redis_client: aioredis.Redis
) -> None:
    store = RedisSagaStore(redis_client, settings.key_prefix)
    saga_id = plain_id()
    await redis_client.set(store.keys.outbox(f"trip:{saga_id}"), "tampered")
    try:
        await store.commit(_record(saga_id), 0, [_entry("m-1")], 60)
    except Exception as error:
        assert "WRONGTYPE" in str(error)
    else:
        raise AssertionError("the commit should have failed")
    assert await store.load("trip", saga_id) is None
    assert await redis_client.exists(store.keys.saga(f"trip:{saga_id}")) == 0
    assert await store.recent() == []


ROOT = Path(__file__).resolve().parent.parent
KEYS_MODULE = Path("operations/store/keys.py")


def _texts(path: Path) -> Iterator[tuple[int, str]]:
    """Each string literal of a module, and each literal part of its f-strings, but docstrings."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    documented = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, documented)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            yield node.lineno, node.value


def _key_words() -> set[str]:
    """The fixed words of the key families, as ``operations/store/keys.py`` writes them."""
    return {
        word
        for _, text in _texts(KEYS_MODULE)
        if ":" in text
        for word in re.findall(r"[a-z][a-z-]*", text)
    }


def _key_names(path: Path, words: set[str]) -> list[str]:
    """Where ``path`` spells a key: a hash tag after a ``:``, or ``:`` and a family's word."""
    family = "|".join(sorted(map(re.escape, words), key=len, reverse=True))
    spelled = re.compile(rf":\{{|:(?:{family})(?=$|[:}}])")
    return [f"{path}:{line}: {text!r}" for line, text in _texts(path) if spelled.search(text)]


def test_no_module_but_the_keys_module_names_a_redis_key() -> None:
    words = _key_words()
    assert {"op", "owners", "saga-outbox", "dead-letters", "sweep-lease"} <= words
    assert len(_key_names(KEYS_MODULE, words)) > 20  # the scan finds what keys.py writes
    modules = sorted(path.relative_to(ROOT) for path in (ROOT / "operations").rglob("*.py"))
    found = [name for path in modules if path != KEYS_MODULE for name in _key_names(path, words)]
    assert found == []


def test_every_key_keeps_its_name() -> None:
    """Stored data and the Lua scripts know these names: they are pinned byte for byte."""
    keys = Keys("P", Shards(4))
    op = "X:index"
    shard = keys.shard(op)
    assert [
        keys.record(op),
        keys.user_index("u:1", 2),
        keys.index(1),
        keys.owners(3),
        keys.changes(0),
        keys.tag(2),
        keys.layout,
        keys.sweep_lease,
        *keys.streams,
    ] == [
        f"P:{{{shard}}}:op:X:index".encode(),
        "P:{2}:user:u:1",
        "P:{1}:index",
        "P:{3}:owners",
        "P:{0}:changes",
        "P:{2}",
        "P:layout",
        "P:sweep-lease",
        *(f"P:{{{n}}}:changes" for n in range(4)),
    ]
    # A GUID's record is named by its 16 bytes; a text of 16 bytes by a zero byte and itself.
    guid = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0"
    assert keys.record(guid) == f"P:{{{keys.shard(guid)}}}:op:".encode() + bytes.fromhex(
        guid.replace("-", "")
    )
    sixteen = "order-0000000001"
    assert keys.record(sixteen) == f"P:{{{keys.shard(sixteen)}}}:op:\x00{sixteen}".encode()
    sagas = SagaKeys("P", Shards(4))
    member = member_of("trip", "X:outbox")
    assert split_member(member) == ("trip", "X:outbox")
    tag = f"P:{{{sagas.shard(member)}}}"
    assert [
        sagas.saga(member),
        sagas.outbox(member),
        sagas.lease(member),
        sagas.outbox_index(1),
        sagas.deadlines(1),
        sagas.index(1),
        sagas.saga_types(1),
        sagas.status_index(1, "trip", SagaStatus.COMPENSATING),
        sagas.tombstones(1),
    ] == [
        f"{tag}:saga:trip:X:outbox",
        f"{tag}:saga-outbox:trip:X:outbox",
        f"{tag}:saga-lease:trip:X:outbox",
        "P:{1}:saga-outbox",
        "P:{1}:saga-deadlines",
        "P:{1}:saga-index",
        "P:{1}:saga-types",
        "P:{1}:saga-status:trip:compensating",
        "P:{1}:saga-tombstones",
    ]
    letters = DeadLetterKeys("P")
    assert [
        letters.tag,
        letters.letters,
        letters.index,
        letters.groups,
        letters.group_of,
        letters.seen,
        letters.group("g"),
        letters.redriving("L:seen"),
    ] == [
        "P:{dead-letters}",
        "P:{dead-letters}:letters",
        "P:{dead-letters}:index",
        "P:{dead-letters}:groups",
        "P:{dead-letters}:group-of",
        "P:{dead-letters}:seen",
        "P:{dead-letters}:group:g",
        "P:{dead-letters}:redriving:L:seen",
    ]
