"""The client's HTTP requests: the service's URLs, the bearer token (renewed once on a ``401``),
and the records decoded into the server's own :class:`~operations.records.Operation`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import msgspec
import yarl
from multidict import CIMultiDict

from operations.client.credentials import Credentials
from operations.client.refusals import refusal
from operations.records import Operation

REQUEST_SECONDS = 30.0
"""How long a request may take, over and above the wait of a long-poll."""


@dataclass(frozen=True)
class HttpReply:
    """An answer, read whole; its headers in any letter case."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class ListedPage(msgspec.Struct):
    """A page of ``GET /operations``."""

    items: list[Operation]
    next: str | None = None


class _StartAnswer(msgspec.Struct, rename="camel"):
    """The answer of ``POST /sagas/{name}``: ``202 {"operationId"}``, or the record (``200``)."""

    operation_id: str | None = None
    id: str | None = None


_records = msgspec.json.Decoder(Operation)
_pages = msgspec.json.Decoder(ListedPage)
_starts = msgspec.json.Decoder(_StartAnswer)


class Transport:
    def __init__(
        self, base_url: str, credentials: Credentials, session: aiohttp.ClientSession
    ) -> None:
        self.base = yarl.URL(base_url.rstrip("/"))
        self.credentials = credentials
        self.session = session

    def url(self, *segments: str) -> yarl.URL:
        """The URL of a path under the base URL, each segment quoted whole (an id holds no
        path)."""
        path = "/".join(quote(segment, safe="") for segment in segments)
        return self.base.with_path(f"{self.base.raw_path.rstrip('/')}/{path}", encoded=True)

    async def send(
        self,
        method: str,
        url: yarl.URL,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        seconds: float = REQUEST_SECONDS,
    ) -> HttpReply:
        """One request, with the token; a ``401`` renews the token once and sends it again."""
        token = await self.credentials.token()
        answer = await self._once(method, url, token, params, body, headers, seconds)
        if answer.status == 401 and self.credentials.renewable:
            token = await self.credentials.renew(token)
            answer = await self._once(method, url, token, params, body, headers, seconds)
        return answer

    async def _once(
        self,
        method: str,
        url: yarl.URL,
        token: str | None,
        params: Mapping[str, str] | None,
        body: Any,
        headers: Mapping[str, str] | None,
        seconds: float,
    ) -> HttpReply:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = msgspec.json.encode(body)
            sent["Content-Type"] = "application/json"
        async with self.session.request(
            method,
            url,
            params=params,
            data=data,
            headers=sent,
            timeout=aiohttp.ClientTimeout(total=seconds),
        ) as response:
            return HttpReply(response.status, CIMultiDict(response.headers), await response.read())

    async def read(
        self, operation_id: str, etag: str | None = None, wait: float | None = None
    ) -> HttpReply:
        """``GET /operations/{id}``; with an ``etag`` and a ``wait``, a long-poll."""
        headers: dict[str, str] = {}
        params: dict[str, str] = {}
        if etag is not None and wait is not None:
            headers["If-None-Match"] = etag
            params["wait"] = f"{wait:g}"
        return await self.send(
            "GET",
            self.url("operations", operation_id),
            params=params,
            headers=headers,
            seconds=REQUEST_SECONDS + (wait or 0.0),
        )

    async def get(self, operation_id: str) -> Operation:
        answer = await self.read(operation_id)
        if answer.status != 200:
            raise self.refused(answer, operation_id)
        return record(answer)

    async def page(self, query: Mapping[str, str]) -> ListedPage:
        answer = await self.send("GET", self.url("operations"), params=query)
        if answer.status != 200:
            raise self.refused(answer)
        return _pages.decode(answer.body)

    async def start(
        self, saga_name: str, body: Mapping[str, Any], idempotency_key: str | None
    ) -> str:
        """``POST /sagas/{name}``: the new operation's id."""
        headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        answer = await self.send(
            "POST", self.url("sagas", saga_name), body=dict(body), headers=headers
        )
        if answer.status not in (200, 202):
            raise self.refused(answer)
        started = _starts.decode(answer.body)
        operation_id = started.operation_id or started.id or answer.headers.get("Request-ID")
        if operation_id is None:
            raise ValueError(f"POST /sagas/{saga_name} answered no operation id")
        return operation_id

    async def cancel(self, operation_id: str, reason: str | None) -> None:
        """``POST /operations/{id}/cancel``, with ``{"reason"}`` when there is one."""
        answer = await self.send(
            "POST",
            self.url("operations", operation_id, "cancel"),
            body=None if reason is None else {"reason": reason},
        )
        if answer.status != 202:
            raise self.refused(answer, operation_id)

    @staticmethod
    def refused(answer: HttpReply, operation_id: str | None = None) -> Exception:
        return refusal(answer.status, answer.body, operation_id, answer.headers.get("Retry-After"))


def record(answer: HttpReply) -> Operation:
    return _records.decode(answer.body)
