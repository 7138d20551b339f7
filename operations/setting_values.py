"""How one environment variable's text becomes a setting's value: the reader that names the
variable in every refusal, and the parsers, each raising ``ValueError`` with what the value must
be. Saga types read their own settings with :func:`read_setting` (re-exported by
:mod:`operations.settings`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from operations.amqp.queues import QueueType
from operations.errors import SettingsError

T = TypeVar("T")


def read_setting(env: Mapping[str, str], name: str, default: T, parse: Callable[[str], T]) -> T:
    """One variable, for a saga type reading its own settings: ``default`` when it is unset or
    blank, else what ``parse`` makes of it; a ``ValueError`` from ``parse`` becomes a
    :class:`SettingsError` naming the variable."""
    return Reader(env).get(name, default, parse)


def whole_number(low: int, high: int) -> Callable[[str], int]:
    """A parser for :func:`read_setting`: a whole number from ``low`` to ``high``."""
    return integer(low, high)


class Reader:
    """Reads variables from ``env``, naming the variable in every refusal."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def get(self, name: str, default: T, parse: Callable[[str], T]) -> T:
        raw = self._env.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return parse(raw.strip())
        except ValueError as error:
            raise SettingsError(name, f"{error} (got {_shown(name, raw)})") from None


def _shown(name: str, raw: str) -> str:
    if "SECRET" in name:
        return "a hidden value"
    parts = urlsplit(raw)
    if parts.password:
        return repr(raw.replace(f":{parts.password}@", ":***@", 1))
    return repr(raw)


def integer(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError("must be a whole number") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return parse


def gc_thresholds(raw: str) -> tuple[int, int, int]:
    """Three whole numbers for ``gc.set_threshold``, or ``python`` for the interpreter's own."""
    if raw.strip().lower() == "python":
        return (700, 10, 10)
    parts = [part.strip() for part in raw.split(",")]
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        raise ValueError("must be three whole numbers, such as 50000,20,10, or python")
    young, middle, old = (int(part) for part in parts)
    if not (1 <= young <= 10_000_000 and 1 <= middle <= 10_000 and 1 <= old <= 10_000):
        raise ValueError("must be 1 to 10000000, then 1 to 10000 twice")
    return young, middle, old


def boolean(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be true or false")


def url_of(*schemes: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        scheme = urlsplit(raw).scheme
        if scheme not in schemes:
            raise ValueError(f"must be a URL with scheme {' or '.join(schemes)}")
        return raw

    return parse


def jwks_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("must be an https (or http) URL of the identity provider's JWKS")
    return raw


def existing_file(raw: str) -> Path:
    path = Path(raw)
    if not path.is_file():
        raise ValueError("must name an existing file")
    return path


def queue_name(raw: str) -> str:
    if len(raw.encode()) > 200 or raw.startswith("amq."):
        raise ValueError("must be at most 200 bytes and must not start with 'amq.'")
    return raw


def queue_type(raw: str) -> QueueType:
    try:
        return QueueType(raw.lower())
    except ValueError:
        raise ValueError("must be classic or quorum") from None


def import_paths(raw: str) -> tuple[str, ...]:
    paths = tuple(path.strip() for path in raw.split(",") if path.strip())
    if not paths:
        raise ValueError("must name at least one saga type as package.module:ClassName")
    return paths


def objectives(raw: str) -> tuple[tuple[str, float], ...]:
    """``type=seconds`` or ``type.step=seconds`` pairs, comma-separated."""
    found: dict[str, float] = {}
    for pair in filter(None, (part.strip() for part in raw.split(","))):
        name, equals, seconds = (piece.strip() for piece in pair.partition("="))
        if not equals or not name or not all(c.isalnum() or c in "_.-" for c in name):
            raise ValueError(f"{pair!r} is not type=seconds or type.step=seconds")
        try:
            value = float(seconds)
        except ValueError:
            raise ValueError(f"{pair!r}: {seconds!r} is not a number of seconds") from None
        if not 0 < value <= 30 * 86_400:
            raise ValueError(f"{pair!r}: seconds must be more than 0 and at most 30 days")
        found[name] = value
    return tuple(found.items())


def origins(raw: str) -> tuple[str, ...]:
    origins = tuple(origin.strip().rstrip("/") for origin in raw.split(",") if origin.strip())
    for origin in origins:
        parts = urlsplit(origin)
        if origin != "*" and (parts.scheme not in ("http", "https") or not parts.netloc):
            raise ValueError(f"{origin!r} is not an origin like https://app.example.com or *")
    return origins


def key_prefix(raw: str) -> str:
    if any(ch in raw for ch in "{} \t\n"):
        raise ValueError("must not contain braces or whitespace")
    return raw


def choice(*options: str) -> Callable[[str], str]:
    """One of ``options``, in any letter case, as the option is spelled."""

    def parse(raw: str) -> str:
        for option in options:
            if raw.lower() == option.lower():
                return option
        raise ValueError(f"must be {', '.join(options[:-1])} or {options[-1]}")

    return parse


def log_level(raw: str) -> str:
    level = raw.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level
