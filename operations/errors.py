"""The one exception tree of the service: its root, and the errors raised in many places.

The tree, with every class's ``code`` and the first paragraph of its docstring, is drawn in
docs/architecture.md ("Exceptions"), and a test (tests/test_docs.py) holds the drawing to the
classes. A few leaves live beside the code that raises them; each subclass states what it means
in its docstring's first paragraph, which the drawing repeats.

Each error carries a short machine-readable ``code`` (snake_case) and a human ``reason``, which the
HTTP API and the dead-letter headers use as they are.
"""

from __future__ import annotations


class OperationsError(Exception):
    """The root: every error the service raises on purpose."""

    code = "operations_error"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SettingsError(OperationsError):
    """An environment variable has a bad value (names the variable)."""

    code = "invalid_setting"

    def __init__(self, variable: str, reason: str) -> None:
        super().__init__(f"{variable}: {reason}")
        self.variable = variable


class CatalogueError(OperationsError):
    """The message catalogue file cannot be used."""

    code = "invalid_catalogue"


class SagaTypeError(OperationsError):
    """``OPERATIONS_SAGA_TYPES`` names a saga type that cannot be run."""

    code = "invalid_saga_type"


class BrokerUnavailable(OperationsError):
    """A message could not be handed to RabbitMQ."""

    code = "broker_unavailable"


class SagaDataError(OperationsError):
    """Saga data does not fit its ``data_type``, or breaks its bounds (sagas/bounds.py)."""

    code = "invalid_saga_data"


class EnvelopeError(OperationsError):
    """A delivered message cannot be interpreted (names the field)."""

    code = "invalid_message"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field


class DocumentError(OperationsError):
    """A JSON document from outside is not JSON, nests too deep or holds an integer out of
    range (documents.py).

    ``where`` is the path of the offending value (``.x[0]``), empty for the document as a whole.
    """

    code = "invalid_document"

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where.lstrip('.')}: {reason}" if where else reason)
        self.where = where


class TokenError(OperationsError):
    """A JWT is missing, malformed, badly signed, expired or refused."""

    code = "unauthorized"


class PayloadTooLarge(OperationsError):
    """An HTTP body over the route's size limit, known before it is read whole (http/models.py):
    answered ``413``."""

    code = "payload_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"the body exceeds {limit} bytes")
        self.limit = limit


class InvalidRequest(OperationsError):
    """An HTTP request does not fit its route's model (http/models.py): answered ``400``.

    The answer carries this ``code`` and ``reason``. ``field`` is where it fails (``limit``,
    ``parcelIds[0]``), or empty for the body as a whole."""

    code = "invalid_request"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


class InvalidQuery(InvalidRequest):
    """A query parameter does not fit (names it)."""

    code = "invalid_query"


class InvalidBody(InvalidRequest):
    """A JSON body does not fit (names the field)."""

    code = "invalid_body"


class InvalidIdempotencyKey(InvalidRequest):
    """An ``Idempotency-Key`` header is empty, over 255 characters, not printable ASCII, or
    given twice (sagas/idempotency.py)."""

    code = "invalid_idempotency_key"


class IdempotencyKeyReused(OperationsError):
    """An ``Idempotency-Key`` the caller already used on this route with another body
    (sagas/idempotency.py): answered ``422``."""

    code = "idempotency_key_reused"


class IdempotencyKeyInFlight(OperationsError):
    """The first request with this ``Idempotency-Key`` is still being handed to the broker after
    the wait for it (sagas/idempotency.py): answered ``409``, to be retried."""

    code = "idempotency_key_in_flight"


class TopologyMismatch(OperationsError):
    """Something the service declares on RabbitMQ exists there declared otherwise.

    RabbitMQ's 406 PRECONDITION_FAILED. Start-up stops with exit code 2: retrying cannot help."""

    code = "topology_mismatch"


class ExchangeMismatch(TopologyMismatch):
    """An exchange the catalogue names exists on RabbitMQ with another type."""

    code = "exchange_mismatch"

    def __init__(self, exchange: str, declared: str, refusal: str) -> None:
        self.exchange = exchange
        super().__init__(
            f"exchange {exchange!r} already exists on RabbitMQ with another type or other"
            f" arguments than the durable {declared} exchange this service declares for it;"
            f" the broker refused the declaration: {refusal}. Check the catalogue entry that"
            " lists it (its format decides the exchange's type), or the exchange's owner."
        )


class QueueMismatch(TopologyMismatch):
    """A queue exists on RabbitMQ with another type or other arguments than declared."""

    code = "queue_mismatch"

    def __init__(self, queue: str, declared: str, refusal: str) -> None:
        self.queue = queue
        self.declared = declared
        self.refusal = refusal
        super().__init__(
            f"queue {queue!r} already exists on RabbitMQ with another type or other arguments"
            f" than {declared}; the broker refused the declaration: {refusal}. A queue's type"
            f" and arguments cannot change in place. To migrate: stop every process consuming"
            f" {queue!r}, let it drain (or move its messages with a shovel), delete it, and"
            " start again with the new setting; or, without stopping, start with a new queue"
            " name (OPERATIONS_QUEUE, or OPERATIONS_SAGA_QUEUE for the saga queues) beside the"
            " old one and delete the old one once it is empty"
        )


class OperationNotFound(OperationsError):
    """No operation the caller may see has this id (http/operations.py): answered ``404``.

    Answered exactly as an unknown operation, whatever the reason: an id no operation can have,
    an expired one, or another user's."""

    code = "operation_not_found"

    def __init__(self, operation_id: str) -> None:
        super().__init__(f"operation {operation_id!r} was not found")
        self.operation_id = operation_id


class OperationTimeout(OperationsError):
    """An operation did not end within the time the Python client waited for it.

    It may still end later: the operation goes on; only the waiting stopped."""

    code = "operation_timeout"

    def __init__(self, operation_id: str, seconds: float) -> None:
        super().__init__(f"operation {operation_id!r} did not end within {seconds:g} s")
        self.operation_id = operation_id
        self.seconds = seconds


class DeadLetterNotFound(OperationsError):
    """No kept dead letter has this id (deadletters/)."""

    code = "dead_letter_not_found"

    def __init__(self, letter_id: str) -> None:
        super().__init__(f"dead letter {letter_id!r} was not found")
        self.letter_id = letter_id


class DeadLetterNotRedrivable(OperationsError):
    """A dead letter cannot be redriven now, or at all (deadletters/).

    Its body was cut to the cap, a redrive of it is already under way, or the broker routes its
    exchange and routing key to no queue."""

    code = "dead_letter_not_redrivable"


class StoreError(OperationsError):
    """Redis could not apply or read a record."""

    code = "store_error"


class StoreUnavailable(StoreError):
    """Redis is unreachable; the work can be retried."""

    code = "store_unavailable"
