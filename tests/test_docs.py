"""The documentation holds together: every relative link in the README and the docs pages leads to
a file that exists (and, into a Markdown page, to a heading it has), and the exception tree in
docs/architecture.md is the one in the code."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import hub
import operations
from operations.errors import OperationsError
from operations.metrics import Registry

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *$", re.M)
EXPLICIT_ANCHOR = re.compile(r'<a id="([^"]+)"')


def prose(page: Path) -> str:
    """The page without its fenced code blocks, where brackets are code, not links."""
    return FENCE.sub("", page.read_text(encoding="utf-8"))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = prose(page)
    found: set[str] = set(EXPLICIT_ANCHOR.findall(text))
    seen: dict[str, int] = {}
    for heading in HEADING.findall(text):
        base = slug(heading)
        count = seen.get(base, 0)
        found.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return found


def relative_links(page: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(prose(page))
        if not re.match(r"[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto:
    ]


def test_there_are_pages_and_links_to_check() -> None:
    assert len(PAGES) > 5
    assert all(relative_links(page) for page in PAGES)


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_every_relative_link_leads_somewhere(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            broken.append(f"{target}: no file {destination.relative_to(ROOT)}")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading #{anchor} in {destination.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)} has broken links:\n" + "\n".join(broken)


def documented_tree() -> dict[str, tuple[str | None, str]]:
    """The tree drawn in docs/architecture.md: each class with its parent and its code."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("\n## Exceptions\n", 1)[1]
    block = section.split("```\n", 2)[1]
    tree: dict[str, tuple[str | None, str]] = {}
    parents: list[str] = []
    for line in block.splitlines():
        match = re.match(r"^([│├└─ ]*)(\w+)\s+(\w+)\s", line)
        assert match, f"not a line of the tree: {line!r}"
        depth = len(match.group(1)) // 4
        del parents[depth:]
        tree[match.group(2)] = (parents[-1] if parents else None, match.group(3))
        parents.append(match.group(2))
    return tree


def code_tree() -> dict[str, tuple[str | None, str]]:
    """Every subclass of OperationsError in the packages, with its parent and its code."""
    for package in (operations, hub):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if not module.name.endswith("__main__"):
                importlib.import_module(module.name)
    tree: dict[str, tuple[str | None, str]] = {
        OperationsError.__name__: (None, OperationsError.code)
    }
    pending = [OperationsError]
    while pending:
        parent = pending.pop()
        for error in parent.__subclasses__():
            if error.__module__.startswith(("operations.", "hub.")):
                tree[error.__name__] = (parent.__name__, error.code)
                pending.append(error)
    return tree


def test_the_documented_exception_tree_is_the_code_s() -> None:
    assert documented_tree() == code_tree()


def table_names(page: str, pattern: str) -> set[str]:
    """The names in the first column of a page's tables that match ``pattern``."""
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    return set(re.findall(rf"^\| `({pattern})`", text, re.M))


def test_the_configuration_page_lists_every_setting_the_code_reads() -> None:
    read = {
        name
        for source in (ROOT / "operations").rglob("*.py")
        for name in re.findall(r"\"(OPERATIONS_[A-Z0-9_]+)\"", source.read_text(encoding="utf-8"))
    }
    assert "OPERATIONS_AMQP_URL" in read
    assert read <= table_names("configuration.md", r"OPERATIONS_[A-Z0-9_]+")


def test_the_http_page_lists_every_metric() -> None:
    metrics = set(re.findall(r"^# TYPE (operations_\w+) ", Registry().render().decode(), re.M))
    assert "operations_messages_total" in metrics
    assert metrics == table_names("http-api.md", r"operations_[a-z_]+")
