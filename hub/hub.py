"""The Socket.IO hub: authenticated clients in per-user rooms (admins also in the ops room), fed
in stream order by one pusher task. Every process tails the same change stream, so a change
consumed by any process reaches a user wherever the user is connected, in the order it was
applied. Joins are handled by the same pusher task, between two emits; a reconnecting client's
``operations_sync`` is read off the pusher (see :mod:`hub.recovering`) and covers the stream
exactly up to where its live events start: nothing lost or doubled, no pushes held up. Each
engine.io connection has the initialize timeout to bring a valid token; a user has at most
``max_sockets_per_user`` sockets on a process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import socketio
from engineio.packet import MESSAGE as EIO_MESSAGE
from engineio.packet import Packet as EngineIOPacket

from hub import events, partings
from hub.admission import Client, Deadlines, SocketsPerUser
from hub.membership import IndexedRooms
from hub.outlets import Outlets
from hub.recovering import RECOVERY_READS, Join, Recovered, Recoveries, Recovery
from hub.recovery import changes_since
from hub.rooms import OPS, rooms_for, user_room
from operations.auth.identity import Principal
from operations.auth.tokens import TokenVerifier, Verified
from operations.errors import StoreUnavailable, TokenError
from operations.feed import ChangeFeed, FeedEntry
from operations.metrics import Registry
from operations.tasks import BackgroundTasks

log = logging.getLogger("hub")

INITIALIZE_TIMEOUT_SECONDS = 10.0
CATCH_UP_SECONDS = 5.0
MAX_SOCKETS_PER_USER = 20
RECOVERY_MAX_ENTRIES = 10_000
UNAUTHORIZED = {"code": "unauthorized"}
TOO_MANY_SOCKETS = {"code": "too_many_sockets"}

Action = Callable[[str], Coroutine[Any, Any, None]]
"""What a client's timer does when it fires, given the client's sid."""


def _cors(origins: tuple[str, ...]) -> list[str] | str | None:
    if not origins:
        return None
    return "*" if "*" in origins else list(origins)


class Hub:
    def __init__(
        self,
        verifier: TokenVerifier,
        feed: ChangeFeed,
        metrics: Registry,
        initialize_timeout: float = INITIALIZE_TIMEOUT_SECONDS,
        allowed_origins: tuple[str, ...] = (),
        max_sockets_per_user: int = MAX_SOCKETS_PER_USER,
        recovery_max_entries: int = RECOVERY_MAX_ENTRIES,
    ) -> None:
        self.verifier = verifier
        self.feed = feed
        self.metrics = metrics
        self.initialize_timeout = initialize_timeout
        self.recovery_max_entries = recovery_max_entries
        self.server = socketio.AsyncServer(
            client_manager=IndexedRooms(),
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
        self._deadlines = Deadlines(lambda eio_sid: self._run(self._initialize_expired, eio_sid))
        self._per_user = SocketsPerUser(max_sockets_per_user)
        partings.install(self.server.eio)
        self._opened = self.server.eio.handlers["connect"]
        self._closed = self.server.eio.handlers["disconnect"]
        self.server.eio.on("connect", self._eio_connect)
        self.server.eio.on("disconnect", self._eio_disconnect)
        self._clients: dict[str, Client] = {}
        self._jobs: asyncio.Queue[list[FeedEntry] | Join | Recovered] = asyncio.Queue()
        self._recoveries = Recoveries()
        self._reads = asyncio.Semaphore(RECOVERY_READS)
        # The pusher and the recoveries' reads (each held until done, even once its client has
        # left); the timers' actions apart, to count them.
        self._tasks = BackgroundTasks(metrics, log)
        self._outlets = Outlets(self.server.eio.sockets, self._tasks)
        self._position: str | None = None  # the stream position of the last emitted change
        # Joins whose cursor is ahead of this process (another process pushed it further):
        # each waits, with its deadline, until this process has pushed as far.
        self._waiting: list[tuple[Join, float]] = []
        self._pusher: asyncio.Task[None] | None = None
        self._actions = BackgroundTasks(metrics, log)

    def asgi(self, other: Any) -> socketio.ASGIApp:
        return socketio.ASGIApp(self.server, other_asgi_app=other, socketio_path="socket.io")

    async def tell_ops(self, event: str, payload: dict[str, Any]) -> None:
        """An event for the admins connected here (the ops room), e.g. an overdue saga."""
        await self.server.emit(event, payload, room=OPS)

    @property
    def connected(self) -> int:
        return len(self._clients)

    async def start(self) -> None:
        self.feed.subscribe(self._jobs.put_nowait)
        self._pusher = self._tasks.start("hub-pusher", self._push())

    async def stop(self) -> None:
        await self._tasks.cancel(self._pusher)
        for client in self._clients.values():
            client.cancel_timers()
        self._deadlines.cancel()
        await self._tasks.stop()
        await self._actions.stop()

    def close_connections(self) -> None:
        """Closes every connection as the service begins to stop, at the engine.io level: a
        client sees its transport close, reconnects (to another process, or to this one once
        it is back) and recovers from its cursor. A Socket.IO disconnect would tell it not to
        reconnect, and an engine.io long-poll left open would hold the stop for its ping
        interval."""
        for eio_sid in list(self.server.eio.sockets):
            self._run(self._close, eio_sid)

    # -- connection life cycle ------------------------------------------------------------

    async def _eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> Any:
        """An engine.io connection opens: it has the initialize timeout to be admitted."""
        self._deadlines.opened(eio_sid, self.initialize_timeout)
        self._outlets.opened(eio_sid, environ)
        self._count_sockets()
        # engine.io keeps the opening request's environ as long as the connection lasts. Its
        # body reader is never read again (a long-poll's later POSTs each bring their own).
        environ.pop("wsgi.input", None)
        return await self._opened(eio_sid, environ)

    async def _eio_disconnect(self, eio_sid: str, *args: Any) -> Any:
        self._deadlines.closed(eio_sid)
        self._outlets.closed(eio_sid)
        self._count_sockets()
        return await self._closed(eio_sid, *args)

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        auth = auth if isinstance(auth, dict) else {}
        since = auth.get("since")
        client = Client(since=since if isinstance(since, str) else None)
        token = auth.get("token")
        if token is None:
            # A Pacco-style client: it has until its connection's deadline to send `initialize`.
            self._clients[sid] = client
            self._count_sockets()
            return True
        verified = await self._verify(token)
        if not self._deadlines.is_open(self.server.manager.eio_sid_from_sid(sid, "/")):
            return False  # the connection closed while the token was checked
        if verified is None:
            self.metrics.socket_refusals.inc(reason="unauthorized")
            raise socketio.exceptions.ConnectionRefusedError("unauthorized", UNAUTHORIZED)
        if not self._per_user.has_room(verified.principal.user_id):
            self.metrics.socket_refusals.inc(reason="too_many_sockets")
            raise socketio.exceptions.ConnectionRefusedError("too_many_sockets", TOO_MANY_SOCKETS)
        self._clients[sid] = client
        self._take(sid, client, verified)
        self._jobs.put_nowait(Join(sid, verified.principal, client.since))
        return True

    async def _initialize(self, sid: str, data: Any = None) -> None:
        client = self._clients.get(sid)
        if client is None or client.principal is not None:
            return
        token = data.get("token") if isinstance(data, dict) else data
        verified = await self._verify(token)
        if self._clients.get(sid) is not client or client.principal is not None:
            return  # gone, or admitted by another initialize, while the key was looked up
        if verified is None or not self._per_user.has_room(verified.principal.user_id):
            refusal = UNAUTHORIZED if verified is None else TOO_MANY_SOCKETS
            self.metrics.socket_refusals.inc(reason=refusal["code"])
            await self.server.emit(events.DISCONNECTED, refusal, to=sid)
            await self.server.disconnect(sid)
            return
        self._take(sid, client, verified)  # before the emit: its socket counts from now on
        await self.server.emit(events.CONNECTED, {"userId": verified.principal.user_id}, to=sid)
        if self._clients.get(sid) is client:
            self._jobs.put_nowait(Join(sid, verified.principal, client.since))

    async def _disconnect(self, sid: str, *_: Any) -> None:
        client = self._clients.pop(sid, None)
        if client is not None:
            client.cancel_timers()
            if client.principal is not None:
                self._per_user.remove(client.principal.user_id)
        recovery = self._recoveries.end(sid)
        if recovery is not None:
            if recovery.task is not None:
                recovery.task.cancel()
            self.metrics.recoveries.set(len(self._recoveries))
        # Left the namespace (or was put out of it) but kept the connection open: a deadline again.
        eio_sid = self.server.manager.eio_sid_from_sid(sid, "/")
        self._deadlines.expect(eio_sid, self.initialize_timeout)
        self._count_sockets()

    async def _verify(self, token: Any) -> Verified | None:
        try:
            return await self.verifier.verify(token)
        except TokenError:
            return None

    def _take(self, sid: str, client: Client, verified: Verified) -> None:
        """Admits a client: its user's socket, its token's expiry; no deadline any more."""
        client.principal = verified.principal
        self._per_user.add(verified.principal.user_id)
        self._later(client, verified.expires_at - time.time(), self._token_expired, sid)
        self._deadlines.admitted(self.server.manager.eio_sid_from_sid(sid, "/"))
        self._count_sockets()

    def _later(self, client: Client, delay: float, action: Action, sid: str) -> None:
        loop = asyncio.get_running_loop()
        client.timers.append(loop.call_later(max(delay, 0.0), self._run, action, sid))

    def _run(self, action: Action, sid: str) -> None:
        self._actions.start(f"hub{action.__name__}", action(sid))

    @property
    def actions(self) -> int:
        """Timer actions running now (a disconnect at the end of a client's time)."""
        return len(self._actions)

    async def _initialize_expired(self, eio_sid: str) -> None:
        """The connection's deadline passed before it was admitted: a Pacco-style client hears
        why; then the connection is closed, whatever was (or was not) said on it."""
        if not self._deadlines.passed(eio_sid):
            return
        self._count_sockets()
        self.metrics.socket_refusals.inc(reason="initialize_timeout")
        sid = self.server.manager.sid_from_eio_sid(eio_sid, "/")
        client = self._clients.get(sid) if sid is not None else None
        if client is not None and client.principal is None:
            await self.server.emit(events.DISCONNECTED, {"code": "initialize_timeout"}, to=sid)
            await self.server.disconnect(sid)
        await self._close(eio_sid)

    async def _close(self, eio_sid: str) -> None:
        """Closes a connection and its WebSocket now. engine.io's close only sends its close
        packet and leaves the WebSocket to the client, which a hostile one keeps open until the
        ping timeout (45 s): the WebSocket is closed once the close packet is written."""
        socket = self.server.eio.sockets.get(eio_sid)
        outlet = self._outlets.get(eio_sid)
        await partings.disconnect(self.server.eio, eio_sid)
        if outlet is not None:
            outlet.shut()
            return
        queue = getattr(socket, "queue", None)
        if getattr(socket, "upgraded", False) and queue is not None:
            queue.put_nowait(None)  # the writer stops, and closes the WebSocket

    async def _token_expired(self, sid: str) -> None:
        if sid in self._clients:
            await self.server.emit(events.DISCONNECTED, {"code": "token_expired"}, to=sid)
            await self.server.disconnect(sid)

    def _later_wake(self, delay: float) -> None:
        """Makes the pusher look at waiting joins again even if no change arrives meanwhile."""
        asyncio.get_running_loop().call_later(delay + 0.05, self._jobs.put_nowait, [])

    def _count_sockets(self) -> None:
        self.metrics.sockets.set(len(self._clients))
        self.metrics.sockets_unadmitted.set(len(self._deadlines))

    # -- the pusher: live changes and joins, one at a time, in stream order ---------------

    async def _push(self) -> None:
        self._position = await self.feed.start_cursor()
        while True:
            job = await self._jobs.get()
            try:
                if isinstance(job, Join):
                    await self._join(job)
                elif isinstance(job, Recovered):
                    await self._recovered(job)
                else:
                    await self._emit(job)
                if self._waiting:
                    await self._retry_waiting()
            except Exception:
                log.exception("push failed")

    async def _emit(self, entries: list[FeedEntry]) -> None:
        """Each change's packet is encoded once and sent to every recipient in stream order
        (straight to its connection where it can be, see :mod:`hub.outlets`). Recovering
        clients have it held."""
        manager = self.server.manager
        recovering = self._recoveries
        batch = self._outlets.batch()
        for entry in entries:
            recipients = manager.get_participants("/", rooms_for(entry.user_id))
            batch.add([eio_sid for _, eio_sid in recipients], events.encoded(entry))
            if recovering:
                recovering.hold(entry)
            self._position = entry.cursor
        await batch.send(self.server.eio.send_packet)
        self.metrics.pushes.inc(len(entries))
        self.metrics.push_packets.inc(batch.packets)
        self.metrics.push_writes.inc(batch.written)

    async def _retry_waiting(self) -> None:
        waiting, self._waiting = self._waiting, []
        for join, deadline in waiting:
            await self._join(join, deadline)

    async def _join(self, join: Join, deadline: float | None = None) -> None:
        if not self.server.manager.is_connected(join.sid, "/"):
            return
        if join.since is None:
            await self._enter_rooms(join.sid, join.principal)
            return
        assert self._position is not None
        if self.feed.ahead(join.since, self._position):
            now = time.monotonic()
            if deadline is None or now < deadline:
                self._waiting.append((join, deadline or now + CATCH_UP_SECONDS))
                if deadline is None:
                    self._later_wake(CATCH_UP_SECONDS)
                return
        recovery = Recovery(join.sid, join.principal, join.since, self._position)
        self._recoveries.begin(recovery)
        self.metrics.recoveries.set(len(self._recoveries))
        recovery.task = self._tasks.start("hub-recovery", self._read(recovery))

    async def _read(self, recovery: Recovery) -> None:
        """Reads a recovery's sync, off the pusher, then hands it back to the pusher."""
        sync = None
        try:
            async with self._reads:
                if self._recoveries.current(recovery) and not recovery.overflowed:
                    sync = await changes_since(
                        self.feed,
                        recovery.since,
                        recovery.until,
                        recovery.principal,
                        self.recovery_max_entries,
                    )
                    self.metrics.recovery_entries.inc(sync.scanned)
        except StoreUnavailable as error:
            log.warning("recovery read failed, asking the client to refetch: %s", error)
        except Exception:
            log.exception("recovery read failed, asking the client to refetch")
        self._jobs.put_nowait(Recovered(recovery, sync))

    async def _recovered(self, done: Recovered) -> None:
        """Back on the pusher: the sync, the changes held since its position, then the rooms,
        with nothing in between; or ``recovered: false`` from here on."""
        recovery, sync = done.recovery, done.sync
        if not self._recoveries.current(recovery):
            return  # the client left meanwhile
        self._recoveries.end(recovery.sid)
        self.metrics.recoveries.set(len(self._recoveries))
        if not self.server.manager.is_connected(recovery.sid, "/"):
            return
        held = recovery.held
        if recovery.overflowed or sync is None or not sync.recovered:
            if recovery.overflowed:
                self.metrics.recoveries_given_up.inc(reason="held_changes")
            elif sync is not None and sync.too_far:
                self.metrics.recoveries_given_up.inc(reason="entries")
            assert self._position is not None
            await self._send(recovery.sid, events.synced([], self._position, recovered=False))
            self.metrics.syncs.inc(recovered="false")
            held = []
        else:
            await self._send(recovery.sid, events.synced(sync.entries, sync.cursor, recovered=True))
            self.metrics.syncs.inc(recovered="true")
        for entry in held:
            await self._send(recovery.sid, events.encoded(entry))
        self.metrics.push_packets.inc(len(held))
        await self._enter_rooms(recovery.sid, recovery.principal)

    async def _send(self, sid: str, packet: str) -> None:
        """Sends one encoded Socket.IO packet to one client, as ``emit(..., to=sid)`` would;
        nothing to a client that has left."""
        eio_sid = self.server.manager.eio_sid_from_sid(sid, "/")
        if eio_sid is not None:
            await self.server.eio.send_packet(eio_sid, EngineIOPacket(EIO_MESSAGE, data=packet))

    async def _enter_rooms(self, sid: str, principal: Principal) -> None:
        await self.server.enter_room(sid, user_room(principal.user_id))
        if principal.is_admin:
            await self.server.enter_room(sid, OPS)
