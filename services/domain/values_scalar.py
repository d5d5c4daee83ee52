"""Text, number and boolean values (I9)."""

import math
import re
from typing import Final

from .rejections import ValueRejected

# Integers must fit 64 bits: orjson refuses to serialise larger ones, so they would fail
# later, far from the row that brought them.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_NUMBER = re.compile(r"-?(\d+)(\.\d+)?", re.ASCII)
_BOOLEANS: Final = dict.fromkeys(("true", "yes", "y", "1"), True) | dict.fromkeys(
    ("false", "no", "n", "0"), False
)


def parse_string(raw: object) -> str:
    """Any text, kept as typed (it is the customer's); only what PostgreSQL text and JSON
    cannot hold is refused."""
    if not isinstance(raw, str):
        raise ValueRejected("value must be text")
    if "\x00" in raw:
        raise ValueRejected("text must not contain NUL characters")
    if not raw.isascii():
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueRejected("text is not valid Unicode") from None
    return raw


def parse_number(raw: str) -> int | float:
    """Integer or decimal (I9): `1` → 1, `1.01` → 1.01. No `,`, `+`, exponent or inner
    spaces: spreadsheets produce those from numbers the staff did not mean to type."""
    s = raw.strip()
    m = _NUMBER.fullmatch(s)
    if m is None:
        if "," in s:
            raise ValueRejected("number must not have thousands separators, e.g. 1200 not 1,200")
        raise ValueRejected(
            "number must be digits with an optional - and decimal point, e.g. 1 or 1.01"
        )
    if m.group(2) is None:
        if len(m.group(1).lstrip("0")) > 19:  # never int() a huge string
            raise ValueRejected("number is too large")
        return checked_number(int(s))
    return checked_number(float(s))


def checked_number(value: object, reason: str = "value must be a number") -> int | float:
    """A JSON number as stored: 64-bit integer or finite float; `true` is not a number."""
    if isinstance(value, bool):  # bool is an int subclass
        raise ValueRejected(reason)
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueRejected("number is too large")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueRejected("number is too large")
        return value
    raise ValueRejected(reason)


def parse_boolean(raw: str) -> bool:
    """`true yes y 1` / `false no n 0`, any case (I9)."""
    known = _BOOLEANS.get(raw)  # most cells are a word as listed: no stripped, lowered copies
    if known is not None:
        return known
    try:
        return _BOOLEANS[raw.strip().lower()]
    except KeyError:
        raise ValueRejected("boolean must be true, yes, y, 1 or false, no, n, 0") from None
