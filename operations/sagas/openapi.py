"""The sagas' part of the OpenAPI document (``operations/openapi.py`` merges it in): starting
sagas (``POST /orders``, ``POST /sagas/{name}``), cancelling them, and reading them."""

from __future__ import annotations

from typing import Any

_START_HEADERS = {
    "Request-ID": {"schema": {"type": "string"}, "description": "The operation id."},
    "Location": {"schema": {"type": "string"}, "description": "/operations/{operation id}"},
    "Preference-Applied": {
        "schema": {"type": "string"},
        "description": "`wait=N` when the request preferred to wait.",
    },
}


def saga_paths() -> dict[str, Any]:
    # Imported here: the document module imports this one.
    from ..openapi import _ID, _NEEDS_TOKEN, _error, _json

    return {
        "/orders": {
            "post": {
                "summary": "Make an order: starts Pacco's order-maker saga for the caller",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/MakeOrder"}}
                    },
                },
                "responses": {
                    "202": _json(
                        "Accepted: watch the operation.",
                        "OrderAccepted",
                        {
                            "Request-ID": {
                                "schema": {"type": "string"},
                                "description": "The operation id.",
                            },
                            "Resource-ID": {
                                "schema": {"type": "string"},
                                "description": "The order id.",
                            },
                        },
                    ),
                    "400": _error("The body is not a valid order."),
                    "401": _NEEDS_TOKEN,
                    "413": _error("The body is larger than 64 KiB."),
                    "503": _error("The message broker is not connected."),
                },
            }
        },
        "/sagas/{name}": {
            "post": {
                "summary": "Start a saga of a type that sets http_start, for the caller",
                "description": "Publishes the type's start message through the broker with a "
                "new operation id, the caller as message_context.user and Saga: Pending, and "
                "answers once the broker confirmed it. With `Prefer: wait=N` (RFC 7240, N up "
                "to 60) it answers 200 with the operation's record if the operation is final "
                "within N seconds.",
                "parameters": [
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                        "description": "The saga type's name, as GET /sagas/types lists it.",
                    },
                    {
                        "name": "Prefer",
                        "in": "header",
                        "schema": {"type": "string", "examples": ["wait=10"]},
                        "description": "`wait=N`: wait up to N seconds (at most 60) for the "
                        "operation to be final.",
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "description": "The start message's body, as it is.",
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        "With Prefer: wait=N, the operation's final record.",
                        "Operation",
                        _START_HEADERS,
                    ),
                    "202": _json("Accepted: watch the operation.", "SagaStarted", _START_HEADERS),
                    "400": _error("`invalid_body`: the body is not a JSON object."),
                    "401": _NEEDS_TOKEN,
                    "404": _error("`saga_not_found`: no such saga type, or it sets no http_start."),
                    "413": _error("`payload_too_large`: the body is larger than 64 KiB."),
                    "503": _error("`broker_unavailable`: the message broker is not connected."),
                },
            }
        },
        "/operations/{id}/cancel": {
            "post": {
                "summary": "Cancel the saga behind an operation (its owner or an admin)",
                "description": "Commits the cancellation (the saga rejected with code "
                "`cancelled`, compensating) before answering 202; the completed steps are "
                "then compensated in reverse order and the operation ends rejected with code "
                "`cancelled`.",
                "parameters": [_ID],
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/CancelRequest"}
                        }
                    },
                },
                "responses": {
                    "202": _json("Cancelled: the saga is being compensated.", "Cancelled"),
                    "400": _error("`invalid_body`: the body is not `{reason}`."),
                    "401": _NEEDS_TOKEN,
                    "413": _error("`payload_too_large`: the body is larger than 64 KiB."),
                    "404": _error("Unknown, expired, or another user's operation."),
                    "409": _error(
                        "`not_cancellable`: the operation is final, no active saga drives it, "
                        "or its saga refuses in its present state."
                    ),
                    "503": _error("`broker_unavailable`: the sagas are not connected yet."),
                },
            }
        },
        "/sagas": {
            "get": {
                "summary": "Recent sagas, newest first (admins only)",
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {
                            "type": "string",
                            "enum": [
                                "pending",
                                "compensating",
                                "completed",
                                "rejected",
                                "compensation_failed",
                            ],
                        },
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": 500,
                            "default": 100,
                        },
                    },
                ],
                "responses": {
                    "200": {
                        "description": "`{items: [saga]}`: status, data, steps (with "
                        "compensated and compensationError), reason, code, "
                        "deadline, correlationId; for the types the service runs, also "
                        "path, stepSeconds, waitingFor and waitingSince, as in "
                        "GET /operations/{id}/saga."
                    },
                    "400": _error("Bad status or limit."),
                    "401": _NEEDS_TOKEN,
                    "403": _error("Not an admin."),
                },
            }
        },
        "/sagas/types": {
            "get": {
                "summary": "The saga types the service runs (any valid token)",
                "responses": {
                    "200": _json(
                        "`{items: [{name, start, path, compensations, httpStart}]}`, message "
                        "names throughout.",
                        "SagaTypes",
                    ),
                    "401": _NEEDS_TOKEN,
                },
            }
        },
        "/sagas/types/{name}/steps": {
            "get": {
                "summary": "How a saga type's instances spread over its path (admins only)",
                "description": "For each step of the type's path: how many running instances "
                "wait for it now, the longest of those waits, and the median time instances "
                "took over it; computed from at most 200 sagas of each status.",
                "parameters": [
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                        "description": "The saga type's name, as GET /sagas/types lists it.",
                    }
                ],
                "responses": {
                    "200": _json("The type's path with its load.", "TypeSteps"),
                    "401": _NEEDS_TOKEN,
                    "403": _error("Not an admin."),
                    "404": _error("`saga_not_found`: no saga type of that name."),
                },
            }
        },
        "/operations/{id}/saga": {
            "get": {
                "summary": "The saga behind an operation (its owner or an admin)",
                "parameters": [_ID],
                "responses": {
                    "200": {
                        "description": "The saga, as in GET /sagas, with `path`: its type's "
                        "happy path and this instance's progress along it, "
                        "`[{message, status: done|waiting|remaining|compensated}]`."
                    },
                    "401": _NEEDS_TOKEN,
                    "404": _error("No saga behind this operation, or another user's."),
                },
            }
        },
    }


SAGA_SCHEMAS: dict[str, Any] = {
    "CancelRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "reason": {
                "type": ["string", "null"],
                "maxLength": 500,
                "description": "Why, in the canceller's words: added to the saga's reason.",
            }
        },
    },
    "TypeSteps": {
        "type": "object",
        "required": ["saga", "sampled", "capped", "compensating", "steps", "at"],
        "properties": {
            "saga": {"type": "string"},
            "sampled": {"type": "integer", "description": "Sagas looked at."},
            "capped": {"type": "boolean", "description": "Some statuses held more."},
            "compensating": {"type": "integer"},
            "at": {"type": "number", "description": "When computed (Unix seconds)."},
            "steps": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["message", "waiting", "samples"],
                    "properties": {
                        "message": {"type": "string"},
                        "waiting": {"type": "integer"},
                        "longestWaitSeconds": {"type": ["number", "null"]},
                        "medianSeconds": {"type": ["number", "null"]},
                        "samples": {"type": "integer"},
                    },
                },
            },
        },
    },
    "Cancelled": {
        "type": "object",
        "required": ["operationId", "cancelled"],
        "properties": {"operationId": {"type": "string"}, "cancelled": {"const": True}},
    },
    "SagaStarted": {
        "type": "object",
        "required": ["operationId"],
        "properties": {"operationId": {"type": "string"}},
    },
    "MakeOrder": {
        "type": "object",
        "description": "parcelIds, or parcelId for one parcel; parcelIds wins when "
        "both are given. PascalCase names are accepted too.",
        "required": ["customerId"],
        "anyOf": [{"required": ["parcelIds"]}, {"required": ["parcelId"]}],
        "properties": {
            "customerId": {"type": "string", "minLength": 1},
            "parcelIds": {
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "minItems": 1,
                "maxItems": 100,
            },
            "parcelId": {
                "type": "string",
                "minLength": 1,
                "description": "One parcel.",
            },
            "orderId": {
                "type": "string",
                "minLength": 1,
                "description": "Default: a new GUID.",
            },
        },
    },
    "OrderAccepted": {
        "type": "object",
        "properties": {
            "operationId": {"type": "string"},
            "orderId": {"type": "string"},
        },
    },
    "SagaTypes": {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "start", "path", "compensations"],
                    "properties": {
                        "name": {"type": "string"},
                        "start": {"type": "array", "items": {"type": "string"}},
                        "path": {"type": "array", "items": {"type": "string"}},
                        "compensations": {
                            "type": "array",
                            "items": {"type": "string"},
                        },
                        "httpStart": {"type": ["string", "null"]},
                    },
                },
            }
        },
    },
}
