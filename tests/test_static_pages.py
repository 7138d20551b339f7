"""Checks on the shipped static pages that need no browser: the vendored Socket.IO client is
recorded with its licence and checksum, and the pages load nothing from outside."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


STATIC = ROOT / "hub" / "static"


VENDOR = STATIC / "vendor"


CLIENT = STATIC / "client"


def test_the_vendored_socket_io_client_is_recorded_with_its_licence() -> None:
    """The one copy of the Socket.IO client, beside the browser client module, is the version
    the npm package depends on, recorded with the checksums of what is shipped."""
    package = json.loads((ROOT / "clients" / "js" / "package.json").read_text(encoding="utf-8"))
    version = package["dependencies"]["socket.io-client"]
    script = CLIENT / "socket.io.esm.min.js"
    assert script.read_text(encoding="utf-8").startswith(f"/*!\n * Socket.IO v{version}\n")
    licence = (CLIENT / "socket.io-client.LICENSE").read_text(encoding="utf-8")
    assert "MIT License" in licence and "Guillermo Rauch" in licence
    record = (VENDOR / "README.md").read_text(encoding="utf-8")
    assert f"socket.io-client@{version}" in record
    for name in ("socket.io.esm.min.js", "socket.io-client.LICENSE"):
        digest = hashlib.sha256((CLIENT / name).read_bytes()).hexdigest()
        assert f"| `../client/{name}` |" in record and f"`{digest}`" in record, name
    assert sorted(path.name for path in VENDOR.iterdir()) == ["README.md"]  # nothing unused


@pytest.mark.parametrize("page", ["dashboard/index.html", "index.html"])
def test_the_pages_load_nothing_from_outside(page: str) -> None:
    html = (STATIC / page).read_text(encoding="utf-8")
    references = re.findall(r"""\b(?:src|href)\s*=\s*["']?([^"'\s>]+)""", html, re.IGNORECASE)
    assert references, "no src or href found: the check would prove nothing"
    external = [ref for ref in references if re.match(r"^(?:[a-z][a-z0-9+.-]*:)?//", ref, re.I)]
    assert not external, f"{page} loads {external}"
    for ref in references:
        if ref.startswith("data:"):
            continue
        served = (STATIC / page).parent / ref
        local = STATIC / ref.removeprefix("../live/") if ref.startswith("../live/") else served
        assert local.resolve().is_file(), f"{page} loads {ref}, which is not shipped"
