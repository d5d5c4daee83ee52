"""List, list-of-number and tag values (I9), written as JSON arrays in a cell."""

import re

import orjson

from .rejections import ValueRejected
from .values_scalar import checked_number, parse_string

LIST_REASON = 'list must be a JSON array of strings, e.g. ["a","b"]'
NUMBERS_REASON = "list of numbers must be a JSON array of numbers, e.g. [1,2]"
# Any whitespace counts as a space: a full-width space (U+3000) is as invisible in a tag.
_TAG_FORBIDDEN = re.compile(r"[.$\\\s]")


def _json_array(raw: str, reason: str) -> list[object]:
    try:
        items = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValueRejected(reason) from None
    if not isinstance(items, list):
        raise ValueRejected(reason)
    return items


def checked_strings(items: object, reason: str = LIST_REASON) -> list[str]:
    """A decoded JSON value that must be a list of storable strings."""
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise ValueRejected(reason)
    return [parse_string(item) for item in items]


def checked_numbers(items: object, reason: str = NUMBERS_REASON) -> list[int | float]:
    """A decoded JSON value that must be a list of numbers (booleans are not)."""
    if not isinstance(items, list):
        raise ValueRejected(reason)
    return [checked_number(item, reason) for item in items]


def parse_list(raw: str) -> list[str]:
    """`["a","b"]` → ["a", "b"]; order and duplicates are kept, since I8 appends it."""
    return checked_strings(_json_array(raw, LIST_REASON))


def parse_list_of_number(raw: str) -> list[int | float]:
    """`[1,2]` → [1, 2]."""
    return checked_numbers(_json_array(raw, NUMBERS_REASON))


def parse_tags(raw: str) -> list[str]:
    """A list whose items have at most two levels split by one `/`, with no `/` at either
    end and none of `. $ \\` or spaces (I9). Duplicates are dropped: a user has a tag or
    not."""
    tags = parse_list(raw)
    for tag in tags:
        if not tag:
            raise ValueRejected("tag must not be empty")
        if _TAG_FORBIDDEN.search(tag):
            raise ValueRejected("tag must not contain . $ \\ or spaces")
        if tag[0] == "/" or tag[-1] == "/":
            raise ValueRejected("tag must not start or end with /")
        if tag.count("/") > 1:
            raise ValueRejected('tag may use / only once, for two levels, e.g. "basic/step1"')
    return list(dict.fromkeys(tags))
