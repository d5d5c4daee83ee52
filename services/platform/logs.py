"""The one logging setup: JSON lines on stderr (or plain text for a terminal), for the
CLI, the service and the API alike.

A line is one JSON object: `time` (ISO-8601 UTC), `level`, `logger`, `message`, and
`channelId`, `causationId`, `eventId` when the work it reports is about one fact. Those
three come from `extra={"eventId": ...}` on the call, or from `context(...)` around the
work (a contextvar, so every line logged inside, by any module, carries them).

No secret or raw personal data in a log line: call sites log ids, counts and codes,
never values; as a last guard every message and exception text passes through
`scrub`, which masks URL passwords, e-mail addresses and phone-like digit runs.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import traceback
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

import orjson

FIELDS = ("channelId", "causationId", "eventId")
"""Fact ids a line may carry (from `extra` or `context`)."""

_CONTEXT: ContextVar[dict[str, str]] = ContextVar("unifier_log_context", default={})  # noqa: B039 - never mutated

# `scheme://user:password@host`: keep the user, mask the password.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@")
# `password=...` in a DSN's query or a libpq keyword string.
_PASSWORD_KEYWORD = re.compile(r"(?i)(?P<head>\b(?:password|passwd|pwd|secret)\s*[=:]\s*)[^\s&;,]+")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@(?P<domain>[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")
# A phone number: "+" and 8-15 digits (E.164), or a national number "0" and 9-10 more
# (Japan: 090-1234-5678), digits possibly split by blanks, dots or hyphens. Offsets and
# epoch milliseconds do not start with 0 or "+", so they stay readable.
_PHONE = re.compile(r"(?<![\w.+])(?:\+\d(?:[\s.-]?\d){7,14}|0\d(?:[\s.-]?\d){8,9})(?![\w])")


def scrub(text: str) -> str:
    """`text` with passwords, e-mail addresses and phone numbers masked."""
    text = _URL_PASSWORD.sub(r"\g<head>***@", text)
    text = _PASSWORD_KEYWORD.sub(r"\g<head>***", text)
    text = _EMAIL.sub(r"***@\g<domain>", text)
    return _PHONE.sub("<phone>", text)


@contextlib.contextmanager
def context(**ids: str | None) -> Iterator[None]:
    """Every line logged inside carries these ids (`channelId=`, `causationId=`, `eventId=`)."""
    unknown = set(ids) - set(FIELDS)
    if unknown:
        raise ValueError(f"log context takes {FIELDS}, not {sorted(unknown)}")
    token = _CONTEXT.set({**_CONTEXT.get(), **{k: v for k, v in ids.items() if v is not None}})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module's docstring for the fields)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        line.update(_CONTEXT.get())
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = str(value)
        if record.exc_info and record.exc_info[0] is not None:
            kind, err, tb = record.exc_info
            line["error"] = {
                "type": kind.__name__,
                "message": scrub(str(err)),
                "stack": scrub("".join(traceback.format_tb(tb))),
            }
        return orjson.dumps(line).decode()


class TextFormatter(logging.Formatter):
    """The human-readable form (`UNIFIER_LOG_FORMAT=text`), scrubbed the same way."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        ids = {**_CONTEXT.get(), **{n: str(getattr(record, n)) for n in FIELDS if getattr(record, n, None) is not None}}
        text = super().format(record)
        if ids:
            text += " [" + " ".join(f"{k}={v}" for k, v in ids.items()) + "]"
        return scrub(text)


def setup(level: str | int, fmt: str = "json", stream: IO[str] | None = None) -> logging.Handler:
    """Route every logger of the process to one handler on `stream` (stderr), replacing
    handlers set before. Returns the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
