"""The kind of queue the service declares, and the arguments that make it so.

``classic`` declares plain durable queues without arguments, as the service always has.
``quorum`` declares every queue as a quorum queue, replicated over the cluster's nodes:

- a consumed queue (the tracking queue, the saga queue) gets a delivery limit, and dead-letters a
  message delivered more often than that to its dead-letter queue, at least once;
- a retry queue dead-letters each message back to its target when the message's expiration
  passes, at least once;
- a dead-letter queue has no limit and dead-letters nothing: it keeps what it is given.

At-least-once dead-lettering needs ``x-overflow: reject-publish``. The service sets no length
limit, so the overflow behaviour never comes into play otherwise.

The arguments are a queue's identity on the broker: declaring a queue again with other ones is
refused (406 PRECONDITION_FAILED), which :mod:`operations.amqp.topology` turns into a
:class:`~operations.errors.QueueMismatch`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

DEFAULT_DELIVERY_LIMIT = 20
# How often the service itself tries a message whose processing keeps failing before it
# dead-letters it with the reason, on either type of queue. Well below the delivery limit, which
# stays the backstop for a message returned unsettled (its process died, its channel closed).
DEFAULT_MAX_ATTEMPTS = 5


class QueueType(enum.StrEnum):
    CLASSIC = "classic"
    QUORUM = "quorum"


@dataclass(frozen=True)
class QueueArguments:
    type: QueueType = QueueType.CLASSIC
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT

    @property
    def quorum(self) -> bool:
        return self.type is QueueType.QUORUM

    def consumed(self, dead_letter_queue: str) -> dict[str, Any]:
        """For a queue the service consumes: at the delivery limit, a message goes to
        ``dead_letter_queue``."""
        if not self.quorum:
            return {}
        return {
            **self._dead_lettering(dead_letter_queue),
            "x-delivery-limit": self.delivery_limit,
        }

    def retry(self, target: str) -> dict[str, Any]:
        """For a retry queue: a message whose expiration passes goes back to ``target``."""
        if not self.quorum:
            return {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": target}
        return self._dead_lettering(target)

    def plain(self) -> dict[str, Any]:
        return {"x-queue-type": QueueType.QUORUM.value} if self.quorum else {}

    def _dead_lettering(self, target: str) -> dict[str, Any]:
        return {
            "x-queue-type": QueueType.QUORUM.value,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": target,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }


CLASSIC = QueueArguments()
