"""A saga's end is its operation's end: the saga's closing, queued in its outbox and applied to
its operation (the saga's correlation id) by the outbox relay, through the operation store's
own apply.

The closing is part of the commit that ends the saga, so it is carried out even if the process
dies right after that commit (the relay of any process resumes the outbox). It says ``completed``
for a completed saga, and ``rejected`` with the saga's code and reason for one that is rejected,
cancelled, past its deadline, or whose compensation failed.

The first terminal state an operation reaches stays (``lua/apply.lua``). So when the saga's ending
commit (or a commit of its compensation) publishes a message with a terminal ``Saga`` state, the
closing takes that message's name and goes right after it if the message ends the operation just
as the saga does (same state; for a rejection, the saga's code and reason): whichever of the two
is applied first, the operation ends the same, as it did before the saga closed it. If the
message would end it otherwise (a compensation's ``Saga: Rejected`` without the code), the closing
goes before it, and the saga's code and reason stay. A saga that publishes no such message is
closed after the rest of its last commit, under the name of the last message it handled. The
closing's message id is derived from the saga and its ending, so a closing queued twice (during a
compensation, then at its end) is applied once.
"""

from __future__ import annotations

import uuid
from typing import Any

from operations.envelope import MAX_TEXT_LENGTH, Envelope, context_user_id, header
from operations.sagas.records import OutboxEntry, SagaRecord, SagaStatus
from operations.states import MessageKind, State

_ENDINGS = {
    SagaStatus.COMPLETED: State.COMPLETED,
    SagaStatus.REJECTED: State.REJECTED,
    SagaStatus.COMPENSATION_FAILED: State.REJECTED,
    SagaStatus.COMPENSATING: State.REJECTED,
}
_NAMESPACE = uuid.UUID("6f1c0d52-8a8e-4c53-9d1e-2f4b7a1c9e30")


def with_closing(record: SagaRecord, outbox: list[OutboxEntry]) -> list[OutboxEntry]:
    """The outbox of a commit of ``record``, with the saga's closing where it belongs (next to
    the first message with a terminal ``Saga`` state, else, once the saga is finished, last)."""
    state = _ENDINGS.get(record.status)
    if state is None or not record.correlation_id:
        return outbox
    first = next((n for n, entry in enumerate(outbox) if entry.saga_state.is_terminal), None)
    if first is None and not record.status.finished:
        return outbox  # compensating: the saga may still end its operation itself
    if first is not None:
        name = outbox[first].message
        at = first + 1 if _ends_alike(outbox[first], state, record) else first
    else:
        name = record.steps[-1].message if record.steps else record.saga_name
        at = len(outbox)
    rejected = state is State.REJECTED
    closing = OutboxEntry(
        closing_id(record.key, state),
        "",
        name,
        {"code": record.code, "reason": record.reason} if rejected else {},
        state,
        record.correlation_id,
        record.message_context,
        closes_operation=True,
    )
    return [*outbox[:at], closing, *outbox[at:]]


def _ends_alike(message: OutboxEntry, state: State, record: SagaRecord) -> bool:
    """Whether the message, applied as the tracking path reads it, ends the operation as the
    closing does."""
    if message.saga_state is not state:
        return False
    if state is State.COMPLETED:
        return True
    said = (_text(header(message.body, "code")), _text(header(message.body, "reason")))
    return said == (_text(record.code), _text(record.reason))


def closing_id(saga_key: str, state: State) -> str:
    """The message id of a saga's closing: the same for every repeat of it."""
    return uuid.uuid5(_NAMESPACE, f"{saga_key}:{state.value}").hex


def envelope_of(closing: OutboxEntry) -> Envelope:
    """The closing as the operation store applies it: a message the saga's operation received."""
    body = closing.body
    state = closing.saga_state
    return Envelope(
        message=closing.message,
        exchange="",
        kind=MessageKind.REJECTED_EVENT if state is State.REJECTED else MessageKind.EVENT,
        state=state,
        operation_id=closing.correlation_id,
        message_id=closing.message_id,
        user_id=context_user_id(closing.message_context),
        name=closing.message,
        code=_text(body.get("code")),
        reason=_text(body.get("reason")),
    )


def _text(value: Any) -> str | None:
    """A code or reason as the envelope reads it: trimmed and bounded, None when empty."""
    if not isinstance(value, str):
        return None
    return value.strip()[:MAX_TEXT_LENGTH] or None
