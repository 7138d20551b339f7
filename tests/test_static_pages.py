"""Checks on the shipped static pages that need no browser: the vendored Socket.IO client is
recorded with its licence, and the pages load nothing from outside."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


STATIC = ROOT / "hub" / "static"


VENDOR = STATIC / "vendor"


def test_the_vendored_socket_io_client_is_recorded_with_its_licence() -> None:
    scripts = sorted(VENDOR.glob("socket.io-*.min.js"))
    assert len(scripts) == 1, scripts
    version = scripts[0].name.removeprefix("socket.io-").removesuffix(".min.js")
    assert scripts[0].read_text(encoding="utf-8").startswith(f"/*!\n * Socket.IO v{version}\n")
    licence = (VENDOR / "socket.io-client.LICENSE").read_text(encoding="utf-8")
    assert "MIT License" in licence and "Guillermo Rauch" in licence
    record = (VENDOR / "README.md").read_text(encoding="utf-8")
    assert f"socket.io-client@{version}" in record
    assert "dist/socket.io.min.js" in record


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
