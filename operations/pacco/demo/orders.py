"""``operations demo-orders``: a gentle stream of ``POST /orders`` for the demo, so that a newcomer
sees sagas run live. Each order is followed to its outcome, which is printed as one short line
(:mod:`.outcomes`). It stops after ``count`` orders, once their outcomes are in, or on Ctrl-C."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid

import aiohttp

from operations.auth.tokens import mint
from operations.pacco.demo.outcomes import Outcome, follow, not_placed_line, outcome_line, say
from operations.settings import Settings
from operations.tasks import BackgroundTasks

log = logging.getLogger("operations.pacco.demo.orders")
CUSTOMERS = tuple(str(uuid.UUID(int=0xC0FFEE00 + index)) for index in range(5))


async def place_orders(
    settings: Settings,
    user: str,
    every_seconds: float,
    count: int,
    seed: int | None = None,
    follow_seconds: float = 0.0,
) -> int:
    rng = random.Random(seed)
    base = f"http://{settings.host}:{settings.port}"
    ttl = int(every_seconds * count + follow_seconds) + 3_600
    token = mint(settings.signing_secret(), user, ttl_seconds=ttl)
    headers = {"Authorization": f"Bearer {token}"}
    placed = 0
    followed = BackgroundTasks(logger=log)

    async def report(http: aiohttp.ClientSession, operation_id: str, placed_at: float) -> None:
        url = f"{base}/operations/{operation_id}"
        outcome = await follow(http, url, headers, operation_id, follow_seconds, placed_at)
        _log(outcome)
        say(outcome_line(outcome))

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        try:
            for _ in range(count):
                body = {
                    "customerId": rng.choice(CUSTOMERS),
                    "parcelIds": [str(uuid.uuid4()) for _ in range(rng.randint(1, 3))],
                }
                placed_at = time.monotonic()
                try:
                    async with http.post(f"{base}/orders", json=body, headers=headers) as response:
                        answer = await response.json(content_type=None)
                        if response.status == 202:
                            placed += 1
                            log.info(
                                "order %s placed: operation %s",
                                answer["orderId"],
                                answer["operationId"],
                                extra={"correlation_id": answer["operationId"]},
                            )
                            if follow_seconds > 0:
                                followed.start(
                                    "demo-follow", report(http, answer["operationId"], placed_at)
                                )
                        else:
                            log.warning("POST /orders answered %d: %s", response.status, answer)
                            say(
                                not_placed_line(
                                    f"POST /orders answered {response.status}: {answer}"
                                )
                            )
                except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                    log.warning("POST /orders failed: %s", error)
                    say(not_placed_line(f"POST /orders failed: {error or type(error).__name__}"))
                await asyncio.sleep(every_seconds)
            await followed.finish()
        finally:
            await followed.stop()
    return placed


def _log(outcome: Outcome) -> None:
    finished = outcome.state in ("completed", "rejected")
    log.log(
        logging.INFO if finished else logging.WARNING,
        "operation %s %s after %.1f s%s",
        outcome.operation_id,
        outcome.state if finished else "not finished",
        outcome.seconds,
        f": {outcome.reason}" if outcome.reason else "",
        extra={"correlation_id": outcome.operation_id},
    )
