"""Sagas over HTTP, for ops and for the user who owns one: ``GET /sagas`` (admins) lists recent
sagas, ``GET /operations/{id}/saga`` shows the saga behind an operation, steps and
compensations included."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..api import Json, bearer_principal, not_found, problem
from ..identity import normalise_id
from ..tokens import TokenVerifier
from .records import SagaRecord, SagaStatus
from .store import SagaStore

MAX_LIMIT = 500


def saga_json(record: SagaRecord) -> dict[str, Any]:
    document = record.to_json()
    for internal in ("seen", "compensateSteps", "resumeAt"):  # of no use to a reader
        document.pop(internal, None)
    document["messageContext"] = {
        key: value
        for key, value in record.message_context.items()
        if key.lower() in {"user", "name", "resourceid", "correlationid"}
    }
    return document


class SagasApi:
    def __init__(
        self,
        verifier: TokenVerifier,
        store: SagaStore | None,
        saga_names: Callable[[], list[str]],
    ) -> None:
        """``store`` is None when the sagas are off: there are none to list or show."""
        self.verifier = verifier
        self.store = store
        self.saga_names = saga_names

    @property
    def routes(self) -> list[Route]:
        return [
            Route("/sagas", self.list_sagas, methods=["GET"]),
            Route("/operations/{id}/saga", self.operation_saga, methods=["GET"]),
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

    async def operation_saga(self, request: Request) -> Response:
        principal = await bearer_principal(request, self.verifier)
        assert principal is not None
        operation_id = normalise_id(request.path_params["id"])
        if self.store is None:
            return not_found(operation_id)
        for name in self.saga_names():
            loaded = await self.store.load(name, operation_id)
            if loaded is None:
                continue
            user = loaded.record.message_context.get("user") or {}
            owner = normalise_id(str(user.get("id", ""))) if isinstance(user, dict) else ""
            if principal.may_read(owner):
                return Json(saga_json(loaded.record))
        return not_found(operation_id)
