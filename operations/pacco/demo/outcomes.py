"""What ``operations demo-orders`` prints on its standard output: one short line per order as it
finishes, for a person watching the terminal (its JSON log lines go to standard error).

    12:03:04  order 5c1f3a2b… completed in 1.4 s
    12:03:07  order 9e04d7c1… rejected in 2.1 s: reserve_resource failed: ...

An order is shown by the start of its operation id, as the live page and the dashboard show it.
It is followed as the HTTP API tells clients to: ``GET /operations/{id}?wait=N`` with
``If-None-Match``, until its state is no longer ``pending`` or the time to follow it runs out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from operations.logs import escaped

log = logging.getLogger("operations.pacco.demo.orders")
LONG_POLL_SECONDS = 30.0
REASON_CHARS = 200


@dataclass(frozen=True)
class Outcome:
    operation_id: str
    state: str  # completed, rejected, or pending when it was not finished in time
    seconds: float
    reason: str | None = None


def short(operation_id: str) -> str:
    return escaped(operation_id[:8]) + "…"


def clock() -> str:
    return time.strftime("%H:%M:%S")


def outcome_line(outcome: Outcome) -> str:
    took = f"{outcome.seconds:.1f} s"
    order = f"{clock()}  order {short(outcome.operation_id)}"
    if outcome.state == "completed":
        return f"{order} completed in {took}"
    if outcome.state == "rejected":
        reason = escaped(outcome.reason or "no reason given")
        if len(reason) > REASON_CHARS:
            reason = reason[: REASON_CHARS - 1] + "…"
        return f"{order} rejected in {took}: {reason}"
    return f"{order} still {escaped(outcome.state)} after {took}; not followed any further"


def not_placed_line(why: str) -> str:
    return f"{clock()}  an order could not be placed: {escaped(why)[:REASON_CHARS]}"


def say(line: str) -> None:
    print(line, flush=True)


async def follow(
    http: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    operation_id: str,
    limit_seconds: float,
    placed_at: float,
) -> Outcome:
    """Reads the operation until it has finished, or ``limit_seconds`` after ``placed_at`` (a
    ``time.monotonic()``) have passed."""
    deadline = placed_at + limit_seconds
    etag: str | None = None
    state = "pending"
    while (left := deadline - time.monotonic()) > 0:
        asked = dict(headers)
        params: dict[str, str] = {}
        if etag is not None:
            asked["If-None-Match"] = etag
            params["wait"] = f"{min(LONG_POLL_SECONDS, left):.1f}"
        pause = 0.0
        try:
            timeout = aiohttp.ClientTimeout(total=min(LONG_POLL_SECONDS, left) + 10)
            async with http.get(url, params=params, headers=asked, timeout=timeout) as response:
                if response.status == 200:
                    record: Any = await response.json(content_type=None)
                    state = str(record.get("state")) if isinstance(record, dict) else "pending"
                    if state != "pending":
                        return Outcome(
                            operation_id,
                            state,
                            time.monotonic() - placed_at,
                            _reason(record),
                        )
                    etag = response.headers.get("ETag")
                    if etag is None:
                        pause = 0.5
                elif response.status == 404:  # placed, not recorded yet
                    pause = 0.2
                elif response.status == 429:
                    pause = _retry_after(response.headers.get("Retry-After"))
                elif response.status != 304:
                    log.warning(
                        "GET /operations/%s answered %d",
                        operation_id,
                        response.status,
                        extra={"correlation_id": operation_id},
                    )
                    pause = 1.0
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            log.warning(
                "GET /operations/%s failed: %s",
                operation_id,
                error,
                extra={"correlation_id": operation_id},
            )
            pause = 1.0
        if pause:
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
    return Outcome(operation_id, state, limit_seconds)


def _reason(record: dict[str, Any]) -> str | None:
    reason = record.get("reason")
    return reason if isinstance(reason, str) and reason else None


def _retry_after(value: str | None) -> float:
    try:
        return min(max(float(value or 5), 0.5), 30.0)
    except ValueError:
        return 5.0
