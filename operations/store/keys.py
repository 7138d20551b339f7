"""Every Redis key of the service, named here and nowhere else (a test fails on a key name
written in another module; the Lua scripts build theirs from the tags passed to them).

One scheme for every family: a frozen dataclass made from ``OPERATIONS_KEY_PREFIX`` (``P``,
default ``operations``), and from the shards (:mod:`operations.store.shards`) when the family is
sharded. A key with variable parts is a method taking them, and the caller's text (an id) is
always the key's last part (an operation's id in its stored form, :func:`pack_id`: a GUID as its
16 bytes, so an operation's record key is bytes); a key with none is a property; ``tag`` is the
start that every key of
the family (of one shard) shares, and that the Lua scripts build their keys from.

:class:`Keys`, the tracking path's store (``S`` is the operation's shard, always 0 with one shard;
``{S}`` is a Redis Cluster hash tag, so every key one script touches is in one slot)::

    P:{S}:op:ID            hash    the record, not the id (the key's), in the compact layout of
                                   :mod:`operations.store.layout`: one-letter fields, one field
                                   per message applied (the version it made) or judged (empty),
                                   which drops duplicates, and the history, the newest
                                   ``OPERATIONS_MAX_HISTORY`` entries
    P:{S}:user:USER        zset    the user's operation ids (as ID) in shard S, by creation order
                                   (rank); ``P:{S}:user:`` (no user) those that have no owner
    P:{S}:index            zset    every operation id (as ID) in shard S, by creation order (rank)
    P:{S}:owners           zset    every owner (USER, or empty) with an index in shard S, scored by
                                   when the sweep must next look at that index (ms)
    P:{S}:changes          stream  one entry per applied change in shard S: ``op`` (the record as
                                   JSON), ``id``, ``user`` and ``state``
    P:layout               string  the shard count the data was written with
    P:sweep-lease          string  which process takes the current sweep (expires by itself)

:class:`SagaKeys`, the saga store (``S`` is the saga's shard, from its member ``NAME:ID``)::

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

:class:`DeadLetterKeys`, the dead-letter store (one hash tag, ``{dead-letters}``, for all of them:
dead letters are few next to operations, and one slot keeps each keep, bound and removal
atomic)::

    P:{dead-letters}:letters          hash    id -> the letter as JSON
    P:{dead-letters}:index            zset    every kept id, scored by when it was dead-lettered
    P:{dead-letters}:groups           hash    group key -> ``{"queue", "reason"}``
    P:{dead-letters}:group:G          zset    the ids of group G (one queue, one reason)
    P:{dead-letters}:group-of         hash    id -> its group key
    P:{dead-letters}:seen             zset    every id kept (or judged too old) within the age
                                              bound, scored by when
    P:{dead-letters}:redriving:ID     string  while a redrive of ID is under way

:class:`IdempotencyKeys`, the ``Idempotency-Key`` of saga starts (not sharded: one Redis key per
key, and every script touches that one only)::

    P:idempotency:DIGEST              hash    owner, fingerprint, operationId, resourceId, state
                                              (``reserved`` while the start message is being
                                              published, then ``started``); DIGEST is the sha256
                                              of the scope, the user id and the key, so no user
                                              id or key can name another's

Ids, user ids and saga ids come from outside and may hold any character (``:``, ``{``, ``}``...),
so each key family has its own fixed word and the caller's text is always the key's last part: no
id can name another operation's or saga's key, or a key of another family (the id ``X:index`` is
an operation of its own; the saga id ``X:outbox`` names saga ``X:outbox``'s hash, never saga
``X``'s outbox). A saga type's name is part of the member ``NAME:ID``: the registry refuses one
with a ``:``. The hash tag is the first ``{...}`` of every key, so braces in an id never move a
key to another slot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from operations.store.shards import Shards

if TYPE_CHECKING:
    from operations.sagas.records import SagaStatus


def guid_bytes(text: str) -> bytes | None:
    """The 16 bytes of a GUID written in its one spelling (lower case, hyphenated), or None
    for any other text; the same as matching ``[0-9a-f]{8}-[0-9a-f]{4}-...-[0-9a-f]{12}``
    and ``uuid.UUID(text).bytes``, in a third of the time."""
    if len(text) != 36 or text[8] != "-" or text[13] != "-" or text[18] != "-" or text[23] != "-":
        return None
    try:
        data = bytes.fromhex(text.replace("-", ""))
    except ValueError:
        return None
    # Sixteen bytes from 32 characters: hex digits only (fromhex skips whitespace).
    return data if len(data) == 16 and text == text.lower() else None


def pack_id(text: str) -> bytes:
    """An id as stored (an operation's in its key's name and in the indexes, an owner's in the
    record): a GUID in its one spelling (lower case, hyphenated) as its 16 bytes; any other id
    as its UTF-8 text, after a zero byte when that text is 16 bytes long (ids are printable, so
    none starts with one)."""
    guid = guid_bytes(text)
    if guid is not None:
        return guid
    data = text.encode()
    return b"\x00" + data if len(data) == 16 else data


def unpack_id(data: bytes) -> str:
    """The id :func:`pack_id` stored as ``data``."""
    if len(data) == 16:
        return hyphenated(data)
    if data[:1] == b"\x00":
        return data[1:].decode()
    return data.decode()


def hyphenated(data: bytes) -> str:
    """16 bytes as a GUID's one spelling: what ``str(uuid.UUID(bytes=data))`` is, faster."""
    h = data.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def member_of(saga_name: str, saga_id: str) -> str:
    """A saga's member, ``NAME:ID``: its keys' last part, and its entry in the shard's indexes."""
    return f"{saga_name}:{saga_id}"


def split_member(member: str) -> tuple[str, str]:
    saga_name, _, saga_id = member.partition(":")
    return saga_name, saga_id


@dataclass(frozen=True)
class _Sharded:
    prefix: str = "operations"
    shards: Shards = field(default_factory=Shards)
    # Each shard's tag, worked out once: keys are named for every message.
    _tags: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tags = tuple(f"{self.prefix}:{{{shard}}}" for shard in self.shards)
        object.__setattr__(self, "_tags", tags)

    def tag(self, shard: int) -> str:
        """The start of every key of ``shard``: the prefix, then the shard's hash tag."""
        return self._tags[shard]


@dataclass(frozen=True)
class Keys(_Sharded):
    """The keys of operations, their indexes and change streams, and the service's own."""

    # Each shard's start of a record's key, worked out once.
    _records: tuple[bytes, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        records = tuple(f"{tag}:op:".encode() for tag in self._tags)
        object.__setattr__(self, "_records", records)

    def shard(self, operation_id: str) -> int:
        return self.shards.of(operation_id)

    def record(self, operation_id: str) -> bytes:
        return self.record_in(self.shard(operation_id), operation_id)

    def record_in(self, shard: int, operation_id: str) -> bytes:
        return self.record_of(shard, pack_id(operation_id))

    def record_of(self, shard: int, member: bytes) -> bytes:
        """The record of the operation named ``member`` in ``shard``'s indexes."""
        return self._records[shard] + member

    def user_index(self, user_id: str, shard: int) -> str:
        return f"{self._tags[shard]}:user:{user_id}"

    def index(self, shard: int) -> str:
        return f"{self._tags[shard]}:index"

    def changes(self, shard: int) -> str:
        return f"{self._tags[shard]}:changes"

    def owners(self, shard: int) -> str:
        return f"{self._tags[shard]}:owners"

    @property
    def streams(self) -> list[str]:
        """Every shard's change stream, by shard."""
        return [self.changes(shard) for shard in self.shards]

    @property
    def layout(self) -> str:
        return f"{self.prefix}:layout"

    @property
    def sweep_lease(self) -> str:
        return f"{self.prefix}:sweep-lease"


@dataclass(frozen=True)
class SagaKeys(_Sharded):
    """The keys of sagas: each saga's by its member ``NAME:ID``, and each shard's."""

    def shard(self, member: str) -> int:
        return self.shards.of(member)

    def saga(self, member: str) -> str:
        return f"{self._tags[self.shard(member)]}:saga:{member}"

    def outbox(self, member: str) -> str:
        return f"{self._tags[self.shard(member)]}:saga-outbox:{member}"

    def lease(self, member: str) -> str:
        return f"{self._tags[self.shard(member)]}:saga-lease:{member}"

    def outbox_index(self, shard: int) -> str:
        return f"{self._tags[shard]}:saga-outbox"

    def deadlines(self, shard: int) -> str:
        return f"{self._tags[shard]}:saga-deadlines"

    def index(self, shard: int) -> str:
        return f"{self._tags[shard]}:saga-index"

    def saga_types(self, shard: int) -> str:
        return f"{self._tags[shard]}:saga-types"

    def status_index(self, shard: int, saga_name: str, status: SagaStatus) -> str:
        return f"{self._tags[shard]}:saga-status:{saga_name}:{status.value}"

    def tombstones(self, shard: int) -> str:
        return f"{self._tags[shard]}:saga-tombstones"

    def business_key(self, shard: int, value: str) -> str:
        """The sagas holding ``value`` in a business key (zset scored by when each expires,
        +inf while running); the commit script builds the same name from the shard's tag."""
        return f"{self._tags[shard]}:saga-key:{value}"

    def overdue(self, shard: int, saga_name: str, step: str) -> str:
        """The running sagas waiting for ``step``, scored by when they become overdue there
        (negated once their becoming overdue has been told)."""
        return f"{self._tags[shard]}:saga-overdue:{saga_name}:{step}"

    def retry(self, member: str) -> str:
        """Held for a short while after a retry of the saga's waiting step."""
        return f"{self._tags[self.shard(member)]}:saga-retry:{member}"


@dataclass(frozen=True)
class DeadLetterKeys:
    """The keys of dead letters: one hash tag for all of them, not sharded."""

    prefix: str = "operations"

    @property
    def tag(self) -> str:
        return f"{self.prefix}:{{dead-letters}}"

    @property
    def letters(self) -> str:
        return f"{self.tag}:letters"

    @property
    def index(self) -> str:
        return f"{self.tag}:index"

    @property
    def groups(self) -> str:
        return f"{self.tag}:groups"

    @property
    def group_of(self) -> str:
        return f"{self.tag}:group-of"

    @property
    def seen(self) -> str:
        return f"{self.tag}:seen"

    def group(self, group_key: str) -> str:
        return f"{self.tag}:group:{group_key}"

    def redriving(self, letter_id: str) -> str:
        return f"{self.tag}:redriving:{letter_id}"


@dataclass(frozen=True)
class IdempotencyKeys:
    """The keys of ``Idempotency-Key`` reservations; the caller's text is hashed into ``digest``."""

    prefix: str = "operations"

    def reservation(self, digest: str) -> str:
        return f"{self.prefix}:idempotency:{digest}"
