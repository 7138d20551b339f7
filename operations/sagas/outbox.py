"""The outbox relay: sends what committed steps published, with broker confirms, and keeps
retrying what is still unconfirmed (after a crash, a broker outage, a restart). A saga's closing
(:mod:`operations.sagas.endings`) waits in the same outbox, in order, and is applied to its
operation through the operation store instead of being sent."""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from aiormq.exceptions import AMQPError

from operations.amqp.publisher import OutgoingMessage
from operations.envelope import named_fields
from operations.errors import StoreError, StoreUnavailable
from operations.metrics import Registry
from operations.periodic import Periodic
from operations.records import ApplyOutcome
from operations.sagas.endings import envelope_of
from operations.sagas.records import OutboxEntry
from operations.sagas.store import Pending, SagaStore
from operations.store.redis_store import Store

log = logging.getLogger("operations.sagas.outbox")

RETRY_AFTER_SECONDS = 2.0
LEASE_SECONDS = 30.0
# The longest a message waits for its confirm. A sender starts a message only while its lease has
# at least this long left, so a lease never lapses while one of its messages is in flight.
CONFIRM_SECONDS = 10.0


class Publisher(Protocol):
    async def publish(self, message: OutgoingMessage, *, confirm_within: float = 10.0) -> None: ...


def step_context(context: Mapping[str, Any], message: str) -> dict[str, Any]:
    """The originating context, named after the message, so the operation shows the step."""
    named = named_fields(context, ("name",), keep=False)
    named["name"] = message
    return named


def outgoing(entry: OutboxEntry) -> OutgoingMessage:
    """The message an outbox entry sends."""
    return OutgoingMessage(
        entry.exchange,
        entry.message,
        entry.body,
        entry.correlation_id,
        entry.message_id,
        step_context(entry.message_context, entry.message),
        entry.saga_state,
        entry.trace_context,
    )


class OutboxRelay:
    def __init__(
        self,
        store: SagaStore,
        publisher: Publisher,
        metrics: Registry,
        every: float = 1.0,
        operations: Store | None = None,
    ) -> None:
        """``operations`` is the store sagas' operations live in; without one (sagas that track
        no operations) no closing is queued."""
        self.store = store
        self.publisher = publisher
        self.metrics = metrics
        self.operations = operations
        self._passes = Periodic("saga-outbox", self.flush, every, log, metrics)

    async def send(self, saga_name: str, saga_id: str) -> None:
        """Send a saga's whole outbox, oldest first, as its only sender for now.

        The lease keeps two senders (two processes committing steps of one saga, or a step and
        the background pass) from publishing the same messages twice. Whoever fails to get it
        leaves its messages to the holder, which looks at the outbox again after letting go.
        """
        holder = uuid.uuid4().hex
        while await self.store.lease_outbox(saga_name, saga_id, holder, LEASE_SECONDS):
            until = time.monotonic() + LEASE_SECONDS - CONFIRM_SECONDS
            failed = False
            try:
                while not failed and time.monotonic() < until:
                    pending = await self.store.outbox(saga_name, saga_id)
                    if not pending.entries:
                        break
                    failed = not await self.deliver(pending, until)
            finally:
                await self.store.release_outbox(saga_name, saga_id, holder)
            if failed or not (await self.store.outbox(saga_name, saga_id)).entries:
                return  # a failed send is left to the background pass

    async def deliver(self, pending: Pending, until: float = math.inf) -> bool:
        """Publish a saga's pending messages in order; False if one could not be. Messages not
        started by ``until`` (monotonic) are left for the sender's next lease."""
        confirmed: list[str] = []
        failed = False
        try:
            for stored, entry in pending.entries:
                if time.monotonic() >= until:
                    break  # the rest wait for a fresh lease; nothing failed
                if entry.closes_operation:
                    await self._close(pending, entry)
                else:
                    await self._send(entry)
                confirmed.append(stored)
        except (AMQPError, ConnectionError, TimeoutError, RuntimeError, StoreUnavailable) as error:
            failed = True
            log.warning(
                "saga %s:%s: %d message(s) left in the outbox: %s",
                pending.saga_name,
                pending.saga_id,
                len(pending.entries) - len(confirmed),
                error,
            )
            self.metrics.saga_publish_failures.inc()
        if confirmed:
            await self.store.acknowledge(pending.saga_name, pending.saga_id, confirmed)
        return not failed

    async def resend(self, entries: list[OutboxEntry]) -> int:
        """Publish again, in order and confirmed, the messages among ``entries`` (not a
        closing): a retry of the step a saga waits for. Raises as a publish does."""
        sent = 0
        for entry in entries:
            if not entry.closes_operation:
                await self._send(entry)
                sent += 1
        return sent

    async def _send(self, entry: OutboxEntry) -> None:
        await self.publisher.publish(outgoing(entry), confirm_within=CONFIRM_SECONDS)
        self.metrics.saga_messages_published.inc(message=entry.message)

    async def _close(self, pending: Pending, closing: OutboxEntry) -> None:
        """Apply the saga's ending to its operation. A repeat is a duplicate, and an operation
        its saga's own message has already ended is left as it is (the first end stays)."""
        if self.operations is None:
            raise RuntimeError("this relay has no operation store to close operations in")
        envelope = envelope_of(closing)
        (change,) = await self.operations.apply([envelope])
        where = (pending.saga_name, pending.saga_id, closing.correlation_id)
        if isinstance(change, StoreError):
            # Redis refuses this one write for good (a key of another type): retrying cannot help.
            log.error("saga %s:%s could not close operation %s: %s", *where, change)
        elif change.outcome is ApplyOutcome.APPLIED:
            log.info(
                "saga %s:%s closed operation %s: %s",
                *where,
                envelope.state.value,
                extra={"correlation_id": closing.correlation_id},
            )
        else:
            log.debug("saga %s:%s: operation %s already closed", *where)

    async def start(self) -> None:
        """Re-send, every ``every`` seconds, outboxes a crash or an outage left unconfirmed."""
        self._passes.start()

    async def stop(self) -> None:
        await self._passes.stop()

    async def flush(self) -> int:
        """One pass over outboxes left unconfirmed for a while; returns how many were drained."""
        drained = 0
        for pending in await self.store.pending(time.time() - RETRY_AFTER_SECONDS):
            await self.send(pending.saga_name, pending.saga_id)
            if not (await self.store.outbox(pending.saga_name, pending.saga_id)).entries:
                drained += 1
        return drained
