"""Trace context from outside, checked before OpenTelemetry reads it: a ``traceparent`` that is
not the W3C form, or a ``tracestate`` over the W3C bounds (512 characters, 32 members, each
``key=value`` in the W3C alphabet), is dropped and counted, and logged at most once a minute,
never once per request or message."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

# W3C Trace Context: version 00 is exactly this; a later version starts with it and may add
# fields after a dash. Version ff, and all-zero trace or span ids, are invalid.
_TRACEPARENT = re.compile(
    r"(?!ff)(?P<version>[0-9a-f]{2})-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}"
    r"(?P<rest>-[0-9A-Za-z._-]*)?"
)
_TRACESTATE_MEMBER = re.compile(
    r"(?:[a-z0-9][a-z0-9_*/-]{0,240}@[a-z][a-z0-9_*/-]{0,13}|[a-z][a-z0-9_*/-]{0,255})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)
MAX_TRACE_HEADER = 512
MAX_TRACESTATE_MEMBERS = 32
REFUSAL_LOG_SECONDS = 60.0


log = logging.getLogger("operations.tracing")

_on_refused: Callable[[str], None] | None = None
_refused_since_log = 0
_last_refusal_log = float("-inf")


def count_refusals(hook: Callable[[str], None] | None) -> None:
    """``hook(source)`` is called for each refused trace context (``http`` or ``amqp``)."""
    global _on_refused
    _on_refused = hook


def checked(traceparent: str | None, tracestate: str | None, source: str) -> dict[str, str] | None:
    """The W3C headers worth passing to OpenTelemetry, or None: a malformed or oversized
    ``traceparent`` drops both, a bad ``tracestate`` only itself. Each drop is counted."""
    if traceparent is None:
        return None
    match = _TRACEPARENT.fullmatch(traceparent) if len(traceparent) <= MAX_TRACE_HEADER else None
    if match is None or (match["version"] == "00" and match["rest"]):
        _refused(source, "traceparent")
        return None
    headers = {"traceparent": traceparent}
    if tracestate is not None:
        if _valid_tracestate(tracestate):
            headers["tracestate"] = tracestate
        else:
            _refused(source, "tracestate")
    return headers


def _valid_tracestate(value: str) -> bool:
    if len(value) > MAX_TRACE_HEADER:
        return False
    members = [member.strip() for member in value.split(",")]
    members = [member for member in members if member]
    return len(members) <= MAX_TRACESTATE_MEMBERS and all(
        _TRACESTATE_MEMBER.fullmatch(member) for member in members
    )


def _refused(source: str, header: str) -> None:
    global _refused_since_log, _last_refusal_log
    if _on_refused is not None:
        _on_refused(source)
    _refused_since_log += 1
    now = time.monotonic()
    if now - _last_refusal_log >= REFUSAL_LOG_SECONDS:
        log.warning(
            "ignored a malformed or oversized %s header from %s (%d ignored since the last such"
            " line; counted in operations_trace_context_refusals_total)",
            header,
            source,
            _refused_since_log,
        )
        _refused_since_log, _last_refusal_log = 0, now


def reset() -> None:
    """Forgets the refusals logged so far: the next one is logged at once."""
    global _refused_since_log, _last_refusal_log
    _refused_since_log, _last_refusal_log = 0, float("-inf")
