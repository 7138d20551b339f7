"""``operations demo-orders``: a gentle stream of ``POST /orders`` for the demo, so that a newcomer
sees sagas run live. It stops after ``count`` orders, or on Ctrl-C."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid

import aiohttp

from ..settings import Settings
from ..tokens import mint

log = logging.getLogger("operations.demo.orders")
CUSTOMERS = tuple(str(uuid.UUID(int=0xC0FFEE00 + index)) for index in range(5))


async def place_orders(
    settings: Settings, user: str, every_seconds: float, count: int, seed: int | None = None
) -> int:
    rng = random.Random(seed)
    url = f"http://{settings.host}:{settings.port}/orders"
    token = mint(settings.signing_secret(), user, ttl_seconds=int(every_seconds * count) + 3_600)
    headers = {"Authorization": f"Bearer {token}"}
    placed = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        for _ in range(count):
            body = {
                "customerId": rng.choice(CUSTOMERS),
                "parcelIds": [str(uuid.uuid4()) for _ in range(rng.randint(1, 3))],
            }
            try:
                async with http.post(url, json=body, headers=headers) as response:
                    answer = await response.json(content_type=None)
                    if response.status == 202:
                        placed += 1
                        log.info(
                            "order %s placed: operation %s",
                            answer["orderId"],
                            answer["operationId"],
                            extra={"correlation_id": answer["operationId"]},
                        )
                    else:
                        log.warning("POST /orders answered %d: %s", response.status, answer)
            except (aiohttp.ClientError, TimeoutError) as error:
                log.warning("POST /orders failed: %s", error)
            await asyncio.sleep(every_seconds)
    return placed
