"""The dead-letter workbench over HTTP (contract §9), for admins only. Its refusals (an unknown
id, a letter that cannot be redriven, a broker that does not confirm, a bad cursor) are raised,
and answered by the app's exception handlers (:data:`operations.http.operations.REFUSAL_STATUS`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from operations.auth.tokens import TokenVerifier
from operations.deadletters.letters import (
    MAX_BODY,
    DeadLetterGroups,
    GroupDiscarded,
    GroupQuery,
    GroupRedriven,
    ListDeadLetters,
    Redriven,
)
from operations.deadletters.redrive import Workbench
from operations.deadletters.store import DeadLetterStore
from operations.errors import DeadLetterNotFound
from operations.http.models import bounded_body, read_body, read_query
from operations.http.responses import Json, bearer_principal, problem

# A route's work, given the request and who asks for it (for the log of every action).
Action = Callable[[Request, str], Awaitable[Response]]


class DeadLettersApi:
    def __init__(
        self, verifier: TokenVerifier, store: DeadLetterStore, workbench: Workbench
    ) -> None:
        self.verifier = verifier
        self.store = store
        self.workbench = workbench

    @property
    def routes(self) -> list[Route]:
        admin = self._admin
        return [
            Route("/dead-letters", admin(self.list_letters), methods=["GET"]),
            Route("/dead-letters/groups", admin(self.groups), methods=["GET"]),
            Route("/dead-letters/redrive", admin(self.redrive_group), methods=["POST"]),
            Route("/dead-letters/discard", admin(self.discard_group), methods=["POST"]),
            Route("/dead-letters/{id}", admin(self.get_letter), methods=["GET"]),
            Route("/dead-letters/{id}", admin(self.discard), methods=["DELETE"]),
            Route("/dead-letters/{id}/redrive", admin(self.redrive), methods=["POST"]),
        ]

    def _admin(self, action: Action) -> Callable[[Request], Awaitable[Response]]:
        """The route ``action`` serves, to admins only (401 without a token, 403 for others)."""

        async def route(request: Request) -> Response:
            principal = await bearer_principal(request, self.verifier)
            assert principal is not None
            if not principal.is_admin:
                return problem(403, "forbidden", "only admins may read and repair dead letters")
            return await action(request, f"user {principal.user_id!r}")

        return route

    async def list_letters(self, request: Request, who: str) -> Response:
        query = read_query(request.query_params, ListDeadLetters)
        page = await self.store.page(
            query.queue or None, query.reason or None, query.limit, query.cursor or None
        )
        return Json(msgspec.to_builtins(page))

    async def groups(self, request: Request, who: str) -> Response:
        return Json(msgspec.to_builtins(DeadLetterGroups(await self.store.groups())))

    async def get_letter(self, request: Request, who: str) -> Response:
        letter_id = request.path_params["id"]
        letter = await self.store.get(letter_id)
        if letter is None:
            raise DeadLetterNotFound(letter_id)
        return Json(msgspec.to_builtins(letter.item))

    async def redrive(self, request: Request, who: str) -> Response:
        letter_id = request.path_params["id"]
        await self.workbench.redrive(letter_id, who)
        return Json(msgspec.to_builtins(Redriven(letter_id, True)))

    async def discard(self, request: Request, who: str) -> Response:
        await self.workbench.discard(request.path_params["id"], who)
        return Response(status_code=204)

    async def redrive_group(self, request: Request, who: str) -> Response:
        group = await _group(request)
        redriven, skipped = await self.workbench.redrive_group(group.queue, group.reason, who)
        return Json(msgspec.to_builtins(GroupRedriven(redriven, skipped)))

    async def discard_group(self, request: Request, who: str) -> Response:
        group = await _group(request)
        discarded = await self.workbench.discard_group(group.queue, group.reason, who)
        return Json(msgspec.to_builtins(GroupDiscarded(discarded)))


async def _group(request: Request) -> GroupQuery:
    return read_body(await bounded_body(request, MAX_BODY), GroupQuery)
