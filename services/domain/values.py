"""Value parsers for profile keys (P2) and import cells (I9), shared by the SDK and the
CSV importer so that a value means the same thing whichever way it arrived.

Each parser takes the raw text and returns the stored value, or raises `ValueRejected`
whose reason a staff member can act on (the importer adds the column name, I9). They are
pure and cheap — precompiled patterns, no library call for obviously malformed input —
because an import runs them on millions of cells. Surrounding spaces are ignored for
every type except `string`, whose text is the customer's and is kept as typed.

This module is the one to import; the parsers live in `values_*` by family.
"""

from collections.abc import Callable
from typing import TypeVar

from .rejections import Rejected, ValueRejected
from .values_contact import normalize_email, normalize_mobile
from .values_list import (
    checked_numbers,
    checked_strings,
    parse_list,
    parse_list_of_number,
    parse_tags,
)
from .values_scalar import (
    checked_number,
    parse_boolean,
    parse_number,
    parse_string,
)
from .values_time import MS_PER_DAY, checked_epoch_ms, parse_date, parse_datetime

# fmt: off
__all__ = [
    "PARSERS", "Rejected", "ValueRejected", "coerce_sdk_value", "normalize_email",
    "normalize_mobile", "parse_boolean", "parse_date", "parse_datetime", "parse_list",
    "parse_list_of_number", "parse_number", "parse_string", "parse_tags", "parse_typed",
]
# fmt: on

_F = TypeVar("_F")

PARSERS: dict[str, Callable[[str], object]] = {
    "string": parse_string,
    "number": parse_number,
    "boolean": parse_boolean,
    "date": parse_date,
    "datetime": parse_datetime,
    "list": parse_list,
    "listOfNumber": parse_list_of_number,
}


def parse_typed(type_name: str, raw: str) -> object:
    """Parse a cell for a key of profile type `type_name` (P2)."""
    return _lookup(PARSERS, type_name)(raw)


def coerce_sdk_value(type_name: str, value: object) -> object:
    """Check a JSON value from an SDK/API command against its key's type (P2).

    JSON types are trusted and text is parsed as an import cell would be; nothing else is
    converted (a number sent for a string key is a client bug worth surfacing). `None` is
    refused: clearing a key is the caller's decision, not a value.
    """
    return _lookup(_SDK_COERCERS, type_name)(value)


def _sdk_number(value: object) -> int | float:
    return parse_number(value) if isinstance(value, str) else checked_number(value)


def _sdk_boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return parse_boolean(value)
    raise ValueRejected("value must be true or false")


def _sdk_date(value: object) -> int:
    if isinstance(value, str):
        return parse_date(value)
    ms = checked_epoch_ms(value)
    if ms % MS_PER_DAY:
        raise ValueRejected("date must be YYYY-MM-DD or epoch milliseconds at UTC midnight")
    return ms


def _sdk_datetime(value: object) -> int:
    return parse_datetime(value) if isinstance(value, str) else checked_epoch_ms(value)


_SDK_COERCERS: dict[str, Callable[[object], object]] = {
    "string": parse_string,  # it checks the type itself
    "number": _sdk_number,
    "boolean": _sdk_boolean,
    "date": _sdk_date,
    "datetime": _sdk_datetime,
    "list": lambda value: checked_strings(value, "value must be a list of texts"),
    "listOfNumber": lambda value: checked_numbers(value, "value must be a list of numbers"),
}


def _lookup(table: dict[str, _F], type_name: str) -> _F:
    try:
        return table[type_name]
    except KeyError:
        # A mapping bug, not a bad value: no staff member can fix it by editing the cell.
        raise ValueError(f"unknown profile type {type_name!r}") from None
