"""An embedded saga coordinator (a process manager in the style of Chronicle), with Redis
persistence, an outbox, compensation and deadlines. The public API::

    from operations.sagas import Saga, start, step, compensates, Coordinator, OutboxRelay

See ``saga.py`` for how a saga is written, ``coordinator.py`` for how messages drive it.
"""

from .coordinator import Coordinator
from .deadlines import DeadlineWatcher
from .instances import SagaRecord, SagaStatus
from .memory import MemorySagaStore
from .outbox import OutboxRelay
from .results import Cancellation, Processed, SagaOutcome
from .saga import (
    Rejection,
    Saga,
    SagaContext,
    SagaMessage,
    compensates,
    start,
    step,
)
from .store import RedisSagaStore, SagaStore

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
