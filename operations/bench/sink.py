"""A local OTLP/HTTP receiver for ``operations bench --tracing``, run as a process of its own
(``python -m operations.bench.sink``): it takes the service's span exports and answers as a
collector does, so that the bench measures what recording and exporting a span for every message
costs the service, with the receiving done on another process. It prints its port, then, when it
is stopped, how many export requests and bytes it took."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web


@dataclass
class Received:
    requests: int = 0
    bytes: int = 0


async def _serve() -> None:
    received = Received()

    async def export(request: web.Request) -> web.Response:
        received.requests += 1
        received.bytes += len(await request.read())
        # An empty ExportTraceServiceResponse: everything accepted.
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", export)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert runner.addresses, "the sink is not listening"
    print(runner.addresses[0][1], flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()
    print(received.requests, received.bytes, flush=True)


@dataclass
class Sink:
    endpoint: str
    requests: int = 0
    bytes: int = 0


@contextlib.asynccontextmanager
async def otlp_sink() -> AsyncIterator[Sink]:
    """The sink process, for the life of the block; its counts are filled in at the end."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "operations.bench.sink", stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    try:
        port = int(await asyncio.wait_for(process.stdout.readline(), timeout=30))
        sink = Sink(f"http://127.0.0.1:{port}")
        yield sink
    finally:
        if process.returncode is None:
            process.terminate()
        out, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    requests, size = out.split()
    sink.requests, sink.bytes = int(requests), int(size)


if __name__ == "__main__":
    asyncio.run(_serve())
