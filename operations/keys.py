"""The Redis keys of operations, and the change streams.

Key layout (``P`` is ``OPERATIONS_KEY_PREFIX``, default ``operations``; ``S`` is the shard of the
operation, see :mod:`operations.shards`, always 0 with one shard; ``{S}`` is a Redis Cluster hash
tag, so every key one script touches is in one slot):

    P:{S}:op:ID            hash    the record: id, userId, name, state, code, reason, version,
                                   createdAt, updatedAt, rank (creation order); and one field
                                   ``m:MESSAGE-ID`` per message applied or judged (drops
                                   duplicates)
    P:{S}:history:ID       list    transitions, oldest first, each a JSON array of
                                   ``HISTORY_FIELDS``; the newest ``OPERATIONS_MAX_HISTORY``
    P:{S}:user:USER        zset    the user's operation ids in shard S, by creation order (rank)
    P:{S}:index            zset    every operation id in shard S, by creation order (rank)
    P:{S}:expiries         zset    one member per operation of shard S, ``LEN:OWNER`` followed by
                                   its id, scored by when its record expires (ms)
    P:{S}:changes          stream  one entry per applied change in shard S: ``op`` (the record as
                                   JSON), ``id``, ``user`` and ``state``
    P:layout               string  the shard count the data was written with

Ids and user ids come from outside and may hold any character (``:``, ``{``, ``}``...), so each
key family has its own fixed word and the caller's text is always the key's last part: no id
can name another operation's key, or a key of another family. The shard tag ``{S}`` is the
first ``{...}`` of every key, so braces in an id never move a key to another slot. (Before
this layout the history was ``P:{S}:op:ID:history``, which the id ``ID:history`` could name.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from operations.shards import Shards


@dataclass(frozen=True)
class Keys:
    prefix: str = "operations"
    shards: Shards = field(default_factory=Shards)
    # Each shard's key prefix, worked out once: keys are named for every message.
    _tags: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tags = tuple(self.shards.tag(self.prefix, shard) for shard in self.shards)
        object.__setattr__(self, "_tags", tags)

    def shard(self, operation_id: str) -> int:
        return self.shards.of(operation_id)

    def record(self, operation_id: str) -> str:
        return self.record_in(self.shard(operation_id), operation_id)

    def record_in(self, shard: int, operation_id: str) -> str:
        return f"{self._tags[shard]}:op:{operation_id}"

    def history(self, operation_id: str) -> str:
        return self.history_in(self.shard(operation_id), operation_id)

    def history_in(self, shard: int, operation_id: str) -> str:
        return f"{self._tags[shard]}:history:{operation_id}"

    def user_index(self, user_id: str, shard: int) -> str:
        return f"{self._tags[shard]}:user:{user_id}"

    def index(self, shard: int) -> str:
        return f"{self._tags[shard]}:index"

    def changes(self, shard: int) -> str:
        return f"{self._tags[shard]}:changes"

    def expiries(self, shard: int) -> str:
        return f"{self._tags[shard]}:expiries"

    def tag(self, shard: int) -> str:
        """The prefix every key of ``shard`` starts with."""
        return self._tags[shard]

    @property
    def streams(self) -> list[str]:
        """Every shard's change stream, by shard."""
        return [self.changes(shard) for shard in self.shards]

    @property
    def layout(self) -> str:
        return f"{self.prefix}:layout"
