"""Simulated Pacco services (orders, vehicles, availability) that answer commands over RabbitMQ
the way .NET Convey services do, so the order-maker saga and its demo run without Pacco.

    rules      which message each service answers, with which reply, on which exchange
    failures   ``--fail MESSAGE=RATE``: injected rejections
    answers    one message's answer: routing key and camelCase body
    convey     the reply as an AMQP message: correlation id, new message id, context headers
    services   the running services: queues, consumers, confirms, acknowledgements
    orders     ``demo-orders``: a stream of ``POST /orders``
    outcomes   each demo order followed to its end, and the line printed for it
"""

from operations.pacco.demo.answers import InvalidCommand
from operations.pacco.demo.failures import FailurePlan, FailurePlanError
from operations.pacco.demo.rules import (
    AVAILABILITY,
    ORDERS,
    SERVICES,
    VEHICLES,
    Reply,
    SimulatedService,
    failable,
)
from operations.pacco.demo.services import DemoServices, run

__all__ = [
    "AVAILABILITY",
    "ORDERS",
    "SERVICES",
    "VEHICLES",
    "DemoServices",
    "FailurePlan",
    "FailurePlanError",
    "InvalidCommand",
    "Reply",
    "SimulatedService",
    "failable",
    "run",
]
