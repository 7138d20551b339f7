"""The operation record and the result of applying one message to it (contract §3)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from .states import State


@dataclass(frozen=True)
class OperationRecord:
    id: str
    user_id: str | None
    name: str
    state: State
    code: str | None
    reason: str | None
    version: int
    created_at: str
    updated_at: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OperationRecord:
        return cls(
            id=data["id"],
            user_id=data.get("userId") or None,
            name=data["name"],
            state=State(data["state"]),
            code=data.get("code") or None,
            reason=data.get("reason") or None,
            version=int(data["version"]),
            created_at=data["createdAt"],
            updated_at=data["updatedAt"],
        )

    @classmethod
    def from_snapshot(cls, snapshot: bytes | str) -> OperationRecord:
        return cls.from_json(orjson.loads(snapshot))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "userId": self.user_id,
            "name": self.name,
            "state": self.state.value,
            "code": self.code,
            "reason": self.reason,
            "version": self.version,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }

    @property
    def etag(self) -> str:
        return f'"{self.version}"'


class ApplyOutcome(StrEnum):
    """What applying one message did to its operation."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    STALE = "stale"


@dataclass(frozen=True)
class Change:
    """The result of one apply. ``snapshot`` (the record as JSON) and ``cursor`` (its entry in the
    change stream) are set only when the change was applied."""

    outcome: ApplyOutcome
    operation_id: str
    snapshot: bytes | None = None
    cursor: str | None = None

    @property
    def record(self) -> OperationRecord | None:
        return None if self.snapshot is None else OperationRecord.from_snapshot(self.snapshot)
