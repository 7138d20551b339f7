"""The wire formats the service reads, one module each, by the name a catalogue entry gives as
its ``format`` (contract §16). What a format is: :mod:`operations.wire`."""

from __future__ import annotations

from collections.abc import Mapping

from operations.formats import cloudevents, convey, masstransit, nservicebus
from operations.wire import WireFormat

DEFAULT_FORMAT = "convey"

FORMATS: Mapping[str, WireFormat] = {
    wire.name: wire
    for wire in (convey.FORMAT, masstransit.FORMAT, nservicebus.FORMAT, cloudevents.FORMAT)
}
