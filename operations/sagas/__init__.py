"""An embedded saga coordinator (a process manager in the style of Chronicle), with Redis
persistence, an outbox, compensation and deadlines. The public API::

    from operations.sagas import Saga, start, step, compensates, Coordinator, OutboxRelay

See ``saga.py`` for how a saga is written, ``coordinator.py`` for how messages drive it.
"""

from operations.sagas.coordinator import Coordinator
from operations.sagas.deadlines import DeadlineWatcher
from operations.sagas.memory import MemorySagaStore
from operations.sagas.outbox import OutboxRelay
from operations.sagas.records import SagaRecord, SagaStatus
from operations.sagas.results import Cancellation, Processed, SagaOutcome
from operations.sagas.saga import (
    Rejection,
    Saga,
    SagaContext,
    SagaMessage,
    compensates,
    start,
    step,
)
from operations.sagas.store import RedisSagaStore, SagaStore

__all__ = [
    "Cancellation",
    "Coordinator",
    "DeadlineWatcher",
    "MemorySagaStore",
    "OutboxRelay",
    "Processed",
    "RedisSagaStore",
    "Rejection",
    "Saga",
    "SagaContext",
    "SagaMessage",
    "SagaOutcome",
    "SagaRecord",
    "SagaStatus",
    "SagaStore",
    "compensates",
    "start",
    "step",
]
