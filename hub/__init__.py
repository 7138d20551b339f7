"""Live push over Socket.IO: every applied change, to its owner and to the ops room."""

from hub.hub import Hub

__all__ = ["Hub"]
