"""The OpenAPI 3.1 document served at ``GET /openapi.json``."""

from __future__ import annotations

from typing import Any

from . import __version__


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(description: str, schema: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }
    if headers:
        response["headers"] = headers
    return response


_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The operation id (the messages' correlation id); GUIDs in any format.",
}
_NEEDS_TOKEN = _error("Missing, malformed, badly signed or expired bearer token.")
_UNKNOWN = _error("Unknown, expired, or another user's operation.")
_STORE_DOWN = _error("`store_unavailable`: Redis cannot be reached; retry later.")


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "operations",
            "version": __version__,
            "description": "Tracks long-running operations carried by RabbitMQ messages.",
        },
        "security": [{"bearer": []}],
        "paths": {
            "/operations/{id}": {
                "get": {
                    "summary": "One operation's record",
                    "parameters": [
                        _ID,
                        {
                            "name": "wait",
                            "in": "query",
                            "schema": {"type": "number", "minimum": 0, "maximum": 60},
                            "description": "With If-None-Match: wait up to this many seconds for "
                            "the operation to change or finish.",
                        },
                        {
                            "name": "If-None-Match",
                            "in": "header",
                            "schema": {"type": "string"},
                            "description": "An ETag from an earlier read.",
                        },
                    ],
                    "responses": {
                        "200": _json(
                            "The record.",
                            "Operation",
                            {
                                "ETag": {
                                    "schema": {"type": "string"},
                                    "description": "The record's version, quoted.",
                                }
                            },
                        ),
                        "304": {"description": "Unchanged since the ETag given."},
                        "400": _error("Bad wait parameter."),
                        "401": _NEEDS_TOKEN,
                        "404": _UNKNOWN,
                        "503": _STORE_DOWN,
                    },
                }
            },
            "/operations/{id}/history": {
                "get": {
                    "summary": "An operation's transitions, oldest first",
                    "parameters": [_ID],
                    "responses": {
                        "200": _json("The transitions.", "History"),
                        "401": _NEEDS_TOKEN,
                        "404": _UNKNOWN,
                        "503": _STORE_DOWN,
                    },
                }
            },
            "/operations": {
                "get": {
                    "summary": "The caller's operations (everyone's for admins), newest first",
                    "parameters": [
                        {
                            "name": "state",
                            "in": "query",
                            "schema": {"$ref": "#/components/schemas/State"},
                        },
                        {"name": "name", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "userId",
                            "in": "query",
                            "schema": {"type": "string"},
                            "description": "Admins only: one user's operations.",
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": 200,
                                "default": 50,
                            },
                        },
                        {
                            "name": "cursor",
                            "in": "query",
                            "schema": {"type": "string"},
                            "description": "The `next` of the previous page.",
                        },
                    ],
                    "responses": {
                        "200": _json("A page of operations.", "Page"),
                        "400": _error("Bad filter, limit or cursor."),
                        "401": _NEEDS_TOKEN,
                        "403": _error("A non-admin asked for another user's operations."),
                        "503": _STORE_DOWN,
                    },
                }
            },
            "/orders": {
                "post": {
                    "summary": "Make an order: starts Pacco's order-maker saga for the caller",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/MakeOrder"}
                            }
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
                            "deadline, correlationId."
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
            "/dashboard/": {
                "get": {
                    "summary": "The ops dashboard (a static page; admin token)",
                    "security": [],
                    "responses": {"200": {"description": "HTML."}},
                }
            },
            "/health": {
                "get": {
                    "summary": "Liveness",
                    "security": [],
                    "responses": {"200": {"description": "The process is up."}},
                }
            },
            "/ready": {
                "get": {
                    "summary": "Readiness: RabbitMQ and Redis connected",
                    "security": [],
                    "responses": {
                        "200": {"description": "Ready."},
                        "503": {"description": "A dependency is down."},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "security": [],
                    "responses": {
                        "200": {"description": "Prometheus text.", "content": {"text/plain": {}}}
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI 3.1."}},
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT (HS256, exp required)",
                }
            },
            "schemas": {
                "State": {"type": "string", "enum": ["pending", "completed", "rejected"]},
                "Operation": {
                    "type": "object",
                    "required": [
                        "id",
                        "userId",
                        "name",
                        "state",
                        "code",
                        "reason",
                        "version",
                        "createdAt",
                        "updatedAt",
                    ],
                    "properties": {
                        "id": {"type": "string"},
                        "userId": {"type": ["string", "null"]},
                        "name": {"type": "string"},
                        "state": {"$ref": "#/components/schemas/State"},
                        "code": {"type": ["string", "null"]},
                        "reason": {"type": ["string", "null"]},
                        "version": {"type": "integer", "minimum": 1},
                        "createdAt": {"type": "string", "format": "date-time"},
                        "updatedAt": {"type": "string", "format": "date-time"},
                    },
                },
                "Transition": {
                    "type": "object",
                    "properties": {
                        "version": {"type": "integer"},
                        "state": {"$ref": "#/components/schemas/State"},
                        "name": {"type": "string"},
                        "message": {"type": "string", "description": "The message name."},
                        "messageId": {"type": ["string", "null"]},
                        "code": {"type": ["string", "null"]},
                        "reason": {"type": ["string", "null"]},
                        "at": {"type": "string", "format": "date-time"},
                        "sentAt": {"type": ["string", "null"], "format": "date-time"},
                    },
                },
                "History": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "items": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Transition"},
                        },
                    },
                },
                "Page": {
                    "type": "object",
                    "properties": {
                        "items": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Operation"},
                        },
                        "next": {"type": ["string", "null"]},
                    },
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
                "Error": {
                    "type": "object",
                    "required": ["code", "reason"],
                    "properties": {"code": {"type": "string"}, "reason": {"type": "string"}},
                },
            },
        },
    }
