"""An embedded saga coordinator (a process manager in the style of Chronicle), with Redis
persistence, an outbox, compensation and deadlines. The public API::

    from operations.sagas import Saga, start, step, compensates, Coordinator, OutboxRelay

See ``saga.py`` for how a saga is written, ``coordinator.py`` for how messages drive it.
"""

from .coordinator import Coordinator
from .deadlines import DeadlineWatcher
from .memory import MemorySagaStore
from .outbox import OutboxRelay
from .records import SagaRecord, SagaStatus
from .results import Cancellation, Outcome, Processed
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
    "Outcome",
    "Processed",
    "RedisSagaStore",
    "Rejection",
    "Saga",
    "SagaContext",
    "SagaMessage",
    "SagaRecord",
    "SagaStatus",
    "SagaStore",
    "compensates",
    "start",
    "step",
]
