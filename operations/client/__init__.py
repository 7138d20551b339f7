"""The Python client of the service (docs/clients.md): follow, start and cancel operations.

It imports, of ``operations``, only the records, the exception tree, the timestamps and the
back-off: never the server (tests/test_imports.py)."""

from operations.client.client import OperationsClient
from operations.client.credentials import TokenProvider
from operations.client.handle import OperationHandle
from operations.client.refusals import RequestRefused
from operations.errors import OperationNotFound, OperationTimeout, TokenError
from operations.records import Operation

__all__ = [
    "Operation",
    "OperationHandle",
    "OperationNotFound",
    "OperationTimeout",
    "OperationsClient",
    "RequestRefused",
    "TokenError",
    "TokenProvider",
]
