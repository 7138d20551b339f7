"""The documentation holds together: every relative link in the README and the docs pages leads to
a file that exists (and, into a Markdown page, to a heading it has), and the exception tree in
docs/architecture.md is the one in the code, each class with its code and what its docstring
says it means."""

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


Tree = dict[str, tuple[str | None, str, str]]
TREE_LINE = re.compile(r"^([│├└─ ]*)(\w+) +(\w+) +(\S.*?)$")
PACKAGES = {"operations": ROOT / "operations", "hub": ROOT / "hub"}


def documented_tree() -> Tree:
    """The tree drawn in docs/architecture.md: each class with its parent, its code and what it
    means."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("\n## Exceptions\n", 1)[1]
    block = section.split("```\n", 2)[1]
    tree: Tree = {}
    parents: list[str] = []
    for line in block.splitlines():
        match = TREE_LINE.match(line)
        assert match, f"not a line of the tree: {line!r}"
        drawing, name, code, meaning = match.groups()
        assert len(drawing) % 4 == 0 and len(drawing) // 4 <= len(parents), line
        assert name not in tree, f"{name} is drawn twice"
        del parents[len(drawing) // 4 :]
        tree[name] = (parents[-1] if parents else None, code, meaning)
        parents.append(name)
    return tree


def meaning(error: type[OperationsError]) -> str:
    """The first paragraph of the class's own docstring, as the drawing shows it: one line,
    Markdown's backticks, no closing period, and the module for a class that lives outside
    operations/errors.py."""
    doc = error.__dict__.get("__doc__")
    assert doc, f"{error.__name__} says in no docstring of its own what it means"
    first = " ".join(doc.strip().split("\n\n", 1)[0].split()).replace("``", "`").rstrip(".")
    if error.__module__ == "operations.errors":
        return first
    package, _, rest = error.__module__.partition(".")
    path = Path(rest.replace(".", "/") + ".py")
    if not (PACKAGES[package] / path).exists():
        path = Path(rest.replace(".", "/") + "/")
    where = f"{package}/{path}" if package != "operations" else str(path)
    return f"{first} ({where})"


def code_tree() -> Tree:
    """Every subclass of OperationsError in the packages, with its parent, its code and what it
    means."""
    for package in (operations, hub):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if not module.name.endswith("__main__"):
                importlib.import_module(module.name)
    tree: Tree = {OperationsError.__name__: (None, OperationsError.code, meaning(OperationsError))}
    pending = [OperationsError]
    while pending:
        parent = pending.pop()
        for error in parent.__subclasses__():
            if error.__module__.startswith(("operations.", "hub.")):
                assert error.__name__ not in tree, f"two errors named {error.__name__}"
                tree[error.__name__] = (parent.__name__, error.code, meaning(error))
                pending.append(error)
    return tree


def drawn(tree: Tree) -> str:
    """The tree as docs/architecture.md draws it, children in the order given."""
    lines: list[str] = []

    def draw(name: str, lead: str, branch: str) -> None:
        _, code, text = tree[name]
        lines.append(f"{lead}{branch}{name}".ljust(32) + f"{code}".ljust(28) + text)
        children = [child for child, (parent, _, _) in tree.items() if parent == name]
        below = lead + ("" if not branch else "    " if branch == "└── " else "│   ")
        for index, child in enumerate(children):
            draw(child, below, "└── " if index == len(children) - 1 else "├── ")

    draw(OperationsError.__name__, "", "")
    return "\n".join(lines)


def test_the_documented_exception_tree_is_the_code_s() -> None:
    documented, code = documented_tree(), code_tree()
    ordered = {name: code[name] for name in [*documented, *code] if name in code}
    assert documented == code, "docs/architecture.md should draw:\n" + drawn(ordered)


def test_what_the_exception_tree_names_exists() -> None:
    """A module named in a meaning, ``(documents.py)`` or ``(deadletters/)``, is in operations/."""
    named = [
        path
        for _, _, text in documented_tree().values()
        for path in re.findall(r"\(([\w/]+(?:\.py|/))\)", text)
    ]
    assert "documents.py" in named
    assert [path for path in named if not (ROOT / "operations" / path).exists()] == []


def test_the_tree_has_one_home() -> None:
    """operations/errors.py points to the drawing instead of drawing the tree again."""
    import operations.errors

    doc = operations.errors.__doc__ or ""
    assert "docs/architecture.md" in doc
    assert not re.search(r"[├└]──", doc)


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
