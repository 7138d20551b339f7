"""The bulk frame receiver reads exactly what aiormq's own receiver reads: the same frames from the
same bytes however the socket cuts them, the same errors from the same bad bytes, and over a real
RabbitMQ the same messages, properties and bodies."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import random
import re
import struct
from collections.abc import Iterable, Sequence
from typing import Any

import aio_pika
import aiormq.connection
import pamqp.frame
import pytest
from aiormq.exceptions import AMQPConnectionError, InvalidFrameError, ProtocolSyntaxError
from pamqp import commands, heartbeat
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from operations.amqp import frames
from operations.amqp.frames import BulkFrameReceiver
from operations.service import Service
from operations.settings import Settings

STOCK = frames.STOCK_RECEIVER
SHORTSTR_PROPERTIES = (
    "content_type",
    "content_encoding",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "message_type",
    "user_id",
    "app_id",
)


class Chunks:
    """A stand-in for the socket's StreamReader that hands out the given chunks, one per read,
    then the end of the stream (or ``error``)."""

    def __init__(self, chunks: Iterable[bytes], error: BaseException | None = None) -> None:
        self.chunks = list(chunks)
        self.error = error

    async def read(self, _: int = -1) -> bytes:
        if self.chunks:
            return self.chunks.pop(0)
        if self.error is not None:
            raise self.error
        return b""


def describe(frame: Any) -> Any:
    """A comparable account of a pamqp frame: its class and every attribute."""
    if isinstance(frame, ContentHeader):
        properties = {name: getattr(frame.properties, name) for name in frame.properties.__slots__}
        return ("ContentHeader", frame.class_id, frame.weight, frame.body_size, properties)
    if isinstance(frame, ContentBody):
        return ("ContentBody", frame.value)
    if isinstance(frame, heartbeat.Heartbeat):
        return ("Heartbeat",)
    return (type(frame).__qualname__, {name: getattr(frame, name) for name in frame.__slots__})


def expected(wire: bytes) -> list[Any]:
    """What pamqp makes of each frame in ``wire``, one at a time, as aiormq's receiver does."""
    out, offset = [], 0
    while offset < len(wire):
        used, channel, frame = pamqp.frame.unmarshal(wire[offset:])
        out.append((used, channel, describe(frame)))
        offset += used
    return out


async def bulk_read(chunks: Sequence[bytes]) -> list[Any]:
    receiver = BulkFrameReceiver(Chunks(chunks))  # type: ignore[arg-type]
    return [(used, channel, describe(frame)) async for used, channel, frame in receiver]


async def stock_read(wire: bytes) -> list[Any]:
    reader = asyncio.StreamReader()
    reader.feed_data(wire)
    reader.feed_eof()
    return [(used, channel, describe(frame)) async for used, channel, frame in STOCK(reader)]


def random_properties(rng: random.Random) -> commands.Basic.Properties:
    values: dict[str, Any] = {}
    for name in SHORTSTR_PROPERTIES:
        if rng.random() < 0.5:
            values[name] = rng.choice(["x", "application/json", "ünïcode ✓", "9" * 255])
    if rng.random() < 0.5:
        values["delivery_mode"] = rng.choice([1, 2])
    if rng.random() < 0.5:
        values["priority"] = rng.randrange(0, 256)
    if rng.random() < 0.5:
        values["timestamp"] = rng.choice(
            [
                dt.datetime.fromtimestamp(rng.randrange(0, 2**32), dt.UTC),
                dt.datetime(2026, 11, 22, 23, 59, 59, tzinfo=dt.UTC),  # repeated, as in a burst
                dt.datetime(2200, 1, 1, tzinfo=dt.UTC),  # read back as milliseconds
            ]
        )
    if rng.random() < 0.7:
        table: dict[str, Any] = {
            "message_context": bytearray(b'{"name":"create_order","user":{"id":"u-1"}}'),
            "Saga": rng.choice(["Pending", "Completed", "Rejected"]),
            "text": "ünïcode",
            "number": rng.randrange(-(2**40), 2**40),
            "small": rng.randrange(-100, 100),
            "flag": rng.random() < 0.5,
            "real": 1.5,
            "decimal": decimal.Decimal("3.14"),
            "when": dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC),
            "nested": {"list": [1, "two", {"three": 3}], "empty": {}},
            "nothing": None,
        }
        values["headers"] = {
            key: table[key] for key in rng.sample(sorted(table), rng.randrange(12))
        }
    return commands.Basic.Properties(**values)


def delivery(rng: random.Random, channel: int, tag: int) -> bytes:
    """One delivery as RabbitMQ writes it: Basic.Deliver, content header, body frames."""
    body = rng.choice([b"", b"{}", rng.randbytes(rng.randrange(1, 400)), rng.randbytes(70_000)])
    deliver = commands.Basic.Deliver(
        consumer_tag=rng.choice(["ctag1.0123456789abcdef", "c", "ç" * 50]),
        delivery_tag=tag,
        redelivered=rng.random() < 0.5,
        exchange=rng.choice(["", "orders", "x" * 127]),
        routing_key=rng.choice(["", "create_order", "ünï.routing"]),
    )
    parts = [pamqp.frame.marshal(deliver, channel)]
    header = ContentHeader(0, len(body), random_properties(rng))
    parts.append(pamqp.frame.marshal(header, channel))
    for start in range(0, len(body), 32_000):  # bodies over several frames, as with frame_max
        parts.append(pamqp.frame.marshal(ContentBody(body[start : start + 32_000]), channel))
    return b"".join(parts)


def other_frames() -> bytes:
    """Frames a connection sees besides deliveries, decoded by pamqp in both receivers."""
    return b"".join(
        [
            pamqp.frame.marshal(commands.Basic.Ack(delivery_tag=7, multiple=True), 1),
            pamqp.frame.marshal(commands.Basic.ConsumeOk(consumer_tag="ctag"), 2),
            pamqp.frame.marshal(heartbeat.Heartbeat(), 0),
            pamqp.frame.marshal(commands.Channel.Close(404, "NOT_FOUND - no queue", 50, 10), 3),
            pamqp.frame.marshal(commands.Basic.GetOk(9, False, "orders", "k", 0), 1),
            pamqp.frame.marshal(ContentHeader(0, 0, commands.Basic.Properties()), 1),
            pamqp.frame.marshal(commands.Connection.Blocked("low memory"), 0),
        ]
    )


def cut(wire: bytes, rng: random.Random, pieces: int) -> list[bytes]:
    points = sorted(rng.sample(range(1, len(wire)), min(pieces, len(wire) - 1)))
    return [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True)]


# -- the same frames as pamqp and as aiormq's receiver ----------------------------------------


async def test_deliveries_read_as_pamqp_reads_them_however_the_socket_cuts_them() -> None:
    rng = random.Random(20261122)
    wire = b"".join(delivery(rng, rng.choice([1, 2, 65535]), tag) for tag in range(1, 301))
    wire += other_frames()
    reference = expected(wire)
    assert len(reference) > 900
    assert await stock_read(wire) == reference
    assert await bulk_read([wire]) == reference
    for pieces in (2, 50, 3_000):
        assert await bulk_read(cut(wire, rng, pieces)) == reference


async def test_every_cut_of_a_small_delivery_reads_the_same() -> None:
    rng = random.Random(7)
    wire = delivery(rng, 1, 1) + pamqp.frame.marshal(heartbeat.Heartbeat(), 0)
    reference = expected(wire)
    for point in range(1, len(wire)):
        assert await bulk_read([wire[:point], wire[point:]]) == reference
    assert await bulk_read([wire[i : i + 1] for i in range(len(wire))]) == reference


async def test_properties_and_headers_of_every_kind_read_as_pamqp_reads_them() -> None:
    rng = random.Random(1)
    for tag in range(1, 2_001):
        properties = random_properties(rng)
        wire = pamqp.frame.marshal(ContentHeader(0, tag, properties), 1)
        read = await bulk_read([wire])
        assert read == expected(wire)
        if properties.timestamp is None or properties.timestamp.year < 2106:  # else: as ms
            assert read[0][2][4] == describe(ContentHeader(0, 0, properties))[4]


# -- the same errors ---------------------------------------------------------------------------


def frame(frame_type: int, payload: bytes, end: bytes = b"\xce") -> bytes:
    return struct.pack(">BHI", frame_type, 1, len(payload)) + payload + end


DELIVER_ID = struct.pack(">HH", 60, 60)
GOOD_DELIVER = DELIVER_ID + b"\x01c" + struct.pack(">QB", 5, 0) + b"\x01x\x01k"
GOOD_HEADER = struct.pack(">HHQH", 60, 0, 2, 0x0400) + b"\x02id"
BAD_FRAMES = {
    "frame end byte": frame(1, GOOD_DELIVER, end=b"\x00"),
    "deliver cut short": frame(1, GOOD_DELIVER[:-3]),
    "deliver with bytes left over": frame(1, GOOD_DELIVER + b"\x00\x00"),
    "deliver not UTF-8": frame(1, DELIVER_ID + b"\x01\xff" + struct.pack(">QB", 5, 0) + b"\0\0"),
    "unknown method": frame(1, struct.pack(">HH", 60, 99)),
    "header cut short": frame(2, GOOD_HEADER[:-1]),
    "header of another class": frame(2, struct.pack(">HHQH", 50, 0, 2, 0)),
    "header with a second flag word": frame(2, struct.pack(">HHQHH", 60, 0, 2, 1, 0)),
    "header property not UTF-8": frame(2, struct.pack(">HHQH", 60, 0, 2, 0x0400) + b"\x01\xff"),
    "table longer than the frame": frame(2, struct.pack(">HHQHI", 60, 0, 2, 0x2000, 99)),
    "unknown frame type": frame(9, b"abc"),
}


FAILING = {
    "frame end byte",
    "deliver cut short",
    "deliver not UTF-8",
    "unknown method",
    "header property not UTF-8",
    "table longer than the frame",
    "unknown frame type",
}


async def outcome(read: Any) -> Any:
    try:
        return ("frames", await read)
    except Exception as error:  # the error is what is compared
        return (type(error), re.sub(r" at 0x[0-9a-f]+", "", str(error)))


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
async def test_a_bad_frame_fails_as_with_aiormqs_own_receiver(case: str) -> None:
    wire = frame(1, GOOD_DELIVER) + frame(2, GOOD_HEADER) + BAD_FRAMES[case]
    stock = await outcome(stock_read(wire))
    bulk = await outcome(bulk_read([wire]))
    assert bulk == stock
    # pamqp is lenient with some (a short string cut by the frame's end is read short, say):
    # the bulk receiver must be exactly as lenient, and no more.
    assert stock[0] is (InvalidFrameError if case in FAILING else "frames")
    if case in FAILING:  # and the good frames before a bad one are handed out first
        receiver = BulkFrameReceiver(Chunks([wire]))  # type: ignore[arg-type]
        assert describe((await receiver.get_frame())[2])[0] == "Basic.Deliver"
        assert describe((await receiver.get_frame())[2])[0] == "ContentHeader"
        with pytest.raises(InvalidFrameError):
            await receiver.get_frame()


async def test_the_end_of_the_stream_between_frames_ends_the_frames() -> None:
    wire = frame(1, GOOD_DELIVER) + frame(2, GOOD_HEADER)
    assert len(await bulk_read([wire[:10], wire[10:]])) == 2


async def test_the_end_of_the_stream_inside_a_frame_is_a_lost_connection() -> None:
    wire = frame(1, GOOD_DELIVER) + frame(2, GOOD_HEADER)
    for point in (len(wire) - 1, len(wire) - 8, 3):
        with pytest.raises(AMQPConnectionError, match="unexpectedly closed"):
            await bulk_read([wire[:point]])
    with pytest.raises(AMQPConnectionError):
        await stock_read(wire[:-1])


async def test_a_protocol_header_in_reply_is_refused_as_aiormq_refuses_it() -> None:
    reply = b"AMQP\x00\x00\x09\x01"
    with pytest.raises(ProtocolSyntaxError):
        await bulk_read([reply])
    with pytest.raises(ProtocolSyntaxError):
        await stock_read(reply)


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (ConnectionResetError(104, "reset"), "reset"),
        (ConnectionRefusedError(111, "refused"), "refused"),
        (BrokenPipeError(32, "pipe"), "error"),
        (OSError(5, "io"), "communication error"),
    ],
)
async def test_socket_errors_are_aiormq_connection_errors(error: OSError, words: str) -> None:
    receiver = BulkFrameReceiver(Chunks([frame(1, GOOD_DELIVER)], error))  # type: ignore[arg-type]
    assert describe((await receiver.get_frame())[2])[0] == "Basic.Deliver"
    with pytest.raises(AMQPConnectionError, match=words):
        await receiver.get_frame()


# -- installing it ------------------------------------------------------------------------------


def test_install_replaces_aiormqs_receiver_for_compatible_versions(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(aiormq.connection, "FrameReceiver", STOCK)
    caplog.set_level("INFO", logger="operations.amqp.frames")
    assert frames.compatible()
    assert frames.install() is True
    installed: type = aiormq.connection.FrameReceiver
    assert installed is BulkFrameReceiver
    assert frames.install() is True  # again: no change, and said once
    said = [record.getMessage() for record in caplog.records]
    assert len(said) == 1 and said[0].startswith("reading AMQP frames in bulk (aiormq 7.")


def test_install_keeps_aiormqs_receiver_for_other_versions(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(aiormq.connection, "FrameReceiver", STOCK)
    monkeypatch.setitem(frames.COMPATIBLE, "aiormq", "8.")
    caplog.set_level("INFO", logger="operations.amqp.frames")
    assert frames.compatible() is False
    assert frames.install() is False
    assert aiormq.connection.FrameReceiver is STOCK
    assert "keeping aiormq's own frame receiver" in caplog.text


def test_the_service_installs_it_unless_told_not_to(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(aiormq.connection, "FrameReceiver", STOCK)
    caplog.set_level("INFO")
    Service(Settings.from_env({"OPERATIONS_AMQP_BULK_FRAMES": "false"}))
    assert aiormq.connection.FrameReceiver is STOCK
    assert "reading AMQP frames with aiormq's own receiver" in caplog.text
    Service(settings)
    installed: type = aiormq.connection.FrameReceiver
    assert installed is BulkFrameReceiver
    assert "reading AMQP frames in bulk" in caplog.text


# -- over a real RabbitMQ -----------------------------------------------------------------------


async def test_a_real_broker_delivers_the_same_messages_through_either_receiver(
    monkeypatch: pytest.MonkeyPatch, amqp_url: str, settings: Settings
) -> None:
    """The same messages, with every property and header kind and bodies from empty to several
    frames long, consumed over one connection with each receiver."""
    rng = random.Random(5)
    queue = f"{settings.queue}-frames"
    sent = []
    for index in range(120):
        properties = random_properties(rng)
        body = rng.choice([b"", b"{}", rng.randbytes(500), rng.randbytes(300_000)])
        sent.append(
            aio_pika.Message(
                body,
                headers=properties.headers,
                content_type=properties.content_type,
                content_encoding=properties.content_encoding,
                correlation_id=properties.correlation_id,
                message_id=f"m-{index}",
                timestamp=properties.timestamp,
                type=properties.message_type,
                app_id=properties.app_id,
                priority=properties.priority,
            )
        )
    read: dict[str, list[tuple[Any, ...]]] = {}
    for name, receiver in (("stock", STOCK), ("bulk", BulkFrameReceiver)):
        monkeypatch.setattr(aiormq.connection, "FrameReceiver", receiver)
        connection = await aio_pika.connect(amqp_url)
        try:
            channel = await connection.channel()
            target = await channel.declare_queue(f"{queue}-{name}", auto_delete=True)
            for message in sent:
                await channel.default_exchange.publish(message, routing_key=target.name)
            read[name] = []
            async with target.iterator() as messages:
                async for incoming in messages:
                    await incoming.ack()
                    read[name].append(
                        (
                            incoming.body,
                            incoming.headers,
                            incoming.content_type,
                            incoming.content_encoding,
                            incoming.correlation_id,
                            incoming.message_id,
                            incoming.timestamp,
                            incoming.type,
                            incoming.app_id,
                            incoming.priority,
                            incoming.exchange,
                            incoming.routing_key == target.name,
                        )
                    )
                    if len(read[name]) == len(sent):
                        break
        finally:
            await connection.close()
    assert [entry[5] for entry in read["bulk"]] == [f"m-{index}" for index in range(len(sent))]
    assert read["bulk"] == read["stock"]
    assert sum(len(entry[0]) for entry in read["bulk"]) > 5_000_000  # many multi-frame bodies


@pytest.mark.slow
async def test_a_bulk_reading_connection_lives_through_heartbeats_and_a_closed_channel(
    monkeypatch: pytest.MonkeyPatch, amqp_url: str, settings: Settings
) -> None:
    """Frames on channel 0 and a channel the broker closes: the connection reads on."""
    monkeypatch.setattr(aiormq.connection, "FrameReceiver", BulkFrameReceiver)
    connection = await aio_pika.connect(f"{amqp_url}?heartbeat=1")
    try:
        underlay = connection.transport.connection if connection.transport else None
        assert isinstance(underlay, aiormq.Connection) and underlay.heartbeat_timeout == 1
        # Past aiormq's grace (6 s at heartbeat=1) with no frame but heartbeats: a reader that
        # lost them would have the connection closed as stuck.
        await asyncio.sleep(8)
        assert not connection.is_closed
        broken = await connection.channel()
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            await broken.declare_queue(f"{settings.queue}-absent", passive=True)
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{settings.queue}-alive", auto_delete=True)
        await channel.default_exchange.publish(aio_pika.Message(b"still here"), queue.name)
        incoming = await queue.get(timeout=5)
        assert incoming is not None and incoming.body == b"still here"
        await incoming.ack()
    finally:
        await connection.close()
