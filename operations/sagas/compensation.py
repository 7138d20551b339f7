"""Compensation: undoing one step of a rejected saga, with a few attempts, and the saga's
``on_rejected`` hook once its steps are undone. The coordinator commits after each."""

from __future__ import annotations

import logging
from typing import Any

from operations.sagas.records import StepRecord
from operations.sagas.saga import Rejection, Saga, SagaContext, SagaMessage

log = logging.getLogger("operations.sagas")

COMPENSATION_ATTEMPTS = 3


async def undo(saga: Saga[Any], method: str, entry: StepRecord, context: SagaContext) -> str | None:
    """Run the compensation ``method`` of the step ``entry`` recorded, up to
    ``COMPENSATION_ATTEMPTS`` times; None once it succeeds, else the last error. A failed attempt
    leaves nothing behind: what it queued is dropped and the saga's data restored."""
    original = SagaMessage(entry.message, entry.body, entry.message_id)
    error = "no attempt made"
    for _ in range(COMPENSATION_ATTEMPTS):
        queued, before = len(saga.outbox), saga.dump_data()
        try:
            await getattr(saga, method)(original, context)
            return None
        except Exception as failure:
            del saga.outbox[queued:]
            saga.data = type(saga).load_data(before)
            error = f"{type(failure).__name__}: {failure}"
    return error


async def end_rejected(saga: Saga[Any], rejection: Rejection, context: SagaContext) -> None:
    """The saga's ``on_rejected`` hook; if it fails, what it queued is dropped and the saga still
    ends (a hook that always fails must not keep the saga compensating for ever)."""
    queued = len(saga.outbox)
    try:
        await saga.on_rejected(rejection, context)
    except Exception:
        log.exception("saga %s:%s: on_rejected failed", type(saga).name, saga.id)
        del saga.outbox[queued:]
