"""Operations' changes over Socket.IO, for :meth:`OperationHandle.changes
<operations.client.handle.OperationHandle.changes>` (docs/socketio.md).

One socket per client, opened when the first iterator starts and closed when the last one ends.
It keeps the last cursor it was given. After a disconnect it connects again, with back-off, a
fresh token and ``since: cursor``, and applies the ``operations_sync`` that comes first. When
there is nothing to recover from (no cursor yet, or the sync says ``recovered: false``), each
watched operation is read again over HTTP. Each watcher gets an operation's records in rising
versions only, so nothing is given twice, and nothing after the terminal one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import socketio

from operations.backoff import Backoff
from operations.client.refusals import RequestRefused
from operations.client.transport import Transport
from operations.errors import OperationNotFound, TokenError
from operations.records import Operation

log = logging.getLogger(__name__)

EVENTS = ("operation_pending", "operation_completed", "operation_rejected")
CONNECT_SECONDS = 10.0
STOP_SECONDS = 5.0


class Watcher:
    """One iteration's view of one operation: its records, in rising versions, to the end."""

    def __init__(self, operation_id: str, may_be_unknown: bool) -> None:
        self.id = operation_id
        self.may_be_unknown = may_be_unknown
        """True for an operation just started: until it is recorded, a 404 means "not yet"."""
        self.version = 0
        self.ended = False
        self._queue: asyncio.Queue[Operation | BaseException] = asyncio.Queue()

    def offer(self, record: Operation) -> None:
        if self.ended or record.version <= self.version:
            return
        self.version, self.ended = record.version, record.state.is_terminal
        self._queue.put_nowait(record)

    def fail(self, error: BaseException) -> None:
        if not self.ended:
            self.ended = True
            self._queue.put_nowait(error)

    async def next(self) -> Operation:
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item


class Stream:
    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.cursor: str | None = None
        """The position in the change feed just after the last change received."""
        self._watchers: dict[str, list[Watcher]] = {}
        self._aliases: dict[str, str] = {}  # the service's spelling of an id -> the caller's
        self._stale: set[str] = set()  # watched operations to read again over HTTP
        self._inbox: asyncio.Queue[tuple[int, str, Any]] = asyncio.Queue()
        self._generation = 0
        self._socket: socketio.AsyncClient | None = None
        self._refused: Any = None
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def watching(self, operation_id: str, may_be_unknown: bool) -> AsyncIterator[Watcher]:
        """A watcher of ``operation_id`` for as long as the block runs."""
        watcher = Watcher(operation_id, may_be_unknown)
        self._watchers.setdefault(operation_id, []).append(watcher)
        self._stale.add(operation_id)
        if self._task is None or self._task.done():  # none yet, or ended by a refused token
            self._closing.clear()
            self._task = asyncio.create_task(self._run(), name="operations-client-stream")
        else:
            self._inbox.put_nowait((self._generation, "refetch", None))
        try:
            yield watcher
        finally:
            watchers = self._watchers[operation_id]
            watchers.remove(watcher)
            if not watchers:
                del self._watchers[operation_id]
            if not self._watchers:
                await self.close()

    async def close(self) -> None:
        """Stops reconnecting and closes the socket; an iteration still open ends with an
        error rather than waiting for ever."""
        task, self._task = self._task, None
        self._closing.set()
        for watchers in self._watchers.values():
            for watcher in watchers:
                watcher.fail(RuntimeError("the OperationsClient was closed"))
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=STOP_SECONDS)
        socket, self._socket = self._socket, None
        if socket is not None and socket.connected:
            await socket.disconnect()

    async def _run(self) -> None:
        backoff = Backoff(0.2, 5.0)
        try:
            while not self._closing.is_set():
                if await self._connect():
                    backoff.reset()
                    await self._pump()
                await backoff.wait(self._closing)
        except Exception as error:  # a refused token that cannot be renewed, or a defect
            log.warning("operations client: following changes failed: %s", error)
            for watchers in self._watchers.values():
                for watcher in watchers:
                    watcher.fail(error)

    async def _connect(self) -> bool:
        """Connects a new socket with a fresh token and ``since``; False if it could not."""
        token = await self.transport.credentials.fresh()
        if token is None:
            raise TokenError("following changes over Socket.IO needs a token")
        self._generation += 1
        socket = self._socket = self._new_socket(self._generation)
        auth = {"token": token}
        since = self.cursor
        if since is not None:
            auth["since"] = since
        self._refused = None
        base = self.transport.base
        try:
            await socket.connect(
                str(base.origin()),
                auth=auth,
                transports=["websocket"],
                socketio_path=f"{base.path.strip('/')}/socket.io".lstrip("/"),
                wait_timeout=int(CONNECT_SECONDS),
            )
        except socketio.exceptions.ConnectionError as error:
            refused = self._refused if isinstance(self._refused, dict) else {}
            if refused.get("code") == "unauthorized" and not self.transport.credentials.renewable:
                raise TokenError("the service refused the token for Socket.IO") from error
            log.info("operations client: cannot connect to Socket.IO yet: %s", error)
            return False
        if since is None:  # nothing to recover from: read what is watched
            self._stale.update(self._watchers)
        return True

    def _new_socket(self, generation: int) -> socketio.AsyncClient:
        socket = socketio.AsyncClient(
            reconnection=False, handle_sigint=False, http_session=self.transport.session
        )

        def put(event: str) -> Any:
            async def handler(data: Any = None, *_: Any) -> None:
                self._inbox.put_nowait((generation, event, data))

            return handler

        for event in (*EVENTS, "operations_sync", "disconnect"):
            socket.on(event, put(event))

        async def refused(data: Any = None, *_: Any) -> None:
            self._refused = data

        socket.on("connect_error", refused)
        return socket

    async def _pump(self) -> None:
        """Hands on what the socket receives, in order, until it disconnects."""
        await self._refetch()
        while True:
            generation, event, data = await self._inbox.get()
            if event == "refetch":
                await self._refetch()
            elif generation != self._generation:
                continue  # left over from an earlier socket
            elif event == "disconnect":
                return
            elif event == "operations_sync" and isinstance(data, dict):
                for item in data.get("operations") or []:
                    self._offer(item)
                if data.get("recovered") is not True:
                    self._stale.update(self._watchers)
                    await self._refetch()
                self._advance(data)
            elif event in EVENTS and isinstance(data, dict):
                self._offer(data)
                self._advance(data)

    def _advance(self, data: dict[str, Any]) -> None:
        cursor = data.get("cursor")
        if isinstance(cursor, str) and cursor:
            self.cursor = cursor

    def _offer(self, item: Any) -> None:
        try:
            record = msgspec.convert(item, Operation)
        except (msgspec.ValidationError, TypeError) as error:
            log.warning("operations client: a pushed record does not fit: %s", error)
            return
        for watcher in self._watchers.get(self._aliases.get(record.id, record.id), []):
            watcher.offer(record)

    async def _refetch(self) -> None:
        """Reads each stale watched operation over HTTP; one that fails stays stale, to be read
        again after the next connect."""
        for operation_id in list(self._stale):
            watchers = self._watchers.get(operation_id, [])
            if not watchers:
                self._stale.discard(operation_id)
                continue
            try:
                record = await self.transport.get(operation_id)
            except OperationNotFound as error:
                self._stale.discard(operation_id)  # not recorded yet: it will come live
                for watcher in watchers:
                    if not watcher.may_be_unknown:
                        watcher.fail(error)
                continue
            except (aiohttp.ClientError, OSError, TimeoutError, RequestRefused) as error:
                log.info("operations client: cannot read %s yet: %s", operation_id, error)
                continue
            self._stale.discard(operation_id)
            self._aliases[record.id] = operation_id
            for watcher in watchers:
                watcher.offer(record)
