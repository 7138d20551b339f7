"""Room names: one per user, and the ops room that admins join to see everyone's operations."""

from __future__ import annotations

OPS = "ops"


def user_room(user_id: str) -> str:
    return f"user:{user_id}"


def rooms_for(user_id: str | None) -> list[str]:
    """The rooms a change of this user's operation is emitted to."""
    return [user_room(user_id), OPS] if user_id else [OPS]
