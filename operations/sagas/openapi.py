"""The saga routes' entries of the route table (``operations/http/openapi.py`` merges them in):
starting sagas (``POST /sagas/{name}``), cancelling them, and reading them."""

from __future__ import annotations

from operations.http.endpoints import (
    NEEDS_TOKEN,
    OPERATION_ID,
    STORE_DOWN,
    UNKNOWN,
    Answer,
    Endpoint,
    Param,
    problem,
)
from operations.http.models import Operation
from operations.sagas.http_bulk import MAX_MATCHED
from operations.sagas.idempotency import MAX_KEY_LENGTH, WAIT_SECONDS
from operations.sagas.models import (
    MAX_BODY_BYTES,
    MAX_REASON,
    MAX_WAIT_SECONDS,
    BulkRequest,
    BulkResult,
    Cancelled,
    CancelRequest,
    ListSagas,
    Retried,
    Sagas,
    SagaStartBody,
    SagaStarted,
    SagaTypeList,
    SagaView,
)
from operations.sagas.progress import SAMPLE_CAP, TypeSteps

TOO_LARGE = problem(f"`payload_too_large`: the body is larger than {MAX_BODY_BYTES} bytes.")
BROKER_DOWN = "`broker_unavailable`: the message broker is not connected."
SAGAS_OFF = " Absent (404 `not_found`) when the service runs with OPERATIONS_SAGAS=false."
START_HEADERS = {
    "Request-ID": "The operation id.",
    "Location": "/operations/{operation id}",
    "Preference-Applied": "`wait=N` when the request preferred to wait.",
    "Idempotent-Replayed": "`true` when the answer repeats an earlier request's with the same"
    " Idempotency-Key.",
}
IDEMPOTENCY_KEY = Param(
    "Idempotency-Key",
    "header",
    "A unique value per start (a UUID), sent again with each retry of it: a repeat with the"
    " same key and body from the same user answers as the first did, with the same operation"
    f" id, and starts nothing. At most {MAX_KEY_LENGTH} printable ASCII characters; a"
    " Structured Field string (quoted) or a bare value. Kept OPERATIONS_IDEMPOTENCY_SECONDS.",
    "8e03978e-40d5-43e8-bc93-6894a57f9324",
)
BAD_KEY = (
    "`invalid_idempotency_key`: the Idempotency-Key is empty, over"
    f" {MAX_KEY_LENGTH} characters, not printable ASCII, or given twice."
)
IDEMPOTENCY_REFUSALS = {
    409: problem(
        "`idempotency_key_in_flight`: the first request with this Idempotency-Key is still being"
        f" handed to the broker after {WAIT_SECONDS:g} s; retry."
    ),
    422: problem(
        "`idempotency_key_reused`: this Idempotency-Key was used on this route with another body."
    ),
}

SAGA_ENDPOINTS = (
    Endpoint(
        "post",
        "/sagas/{name}",
        "Start a saga of a type that sets http_start, for the caller",
        description="Publishes the type's start message through the broker with a new"
        " operation id, the caller as message_context.user and Saga: Pending, and answers once"
        f" the broker confirmed it. With `Prefer: wait=N` (RFC 7240, N up to {MAX_WAIT_SECONDS})"
        " it answers 200 with the operation's record if the operation is final within N"
        " seconds." + SAGAS_OFF,
        params=(
            Param("name", "path", "The saga type's name, as GET /sagas/types lists it."),
            Param(
                "Prefer",
                "header",
                f"`wait=N`: wait up to N seconds (at most {MAX_WAIT_SECONDS}) for the operation"
                " to be final. Other or malformed preferences are ignored.",
                "wait=10",
            ),
            IDEMPOTENCY_KEY,
        ),
        body=SagaStartBody,
        answers={
            200: Answer(
                "With Prefer: wait=N, the operation's final record.",
                Operation,
                {**START_HEADERS, "ETag": "The record's version, quoted."},
            ),
            202: Answer("Accepted: watch the operation.", SagaStarted, START_HEADERS),
            400: problem(f"`invalid_body`: the body is not a JSON object. {BAD_KEY}"),
            401: NEEDS_TOKEN,
            404: problem("`saga_not_found`: no such saga type, or it sets no http_start."),
            **IDEMPOTENCY_REFUSALS,
            413: TOO_LARGE,
            503: problem(
                f"{BROKER_DOWN} With Prefer: wait=N or an Idempotency-Key, also"
                " `store_unavailable` when Redis cannot be reached."
            ),
        },
    ),
    Endpoint(
        "post",
        "/operations/{id}/cancel",
        "Cancel the saga behind an operation (its owner or an admin)",
        description="Commits the cancellation (the saga rejected with code `cancelled`,"
        " compensating) before answering 202; the completed steps are then compensated in"
        " reverse order and the operation ends rejected with code `cancelled`.",
        params=(OPERATION_ID,),
        body=CancelRequest,
        body_required=False,
        answers={
            202: Answer("Cancelled: the saga is being compensated.", Cancelled),
            400: problem(
                f'`invalid_body`: the body is not `{{"reason": text}}` with at most {MAX_REASON}'
                " characters."
            ),
            401: NEEDS_TOKEN,
            404: UNKNOWN,
            409: problem(
                "`not_cancellable`: the operation is final, no active saga drives it, or its"
                " saga refuses in its present state."
            ),
            413: TOO_LARGE,
            503: problem(
                "`broker_unavailable`: the sagas are not connected yet; `store_unavailable`:"
                " Redis cannot be reached."
            ),
        },
    ),
    Endpoint(
        "get",
        "/sagas/types/{name}/steps",
        "How a saga type's instances spread over its path now (admins only)",
        description="For each step of the type's path: how many running instances wait there,"
        " the longest wait, and the median time instances took over it. At most"
        f" {SAMPLE_CAP} sagas of each status are read; `capped` says when there were more.",
        params=(Param("name", "path", "The saga type's name, as GET /sagas/types lists it."),),
        answers={
            200: Answer("The type's load, step by step.", TypeSteps),
            401: NEEDS_TOKEN,
            403: problem("`forbidden`: not an admin."),
            404: problem("`saga_not_found`: the service runs no saga type of this name."),
            503: STORE_DOWN,
        },
    ),
    Endpoint(
        "get",
        "/sagas",
        "Recent sagas, newest first; or those holding a business key's value; or the overdue"
        " ones (admins only)",
        description="With `key`: the sagas (running, or finished until they expire) holding"
        " the value in any of their type's business keys, newest first. With `overdue=true`:"
        " the running sagas waiting for a step longer than its objective, the longest overdue"
        " first. `status` narrows either.",
        query=ListSagas,
        answers={
            200: Answer("The sagas; an empty list when the sagas are off.", Sagas),
            400: problem("`invalid_query`: a bad status, limit or key; the reason names it."),
            401: NEEDS_TOKEN,
            403: problem("`forbidden`: not an admin."),
            503: STORE_DOWN,
        },
    ),
    *(
        Endpoint(
            "post",
            f"/sagas/{action}",
            f"{title} the running sagas a filter matches (admins only)",
            description=f"Finds the running sagas the filter matches (at most {MAX_MATCHED}),"
            f" then {does}, each through the single-saga path, which checks the filter again"
            " against the saga as committed: one that moved on meanwhile is skipped and left"
            " alone. Safe to repeat. `dryRun: true` answers the count and a sample and changes"
            " nothing. One audit log line per saga names the admin.",
            body=BulkRequest,
            answers={
                200: Answer("What was matched, acted on and skipped (and why).", BulkResult),
                400: problem(
                    "`invalid_body`: not a filter with at least one field, or a bad field."
                ),
                401: NEEDS_TOKEN,
                403: problem("`forbidden`: not an admin."),
                413: TOO_LARGE,
                503: problem(f"{BROKER_DOWN} `store_unavailable`: Redis cannot be reached."),
            },
        )
        for action, title, does in (
            (
                "cancel",
                "Cancel",
                "cancels each as POST /operations/{id}/cancel does (compensated in the background)",
            ),
            (
                "retry",
                "Retry the waiting step of",
                "publishes again the messages each one's latest step sent (as"
                " POST /operations/{id}/saga/retry does)",
            ),
        )
    ),
    Endpoint(
        "post",
        "/operations/{id}/saga/retry",
        "Publish again what the saga behind an operation waits on (admins only)",
        description="The messages its latest publishing step sent go out again from its"
        " store, with the same message ids, correlation id, message_context and Saga header. A"
        " repeat within OPERATIONS_SAGA_RETRY_WINDOW_SECONDS publishes nothing and answers"
        " `repeated: true`.",
        params=(OPERATION_ID,),
        answers={
            202: Answer("Published again (or held by an earlier retry).", Retried),
            401: NEEDS_TOKEN,
            403: problem("`forbidden`: not an admin."),
            404: UNKNOWN,
            409: problem(
                "`not_retryable`: its saga no longer runs, or has published nothing to send again."
            ),
            503: problem(f"{BROKER_DOWN} `store_unavailable`: Redis cannot be reached."),
        },
    ),
    Endpoint(
        "get",
        "/sagas/types",
        "The saga types the service runs (any valid token)",
        answers={200: Answer("The saga types.", SagaTypeList), 401: NEEDS_TOKEN},
    ),
    Endpoint(
        "get",
        "/operations/{id}/saga",
        "The saga behind an operation (its owner or an admin)",
        description="The saga, as in GET /sagas, with `path`: its type's happy path and this"
        " instance's progress along it.",
        params=(OPERATION_ID,),
        answers={
            200: Answer("The saga.", SagaView),
            401: NEEDS_TOKEN,
            404: problem(
                "`operation_not_found`: no saga behind this operation, or another user's."
            ),
            503: STORE_DOWN,
        },
    ),
)
