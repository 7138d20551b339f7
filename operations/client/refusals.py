"""What the client raises when the service refuses a request (docs/clients.md, "Errors").

Three cases, all in the one exception tree: ``401`` is :class:`~operations.errors.TokenError`,
``404 operation_not_found`` is :class:`~operations.errors.OperationNotFound`, and every other
refusal is :class:`RequestRefused`, which carries the status and the service's own ``code``
and ``reason`` (docs/http-api.md, "Errors")."""

from __future__ import annotations

import msgspec

from operations.errors import OperationNotFound, OperationsError, TokenError


class RequestRefused(OperationsError):
    """The service refused a request of the Python client, with its status and its own code.

    ``status`` is the HTTP status; ``code`` and ``reason`` are the service's, as in
    ``409 not_cancellable`` or ``503 store_unavailable``; ``retry_after`` is its
    ``Retry-After`` in seconds, when it sent one."""

    code = "request_refused"

    def __init__(
        self, status: int, code: str, reason: str, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {reason}")
        self.status = status
        self.code = code
        self.reason = reason
        self.retry_after = retry_after


class Problem(msgspec.Struct):
    """An error answer's body: ``{"code": ..., "reason": ...}``."""

    code: str = "unknown"
    reason: str = ""


_problems = msgspec.json.Decoder(Problem)


def refusal(
    status: int, body: bytes, operation_id: str | None = None, retry_after: str | None = None
) -> OperationsError:
    """The error for a refused request: its status, its body and its ``Retry-After``."""
    try:
        problem = _problems.decode(body)
    except msgspec.DecodeError:
        problem = Problem("unknown", body[:200].decode("utf-8", "replace"))
    if status == 401:
        return TokenError(problem.reason or "the service refused the token")
    if status == 404 and problem.code == "operation_not_found" and operation_id is not None:
        return OperationNotFound(operation_id)
    return RequestRefused(status, problem.code, problem.reason, _seconds(retry_after))


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
