"""Who is asking: user ids as Pacco writes them, the principal a token names, and the rules every
id from outside must meet (operation ids in paths, user ids in tokens, ids in request bodies)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

ADMIN_ROLE = "admin"
# The longest id the service keeps: a message whose correlation id or user id is longer is not
# applied under it (operations.envelope), so no request may name one either.
MAX_ID_LENGTH = 200
_HYPHENATED = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_DIGITS_ONLY = re.compile(r"[0-9a-f]{32}")


def normalise_id(raw: str) -> str:
    """One spelling per user: a GUID in any format ("N", "D", "B", upper case) becomes its
    lower-case hyphenated form; anything else is kept as it is, trimmed."""
    text = raw.strip()
    if 32 <= len(text) <= 38:
        # The two spellings seen on nearly every message, without building a UUID.
        lowered = text.lower()
        if _HYPHENATED.fullmatch(lowered):
            return lowered
        if _DIGITS_ONLY.fullmatch(lowered):
            return "-".join(
                (lowered[:8], lowered[8:12], lowered[12:16], lowered[16:20], lowered[20:])
            )
        try:
            return str(uuid.UUID(text))
        except ValueError:
            pass
    return text


def id_problem(raw: str, max_length: int = MAX_ID_LENGTH) -> str | None:
    """Why ``raw`` cannot be an id, or None when it can: an id is not blank, holds at most
    ``max_length`` characters once trimmed, and only printable ones (no control, format or line
    characters, which would forge log lines or headers)."""
    text = raw.strip()
    if not text:
        return "must not be blank"
    if len(text) > max_length:
        return f"must be at most {max_length} characters"
    if not text.isprintable():
        return "must hold printable characters only"
    return None


def is_acceptable_id(raw: str) -> bool:
    return id_problem(raw) is None


@dataclass(frozen=True)
class Principal:
    user_id: str
    roles: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return ADMIN_ROLE in self.roles

    def may_read(self, owner_id: str) -> bool:
        return self.is_admin or (bool(owner_id) and owner_id == self.user_id)
