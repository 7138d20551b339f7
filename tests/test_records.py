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
from operations.records import RECORD_FIELDS, Operation
from operations.store.keys import Keys
from operations.store.layout import FIELDS, STORED, message_field
from operations.store.redis_store import RedisStore
from tests.api import bearer
from tests.hub_support import Token
from tests.live import LiveClient
from tests.support import Publisher, RunningService, new_id, pending_command, uid

APPLY_LUA = (Path(operations.__file__).parent / "store" / "lua" / "apply.lua").read_text(
    encoding="utf-8"
)


def lua_block(opening: str) -> str:
    """The text of apply.lua from ``opening`` to the closing parenthesis of that call."""
    start = APPLY_LUA.index(opening)
    return APPLY_LUA[start : APPLY_LUA.index(")\n", start)]


def test_apply_lua_writes_the_records_fields_in_the_structs_order() -> None:
    snapshot = lua_block("local snapshot = cjson.encode({")
    snapshot_keys = re.findall(r"\b(\w+) = ", snapshot.split("{", 1)[1])
    assert snapshot_keys == list(RECORD_FIELDS)
    assert (
        tuple(msgspec.json.schema(Operation)["$defs"]["Operation"]["properties"]) == RECORD_FIELDS
    )
    # The hash's one-letter names, written in the struct's order (all but the id; the code and
    # reason, only when set, come after).
    start = APPLY_LUA.index("local fields = {'u'")
    written = APPLY_LUA[start : APPLY_LUA.index("if version > 1 then", start)]
    names = re.findall(r"'(\w)'", written)
    assert set(names) == set(STORED) and len(names) == len(STORED)
    assert [name for name in names if name not in "cr"] == [n for n in STORED if n not in "cr"]
    assert tuple(FIELDS[field] for field in RECORD_FIELDS if field != "id") == STORED
    assert len(set(STORED)) == len(STORED)
    read = re.findall(r"'(\w)'", lua_block("local current = redis.call('HMGET', record,"))
    assert read and set(read) <= set(STORED)


async def test_the_stored_hash_and_the_snapshot_hold_exactly_the_records_fields(
    redis_client: aioredis.Redis,
) -> None:
    store = RedisStore(redis_client, ttl_seconds=60, keys=Keys("records"))
    op, user = new_id(), new_id()
    command = pending_command(op, user, "create_order")
    (change,) = await store.apply([command])
    assert not isinstance(change, Exception) and change.snapshot is not None
    assert set(orjson.loads(change.snapshot)) == set(RECORD_FIELDS)
    stored = await redis_client.hgetall(store.keys.record(op))
    assert command.message_id is not None
    # The record's fields (no code nor reason while pending; the id is the key's), the message
    # id seen, and the history's one entry (its state and time are the record's).
    assert set(stored) == {
        *(name.encode() for name in STORED if name not in ("c", "r")),
        message_field(command.message_id),
        b"1",
    }
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
