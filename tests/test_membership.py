"""The hub's client manager (hub/membership.py) against python-socketio's own: over any sequence
of connects, room entries and exits, room closes and disconnects, both hold the same rooms, and
a disconnect leaves the others' rooms alone without scanning them."""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any

import pytest
import socketio
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.membership import IndexedRooms

NS = "/"
ROOMS = ["user:a", "user:b", "ops"]
Step = tuple[str, int, int]


def managed(manager: Any) -> Any:
    """``manager`` with sids 0, 1, 2... (python-socketio draws them at random)."""
    counter = itertools.count()
    ids = SimpleNamespace(generate_id=lambda: f"s{next(counter)}")
    manager.set_server(SimpleNamespace(eio=ids, packet_class=socketio.packet.Packet))
    manager.initialize()
    return manager


def table(manager: Any) -> dict[str, dict[Any, dict[str, str]]]:
    return {
        namespace: {room: dict(members) for room, members in rooms.items()}
        for namespace, rooms in manager.rooms.items()
    }


def pending(manager: Any) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    copy = {ns: list(sids) for ns, sids in manager.pending_connect.items()}
    return copy, {ns: list(sids) for ns, sids in manager.pending_disconnect.items()}


async def play(manager: Any, steps: list[Step]) -> None:
    sids: list[str] = []
    for action, client, room in steps:
        if action == "connect" or not sids:
            sid = await manager.pre_connect(f"e{len(sids)}", NS)
            sids.append(sid)
            if client % 2:
                await manager.connect(sid, NS)
            continue
        sid = sids[client % len(sids)]
        if action == "enter" and manager.is_connected(sid, NS):
            await manager.enter_room(sid, NS, ROOMS[room % len(ROOMS)])
        elif action == "leave":
            await manager.leave_room(sid, NS, ROOMS[room % len(ROOMS)])
        elif action == "close":
            await manager.close_room(ROOMS[room % len(ROOMS)], NS)
        elif action == "disconnect":
            await manager.disconnect(sid, NS)


steps = st.lists(
    st.tuples(
        st.sampled_from(["connect", "enter", "leave", "close", "disconnect"]),
        st.integers(0, 20),
        st.integers(0, 5),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(steps)
async def test_the_indexed_manager_holds_the_rooms_python_socketio_holds(
    sequence: list[Step],
) -> None:
    mine, theirs = managed(IndexedRooms()), managed(socketio.AsyncManager())
    await play(mine, sequence)
    await play(theirs, sequence)
    assert table(mine) == table(theirs)
    assert pending(mine) == pending(theirs)
    assert mine.callbacks == theirs.callbacks


@pytest.mark.parametrize("connected", [10, 2_000])
async def test_a_disconnect_reads_only_the_leaving_clients_rooms(connected: int) -> None:
    manager = managed(IndexedRooms())
    sids = []
    for index in range(connected):
        sid = await manager.pre_connect(f"e{index}", NS)
        await manager.connect(sid, NS)
        await manager.enter_room(sid, NS, f"user:{index}")
        sids.append(sid)
    rooms = manager.rooms[NS]

    class Watched(dict[Any, Any]):
        def copy(self) -> Any:
            raise AssertionError("the disconnect copied the whole room table")

        def items(self) -> Any:
            raise AssertionError("the disconnect walked every room")

    manager.rooms[NS] = Watched(rooms)
    await manager.disconnect(sids[0], NS)
    assert sids[0] not in manager.rooms[NS][None]
    assert "user:0" not in manager.rooms[NS] and sids[0] not in manager.rooms[NS]
    assert len(manager.rooms[NS]) == 1 + 2 * (connected - 1)
