"""The saga types the service runs: imported from ``OPERATIONS_SAGA_TYPES`` (``module:Class``
import paths), checked against each other and against the message catalogue, configured once from
the environment, and described for ``GET /sagas/types``.

Anything wrong raises :class:`SagaTypeError` naming the import path, so ``operations serve`` stops
with exit code 2 before it consumes anything.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from operations.amqp.catalogue import Catalogue
from operations.errors import SagaTypeError
from operations.formats import DEFAULT_FORMAT
from operations.sagas.objectives import Objectives
from operations.sagas.saga import Saga
from operations.wire import Binding, ExchangeKind

SagaType = type[Saga[Any]]


_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


def import_saga_type(path: str) -> SagaType:
    """The class an import path ``package.module:ClassName`` names, if it is a saga type."""
    module_name, colon, class_name = path.partition(":")
    if not colon or not module_name or not class_name:
        raise SagaTypeError(f"{path!r} is not an import path of the form package.module:ClassName")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise SagaTypeError(
            f"{path!r}: module {module_name!r} cannot be imported ({type(error).__name__}: {error})"
        ) from None
    saga_type = getattr(module, class_name, None)
    if saga_type is None:
        raise SagaTypeError(f"{path!r}: module {module_name!r} has no {class_name!r}")
    if not isinstance(saga_type, type) or not issubclass(saga_type, Saga) or saga_type is Saga:
        raise SagaTypeError(f"{path!r} is not a subclass of operations.sagas.Saga")
    saga_name = vars(saga_type).get("name", getattr(saga_type, "name", None))
    if not isinstance(saga_name, str) or not saga_name:
        raise SagaTypeError(f"{path!r} sets no saga name (class attribute 'name')")
    if not _NAME.fullmatch(saga_name):
        # The name is a part of every key of its sagas and of the member NAME:ID that names one:
        # a ':' or a brace there would let an id be read as part of the name.
        raise SagaTypeError(
            f"{path!r}: saga name {saga_name!r} must be 1 to 100 letters, digits, '_', '-' or '.'"
        )
    data_type = getattr(saga_type, "data_type", None)
    if not isinstance(data_type, type) or not dataclasses.is_dataclass(data_type):
        raise SagaTypeError(f"{path!r}: its data_type must be a dataclass")
    if not any(spec.starts for spec in saga_type.steps.values()):
        raise SagaTypeError(f"{path!r} has no @start step: nothing would ever start it")
    return saga_type


MAX_REASON_TEXT = 500
"""The length of a saga type's plain words for one code (``Saga.reasons``)."""


class SagaTypes:
    """The loaded saga types, in the order they were named, with each one's settings."""

    def __init__(
        self,
        saga_types: Sequence[SagaType],
        catalogue: Catalogue,
        settings: Mapping[str, Any] | None = None,
        paths: Sequence[str] | None = None,
        objectives: Mapping[str, float] | None = None,
    ) -> None:
        """``objectives``: the operator's objectives (``OPERATIONS_SAGA_OBJECTIVES``), seconds by
        saga type name or by ``type.step``, over those the types declare."""
        self.in_order = list(saga_types)
        self.catalogue = catalogue
        self.settings = dict(settings or {})
        self._by_name: dict[str, SagaType] = {}
        for saga_type, path in zip(
            self.in_order,
            paths or [saga_type.__qualname__ for saga_type in self.in_order],
            strict=True,
        ):
            self._check(saga_type, path)
            self._by_name[saga_type.name] = saga_type
        self.objectives = Objectives(self.in_order, objectives or {})

    @classmethod
    def load(
        cls,
        paths: Sequence[str],
        catalogue: Catalogue,
        environ: Mapping[str, str],
        objectives: Mapping[str, float] | None = None,
    ) -> SagaTypes:
        saga_types = [import_saga_type(path) for path in paths]
        settings = {saga_type.name: saga_type.configure(environ) for saga_type in saga_types}
        return cls(saga_types, catalogue, settings, paths, objectives)

    def _check(self, saga_type: SagaType, path: str) -> None:
        other = self._by_name.get(saga_type.name)
        if other is not None:
            raise SagaTypeError(
                f"{path!r}: two saga types are named {saga_type.name!r}"
                f" ({other.__module__}:{other.__qualname__} too)"
            )
        for message in saga_type.steps:
            listed_as = self.catalogue.format_of(message)
            if listed_as is not None and listed_as != DEFAULT_FORMAT:
                raise SagaTypeError(
                    f"{path!r}: saga {saga_type.name} handles {message!r}, a {listed_as}"
                    " message; sagas take and send Convey messages only"
                )
            if self.catalogue.lookup("", message) is None:
                raise SagaTypeError(
                    f"{path!r}: saga {saga_type.name} handles {message!r},"
                    " which is not in the message catalogue (with a catalogue of your own, run"
                    " your own saga types, or none with OPERATIONS_SAGAS=false)"
                )
        if saga_type.http_start is not None and saga_type.name in ("cancel", "retry", "types"):
            raise SagaTypeError(
                f"{path!r}: a saga type started over HTTP cannot be named {saga_type.name!r}"
                " (POST /sagas/cancel and /sagas/retry are the bulk actions)"
            )
        if saga_type.http_start is not None:
            spec = saga_type.steps.get(saga_type.http_start)
            if spec is None or not spec.starts:
                start = saga_type.http_start
                raise SagaTypeError(
                    f"{path!r}: http_start {start!r} is not one of its @start messages"
                )
        unknown = [message for message in saga_type.path if message not in saga_type.steps]
        if unknown:
            raise SagaTypeError(f"{path!r}: its path names messages it has no step for: {unknown}")
        self._check_lookouts(saga_type, path)
        reasons = saga_type.reasons
        if not isinstance(reasons, dict) or not all(
            isinstance(code, str) and isinstance(text, str) and 0 < len(text) <= MAX_REASON_TEXT
            for code, text in reasons.items()
        ):
            raise SagaTypeError(
                f"{path!r}: its reasons must map codes to plain words"
                f" (1 to {MAX_REASON_TEXT} characters each)"
            )

    @staticmethod
    def _check_lookouts(saga_type: SagaType, path: str) -> None:
        """Business keys are fields of the type's data; objectives are positive seconds."""
        keys = saga_type.business_keys
        if not isinstance(keys, tuple) or not all(isinstance(key, str) for key in keys):
            raise SagaTypeError(f"{path!r}: business_keys must be a tuple of field names")
        if dataclasses.is_dataclass(saga_type.data_type):
            fields = {field.name for field in dataclasses.fields(saga_type.data_type)}
            unknown = [key for key in keys if key not in fields]
            if unknown:
                raise SagaTypeError(
                    f"{path!r}: business_keys names fields its data does not have: {unknown}"
                )
        seconds = saga_type.objective_seconds
        if seconds is not None and (
            isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0
        ):
            raise SagaTypeError(f"{path!r}: objective_seconds must be a positive number")

    def __iter__(self) -> Iterator[SagaType]:
        return iter(self.in_order)

    @property
    def names(self) -> list[str]:
        return [saga_type.name for saga_type in self.in_order]

    def get(self, saga_name: str) -> SagaType | None:
        return self._by_name.get(saga_name)

    def make(self, saga_type: SagaType, saga_id: str, data: Any) -> Saga[Any]:
        """A saga of ``saga_type`` with its type's settings: the coordinator's factory."""
        return saga_type(saga_id, data, self.settings.get(saga_type.name))

    def bindings(self) -> list[Binding]:
        """What the saga queue is bound to: every message some loaded saga type handles."""
        found: dict[Binding, None] = {}
        for saga_type in self.in_order:
            for message in saga_type.steps:
                subscription = self.catalogue.lookup("", message)
                assert subscription is not None  # checked when loaded
                found[Binding(subscription.exchange, ExchangeKind.TOPIC, message)] = None
        return list(found)

    def exchange_of(self, message: str) -> str:
        subscription = self.catalogue.lookup("", message)
        assert subscription is not None  # checked when loaded
        return subscription.exchange

    def describe(self) -> list[dict[str, Any]]:
        """Each type's shape, message names throughout, for ``GET /sagas/types``."""
        return [
            {
                "name": saga_type.name,
                "start": [spec.message for spec in saga_type.steps.values() if spec.starts],
                "path": list(saga_type.path),
                "compensations": [
                    spec.message
                    for spec in saga_type.steps.values()
                    if spec.compensation is not None
                ],
                "httpStart": saga_type.http_start,
                "businessKeys": list(saga_type.business_keys),
                "objectives": self.objectives.of_type(saga_type.name),
            }
            for saga_type in self.in_order
        ]
