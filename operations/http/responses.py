"""Answers and refusals shared by every route: JSON encoded by msgspec, problems with a code and a
reason, the caller's bearer principal, the operation id of a path, and the exception handlers that
turn the service's errors into HTTP answers (each refusal logged and counted)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from operations.auth.identity import Principal, is_acceptable_id, normalise_id
from operations.auth.tokens import TokenVerifier
from operations.errors import (
    BrokerUnavailable,
    DeadLetterNotFound,
    DeadLetterNotRedrivable,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    InvalidRequest,
    OperationNotFound,
    OperationsError,
    PayloadTooLarge,
    StoreUnavailable,
    TokenError,
)
from operations.http.models import Error, encode
from operations.metrics import Registry
from operations.store.listing import InvalidCursor

log = logging.getLogger("operations.http.responses")


class Json(JSONResponse):
    """A JSON answer encoded by msgspec: a model of :mod:`operations.http.models` or plain data."""

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
    IdempotencyKeyReused: 422,
    IdempotencyKeyInFlight: 409,
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
