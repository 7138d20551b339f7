"""The Python client, ``operations.client`` (contract §13), against a real service on real Redis
and RabbitMQ: ``result()`` by long-poll (across a restart, on time, in a handful of requests),
``changes()`` over Socket.IO through a reconnect, ``cancel()``, ``list()`` over pages, and the
typed refusals and token renewal."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import httpx
import pytest
from aiohttp import web

from operations.auth.tokens import mint
from operations.client import (
    Operation,
    OperationNotFound,
    OperationsClient,
    OperationTimeout,
    RequestRefused,
    TokenError,
)
from operations.pacco.demo import DemoServices
from operations.settings import Settings
from tests import support
from tests.scrape import Scrape
from tests.support import (
    Publisher,
    RunningService,
    eventually,
    new_id,
    run_to_end,
    start_service,
)

Token = Callable[..., str]


def order() -> dict[str, Any]:
    return {
        "customerId": str(uuid.uuid4()),
        "parcelIds": [str(uuid.uuid4())],
        "orderId": f"order-{uuid.uuid4().hex[:8]}",
    }


async def recorded(client: OperationsClient, operation_id: str) -> Operation | None:
    with contextlib.suppress(OperationNotFound):
        return await client.get(operation_id)
    return None


async def pending(publisher: Publisher, client: OperationsClient, user: str) -> str:
    """A new operation of ``user``'s, pending (version 1), once the service has recorded it. Its
    id is a GUID in .NET's "N" form, as Pacco writes them; the service answers it with dashes."""
    operation = new_id()
    await publisher.publish("create_order", operation, user=user, name="create_order")
    await eventually(lambda: recorded(client, operation), "the operation to be recorded")
    return operation


def assert_in_order(records: list[Operation], operation: str) -> None:
    """Each of the operation's changes once, versions rising, the terminal one last."""
    assert {uuid.UUID(record.id) for record in records} == {uuid.UUID(operation)}
    versions = [record.version for record in records]
    assert versions == sorted(set(versions)), versions
    assert [record.state.is_terminal for record in records][-1]
    assert not any(record.state.is_terminal for record in records[:-1])


async def sockets(url: str, count: int) -> bool:
    """Whether the service has ``count`` Socket.IO clients connected (its own gauge)."""
    async with httpx.AsyncClient(base_url=url) as http:
        metrics = Scrape((await http.get("/metrics")).text)
    return metrics.value("operations_sockets") == count


# ------------------------------------------------------------------------------ result()


async def test_result_returns_the_terminal_record_of_a_started_saga_and_changes_follow_it(
    service: RunningService, settings: Settings, token: Token
) -> None:
    """``result()`` right after ``start()``: the start message may not be consumed yet, so
    the first reads answer 404, which a started operation's handle waits through."""
    user = str(uuid.uuid4())
    async with (
        DemoServices(settings.amqp_url, latency_ms=20),
        OperationsClient(service.url, token=token(user)) as client,
    ):
        handle = await client.start("order_making", order())
        waiting = asyncio.create_task(handle.result(timeout=30))
        seen = [record async for record in handle.changes()]
        done = await waiting
        await eventually(lambda: sockets(service.url, 0), "the socket to be closed")
    assert (done.id, done.state, done.name, done.user_id, done.reason) == (
        handle.id,
        "completed",
        "make_order_completed",
        user,
        None,
    )
    assert_in_order(seen, handle.id)
    assert seen[-1] == done


async def test_result_gives_up_on_time_with_operation_timeout(
    service: RunningService, publisher: Publisher, token: Token
) -> None:
    user = str(uuid.uuid4())
    async with OperationsClient(service.url, token=token(user)) as client:
        handle = client.watch(await pending(publisher, client, user))
        began = time.monotonic()
        with pytest.raises(OperationTimeout) as raised:
            await handle.result(timeout=1.5)
        took = time.monotonic() - began
        assert (raised.value.operation_id, raised.value.code) == (handle.id, "operation_timeout")
        assert 1.5 <= took < 5, took
        assert (await client.get(handle.id)).state == "pending"  # it goes on


class CountingProxy:
    """A reverse proxy on loopback that counts the requests it passes to the service, and
    answers the first ones itself with the ``refusals`` given (status, code, headers)."""

    def __init__(
        self, upstream: str, refusals: list[tuple[int, str, dict[str, str]]] | None = None
    ) -> None:
        self.upstream = upstream
        self.refusals = list(refusals or [])
        self.requests: list[str] = []
        self.times: list[float] = []  # when each request arrived (time.monotonic())
        self.keys: list[str | None] = []  # each request's Idempotency-Key
        self.session: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(f"{request.method} {request.path}")
        self.times.append(time.monotonic())
        self.keys.append(request.headers.get("Idempotency-Key"))
        line = len(self.requests) - 1
        if self.refusals:
            status, code, headers = self.refusals.pop(0)
            self.requests[line] += f" {status}"
            problem = {"code": code, "reason": "refused by the proxy"}
            return web.json_response(problem, status=status, headers=headers)
        assert self.session is not None
        sent = {k: v for k, v in request.headers.items() if k.lower() not in {"host"}}
        async with self.session.request(
            request.method,
            self.upstream + str(request.rel_url),
            headers=sent,
            data=await request.read(),
        ) as answer:
            body = await answer.read()
            self.requests[line] += f" {answer.status}"
            kept = {"etag", "content-type", "retry-after", "cache-control"}
            headers = {k: v for k, v in answer.headers.items() if k.lower() in kept}
            return web.Response(status=answer.status, body=body or None, headers=headers)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.session = aiohttp.ClientSession()
        try:
            host, port = runner.addresses[0][:2]
            yield f"http://{host}:{port}"
        finally:
            await self.session.close()
            await runner.cleanup()


@pytest.mark.slow
async def test_result_waits_with_a_handful_of_requests_not_a_poll_every_moment(
    service: RunningService, publisher: Publisher, token: Token
) -> None:
    """Six seconds of waiting take the first read and the long-poll the change wakes: a
    handful of requests where polling every half second (arq's Job.result) makes a dozen."""
    user = str(uuid.uuid4())
    proxy = CountingProxy(service.url)
    async with proxy.running() as url, OperationsClient(url, token=token(user)) as client:
        operation = await pending(publisher, client, user)
        proxy.requests.clear()
        began = time.monotonic()
        waiting = asyncio.create_task(client.watch(operation).result(timeout=30))
        await asyncio.sleep(6)  # the wait whose requests are counted
        assert not waiting.done()
        await publisher.publish("order_approved", operation, user=user, name="order_approved")
        done = await waiting
    assert done.state == "completed" and time.monotonic() - began >= 6
    reads = [line for line in proxy.requests if line.startswith(f"GET /operations/{operation} ")]
    assert reads == proxy.requests
    assert 1 <= len(reads) <= 4, proxy.requests


async def test_result_rides_out_503_and_429_and_returns_the_final_record(
    service: RunningService, publisher: Publisher, token: Token
) -> None:
    """Three ``503 store_unavailable`` and a ``429 too_many_waits`` with ``Retry-After: 1``
    come before the service is reached: ``result()`` tries again with back-off, waits the
    second the 429 asks for, then long-polls and returns the completed record."""
    user = str(uuid.uuid4())
    async with OperationsClient(service.url, token=token(user)) as owner:
        operation = await pending(publisher, owner, user)
    unavailable: tuple[int, str, dict[str, str]] = (503, "store_unavailable", {})
    refusals = [unavailable] * 3 + [(429, "too_many_waits", {"Retry-After": "1"})]
    proxy = CountingProxy(service.url, refusals)
    read = f"GET /operations/{operation}"
    async with proxy.running() as url, OperationsClient(url, token=token(user)) as client:
        waiting = asyncio.create_task(client.watch(operation).result(timeout=30))

        async def read_through() -> bool:
            return f"{read} 200" in proxy.requests

        await eventually(read_through, "a read the proxy passes to the service")
        assert not waiting.done()
        await publisher.publish("order_approved", operation, user=user, name="order_approved")
        done = await waiting
    assert (uuid.UUID(done.id), done.state, done.name, done.version) == (
        uuid.UUID(operation),
        "completed",
        "order_approved",
        2,
    )
    assert proxy.requests[:5] == [f"{read} 503"] * 3 + [f"{read} 429", f"{read} 200"]
    assert len(proxy.requests) <= 7, proxy.requests
    assert proxy.times[4] - proxy.times[3] >= 1.0  # the Retry-After kept


async def test_result_of_a_started_operation_waits_until_it_is_recorded(
    service: RunningService,
    settings: Settings,
    amqp: aio_pika.abc.AbstractRobustConnection,
    publisher: Publisher,
    token: Token,
) -> None:
    """The service has published the start message but not recorded the operation yet: reads
    answer 404, and the handle from ``start()`` waits through them. Here the tracking queue is
    unbound from the saga's first messages, so the operation is recorded only when the test
    publishes its end."""
    async with amqp.channel() as channel:
        queue = await channel.get_queue(settings.queue)
        for exchange, message in (("ordermaker", "make_order"), ("orders", "create_order")):
            await queue.unbind(exchange, message)
    user = str(uuid.uuid4())
    proxy = CountingProxy(service.url)
    async with proxy.running() as url, OperationsClient(url, token=token(user)) as client:
        handle = await client.start("order_making", order(), idempotency_key="order-1")
        assert (proxy.requests[0], proxy.keys[0]) == ("POST /sagas/order_making 202", "order-1")
        waiting = asyncio.create_task(handle.result(timeout=30))

        async def not_found_yet() -> bool:
            return f"GET /operations/{handle.id} 404" in proxy.requests

        await eventually(not_found_yet, "a read that finds no operation yet")
        assert not waiting.done()
        await publisher.publish("order_approved", handle.id, user=user, name="order_approved")
        done = await waiting
    assert (done.id, done.state, done.version) == (handle.id, "completed", 1)


# ---------------------------------------------------- result() and changes() across a restart


@pytest.mark.slow
async def test_result_and_changes_ride_out_a_service_restart(
    settings: Settings,
    redis_client: object,
    amqp: aio_pika.abc.AbstractRobustConnection,
    publisher: Publisher,
    token: Token,
) -> None:
    """The service dies while ``result()`` long-polls and ``changes()`` holds a socket; the
    operation completes while it is down, and the service comes back on the same port.
    ``result()`` returns the completed record; ``changes()`` reconnects with its cursor and
    gets the completion from the ``operations_sync`` (recovered), each change once, in order,
    with a fresh token from the provider."""
    user = str(uuid.uuid4())
    port = support.free_port()
    url = f"http://127.0.0.1:{port}"
    given: list[str] = []

    async def provider() -> str:
        given.append(token(user))
        return given[-1]

    async with OperationsClient(url, token_provider=provider) as client:
        async with support.serve_process(settings, {}, port=port) as first:
            operation = await pending(publisher, client, user)
            handle = client.watch(operation)
            changes = handle.changes()
            seen = [await asyncio.wait_for(anext(changes), 15)]  # read when the socket opened
            waiting = asyncio.create_task(handle.result())
            await publisher.publish(
                "add_parcel_to_order", operation, user=user, name="add_parcel_to_order"
            )
            seen.append(await asyncio.wait_for(anext(changes), 15))  # live, with a cursor
            first.process.kill()
            await first.process.wait()
            asked = len(given)
        await publisher.publish("order_approved", operation, user=user, name="order_approved")
        await asyncio.sleep(0.5)  # the clients meet a service that is down
        assert not waiting.done()
        async with support.serve_process(settings, {}, port=port) as second:
            seen.append(await asyncio.wait_for(anext(changes), 30))
            done = await asyncio.wait_for(waiting, 30)
            async with httpx.AsyncClient(base_url=second.url) as http:
                metrics = Scrape((await http.get("/metrics")).text)
        await changes.aclose()
    assert len(given) > asked  # a fresh token for the socket's reconnect
    assert [(record.version, record.state) for record in seen] == [
        (1, "pending"),
        (2, "pending"),
        (3, "completed"),
    ]
    assert_in_order(seen, operation)
    assert done == seen[-1]
    assert (metrics.value("operations_syncs_total", recovered="true") or 0) >= 1, metrics.text


async def test_changes_closed_early_closes_the_socket_and_a_client_shares_one(
    service: RunningService, publisher: Publisher, token: Token
) -> None:
    user = str(uuid.uuid4())
    async with OperationsClient(service.url, token=token(user)) as client:
        one = client.watch(await pending(publisher, client, user))
        other = client.watch(await pending(publisher, client, user))
        first, second = one.changes(), other.changes()
        assert (await anext(first)).id == str(uuid.UUID(one.id))
        assert (await anext(second)).id == str(uuid.UUID(other.id))
        assert await sockets(service.url, 1)  # both on the client's one socket
        await first.aclose()
        await publisher.publish("order_approved", other.id, user=user, name="order_approved")
        assert (await asyncio.wait_for(anext(second), 15)).state == "completed"
        with pytest.raises(StopAsyncIteration):
            await anext(second)
        await eventually(lambda: sockets(service.url, 0), "the socket to be closed")
        lingering = one.changes()
        assert (await anext(lingering)).state == "pending"
    with pytest.raises(RuntimeError, match="closed"):  # not a wait for ever
        await anext(lingering)
    await eventually(lambda: sockets(service.url, 0), "the client's socket to be closed")


class Gate:
    """A TCP forwarder on loopback to the service that can cut every connection through it and
    turn new ones away: the network failing between a client and the service, sockets
    included."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.open = True
        self.writers: set[asyncio.StreamWriter] = set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        try:
            yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        finally:
            self.cut()
            server.close()
            await server.wait_closed()

    def cut(self) -> None:
        """Closes every connection through the gate; new ones are refused until it opens."""
        self.open = False
        for writer in self.writers:
            writer.close()
        self.writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        upstream, up = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers |= {writer, up}
        await asyncio.gather(_pipe(reader, up), _pipe(upstream, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    writer.close()


async def test_changes_after_a_cursor_too_old_to_recover_read_the_record_again(
    settings: Settings,
    redis_client: object,
    amqp: aio_pika.abc.AbstractRobustConnection,
    publisher: Publisher,
    token: Token,
) -> None:
    """The network fails while the operation completes and hundreds of other changes trim the
    change stream past the client's cursor. When the network is back, the socket reconnects
    with that cursor, the sync says ``recovered: false``, and the client reads the record
    again: the completion is not lost."""
    user, other = str(uuid.uuid4()), str(uuid.uuid4())
    async with (
        start_service(replace(settings, stream_max_length=100)) as running,
        httpx.AsyncClient(base_url=running.url) as http,
    ):
        gate = Gate(running.port)
        async with gate.running() as url, OperationsClient(url, token=token(user)) as client:
            operation = await pending(publisher, client, user)
            changes = client.watch(operation).changes()
            seen = [await asyncio.wait_for(anext(changes), 15)]
            await publisher.publish(
                "add_parcel_to_order", operation, user=user, name="add_parcel_to_order"
            )
            seen.append(await asyncio.wait_for(anext(changes), 15))  # live, with a cursor
            gate.cut()
            await publisher.publish("order_approved", operation, user=user, name="order_approved")
            others = [new_id() for _ in range(400)]
            for each in others:
                await publisher.publish("create_order", each, user=other, name="create_order")

            async def trimmed() -> bool:
                last = await http.get(
                    f"/operations/{others[-1]}", headers={"Authorization": f"Bearer {token(other)}"}
                )
                return last.status_code == 200

            await eventually(trimmed, "the other changes to be applied")
            gate.open = True
            seen.append(await asyncio.wait_for(anext(changes), 30))
            await changes.aclose()
        metrics = Scrape((await http.get("/metrics")).text)
    assert [(record.version, record.state) for record in seen] == [
        (1, "pending"),
        (2, "pending"),
        (3, "completed"),
    ]
    unrecovered = metrics.value("operations_syncs_total", recovered="false")
    assert (unrecovered or 0) >= 1, metrics.text


# ------------------------------------------------------------------------------ cancel()


async def test_cancel_ends_a_running_saga_rejected_cancelled(
    service: RunningService, token: Token
) -> None:
    user = str(uuid.uuid4())
    async with (
        OperationsClient(service.url, token=token(user)) as client,
        httpx.AsyncClient(base_url=service.url) as http,
    ):
        handle = await client.start("order_making", order())

        async def saga_started() -> bool:
            saga = await http.get(
                f"/operations/{handle.id}/saga", headers={"Authorization": f"Bearer {token(user)}"}
            )
            return saga.status_code == 200

        await eventually(saga_started, "the saga to start")
        await handle.cancel("changed my mind")
        done = await handle.result(timeout=30)
        assert (done.state, done.code) == ("rejected", "cancelled")
        assert done.reason == f"cancelled by its owner, {user}: changed my mind"
        with pytest.raises(RequestRefused) as again:
            await handle.cancel()
        assert (again.value.status, again.value.code) == (409, "not_cancellable")


# ---------------------------------------------------------------------- list() and get()


async def test_list_walks_every_page(
    service: RunningService, publisher: Publisher, token: Token
) -> None:
    user = str(uuid.uuid4())
    async with OperationsClient(service.url, token=token(user)) as client:
        made = {await pending(publisher, client, user) for _ in range(5)}
        await publisher.publish("order_approved", sorted(made)[0], user=user, name="order_approved")

        async def listed(**query: Any) -> list[Operation]:
            return [record async for record in client.list(limit=2, **query)]

        everything = await listed()
        assert sorted(uuid.UUID(r.id) for r in everything) == sorted(map(uuid.UUID, made))
        still = await eventually(
            lambda: _if(listed(state="pending"), lambda found: len(found) == 4), "4 pending"
        )
        assert {uuid.UUID(r.id) for r in still} == {uuid.UUID(m) for m in made} - {
            uuid.UUID(sorted(made)[0])
        }
        assert [record.id async for record in client.list(name="no such name")] == []


async def _if(listing: Any, ok: Callable[[list[Operation]], bool]) -> list[Operation] | None:
    found: list[Operation] = await listing
    return found if ok(found) else None


async def test_refusals_are_typed_errors(service: RunningService, token: Token) -> None:
    user = str(uuid.uuid4())
    async with OperationsClient(service.url, token=token(user)) as client:
        unknown = new_id()
        with pytest.raises(OperationNotFound) as missing:
            await client.get(unknown)
        assert (missing.value.operation_id, missing.value.code) == (unknown, "operation_not_found")
        with pytest.raises(OperationNotFound):
            await client.watch(unknown).result(timeout=10)  # watched, not started: no waiting
        with pytest.raises(RequestRefused) as no_saga:
            await client.start("no_such_saga", {})
        assert (no_saga.value.status, no_saga.value.code) == (404, "saga_not_found")
        with pytest.raises(RequestRefused) as bad_query:
            [record async for record in client.list(limit=1000)]
        assert (bad_query.value.status, bad_query.value.code) == (400, "invalid_query")
    async with OperationsClient(service.url) as anonymous:
        with pytest.raises(TokenError):
            await anonymous.get(unknown)
    with pytest.raises(ValueError, match="not both"):
        OperationsClient(service.url, token="a", token_provider=_never)


async def _never() -> str:
    raise AssertionError("not called")


async def test_a_token_provider_is_asked_again_after_a_401(
    service: RunningService, publisher: Publisher, token: Token
) -> None:
    user = str(uuid.uuid4())
    given: list[str] = []

    async def provider() -> str:
        # The first token is signed with another key, as a token that has gone stale is refused.
        given.append(
            mint("another-secret-0123456789abcdef-012345", user) if not given else token(user)
        )
        return given[-1]

    async with OperationsClient(service.url, token=token(user)) as owner:
        operation = await pending(publisher, owner, user)
    async with OperationsClient(service.url, token_provider=provider) as client:
        record = await client.get(operation)
        assert (uuid.UUID(record.id), len(given)) == (uuid.UUID(operation), 2)
        await client.get(operation)
        assert len(given) == 2  # kept while the service takes it


# ------------------------------------------------------------------------- the docs' example

CLIENTS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "clients.md"


async def test_the_clients_page_example_runs_as_written(
    service: RunningService, settings: Settings, token: Token
) -> None:
    """The first Python block of docs/clients.md, with the test service's address and a token,
    follows an order to its end."""
    section = CLIENTS_PAGE.read_text(encoding="utf-8").split("\n## Python\n", 1)[1]
    example = re.findall(r"```python\n(.*?)```", section, re.DOTALL)[0]
    assert example.count("http://127.0.0.1:5005") == 1 and example.count('token="..."') == 1
    code = example.replace("http://127.0.0.1:5005", service.url).replace(
        'token="..."', f"token={token(str(uuid.uuid4()))!r}"
    )
    async with DemoServices(settings.amqp_url, latency_ms=0):
        status, out, err = await run_python(code)
    assert status == 0, err
    printed = [line.split() for line in out.splitlines()]  # version, state, name
    versions = [int(line[0]) for line in printed]
    assert versions == sorted(set(versions)), out
    assert printed[-1][1:3] == ["completed", "make_order_completed"], out
    assert {line[1] for line in printed[:-1]} <= {"pending"}, out


async def run_python(code: str) -> tuple[int, str, str]:
    """``python -c code`` to its end, without blocking the service running in this loop."""
    return await run_to_end(sys.executable, "-c", code)
