"""The dead-letter workbench's entries of the route table (``operations/http/openapi.py`` merges
them in): listing, grouping, reading, redriving and discarding kept dead letters, admins only."""

from __future__ import annotations

from operations.deadletters.letters import (
    MAX_BODY,
    DeadLetterGroups,
    DeadLetterItem,
    DeadLetterPage,
    GroupDiscarded,
    GroupQuery,
    GroupRedriven,
    ListDeadLetters,
    Redriven,
)
from operations.http.endpoints import NEEDS_TOKEN, STORE_DOWN, Answer, Endpoint, Param, problem

LETTER_ID = Param("id", "path", "The dead letter's id, as the list shows it.")
FORBIDDEN = problem("`forbidden`: the token is not an admin's.")
UNKNOWN_LETTER = problem("`dead_letter_not_found`: no kept dead letter has this id.")
BROKER_DOWN = problem(
    "`broker_unavailable`: the broker is not connected or did not confirm the redrive;"
    " `store_unavailable`: Redis cannot be reached."
)
BAD_GROUP = problem('`invalid_body`: the body is not `{"reason": ..., "queue": ...}`.')
TOO_LARGE = problem(f"`payload_too_large`: the body is larger than {MAX_BODY} bytes.")
COMMON = {401: NEEDS_TOKEN, 403: FORBIDDEN, 503: STORE_DOWN}

DEAD_LETTER_ENDPOINTS = (
    Endpoint(
        "get",
        "/dead-letters",
        "Kept dead letters, newest first (admins)",
        query=ListDeadLetters,
        answers={
            200: Answer("A page of dead letters.", DeadLetterPage),
            400: problem(
                "`invalid_query`: a bad limit; `invalid_cursor`: a cursor this service did not"
                " issue."
            ),
            **COMMON,
        },
    ),
    Endpoint(
        "get",
        "/dead-letters/groups",
        "Kept dead letters grouped by queue and reason, latest first (admins)",
        answers={200: Answer("The groups.", DeadLetterGroups), **COMMON},
    ),
    Endpoint(
        "get",
        "/dead-letters/{id}",
        "One dead letter, headers and body included (admins)",
        params=(LETTER_ID,),
        answers={200: Answer("The dead letter.", DeadLetterItem), 404: UNKNOWN_LETTER, **COMMON},
    ),
    Endpoint(
        "delete",
        "/dead-letters/{id}",
        "Discard one dead letter (admins); logged with who did it",
        params=(LETTER_ID,),
        answers={204: Answer("Discarded."), 404: UNKNOWN_LETTER, **COMMON},
    ),
    Endpoint(
        "post",
        "/dead-letters/{id}/redrive",
        "Republish one dead letter to its original exchange and routing key (admins)",
        description="With its original properties and headers plus `x-redriven`, confirmed by"
        " the broker; only then is it removed. If it fails again it comes back as a new dead"
        " letter with `attempts` one higher.",
        params=(LETTER_ID,),
        answers={
            200: Answer("Redriven.", Redriven),
            404: UNKNOWN_LETTER,
            409: problem(
                "`dead_letter_not_redrivable`: its body was cut to the cap, a redrive of it is"
                " under way, or the broker routes it to no queue."
            ),
            **COMMON,
            503: BROKER_DOWN,
        },
    ),
    Endpoint(
        "post",
        "/dead-letters/redrive",
        "Redrive a whole group, oldest first (admins)",
        body=GroupQuery,
        answers={
            200: Answer("How many were redriven, and skipped as not redrivable.", GroupRedriven),
            400: BAD_GROUP,
            413: TOO_LARGE,
            **COMMON,
            503: BROKER_DOWN,
        },
    ),
    Endpoint(
        "post",
        "/dead-letters/discard",
        "Discard a whole group (admins)",
        body=GroupQuery,
        answers={
            200: Answer("How many were discarded.", GroupDiscarded),
            400: BAD_GROUP,
            413: TOO_LARGE,
            **COMMON,
        },
    ),
)
