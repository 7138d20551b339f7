"""Sagas over HTTP, for ops and for the user who owns one: ``GET /sagas`` (admins) lists recent
sagas, or those holding a business key's value (``?key=``), or the overdue ones
(``?overdue=true``), ``GET /sagas/types`` describes the saga types the service runs,
``GET /operations/{id}/saga`` shows the saga behind an operation, steps, compensations and its
progress along its type's path included, ``GET /sagas/types/{name}/steps`` (admins) shows how
a type's instances spread over its path. ``POST /operations/{id}/cancel`` cancels the saga
behind an operation, with an optional ``{"reason": ...}``. The bulk actions are in
:mod:`.http_bulk`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from operations.auth.identity import Principal
from operations.auth.tokens import TokenVerifier
from operations.backoff import Backoff
from operations.envelope import context_user_id, named_fields
from operations.errors import InvalidBody, OperationNotFound, PayloadTooLarge
from operations.http.models import bounded_body, read_body, read_query
from operations.http.responses import Json, bearer_principal, not_found, operation_id_of, problem
from operations.metrics import Registry
from operations.sagas.business_keys import key_fields
from operations.sagas.coordinator import Coordinator
from operations.sagas.models import (
    MAX_BODY_BYTES,
    Cancelled,
    CancelRequest,
    ListSagas,
    Sagas,
    SagaTypeList,
    SagaView,
    shown_times,
)
from operations.sagas.objectives import waiting_for, waiting_since
from operations.sagas.progress import step_seconds, type_steps
from operations.sagas.records import SagaRecord, SagaStatus
from operations.sagas.registry import SagaType, SagaTypes
from operations.sagas.store import SagaStore
from operations.store.redis_store import Store
from operations.tasks import BackgroundTasks

CANCEL_OUTCOMES = {
    202: "accepted",
    400: "invalid_body",
    404: "not_found",
    409: "not_cancellable",
    413: "payload_too_large",
    503: "broker_unavailable",
}

log = logging.getLogger("operations.sagas.http")

COMPENSATION_RETRY_SECONDS = 30.0
"""How long a cancel's compensation is tried again here before it is left to the watcher."""


def path_progress(saga_type: SagaType, record: SagaRecord) -> list[dict[str, str]]:
    """The type's path with this instance's progress: each message ``done``, ``compensated``,
    ``waiting`` (the next one a running saga waits for) or ``remaining``."""
    progress, waiting = [], record.status is SagaStatus.PENDING
    for message in saga_type.path:
        taken = [step for step in record.steps if step.message == message]
        if any(step.compensated for step in taken):
            status = "compensated"
        elif taken:
            status = "done"
        elif waiting:
            status, waiting = "waiting", False
        else:
            status = "remaining"
        progress.append({"message": message, "status": status})
    return progress


def saga_model(
    record: SagaRecord, saga_type: SagaType | None = None, cancellable: bool | None = None
) -> SagaView:
    document = saga_json(record, saga_type)
    if cancellable is not None:
        document["cancellable"] = cancellable
    return msgspec.convert(document, SagaView)


def saga_json(record: SagaRecord, saga_type: SagaType | None = None) -> dict[str, Any]:
    document = record.to_json()
    if saga_type is not None:
        document["path"] = path_progress(saga_type, record)
        document["stepSeconds"] = step_seconds(saga_type, record)
        document["waitingFor"] = waiting_for(saga_type, record)
        document["waitingSince"] = waiting_since(record)
        if record.code is not None and record.code in saga_type.reasons:
            document["plainReason"] = saga_type.reasons[record.code]
        document.update(lookouts(saga_type, record))
    internal = ("seen", "compensateSteps", "resumeAt", "traceContext", "keys", "overdueStep")
    for name in (*internal, "overdueAt"):  # not for readers
        document.pop(name, None)
    document["messageContext"] = named_fields(
        record.message_context, ("user", "name", "resourceId", "correlationId")
    )
    return shown_times(document)


def lookouts(saga_type: SagaType, record: SagaRecord) -> dict[str, Any]:
    """What an operator finds and flags a saga by: its business keys, the objective of the step
    it waits for (as in force when it began waiting), and whether it is overdue there now."""
    since, overdue = waiting_since(record), record.overdue
    objective = None
    if since is not None and record.overdue_at is not None:
        objective = round(record.overdue_at - since, 3)
    return {
        "businessKeys": key_fields(saga_type, record.data),
        "objectiveSeconds": objective,
        "overdue": overdue is not None,
        "overdueSince": None if overdue is None else overdue[1],
    }


def owner_of(record: SagaRecord) -> str:
    """The user the saga works for: ``message_context.user.id`` of its start message, read as
    the operation's owner is read (:func:`operations.envelope.context_user_id`)."""
    return context_user_id(record.message_context) or ""


class SagasApi:
    def __init__(
        self,
        verifier: TokenVerifier,
        store: SagaStore | None,
        saga_types: SagaTypes | None,
        operations: Store,
        coordinator: Callable[[], Coordinator | None] = lambda: None,
        metrics: Registry | None = None,
        tasks: BackgroundTasks | None = None,
    ) -> None:
        """``store`` and ``saga_types`` are None when the sagas are off: there are none to list,
        show or cancel. ``coordinator`` is None until the sagas have connected. A cancel's
        compensation runs in ``tasks``, which the service stops (cancelling it) at its stop."""
        self.verifier = verifier
        self.store = store
        self.saga_types = saga_types
        self.operations = operations
        self.coordinator = coordinator
        self.metrics = metrics or Registry()
        self._compensations = BackgroundTasks(self.metrics, log) if tasks is None else tasks

    @property
    def routes(self) -> list[Route]:
        return [
            Route("/sagas", self.list_sagas, methods=["GET"]),
            Route("/sagas/types", self.list_saga_types, methods=["GET"]),
            Route("/sagas/types/{name}/steps", self.type_steps, methods=["GET"]),
            Route("/operations/{id}/saga", self.operation_saga, methods=["GET"]),
            Route("/operations/{id}/cancel", self.cancel, methods=["POST"]),
        ]

    async def list_sagas(self, request: Request) -> Response:
        principal = await bearer_principal(request, self.verifier)
        assert principal is not None
        if not principal.is_admin:
            return problem(403, "forbidden", "listing sagas needs the admin role")
        query = read_query(request.query_params, ListSagas)
        if self.store is None:
            return Json(Sagas([]))
        saga_types = self.saga_types
        if query.key is not None:
            records = await self.store.holding(query.key, query.limit)
        elif query.overdue:
            steps = [] if saga_types is None else saga_types.objectives.steps
            records = await self.store.overdue(steps, query.limit)
        else:
            records = await self.store.recent(query.limit, query.status)
        if query.status is not None:
            records = [record for record in records if record.status is query.status]
        return Json(
            Sagas(
                [
                    saga_model(
                        record, None if saga_types is None else saga_types.get(record.saga_name)
                    )
                    for record in records
                ]
            )
        )

    async def list_saga_types(self, request: Request) -> Response:
        await bearer_principal(request, self.verifier)
        described = [] if self.saga_types is None else self.saga_types.describe()
        return Json(msgspec.convert({"items": described}, SagaTypeList))

    async def type_steps(self, request: Request) -> Response:
        """How many instances of a type wait at each step of its path now, and the median time
        they took over each step."""
        principal = await bearer_principal(request, self.verifier)
        assert principal is not None
        if not principal.is_admin:
            return problem(403, "forbidden", "a saga type's load needs the admin role")
        saga_name = request.path_params["name"]
        saga_type = None if self.saga_types is None else self.saga_types.get(saga_name)
        if saga_type is None or self.store is None:
            return problem(404, "saga_not_found", f"no saga type is named {saga_name!r}")
        assert self.saga_types is not None
        return Json(await type_steps(self.store, saga_type, self.saga_types.objectives))

    async def operation_saga(self, request: Request) -> Response:
        principal = await bearer_principal(request, self.verifier)
        assert principal is not None
        operation_id = operation_id_of(request)
        if self.store is None or self.saga_types is None:
            return not_found(operation_id)
        for saga_type in self.saga_types:
            loaded = await self.store.load(saga_type.name, operation_id)
            if loaded is None:
                continue
            if principal.may_read(owner_of(loaded.record)):
                cancellable = self._cancellable(saga_type, loaded.record)
                return Json(saga_model(loaded.record, saga_type, cancellable))
        return not_found(operation_id)

    def _cancellable(self, saga_type: SagaType, record: SagaRecord) -> bool:
        """Whether a cancellation would be accepted now: the saga runs and does not refuse."""
        if record.status is not SagaStatus.PENDING or self.saga_types is None:
            return False
        try:
            saga = self.saga_types.make(saga_type, record.id, saga_type.load_data(record.data))
        except Exception:  # data this version cannot read: the cancel route will say why
            log.warning("saga %s cannot be restored to ask whether it may be cancelled", record.key)
            return False
        return saga.refuses_cancel() is None

    def compensate_all(self, coordinator: Coordinator, sagas: list[tuple[str, str]]) -> None:
        """Runs the compensations of cancelled sagas one after another, in the background."""

        async def each() -> None:
            for saga_name, saga_id in sagas:
                await _compensate(coordinator, saga_name, saga_id)

        self._compensations.start("saga-compensations", each())

    async def cancel(self, request: Request) -> Response:
        response = await self._cancel(request)
        self.metrics.saga_cancels.inc(outcome=CANCEL_OUTCOMES.get(response.status_code, "other"))
        return response

    async def _cancel(self, request: Request) -> Response:
        """202 once the cancellation is committed to the store (the saga compensating, code
        ``cancelled``); its compensation then runs here, or, should this process die, in
        whichever process's deadline watcher sees it first."""
        principal = await bearer_principal(request, self.verifier)
        assert principal is not None
        try:
            operation_id = operation_id_of(request)
        except OperationNotFound as unknown:
            return not_found(unknown.operation_id)
        try:
            raw = await bounded_body(request, MAX_BODY_BYTES)
        except PayloadTooLarge as error:
            return problem(413, error.code, error.reason)
        try:
            asked = read_body(raw, CancelRequest) if raw.strip() else None
        except InvalidBody as error:
            log.info("cancel of %s refused: %s", operation_id, error.reason)
            return problem(400, error.code, error.reason)
        reason = asked.reason.strip() if asked is not None and asked.reason else None
        for saga_type in self.saga_types or []:
            assert self.store is not None
            loaded = await self.store.load(saga_type.name, operation_id)
            if loaded is None or not principal.may_read(owner_of(loaded.record)):
                continue
            if loaded.record.status is not SagaStatus.PENDING:
                return _not_cancellable(f"its saga is {loaded.record.status.value}")
            coordinator = self.coordinator()
            if coordinator is None:
                return problem(503, "broker_unavailable", "the sagas are not connected yet")
            cancellation = await coordinator.cancel(
                saga_type.name, operation_id, _by(principal, reason)
            )
            if not cancellation.accepted:
                return _not_cancellable(cancellation.reason)
            self._compensations.start(
                "saga-compensation", _compensate(coordinator, saga_type.name, operation_id)
            )
            return Json(Cancelled(operation_id), status_code=202)
        record = await self.operations.get(operation_id)
        if record is None or not principal.may_read(record.user_id or ""):
            return not_found(operation_id)
        if record.state.is_terminal:
            return _not_cancellable(f"the operation is already {record.state.value}")
        return _not_cancellable("no saga drives this operation")


async def _compensate(coordinator: Coordinator, saga_name: str, saga_id: str) -> None:
    """Runs a cancelled saga's compensation, trying again after a failure (Redis busy or away)
    for up to :data:`COMPENSATION_RETRY_SECONDS`; after that the deadline watcher resumes it."""
    backoff = Backoff(0.05, 2.0)
    give_up = time.monotonic() + COMPENSATION_RETRY_SECONDS
    while True:
        try:
            await coordinator.compensate(saga_name, saga_id)
            return
        except Exception as error:
            if time.monotonic() + backoff.delay > give_up:
                log.exception(
                    "compensation of cancelled saga %s:%s failed; the deadline watcher"
                    " will resume it",
                    saga_name,
                    saga_id,
                )
                return
            log.warning(
                "compensation of cancelled saga %s:%s failed, retrying in %.2fs: %r",
                saga_name,
                saga_id,
                backoff.delay,
                error,
            )
            await backoff.wait()


def _by(principal: Principal, reason: str | None) -> str:
    role = "an admin" if principal.is_admin else "its owner"
    by = f"cancelled by {role}, {principal.user_id}"
    return f"{by}: {reason}" if reason else by


def _not_cancellable(why: str) -> Response:
    return problem(409, "not_cancellable", f"the operation cannot be cancelled: {why}")
