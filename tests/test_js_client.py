"""The JavaScript client's npm package (clients/js, contract §13) in Node, from the tarball
``npm pack`` makes, against a real service on real Redis and RabbitMQ: ``watch`` and ``start``
follow a saga to its end, an idempotency key starts one saga, ``cancel`` ends one cancelled,
``list`` pages, and ``getToken`` is asked again after a refusal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from operations.auth.tokens import mint
from operations.pacco.demo import DemoServices
from operations.settings import Settings
from tests.support import Publisher, RunningService, eventually, new_id, run_to_end

Token = Callable[..., str]

PACKAGE = Path(__file__).resolve().parent.parent / "clients" / "js"

needs_node = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="node and npm are missing (scripts/setup.sh installs them: Debian's nodejs and npm)",
)


async def test_the_service_serves_the_module_its_types_and_what_it_imports(
    http: httpx.AsyncClient,
) -> None:
    """Each with its content type, and the same bytes as the package's files (one copy)."""
    source = PACKAGE.parent.parent / "hub" / "static" / "client"
    types = {
        "operations.js": "text/javascript",
        "client.js": "text/javascript",
        "socket.io.esm.min.js": "text/javascript",
        "operations.d.ts": "application/typescript",
        "socket.io-client.LICENSE": "text/plain",
    }
    for name, media_type in types.items():
        answer = await http.get(f"/client/{name}")
        assert answer.status_code == 200, name
        assert answer.headers["content-type"].split(";")[0] == media_type, name
        assert answer.content == (source / name).read_bytes()
    module = (await http.get("/client/operations.js")).text
    assert 'from "./socket.io.esm.min.js"' in module and 'from "./client.js"' in module
    assert (await http.get("/client/node_modules")).status_code == 404
    assert (await http.get("/client/..%2Fpage.py")).status_code == 404


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory where the package, packed by ``npm pack``, is installed from its tarball
    (socket.io-client from npm's cache when it holds it, else from the registry)."""
    work = tmp_path_factory.mktemp("npm")
    quiet = ["--no-audit", "--no-fund", "--loglevel=error"]
    packed = subprocess.run(
        ["npm", "pack", "--pack-destination", str(work), *quiet],
        cwd=PACKAGE,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    tarball = work / packed.stdout.strip().splitlines()[-1]
    app = work / "app"
    app.mkdir()
    (app / "package.json").write_text('{"name": "app", "private": true, "type": "module"}')
    install = subprocess.run(
        ["npm", "install", "--prefer-offline", *quiet, str(tarball)],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if install.returncode != 0:  # socket.io-client in neither npm's cache nor reach
        pytest.fail(f"npm install of the packed client failed: {install.stderr[-2000:]}")
    return app


async def node(app: Path, script: str, **env: str) -> list[Any]:
    """Runs ``script`` (an ES module importing ``@operations/client``) in ``app``; returns what
    it printed, one JSON value a line."""
    status, out, err = await run_to_end(
        "node", "--input-type=module", "-e", script, cwd=app, env={**os.environ, **env}
    )
    assert status == 0, err
    return [json.loads(line) for line in out.splitlines() if line.strip()]


async def recorded(service: RunningService, token: str, operation: str, state: str) -> None:
    """Waits until the service has recorded ``operation`` in ``state``."""
    async with httpx.AsyncClient(base_url=service.url) as http:

        async def read() -> bool:
            answer = await http.get(
                f"/operations/{operation}", headers={"Authorization": f"Bearer {token}"}
            )
            return answer.status_code == 200 and answer.json()["state"] == state

        await eventually(read, f"{operation} to be {state}")


def order() -> dict[str, Any]:
    return {
        "customerId": str(uuid.uuid4()),
        "parcelIds": [str(uuid.uuid4())],
        "orderId": f"order-{uuid.uuid4().hex[:8]}",
    }


def assert_in_order(records: list[dict[str, Any]], operation: str) -> None:
    """Each change once, versions rising, the terminal one last and only last."""
    assert {uuid.UUID(record["id"]) for record in records} == {uuid.UUID(operation)}
    versions = [record["version"] for record in records]
    assert versions == sorted(set(versions)), versions
    states = [record["state"] for record in records]
    assert states[-1] != "pending" and set(states[:-1]) <= {"pending"}, states


START_AND_WATCH = """
import { connect, OperationsError } from "@operations/client";
const client = connect({ url: process.env.URL, token: process.env.TOKEN });
const statuses = [];
client.on("status", (status) => statuses.push(status));
const body = JSON.parse(process.env.ORDER);
const first = await client.start("order_making", body, { idempotencyKey: process.env.KEY });
const again = await client.start("order_making", body, { idempotencyKey: process.env.KEY });
const changes = [];
for await (const record of client.watch(first.id)) changes.push(record);
const final = await first.result();
let refused = null;
try {
  const other = { ...body, parcelIds: ["another"] };
  await client.start("order_making", other, { idempotencyKey: process.env.KEY });
} catch (error) {
  refused = { status: error.status, code: error.code, typed: error instanceof OperationsError };
}
client.close();
const out = { first: first.id, again: again.id, changes, final, refused, statuses };
console.log(JSON.stringify(out));
"""


@needs_node
async def test_start_with_an_idempotency_key_and_watch_a_saga_to_its_end(
    installed: Path, service: RunningService, settings: Settings, token: Token
) -> None:
    user = str(uuid.uuid4())
    async with DemoServices(settings.amqp_url, latency_ms=20):
        [out] = await node(
            installed,
            START_AND_WATCH,
            URL=service.url,
            TOKEN=token(user),
            ORDER=json.dumps(order()),
            KEY=str(uuid.uuid4()),
        )
    assert out["first"] == out["again"]  # one saga for one key
    assert out["final"]["state"] == "completed", out["final"]
    assert_in_order(out["changes"], out["first"])
    assert (out["final"]["state"], out["final"]["name"], out["final"]["userId"]) == (
        "completed",
        "make_order_completed",
        user,
    )
    assert out["changes"][-1] == out["final"]
    assert out["refused"] == {"status": 422, "code": "idempotency_key_reused", "typed": True}
    assert out["statuses"] == ["connecting", "open", "closed"]


CANCEL = """
import { connect } from "@operations/client";
const client = connect({ url: process.env.URL, token: process.env.TOKEN });
const handle = await client.start("order_making", JSON.parse(process.env.ORDER));
for (let tries = 0; ; tries += 1) {
  const saga = await fetch(`${process.env.URL}/operations/${handle.id}/saga`, {
    headers: { Authorization: `Bearer ${process.env.TOKEN}` },
  });
  if (saga.ok || tries > 100) break;
  await new Promise((resolve) => setTimeout(resolve, 100));
}
const cancelled = await client.cancel(handle.id, "changed my mind");
const final = await handle.result();
let again = null;
try {
  await client.cancel(handle.id);
} catch (error) {
  again = { status: error.status, code: error.code, reason: typeof error.reason };
}
client.close();
console.log(JSON.stringify({ id: handle.id, cancelled, final, again }));
"""


@needs_node
async def test_cancel_ends_a_running_saga_rejected_cancelled(
    installed: Path, service: RunningService, token: Token
) -> None:
    """No demo services run: the saga waits on its first step until it is cancelled."""
    user = str(uuid.uuid4())
    [out] = await node(
        installed, CANCEL, URL=service.url, TOKEN=token(user), ORDER=json.dumps(order())
    )
    assert out["cancelled"] == {"operationId": out["id"], "cancelled": True}
    assert (out["final"]["state"], out["final"]["code"]) == ("rejected", "cancelled")
    assert out["final"]["reason"] == f"cancelled by its owner, {user}: changed my mind"
    assert out["again"] == {"status": 409, "code": "not_cancellable", "reason": "string"}


CLOSE = """
import { connect } from "@operations/client";
const client = connect({ url: process.env.URL, token: process.env.TOKEN });
const unknown = client.watch(process.env.UNKNOWN); // answered 404: read again after pauses
const started = await client.start("order_making", JSON.parse(process.env.ORDER));
const handle = client.watch(started.id);
let first = null;
for await (const record of handle) {
  first = record;
  break;
}
let timer;
const afterBreak = await Promise.race([
  handle.result().then(() => "a result", (error) => error.code),
  new Promise((resolve) => (timer = setTimeout(() => resolve("still waiting"), 2_000))),
]);
clearTimeout(timer);
// Time for the reads of the unknown operation to back off to pauses of a second or so.
await new Promise((resolve) => setTimeout(resolve, 1_500));
const closedAt = Date.now();
client.close();
const unknownEnd = await unknown.result().catch((error) => error.code);
const startedEnd = await started.result().catch((error) => error.code);
const out = { first: first.version, afterBreak, unknownEnd, startedEnd, status: client.status };
process.on("exit", () => console.log(JSON.stringify({ ...out, lingered: Date.now() - closedAt })));
"""


@needs_node
async def test_node_exits_once_the_client_closes_and_a_loop_left_early_closes_its_handle(
    installed: Path, service: RunningService, token: Token
) -> None:
    """``start()`` waited for the socket with a 10 s timer it never cleared, and the reads of an
    operation not recorded yet pause between tries: once the client is closed, no timer keeps
    Node up. A ``break`` out of a ``for await`` over a handle closes it (a ``result()`` of it
    is rejected ``closed`` at once, not left waiting)."""
    user = str(uuid.uuid4())
    [out] = await node(
        installed,
        CLOSE,
        URL=service.url,
        TOKEN=token(user),
        ORDER=json.dumps(order()),
        UNKNOWN=new_id(),
    )
    assert (out["first"], out["afterBreak"]) == (1, "closed")
    assert (out["unknownEnd"], out["startedEnd"], out["status"]) == ("closed", "closed", "closed")
    assert out["lingered"] < 1_000, out


LIST = """
import { connect } from "@operations/client";
const client = connect({ url: process.env.URL, token: process.env.TOKEN });
const ids = [];
let page = await client.list({ limit: 2 });
for (let pages = 0; pages < 20; pages += 1) {
  ids.push(...page.items.map((record) => record.id));
  if (!page.next) break;
  page = await client.list({ limit: 2, cursor: page.next });
}
const completed = await client.list({ state: "completed" });
const named = await client.list({ name: "no such name" });
const one = await client.get(ids[0]);
let missing = null;
try {
  await client.get("no-such-operation");
} catch (error) {
  missing = { status: error.status, code: error.code };
}
client.close();
const out = { ids, completed: completed.items.map((r) => r.id), named, one, missing };
console.log(JSON.stringify(out));
"""


@needs_node
async def test_list_pages_and_get_reads_one(
    installed: Path, service: RunningService, publisher: Publisher, token: Token
) -> None:
    user = str(uuid.uuid4())
    made = [new_id() for _ in range(5)]
    for operation in made:
        await publisher.publish("create_order", operation, user=user, name="create_order")
    await publisher.publish("order_approved", made[0], user=user, name="order_approved")

    await recorded(service, token(user), made[0], "completed")
    for operation in made[1:]:
        await recorded(service, token(user), operation, "pending")
    [out] = await node(installed, LIST, URL=service.url, TOKEN=token(user))
    assert sorted(uuid.UUID(each) for each in out["ids"]) == sorted(map(uuid.UUID, made))
    assert [uuid.UUID(each) for each in out["completed"]] == [uuid.UUID(made[0])]
    assert out["named"] == {"items": [], "next": None}
    assert out["one"]["id"] == out["ids"][0]
    assert out["missing"] == {"status": 404, "code": "operation_not_found"}


GET_TOKEN = """
import { connect } from "@operations/client";
const tokens = JSON.parse(process.env.TOKENS);
let asked = 0;
const getToken = async () => tokens[Math.min(asked++, tokens.length - 1)];
const client = connect({ url: process.env.URL, getToken });
const first = await client.get(process.env.OPERATION);
const afterHttp = asked;
const handle = client.watch(process.env.OPERATION);
const changes = [];
const iterator = handle[Symbol.asyncIterator]();
changes.push((await iterator.next()).value);
const afterSocket = asked;
handle.close();
client.close();
// A client whose first use is the socket: refused "unauthorized", it asks again and connects.
asked = 0;
const second = connect({ url: process.env.URL, getToken });
const record = (await second.watch(process.env.OPERATION)[Symbol.asyncIterator]().next()).value;
const bySocket = { version: record.version, asked, status: second.status };
second.close();
// Without getToken, a refused token fails what waits on the socket, typed.
const third = connect({ url: process.env.URL, token: tokens[0] });
const refused = await third.watch(process.env.OPERATION).result().catch((e) => [e.status, e.code]);
const closed = third.status;
third.close();
const out = { first: first.version, afterHttp, afterSocket, changes, bySocket, refused, closed };
console.log(JSON.stringify(out));
"""


@needs_node
async def test_get_token_is_asked_again_after_a_refusal(
    installed: Path, service: RunningService, publisher: Publisher, token: Token
) -> None:
    """The first token is signed with another key, as a stale token is refused: the request is
    refused 401, the client asks getToken again and retries with the new one. The socket then
    connects with the token kept. A second client meets the stale token on its socket first:
    refused ``unauthorized``, it asks again and connects. A third, with that token and no
    getToken, fails its watch with a typed 401."""
    user = str(uuid.uuid4())
    operation = new_id()
    await publisher.publish("create_order", operation, user=user, name="create_order")
    stale = mint("another-secret-0123456789abcdef-012345", user)
    tokens = json.dumps([stale, token(user)])

    await recorded(service, token(user), operation, "pending")
    [out] = await node(installed, GET_TOKEN, URL=service.url, TOKENS=tokens, OPERATION=operation)
    assert (out["first"], out["afterHttp"], out["afterSocket"]) == (1, 2, 2)
    assert [change["version"] for change in out["changes"]] == [1]
    assert out["bySocket"] == {"version": 1, "asked": 2, "status": "open"}
    assert (out["refused"], out["closed"]) == ([401, "unauthorized"], "closed")
