"""The places where the hot path goes beneath a library (docs/fast-paths.md), each held to the
library's own result: the store's hand-encoded RESP to redis-py's ``pack_commands``, the hub's
spliced Socket.IO packet to python-socketio's ``Packet.encode``, and the feed's by-position reads
to the fields apply.lua writes. (The bulk AMQP frame receiver is held to pamqp in
test_frames.py.)"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from engineio.packet import MESSAGE as EIO_MESSAGE
from engineio.packet import Packet as EngineIOPacket
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio.connection import Connection
from redis.connection import PythonRespSerializer
from socketio.packet import EVENT, Packet

import operations
from hub import events
from operations.feed import STREAM_FIELDS, FeedEntry
from operations.records import Change
from operations.store.keys import Keys, unpack_id
from operations.store.layout import STORED
from operations.store.redis_store import RedisStore, pack_evalsha
from operations.store.shards import Shards
from tests.support import as_text, eventually, new_id, pending_command
from tests.test_feed import listened_feed

APPLY_LUA = Path(operations.__file__).parent / "store" / "lua" / "apply.lua"

# Text of every kind: ASCII, accents, scripts outside the BMP, RESP's own \r\n and $, quotes.
text = st.text(
    alphabet=st.one_of(
        st.sampled_from(string.printable + "é✓漢字🙂\r\n$*\"\\'{}:,"),
        st.characters(codec="utf-8"),
    ),
    max_size=40,
)
calls = st.lists(
    st.tuples(
        st.one_of(text, st.binary(max_size=60)),
        text,
        text,
        text,
        text,
        st.binary(max_size=300),
        st.binary(max_size=40),
        st.binary(max_size=20),
        st.binary(max_size=20),
    ),
    min_size=1,
    max_size=12,
)

RECORD_NAMES = {name.encode() for name in STORED if name != "u"}

# -- the store's RESP ---------------------------------------------------------------------------


def redis_py_packed(
    sha: str, batch: list[tuple[bytes | str, str, str, str, str, bytes, bytes, bytes, bytes]]
) -> bytes:
    commands = [("EVALSHA", sha, 5, *call) for call in batch]
    return b"".join(Connection().pack_commands(commands))


@settings(max_examples=150, deadline=None)
@given(sha=st.text(alphabet="0123456789abcdef", min_size=40, max_size=40), batch=calls)
def test_the_stores_resp_is_byte_for_byte_what_redis_py_packs(
    sha: str, batch: list[tuple[bytes | str, str, str, str, str, bytes, bytes, bytes, bytes]]
) -> None:
    assert pack_evalsha(sha, batch) == redis_py_packed(sha, batch)


def test_the_stores_resp_matches_redis_pys_python_serializer_too() -> None:
    """The connection packs with hiredis when it can; the pure-Python serializer agrees."""
    sha = "a" * 40
    batch = [
        (
            "k:é",
            "k:漢字",
            "k\r\n",
            "$5",
            "🙂",
            bytes(range(256)) * 30,
            b"\x01\r\n",
            b"",
            b"\x00\xff",
        )
    ]
    serializer = PythonRespSerializer(6000, Connection().encoder.encode)
    pack: Callable[..., list[bytes]] = serializer.pack
    expected = b"".join(pack("EVALSHA", sha, 5, *batch[0]))
    assert pack_evalsha(sha, batch) == expected


# -- the hub's Socket.IO packet -----------------------------------------------------------------


def records() -> st.SearchStrategy[dict[str, Any]]:
    optional = st.none() | text
    return st.fixed_dictionaries(
        {
            "id": st.uuids().map(str),
            "userId": optional,
            "name": text,
            "state": st.sampled_from(["pending", "completed", "rejected"]),
            "code": optional,
            "reason": optional,
            "version": st.integers(min_value=1, max_value=2**53),
            "createdAt": text,
            "updatedAt": text,
        }
    )


def library_packet(entry: FeedEntry, orjson_module: bool = True) -> str:
    """python-socketio's own EVENT packet for the change: with the JSON module the hub's server
    is given, or with the library's default."""
    event = {"pending": events.PENDING, "completed": events.COMPLETED}.get(
        entry.state, events.REJECTED
    )
    payload = {**orjson.loads(entry.snapshot), "cursor": entry.cursor}
    packet = Packet(EVENT, data=[event, payload])
    if orjson_module:
        packet.json = events.OrjsonModule  # on this packet only, as the server sets it
    encoded = packet.encode()
    assert isinstance(encoded, str)
    return encoded


@settings(max_examples=150, deadline=None)
@given(record=records(), cursor=st.text(alphabet="0123456789-,", min_size=3, max_size=60))
def test_the_spliced_packet_is_what_socketio_encodes(record: dict[str, Any], cursor: str) -> None:
    entry = FeedEntry(cursor, record["id"], record["userId"], record["state"], orjson.dumps(record))
    spliced = events.encoded(entry)
    assert spliced == library_packet(entry)
    # python-socketio with its default JSON module writes other escapes, but the same packet.
    decoded = Packet(encoded_packet=spliced)
    assert decoded.packet_type == EVENT and decoded.namespace in (None, "/")
    assert decoded.data == Packet(encoded_packet=library_packet(entry, orjson_module=False)).data


def library_encoded(event: str, data: Any) -> str:
    """python-socketio's own EVENT packet for ``emit(event, data)``, with the hub's JSON module."""
    packet = Packet(EVENT, data=[event, data])
    packet.json = events.OrjsonModule
    encoded = packet.encode()
    assert isinstance(encoded, str)
    return encoded


@settings(max_examples=100, deadline=None)
@given(
    changes=st.lists(
        st.tuples(records(), st.text(alphabet="0123456789-,", min_size=3, max_size=60)),
        max_size=6,
    ),
    cursor=st.text(alphabet="0123456789-,", min_size=3, max_size=60),
    recovered=st.booleans(),
)
def test_the_spliced_sync_is_what_socketio_encodes(
    changes: list[tuple[dict[str, Any], str]], cursor: str, recovered: bool
) -> None:
    entries = [
        FeedEntry(at, record["id"], record["userId"], record["state"], orjson.dumps(record))
        for record, at in changes
    ]
    payload = {
        "operations": [{**record, "cursor": at} for record, at in changes],
        "cursor": cursor,
        "recovered": recovered,
    }
    spliced = events.synced(entries, cursor, recovered)
    assert spliced == library_encoded(events.SYNC, payload)
    assert Packet(encoded_packet=spliced).data == [events.SYNC, payload]


def test_the_engineio_frame_is_the_librarys_own() -> None:
    """The hub hands the spliced text to engine.io's own Packet: a MESSAGE frame, not spliced."""
    entry = FeedEntry("1-0", "op", None, "pending", b'{"id":"op","name":"x \xc3\xa9"}')
    frame = EngineIOPacket(EIO_MESSAGE, data=events.encoded(entry)).encode()
    assert frame == "4" + library_packet(entry)


# -- the feed's by-position reads ---------------------------------------------------------------


def test_the_feed_reads_the_fields_in_the_order_apply_lua_writes_them() -> None:
    source = APPLY_LUA.read_text()
    (call,) = re.findall(r"redis\.call\('XADD',(.*?)\)\n", source, re.DOTALL)
    names = re.findall(r"'(\w+)',\s*\w+", call.split("'*',", 1)[1])
    assert tuple(names) == STREAM_FIELDS == ("op", "id", "user", "state")


@pytest.mark.parametrize("protocol", [2, 3])
async def test_the_feeds_entries_are_what_redis_holds_by_name(
    servers: tuple[str, str], redis_client: aioredis.Redis, protocol: int
) -> None:
    """apply.lua run on the real Redis: each entry the feed hands out, read by position, is the
    stream entry read by field name, and agrees with the record's hash (HGETALL)."""
    keys = Keys(f"fast-{new_id()[:8]}", Shards(1))
    store = RedisStore(redis_client, ttl_seconds=60, keys=keys)
    async with listened_feed(servers[1], keys, protocol) as (feed, received):
        await feed.start_cursor()
        names = ["create_order", "naïve ✓", "漢字 🙂", 'quote " and \\ and \n']
        batch = [
            pending_command(new_id(), f"user-{i}" if i % 2 else None, n)
            for i, n in enumerate(names)
        ]
        applied = await store.apply(batch)
        assert all(isinstance(change, Change) for change in applied)

        async def all_received() -> bool:
            return len(received) >= len(batch)

        await eventually(all_received, "every change from the feed")

    raw = await redis_client.xrange(keys.changes(0))
    by_name = {as_text(entry_id or b""): fields for entry_id, fields in raw or []}
    assert len(received) == len(by_name) == len(batch)
    for entry in received:
        fields = {as_text(k): v for k, v in (by_name[entry.cursor] or {}).items()}
        assert set(fields) == set(STREAM_FIELDS)
        assert entry.snapshot == fields["op"]
        assert entry.operation_id == as_text(fields["id"])
        assert (entry.user_id or "") == as_text(fields["user"])
        assert entry.state == as_text(fields["state"])
        stored = await redis_client.hgetall(keys.record(entry.operation_id))
        # The record's one-letter fields (the message ids seen are binary); the key names its
        # id, the hash holds no copy of it.
        record = {as_text(k): as_text(v) for k, v in stored.items() if k in RECORD_NAMES}
        assert "id" not in record and record["s"] == entry.state
        owner = stored.get(b"u", b"")
        assert isinstance(owner, bytes) and unpack_id(owner) == (entry.user_id or "")
        assert orjson.loads(entry.snapshot)["name"] == record["n"]
