"""Shards: how the keys are split so that every Lua script touches one Redis Cluster slot.

Each operation (and each saga) belongs to one of ``count`` shards, by a stable hash of its id.
Every key a script touches carries its shard's hash tag, ``{N}``: the operation's record, history
and seen set, and also the shard's own indexes and change stream. On one Redis server one shard
is enough; on a Redis Cluster, more shards than primaries (``OPERATIONS_REDIS_SHARDS``, 16 by
default there) spread the work over the slots, and so over the nodes.

The count is part of the data's layout: the first process to write records it in Redis, and a
process configured with another count refuses to consume rather than lose sight of what was
written before.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass

MAX_SHARDS = 1024


@dataclass(frozen=True)
class Shards:
    count: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise ValueError(f"a shard count is between 1 and {MAX_SHARDS}, not {self.count}")

    def of(self, identifier: str) -> int:
        """The shard an operation or saga id belongs to."""
        if self.count == 1:
            return 0
        return zlib.crc32(identifier.encode()) % self.count

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count
