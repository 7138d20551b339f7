"""The OpenAPI 3.1 document served at ``GET /openapi.json``, generated from the route table: the
operations routes here, the saga routes in :mod:`operations.sagas.openapi`. To document a route,
declare its models and add one :class:`~operations.http.endpoints.Endpoint`
(docs/http-models.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from operations import __version__
from operations.deadletters.openapi import DEAD_LETTER_ENDPOINTS
from operations.http.endpoints import (
    NEEDS_TOKEN,
    OPERATION_ID,
    STORE_DOWN,
    UNKNOWN,
    Answer,
    Endpoint,
    Param,
    build,
    problem,
)
from operations.http.models import (
    Error,
    Health,
    History,
    ListOperations,
    Operation,
    OperationPage,
    ReadinessReport,
    ReadOperation,
)
from operations.http.models import encode as encode_json
from operations.sagas.openapi import SAGA_ENDPOINTS

BAD_QUERY = "`invalid_query`: a query parameter does not fit its schema; the reason names it."

OPERATION_ENDPOINTS = (
    Endpoint(
        "get",
        "/operations/{id}",
        "One operation's record",
        params=(
            OPERATION_ID,
            Param("If-None-Match", "header", "An ETag from an earlier read.", '"3"'),
        ),
        query=ReadOperation,
        answers={
            200: Answer(
                "The record.",
                Operation,
                {"ETag": "The record's version, quoted.", "Cache-Control": "no-cache"},
            ),
            304: Answer("Unchanged since the ETag given.", headers={"ETag": "The same ETag."}),
            400: problem(BAD_QUERY),
            401: NEEDS_TOKEN,
            404: UNKNOWN,
            429: Answer(
                "`too_many_waits`: a long-poll past the caller's OPERATIONS_MAX_WAITS_PER_USER.",
                Error,
                {"Retry-After": "Seconds to wait before trying again."},
            ),
            503: STORE_DOWN,
        },
    ),
    Endpoint(
        "get",
        "/operations/{id}/history",
        "An operation's transitions, oldest first",
        params=(OPERATION_ID,),
        answers={
            200: Answer("The transitions.", History),
            401: NEEDS_TOKEN,
            404: UNKNOWN,
            503: STORE_DOWN,
        },
    ),
    Endpoint(
        "get",
        "/operations",
        "The caller's operations (everyone's for admins), newest first",
        query=ListOperations,
        answers={
            200: Answer("A page of operations.", OperationPage),
            400: problem(f"{BAD_QUERY} `invalid_cursor`: a cursor this service did not issue."),
            401: NEEDS_TOKEN,
            403: problem("`forbidden`: a non-admin asked for another user's operations."),
            503: STORE_DOWN,
        },
    ),
    Endpoint(
        "get",
        "/health",
        "Liveness",
        token=False,
        answers={200: Answer("The process is up.", Health)},
    ),
    Endpoint(
        "get",
        "/ready",
        "Readiness: RabbitMQ and Redis connected",
        token=False,
        answers={
            200: Answer("Ready.", ReadinessReport),
            503: Answer("A dependency is down: `status` is `unavailable`.", ReadinessReport),
        },
    ),
    Endpoint(
        "get",
        "/metrics",
        "Prometheus metrics",
        token=False,
        answers={200: Answer("Prometheus text.", str, media_type="text/plain")},
    ),
    Endpoint(
        "get",
        "/openapi.json",
        "This document",
        token=False,
        answers={200: Answer("OpenAPI 3.1.", dict[str, Any])},
    ),
)

ENDPOINTS = (*OPERATION_ENDPOINTS, *SAGA_ENDPOINTS, *DEAD_LETTER_ENDPOINTS)

INFO = {
    "title": "operations",
    "version": __version__,
    "description": "Tracks long-running operations carried by RabbitMQ messages. Errors are"
    " `{code, reason}`. Besides the statuses listed, any route may answer `500 internal_error`"
    " (logged), and a path or method the service does not serve `404 not_found` or"
    " `405 method_not_allowed`.",
}


def document(endpoints: Sequence[Endpoint] = ENDPOINTS) -> dict[str, Any]:
    """The document of the routes ``endpoints`` describe: by default the generic service's; the
    wiring adds the entries of the routes it serves besides (``POST /orders``)."""
    return build(endpoints, INFO)


def encoded_document(endpoints: Sequence[Endpoint] = ENDPOINTS) -> bytes:
    """The document as JSON."""
    return encode_json(document(endpoints))
