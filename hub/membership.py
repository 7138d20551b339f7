"""Who is in which room: python-socketio's client manager, with each client's rooms kept beside
its room table.

python-socketio leaves a disconnecting client's rooms by scanning every room of the namespace,
copy included: two rooms per connected client (its own and its user's), so each disconnect costs
time in proportion to everyone connected. At 15,000 clients that is about 2 ms a disconnect, and
a burst of reconnects stalls every push. Here a disconnect leaves only the rooms the client
entered, and the rest of python-socketio's own disconnect is done as it does it
(tests/test_membership.py holds the two managers' room tables equal over any sequence of
operations).
"""

from __future__ import annotations

from typing import Any

import socketio


class IndexedRooms(socketio.AsyncManager):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self._rooms_of: dict[tuple[str, str], set[Any]] = {}

    def basic_enter_room(
        self, sid: str, namespace: str, room: Any, eio_sid: str | None = None
    ) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        self._rooms_of.setdefault((namespace, sid), set()).add(room)

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        super().basic_leave_room(sid, namespace, room)
        rooms = self._rooms_of.get((namespace, sid))
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self._rooms_of[namespace, sid]

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        if namespace not in self.rooms:
            return
        for room in list(self._rooms_of.get((namespace, sid), ())):
            self.basic_leave_room(sid, namespace, room)
        # What python-socketio's own disconnect does once the client has left its rooms.
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            waiting = pending.get(namespace)
            if waiting is not None and sid in waiting:
                waiting.remove(sid)
                if not waiting:
                    del pending[namespace]
