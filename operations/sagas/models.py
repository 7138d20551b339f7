"""The typed models (msgspec) of the saga routes: starting sagas (``POST /sagas/{name}``),
cancelling them, and reading them. They validate the routes' input and
feed the OpenAPI document, as :mod:`operations.http.models` does for the operations routes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from operations.sagas.business_keys import MAX_VALUE_CHARS
from operations.sagas.records import SagaStatus
from operations.timestamps import Timestamp, rfc3339

MAX_BODY_BYTES = 65_536
MAX_WAIT_SECONDS = 60
MAX_LIMIT = 500
DEFAULT_LIMIT = 100
MAX_REASON = 500  # characters of a cancellation's reason

# POST /sagas/{name}: the start message's body, as it is.
SagaStartBody = Annotated[dict[str, Any], Meta(description="The start message's body, as it is.")]


class SagaStarted(msgspec.Struct, rename="camel"):
    operation_id: str


class Cancelled(msgspec.Struct, rename="camel"):
    operation_id: str
    cancelled: Annotated[bool, Meta(extra_json_schema={"const": True})] = True


class CancelRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The optional body of ``POST /operations/{id}/cancel``: why, in the canceller's words."""

    reason: (
        Annotated[
            str,
            Meta(
                max_length=MAX_REASON,
                description="Why, in the canceller's words: added to the saga's reason. One"
                " line of printable characters.",
            ),
        ]
        | None
    ) = None

    def __post_init__(self) -> None:
        if self.reason and self.reason.strip() and not self.reason.strip().isprintable():
            raise ValueError("reason must be one line of printable characters")


KeyValue = Annotated[
    str,
    Meta(min_length=1, max_length=MAX_VALUE_CHARS, description="A business key's value."),
]


class ListSagas(msgspec.Struct):
    """The query of ``GET /sagas``: recent sagas (of one status), or those holding a business
    key's value (``key``), or the running ones overdue now (``overdue=true``)."""

    status: SagaStatus | None = None
    limit: Annotated[int, Meta(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT
    key: KeyValue | None = None
    overdue: bool = False


class SagaStep(msgspec.Struct, rename="camel"):
    """A step the saga took; ``compensated`` once undone, ``compensationError`` if undoing
    failed."""

    message: str
    message_id: str | None
    at: Timestamp
    body: dict[str, Any]
    compensated: bool
    compensation_error: str | None


class PathStep(msgspec.Struct):
    """A message of the saga type's happy path, and this instance's progress on it."""

    message: str
    status: Literal["done", "waiting", "remaining", "compensated"]


class SagaView(msgspec.Struct, rename="camel"):
    """A saga instance as it is shown. Times are RFC 3339 in UTC with milliseconds, as in every
    answer (:mod:`operations.timestamps`). ``messageContext`` holds the start message's user,
    name, resourceId and correlationId. ``path``, ``stepSeconds``, ``waitingFor`` and
    ``waitingSince`` are there for the saga types the service runs, with ``businessKeys``,
    ``objectiveSeconds``, ``overdue`` and ``overdueSince``, and ``plainReason`` when its type has
    words for its code; ``cancellable`` only in ``GET /operations/{id}/saga``."""

    saga_name: str = msgspec.field(name="saga")
    id: str
    status: SagaStatus
    data: dict[str, Any]
    correlation_id: str | None
    message_context: dict[str, Any]
    steps: list[SagaStep]
    deadline: Timestamp | None
    reason: str | None
    code: str | None
    created_at: Timestamp
    updated_at: Timestamp
    path: list[PathStep] | UnsetType = UNSET
    step_seconds: (
        Annotated[
            dict[str, float],
            Meta(description="For each step taken: the seconds it took, by message name."),
        ]
        | UnsetType
    ) = UNSET
    waiting_for: (
        Annotated[str, Meta(description="The message a running saga waits for.")] | UnsetType | None
    ) = UNSET
    waiting_since: (
        Annotated[Timestamp, Meta(description="Since when it waits.")] | UnsetType | None
    ) = UNSET
    cancellable: (
        Annotated[bool, Meta(description="Whether a cancellation would be accepted now.")]
        | UnsetType
    ) = UNSET
    plain_reason: (
        Annotated[
            str,
            Meta(description="The saga type's plain words for its code, if it declares them."),
        ]
        | UnsetType
    ) = UNSET
    business_keys: (
        Annotated[
            dict[str, Any],
            Meta(description="The type's business keys this saga's data sets, by field name."),
        ]
        | UnsetType
    ) = UNSET
    objective_seconds: (
        Annotated[float, Meta(description="The objective of the step it waits for.")]
        | UnsetType
        | None
    ) = UNSET
    overdue: (
        Annotated[bool, Meta(description="Running and waiting past that objective.")] | UnsetType
    ) = UNSET
    overdue_since: (
        Annotated[Timestamp, Meta(description="Since when it is overdue.")] | UnsetType | None
    ) = UNSET


class Sagas(msgspec.Struct):
    """Recent sagas, newest first."""

    items: list[SagaView]


class SagaTypeInfo(msgspec.Struct, rename="camel"):
    """A saga type, message names throughout."""

    name: str
    start: list[str]
    path: list[str]
    compensations: list[str]
    http_start: str | None = None
    business_keys: list[str] = msgspec.field(default_factory=list)
    objectives: Annotated[
        dict[str, float],
        Meta(description="Seconds a running saga should wait for each step, by message."),
    ] = msgspec.field(default_factory=dict)


class SagaTypeList(msgspec.Struct):
    """``GET /sagas/types``: the saga types the service runs."""

    items: list[SagaTypeInfo]


class SagaFilter(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """Which running sagas a bulk action takes: all of these that are given must hold."""

    saga: Annotated[str, Meta(min_length=1, max_length=100)] | None = None
    waiting_for: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    waiting_longer_than: Annotated[float, Meta(ge=0, le=10 * 365 * 86_400)] | None = None
    key: KeyValue | None = None
    overdue: bool | None = None


class BulkRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """The body of ``POST /sagas/cancel`` and ``POST /sagas/retry``."""

    filter: SagaFilter
    dry_run: bool = False
    reason: Annotated[str, Meta(max_length=MAX_REASON)] | None = None

    def __post_init__(self) -> None:
        if all(value is None for value in msgspec.structs.astuple(self.filter)):
            raise ValueError("the filter needs at least one of its fields")
        if self.reason and self.reason.strip() and not self.reason.strip().isprintable():
            raise ValueError("reason must be one line of printable characters")


class BulkSample(msgspec.Struct, rename="camel"):
    """A saga a bulk action matched, and the step it waits for."""

    saga_name: str = msgspec.field(name="saga")
    id: str
    operation_id: str | None
    waiting_for: str | None
    waiting_since: Timestamp | None


class BulkResult(msgspec.Struct, rename="camel"):
    """What a bulk action matched, acted on and skipped (``skippedWhy``: how many for each
    reason); a dry run acts on none. ``sample``: some of those matched."""

    matched: int
    acted: int
    skipped: int
    skipped_why: dict[str, int]
    sample: list[BulkSample]
    dry_run: bool


class Retried(msgspec.Struct, rename="camel"):
    """``POST /operations/{id}/saga/retry``: how many messages went out again; none, with
    ``repeated``, when an earlier retry of this saga is still within its window."""

    operation_id: str
    published: int
    repeated: bool


_TIMES = ("createdAt", "updatedAt", "deadline", "waitingSince", "overdueSince")


def shown_times(document: dict[str, Any]) -> dict[str, Any]:
    """A saga's JSON document (:meth:`SagaRecord.to_json`, times in seconds since the epoch, as
    stored) with its times in the one format, in place."""
    for name in _TIMES:
        if isinstance(document.get(name), int | float):
            document[name] = rfc3339(document[name])
    for step in document.get("steps") or ():
        if isinstance(step.get("at"), int | float):
            step["at"] = rfc3339(step["at"])
    return document
