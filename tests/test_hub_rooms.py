"""Live push over Socket.IO with a real client against the running service (contract §5):
each change reaches its owner's room and the admins, never another user, in version order."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable

from tests.hub_support import Token, assert_monotonic
from tests.live import LiveClient
from tests.support import Publisher, uid


async def test_owner_gets_events_other_users_do_not_and_admin_gets_all(
    clients: Callable[[], LiveClient], publisher: Publisher, token: Token
) -> None:
    alice, bob = uid(), uid()
    alice_socket, bob_socket, admin_socket = clients(), clients(), clients()
    await alice_socket.connect({"token": token(alice)})
    await bob_socket.connect({"token": token(bob)})
    await admin_socket.connect({"token": token("ops-person", "admin")})

    op, bobs_op = uid(), uid()
    await publisher.publish("create_order", op, user=alice, name="create_order")
    await publisher.publish("order_created", op, user=alice, name="create_order")
    await publisher.publish("create_order", bobs_op, user=bob)

    pending = await alice_socket.wait_for_state(op, "pending")
    completed = await alice_socket.wait_for_state(op, "completed")
    assert [e for e, _ in alice_socket.received] == ["operation_pending", "operation_completed"]
    assert (pending["version"], completed["version"]) == (1, 2)
    assert pending["cursor"] < completed["cursor"] or len(pending["cursor"]) < len(
        completed["cursor"]
    )
    assert set(completed) >= {
        "id",
        "userId",
        "name",
        "state",
        "code",
        "reason",
        "version",
        "createdAt",
        "updatedAt",
        "cursor",
    }

    await bob_socket.wait_for_state(bobs_op, "pending")
    await admin_socket.wait_for_state(op, "completed")
    await admin_socket.wait_for_state(bobs_op, "pending")
    assert {r["id"] for r in bob_socket.records()} == {bobs_op}, "bob saw alice's operation"
    assert len(admin_socket.records(op)) == 2, "the admin got an event twice"


async def test_a_rejection_reaches_the_owner_with_code_and_reason(
    clients: Callable[[], LiveClient], publisher: Publisher, token: Token
) -> None:
    user, op = uid(), uid()
    live = clients()
    await live.connect({"token": token(user)})
    await publisher.publish(
        "create_order_rejected",
        op,
        user=user,
        body={"code": "no_parcels", "reason": "nothing to ship"},
    )
    record = await live.wait_for_state(op, "rejected")
    assert live.received[0][0] == "operation_rejected"
    assert (record["code"], record["reason"]) == ("no_parcels", "nothing to ship")


async def test_guid_formats_match(
    clients: Callable[[], LiveClient], publisher: Publisher, token: Token
) -> None:
    user = uuid.uuid4()
    live = clients()
    await live.connect({"token": token(user.hex)})  # "N" format, as Pacco writes it
    op = uid()
    await publisher.publish("create_order", op, user=str(user).upper())
    await live.wait_for_state(op, "pending")


async def test_no_regression_under_shuffled_and_duplicated_deliveries(
    clients: Callable[[], LiveClient], publisher: Publisher, token: Token
) -> None:
    rng = random.Random(11)
    admin = clients()
    await admin.connect({"token": token("ops", "admin")})
    finals: dict[str, str] = {}
    deliveries: list[tuple[str, str, str]] = []
    for _ in range(60):
        op = uid()
        terminal = rng.choice(["order_created", "create_order_rejected"])
        finals[op] = "completed" if terminal == "order_created" else "rejected"
        for message in ("create_order", "add_parcel_to_order", terminal):
            deliveries.append((message, op, uuid.uuid4().hex))
    deliveries += rng.sample(deliveries, 60)
    rng.shuffle(deliveries)
    for message, op, message_id in deliveries:
        await publisher.publish(message, op, user="u", name=message, message_id=message_id)
    for op, state in finals.items():
        await admin.wait_for_state(op, state)
    records = admin.records()
    assert_monotonic(records)
    for op in finals:
        versions = [r["version"] for r in admin.records(op)]
        assert versions == list(range(1, len(versions) + 1)), "a change was pushed twice or lost"
