"""Traces exported over OTLP/HTTP with protobuf, as configured by the standard ``OTEL_*``
variables: ``operations serve`` and ``operations demo-services`` run as processes and export to a
small local receiver that decodes each ``ExportTraceServiceRequest``; one order placed with
``POST /orders`` is one trace across both."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from operations.auth.tokens import mint
from operations.settings import Settings
from tests.api import bearer
from tests.support import eventually, new_id, serve_process


@dataclass(frozen=True)
class Received:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]


@dataclass
class Receiver:
    """An OTLP/HTTP endpoint on loopback that keeps every span it is sent."""

    spans: list[Received] = field(default_factory=list)
    content_types: set[str] = field(default_factory=set)
    url: str = ""

    async def traces(self, request: web.Request) -> web.Response:
        self.content_types.add(request.content_type)
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        for resource_spans in export.resource_spans:
            service = next(
                attribute.value.string_value
                for attribute in resource_spans.resource.attributes
                if attribute.key == "service.name"
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        Received(
                            service,
                            span.name,
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                            {item.key: _value(item.value) for item in span.attributes},
                        )
                    )
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind is not None else None


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    received = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", received.traces)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    received.url = f"http://127.0.0.1:{port}"
    try:
        yield received
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def demo_services(env: dict[str, str]) -> AsyncIterator[None]:
    """``operations demo-services`` as a process, once it consumes; stopped by SIGTERM (and
    killed by its PID if it does not stop), which makes it export what it still holds."""
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed below, after the process ends
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "operations", "demo-services", "--latency-ms", "0"),
        env={**os.environ, **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=log,
    )

    async def consuming() -> bool:
        log.seek(0)
        if process.returncode is not None:
            raise AssertionError(f"demo-services exited: {log.read().decode()[-3000:]}")
        return b"\n" in log.read()  # its start-up line is written once it consumes

    try:
        await eventually(consuming, "the simulated services to start", timeout=60, every=0.1)
        yield
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()


def spans_of(received: Receiver, op: str) -> Callable[[], Any]:
    async def check() -> list[Received]:
        return [
            span
            for span in received.spans
            if span.attributes.get("messaging.message.conversation_id") == op
        ]

    return check


async def test_one_order_is_one_trace_exported_over_otlp_http(
    settings: Settings, amqp: object, redis_client: object
) -> None:
    async with receiver() as received:
        otel = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": received.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        async with (
            serve_process(settings, otel) as serving,
            demo_services({"OPERATIONS_AMQP_URL": settings.amqp_url, **otel}),
            httpx.AsyncClient(base_url=serving.url, timeout=30) as http,
        ):
            secret = settings.jwt_secret
            assert secret is not None
            alice = bearer(mint(secret, "alice"))
            response = await http.post(
                "/orders",
                json={"customerId": new_id(), "parcelIds": [new_id()]},
                headers=alice,
            )
            assert response.status_code == 202
            op = response.json()["operationId"]

            async def completed() -> bool:
                got = await http.get(f"/operations/{op}", headers=alice)
                return got.status_code == 200 and got.json()["state"] == "completed"

            await eventually(completed, "the order to complete", timeout=60, every=0.2)

            async def last_step() -> bool:
                spans = await spans_of(received, op)()
                return any(span.name == "process make_order_completed" for span in spans)

            await eventually(last_step, "the last step's span to be exported", timeout=30)
        spans = await spans_of(received, op)()
        assert received.content_types == {"application/x-protobuf"}
        [request] = [span for span in received.spans if span.name == "POST /orders"]
        assert request.service == "operations"
        assert {span.trace_id for span in spans} == {request.trace_id}
        assert {span.service for span in spans} == {"operations", "pacco-demo-services"}
        simulated = {span.attributes.get("operations.demo.service") for span in spans} - {None}
        assert {"orders", "availability"} <= simulated
        names = {span.name for span in spans}
        assert {"publish create_order", "process create_order", "process order_approved"} <= names
        assert all(span.parent_id for span in spans), "every message span has a parent"
        operation_ids = {span.attributes.get("operations.operation_id") for span in spans}
        assert op in operation_ids


async def test_spans_still_buffered_are_exported_when_the_service_is_stopped(
    settings: Settings, amqp: object, redis_client: object
) -> None:
    """The batch processor holds spans for a minute here; SIGTERM must export them, though
    uvicorn ends the process by raising the signal again once it has stopped."""
    async with receiver() as received:
        otel = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": received.url,
            "OTEL_BSP_SCHEDULE_DELAY": "60000",
        }
        async with serve_process(settings, otel) as serving:
            secret = settings.jwt_secret
            assert secret is not None
            async with httpx.AsyncClient(base_url=serving.url, timeout=30) as http:
                response = await http.post(
                    "/orders",
                    json={"customerId": new_id(), "parcelIds": [new_id()]},
                    headers=bearer(mint(secret, "alice")),
                )
            assert response.status_code == 202
            assert not [span for span in received.spans if span.name == "POST /orders"]
            serving.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(serving.process.wait(), 30)
        exported = [span for span in received.spans if span.name == "POST /orders"]
        assert len(exported) == 1, serving.logs()
