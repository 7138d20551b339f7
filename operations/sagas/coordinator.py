"""The coordinator: finds the sagas a message drives, restores each, runs its step, compensates on
rejection, and commits state, step log and outbox in one atomic write before anything is sent.

Concurrency holds across processes: a commit succeeds only if the saga's version is still the one
read; otherwise the step is run again on the fresh state (a step only computes and queues
messages, so running it again is safe).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..metrics import Registry
from .outbox import OutboxRelay
from .records import OutboxEntry, SagaRecord, SagaStatus, StepRecord
from .saga import Rejection, Saga, SagaContext, SagaMessage, StepSpec
from .store import Loaded, SagaStore

log = logging.getLogger("operations.sagas")

Callback = Callable[[SagaMessage, SagaContext], Awaitable[None]]
MAX_CONFLICT_RETRIES = 20
COMPENSATION_ATTEMPTS = 3
DEADLINE_MESSAGE = "deadline_exceeded"


class Outcome(StrEnum):
    HANDLED = "handled"
    COMPLETED = "completed"
    REJECTED = "rejected"
    COMPENSATION_FAILED = "compensation_failed"
    DUPLICATE = "duplicate"
    FINISHED = "ignored_finished"  # the saga already finished: the message changes nothing
    EARLY = "early"  # no such saga yet and the message does not start one
    CONFLICT = "conflict"  # other writers kept winning; try again later


@dataclass(frozen=True)
class Processed:
    saga: str
    saga_id: str
    outcome: Outcome


class Coordinator:
    def __init__(
        self,
        sagas: Sequence[type[Saga[Any]]],
        store: SagaStore,
        relay: OutboxRelay,
        metrics: Registry,
        finished_ttl_seconds: int = 86_400,
        factory: Callable[[type[Saga[Any]], str, Any], Saga[Any]] | None = None,
    ) -> None:
        self.sagas = list(sagas)
        self.store = store
        self.relay = relay
        self.metrics = metrics
        self.finished_ttl_seconds = finished_ttl_seconds
        self._factory = factory or (lambda kind, saga_id, data: kind(saga_id, data))
        self._by_name = {kind.name: kind for kind in self.sagas}

    @property
    def messages(self) -> set[str]:
        """Every message name some saga has a step for."""
        return {message for kind in self.sagas for message in kind.steps}

    async def process(
        self,
        message: SagaMessage,
        context: SagaContext,
        on_completed: Callback | None = None,
        on_rejected: Callback | None = None,
    ) -> list[Processed]:
        results = []
        for kind in self.sagas:
            spec = kind.steps.get(message.name)
            if spec is None:
                continue
            saga_id = self._factory(kind, "", kind.new_data()).resolve_id(message, context)
            if not saga_id:
                continue
            result = await self._process(kind, spec, saga_id, message, context)
            self.metrics.sagas.inc(saga=kind.name, outcome=result.outcome.value)
            results.append(result)
            if result.outcome is Outcome.COMPLETED and on_completed is not None:
                await on_completed(message, context)
            if result.outcome in (Outcome.REJECTED, Outcome.COMPENSATION_FAILED) and on_rejected:
                await on_rejected(message, context)
        return results

    async def expire(self, saga_name: str, saga_id: str, now: float | None = None) -> Processed:
        """Reject and compensate a saga whose deadline has passed."""
        kind = self._by_name[saga_name]
        moment = time.time() if now is None else now
        message = SagaMessage(DEADLINE_MESSAGE, {}, f"deadline:{saga_id}")
        for _ in range(MAX_CONFLICT_RETRIES):
            loaded = await self.store.load(saga_name, saga_id)
            if loaded is None or loaded.record.status.finished:
                return Processed(saga_name, saga_id, Outcome.FINISHED)
            record = loaded.record
            if record.deadline is None or record.deadline > moment:
                return Processed(saga_name, saga_id, Outcome.HANDLED)
            saga = self._restore(kind, record)
            saga.reject("the saga did not finish before its deadline", "deadline_exceeded")
            context = SagaContext(record.correlation_id, record.message_context)
            outcome = await self._finish(saga, record, message, context, compensate_upto=None)
            if await self._commit(saga, record, loaded.version, context):
                log.warning("saga %s:%s passed its deadline", saga_name, saga_id)
                self.metrics.sagas.inc(saga=saga_name, outcome="deadline_exceeded")
                return Processed(saga_name, saga_id, outcome)
        return Processed(saga_name, saga_id, Outcome.CONFLICT)

    async def _process(
        self,
        kind: type[Saga[Any]],
        spec: StepSpec,
        saga_id: str,
        message: SagaMessage,
        context: SagaContext,
    ) -> Processed:
        for _ in range(MAX_CONFLICT_RETRIES):
            loaded = await self.store.load(kind.name, saga_id)
            if loaded is None:
                if not spec.starts:
                    return Processed(kind.name, saga_id, Outcome.EARLY)
                loaded = Loaded(self._new_record(kind, saga_id, context), 0)
            record = loaded.record
            if record.status.finished:
                log.info(
                    "saga %s:%s is %s; ignoring %s",
                    kind.name,
                    saga_id,
                    record.status.value,
                    message.name,
                    extra={"correlation_id": context.correlation_id},
                )
                return Processed(kind.name, saga_id, Outcome.FINISHED)
            if message.message_id is not None and message.message_id in record.seen:
                return Processed(kind.name, saga_id, Outcome.DUPLICATE)

            saga = self._restore(kind, record)
            completed_before = len(record.steps)
            try:
                await getattr(saga, spec.handler)(message, context)
            except Exception as error:
                log.exception("saga %s:%s step %s failed", kind.name, saga_id, message.name)
                saga.outbox.clear()
                saga.data = kind.load_data(record.data)  # what the failed step changed is undone
                saga.reject(f"step {message.name} failed: {error}", "step_failed")
            if message.message_id is not None:
                record.seen.append(message.message_id)
            record.steps.append(
                StepRecord(message.name, message.message_id, time.time(), dict(message.body))
            )
            if saga.rejection is not None:
                outcome = await self._finish(saga, record, message, context, completed_before)
            elif saga.completed:
                record.status = SagaStatus.COMPLETED
                outcome = Outcome.COMPLETED
            else:
                outcome = Outcome.HANDLED
            if await self._commit(saga, record, loaded.version, context):
                return Processed(kind.name, saga_id, outcome)
        log.warning(
            "saga %s:%s: gave up after %d conflicts", kind.name, saga_id, MAX_CONFLICT_RETRIES
        )
        return Processed(kind.name, saga_id, Outcome.CONFLICT)

    def _new_record(self, kind: type[Saga[Any]], saga_id: str, context: SagaContext) -> SagaRecord:
        now = time.time()
        saga = self._factory(kind, saga_id, kind.new_data())
        return SagaRecord(
            saga=kind.name,
            id=saga_id,
            status=SagaStatus.PENDING,
            data=saga.dump_data(),
            correlation_id=context.correlation_id,
            message_context=dict(context.message_context),
            created_at=now,
            updated_at=now,
        )

    def _restore(self, kind: type[Saga[Any]], record: SagaRecord) -> Saga[Any]:
        saga = self._factory(kind, record.id, kind.load_data(record.data))
        saga.deadline = record.deadline
        return saga

    async def _finish(
        self,
        saga: Saga[Any],
        record: SagaRecord,
        message: SagaMessage,
        context: SagaContext,
        compensate_upto: int | None,
    ) -> Outcome:
        """Compensate the steps completed before this message, newest first, one at a time."""
        rejection = saga.rejection
        assert rejection is not None
        record.reason, record.code = rejection.reason, rejection.code
        steps = record.steps if compensate_upto is None else record.steps[:compensate_upto]
        outcome = Outcome.REJECTED
        for entry in reversed(steps):
            if entry.compensated:
                continue
            spec = type(saga).steps.get(entry.message)
            if spec is not None and spec.compensation is not None:
                error = await self._compensate(saga, spec.compensation, entry, context)
                if error is not None:
                    entry.compensation_error = error
                    log.error(
                        "saga %s:%s: compensation of %s failed: %s",
                        record.saga,
                        record.id,
                        entry.message,
                        error,
                        extra={"correlation_id": record.correlation_id},
                    )
                    outcome = Outcome.COMPENSATION_FAILED
                    break  # strictly in reverse order: nothing older is undone before this is
            entry.compensated = True
        await saga.on_rejected(Rejection(rejection.reason, rejection.code), context)
        record.status = (
            SagaStatus.REJECTED if outcome is Outcome.REJECTED else SagaStatus.COMPENSATION_FAILED
        )
        return outcome

    async def _compensate(
        self, saga: Saga[Any], method: str, entry: StepRecord, context: SagaContext
    ) -> str | None:
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

    async def _commit(
        self, saga: Saga[Any], record: SagaRecord, version: int, context: SagaContext
    ) -> bool:
        record.data = saga.dump_data()
        record.deadline = saga.deadline
        record.updated_at = time.time()
        outbox = [
            OutboxEntry(
                out.message_id,
                out.exchange,
                out.message,
                out.body,
                out.saga_state,
                record.correlation_id,
                record.message_context or dict(context.message_context),
            )
            for out in saga.outbox
        ]
        if not await self.store.commit(record, version, outbox, self.finished_ttl_seconds):
            return False
        if outbox:
            # The whole outbox, oldest first: messages an earlier publish failed to send must
            # not be overtaken by this step's.
            await self.relay.send(record.saga, record.id)
        return True
