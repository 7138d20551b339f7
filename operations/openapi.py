"""The OpenAPI 3.1 document served at ``GET /openapi.json``."""

from __future__ import annotations

from typing import Any

from . import __version__
from .deadletters.openapi import DEAD_LETTER_SCHEMAS, dead_letter_paths
from .sagas.openapi import SAGA_SCHEMAS, saga_paths


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
_NEEDS_TOKEN = _error(
    "Missing, malformed, badly signed or expired bearer token, or one whose identity provider"
    " keys cannot be fetched."
)
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
            **saga_paths(),
            **dead_letter_paths(),
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
                    "bearerFormat": (
                        "JWT: HS256 with OPERATIONS_JWT_SECRET, or RS256/ES256 from the"
                        " OPERATIONS_JWT_JWKS_URL key set by kid; exp required"
                    ),
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
                **SAGA_SCHEMAS,
                **DEAD_LETTER_SCHEMAS,
                "Error": {
                    "type": "object",
                    "required": ["code", "reason"],
                    "properties": {"code": {"type": "string"}, "reason": {"type": "string"}},
                },
            },
        },
    }
