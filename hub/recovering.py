"""Recoveries in progress: reconnecting clients whose ``operations_sync`` is being read off the
pusher, and the live changes each may see, held for it until its sync is sent.

The pusher notes its position when a recovery begins; the sync covers the streams up to there,
and every change it emits after that and the client may see is held for the client, in order.
Back on the pusher, the sync, then the held changes, then the rooms: nothing lost or doubled.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field

from hub.recovery import Sync
from hub.rooms import OPS, rooms_for, user_room
from operations.auth.identity import Principal
from operations.feed import FeedEntry

RECOVERY_READS = 4
"""Recovery reads running at once on a process; the others wait their turn (their live changes
held meanwhile)."""
HELD_CHANGES = 5_000
"""Live changes held for one recovering client; past this its sync says ``recovered: false``.
The entries are the pusher's own (shared by every client), so each costs a reference."""


@dataclass(frozen=True)
class Join:
    """A client admitted, to be let into its rooms by the pusher (after its sync, if it asked
    for one with ``since``)."""

    sid: str
    principal: Principal
    since: str | None


@dataclass(eq=False)
class Recovery:
    sid: str
    principal: Principal
    since: str
    until: str  # the pusher's position when the recovery began: the sync covers up to here
    held: list[FeedEntry] = field(default_factory=list)
    overflowed: bool = False
    task: asyncio.Task[None] | None = None

    @property
    def rooms(self) -> list[str]:
        rooms = [user_room(self.principal.user_id)]
        return [*rooms, OPS] if self.principal.is_admin else rooms

    def hold(self, entry: FeedEntry) -> None:
        if self.overflowed:
            return
        if len(self.held) >= HELD_CHANGES:
            self.overflowed = True
            self.held.clear()
        else:
            self.held.append(entry)


@dataclass(frozen=True)
class Recovered:
    """A pusher job: a recovery's read is done (``sync`` is None when it gave up or failed)."""

    recovery: Recovery
    sync: Sync | None


class Recoveries:
    """The recoveries in progress, by client and by the rooms they will join."""

    def __init__(self) -> None:
        self._by_sid: dict[str, Recovery] = {}
        self._in_room: dict[str, set[Recovery]] = defaultdict(set)

    def __len__(self) -> int:
        return len(self._by_sid)

    def __bool__(self) -> bool:
        return bool(self._by_sid)

    def current(self, recovery: Recovery) -> bool:
        return self._by_sid.get(recovery.sid) is recovery

    def begin(self, recovery: Recovery) -> None:
        self._by_sid[recovery.sid] = recovery
        for room in recovery.rooms:
            self._in_room[room].add(recovery)

    def end(self, sid: str) -> Recovery | None:
        recovery = self._by_sid.pop(sid, None)
        if recovery is not None:
            for room in recovery.rooms:
                members = self._in_room.get(room)
                if members is not None:
                    members.discard(recovery)
                    if not members:
                        del self._in_room[room]
        return recovery

    def hold(self, entry: FeedEntry) -> None:
        """Holds a change for every recovering client that will see it (once each, an admin's
        own operation being in two of its rooms)."""
        rooms = rooms_for(entry.user_id)
        if len(rooms) == 1:
            for recovery in self._in_room.get(rooms[0], ()):
                recovery.hold(entry)
            return
        seen: set[Recovery] = set()
        for room in rooms:
            for recovery in self._in_room.get(room, ()):
                if recovery not in seen:
                    seen.add(recovery)
                    recovery.hold(entry)
