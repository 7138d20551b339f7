"""operations: tracks long-running operations carried by RabbitMQ messages and pushes their state."""

__version__ = "0.1.0"
