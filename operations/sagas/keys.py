"""The Redis keys of sagas.

Redis keys (``P`` is ``OPERATIONS_KEY_PREFIX``; ``S`` is the saga's shard, from ``NAME:ID``, see
:mod:`operations.shards`; ``{S}`` is a Redis Cluster hash tag, so each script touches one slot):

    P:{S}:saga:NAME:ID                hash    version, doc (the SagaRecord as JSON)
    P:{S}:saga-outbox:NAME:ID         list    messages committed but not yet confirmed
    P:{S}:saga-lease:NAME:ID          string  who is sending that outbox now (expires by itself)
    P:{S}:saga-outbox                 zset    the shard's sagas with a non-empty outbox, scored by
                                              first commit time
    P:{S}:saga-deadlines              zset    the shard's sagas the deadline watcher must look at:
                                              pending ones with a deadline, scored by it, and
                                              compensating ones, scored by when their
                                              compensation may be resumed
    P:{S}:saga-index                  zset    the shard's sagas, scored by last commit time
    P:{S}:saga-types                  set     the saga types committed in the shard
    P:{S}:saga-status:NAME:STATUS     zset    the shard's sagas of type NAME in STATUS, scored by
                                              when they expire (+inf while running)
    P:{S}:saga-tombstones             zset    the shard's finished sagas, scored by when their
                                              tombstone expires: a start message for one of
                                              them starts nothing until then

A saga id can come from message data and may hold any character, so each key family has its
own word and the id is always the key's last part: the id ``X:outbox`` names saga
``X:outbox``'s hash, never saga ``X``'s outbox. (A saga type's name is part of the member
``NAME:ID``: the registry refuses one with a ``:``.) The shard tag ``{S}`` is the first ``{...}``
of every key, whatever braces an id holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from operations.sagas.records import SagaStatus
from operations.shards import Shards


def member_of(saga_name: str, saga_id: str) -> str:
    return f"{saga_name}:{saga_id}"


def split_member(member: str) -> tuple[str, str]:
    saga_name, _, saga_id = member.partition(":")
    return saga_name, saga_id


@dataclass(frozen=True)
class SagaKeys:
    """Each key of one saga, by its member ``NAME:ID``, and each key of one shard."""

    prefix: str = "operations"
    shards: Shards = field(default_factory=Shards)

    def tag(self, member: str) -> str:
        return self.shards.tag(self.prefix, self.shards.of(member))

    def saga(self, member: str) -> str:
        return f"{self.tag(member)}:saga:{member}"

    def outbox(self, member: str) -> str:
        return f"{self.tag(member)}:saga-outbox:{member}"

    def lease(self, member: str) -> str:
        return f"{self.tag(member)}:saga-lease:{member}"

    def outbox_index(self, shard: int) -> str:
        return f"{self.shards.tag(self.prefix, shard)}:saga-outbox"

    def deadlines(self, shard: int) -> str:
        return f"{self.shards.tag(self.prefix, shard)}:saga-deadlines"

    def index(self, shard: int) -> str:
        return f"{self.shards.tag(self.prefix, shard)}:saga-index"

    def saga_types(self, shard: int) -> str:
        return f"{self.shards.tag(self.prefix, shard)}:saga-types"

    def status_index(self, shard: int, saga_name: str, status: SagaStatus) -> str:
        return f"{self.shards.tag(self.prefix, shard)}:saga-status:{saga_name}:{status.value}"

    def tombstones(self, shard: int) -> str:
        return f"{self.shards.tag(self.prefix, shard)}:saga-tombstones"
