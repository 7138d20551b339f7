"""The dead-letter workbench (contract §9): every message the service dead-letters is taken off
its dead-letter queue into Redis (:mod:`.intake`), kept within bounds (:mod:`.store`), and can be
listed, inspected, redriven and discarded (:mod:`.redrive`) over HTTP (:mod:`.http`) and from
the command line (:mod:`.commands`)."""

from .http import DeadLettersApi
from .intake import DeadLetterIntake
from .records import DeadLetterItem, StoredLetter, capture
from .redrive import RedrivePublisher, Workbench, publish_redrive
from .store import DeadLetterStore, Kept

__all__ = [
    "DeadLetterIntake",
    "DeadLetterItem",
    "DeadLetterStore",
    "DeadLettersApi",
    "Kept",
    "RedrivePublisher",
    "StoredLetter",
    "Workbench",
    "capture",
    "publish_redrive",
]
