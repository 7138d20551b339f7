"""What the README and the docs pages name exists: every path into the repository
(``operations/store/listing.py``, ``scripts/run.sh``), every module file named alone (``sweep.lua``,
``sagas/bounds.py``), every dotted name (``operations.sagas.Saga``, a logger, a span attribute),
every constant (```MAX_PAGE```, and those in the pages' Python examples) and every
``OPERATIONS_*`` setting. A rename that leaves a page behind fails here, not in a reader's hands."""

from __future__ import annotations

import importlib
import re
from functools import cache
from pathlib import Path

import pytest

from operations.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
IDS = [page.name for page in PAGES]
SOURCES = ("operations", "hub", "tests", "examples")
TOOLING = ("Makefile", "Dockerfile", "docker-compose.yml", "scripts", "deploy")

PATH = re.compile(
    r"(?<![\w/{}-])(?:\.\.?/)*((?:operations|hub|tests|scripts|examples|deploy|docs)/[\w./*-]*)"
)
MODULE_FILE = re.compile(r"`([\w./-]+\.(?:py|lua))`")
DOTTED = re.compile(r"(?<![\w./-])((?:operations|hub|tests)(?:\.\w+)+)")
CONSTANT = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b")
SETTING = re.compile(r"\bOPERATIONS_[A-Z0-9_]*[A-Z0-9]\b")
PYTHON_FENCE = re.compile(r"^ *```python\n(.*?)^ *```", re.M | re.S)


def text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


@cache
def repository_files() -> tuple[str, ...]:
    """Every file of the project, as a path from its root."""
    return tuple(
        str(path.relative_to(ROOT))
        for folder in (*SOURCES, *TOOLING, "docs")
        for path in ([ROOT / folder] if (ROOT / folder).is_file() else (ROOT / folder).rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    )


@cache
def python_source() -> str:
    return "\n".join(text(ROOT / name) for name in repository_files() if name.endswith(".py"))


@cache
def service_source() -> str:
    """The Python of the service and its example, where names are read and logged by."""
    return "\n".join(
        text(ROOT / name)
        for name in repository_files()
        if name.endswith(".py") and not name.startswith("tests")
    )


@cache
def tooling_source() -> str:
    return "\n".join(
        text(ROOT / name)
        for name in repository_files()
        if name.startswith(TOOLING) and not name.endswith(".py")
    )


def names(pattern: re.Pattern[str], page: Path) -> list[str]:
    return sorted({match.group(1) for match in pattern.finditer(text(page))})


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_every_path_named_exists(page: Path) -> None:
    missing = [
        path
        for path in names(PATH, page)
        if not (ROOT / path.rstrip(".")).exists() and not list(ROOT.glob(path))
    ]
    assert missing == [], f"{page.name} names paths that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_every_module_file_named_alone_exists(page: Path) -> None:
    """``sweep.lua`` or ``sagas/bounds.py``: the end of some file's path in the project."""
    missing = [
        name
        for name in names(MODULE_FILE, page)
        if not any(f"/{path}".endswith(f"/{name.lstrip('./')}") for path in repository_files())
    ]
    assert missing == [], f"{page.name} names module files that do not exist: {missing}"


def is_python_name(dotted: str) -> bool:
    """A module, or an attribute reached from the longest module that imports."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            if not hasattr(found, part):
                return False
            found = getattr(found, part)
        return True
    return False


def queue_names() -> set[str]:
    """The default queues, whose names look like modules' (``operations.sagas.retry``)."""
    defaults = Settings()
    return {
        f"{queue}{suffix}"
        for queue in (defaults.queue, defaults.saga_queue)
        for suffix in ("", ".retry", ".dead-letter")
    }


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_every_dotted_name_exists(page: Path) -> None:
    """A module or what it holds (``operations.sagas.Saga``); else a name the code spells out
    whole (a logger, a span attribute), a file of the project (``operations.rest``) or a
    default queue."""
    missing = [
        name
        for name in names(DOTTED, page)
        if not name.endswith(".py")  # a module file, checked above
        and not is_python_name(name)
        and f'"{name}"' not in service_source()
        and not (ROOT / name).is_file()
        and name not in queue_names()
    ]
    assert missing == [], f"{page.name} names modules or attributes that do not exist: {missing}"


def constants(page: Path) -> set[str]:
    """The upper-case names in inline code, and those in the page's Python examples."""
    found = set(re.findall(rf"`({CONSTANT.pattern})`", text(page)))
    for example in PYTHON_FENCE.findall(text(page)):
        found |= set(CONSTANT.findall(example))
    return {name for name in found if not name.startswith(("OPERATIONS_", "OTEL_"))}


def is_defined(name: str) -> bool:
    """Assigned in Python, read from the environment by name, or a variable of the Makefile or
    the scripts."""
    return bool(
        re.search(rf"^\s*{name}\s*(?::[^=\n]*)?=", python_source(), re.M)
        or f'"{name}"' in service_source()
        or re.search(
            rf"\$[({{]?(?:or \$\()?{name}\b|^\s*(?:export\s+)?{name}\s*[?:]?=",
            tooling_source(),
            re.M,
        )
    )


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_every_constant_named_exists(page: Path) -> None:
    missing = sorted(name for name in constants(page) if not is_defined(name))
    assert missing == [], f"{page.name} names constants the code does not define: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_every_setting_named_is_read(page: Path) -> None:
    """An ``OPERATIONS_*`` variable the service reads by name, or that the tests or the tooling
    set."""
    missing = [
        name
        for name in sorted(set(SETTING.findall(text(page))))
        if f'"{name}"' not in python_source() and name not in tooling_source()
    ]
    assert missing == [], f"{page.name} names settings nothing reads: {missing}"


def test_the_checks_find_what_they_look_for() -> None:
    """Each pattern matches on the pages, so no check passes for want of anything to check."""
    everything = {page.name: page for page in PAGES}
    assert "operations/store/listing.py" in names(PATH, everything["http-models.md"])
    assert "lua/sweep.lua" in names(MODULE_FILE, everything["operating.md"])
    assert "operations.sagas.Saga" in names(DOTTED, everything["sagas-guide.md"])
    assert "MAX_PAGE" in constants(everything["http-models.md"])
    assert "OPERATIONS_AMQP_URL" in SETTING.findall(text(everything["configuration.md"]))
    assert not is_python_name("operations.store.listing.NO_SUCH_LIMIT")
    assert not is_defined("NO_SUCH_LIMIT")


def test_the_layout_lists_every_lua_script() -> None:
    """docs/contributing.md lists the folder operations/store/lua/, no script more or less."""
    layout = text(ROOT / "docs" / "contributing.md").split("## Layout\n", 1)[1].split("```")[1]
    listed = re.findall(r"^ {4}(\w+\.lua) ", layout, re.M)
    assert len(listed) == len(set(listed)), "a script is listed twice"
    assert sorted(listed) == sorted(
        path.name for path in (ROOT / "operations" / "store" / "lua").glob("*.lua")
    )
