"""Sagas over HTTP, for ops and for the user who owns one: ``GET /sagas`` (admins) lists recent
sagas, ``GET /sagas/types`` describes the saga types the service runs, ``GET /operations/{id}/saga``
shows the saga behind an operation, steps, compensations and its progress along its type's path
included. ``POST /operations/{id}/cancel`` cancels the saga behind an operation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..api import Json, bearer_principal, not_found, problem
from ..identity import Principal, normalise_id
from ..store import Store
from ..tokens import TokenVerifier
from .coordinator import Coordinator
from .records import SagaRecord, SagaStatus
from .registry import SagaType, SagaTypes
from .store import SagaStore

MAX_LIMIT = 500
log = logging.getLogger("operations.sagas.http")


def path_progress(kind: SagaType, record: SagaRecord) -> list[dict[str, str]]:
    """The type's path with this instance's progress: each message ``done``, ``compensated``,
    ``waiting`` (the next one a running saga waits for) or ``remaining``."""
    progress, waiting = [], record.status is SagaStatus.PENDING
    for message in kind.path:
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


def saga_json(record: SagaRecord, kind: SagaType | None = None) -> dict[str, Any]:
    document = record.to_json()
    if kind is not None:
        document["path"] = path_progress(kind, record)
    for internal in ("seen", "compensateSteps", "resumeAt", "traceContext"):  # not for readers
        document.pop(internal, None)
    document["messageContext"] = {
        key: value
        for key, value in record.message_context.items()
        if key.lower() in {"user", "name", "resourceid", "correlationid"}
    }
    return document


def _field(document: Mapping[str, Any], name: str) -> Any:
    """A field by camelCase name, found in PascalCase too (a .NET publisher's context)."""
    for key, value in document.items():
        if key.lower() == name.lower():
            return value
    return None


def owner_of(record: SagaRecord) -> str:
    """The user the saga works for: ``message_context.user.id`` of its start message."""
    user = _field(record.message_context, "user")
    owner = _field(user, "id") if isinstance(user, dict) else None
    return normalise_id(str(owner)) if owner is not None else ""


class SagasApi:
    def __init__(
        self,
        verifier: TokenVerifier,
        store: SagaStore | None,
        types: SagaTypes | None,
        operations: Store,
        coordinator: Callable[[], Coordinator | None] = lambda: None,
    ) -> None:
        """``store`` and ``types`` are None when the sagas are off: there are none to list,
        show or cancel. ``coordinator`` is None until the sagas have connected."""
        self.verifier = verifier
        self.store = store
        self.types = types
        self.operations = operations
        self.coordinator = coordinator
        self._compensations: set[asyncio.Task[Any]] = set()

    @property
    def routes(self) -> list[Route]:
        return [
            Route("/sagas", self.list_sagas, methods=["GET"]),
            Route("/sagas/types", self.saga_types, methods=["GET"]),
            Route("/operations/{id}/saga", self.operation_saga, methods=["GET"]),
            Route("/operations/{id}/cancel", self.cancel, methods=["POST"]),
        ]

    async def list_sagas(self, request: Request) -> Response:
        principal = await bearer_principal(request, self.verifier)
        assert principal is not None
        if not principal.is_admin:
            return problem(403, "forbidden", "listing sagas needs the admin role")
        status = request.query_params.get("status")
        if status is not None and status not in {s.value for s in SagaStatus}:
            allowed = ", ".join(s.value for s in SagaStatus)
            return problem(400, "invalid_query", f"status must be one of {allowed}")
        try:
            limit = int(request.query_params.get("limit", "100"))
        except ValueError:
            return problem(400, "invalid_query", "limit must be a whole number")
        if not 1 <= limit <= MAX_LIMIT:
            return problem(400, "invalid_query", f"limit must be between 1 and {MAX_LIMIT}")
        if self.store is None:
            return Json({"items": []})
        records = await self.store.recent(limit, None if status is None else SagaStatus(status))
        return Json({"items": [saga_json(record) for record in records]})

    async def saga_types(self, request: Request) -> Response:
        await bearer_principal(request, self.verifier)
        return Json({"items": [] if self.types is None else self.types.describe()})

    async def operation_saga(self, request: Request) -> Response:
        principal = await bearer_principal(request, self.verifier)
        assert principal is not None
        operation_id = normalise_id(request.path_params["id"])
        if self.store is None or self.types is None:
            return not_found(operation_id)
        for kind in self.types:
            loaded = await self.store.load(kind.name, operation_id)
            if loaded is None:
                continue
            if principal.may_read(owner_of(loaded.record)):
                return Json(saga_json(loaded.record, kind))
        return not_found(operation_id)

    async def cancel(self, request: Request) -> Response:
        """202 once the cancellation is committed to the store (the saga compensating, code
        ``cancelled``); its compensation then runs here, or, should this process die, in
        whichever process's deadline watcher sees it first."""
        principal = await bearer_principal(request, self.verifier)
        assert principal is not None
        operation_id = normalise_id(request.path_params["id"])
        for kind in self.types or []:
            assert self.store is not None
            loaded = await self.store.load(kind.name, operation_id)
            if loaded is None or not principal.may_read(owner_of(loaded.record)):
                continue
            if loaded.record.status is not SagaStatus.PENDING:
                return _not_cancellable(f"its saga is {loaded.record.status.value}")
            coordinator = self.coordinator()
            if coordinator is None:
                return problem(503, "broker_unavailable", "the sagas are not connected yet")
            cancellation = await coordinator.cancel(kind.name, operation_id, _by(principal))
            if not cancellation.accepted:
                return _not_cancellable(cancellation.reason)
            task = asyncio.create_task(coordinator.compensate(kind.name, operation_id))
            self._compensations.add(task)
            task.add_done_callback(self._compensations.discard)
            return Json({"operationId": operation_id, "cancelled": True}, status_code=202)
        record = await self.operations.get(operation_id)
        if record is None or not principal.may_read(record.user_id or ""):
            return not_found(operation_id)
        if record.state.is_terminal:
            return _not_cancellable(f"the operation is already {record.state.value}")
        return _not_cancellable("no saga drives this operation")


def _by(principal: Principal) -> str:
    role = "an admin" if principal.is_admin else "its owner"
    return f"cancelled by {role}, {principal.user_id}"


def _not_cancellable(why: str) -> Response:
    return problem(409, "not_cancellable", f"the operation cannot be cancelled: {why}")
