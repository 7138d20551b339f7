"""``operations dead-letters list|show|redrive|discard``: the workbench for operators without a
browser. It talks to Redis and RabbitMQ directly, with the service's own settings (the same
``OPERATIONS_*`` variables), so it needs no token and works while the HTTP port is closed; what
it redrives or discards is logged and attributed to the local user (``cli:<login>``)."""

from __future__ import annotations

import contextlib
import getpass
import sys
from typing import Any, TextIO

import msgspec
import orjson

from operations.deadletters.letters import MAX_PAGE, DeadLetterItem
from operations.deadletters.redrive import RedrivePublisher, Workbench
from operations.deadletters.store import DeadLetterStore
from operations.errors import (
    BrokerUnavailable,
    DeadLetterNotFound,
    DeadLetterNotRedrivable,
    StoreUnavailable,
)
from operations.metrics import Registry
from operations.settings import Settings
from operations.store.listing import InvalidCursor
from operations.store.redis_client import open_redis


async def run(
    settings: Settings,
    action: str,
    ids: list[str],
    queue: str | None,
    reason: str | None,
    limit: int,
    cursor: str | None,
    groups: bool,
    as_json: bool,
    out: TextIO = sys.stdout,
) -> int:
    redis = open_redis(settings.redis_url, settings.redis_cluster)
    store = DeadLetterStore(
        redis,
        settings.key_prefix,
        settings.dead_letter_max_count,
        settings.dead_letter_max_age_seconds,
    )
    publisher = RedrivePublisher(settings.amqp_url)
    workbench = Workbench(store, publisher, Registry())
    who = f"cli:{_login()}"
    try:
        if action == "list":
            return await _list(store, queue, reason, limit, cursor, groups, as_json, out)
        if action == "show":
            return await _show(store, ids, out)
        return await _change(workbench, action, ids, queue, reason, who, out)
    except StoreUnavailable as error:
        return _fail(f"Redis cannot be reached at {settings.redis_url}: {error.reason}")
    except InvalidCursor as error:
        return _fail(error.reason)
    finally:
        await publisher.close()
        await redis.aclose()


async def _list(
    store: DeadLetterStore,
    queue: str | None,
    reason: str | None,
    limit: int,
    cursor: str | None,
    groups: bool,
    as_json: bool,
    out: TextIO,
) -> int:
    if not 1 <= limit <= MAX_PAGE:
        return _fail(f"--limit must be between 1 and {MAX_PAGE}")
    if groups:
        found = await store.groups()
        if as_json:
            out.write(orjson.dumps(msgspec.to_builtins(found)).decode() + "\n")
            return 0
        if not found:
            out.write("no dead letters\n")
        for group in found:
            out.write(
                f"{group.count:>6}  {group.queue}  {group.reason}"
                f"  (first {group.first}, last {group.last})\n"
            )
        return 0
    page = await store.page(queue, reason, limit, cursor)
    if as_json:
        out.write(orjson.dumps(msgspec.to_builtins(page)).decode() + "\n")
        return 0
    if not page.items:
        out.write("no dead letters\n")
    for item in page.items:
        out.write(_line(item) + "\n")
    if page.next:
        out.write(f"more: --cursor {page.next}\n")
    return 0


async def _show(store: DeadLetterStore, ids: list[str], out: TextIO) -> int:
    if not ids:
        return _fail("name the dead letter to show")
    status = 0
    for letter_id in ids:
        letter = await store.get(letter_id)
        if letter is None:
            status = _fail(DeadLetterNotFound(letter_id).reason)
            continue
        document: dict[str, Any] = msgspec.to_builtins(letter.item)
        if letter.item.body_encoding == "utf-8":
            with contextlib.suppress(orjson.JSONDecodeError):
                document["body"] = orjson.loads(letter.item.body)
        out.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    return status


async def _change(
    workbench: Workbench,
    action: str,
    ids: list[str],
    queue: str | None,
    reason: str | None,
    who: str,
    out: TextIO,
) -> int:
    if ids and (queue is not None or reason is not None):
        return _fail("give either ids or --queue with --reason, not both")
    if not ids:
        if queue is None or reason is None:
            return _fail(f"name the dead letters to {action}, or a group with --queue and --reason")
        try:
            if action == "redrive":
                redriven, skipped = await workbench.redrive_group(queue, reason, who)
                out.write(f"redriven {redriven}, skipped {skipped}\n")
                return 0 if skipped == 0 else 1
            discarded = await workbench.discard_group(queue, reason, who)
            out.write(f"discarded {discarded}\n")
            return 0
        except BrokerUnavailable as error:
            return _fail(error.reason)
    status = 0
    for letter_id in ids:
        try:
            if action == "redrive":
                await workbench.redrive(letter_id, who)
                out.write(f"redriven {letter_id}\n")
            else:
                await workbench.discard(letter_id, who)
                out.write(f"discarded {letter_id}\n")
        except (DeadLetterNotFound, DeadLetterNotRedrivable, BrokerUnavailable) as error:
            status = _fail(error.reason)
    return status


def _line(item: DeadLetterItem) -> str:
    origin = f"{item.exchange or '(default)'}/{item.routing_key}"
    return (
        f"{item.id}  {item.dead_lettered_at}  {item.queue}  {origin}"
        f"  attempts={item.attempts}  {item.reason}"
    )


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _fail(message: str) -> int:
    print(f"operations: {message}", file=sys.stderr)
    return 1
