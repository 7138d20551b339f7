"""The dead-letter workbench's part of the OpenAPI document (``operations/openapi.py`` merges
it in). The schemas are generated from the msgspec Structs the routes answer with."""

from __future__ import annotations

from typing import Any

import msgspec

from .records import (
    DeadLetterGroups,
    DeadLetterItem,
    DeadLetterPage,
    GroupDiscarded,
    GroupQuery,
    GroupRedriven,
    Redriven,
)
from .store import MAX_PAGE

_, DEAD_LETTER_SCHEMAS = msgspec.json.schema_components(
    (
        DeadLetterItem,
        DeadLetterPage,
        DeadLetterGroups,
        GroupQuery,
        Redriven,
        GroupRedriven,
        GroupDiscarded,
    ),
    ref_template="#/components/schemas/{name}",
)


def dead_letter_paths() -> dict[str, Any]:
    # Imported here: the document module imports this one.
    from ..openapi import _NEEDS_TOKEN, _STORE_DOWN, _error, _json

    forbidden = _error("`forbidden`: the token is not an admin's.")
    unknown = _error("`dead_letter_not_found`: no kept dead letter has this id.")
    broker_down = _error("`broker_unavailable`: the broker did not confirm the redrive.")
    letter_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    group_body = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/GroupQuery"}}},
    }
    common = {"401": _NEEDS_TOKEN, "403": forbidden, "503": _STORE_DOWN}
    return {
        "/dead-letters": {
            "get": {
                "summary": "Kept dead letters, newest first (admins)",
                "parameters": [
                    {"name": "queue", "in": "query", "schema": {"type": "string"}},
                    {"name": "reason", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_PAGE,
                            "default": 50,
                        },
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "The `next` of the page before.",
                    },
                ],
                "responses": {
                    "200": _json("A page of dead letters.", "DeadLetterPage"),
                    "400": _error("`invalid_query` or `invalid_cursor`."),
                    **common,
                },
            }
        },
        "/dead-letters/groups": {
            "get": {
                "summary": "Kept dead letters grouped by queue and reason, latest first (admins)",
                "responses": {"200": _json("The groups.", "DeadLetterGroups"), **common},
            }
        },
        "/dead-letters/{id}": {
            "get": {
                "summary": "One dead letter, headers and body included (admins)",
                "parameters": [letter_id],
                "responses": {
                    "200": _json("The dead letter.", "DeadLetterItem"),
                    "404": unknown,
                    **common,
                },
            },
            "delete": {
                "summary": "Discard one dead letter (admins); logged with who did it",
                "parameters": [letter_id],
                "responses": {"204": {"description": "Discarded."}, "404": unknown, **common},
            },
        },
        "/dead-letters/{id}/redrive": {
            "post": {
                "summary": "Republish one dead letter to its original exchange and routing key",
                "description": "With its original properties and headers plus `x-redriven`, "
                "confirmed by the broker; only then is it removed. If it fails again it comes "
                "back as a new dead letter with `attempts` one higher.",
                "parameters": [letter_id],
                "responses": {
                    "200": _json("Redriven.", "Redriven"),
                    "404": unknown,
                    "409": _error(
                        "`dead_letter_not_redrivable`: its body was cut to the cap, a redrive "
                        "of it is under way, or the broker routes it to no queue."
                    ),
                    **common,
                    "503": broker_down,
                },
            }
        },
        "/dead-letters/redrive": {
            "post": {
                "summary": "Redrive a whole group, oldest first (admins)",
                "requestBody": group_body,
                "responses": {
                    "200": _json(
                        "How many were redriven, and skipped as not redrivable.", "GroupRedriven"
                    ),
                    "400": _error("`invalid_body`."),
                    **common,
                    "503": broker_down,
                },
            }
        },
        "/dead-letters/discard": {
            "post": {
                "summary": "Discard a whole group (admins)",
                "requestBody": group_body,
                "responses": {
                    "200": _json("How many were discarded.", "GroupDiscarded"),
                    "400": _error("`invalid_body`."),
                    **common,
                },
            }
        },
    }
