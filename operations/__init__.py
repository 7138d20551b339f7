"""operations: tracks long-running operations carried by RabbitMQ messages, pushes their state."""

__version__ = "0.2.0"
