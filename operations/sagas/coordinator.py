"""The coordinator: finds the sagas a message drives, restores each, runs its step, compensates on
rejection, and commits state, step log and outbox in one atomic write before anything is sent.

A rejection is committed first (status ``compensating``), then each compensation's outcome, then
the ending (``rejected`` or ``compensation_failed``), so a compensation in progress is visible and
one whose process died can be resumed by the deadline watcher.

Concurrency holds across processes: a commit succeeds only if the saga's version is still the one
read; otherwise the step is run again on the fresh state (a step only computes and queues
messages, so running it again is safe).

A cancellation (``cancel``) is a commit like a step's: it asks the saga whether it may still be
undone, and marks it rejected (code ``cancelled``) and compensating in one version-checked write.
A step racing it either commits first (and the cancellation is decided again on the new state) or
loses and finds the saga compensating. The compensation itself then runs as any other does, and
the deadline watcher resumes it if the process running it dies. The commit that ends a saga
also queues its closing (:mod:`.endings`): the saga's operation ends with the saga.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from operations import tracing
from operations.errors import StoreUnavailable
from operations.metrics import Registry
from operations.sagas.bounds import MAX_DATA_BYTES, check_data
from operations.sagas.business_keys import key_values
from operations.sagas.compensation import end_rejected, undo
from operations.sagas.endings import with_closing
from operations.sagas.objectives import Objectives
from operations.sagas.outbox import OutboxRelay
from operations.sagas.records import OutboxEntry, SagaRecord, SagaStatus, StepRecord
from operations.sagas.results import OUTCOME_OF, STATUS_OF, Cancellation, Processed, SagaOutcome
from operations.sagas.saga import Rejection, Saga, SagaContext, SagaMessage, StepSpec
from operations.sagas.store import Loaded, SagaStore

log = logging.getLogger("operations.sagas")

Callback = Callable[[SagaMessage, SagaContext], Awaitable[None]]
MAX_CONFLICT_RETRIES = 20
DEADLINE_MESSAGE = "deadline_exceeded"
CANCELLED = "cancelled"
# A compensation that has committed nothing for this long is taken to be orphaned (its process
# died) and is resumed by whichever process's deadline watcher sees it first.
COMPENSATION_GRACE_SECONDS = 30.0


class Coordinator:
    def __init__(
        self,
        saga_types: Sequence[type[Saga[Any]]],
        store: SagaStore,
        relay: OutboxRelay,
        metrics: Registry,
        finished_ttl_seconds: int = 86_400,
        factory: Callable[[type[Saga[Any]], str, Any], Saga[Any]] | None = None,
        compensation_grace_seconds: float = COMPENSATION_GRACE_SECONDS,
        max_data_bytes: int = MAX_DATA_BYTES,
        objectives: Objectives | None = None,
    ) -> None:
        """``objectives``: the steps' objectives; by default those the types declare."""
        self.saga_types = list(saga_types)
        self.objectives = objectives or Objectives(self.saga_types, {})
        self.store = store
        self.relay = relay
        self.metrics = metrics
        self.finished_ttl_seconds = finished_ttl_seconds
        self.compensation_grace_seconds = compensation_grace_seconds
        self.max_data_bytes = max_data_bytes
        self._factory = factory or (lambda saga_type, saga_id, data: saga_type(saga_id, data))
        self._by_name = {saga_type.name: saga_type for saga_type in self.saga_types}

    @property
    def messages(self) -> set[str]:
        """Every message name some saga has a step for."""
        return {message for saga_type in self.saga_types for message in saga_type.steps}

    async def process(
        self,
        message: SagaMessage,
        context: SagaContext,
        on_completed: Callback | None = None,
        on_rejected: Callback | None = None,
    ) -> list[Processed]:
        results = []
        for saga_type in self.saga_types:
            spec = saga_type.steps.get(message.name)
            if spec is None:
                continue
            saga_id = self._factory(saga_type, "", saga_type.new_data()).resolve_id(
                message, context
            )
            if not saga_id:
                continue
            result = await self._process(saga_type, spec, saga_id, message, context)
            self.metrics.sagas.inc(saga=saga_type.name, outcome=result.outcome.value)
            results.append(result)
            if result.outcome is SagaOutcome.COMPLETED and on_completed is not None:
                await on_completed(message, context)
            if (
                result.outcome in (SagaOutcome.REJECTED, SagaOutcome.COMPENSATION_FAILED)
                and on_rejected
            ):
                await on_rejected(message, context)
        return results

    async def expire(self, saga_name: str, saga_id: str, now: float | None = None) -> Processed:
        """Reject and compensate a saga whose deadline has passed, or resume a compensation that
        has not moved for ``compensation_grace_seconds`` (its process died)."""
        saga_type = self._by_name[saga_name]
        moment = time.time() if now is None else now
        if not tracing.active():
            return await self._expire(saga_type, saga_id, moment)
        loaded = await self.store.load(saga_name, saga_id)
        stored = loaded.record.trace_context if loaded is not None else None
        attributes = {"operations.saga": saga_name, "operations.saga_id": saga_id}
        with tracing.continuing("saga deadline", stored, attributes):
            return await self._expire(saga_type, saga_id, moment)

    async def _expire(self, saga_type: type[Saga[Any]], saga_id: str, moment: float) -> Processed:
        saga_name = saga_type.name
        for _ in range(MAX_CONFLICT_RETRIES):
            loaded = await self.store.load(saga_name, saga_id)
            if loaded is None or loaded.record.status.finished:
                return Processed(saga_name, saga_id, SagaOutcome.FINISHED)
            record = loaded.record
            context = SagaContext(record.correlation_id, record.message_context)
            if record.status is SagaStatus.COMPENSATING:
                if record.resume_at is not None and record.resume_at > moment:
                    return Processed(saga_name, saga_id, SagaOutcome.HANDLED)
                log.warning(
                    "saga %s:%s: resuming a compensation left unfinished",
                    saga_name,
                    saga_id,
                    extra={"correlation_id": record.correlation_id},
                )
                self.metrics.sagas.inc(saga=saga_name, outcome="compensation_resumed")
                outcome = await self._compensation(saga_type, loaded, context)
                return Processed(saga_name, saga_id, outcome)
            if record.deadline is None or record.deadline > moment:
                return Processed(saga_name, saga_id, SagaOutcome.HANDLED)
            saga = self._restore(saga_type, record)
            saga.reject("the saga did not finish before its deadline", DEADLINE_MESSAGE)
            self._begin_compensation(saga, record, len(record.steps))
            if await self._commit(saga, record, loaded.version, context):
                log.warning("saga %s:%s passed its deadline", saga_name, saga_id)
                self.metrics.sagas.inc(saga=saga_name, outcome=DEADLINE_MESSAGE)
                outcome = await self._compensation(
                    saga_type, Loaded(record, loaded.version + 1), context
                )
                return Processed(saga_name, saga_id, outcome)
        return Processed(saga_name, saga_id, SagaOutcome.CONFLICT)

    async def cancel(
        self,
        saga_name: str,
        saga_id: str,
        reason: str,
        only_if: Callable[[SagaRecord], bool] | None = None,
    ) -> Cancellation:
        """Reject a running saga with code ``cancelled`` and mark it compensating, unless it is
        not running, refuses, or (with ``only_if``) its state as committed no longer passes
        ``only_if``; the compensation is left to :meth:`compensate`."""
        saga_type = self._by_name[saga_name]
        for _ in range(MAX_CONFLICT_RETRIES):
            loaded = await self.store.load(saga_name, saga_id)
            if loaded is None or loaded.record.status is not SagaStatus.PENDING:
                status = "gone" if loaded is None else loaded.record.status.value
                return Cancellation(False, f"the saga is no longer running ({status})", "finished")
            record = loaded.record
            if only_if is not None and not only_if(record):
                return Cancellation(False, "the saga no longer matches", "moved_on")
            saga = self._restore(saga_type, record)
            refusal = saga.refuses_cancel()
            if refusal is not None:
                return Cancellation(False, refusal, "refused")
            saga.reject(reason, CANCELLED)
            self._begin_compensation(saga, record, len(record.steps))
            context = SagaContext(record.correlation_id, record.message_context)
            if await self._commit(saga, record, loaded.version, context):
                log.info(
                    "saga %s:%s cancelled: %s",
                    saga_name,
                    saga_id,
                    reason,
                    extra={"correlation_id": record.correlation_id},
                )
                self.metrics.sagas.inc(saga=saga_name, outcome=CANCELLED)
                return Cancellation(True, reason)
        return Cancellation(False, "the saga kept changing; try again", "conflict")

    async def compensate(self, saga_name: str, saga_id: str) -> Processed:
        """Run the compensation of a saga that is compensating (a cancelled one) to its end."""
        saga_type = self._by_name[saga_name]
        loaded = await self.store.load(saga_name, saga_id)
        if loaded is None or loaded.record.status is not SagaStatus.COMPENSATING:
            return Processed(saga_name, saga_id, SagaOutcome.FINISHED)
        record = loaded.record
        context = SagaContext(record.correlation_id, record.message_context)
        outcome = await self._compensation(saga_type, loaded, context)
        self.metrics.sagas.inc(saga=saga_name, outcome=outcome.value)
        return Processed(saga_name, saga_id, outcome)

    async def _process(
        self,
        saga_type: type[Saga[Any]],
        spec: StepSpec,
        saga_id: str,
        message: SagaMessage,
        context: SagaContext,
    ) -> Processed:
        for _ in range(MAX_CONFLICT_RETRIES):
            loaded = await self.store.load(saga_type.name, saga_id)
            if loaded is None:
                if not spec.starts:
                    return Processed(saga_type.name, saga_id, SagaOutcome.EARLY)
                if await self.store.tombstoned(saga_type.name, saga_id):
                    log.info(
                        "saga %s:%s finished and expired; %s starts no second one",
                        saga_type.name,
                        saga_id,
                        message.name,
                        extra={"correlation_id": context.correlation_id},
                    )
                    return Processed(saga_type.name, saga_id, SagaOutcome.TOMBSTONED)
                loaded = Loaded(self._new_record(saga_type, saga_id, context), 0)
            record = loaded.record
            if record.status.finished or record.status is SagaStatus.COMPENSATING:
                log.info(
                    "saga %s:%s is %s; ignoring %s",
                    saga_type.name,
                    saga_id,
                    record.status.value,
                    message.name,
                    extra={"correlation_id": context.correlation_id},
                )
                ended = record.status.finished
                outcome = SagaOutcome.FINISHED if ended else SagaOutcome.COMPENSATING
                return Processed(saga_type.name, saga_id, outcome)
            if message.message_id is not None and message.message_id in record.seen:
                return Processed(saga_type.name, saga_id, SagaOutcome.DUPLICATE)

            saga = self._restore(saga_type, record)
            completed_before = len(record.steps)
            try:
                await getattr(saga, spec.handler)(message, context)
            except Exception as error:
                log.exception("saga %s:%s step %s failed", saga_type.name, saga_id, message.name)
                saga.outbox.clear()
                saga.data = saga_type.load_data(
                    record.data
                )  # what the failed step changed is undone
                saga.reject(f"step {message.name} failed: {error}", "step_failed")
            check_data(saga, message, self.max_data_bytes)
            if message.message_id is not None:
                record.seen.append(message.message_id)
            record.steps.append(
                StepRecord(message.name, message.message_id, time.time(), dict(message.body))
            )
            if saga.rejection is not None:
                self._begin_compensation(saga, record, completed_before)
                if await self._commit(saga, record, loaded.version, context):
                    committed = Loaded(record, loaded.version + 1)
                    outcome = await self._compensation(saga_type, committed, context)
                    return Processed(saga_type.name, saga_id, outcome)
                continue
            if saga.completed:
                record.status = SagaStatus.COMPLETED
                outcome = SagaOutcome.COMPLETED
            else:
                outcome = SagaOutcome.HANDLED
            if await self._commit(saga, record, loaded.version, context):
                return Processed(saga_type.name, saga_id, outcome)
        log.warning(
            "saga %s:%s: gave up after %d conflicts", saga_type.name, saga_id, MAX_CONFLICT_RETRIES
        )
        return Processed(saga_type.name, saga_id, SagaOutcome.CONFLICT)

    def _new_record(
        self, saga_type: type[Saga[Any]], saga_id: str, context: SagaContext
    ) -> SagaRecord:
        data = self._factory(saga_type, saga_id, saga_type.new_data()).dump_data()
        trace = tracing.carrier()
        return SagaRecord.begun(
            saga_type.name, saga_id, data, context.correlation_id, context.message_context, trace
        )

    def _restore(self, saga_type: type[Saga[Any]], record: SagaRecord) -> Saga[Any]:
        saga = self._factory(saga_type, record.id, saga_type.load_data(record.data))
        saga.deadline = record.deadline
        return saga

    def _begin_compensation(self, saga: Saga[Any], record: SagaRecord, steps: int) -> None:
        """Mark the saga rejected and compensating: the first ``steps`` steps are to be undone."""
        rejection = saga.rejection
        assert rejection is not None
        record.reason, record.code = rejection.reason, rejection.code
        record.status = SagaStatus.COMPENSATING
        record.compensate_steps = steps
        record.resume_at = time.time() + self.compensation_grace_seconds

    async def _reload(self, record: SagaRecord) -> Loaded:
        loaded = await self.store.load(record.saga_name, record.id)
        if loaded is None:
            raise StoreUnavailable(f"saga {record.key} vanished from the store")
        return loaded

    async def _compensation(
        self, saga_type: type[Saga[Any]], loaded: Loaded, context: SagaContext
    ) -> SagaOutcome:
        """Undo a compensating saga's steps, newest first, one at a time, committing after each
        one; then run ``on_rejected`` and commit the saga as rejected or compensation_failed.

        A commit that loses to another process (one that took over this compensation) drops
        what this compensation queued and carries on from the state that won.
        """
        for _ in range(MAX_CONFLICT_RETRIES):
            record, version = loaded.record, loaded.version
            if record.status is not SagaStatus.COMPENSATING:
                return OUTCOME_OF.get(record.status, SagaOutcome.FINISHED)
            saga = self._restore(saga_type, record)
            saga.rejection = rejection = Rejection(record.reason or "", record.code)
            outcome, lost = SagaOutcome.REJECTED, False
            for entry in reversed(record.steps[: record.compensate_steps or 0]):
                if entry.compensated or entry.compensation_error is not None:
                    continue
                spec = saga_type.steps.get(entry.message)
                if spec is None or spec.compensation is None:
                    entry.compensated = True  # nothing to undo: committed with the next write
                    continue
                error = await undo(saga, spec.compensation, entry, context)
                if error is not None:
                    entry.compensation_error = error
                    log.error(
                        "saga %s:%s: compensation of %s failed: %s",
                        record.saga_name,
                        record.id,
                        entry.message,
                        error,
                        extra={"correlation_id": record.correlation_id},
                    )
                    outcome = SagaOutcome.COMPENSATION_FAILED
                    break  # strictly in reverse order: nothing older is undone before this is
                entry.compensated = True
                record.resume_at = time.time() + self.compensation_grace_seconds
                if not await self._commit(saga, record, version, context):
                    lost = True
                    break
                saga.outbox.clear()
                version += 1
            if not lost:
                await end_rejected(saga, rejection, context)
                record.status = STATUS_OF[outcome]
                record.resume_at = None
                if await self._commit(saga, record, version, context):
                    return outcome
            loaded = await self._reload(record)
        log.warning("saga %s:%s: compensation kept conflicting", saga_type.name, loaded.record.id)
        return SagaOutcome.CONFLICT

    async def _commit(
        self, saga: Saga[Any], record: SagaRecord, version: int, context: SagaContext
    ) -> bool:
        record.data = saga.dump_data()
        record.deadline = saga.deadline
        record.updated_at = time.time()
        saga_type = self._by_name[record.saga_name]
        record.keys = key_values(saga_type, record.data)
        record.overdue_step, record.overdue_at = self.objectives.overdue_at(saga_type, record) or (
            None,
            None,
        )
        trace_context = tracing.carrier() if saga.outbox else {}
        outbox = [
            OutboxEntry(
                out.message_id,
                out.exchange,
                out.message,
                out.body,
                out.saga_state,
                record.correlation_id,
                record.message_context or dict(context.message_context),
                trace_context,
            )
            for out in saga.outbox
        ]
        outbox = with_closing(record, outbox) if self.relay.operations else outbox
        if not await self.store.commit(record, version, outbox, self.finished_ttl_seconds):
            return False
        if outbox:
            # The whole outbox, oldest first: messages an earlier publish failed to send must
            # not be overtaken by this step's.
            await self.relay.send(record.saga_name, record.id)
        return True
