"""Operation states and the rule that decides a message's state (contract §2)."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    REJECTED = "rejected"

    @property
    def is_terminal(self) -> bool:
        return self is not State.PENDING

    @classmethod
    def from_saga_header(cls, value: str) -> State | None:
        """The ``Saga`` header's state in any letter case, or None for any other value."""
        try:
            return cls(value.strip().lower())
        except ValueError:
            return None


class MessageKind(StrEnum):
    COMMAND = "command"
    EVENT = "event"
    REJECTED_EVENT = "rejected_event"

    @property
    def default_state(self) -> State:
        return _DEFAULT_STATES[self]


_DEFAULT_STATES = {
    MessageKind.COMMAND: State.PENDING,
    MessageKind.EVENT: State.COMPLETED,
    MessageKind.REJECTED_EVENT: State.REJECTED,
}


def decide(kind: MessageKind, saga: State | None) -> State:
    """A valid ``Saga`` header wins; otherwise the kind of message decides."""
    return saga if saga is not None else kind.default_state
