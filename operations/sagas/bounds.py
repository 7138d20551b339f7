"""The bound on what a saga keeps: the data a step leaves must serialise as JSON, within the
document bounds (:mod:`operations.documents`) and within a size, or the step is not committed."""

from __future__ import annotations

from typing import Any

import orjson

from operations import documents
from operations.errors import DocumentError, SagaDataError
from operations.sagas.saga import Saga, SagaMessage

MAX_DATA_BYTES = 65_536


def check_data(saga: Saga[Any], message: SagaMessage, max_bytes: int = MAX_DATA_BYTES) -> None:
    """Raises SagaDataError when the data ``message``'s step left cannot be stored: not
    serialisable, beyond the document bounds, or over ``max_bytes`` as JSON."""
    what = f"saga {type(saga).name}: step {message.name} left data that"
    try:
        data = saga.dump_data()
        documents.check(data)
        size = len(orjson.dumps(data))
    except DocumentError as error:
        raise SagaDataError(f"{what} breaks the bounds: {error.reason}") from None
    except (TypeError, ValueError) as error:
        raise SagaDataError(f"{what} cannot be stored: {error}") from None
    if size > max_bytes:
        raise SagaDataError(f"{what} is {size} bytes as JSON, over the limit of {max_bytes}")
