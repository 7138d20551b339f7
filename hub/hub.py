"""The Socket.IO hub: authenticated clients in per-user rooms (admins also in the ops room), fed
in stream order by one pusher task.

Every process tails the same change stream, so each emits every applied change to its own
clients: a change consumed by any process reaches a user wherever the user is connected, and in
the order it was applied. Joins are handled by the same pusher task, between two emits: a
reconnecting client's ``operations_sync`` covers the stream exactly up to the point from which it
receives live events, so nothing is lost or doubled in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import socketio
from engineio.packet import MESSAGE as EIO_MESSAGE
from engineio.packet import Packet as EngineIOPacket
from redis.exceptions import RedisError

from operations.errors import TokenError
from operations.feed import ChangeFeed, FeedEntry
from operations.identity import Principal
from operations.metrics import Registry
from operations.tokens import TokenVerifier, Verified

from . import events
from .recovery import Sync, changes_since, is_ahead, parse_cursor
from .rooms import OPS, rooms_for, user_room

log = logging.getLogger("hub")

INITIALIZE_TIMEOUT_SECONDS = 10.0
CATCH_UP_SECONDS = 5.0
UNAUTHORIZED = {"code": "unauthorized"}

Action = Callable[[str], Coroutine[Any, Any, None]]
"""What a client's timer does when it fires, given the client's sid."""


def _cors(origins: tuple[str, ...]) -> list[str] | str | None:
    if not origins:
        return None
    return "*" if "*" in origins else list(origins)


@dataclass
class Client:
    since: str | None = None
    principal: Principal | None = None
    timers: list[asyncio.TimerHandle] = field(default_factory=list)

    def cancel_timers(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()


@dataclass(frozen=True)
class Join:
    sid: str
    principal: Principal
    since: str | None


class Hub:
    def __init__(
        self,
        verifier: TokenVerifier,
        feed: ChangeFeed,
        redis: aioredis.Redis,
        metrics: Registry,
        initialize_timeout: float = INITIALIZE_TIMEOUT_SECONDS,
        allowed_origins: tuple[str, ...] = (),
    ) -> None:
        self.verifier = verifier
        self.feed = feed
        self.redis = redis
        self.metrics = metrics
        self.initialize_timeout = initialize_timeout
        self.server = socketio.AsyncServer(
            async_mode="asgi",
            json=events.OrjsonModule,
            # No origins configured: only the service's own origin (engine.io's same-origin check).
            cors_allowed_origins=_cors(allowed_origins),
            logger=False,
            engineio_logger=False,
        )
        self.server.on("connect", self._connect)
        self.server.on("disconnect", self._disconnect)
        self.server.on(events.INITIALIZE, self._initialize)
        self._clients: dict[str, Client] = {}
        self._jobs: asyncio.Queue[list[FeedEntry] | Join] = asyncio.Queue()
        self._position: str | None = None  # the stream position of the last emitted change
        # Joins whose cursor is ahead of this process (another process pushed it further):
        # each waits, with its deadline, until this process has pushed as far.
        self._waiting: list[tuple[Join, float]] = []
        self._pusher: asyncio.Task[None] | None = None
        # The timers' actions while they run: kept so that none is collected half-way, and
        # cancelled on stop.
        self._actions: set[asyncio.Task[None]] = set()

    def asgi(self, other: Any) -> socketio.ASGIApp:
        return socketio.ASGIApp(self.server, other_asgi_app=other, socketio_path="socket.io")

    @property
    def connected(self) -> int:
        return len(self._clients)

    async def start(self) -> None:
        self.feed.subscribe(self._jobs.put_nowait)
        self._pusher = asyncio.create_task(self._push(), name="hub-pusher")

    async def stop(self) -> None:
        if self._pusher is not None:
            self._pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pusher
        for client in self._clients.values():
            client.cancel_timers()
        for task in self._actions:
            task.cancel()
        await asyncio.gather(*self._actions, return_exceptions=True)

    # -- connection life cycle ------------------------------------------------------------

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        auth = auth if isinstance(auth, dict) else {}
        since = auth.get("since")
        client = Client(since=since if isinstance(since, str) else None)
        token = auth.get("token")
        if token is None:
            # A Pacco-style client: it has a while to send its token with `initialize`.
            self._clients[sid] = client
            self._later(client, self.initialize_timeout, self._initialize_expired, sid)
            self._count_sockets()
            return True
        verified = await self._verify(token)
        if verified is None:
            self.metrics.socket_refusals.inc(reason="unauthorized")
            raise socketio.exceptions.ConnectionRefusedError("unauthorized", UNAUTHORIZED)
        self._clients[sid] = client
        self._count_sockets()
        self._admit(sid, client, verified)
        return True

    async def _initialize(self, sid: str, data: Any = None) -> None:
        client = self._clients.get(sid)
        if client is None or client.principal is not None:
            return
        token = data.get("token") if isinstance(data, dict) else data
        verified = await self._verify(token)
        if self._clients.get(sid) is not client or client.principal is not None:
            return  # gone, or admitted by another initialize, while the key was looked up
        client.cancel_timers()
        if verified is None:
            self.metrics.socket_refusals.inc(reason="unauthorized")
            await self.server.emit(events.DISCONNECTED, UNAUTHORIZED, to=sid)
            await self.server.disconnect(sid)
            return
        await self.server.emit(events.CONNECTED, {"userId": verified.principal.user_id}, to=sid)
        self._admit(sid, client, verified)

    async def _disconnect(self, sid: str, *_: Any) -> None:
        client = self._clients.pop(sid, None)
        if client is not None:
            client.cancel_timers()
        self._count_sockets()

    async def _verify(self, token: Any) -> Verified | None:
        try:
            return await self.verifier.verify(token)
        except TokenError:
            return None

    def _admit(self, sid: str, client: Client, verified: Verified) -> None:
        client.principal = verified.principal
        self._later(client, verified.expires_at - time.time(), self._token_expired, sid)
        self._jobs.put_nowait(Join(sid, verified.principal, client.since))

    def _later(self, client: Client, delay: float, action: Action, sid: str) -> None:
        loop = asyncio.get_running_loop()
        client.timers.append(loop.call_later(max(delay, 0.0), self._run, action, sid))

    def _run(self, action: Action, sid: str) -> None:
        task = asyncio.create_task(action(sid), name=f"hub{action.__name__}")
        self._actions.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._actions.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("%s failed", task.get_name(), exc_info=error)

    @property
    def actions(self) -> int:
        """Timer actions running now (a disconnect at the end of a client's time)."""
        return len(self._actions)

    async def _initialize_expired(self, sid: str) -> None:
        client = self._clients.get(sid)
        if client is not None and client.principal is None:
            await self.server.emit(events.DISCONNECTED, {"code": "initialize_timeout"}, to=sid)
            await self.server.disconnect(sid)

    async def _token_expired(self, sid: str) -> None:
        if sid in self._clients:
            await self.server.emit(events.DISCONNECTED, {"code": "token_expired"}, to=sid)
            await self.server.disconnect(sid)

    def _later_wake(self, delay: float) -> None:
        """Makes the pusher look at waiting joins again even if no change arrives meanwhile."""
        asyncio.get_running_loop().call_later(delay + 0.05, self._jobs.put_nowait, [])

    def _count_sockets(self) -> None:
        self.metrics.sockets.set(len(self._clients))

    # -- the pusher: live changes and joins, one at a time, in stream order ---------------

    async def _push(self) -> None:
        self._position = await self.feed.start_cursor()
        while True:
            job = await self._jobs.get()
            try:
                if isinstance(job, Join):
                    await self._join(job)
                else:
                    await self._emit(job)
                if self._waiting:
                    await self._retry_waiting()
            except Exception:
                log.exception("push failed")

    async def _emit(self, entries: list[FeedEntry]) -> None:
        """Each change's packet is encoded once and queued to every recipient's socket in
        stream order; the sockets' own writers send them."""
        manager = self.server.manager
        send = self.server.eio.send_packet
        packets = 0
        for entry in entries:
            recipients = list(manager.get_participants("/", rooms_for(entry.user_id)))
            if recipients:
                packet = EngineIOPacket(EIO_MESSAGE, data=events.encoded(entry))
                for _, eio_sid in recipients:
                    await send(eio_sid, packet)
                packets += len(recipients)
            self._position = entry.cursor
        self.metrics.pushes.inc(len(entries))
        self.metrics.push_packets.inc(packets)

    async def _retry_waiting(self) -> None:
        waiting, self._waiting = self._waiting, []
        for join, deadline in waiting:
            await self._join(join, deadline)

    async def _join(self, join: Join, deadline: float | None = None) -> None:
        if not self.server.manager.is_connected(join.sid, "/"):
            return
        if join.since is not None:
            assert self._position is not None
            shards = len(self.feed.keys.shards)
            since, here = parse_cursor(join.since, shards), parse_cursor(self._position, shards)
            if since is not None and here is not None and is_ahead(since, here):
                now = time.monotonic()
                if deadline is None or now < deadline:
                    self._waiting.append((join, deadline or now + CATCH_UP_SECONDS))
                    if deadline is None:
                        self._later_wake(CATCH_UP_SECONDS)
                    return
            try:
                sync = await changes_since(
                    self.redis, self.feed.keys.streams, join.since, self._position, join.principal
                )
            except RedisError as error:
                log.warning("recovery read failed, asking the client to refetch: %s", error)
                sync = Sync([], join.since, False)
            await self.server.emit(events.SYNC, sync.to_json(), to=join.sid)
            self.metrics.syncs.inc(recovered=str(sync.recovered).lower())
        await self.server.enter_room(join.sid, user_room(join.principal.user_id))
        if join.principal.is_admin:
            await self.server.enter_room(join.sid, OPS)
