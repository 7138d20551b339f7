"""A ``GET /metrics`` page read with prometheus-client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Series = tuple[str, frozenset[tuple[str, str]]]
"""A sample's name and labels."""


def series(name: str, **labels: str) -> Series:
    return name, frozenset(labels.items())


class Scrape:
    """The families of one page: their types, and each sample's value by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.types: dict[str, str] = {}
        self.helps: dict[str, str] = {}
        self._values: dict[Series, float] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            self.helps[family.name] = family.documentation
            for sample in family.samples:
                self._values[series(sample.name, **sample.labels)] = sample.value

    def value(self, name: str, **labels: str) -> float | None:
        """The sample's value, or None when the page does not have it."""
        return self._values.get(series(name, **labels))

    def names(self) -> set[str]:
        return {name for name, _ in self._values}

    def samples(self, *names: str) -> dict[Series, float]:
        """Every sample of these names."""
        return {key: value for key, value in self._values.items() if key[0] in names}
