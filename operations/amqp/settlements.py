"""How each delivery is settled with the broker: explicit outcomes, decided before sending."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Disposition(StrEnum):
    """What happened to a message's content, as told in the dead-letter headers."""

    NOT_APPLIED = "not-applied"
    APPLIED_IN_PART = "applied-in-part"


@dataclass(frozen=True)
class Ack:
    """Done with: applied, judged a duplicate or stale, or ignored (the reason says why)."""

    reason: str = ""


@dataclass(frozen=True)
class DeadLetter:
    """Copy to the dead-letter queue with the reason attached, then ack."""

    reason: str
    disposition: Disposition = Disposition.NOT_APPLIED


@dataclass(frozen=True)
class Retry:
    """Send back to the queue after ``delay_seconds`` (through its retry queue), then ack."""

    reason: str
    delay_seconds: float
    attempt: int | None
    """The early retries made so far (``None``: as the message says already)."""
    failures: int = 0
    """How often processing it has failed unexpectedly so far (see :class:`Failed`)."""


@dataclass(frozen=True)
class Failed:
    """Processing it raised unexpectedly (a defect, or input the checks missed); the consumer
    retries it later, or dead-letters it once it has failed too often."""

    reason: str


Settlement = Ack | DeadLetter | Retry | Failed
