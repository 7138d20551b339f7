"""A retry of the step a saga waits for: the messages its latest publishing step sent go out
again from its store, with the same message ids, correlation id, ``message_context`` and
``Saga`` header, so a service whose queue lost the command gets it once more, and one that had
it already sees a duplicate by message id.

A retry holds the saga for :attr:`window` seconds (``OPERATIONS_SAGA_RETRY_WINDOW_SECONDS``):
a repeat within it, from any process, publishes nothing. A publish that fails lets go of the
hold, so the retry can be asked again at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from operations.sagas.coordinator import Coordinator
from operations.sagas.records import SagaRecord, SagaStatus

DEFAULT_WINDOW_SECONDS = 30


@dataclass(frozen=True)
class StepRetry:
    """``why``: ``retried``, ``repeated`` (an earlier retry holds), ``finished`` (not running),
    ``moved_on`` (no longer matching) or ``nothing_to_resend``."""

    why: str
    published: int = 0
    record: SagaRecord | None = None


async def retry_waiting_step(
    coordinator: Coordinator,
    saga_name: str,
    saga_id: str,
    window: float = DEFAULT_WINDOW_SECONDS,
    only_if: Callable[[SagaRecord], bool] | None = None,
) -> StepRetry:
    """Publish again what the running saga waits on; raises when the broker refuses."""
    store = coordinator.store
    loaded = await store.load(saga_name, saga_id)
    if loaded is None or loaded.record.status is not SagaStatus.PENDING:
        return StepRetry("finished", record=None if loaded is None else loaded.record)
    record = loaded.record
    if only_if is not None and not only_if(record):
        return StepRetry("moved_on", record=record)
    entries = await store.last_sent(saga_name, saga_id)
    if not any(not entry.closes_operation for entry in entries):
        return StepRetry("nothing_to_resend", record=record)
    if not await store.hold_retry(saga_name, saga_id, window):
        return StepRetry("repeated", record=record)
    try:
        published = await coordinator.relay.resend(entries)
    except BaseException:
        await store.release_retry(saga_name, saga_id)
        raise
    return StepRetry("retried", published, record)
