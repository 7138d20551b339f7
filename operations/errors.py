"""The one exception tree of the service.

    OperationsError                 root: every error the service raises on purpose
    ├── SettingsError               an environment variable has a bad value (names the variable)
    ├── CatalogueError              the message catalogue file cannot be used
    ├── SagaTypeError               OPERATIONS_SAGA_TYPES names a saga type that cannot be run
    ├── BrokerUnavailable           a message could not be handed to RabbitMQ (sagas/starts.py)
    ├── SagaDataError               stored saga data does not fit its data_type (sagas/saga.py)
    ├── EnvelopeError               a delivered message cannot be interpreted (names the field)
    ├── TokenError                  a JWT is missing, malformed, badly signed, expired or refused
    ├── StoreError                  Redis could not apply or read a record
    │   ├── StoreUnavailable        Redis is unreachable; the work can be retried
    │   └── InvalidCursor           a listing cursor this service did not issue (store.py)
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


class TokenError(OperationsError):
    code = "unauthorized"


class StoreError(OperationsError):
    code = "store_error"


class StoreUnavailable(StoreError):
    code = "store_unavailable"
