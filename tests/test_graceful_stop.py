"""A graceful stop (SIGTERM to ``operations serve``) ends the waits at once (issue #25): the
long-polls and ``Prefer: wait`` starts in flight answer as waits that ran out, the Socket.IO
clients are disconnected, and the process exits in seconds, not after the longest wait. The
Python client's ``result()`` rides out such a restart."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections.abc import Callable
from typing import Any

import aio_pika
import httpx
import redis.asyncio as aioredis
import socketio

from operations.client import OperationsClient
from operations.settings import Settings
from tests import support
from tests.api import bearer, recorded
from tests.scrape import Scrape
from tests.support import Publisher, RunningService, ServeProcess, eventually, new_id

Token = Callable[..., str]


def order() -> dict[str, Any]:
    return {
        "customerId": str(uuid.uuid4()),
        "parcelIds": [str(uuid.uuid4())],
        "orderId": f"order-{uuid.uuid4().hex[:8]}",
    }


async def waiting(url: str, route: str) -> float:
    async with httpx.AsyncClient(base_url=url) as http:
        page = Scrape((await http.get("/metrics")).text)
    return page.value("operations_waits", route=route) or 0.0


async def terminated(served: ServeProcess) -> float:
    """SIGTERM, as an orchestrator stops a process; the seconds until it has exited."""
    began = time.monotonic()
    served.process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(served.process.wait(), 60)
    return time.monotonic() - began


async def test_sigterm_answers_every_wait_at_once_and_the_process_exits_in_seconds(
    settings: Settings,
    redis_client: aioredis.Redis,
    amqp: aio_pika.abc.AbstractRobustConnection,
    publisher: Publisher,
    token: Token,
) -> None:
    """20 long-polls of ``wait=30`` on a pending operation, a ``Prefer: wait=30`` start of a
    saga that will not end (no simulated services run), and a Socket.IO client on the
    long-polling transport. On SIGTERM each long-poll answers 304 with the ETag it knew, the
    start 202 with its operation id, the socket is closed, and the process exits within a few
    seconds (before, it waited out the 30 s)."""
    user = str(uuid.uuid4())
    operation = new_id()
    sio = socketio.AsyncClient(reconnection=False)
    disconnected = asyncio.Event()
    sio.on("disconnect", lambda *_: disconnected.set())
    async with (
        support.serve_process(settings, {}) as served,
        httpx.AsyncClient(base_url=served.url, timeout=60) as http,
    ):
        await publisher.publish("create_order", operation, user=user, name="create_order")
        etag = (await recorded(http, operation, bearer(token(user)))).headers["ETag"]
        polls = [
            asyncio.create_task(
                http.get(
                    f"/operations/{operation}?wait=30",
                    headers=bearer(token(user), **{"If-None-Match": etag}),
                )
            )
            for _ in range(20)
        ]
        start = asyncio.create_task(
            http.post(
                "/sagas/order_making",
                json=order(),
                headers=bearer(token(user), Prefer="wait=30"),
            )
        )
        await sio.connect(served.url, auth={"token": token(user)}, transports=["polling"])

        async def all_waiting() -> bool:
            return (
                await waiting(served.url, "operation") == 20
                and await waiting(served.url, "saga_start") == 1
            )

        await eventually(all_waiting, "20 long-polls and a start to wait", every=0.1)
        took = await terminated(served)
        answers = await asyncio.wait_for(asyncio.gather(*polls, start), 10)
        await asyncio.wait_for(disconnected.wait(), 10)
        with contextlib.suppress(Exception):
            await sio.disconnect()

    assert took < 10, f"the process took {took:.1f}s to stop"
    *long_polls, started = answers
    assert [(poll.status_code, poll.headers.get("ETag")) for poll in long_polls] == [
        (304, etag)
    ] * 20
    assert started.status_code == 202, started.text
    assert started.headers["Preference-Applied"] == "wait=30"
    assert started.headers["Location"] == f"/operations/{started.json()['operationId']}"


async def test_result_rides_out_a_graceful_restart(
    settings: Settings,
    redis_client: aioredis.Redis,
    amqp: aio_pika.abc.AbstractRobustConnection,
    publisher: Publisher,
    token: Token,
) -> None:
    """``result()`` long-polls while the service is stopped with SIGTERM: the process exits
    in seconds, the operation completes while it is down, and once the service is back on the
    same port ``result()`` returns the completed record."""
    user = str(uuid.uuid4())
    port = support.free_port()
    operation = new_id()
    async with OperationsClient(f"http://127.0.0.1:{port}", token=token(user)) as client:
        async with support.serve_process(settings, {}, port=port) as first:
            await publisher.publish("create_order", operation, user=user, name="create_order")
            async with httpx.AsyncClient(base_url=first.url) as http:
                await recorded(http, operation, bearer(token(user)))
            result = asyncio.create_task(client.watch(operation).result(timeout=90))

            async def long_polling() -> bool:
                return await waiting(first.url, "operation") == 1

            await eventually(long_polling, "result() to long-poll", every=0.1)
            took = await terminated(first)
        assert took < 10, f"the process took {took:.1f}s to stop"
        await publisher.publish("order_approved", operation, user=user, name="order_approved")
        assert not result.done()
        async with support.serve_process(settings, {}, port=port):
            done = await asyncio.wait_for(result, 30)
    assert (uuid.UUID(done.id), done.state, done.version) == (
        uuid.UUID(operation),
        "completed",
        2,
    )


async def test_a_wait_that_arrives_while_the_service_stops_does_not_wait(
    service: RunningService, publisher: Publisher, token: Token
) -> None:
    """Once the service has begun to stop, a long-poll answers 304 at once and a start that
    prefers to wait answers 202 at once, as waits that ran out."""
    user = str(uuid.uuid4())
    operation = new_id()
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
        await publisher.publish("create_order", operation, user=user, name="create_order")
        etag = (await recorded(http, operation, bearer(token(user)))).headers["ETag"]
        service.service.begin_stop()
        began = time.monotonic()
        poll = await http.get(
            f"/operations/{operation}?wait=30",
            headers=bearer(token(user), **{"If-None-Match": etag}),
        )
        start = await http.post(
            "/sagas/order_making", json=order(), headers=bearer(token(user), Prefer="wait=30")
        )
        took = time.monotonic() - began
    assert (poll.status_code, poll.headers.get("ETag")) == (304, etag)
    assert (start.status_code, start.headers.get("Preference-Applied")) == (202, "wait=30")
    assert took < 10, f"the two requests took {took:.1f}s"
