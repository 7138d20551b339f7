"""What the coordinator reports: the outcome of a message for each saga it drove, and of a
cancellation."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from operations.sagas.records import SagaStatus


class SagaOutcome(StrEnum):
    HANDLED = "handled"
    COMPLETED = "completed"
    REJECTED = "rejected"
    COMPENSATION_FAILED = "compensation_failed"
    DUPLICATE = "duplicate"
    FINISHED = "ignored_finished"  # the saga already finished: the message changes nothing
    TOMBSTONED = "ignored_tombstoned"  # it finished and expired: a start starts no second one
    EARLY = "early"  # no such saga yet and the message does not start one
    CONFLICT = "conflict"  # other writers kept winning; try again later
    COMPENSATING = "ignored_compensating"  # the saga is being compensated: the message is too late


STATUS_OF = {
    SagaOutcome.REJECTED: SagaStatus.REJECTED,
    SagaOutcome.COMPENSATION_FAILED: SagaStatus.COMPENSATION_FAILED,
}
OUTCOME_OF = {status: outcome for outcome, status in STATUS_OF.items()}


@dataclass(frozen=True)
class Processed:
    saga_name: str
    saga_id: str
    outcome: SagaOutcome


@dataclass(frozen=True)
class Cancellation:
    """Whether a cancellation was committed, and if not, why."""

    accepted: bool
    reason: str
    why: str = "accepted"
    """In one word: ``accepted``, ``finished``, ``moved_on``, ``refused`` or ``conflict``."""
