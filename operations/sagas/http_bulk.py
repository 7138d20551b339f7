"""What an admin does to many sagas at once: ``POST /sagas/cancel`` and ``POST /sagas/retry`` by
a filter (type, the step waited for, waiting longer than, business key, overdue), and
``POST /operations/{id}/saga/retry`` for one.

A run finds the running sagas the filter matches (at most :data:`MAX_MATCHED`), then sends each
through the ordinary single-saga path, which checks the filter again against the saga as
committed: one that moved on meanwhile is skipped, never touched. So a run is safe to repeat:
what it cancelled no longer runs, what it retried is held for the retry window. A dry run
answers the count and a sample and changes nothing. Every saga acted on or skipped gets one
line in the ``operations.sagas.audit`` log naming the admin.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from operations.auth.identity import Principal
from operations.auth.tokens import TokenVerifier
from operations.errors import InvalidBody, OperationNotFound, PayloadTooLarge
from operations.http.models import bounded_body, read_body
from operations.http.responses import Json, bearer_principal, not_found, operation_id_of, problem
from operations.metrics import Registry
from operations.sagas.coordinator import Coordinator
from operations.sagas.models import (
    MAX_BODY_BYTES,
    BulkRequest,
    BulkResult,
    BulkSample,
    Retried,
    SagaFilter,
)
from operations.sagas.objectives import waiting_for, waiting_since
from operations.sagas.records import SagaRecord, SagaStatus
from operations.sagas.registry import SagaTypes
from operations.sagas.retries import DEFAULT_WINDOW_SECONDS, retry_waiting_step
from operations.sagas.store import SagaStore
from operations.timestamps import rfc3339

log = logging.getLogger("operations.sagas.bulk")
audit = logging.getLogger("operations.sagas.audit")

MAX_MATCHED = 10_000
SAMPLE_SIZE = 20
AT_ONCE = 16  # sagas a run works on at a time, so one run takes a bounded share of Redis

Compensate = Callable[[Coordinator, str, str], Awaitable[None]]


def matcher(wanted: SagaFilter, saga_types: SagaTypes) -> Callable[[SagaRecord], bool]:
    """Whether a saga, as stored now, is one the filter takes: running, and every field given
    holds."""

    def matches(record: SagaRecord) -> bool:
        saga_type = saga_types.get(record.saga_name)
        if record.status is not SagaStatus.PENDING or saga_type is None:
            return False
        if wanted.saga is not None and record.saga_name != wanted.saga:
            return False
        if wanted.waiting_for is not None and waiting_for(saga_type, record) != wanted.waiting_for:
            return False
        if wanted.waiting_longer_than is not None:
            since = waiting_since(record)
            if since is None or time.time() - since <= wanted.waiting_longer_than:
                return False
        if wanted.key is not None and wanted.key not in record.keys:
            return False
        return wanted.overdue is None or (record.overdue is not None) == wanted.overdue

    return matches


class BulkApi:
    def __init__(
        self,
        verifier: TokenVerifier,
        store: SagaStore | None,
        saga_types: SagaTypes | None,
        coordinator: Callable[[], Coordinator | None],
        compensate: Callable[[Coordinator, list[tuple[str, str]]], None],
        metrics: Registry,
        retry_window: float = DEFAULT_WINDOW_SECONDS,
    ) -> None:
        """``compensate`` runs the compensations of the sagas a cancel committed, in the
        background (the deadline watcher resumes any this process does not finish)."""
        self.verifier = verifier
        self.store = store
        self.saga_types = saga_types
        self.coordinator = coordinator
        self.compensate = compensate
        self.metrics = metrics
        self.retry_window = retry_window

    @property
    def routes(self) -> list[Route]:
        return [
            Route("/sagas/cancel", self.cancel_matching, methods=["POST"]),
            Route("/sagas/retry", self.retry_matching, methods=["POST"]),
            Route("/operations/{id}/saga/retry", self.retry_one, methods=["POST"]),
        ]

    async def _admin(self, request: Request, doing: str) -> Principal | Response:
        principal = await bearer_principal(request, self.verifier)
        assert principal is not None
        if not principal.is_admin:
            return problem(403, "forbidden", f"{doing} needs the admin role")
        return principal

    async def _request(self, request: Request) -> BulkRequest | Response:
        try:
            return read_body(await bounded_body(request, MAX_BODY_BYTES), BulkRequest)
        except PayloadTooLarge as error:
            return problem(413, error.code, error.reason)
        except InvalidBody as error:
            return problem(400, error.code, error.reason)

    async def cancel_matching(self, request: Request) -> Response:
        return await self._run(request, "cancel")

    async def retry_matching(self, request: Request) -> Response:
        return await self._run(request, "retry")

    async def _run(self, request: Request, action: str) -> Response:
        principal = await self._admin(request, f"a bulk {action}")
        if isinstance(principal, Response):
            return principal
        asked = await self._request(request)
        if isinstance(asked, Response):
            return asked
        if self.store is None or self.saga_types is None:
            return Json(BulkResult(0, 0, 0, {}, [], asked.dry_run))
        matches = matcher(asked.filter, self.saga_types)
        matched = [record for record in await self._candidates(asked.filter) if matches(record)]
        sample = [self._sample(record) for record in matched[:SAMPLE_SIZE]]
        if asked.dry_run:
            return Json(BulkResult(len(matched), 0, 0, {}, sample, True))
        coordinator = self.coordinator()
        if coordinator is None:
            return problem(503, "broker_unavailable", "the sagas are not connected yet")
        act = self._cancel if action == "cancel" else self._retry
        by = _by(principal, asked.reason)
        outcomes = [""] * len(matched)
        todo = iter(enumerate(matched))

        async def worker() -> None:
            for number, record in todo:  # shared: each saga is taken by one worker
                try:
                    why = await act(coordinator, record, matches, by)
                except Exception as error:  # Redis or the broker away: this one, not the run
                    log.warning("bulk %s of saga %s failed: %r", action, record.key, error)
                    why = "failed"
                self.metrics.saga_operator_actions.inc(action=action, outcome=why)
                _audit(action, record, why, principal, asked.filter)
                outcomes[number] = why

        await asyncio.gather(*(worker() for _ in range(min(AT_ONCE, len(matched)))))
        if action == "cancel":
            cancelled = [
                (record.saga_name, record.id)
                for record, why in zip(matched, outcomes, strict=True)
                if why == "acted"
            ]
            if cancelled:
                self.compensate(coordinator, cancelled)
        skipped = Counter(why for why in outcomes if why != "acted")
        acted = len(outcomes) - sum(skipped.values())
        result = BulkResult(
            len(matched), acted, sum(skipped.values()), dict(skipped), sample, False
        )
        return Json(result)

    async def _candidates(self, wanted: SagaFilter) -> list[SagaRecord]:
        """Sagas that may match, read from the narrowest index the filter allows."""
        assert self.store is not None and self.saga_types is not None
        if wanted.key is not None:
            return await self.store.holding(wanted.key, MAX_MATCHED)
        if wanted.overdue:
            steps = [
                (saga_name, step)
                for saga_name, step in self.saga_types.objectives.steps
                if wanted.saga in (None, saga_name) and wanted.waiting_for in (None, step)
            ]
            return await self.store.overdue(steps, MAX_MATCHED)
        names = [wanted.saga] if wanted.saga is not None else self.saga_types.names
        found: list[SagaRecord] = []
        for saga_name in names:
            found.extend(await self.store.recent(MAX_MATCHED, SagaStatus.PENDING, saga_name))
        return found[:MAX_MATCHED]

    async def _cancel(
        self,
        coordinator: Coordinator,
        record: SagaRecord,
        matches: Callable[[SagaRecord], bool],
        by: str,
    ) -> str:
        cancellation = await coordinator.cancel(record.saga_name, record.id, by, matches)
        return "acted" if cancellation.accepted else cancellation.why

    async def _retry(
        self,
        coordinator: Coordinator,
        record: SagaRecord,
        matches: Callable[[SagaRecord], bool],
        by: str,
    ) -> str:
        retry = await retry_waiting_step(
            coordinator, record.saga_name, record.id, self.retry_window, matches
        )
        return "acted" if retry.why == "retried" else retry.why

    def _sample(self, record: SagaRecord) -> BulkSample:
        saga_type = None if self.saga_types is None else self.saga_types.get(record.saga_name)
        since = waiting_since(record)
        return BulkSample(
            record.saga_name,
            record.id,
            record.correlation_id,
            None if saga_type is None else waiting_for(saga_type, record),
            None if since is None else rfc3339(since),
        )

    async def retry_one(self, request: Request) -> Response:
        principal = await self._admin(request, "a retry")
        if isinstance(principal, Response):
            return principal
        try:
            operation_id = operation_id_of(request)
        except OperationNotFound as unknown:
            return not_found(unknown.operation_id)
        coordinator = self.coordinator()
        for saga_type in self.saga_types or []:
            assert self.store is not None
            if await self.store.load(saga_type.name, operation_id) is None:
                continue
            if coordinator is None:
                return problem(503, "broker_unavailable", "the sagas are not connected yet")
            retry = await retry_waiting_step(
                coordinator, saga_type.name, operation_id, self.retry_window
            )
            why = "acted" if retry.why == "retried" else retry.why
            self.metrics.saga_operator_actions.inc(action="retry", outcome=why)
            if retry.record is not None:
                _audit("retry", retry.record, why, principal, None)
            if retry.why in ("retried", "repeated"):
                repeated = retry.why == "repeated"
                return Json(Retried(operation_id, retry.published, repeated), status_code=202)
            return problem(409, "not_retryable", _NOT_RETRYABLE[retry.why])
        return not_found(operation_id)


_NOT_RETRYABLE = {
    "finished": "its saga no longer runs",
    "moved_on": "its saga moved on",
    "nothing_to_resend": "its saga has published nothing to send again",
}


def _by(principal: Principal, reason: str | None) -> str:
    by = f"cancelled by an admin, {principal.user_id}"
    return f"{by}: {reason.strip()}" if reason and reason.strip() else by


def _audit(
    action: str, record: SagaRecord, why: str, principal: Principal, wanted: SagaFilter | None
) -> None:
    shown: dict[str, Any] = {}
    if wanted is not None:
        shown = {name: value for name, value in _filter_fields(wanted) if value is not None}
    done = {"cancel": "cancelled", "retry": "retried"}[action]
    audit.info(
        "saga %s:%s %s by admin %s%s",
        record.saga_name,
        record.id,
        done if why == "acted" else f"left alone ({why})",
        principal.user_id,
        "" if wanted is None else f" in a bulk {action}, filter {shown}",
        extra={"correlation_id": record.correlation_id},
    )


def _filter_fields(wanted: SagaFilter) -> list[tuple[str, Any]]:
    return [
        ("saga", wanted.saga),
        ("waitingFor", wanted.waiting_for),
        ("waitingLongerThan", wanted.waiting_longer_than),
        ("key", wanted.key),
        ("overdue", wanted.overdue),
    ]
