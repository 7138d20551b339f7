"""A crowd of lean Socket.IO clients in a process of its own, for ``operations bench --fanout``.

The bench starts several (``python -m operations.bench.crowd``), so that the clients do not share
the service's process, and talks to each over its standard input and output, one JSON object a
line:

1. bench: ``{"url", "users": [n, ...], "admins": [n, ...], "churn": per second, "churn_users":
   [n, ...], "address"}`` (the churn's clients are of ``churn_users``, or of its own users);
   the crowd connects user ``fanout-user-n`` and admin ``fanout-admin-n`` (with the admin role),
   each its own lean client (:class:`operations.bench.probe.Probe`) with a token minted from
   ``OPERATIONS_JWT_SECRET``, from the local ``address``, and answers ``{"users": [n, ...],
   "admins": [n, ...], "failed": count}``, the ones that connected;
2. bench: ``{"go": true}``: churn starts, extra clients of its users connecting and leaving;
3. bench, once it has published: ``{"changes": [[owner, sent], ...], "wait": seconds,
   "warm_up": count}``, each
   change by its index (an operation's command ``2n``, its event ``2n + 1``, the operation id's
   last twelve hex digits being ``n``). Churn stops; the crowd waits until its clients have every
   change they should have, or until none has received anything for ``wait`` seconds (late
   changes still count; lost ones never come), at most ``MAX_SETTLE_SECONDS``, and answers
   with what each kind of client was due and got, and the latency histograms
   (:class:`Receipts`) of every change but the first ``warm_up``;
4. the bench closes the crowd's standard input: the crowd disconnects its clients and exits.
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import math
import os
import random
import resource
import sys
import time
from collections.abc import Iterator
from typing import Any

import orjson

from operations.auth.tokens import mint
from operations.bench.probe import Probe

CONNECT_BATCH = 50
CONNECT_TIMEOUT = 30.0
CHURN_DWELL_SECONDS = 1.0
BUCKET_MS = 0.1
MAX_SETTLE_SECONDS = 600.0


def user_name(number: int) -> str:
    return f"fanout-user-{number}"


def admin_name(number: int) -> str:
    return f"fanout-admin-{number}"


def change_index(record: dict[str, Any]) -> int:
    operation: str = record["id"]
    return int(operation[-12:], 16) * 2 + (0 if record["state"] == "pending" else 1)


class Member(Probe):
    """A lean client that notes each change it receives, by index, and when."""

    def __init__(self, url: str, owner: int | None) -> None:
        super().__init__(url)
        self.owner = owner  # None: an admin
        self.indexes = array.array("q")
        self.times = array.array("d")

    def pushed(self, record: dict[str, Any]) -> None:
        self.times.append(time.time())
        self.indexes.append(change_index(record))


class Passer(Probe):
    """A churn client: it connects, reads what it is sent, and leaves."""

    def pushed(self, record: dict[str, Any]) -> None:
        pass


class Receipts:
    """What one kind of client was due and got; latencies in 0.1 ms buckets."""

    def __init__(self) -> None:
        self.expected = 0
        self.delivered = 0
        self.duplicates = 0
        self.misrouted = 0
        self.buckets: collections.Counter[int] = collections.Counter()

    def count(
        self, member: Member, changes: list[tuple[int, float]], due: int, warm_up: int
    ) -> None:
        self.expected += due
        seen: set[int] = set()
        for index, arrived in zip(member.indexes, member.times, strict=True):
            if index >= len(changes) or (
                member.owner is not None and changes[index][0] != member.owner
            ):
                self.misrouted += 1
            elif index in seen:
                self.duplicates += 1
            else:
                seen.add(index)
                if index < warm_up:
                    continue
                latency = max(0.0, (arrived - changes[index][1]) * 1000)
                self.buckets[int(latency / BUCKET_MS)] += 1
        self.delivered += len(seen)

    def to_json(self) -> dict[str, Any]:
        return {
            "expected": self.expected,
            "delivered": self.delivered,
            "duplicates": self.duplicates,
            "misrouted": self.misrouted,
            "buckets": {str(bucket): count for bucket, count in self.buckets.items()},
        }


class Crowd:
    def __init__(self, url: str, secret: str, address: str) -> None:
        self.url = url
        self.secret = secret
        self.options: dict[str, Any] = {
            "ping_interval": None,  # engine.io pings; a WebSocket ping too would double the work
            "open_timeout": CONNECT_TIMEOUT,
            "local_addr": (address, 0),
        }
        self.members: list[Member] = []
        self.failed = 0
        self.churning = False
        self.churn_cycles = 0
        self.churn_failed = 0
        self._churners: set[asyncio.Task[None]] = set()

    async def connect(self, users: list[int], admins: list[int]) -> None:
        wanted: list[tuple[str, int | None, tuple[str, ...]]]
        wanted = [(user_name(n), n, ()) for n in users]
        wanted += [(admin_name(n), None, ("admin",)) for n in admins]
        for start in range(0, len(wanted), CONNECT_BATCH):
            batch = wanted[start : start + CONNECT_BATCH]
            members = [Member(self.url, owner) for _, owner, _ in batch]
            outcomes = await asyncio.gather(
                *(
                    member.connect(mint(self.secret, name, roles), **self.options)
                    for member, (name, _, roles) in zip(members, batch, strict=True)
                ),
                return_exceptions=True,
            )
            for member, outcome in zip(members, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    self.failed += 1
                else:
                    self.members.append(member)

    async def churn(self, per_second: float, users: list[int]) -> None:
        """Starts a client every 1/``per_second`` s, each of a random user of this crowd, which
        stays connected for a second and leaves, until told to stop."""
        self.churning = True
        pick = random.Random(os.getpid())
        due = time.monotonic()
        while self.churning:
            task = asyncio.create_task(self._cycle(user_name(pick.choice(users))))
            self._churners.add(task)
            task.add_done_callback(self._churners.discard)
            due += 1 / per_second
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    async def _cycle(self, user: str) -> None:
        client = Passer(self.url)
        try:
            await client.connect(mint(self.secret, user), **self.options)
            await asyncio.sleep(CHURN_DWELL_SECONDS)
            await client.close()
            self.churn_cycles += 1
        except Exception:
            self.churn_failed += 1
            with contextlib.suppress(Exception):
                await client.close()

    async def stop_churn(self) -> None:
        self.churning = False
        if self._churners:
            await asyncio.wait(list(self._churners))

    async def settle(
        self, changes: list[tuple[int, float]], wait: float, warm_up: int
    ) -> dict[str, Any]:
        owned = collections.Counter(owner for owner, _ in changes)
        due = [len(changes) if member.owner is None else owned[member.owner] for member in self]
        deadline = time.monotonic() + MAX_SETTLE_SECONDS
        received, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            if all(len(member.indexes) >= d for member, d in zip(self, due, strict=True)):
                break
            now_received = sum(len(member.indexes) for member in self)
            if now_received != received:
                received, quiet_since = now_received, time.monotonic()
            elif time.monotonic() - quiet_since > wait:
                break
            await asyncio.sleep(0.1)
        users, admins = Receipts(), Receipts()
        for member, d in zip(self, due, strict=True):
            (users if member.owner is not None else admins).count(member, changes, d, warm_up)
        return {"users": users.to_json(), "admins": admins.to_json()}

    def __iter__(self) -> Iterator[Member]:
        return iter(self.members)

    async def close(self) -> None:
        await asyncio.gather(*(member.close() for member in self.members), return_exceptions=True)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS line")


def raise_file_limit() -> int:
    """Raises this process's soft limit on open files to its hard limit; returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def _lines() -> tuple[asyncio.StreamReader, Any]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 28)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader, sys.stdout


def _say(out: Any, message: dict[str, Any]) -> None:
    out.write(orjson.dumps(message).decode() + "\n")
    out.flush()


async def main() -> int:
    raise_file_limit()
    reader, out = await _lines()
    setup = orjson.loads(await reader.readline())
    crowd = Crowd(setup["url"], os.environ["OPERATIONS_JWT_SECRET"], setup["address"])
    await crowd.connect(setup["users"], setup["admins"])
    connected = [member.owner for member in crowd]
    _say(
        out,
        {
            "users": [owner for owner in connected if owner is not None],
            "admins": sum(1 for owner in connected if owner is None),
            "failed": crowd.failed,
        },
    )
    churn: asyncio.Task[None] | None = None
    started = 0.0
    try:
        orjson.loads(await reader.readline())  # go
        started = cpu_seconds()
        users = setup.get("churn_users") or [owner for owner in connected if owner is not None]
        if setup["churn"] > 0 and users:
            churn = asyncio.create_task(crowd.churn(setup["churn"], users))
        ending = orjson.loads(await reader.readline())
        if churn is not None:
            churn.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await churn
        await crowd.stop_churn()
        changes = [(int(owner), float(sent)) for owner, sent in ending["changes"]]
        result = await crowd.settle(changes, float(ending["wait"]), int(ending["warm_up"]))
        result["churn_cycles"] = crowd.churn_cycles
        result["churn_failed"] = crowd.churn_failed
        result["cpu_seconds"] = cpu_seconds() - started
        result["rss_kib"] = rss_kib()
        _say(out, result)
        await reader.read()  # until the bench closes our input
    finally:
        await crowd.close()
    return 0


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        sys.exit(asyncio.run(main()))
    sys.exit(uvloop.run(main()))


def merged(results: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The tallies of ``kind`` (users or admins) of every client process, added up."""
    merged: dict[str, Any] = {"expected": 0, "delivered": 0, "duplicates": 0, "misrouted": 0}
    buckets: dict[int, int] = {}
    for result in results:
        tally = result[kind]
        for key in ("expected", "delivered", "duplicates", "misrouted"):
            merged[key] += tally[key]
        for bucket, count in tally["buckets"].items():
            buckets[int(bucket)] = buckets.get(int(bucket), 0) + count
    merged["buckets"] = buckets
    return merged


def percentile(buckets: dict[int, int], fraction: float) -> float:
    """The upper edge (ms) of the bucket holding that fraction of the samples."""
    total = sum(buckets.values())
    if not total:
        return 0.0
    wanted = max(1, math.ceil(fraction * total))
    seen = 0
    for bucket in sorted(buckets):
        seen += buckets[bucket]
        if seen >= wanted:
            return round((bucket + 1) * BUCKET_MS, 1)
    raise AssertionError("unreachable")
