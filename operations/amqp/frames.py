"""AMQP frames read in bulk: a drop-in for aiormq's frame receiver, faster on deliveries.

aiormq reads every frame with three awaited reads under a lock, copies it through a ``BytesIO``
and decodes it with pamqp's generic decoder, field by field. A consumer pays that three times per
message: a ``Basic.Deliver``, a content header and a content body.

:class:`BulkFrameReceiver` takes whatever the socket has in one read and cuts every whole frame
out of it without awaiting. Those three frames are decoded by hand into the very pamqp objects
pamqp would build; any other frame, and any of the three that does not decode cleanly, goes to
pamqp, which decodes it or names what is wrong with it. Errors are aiormq's own: a connection lost
mid-frame is an ``AMQPConnectionError``, a bad frame an ``InvalidFrameError``.

:func:`install` makes aiormq use it for every connection the process opens from then on. It only
does so for the aiormq and pamqp versions it was built against; with others the stock receiver
stays.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import struct
from collections import deque
from importlib import metadata
from typing import Any

import aiormq.connection
import pamqp.frame
from aiormq.exceptions import AMQPConnectionError, InvalidFrameError, ProtocolSyntaxError
from pamqp import commands, decode
from pamqp.body import ContentBody
from pamqp.exceptions import PAMQPException
from pamqp.header import ContentHeader

log = logging.getLogger("operations.amqp.frames")

Received = tuple[int, int, Any]
"""(bytes the frame took, channel number, the pamqp frame), as aiormq's receiver yields them."""

READ_SIZE = 256 * 1024
_FRAME_HEADER = struct.Struct(">BHI")
_FRAME_HEADER_SIZE = 7
_FRAME_END = 0xCE
_METHOD, _HEADER, _BODY = 1, 2, 3
_DELIVER = struct.pack(">HH", 60, 60)
_DELIVER_FIXED = struct.Struct(">QB")
_CONTENT_HEADER = struct.Struct(">HHQH")
_SHORTSTR, _TABLE, _OCTET, _TIMESTAMP = range(4)
# Basic.Properties in wire order: the flag bit, the attribute, its type.
_PROPERTIES = (
    (1 << 15, "content_type", _SHORTSTR),
    (1 << 14, "content_encoding", _SHORTSTR),
    (1 << 13, "headers", _TABLE),
    (1 << 12, "delivery_mode", _OCTET),
    (1 << 11, "priority", _OCTET),
    (1 << 10, "correlation_id", _SHORTSTR),
    (1 << 9, "reply_to", _SHORTSTR),
    (1 << 8, "expiration", _SHORTSTR),
    (1 << 7, "message_id", _SHORTSTR),
    (1 << 6, "timestamp", _TIMESTAMP),
    (1 << 5, "message_type", _SHORTSTR),
    (1 << 4, "user_id", _SHORTSTR),
    (1 << 3, "app_id", _SHORTSTR),
    (1 << 2, "cluster_id", _SHORTSTR),
)
# The versions whose receiver interface and frame classes this module was written against.
COMPATIBLE = {"aiormq": "7.", "pamqp": "4."}
STOCK_RECEIVER: type = aiormq.connection.FrameReceiver
"""aiormq's own receiver, as it was when this module was first imported."""


class BulkFrameReceiver:
    """What aiormq's ``FrameReceiver`` is: ``get_frame()`` and an async iterator of frames read
    from ``reader``, in order. It ends when the server closed the connection between frames."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.started = False
        self._unread = b""
        self._ready: deque[Received] = deque()
        self._failure: Exception | None = None  # raised once the frames before it are taken

    def __aiter__(self) -> BulkFrameReceiver:
        return self

    async def __anext__(self) -> Received:
        return await self.get_frame()

    async def get_frame(self) -> Received:
        ready = self._ready
        while not ready:
            if self._failure is not None:
                raise self._failure
            chunk = await self._read()
            if not chunk:
                if self._unread:
                    raise AMQPConnectionError(
                        "Server connection unexpectedly closed. "
                        f"Read {len(self._unread)} bytes of an unfinished frame"
                    )
                raise StopAsyncIteration
            self._cut(self._unread + chunk if self._unread else chunk)
        return ready.popleft()

    async def _read(self) -> bytes:
        try:
            return await self.reader.read(READ_SIZE)
        except ConnectionRefusedError as error:
            raise AMQPConnectionError(f"Server connection refused: {error!r}") from error
        except ConnectionResetError as error:
            raise AMQPConnectionError(f"Server connection reset: {error!r}") from error
        except ConnectionError as error:
            raise AMQPConnectionError(f"Server connection error: {error!r}") from error
        except OSError as error:
            raise AMQPConnectionError(f"Server communication error: {error!r}") from error

    def _cut(self, data: bytes) -> None:
        """Decodes every whole frame in ``data`` and keeps the rest for the next read."""
        offset, size = 0, len(data)
        ready = self._ready
        while size - offset >= _FRAME_HEADER_SIZE:
            if not self.started:
                if data.startswith(b"AMQP", offset):
                    self._failure = ProtocolSyntaxError("Unexpected AMQP protocol header")
                    break
                self.started = True
            frame_type, channel, length = _FRAME_HEADER.unpack_from(data, offset)
            stop = offset + _FRAME_HEADER_SIZE + length + 1
            if stop > size:
                break
            try:
                frame = decode_frame(frame_type, data, offset, stop)
            except (InvalidFrameError, ProtocolSyntaxError) as error:
                self._failure = error
                break
            ready.append((stop - offset, channel, frame))
            offset = stop
        self._unread = data[offset:] if offset else data


def decode_frame(frame_type: int, data: bytes, start: int, stop: int) -> Any:
    """The pamqp frame in ``data[start:stop]``, a whole frame whose type is ``frame_type``."""
    begin, end = start + _FRAME_HEADER_SIZE, stop - 1
    if data[end] == _FRAME_END:
        try:
            if frame_type == _BODY:
                return ContentBody(data[begin:end])
            if frame_type == _HEADER:
                return _content_header(data, begin, end)
            if frame_type == _METHOD and data.startswith(_DELIVER, begin):
                return _deliver(data, begin + len(_DELIVER), end)
        except (ValueError, struct.error, IndexError):
            pass  # pamqp decodes it again below and names the problem
    try:
        return pamqp.frame.unmarshal(data[start:stop])[2]
    except PAMQPException as error:
        raise InvalidFrameError(str(error)) from error


def _shortstr(data: bytes, offset: int) -> tuple[str, int]:
    length = data[offset]
    offset += 1
    return data[offset : offset + length].decode("utf-8"), offset + length


def _deliver(data: bytes, offset: int, end: int) -> commands.Basic.Deliver:
    consumer_tag, offset = _shortstr(data, offset)
    delivery_tag, bits = _DELIVER_FIXED.unpack_from(data, offset)
    exchange, offset = _shortstr(data, offset + _DELIVER_FIXED.size)
    routing_key, offset = _shortstr(data, offset)
    if offset != end:
        raise ValueError("Basic.Deliver arguments do not fill the frame")
    return commands.Basic.Deliver(consumer_tag, delivery_tag, bool(bits & 1), exchange, routing_key)


def _content_header(data: bytes, offset: int, end: int) -> ContentHeader:
    class_id, weight, body_size, flags = _CONTENT_HEADER.unpack_from(data, offset)
    if class_id != commands.Basic.frame_id or flags & 1:
        raise ValueError("not a Basic content header with one flag word")
    offset += _CONTENT_HEADER.size
    properties = commands.Basic.Properties()
    for flag, name, kind in _PROPERTIES:
        if not flags & flag:
            continue
        value: Any
        if kind == _SHORTSTR:
            value, offset = _shortstr(data, offset)
        elif kind == _TABLE:
            consumed, value = decode.field_table(data[offset:end])
            offset += consumed
        elif kind == _OCTET:
            value = data[offset]
            offset += 1
        else:
            value = _timestamp(data[offset : offset + 8])
            offset += 8
        setattr(properties, name, value)
    if offset != end:
        raise ValueError("content header properties do not fill the frame")
    header = ContentHeader(weight, body_size, properties)
    header.class_id = class_id
    return header


@functools.lru_cache(maxsize=64)
def _timestamp(raw: bytes) -> dt.datetime:
    """pamqp's reading of a timestamp, kept for the messages that follow: a busy publisher stamps
    many in the same second."""
    return decode.timestamp(raw)[1]


def compatible() -> bool:
    """Whether the installed aiormq and pamqp are versions this receiver was written for."""
    return all(_version(package).startswith(prefix) for package, prefix in COMPATIBLE.items())


def configure(bulk: bool) -> bool:
    """With ``bulk`` (``OPERATIONS_AMQP_BULK_FRAMES``), :func:`install`; without, says that
    aiormq's own receiver is kept. Returns whether frames are read in bulk from now on."""
    if bulk:
        return install()
    log.info("reading AMQP frames with aiormq's own receiver (OPERATIONS_AMQP_BULK_FRAMES)")
    return False


def install() -> bool:
    """Makes every aiormq connection opened from now on in this process read its frames with
    :class:`BulkFrameReceiver`. Returns whether it does; with versions of aiormq or pamqp other
    than those in :data:`COMPATIBLE`, aiormq's own receiver stays."""
    if aiormq.connection.FrameReceiver is BulkFrameReceiver:  # type: ignore[comparison-overlap]
        return True
    versions = f"aiormq {_version('aiormq')}, pamqp {_version('pamqp')}"
    if not compatible():
        log.info("keeping aiormq's own frame receiver (%s)", versions)
        return False
    aiormq.connection.FrameReceiver = BulkFrameReceiver  # type: ignore[misc,assignment]
    log.info("reading AMQP frames in bulk (%s)", versions)
    return True


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "(not installed)"
