"""``OperationsClient``: the service's operations from Python, over HTTP and Socket.IO
(docs/clients.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any

import aiohttp

from operations.client.credentials import Credentials, TokenProvider
from operations.client.handle import OperationHandle
from operations.client.stream import Stream
from operations.client.transport import Transport
from operations.records import Operation
from operations.states import State


class OperationsClient:
    """An async context manager owning one HTTP session and, while :meth:`OperationHandle.changes
    <operations.client.handle.OperationHandle.changes>` runs, one Socket.IO connection::

        async with OperationsClient("http://127.0.0.1:5005", token=jwt) as client:
            handle = await client.start("order_making", order)
            record = await handle.result(timeout=60)

    ``token`` is a bearer token; ``token_provider`` an async callable returning one, called for
    the first request, again once when the service answers ``401`` (the request is then sent
    again), and before every Socket.IO (re)connect. Give one of them, or neither for anonymous
    reads (``OPERATIONS_ANONYMOUS_READS``)."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        token_provider: TokenProvider | None = None,
    ) -> None:
        self.base_url = base_url
        self._credentials = Credentials(token, token_provider)
        self._session: aiohttp.ClientSession | None = None
        self._transport: Transport | None = None
        self._stream: Stream | None = None

    async def __aenter__(self) -> OperationsClient:
        self._session = aiohttp.ClientSession()
        self._transport = Transport(self.base_url, self._credentials, self._session)
        self._stream = Stream(self._transport)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the socket, if one is open, and the HTTP session."""
        if self._stream is not None:
            await self._stream.close()
        if self._session is not None:
            await self._session.close()
        self._session = self._transport = self._stream = None

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            raise RuntimeError("use OperationsClient as `async with OperationsClient(...)`")
        return self._transport

    async def get(self, operation_id: str) -> Operation:
        """The operation's record; :class:`~operations.errors.OperationNotFound` when it is
        unknown, expired or another user's."""
        return await self.transport.get(operation_id)

    async def list(
        self,
        state: State | str | None = None,
        name: str | None = None,
        user_id: str | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[Operation]:
        """The caller's operations (an admin's: everyone's, or ``user_id``'s), newest first,
        over every page. ``limit`` is the size of each page the service is asked for (1-200);
        stop early by leaving the loop."""
        query = {
            key: str(value)
            for key, value in (("state", state), ("name", name), ("userId", user_id))
            if value is not None
        }
        if limit is not None:
            query["limit"] = str(limit)
        while True:
            page = await self.transport.page(query)
            for item in page.items:
                yield item
            if page.next is None:
                return
            query["cursor"] = page.next

    async def start(
        self, saga_name: str, body: Mapping[str, Any], idempotency_key: str | None = None
    ) -> OperationHandle:
        """``POST /sagas/{saga_name}`` with ``body`` (and the ``Idempotency-Key`` header when
        given): a handle on the new operation, once the service has handed its start message to
        the broker. The operation may not be recorded yet; the handle waits for it."""
        operation_id = await self.transport.start(saga_name, body, idempotency_key)
        return self._handle(operation_id, started=True)

    def watch(self, operation_id: str) -> OperationHandle:
        """A handle on an operation that exists already (started elsewhere)."""
        return self._handle(operation_id, started=False)

    def _handle(self, operation_id: str, started: bool) -> OperationHandle:
        if self._stream is None:
            raise RuntimeError("use OperationsClient as `async with OperationsClient(...)`")
        return OperationHandle(self.transport, self._stream, operation_id, started)
