"""Injected failures: ``--fail MESSAGE=RATE`` rejects that command with that probability."""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from operations.errors import OperationsError


class FailurePlanError(OperationsError):
    """A ``--fail`` option names no failable command, or its rate is not a number in 0..1."""

    code = "invalid_failure_plan"

    def __init__(self, spec: str, reason: str) -> None:
        super().__init__(f"--fail {spec}: {reason}")
        self.spec = spec


@dataclass(frozen=True)
class FailurePlan:
    rates: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def parse(cls, specs: Iterable[str], known: Collection[str]) -> FailurePlan:
        rates: dict[str, float] = {}
        for spec in specs:
            message, sep, raw_rate = spec.partition("=")
            message = message.strip()
            if not sep or not message:
                raise FailurePlanError(spec, "expected MESSAGE=RATE, e.g. reserve_resource=0.5")
            if message not in known:
                raise FailurePlanError(
                    spec,
                    f"{message!r} is not a simulated command; one of {', '.join(sorted(known))}",
                )
            try:
                rate = float(raw_rate)
            except ValueError:
                raise FailurePlanError(spec, "the rate must be a number from 0 to 1") from None
            if math.isnan(rate) or not 0.0 <= rate <= 1.0:
                raise FailurePlanError(spec, "the rate must be a number from 0 to 1")
            if message in rates:
                raise FailurePlanError(spec, f"{message!r} is given more than once")
            rates[message] = rate
        return cls(MappingProxyType(rates))

    def fails(self, message: str, rng: random.Random) -> bool:
        rate = self.rates.get(message, 0.0)
        # Commands without a rate draw nothing, so a seeded run's outcomes for one command do not
        # shift when other, never-failing commands arrive in between.
        return rate > 0.0 and rng.random() < rate

    def describe(self) -> str:
        if not self.rates:
            return "none"
        return ", ".join(f"{message}={rate:g}" for message, rate in sorted(self.rates.items()))
