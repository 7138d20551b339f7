"""The one timestamp format of every JSON answer and every push: RFC 3339 in UTC with
milliseconds and ``Z`` (``2026-12-07T12:00:00.000Z``). Stored times keep their own forms (ISO
strings for operations and dead letters, seconds since the epoch for sagas); each is shown
through :func:`rfc3339` on its way out."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from msgspec import Meta

PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"

Timestamp = Annotated[
    str,
    Meta(extra_json_schema={"format": "date-time", "examples": ["2026-12-07T12:00:00.000Z"]}),
]
"""A field holding a time, as :func:`rfc3339` writes it."""


def rfc3339(moment: dt.datetime | float) -> str:
    """``moment`` (an aware datetime, or seconds since the epoch) as RFC 3339 in UTC with
    milliseconds and ``Z``. A naive datetime is taken to be UTC."""
    if isinstance(moment, dt.datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
    else:
        moment = dt.datetime.fromtimestamp(moment, dt.UTC)
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def shown(text: str) -> str:
    """A stored ISO 8601 time in the one format; text that is not a time is left as it is."""
    if len(text) == 24 and text.endswith("Z") and text[19] == ".":
        return text
    try:
        return rfc3339(dt.datetime.fromisoformat(text))
    except ValueError:
        return text
