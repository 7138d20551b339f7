"""The operation record is defined once (operations.records.Operation): apply.lua writes its
fields in the struct's order, and an answer, a push and a stored record of one operation are
the same document."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import orjson
import redis.asyncio as aioredis

import operations
from operations.records import RECORD_FIELDS, STORED_FIELDS, Operation
from operations.store.keys import Keys
from operations.store.redis_store import RedisStore
from tests.api import bearer
from tests.hub_support import Token
from tests.live import LiveClient
from tests.support import Publisher, RunningService, as_text, new_id, pending_command, uid

APPLY_LUA = (Path(operations.__file__).parent / "store" / "lua" / "apply.lua").read_text(
    encoding="utf-8"
)
RANK = "rank"  # the hash's one field beyond the record: the operation's place in the indexes


def lua_block(opening: str) -> str:
    """The text of apply.lua from ``opening`` to the closing parenthesis of that call."""
    start = APPLY_LUA.index(opening)
    return APPLY_LUA[start : APPLY_LUA.index(")\n", start)]


def test_apply_lua_writes_the_records_fields_in_the_structs_order() -> None:
    snapshot = lua_block("local snapshot = cjson.encode({")
    snapshot_keys = re.findall(r"\b(\w+) = ", snapshot.split("{", 1)[1])
    assert snapshot_keys == list(RECORD_FIELDS)

    (written,) = [
        block
        for block in re.findall(r"redis\.call\('HSET', record,(.*?)\)\n", APPLY_LUA, re.DOTALL)
        if "'userId'" in block
    ]
    names = re.findall(r"'(\w+)', ", written + ", ")
    assert names == [*STORED_FIELDS, RANK]
    assert tuple(field for field in RECORD_FIELDS if field != "id") == STORED_FIELDS

    read = re.findall(r"'(\w+)'", lua_block("redis.call('HMGET', record,").split(",", 1)[1])
    assert read and set(read) <= {*STORED_FIELDS, RANK}
    assert (
        tuple(msgspec.json.schema(Operation)["$defs"]["Operation"]["properties"]) == RECORD_FIELDS
    )


async def test_the_stored_hash_and_the_snapshot_hold_exactly_the_records_fields(
    redis_client: aioredis.Redis,
) -> None:
    store = RedisStore(redis_client, ttl_seconds=60, keys=Keys("records"))
    op = new_id()
    command = pending_command(op, "user-1", "create_order")
    (change,) = await store.apply([command])
    assert not isinstance(change, Exception) and change.snapshot is not None
    assert set(orjson.loads(change.snapshot)) == set(RECORD_FIELDS)
    stored = await redis_client.hgetall(store.keys.record(op))
    fields = {as_text(name) for name in stored}
    # Beside the record: the message ids seen (m:ID) and the history (VERSION and a letter).
    record = {field for field in fields if not field.startswith("m:") and not field[0].isdigit()}
    assert record == {*STORED_FIELDS, RANK}  # the id is the key's
    assert fields - record == {f"m:{command.message_id}", "1s", "1m"}
    assert await store.get(op) == change.record == Operation.from_snapshot(change.snapshot)


async def test_an_answer_a_push_and_the_stored_record_are_one_document(
    service: RunningService,
    publisher: Publisher,
    http: httpx.AsyncClient,
    clients: Callable[[], LiveClient],
    token: Token,
    redis_client: aioredis.Redis,
) -> None:
    user, owned, anonymous = uid(), uid(), uid()
    admin = clients()
    await admin.connect({"token": token("ops-person", "admin")})
    await publisher.publish("create_order", owned, user=user)
    await publisher.publish(
        "create_order_rejected",
        owned,
        user=user,
        body={"code": "no_parcels", "reason": 'nothing to ship: ✓ "quoted"'},
    )
    await publisher.publish("create_order", anonymous, user=None)
    last = {owned: await admin.wait_for_state(owned, "rejected")}
    last[anonymous] = await admin.wait_for_state(anonymous, "pending")
    store = service.service.store
    headers = bearer(token("ops-person", "admin"))

    for op, pushed in last.items():
        answer = await http.get(f"/operations/{op}", headers=headers)
        assert answer.status_code == 200
        document: dict[str, Any] = answer.json()
        assert list(document) == list(RECORD_FIELDS)
        assert {key: value for key, value in pushed.items() if key != "cursor"} == document

        stored = await store.get(op)
        assert stored is not None
        assert msgspec.to_builtins(stored) == document
        assert answer.headers["etag"] == stored.etag

        shard = store.keys.shard(op)
        entries = await redis_client.xrange(store.keys.changes(shard))
        snapshots = [
            fields[b"op"] for _, fields in entries or [] if fields and fields[b"id"] == op.encode()
        ]
        assert orjson.loads(snapshots[-1]) == document
        assert Operation.from_snapshot(snapshots[-1]) == stored

        listed = await http.get("/operations", headers=headers, params={"limit": 200})
        assert document in listed.json()["items"]

    assert last[owned]["userId"] == user and last[anonymous]["userId"] is None
    assert (last[owned]["code"], last[owned]["version"]) == ("no_parcels", 2)
