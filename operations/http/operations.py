"""The HTTP API (contract §4): operations, their history, health, readiness, metrics, OpenAPI."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import msgspec
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from operations.auth.identity import Principal, normalise_id
from operations.auth.tokens import TokenVerifier
from operations.feed import ChangeFeed
from operations.http.endpoints import Endpoint
from operations.http.models import (
    Health,
    History,
    ListOperations,
    Operation,
    OperationPage,
    ReadinessReport,
    ReadOperation,
    Transition,
    read_query,
)
from operations.http.openapi import ENDPOINTS, encoded_document
from operations.http.responses import Json, bearer_principal, not_found, operation_id_of, problem
from operations.metrics import CONTENT_TYPE, Registry
from operations.readiness import Readiness
from operations.store.listing import InvalidCursor, ListQuery
from operations.store.redis_store import Store
from operations.waits import Waits

log = logging.getLogger("operations.http.operations")

WAIT_RETRY_AFTER_SECONDS = 5
"""The Retry-After of a long-poll refused past its user's cap: waits last seconds, not less."""


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
        endpoints: Sequence[Endpoint] = ENDPOINTS,
    ) -> None:
        self.store = store
        self.feed = feed
        self.verifier = verifier
        self.readiness = readiness
        self.metrics = metrics
        self.anonymous_reads = anonymous_reads
        self.waits = waits or Waits(store, feed, metrics)
        self.document = encoded_document(endpoints)

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
        return Response(self.document, media_type="application/json")

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
        ``wait`` seconds have passed, or the service begins to stop. The token is
        checked again at every change. Past the user's cap of waits, 429 at once, before the
        operation is looked up."""
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


def _answer(record: Operation, known: str | None) -> Response:
    if known is not None and _etag_matches(known, record.etag):
        return Response(status_code=304, headers={"ETag": record.etag})
    return Json(record, headers={"ETag": record.etag, "Cache-Control": "no-cache"})


def _etag_matches(header: str, etag: str) -> bool:
    candidates = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return "*" in candidates or etag in candidates
