"""The saga store's contract in one process's memory, for tests and for trying sagas out."""

from __future__ import annotations

import time
from collections.abc import Sequence

import orjson

from operations.sagas.lookups import Step
from operations.sagas.records import OutboxEntry, SagaRecord, SagaStatus
from operations.sagas.store import Loaded, Pending, Swept
from operations.store.keys import member_of, split_member


class MemorySagaStore:
    """The same contract in one process's memory."""

    def __init__(self, tombstone_seconds: int = 0) -> None:
        self.tombstone_seconds = tombstone_seconds
        self.tombstones: dict[str, float] = {}
        self.records: dict[str, tuple[int, str]] = {}
        self.outboxes: dict[str, list[str]] = {}
        self.deadlines: dict[str, float] = {}
        self.first_commit: dict[str, float] = {}
        self.leases: dict[str, tuple[str, float]] = {}
        self.committed: dict[str, float] = {}
        self.expires: dict[str, float] = {}
        self.saga_names: set[str] = set()
        self.sent: dict[str, list[str]] = {}
        self.told: set[tuple[str, float]] = set()
        self.retries: dict[str, float] = {}

    def _expire(self) -> None:
        """Forget finished sagas kept past their time, as Redis expires their hashes (the
        index keeps them until the sweep)."""
        now = time.time()
        for member in [member for member, at in self.expires.items() if at <= now]:
            del self.expires[member]
            self.records.pop(member, None)

    async def load(self, saga_name: str, saga_id: str) -> Loaded | None:
        self._expire()
        found = self.records.get(member_of(saga_name, saga_id))
        if found is None:
            return None
        version, document = found
        return Loaded(SagaRecord.from_json(orjson.loads(document)), version)

    async def commit(
        self,
        record: SagaRecord,
        expected_version: int,
        outbox: list[OutboxEntry],
        finished_ttl_seconds: int,
    ) -> bool:
        member = record.key
        current = self.records.get(member, (0, ""))[0]
        if current != expected_version:
            return False
        if current == 0 and await self.tombstoned(record.saga_name, record.id):
            return False
        self.records[member] = (current + 1, orjson.dumps(record.to_json()).decode())
        self.committed[member] = time.time()
        self.saga_names.add(record.saga_name)
        if record.status.finished:
            self.expires[member] = time.time() + finished_ttl_seconds
            if self.tombstone_seconds > 0:
                horizon = max(self.tombstone_seconds, finished_ttl_seconds)
                self.tombstones[member] = time.time() + horizon
        else:
            self.expires.pop(member, None)
        if outbox:
            self.sent[member] = [orjson.dumps(entry.to_json()).decode() for entry in outbox]
            self.outboxes.setdefault(member, []).extend(
                orjson.dumps(entry.to_json()).decode() for entry in outbox
            )
            self.first_commit.setdefault(member, time.time())
        if record.wake_at is None:
            self.deadlines.pop(member, None)
        else:
            self.deadlines[member] = record.wake_at
        return True

    async def counts(self) -> dict[tuple[str, SagaStatus], int]:
        self._expire()
        found = {(saga_name, status): 0 for saga_name in self.saga_names for status in SagaStatus}
        for _, document in self.records.values():
            record = SagaRecord.from_json(orjson.loads(document))
            found[record.saga_name, record.status] += 1
        return found

    async def pending(self, older_than: float, limit: int = 100) -> list[Pending]:
        found = []
        for member, since in sorted(self.first_commit.items(), key=lambda item: item[1]):
            if since <= older_than and self.outboxes.get(member):
                saga, saga_id = split_member(member)
                entries = [
                    (raw, OutboxEntry.from_json(orjson.loads(raw))) for raw in self.outboxes[member]
                ]
                found.append(Pending(saga, saga_id, entries))
        return found[:limit]

    async def outbox(self, saga_name: str, saga_id: str) -> Pending:
        stored = self.outboxes.get(member_of(saga_name, saga_id), [])
        return Pending(
            saga_name, saga_id, [(raw, OutboxEntry.from_json(orjson.loads(raw))) for raw in stored]
        )

    async def recent(
        self, limit: int = 100, status: SagaStatus | None = None, saga_name: str | None = None
    ) -> list[SagaRecord]:
        self._expire()
        newest = sorted(
            ((member, at) for member, at in self.committed.items() if member in self.records),
            key=lambda item: item[1],
            reverse=True,
        )
        records = [
            SagaRecord.from_json(orjson.loads(self.records[member][1])) for member, _ in newest
        ]
        wanted = [r for r in records if saga_name is None or r.saga_name == saga_name]
        return [r for r in wanted if status is None or r.status is status][:limit]

    async def lease_outbox(self, saga_name: str, saga_id: str, holder: str, seconds: float) -> bool:
        member = member_of(saga_name, saga_id)
        current = self.leases.get(member)
        if current is not None and current[1] > time.monotonic() and current[0] != holder:
            return False
        self.leases[member] = (holder, time.monotonic() + seconds)
        return True

    async def release_outbox(self, saga_name: str, saga_id: str, holder: str) -> None:
        member = member_of(saga_name, saga_id)
        if self.leases.get(member, ("", 0.0))[0] == holder:
            del self.leases[member]

    async def acknowledge(self, saga_name: str, saga_id: str, stored: list[str]) -> None:
        member = member_of(saga_name, saga_id)
        outbox = self.outboxes.get(member, [])
        for raw in stored:
            if raw in outbox:
                outbox.remove(raw)
        if not outbox:
            self.outboxes.pop(member, None)
            self.first_commit.pop(member, None)

    async def due(self, now: float, limit: int = 100) -> list[tuple[str, str]]:
        members = sorted(
            (deadline, member) for member, deadline in self.deadlines.items() if deadline <= now
        )
        return [split_member(member) for _, member in members[:limit]]

    async def tombstoned(self, saga_name: str, saga_id: str) -> bool:
        return self.tombstones.get(member_of(saga_name, saga_id), 0.0) > time.time()

    async def sweep(self) -> Swept:
        now = time.time()
        buried = [member for member, until in self.tombstones.items() if until <= now]
        for member in buried:
            del self.tombstones[member]
        self._expire()
        gone = [member for member in self.committed if member not in self.records]
        for member in gone:
            del self.committed[member]
        return Swept(len(gone), len(buried))

    def _all(self) -> list[SagaRecord]:
        self._expire()
        return [
            SagaRecord.from_json(orjson.loads(document)) for _, document in self.records.values()
        ]

    async def holding(self, value: str, limit: int) -> list[SagaRecord]:
        held = [record for record in self._all() if value in record.keys]
        return sorted(held, key=lambda record: -record.updated_at)[:limit]

    async def overdue(self, steps: Sequence[Step], limit: int) -> list[SagaRecord]:
        found = [r for r in self._all() if r.overdue and (r.saga_name, r.overdue_step) in steps]
        return sorted(found, key=lambda record: record.overdue_at or 0.0)[:limit]

    async def overdue_counts(self, steps: Sequence[Step]) -> dict[Step, int]:
        counts = dict.fromkeys(steps, 0)
        for record in await self.overdue(steps, len(self.records)):
            counts[record.saga_name, record.overdue_step or ""] += 1
        return counts

    async def newly_overdue(self, steps: Sequence[Step], limit: int) -> list[tuple[str, str, str]]:
        told: list[tuple[str, str, str]] = []
        for record in await self.overdue(steps, len(self.records)):
            mark = (record.key, record.overdue_at or 0.0)
            if mark not in self.told and len(told) < limit:
                self.told.add(mark)
                told.append((record.saga_name, record.id, record.overdue_step or ""))
        return told

    async def last_sent(self, saga_name: str, saga_id: str) -> list[OutboxEntry]:
        sent = self.sent.get(member_of(saga_name, saga_id), [])
        return [OutboxEntry.from_json(orjson.loads(raw)) for raw in sent]

    async def hold_retry(self, saga_name: str, saga_id: str, seconds: float) -> bool:
        member = member_of(saga_name, saga_id)
        if self.retries.get(member, 0.0) > time.monotonic():
            return False
        self.retries[member] = time.monotonic() + seconds
        return True

    async def release_retry(self, saga_name: str, saga_id: str) -> None:
        self.retries.pop(member_of(saga_name, saga_id), None)
