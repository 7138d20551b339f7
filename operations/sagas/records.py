"""What is persisted of a saga: its status, data, step log, and the messages waiting to go out."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from operations.states import State


class SagaStatus(StrEnum):
    """``pending`` runs steps; ``compensating`` has been rejected and is undoing its steps; the
    other three are finished."""

    PENDING = "pending"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    REJECTED = "rejected"
    COMPENSATION_FAILED = "compensation_failed"

    @property
    def finished(self) -> bool:
        return self not in (SagaStatus.PENDING, SagaStatus.COMPENSATING)


@dataclass
class StepRecord:
    message: str
    message_id: str | None
    at: float
    body: dict[str, Any] = field(default_factory=dict)
    compensated: bool = False
    compensation_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "message": self.message,
            "messageId": self.message_id,
            "at": self.at,
            "body": self.body,
            "compensated": self.compensated,
            "compensationError": self.compensation_error,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StepRecord:
        return cls(
            data["message"],
            data.get("messageId"),
            float(data["at"]),
            dict(data.get("body") or {}),
            bool(data.get("compensated")),
            data.get("compensationError"),
        )


@dataclass
class SagaRecord:
    saga_name: str
    id: str
    status: SagaStatus
    data: dict[str, Any]
    correlation_id: str | None = None
    message_context: dict[str, Any] = field(default_factory=dict)
    steps: list[StepRecord] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    deadline: float | None = None
    reason: str | None = None
    code: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    # While compensating: how many of the oldest steps are to be undone (the rejecting step is
    # not), and when another process may take over a compensation that has stopped moving.
    compensate_steps: int | None = None
    resume_at: float | None = None
    # The trace of the message that started the saga: work done later on its behalf (a
    # deadline's compensation) continues it.
    trace_context: dict[str, str] = field(default_factory=dict)
    # Set at each commit from its type: the business-key values it is indexed under, and the
    # step it waits for with when it becomes overdue there (:mod:`.objectives`).
    keys: list[str] = field(default_factory=list)
    overdue_step: str | None = None
    overdue_at: float | None = None

    @classmethod
    def begun(
        cls,
        saga_name: str,
        saga_id: str,
        data: dict[str, Any],
        correlation_id: str | None,
        message_context: Mapping[str, Any],
        trace_context: dict[str, str],
    ) -> SagaRecord:
        """A saga's record before its first step: pending, created now."""
        now = time.time()
        return cls(
            saga_name,
            saga_id,
            SagaStatus.PENDING,
            data,
            correlation_id,
            dict(message_context),
            created_at=now,
            updated_at=now,
            trace_context=trace_context,
        )

    @property
    def key(self) -> str:
        return f"{self.saga_name}:{self.id}"

    @property
    def wake_at(self) -> float | None:
        """When the deadline watcher must look at the saga: its deadline while pending, the
        moment its compensation may be resumed while compensating, never once finished."""
        if self.status is SagaStatus.PENDING:
            return self.deadline
        if self.status is SagaStatus.COMPENSATING:
            return self.resume_at
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "saga": self.saga_name,
            "id": self.id,
            "status": self.status.value,
            "data": self.data,
            "correlationId": self.correlation_id,
            "messageContext": self.message_context,
            "steps": [step.to_json() for step in self.steps],
            "seen": self.seen,
            "deadline": self.deadline,
            "reason": self.reason,
            "code": self.code,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "compensateSteps": self.compensate_steps,
            "resumeAt": self.resume_at,
            "traceContext": self.trace_context,
            "keys": self.keys,
            "overdueStep": self.overdue_step,
            "overdueAt": self.overdue_at,
        }

    @property
    def overdue(self) -> tuple[str, float] | None:
        """The step it is overdue at and since when, if it is now."""
        if self.overdue_step is None or self.overdue_at is None:
            return None
        if self.status is not SagaStatus.PENDING or self.overdue_at > time.time():
            return None
        return self.overdue_step, self.overdue_at

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SagaRecord:
        return cls(
            saga_name=data["saga"],
            id=data["id"],
            status=SagaStatus(data["status"]),
            data=dict(data["data"]),
            correlation_id=data.get("correlationId"),
            message_context=dict(data.get("messageContext") or {}),
            steps=[StepRecord.from_json(step) for step in data.get("steps", [])],
            seen=list(data.get("seen", [])),
            deadline=data.get("deadline"),
            reason=data.get("reason"),
            code=data.get("code"),
            created_at=float(data.get("createdAt", 0.0)),
            updated_at=float(data.get("updatedAt", 0.0)),
            compensate_steps=data.get("compensateSteps"),
            resume_at=data.get("resumeAt"),
            trace_context=dict(data.get("traceContext") or {}),
            keys=list(data.get("keys") or ()),
            overdue_step=data.get("overdueStep"),
            overdue_at=data.get("overdueAt"),
        )


@dataclass(frozen=True)
class OutboxEntry:
    """One message a committed step publishes, with everything needed to send it again."""

    message_id: str
    exchange: str
    message: str
    body: Mapping[str, Any]
    saga_state: State
    correlation_id: str | None
    message_context: Mapping[str, Any]
    trace_context: Mapping[str, str] = field(default_factory=dict)
    """``traceparent`` (and ``tracestate``) of the step that queued it: it goes out in them."""
    closes_operation: bool = False
    """Not a message: the saga's ending, applied by the relay to its operation
    (:mod:`operations.sagas.endings`)."""

    def to_json(self) -> dict[str, Any]:
        extra = {"closesOperation": True} if self.closes_operation else {}
        return {
            "messageId": self.message_id,
            "exchange": self.exchange,
            "message": self.message,
            "body": dict(self.body),
            "saga": self.saga_state.value,
            "correlationId": self.correlation_id,
            "messageContext": dict(self.message_context),
            "traceContext": dict(self.trace_context),
            **extra,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OutboxEntry:
        return cls(
            data["messageId"],
            data["exchange"],
            data["message"],
            dict(data["body"]),
            State(data["saga"]),
            data.get("correlationId"),
            dict(data.get("messageContext") or {}),
            dict(data.get("traceContext") or {}),
            bool(data.get("closesOperation")),
        )
