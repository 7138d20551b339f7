"""The HTTP API (contract §4): operations, their history, health, readiness, metrics, OpenAPI."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from operations.errors import (
    BrokerUnavailable,
    DeadLetterNotFound,
    DeadLetterNotRedrivable,
    InvalidRequest,
    OperationNotFound,
    OperationsError,
    PayloadTooLarge,
    StoreUnavailable,
    TokenError,
)
from operations.feed import ChangeFeed
from operations.identity import Principal, is_acceptable_id, normalise_id
from operations.listing import InvalidCursor, ListQuery
from operations.metrics import CONTENT_TYPE, Registry
from operations.models import (
    Error,
    Health,
    History,
    ListOperations,
    Operation,
    OperationPage,
    ReadinessReport,
    ReadOperation,
    Transition,
    encode,
    read_query,
)
from operations.openapi import encoded_document
from operations.store import Store
from operations.tokens import TokenVerifier
from operations.waits import Waits

log = logging.getLogger("operations.api")

WAIT_RETRY_AFTER_SECONDS = 5
"""The Retry-After of a long-poll refused past its user's cap: waits last seconds, not less."""


class Json(JSONResponse):
    """A JSON answer encoded by msgspec: a model of :mod:`operations.models` or plain data."""

    def render(self, content: Any) -> bytes:
        return encode(content)


def problem(status: int, code: str, reason: str, headers: dict[str, str] | None = None) -> Json:
    return Json(Error(code, reason), status_code=status, headers=headers)


def unauthorized(reason: str) -> Json:
    return problem(401, "unauthorized", reason, {"WWW-Authenticate": 'Bearer realm="operations"'})


def not_found(operation_id: str) -> Json:
    return problem(404, "operation_not_found", OperationNotFound(operation_id).reason)


def operation_id_of(request: Request) -> str:
    """The path's operation id, normalised; raises :class:`OperationNotFound` (answered as an
    unknown operation) for an id no operation can have. Call it after the token is checked."""
    raw = request.path_params["id"]
    if not is_acceptable_id(raw):
        raise OperationNotFound(normalise_id(raw))
    return normalise_id(raw)


@dataclass
class Readiness:
    checks: dict[str, Callable[[], Awaitable[bool]]]

    async def report(self) -> dict[str, bool]:
        results = await asyncio.gather(*(check() for check in self.checks.values()))
        return dict(zip(self.checks, results, strict=True))


class OperationsApi:
    def __init__(
        self,
        store: Store,
        feed: ChangeFeed,
        verifier: TokenVerifier,
        readiness: Readiness,
        metrics: Registry,
        anonymous_reads: bool = False,
        waits: Waits | None = None,
    ) -> None:
        self.store = store
        self.feed = feed
        self.verifier = verifier
        self.readiness = readiness
        self.metrics = metrics
        self.anonymous_reads = anonymous_reads
        self.waits = waits or Waits(store, feed, metrics)

    @property
    def routes(self) -> list[Route]:
        return [
            Route("/health", self.health, methods=["GET"]),
            Route("/ready", self.ready, methods=["GET"]),
            Route("/metrics", self.metrics_text, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
            Route("/operations", self.list_operations, methods=["GET"]),
            Route("/operations/{id}", self.get_operation, methods=["GET"]),
            Route("/operations/{id}/history", self.get_history, methods=["GET"]),
        ]

    async def principal(self, request: Request, optional: bool = False) -> Principal | None:
        return await bearer_principal(request, self.verifier, optional)

    async def health(self, request: Request) -> Response:
        return Json(Health())

    async def ready(self, request: Request) -> Response:
        checks = await self.readiness.report()
        ready = all(checks.values())
        return Json(
            ReadinessReport("ready" if ready else "unavailable", checks),
            status_code=200 if ready else 503,
        )

    async def metrics_text(self, request: Request) -> Response:
        return PlainTextResponse(self.metrics.render(), media_type=CONTENT_TYPE)

    async def openapi(self, request: Request) -> Response:
        return Response(encoded_document(), media_type="application/json")

    async def _reader(self, request: Request) -> tuple[str, Principal | None]:
        """The operation asked for and who asks. The token is checked before anything is looked
        up, so a bad token gets 401 even for an unknown id."""
        principal = await self.principal(request, optional=self.anonymous_reads)
        return operation_id_of(request), principal

    async def _visible(self, operation_id: str, principal: Principal | None) -> Operation | None:
        """The record, or None when it is unknown, expired or another user's."""
        record = await self.store.get(operation_id)
        if record is None or principal is None or principal.may_read(record.user_id or ""):
            return record
        return None

    async def get_operation(self, request: Request) -> Response:
        operation_id, principal = await self._reader(request)
        wait = read_query(request.query_params, ReadOperation).wait
        known = request.headers.get("if-none-match")
        if wait > 0 and known is not None:
            return await self._await_change(request, operation_id, principal, known, wait)
        record = await self._visible(operation_id, principal)
        if record is None:
            return not_found(operation_id)
        return _answer(record, known)

    async def _await_change(
        self,
        request: Request,
        operation_id: str,
        principal: Principal | None,
        known: str,
        wait: float,
    ) -> Response:
        """Long-poll: answer once the record's ETag differs from ``known``, it is finished, or
        ``wait`` seconds have passed. The token is checked again at every change. Past the
        user's cap of waits, 429 at once, before the operation is looked up."""
        if principal is not None:
            who = principal.user_id
        else:  # anonymous reads: each client address is one user
            who = f"anonymous {request.client.host if request.client else ''}"
        with self.waits.admitted(who, "operation") as admitted:
            if not admitted:
                return problem(
                    429,
                    "too_many_waits",
                    f"at most {self.waits.per_user} long-polls may wait at once per user;"
                    " retry later, or follow the operation over Socket.IO",
                    {"Retry-After": str(WAIT_RETRY_AFTER_SECONDS)},
                )

            async def visible(record: Operation | None) -> Operation | None:
                _, principal = await self._reader(request)
                if record is None or principal is None or principal.may_read(record.user_id or ""):
                    return record
                return None

            record = await self.waits.until(
                operation_id, wait, lambda record: not _etag_matches(known, record.etag), visible
            )
        if record is None:
            return not_found(operation_id)
        return _answer(record, known)

    async def get_history(self, request: Request) -> Response:
        operation_id, principal = await self._reader(request)
        if await self._visible(operation_id, principal) is None:
            return not_found(operation_id)
        entries = await self.store.history(operation_id)
        return Json(History(operation_id, msgspec.convert(entries, list[Transition])))

    async def list_operations(self, request: Request) -> Response:
        principal = await self.principal(request)
        assert principal is not None
        params = read_query(request.query_params, ListOperations)
        if principal.is_admin:
            user_id = normalise_id(params.user_id) if params.user_id else None
        else:
            if params.user_id and normalise_id(params.user_id) != principal.user_id:
                return problem(403, "forbidden", "only admins may list other users' operations")
            user_id = principal.user_id
        query = ListQuery(
            user_id=user_id,
            state=params.state,
            name=params.name or None,
            limit=params.limit,
            cursor=params.cursor or None,
        )
        try:
            page = await self.store.page(query)
        except InvalidCursor as error:
            return problem(400, error.code, error.reason)
        return Json(OperationPage(page.items, page.next))


async def bearer_principal(
    request: Request, verifier: TokenVerifier, optional: bool = False
) -> Principal | None:
    """The principal of the request's bearer token; None only when optional and absent.
    Raises TokenError (answered with 401) for a missing or bad token."""
    header = request.headers.get("authorization")
    if header is None:
        if optional:
            return None
        raise TokenError("an Authorization: Bearer token is required")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenError("the Authorization header must be 'Bearer <token>'")
    return (await verifier.verify(token.strip())).principal


def _answer(record: Operation, known: str | None) -> Response:
    if known is not None and _etag_matches(known, record.etag):
        return Response(status_code=304, headers={"ETag": record.etag})
    return Json(record, headers={"ETag": record.etag, "Cache-Control": "no-cache"})


def _etag_matches(header: str, etag: str) -> bool:
    candidates = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return "*" in candidates or etag in candidates


async def on_token_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, TokenError)
    return unauthorized(error.reason)


async def on_invalid_request(request: Request, error: Exception) -> Response:
    assert isinstance(error, InvalidRequest)
    return _refused(request, error, 400)


async def on_payload_too_large(request: Request, error: Exception) -> Response:
    assert isinstance(error, PayloadTooLarge)
    return _refused(request, error, 413)


def _refused(request: Request, error: OperationsError, status: int) -> Response:
    """A request refused for what it sent: logged, counted by its code, answered."""
    log.info("refused %s %s: %s", request.method, request.url.path, error.reason)
    metrics = getattr(request.app.state, "metrics", None)
    if isinstance(metrics, Registry):
        metrics.invalid_requests.inc(code=error.code)
    return problem(status, error.code, error.reason)


async def on_store_unavailable(request: Request, error: Exception) -> Response:
    return problem(503, "store_unavailable", "the operation store is unreachable, retry later")


# Refusals a route may let through to be answered with their own code and reason.
REFUSAL_STATUS: dict[type[OperationsError], int] = {
    InvalidCursor: 400,
    OperationNotFound: 404,
    DeadLetterNotFound: 404,
    DeadLetterNotRedrivable: 409,
    BrokerUnavailable: 503,
}


async def on_refusal(request: Request, error: Exception) -> Response:
    assert isinstance(error, OperationsError)
    status = next(s for kind, s in REFUSAL_STATUS.items() if isinstance(error, kind))
    return problem(status, error.code, error.reason)


async def on_http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    codes = {400: "invalid_query", 404: "not_found", 405: "method_not_allowed"}
    code = codes.get(error.status_code, "http_error")
    return problem(error.status_code, code, error.detail, dict(error.headers or {}))


async def on_unexpected(request: Request, error: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    return problem(500, "internal_error", "the service failed to answer; it has been logged")


EXCEPTION_HANDLERS: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
    TokenError: on_token_error,
    InvalidRequest: on_invalid_request,
    PayloadTooLarge: on_payload_too_large,
    StoreUnavailable: on_store_unavailable,
    **dict.fromkeys(REFUSAL_STATUS, on_refusal),
    HTTPException: on_http_error,
    Exception: on_unexpected,
}
