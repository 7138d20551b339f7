"""Socket.IO clients that connect and disconnect, in a process of their own so that what they
leave in memory is not the service's: ``python -m tests.churn_clients URL CYCLES AT_ONCE
TRANSPORT TOKEN...`` (TRANSPORT ``websocket``, or ``polling`` to open with a long-poll and
upgrade). Each cycle connects with the next token, is admitted, and disconnects; prints the
cycles done."""

from __future__ import annotations

import asyncio
import sys

import socketio


async def cycle(url: str, token: str, transports: list[str]) -> None:
    client = socketio.AsyncClient(reconnection=False)
    admitted = asyncio.Event()
    client.on("connect", admitted.set)
    await client.connect(
        url,
        auth={"token": token},
        transports=transports,
        socketio_path="socket.io",
        wait_timeout=10,
    )
    await asyncio.wait_for(admitted.wait(), 10)
    await client.disconnect()


async def churn(url: str, cycles: int, at_once: int, transport: str, tokens: list[str]) -> int:
    transports = ["websocket"] if transport == "websocket" else ["polling", "websocket"]
    done = 0
    while done < cycles:
        count = min(at_once, cycles - done)
        batch = (cycle(url, tokens[(done + i) % len(tokens)], transports) for i in range(count))
        await asyncio.gather(*batch)
        done += count
    return done


def main(argv: list[str]) -> None:
    url, cycles, at_once, transport, *tokens = argv
    print(asyncio.run(churn(url, int(cycles), int(at_once), transport, tokens)))


if __name__ == "__main__":
    main(sys.argv[1:])
