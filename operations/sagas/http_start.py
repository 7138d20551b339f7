"""Starting a saga over HTTP: ``POST /sagas/{name}`` for any saga type that sets ``http_start``
(and, through the same :class:`SagaStarter`, Pacco's ``POST /orders``).

The start message is published through the broker, never handed to the coordinator directly: on
the exchange the catalogue lists it under, with a new correlation id (the operation id), the
caller as ``message_context.user`` and ``Saga: Pending``, and the answer waits for the broker's
confirm. The saga and the operation both start from that message, as from any other.

``Prefer: wait=N`` (RFC 7240, N up to 60 seconds) answers ``200`` with the operation's record if
it is final within N seconds, and ``202`` otherwise (at once when the service begins to stop);
both carry ``Preference-Applied``.

An ``Idempotency-Key`` header makes a retried start safe (:mod:`operations.sagas.idempotency`):
a repeat with the same key and body is answered as the first was, with the same operation id,
and ``Idempotent-Replayed: true``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from aiormq.exceptions import AMQPError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from operations import tracing
from operations.amqp.publisher import AmqpPublisher, OutgoingMessage
from operations.auth.identity import ADMIN_ROLE, Principal, id_problem
from operations.auth.tokens import TokenVerifier
from operations.errors import BrokerUnavailable
from operations.feed import ChangeFeed
from operations.http.models import Operation, bounded_body, read_body
from operations.http.responses import Json, bearer_principal, problem
from operations.metrics import Registry
from operations.sagas.idempotency import (
    HEADER,
    Idempotency,
    IdempotentRequest,
    Started,
    idempotency_key,
)
from operations.sagas.models import MAX_BODY_BYTES, MAX_WAIT_SECONDS, SagaStarted
from operations.sagas.registry import SagaTypes
from operations.states import State
from operations.store.redis_store import Store
from operations.waits import Waits

PUBLISH_SECONDS = 30
"""The most a start message's publish may take, confirm included (the broker may hang)."""
REPLAYED = {"Idempotent-Replayed": "true"}


class SagaStarter:
    """Publishes a saga's start message for a caller; shared by every HTTP route that starts
    one."""

    def __init__(
        self,
        publisher: Callable[[], AmqpPublisher | None],
        idempotency: Idempotency | None = None,
    ) -> None:
        self.publisher = publisher
        self.idempotency = idempotency

    async def start(
        self,
        principal: Principal,
        exchange: str,
        message: str,
        body: Mapping[str, Any],
        resource_id: str | None = None,
        request: IdempotentRequest | None = None,
    ) -> Started:
        """The new operation, once the broker has confirmed the start message; or, for a
        ``request`` whose key was used before, the first one's (replayed). Raises
        :class:`BrokerUnavailable` when it could not be handed over, and the refusals of
        :meth:`Idempotency.start`."""
        fresh = Started(str(uuid.uuid4()), resource_id)

        async def publish() -> None:
            await self._publish(principal, exchange, message, body, fresh)

        if request is None or self.idempotency is None:
            await publish()
            return fresh
        return await self.idempotency.start(principal.user_id, request, fresh, publish)

    async def _publish(
        self,
        principal: Principal,
        exchange: str,
        message: str,
        body: Mapping[str, Any],
        started: Started,
    ) -> None:
        publisher = self.publisher()
        if publisher is None:
            raise BrokerUnavailable("the message broker is not connected yet")
        operation_id = started.operation_id
        context = caller_context(principal, operation_id, message, started.resource_id)
        try:
            async with asyncio.timeout(PUBLISH_SECONDS):
                await publisher.publish(
                    OutgoingMessage(
                        exchange,
                        message,
                        body,
                        correlation_id=operation_id,
                        message_id=uuid.uuid4().hex,
                        message_context=context,
                        saga=State.PENDING,
                    )
                )
        except (AMQPError, ConnectionError, TimeoutError, RuntimeError):
            raise BrokerUnavailable(f"{message} could not be handed to the broker") from None


def caller_context(
    principal: Principal, operation_id: str, name: str, resource_id: str | None
) -> dict[str, Any]:
    """A CorrelationContext naming the caller as the user, as a Convey API gateway writes it."""
    return {
        "correlationId": operation_id,
        "user": {
            "id": principal.user_id,
            "isAuthenticated": True,
            "role": ADMIN_ROLE if principal.is_admin else "user",
            "claims": {},
        },
        "name": name,
        "resourceId": resource_id,
        "traceId": _trace_id(),
        "connectionId": None,
        "createdAt": dt.datetime.now(dt.UTC).isoformat(),
    }


def _trace_id() -> str:
    """The current trace's id (so Convey services log the same id), or a fresh one."""
    ids = tracing.current_ids()
    return ids[0] if ids is not None else uuid.uuid4().hex


def preferred_wait(request: Request) -> int | None:
    """The ``wait`` preference of the ``Prefer`` headers in seconds (at most 60), or None.

    A preference the service does not understand, or a malformed value, is ignored, as RFC 7240
    asks."""
    for header in request.headers.getlist("prefer"):
        for preference in header.split(","):
            name, _, value = preference.split(";", 1)[0].strip().partition("=")
            if name.strip().lower() != "wait":
                continue
            value = value.strip().strip('"')
            if value.isascii() and value.isdigit():
                # Any number of digits: only the first few can matter under the cap.
                digits = value.lstrip("0") or "0"
                return MAX_WAIT_SECONDS if len(digits) > 3 else min(int(digits), MAX_WAIT_SECONDS)
    return None


class SagaStartApi:
    def __init__(
        self,
        verifier: TokenVerifier,
        saga_types: SagaTypes,
        starter: SagaStarter,
        operations: Store,
        feed: ChangeFeed,
        waits: Waits | None = None,
    ) -> None:
        self.verifier = verifier
        self.saga_types = saga_types
        self.starter = starter
        self.operations = operations
        self.feed = feed
        self.waits = waits or Waits(operations, feed, Registry())

    @property
    def routes(self) -> list[Route]:
        return [Route("/sagas/{name}", self.start_saga, methods=["POST"])]

    async def start_saga(self, request: Request) -> Response:
        principal = await bearer_principal(request, self.verifier)
        assert principal is not None
        saga_name = request.path_params["name"]
        saga_type = self.saga_types.get(saga_name)
        if saga_type is None or saga_type.http_start is None:
            named = repr(saga_name) if id_problem(saga_name) is None else "by that name"
            return problem(404, "saga_not_found", f"no saga type {named} starts over HTTP")
        key = idempotency_key(request.headers.getlist(HEADER))
        body = read_body(await bounded_body(request, MAX_BODY_BYTES), dict)
        wait = preferred_wait(request)
        message = saga_type.http_start
        repeatable = (
            None
            if key is None
            else IdempotentRequest.of("saga_start", f"/sagas/{saga_name}", key, body)
        )
        try:
            started = await self.starter.start(
                principal, self.saga_types.exchange_of(message), message, body, request=repeatable
            )
        except BrokerUnavailable as error:
            return problem(503, error.code, error.reason)
        operation_id = started.operation_id
        headers = {"Request-ID": operation_id, "Location": f"/operations/{operation_id}"}
        if started.replayed:
            headers.update(REPLAYED)
        if wait is not None:
            headers["Vary"] = "Prefer"
            # Past the user's cap of waits, the preference is not applied: 202 at once.
            with self.waits.admitted(principal.user_id, "saga_start") as admitted:
                if admitted:
                    headers["Preference-Applied"] = f"wait={wait}"
                    final = await self._final_within(operation_id, wait)
                    if final is not None:
                        return Json(final, headers={**headers, "ETag": final.etag})
        return Json(SagaStarted(operation_id), status_code=202, headers=headers)

    async def _final_within(self, operation_id: str, seconds: float) -> Operation | None:
        """The operation's record once it is final, or None if it is not within ``seconds``."""
        record = await self.waits.until(
            operation_id, seconds, lambda record: False, until_created=True
        )
        return record if record is not None and record.state.is_terminal else None
