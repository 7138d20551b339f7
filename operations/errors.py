"""The one exception tree of the service.

    OperationsError                 root: every error the service raises on purpose
    ├── SettingsError               an environment variable has a bad value (names the variable)
    ├── CatalogueError              the message catalogue file cannot be used
    ├── SagaTypeError               OPERATIONS_SAGA_TYPES names a saga type that cannot be run
    ├── BrokerUnavailable           a message could not be handed to RabbitMQ (sagas/starts.py)
    ├── SagaDataError               saga data does not fit its data_type or its bounds (sagas/)
    ├── EnvelopeError               a delivered message cannot be interpreted (names the field)
    ├── DocumentError               a JSON document too deep or with a huge integer (documents.py)
    ├── TokenError                  a JWT is missing, malformed, badly signed, expired or refused
    ├── ClaimError                  a bad ``--claim`` option of ``operations token`` (claims.py)
    ├── PayloadTooLarge             an HTTP body over the route's size limit (models.py); a 413
    ├── InvalidRequest              an HTTP request does not fit its model (models.py); a 400
    │   ├── InvalidQuery            a query parameter (names it)
    │   └── InvalidBody             a JSON body (names the field)
    │       └── InvalidOrder        a ``POST /orders`` body (orders.py)
    ├── StoreError                  Redis could not apply or read a record
    │   ├── StoreUnavailable        Redis is unreachable; the work can be retried
    │   └── InvalidCursor           a listing cursor this service did not issue (store.py)
    ├── QueueMismatch               a queue exists on RabbitMQ with other arguments than declared
    ├── OperationNotFound           no operation the caller may see has this id (api.py)
    ├── DeadLetterNotFound          no kept dead letter has this id (deadletters/)
    ├── DeadLetterNotRedrivable     a dead letter cannot be redriven now, or at all (deadletters/)
    ├── FailurePlanError            a bad ``--fail`` option of demo-services (demo/failures.py)
    └── InvalidCommand              a simulated service cannot read a command (demo/answers.py)

Each error carries a short machine-readable ``code`` (snake_case) and a human ``reason``, which the
HTTP API and the dead-letter headers use as they are.
"""

from __future__ import annotations


class OperationsError(Exception):
    code = "operations_error"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SettingsError(OperationsError):
    code = "invalid_setting"

    def __init__(self, variable: str, reason: str) -> None:
        super().__init__(f"{variable}: {reason}")
        self.variable = variable


class CatalogueError(OperationsError):
    code = "invalid_catalogue"


class SagaTypeError(OperationsError):
    code = "invalid_saga_type"


class BrokerUnavailable(OperationsError):
    code = "broker_unavailable"


class SagaDataError(OperationsError):
    code = "invalid_saga_data"


class EnvelopeError(OperationsError):
    code = "invalid_message"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field


class DocumentError(OperationsError):
    """A JSON document from outside that is not JSON, nests too deep or holds an integer out of
    range (:mod:`operations.documents`). ``where`` is the path of the offending value (``.x[0]``),
    empty for the document as a whole."""

    code = "invalid_document"

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where.lstrip('.')}: {reason}" if where else reason)
        self.where = where


class TokenError(OperationsError):
    code = "unauthorized"


class PayloadTooLarge(OperationsError):
    """An HTTP body over the route's limit, known before it is read whole: answered ``413``."""

    code = "payload_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"the body exceeds {limit} bytes")
        self.limit = limit


class InvalidRequest(OperationsError):
    """An HTTP request whose query or body does not fit the route's model: answered ``400`` with
    this ``code`` and ``reason``. ``field`` is where it fails (``limit``, ``parcelIds[0]``), or
    empty for the body as a whole."""

    code = "invalid_request"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


class InvalidQuery(InvalidRequest):
    code = "invalid_query"


class InvalidBody(InvalidRequest):
    code = "invalid_body"


class QueueMismatch(OperationsError):
    """A queue exists on the broker with another type or other arguments than the service
    declares (RabbitMQ's 406 PRECONDITION_FAILED). Start-up stops: retrying cannot help."""

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
    """Answered ``404`` exactly as an unknown operation, whatever the reason: an id no operation
    can have, an expired one, or another user's."""

    code = "operation_not_found"

    def __init__(self, operation_id: str) -> None:
        super().__init__(f"operation {operation_id!r} was not found")
        self.operation_id = operation_id


class DeadLetterNotFound(OperationsError):
    code = "dead_letter_not_found"

    def __init__(self, letter_id: str) -> None:
        super().__init__(f"dead letter {letter_id!r} was not found")
        self.letter_id = letter_id


class DeadLetterNotRedrivable(OperationsError):
    """Its body was cut to the cap, a redrive of it is already under way, or the broker routes
    its exchange and routing key to no queue."""

    code = "dead_letter_not_redrivable"


class StoreError(OperationsError):
    code = "store_error"


class StoreUnavailable(StoreError):
    code = "store_unavailable"
