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

from typing import Any

from .user import User
from .values import Rejected

MAX_USER_CHARS = 128 * 1024
_ITEM = 8  # quotes, separators and the like per stored item
_SCALAR = 24  # a number, boolean, null or time as JSON text, at most


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
    for many in (user.tags, user.import_tags, user.delivered, user.merged_user_ids, user.offered, user.mobile_veils):
        if many:
            n += _ITEM * len(many)
            for item in many:
                n += len(item)
    veils = user.veils
    if veils:
        n += _SCALAR * len(veils)
        for veil in veils:
            n += len(veil)
    for platform in (user.web, user.mobile):
        device = platform.device
        if device:
            for key, text in device.items():
                n += len(key) + (len(text) + _ITEM if type(text) is str else _chars(text))
    for label in (user.member_id, user.language, user.city, user.country):
        if label is not None:
            n += len(label)
    return n


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
