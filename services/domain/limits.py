"""How large one user may grow (docs/contract.md, "Limits").

Every inbound message is bounded at the door (contracts/inbound.py), but a user gathers
facts without end: veils, profile keys, appended list values (I8), campaigns, merged ids.
Its `user-changed` message must still fit the broker's message limit (1 MiB by default)
and its row stay cheap to read and write. So a fact that would grow a user past
MAX_USER_CHARS is rejected (`user_too_large`) and changes nothing.

The size is counted in characters of the user's keys and values, not in bytes of one
encoding: it is a pure function of the state, the same live and in a rebuild, and cheap
(no serialisation per fact). UTF-8 takes at most 4 bytes a character, so 128 Ki
characters stay well inside 1 MiB with the message's own fields.
"""

from __future__ import annotations

from typing import Any, Final

from .user import User
from .values import Rejected

MAX_USER_CHARS = 128 * 1024
_ITEM: Final = 8  # quotes, separators and the like per stored item
_SCALAR: Final = 24  # a number, boolean, null or time as JSON text, at most


def user_chars(user: User) -> int:
    """The size of `user` as counted against MAX_USER_CHARS.

    Plain loops: compiled (services/compiled_core.py), each `len` is a native call where
    `sum(map(len, ...))` makes two generic calls a container (~2 µs → ~0.6 µs a user of
    the SDK mix; interpreted, within ±15 % of the map form). Every fact counts each user
    it changes. The same number as the item-by-item definition, which
    tests/oracle/limits.py keeps."""
    n = 1024  # the fixed fields (ids, flags, times, counts)
    fields = user.fields
    if fields:
        n += 3 * _SCALAR * len(fields)
        for key, value in fields.items():
            v = value.v
            n += len(key) + (len(v) + _ITEM if type(v) is str else _chars(v))
    # Each container by name, not by looping over a tuple of them: compiled, a loop over
    # a tuple built for it is generic iteration (~1 k instructions a user; issue 14,
    # session 15).
    n += _items(user.tags) + _items(user.import_tags) + _items(user.delivered)
    n += _items(user.merged_user_ids) + _items(user.offered) + _items(user.mobile_veils)
    veils = user.veils
    if veils:
        n += _SCALAR * len(veils)
        for veil in veils:
            n += len(veil)
    n += _device_chars(user.web.device) + _device_chars(user.mobile.device)
    n += _label(user.member_id) + _label(user.language) + _label(user.city) + _label(user.country)
    return n


def _items(many: list[str]) -> int:
    """A list of text: its items and their separators."""
    if not many:
        return 0
    n = _ITEM * len(many)
    for item in many:
        n += len(item)
    return n


def _device_chars(device: dict[str, str]) -> int:
    n = 0
    for key, text in device.items():
        n += len(key) + (len(text) + _ITEM if type(text) is str else _chars(text))
    return n


def _label(label: str | None) -> int:
    return 0 if label is None else len(label)


def _chars(value: Any) -> int:
    if type(value) is str:
        return len(value) + _ITEM
    if type(value) is list:
        return sum(_chars(v) for v in value) + _ITEM
    return _SCALAR


def check_user_size(before: User | None, after: User | None) -> None:
    """Reject the fact when it grows `after` past the limit. A user already past it (a
    limit lowered, a state from before limits) may still shrink or stay as it is."""
    if after is None:
        return
    size = user_chars(after)
    if size <= MAX_USER_CHARS:
        return
    if before is not None and size <= user_chars(before):
        return
    raise Rejected(
        "user_too_large",
        f"user {after.id} would hold {size} characters of data; the limit is {MAX_USER_CHARS}",
    )
