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

from services.domain.values import Rejected
from tests.oracle.user import User

MAX_USER_CHARS = 128 * 1024
_ITEM = 8  # quotes, separators and the like per stored item
_SCALAR = 24  # a number, boolean, null or time as JSON text, at most


def user_chars(user: User) -> int:
    """The size of `user` as counted against MAX_USER_CHARS."""
    n = 1024  # the fixed fields (ids, flags, times, counts)
    for key, value in user.fields.items():
        n += len(key) + _chars(value.v) + 3 * _SCALAR
    for many in (user.tags, user.import_tags, user.delivered, user.merged_user_ids, user.offered, user.mobile_veils):
        for item in many:
            n += len(item) + _ITEM
    for veil in user.veils:
        n += len(veil) + _SCALAR
    for platform in (user.web, user.mobile):
        for key, text in platform.device.items():
            n += len(key) + _chars(text)
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
