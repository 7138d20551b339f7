"""The copies of a delivery the consumer publishes, and the one reader of a copy that comes back.

A message is sent back to its queue for another attempt (through its ``.retry`` queue when it has
one, else to the back of the queue) or copied to the dead-letter queue, always through the default
exchange, with the service's headers written here. A copy sent back arrives with no exchange: the
tracking path (:mod:`operations.pipeline`) and the saga intake (:mod:`operations.sagas.intake`)
both read it through :func:`as_first_sent`, as the message first published to its exchange and
routing key, and read its counts with :func:`failures_of` and :func:`attempts_of`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

from operations.amqp.settlements import DeadLetter, Retry
from operations.envelope import Delivered, header_text

REASON_HEADER = "x-operations-reason"
DISPOSITION_HEADER = "x-operations-disposition"
EXCHANGE_HEADER = "x-operations-exchange"
ROUTING_KEY_HEADER = "x-operations-routing-key"
ATTEMPTS_HEADER = "x-operations-attempts"
# How often processing a message has failed; read only on a message the service sent back to its
# queue (an empty exchange), so that a publisher's or a redrive's copy starts again at 0.
FAILURES_HEADER = "x-operations-failures"
# A stable id per dead-lettering, so that the copy's hand-over to the store is idempotent.
DEAD_LETTER_ID_HEADER = "x-operations-dead-letter-id"
DEAD_LETTERED_AT_HEADER = "x-operations-dead-lettered-at"


def copy_headers(message: Delivered, settlement: DeadLetter | Retry) -> dict[str, Any]:
    """The headers of the copy that carries out ``settlement``: the message's own, with where it
    was first published (kept from the first copy on), the reason, and the counts."""
    headers = dict(message.headers or {})
    if message.exchange:  # not a message already back from the retry queue
        headers[EXCHANGE_HEADER] = message.exchange
        headers[ROUTING_KEY_HEADER] = message.routing_key or ""
    headers[REASON_HEADER] = settlement.reason
    if isinstance(settlement, DeadLetter):
        headers[DISPOSITION_HEADER] = settlement.disposition.value
        headers[DEAD_LETTERED_AT_HEADER] = dt.datetime.now(dt.UTC).isoformat()
        headers[DEAD_LETTER_ID_HEADER] = uuid.uuid4().hex
        return headers
    # A new message to the broker: a quorum queue's count of this one's returns would be
    # mistaken for its own.
    headers.pop("x-delivery-count", None)
    if settlement.attempt is not None:
        headers[ATTEMPTS_HEADER] = settlement.attempt
    if settlement.failures:
        headers[FAILURES_HEADER] = settlement.failures
    return headers


def as_first_sent(delivered: Delivered) -> Delivered:
    """The delivery read as it was first published: a copy sent back, through :class:`Returned`;
    any other, as it is."""
    return delivered if delivered.exchange else Returned(delivered)


def failures_of(delivered: Delivered) -> int:
    """How often processing the message has failed: 0 unless the service sent it back."""
    if delivered.exchange:  # from a publisher or a redrive, not sent back by the service
        return 0
    return header_count(delivered.headers, FAILURES_HEADER)


def attempts_of(delivered: Delivered) -> int:
    """The early retries made so far of a saga message that came too early or kept conflicting.
    Read on any message (a redrive strips the service's headers, a publisher rarely sets it)."""
    return header_count(delivered.headers, ATTEMPTS_HEADER)


def header_count(headers: Mapping[str, Any] | None, name: str) -> int:
    """A count the service keeps in a header: 0 when absent or not a whole number."""
    value = (headers or {}).get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class Returned:
    """A message the consumer sent back to its queue for another attempt (through the default
    exchange), read as if it came from the exchange and routing key it was first published to."""

    __slots__ = ("_delivered",)

    def __init__(self, delivered: Delivered) -> None:
        self._delivered = delivered

    @property
    def exchange(self) -> str | None:
        return header_text(self.headers.get(EXCHANGE_HEADER)) or self._delivered.exchange

    @property
    def routing_key(self) -> str | None:
        original = header_text(self.headers.get(ROUTING_KEY_HEADER))
        return original or self._delivered.routing_key

    @property
    def body(self) -> bytes:
        return self._delivered.body

    @property
    def headers(self) -> Mapping[str, Any]:
        return self._delivered.headers or {}

    @property
    def correlation_id(self) -> str | None:
        return self._delivered.correlation_id

    @property
    def message_id(self) -> str | None:
        return self._delivered.message_id

    @property
    def timestamp(self) -> dt.datetime | None:
        return self._delivered.timestamp

    @property
    def content_type(self) -> str | None:
        return self._delivered.content_type
