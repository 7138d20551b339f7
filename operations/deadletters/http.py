"""The dead-letter workbench over HTTP (contract §9), for admins only."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..api import Json, bearer_principal, problem
from ..errors import BrokerUnavailable, DeadLetterNotFound, DeadLetterNotRedrivable
from ..identity import Principal
from ..listing import InvalidCursor
from ..models import read_body, read_query
from ..tokens import TokenVerifier
from .letters import (
    MAX_BODY,
    DeadLetterGroups,
    GroupDiscarded,
    GroupQuery,
    GroupRedriven,
    ListDeadLetters,
    Redriven,
)
from .redrive import Workbench
from .store import DeadLetterStore


def _document(value: msgspec.Struct) -> Any:
    return msgspec.to_builtins(value)


class DeadLettersApi:
    def __init__(
        self, verifier: TokenVerifier, store: DeadLetterStore, workbench: Workbench
    ) -> None:
        self.verifier = verifier
        self.store = store
        self.workbench = workbench

    @property
    def routes(self) -> list[Route]:
        return [
            Route("/dead-letters", self.list_letters, methods=["GET"]),
            Route("/dead-letters/groups", self.groups, methods=["GET"]),
            Route("/dead-letters/redrive", self.redrive_group, methods=["POST"]),
            Route("/dead-letters/discard", self.discard_group, methods=["POST"]),
            Route("/dead-letters/{id}", self.get_letter, methods=["GET"]),
            Route("/dead-letters/{id}", self.discard, methods=["DELETE"]),
            Route("/dead-letters/{id}/redrive", self.redrive, methods=["POST"]),
        ]

    async def _admin(self, request: Request) -> Principal | Response:
        principal = await bearer_principal(request, self.verifier)
        assert principal is not None
        if not principal.is_admin:
            return problem(403, "forbidden", "only admins may read and repair dead letters")
        return principal

    async def list_letters(self, request: Request) -> Response:
        principal = await self._admin(request)
        if isinstance(principal, Response):
            return principal
        query = read_query(request.query_params, ListDeadLetters)
        try:
            page = await self.store.page(
                query.queue or None, query.reason or None, query.limit, query.cursor or None
            )
        except InvalidCursor as error:
            return problem(400, error.code, error.reason)
        return Json(_document(page))

    async def groups(self, request: Request) -> Response:
        principal = await self._admin(request)
        if isinstance(principal, Response):
            return principal
        return Json(_document(DeadLetterGroups(await self.store.groups())))

    async def get_letter(self, request: Request) -> Response:
        principal = await self._admin(request)
        if isinstance(principal, Response):
            return principal
        letter_id = request.path_params["id"]
        letter = await self.store.get(letter_id)
        if letter is None:
            return _not_found(DeadLetterNotFound(letter_id))
        return Json(_document(letter.item))

    async def redrive(self, request: Request) -> Response:
        principal = await self._admin(request)
        if isinstance(principal, Response):
            return principal
        letter_id = request.path_params["id"]
        try:
            await self.workbench.redrive(letter_id, _who(principal))
        except DeadLetterNotFound as error:
            return _not_found(error)
        except DeadLetterNotRedrivable as error:
            return problem(409, error.code, error.reason)
        except BrokerUnavailable as error:
            return problem(503, error.code, error.reason)
        return Json(_document(Redriven(letter_id, True)))

    async def discard(self, request: Request) -> Response:
        principal = await self._admin(request)
        if isinstance(principal, Response):
            return principal
        try:
            await self.workbench.discard(request.path_params["id"], _who(principal))
        except DeadLetterNotFound as error:
            return _not_found(error)
        return Response(status_code=204)

    async def redrive_group(self, request: Request) -> Response:
        principal = await self._admin(request)
        if isinstance(principal, Response):
            return principal
        query = await _group(request)
        if isinstance(query, Response):
            return query
        try:
            redriven, skipped = await self.workbench.redrive_group(
                query.queue, query.reason, _who(principal)
            )
        except BrokerUnavailable as error:
            return problem(503, error.code, error.reason)
        return Json(_document(GroupRedriven(redriven, skipped)))

    async def discard_group(self, request: Request) -> Response:
        principal = await self._admin(request)
        if isinstance(principal, Response):
            return principal
        query = await _group(request)
        if isinstance(query, Response):
            return query
        discarded = await self.workbench.discard_group(query.queue, query.reason, _who(principal))
        return Json(_document(GroupDiscarded(discarded)))


async def _group(request: Request) -> GroupQuery | Response:
    body = await request.body()
    if len(body) > MAX_BODY:
        return problem(413, "payload_too_large", f"the body is larger than {MAX_BODY} bytes")
    return read_body(body, GroupQuery)


def _who(principal: Principal) -> str:
    return f"user {principal.user_id!r}"


def _not_found(error: DeadLetterNotFound) -> Response:
    return problem(404, error.code, error.reason)
