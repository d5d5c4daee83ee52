"""Profile data entering a user (P1–P4, C2, C4, G1)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from .channel import ChannelSettings
from .hygiene import clean_email, clean_mobile
from .priority import update_wins
from .user import EMAIL, MOBILE, User, Value, new_value
from .values import Rejected, coerce_sdk_value

PREFIX: Final = "profile."

# P1: set by the service only; no fact may write them through `profile`.
SYSTEM_KEYS: Final = frozenset(
    {"id", "createdAt", "updatedAt", "lastSeenAt", "sessionsCount", "member", "web", "mobile"}
)


BUILTIN_TYPES: dict[str, str] = {
    "profile.name": "string",
    "profile.description": "string",
    "profile.lastCheckoutCompletedAt": "date",
    "profile.referrer": "string",
    **{f"profile.utm{part}": "string" for part in ("Source", "Medium", "Campaign", "Content", "Term")},
}
"""P2's built-in profile keys and their types (the contacts are parsed as contacts)."""

# What a site, staff or the API may send for the built-in keys. The order time is sent
# as an epoch-ms timestamp (seed 001: "Date … timestampを millisecond単位形式で"), so any
# instant is accepted there, and a `YYYY-MM-DD` date as its UTC midnight, as imported.
_SENT_BUILTIN_TYPES: Final = {**BUILTIN_TYPES, "profile.lastCheckoutCompletedAt": "datetime"}


def profile_values(
    raw: Mapping[str, Any] | None, settings: ChannelSettings, *, qualified: bool, member: bool, at: int
) -> dict[str, Value]:
    """Validate a fact's `profile` {key: value} into provenance-carrying values keyed
    "profile.<key>". Contacts are cleaned (G1, U9); built-in and declared keys are
    coerced to their type (P2) on every path — SDK, staff, API — as an import's cells are.
    Any bad value rejects the whole fact, so nothing is half-applied."""
    out: dict[str, Value] = {}
    for key, value in (raw or {}).items():
        full = PREFIX + key
        if value is not None:
            if full == EMAIL:
                value = clean_email(value) if isinstance(value, str) else _bad(key, "must be a string")
            elif full == MOBILE:
                value = clean_mobile(value) if isinstance(value, str) else _bad(key, "must be a string")
            elif (declared := _SENT_BUILTIN_TYPES.get(full) or settings.field_types.get(full)) is not None:
                try:
                    value = coerce_sdk_value(declared, value)
                except Rejected as err:
                    raise Rejected("invalid_value", f"profile.{key}: {err.reason}") from None
        out[full] = new_value(value, qualified, member, at)
    return out


def _bad(key: str, reason: str) -> Any:
    raise Rejected("invalid_value", f"profile.{key}: {reason}")


def set_values(user: User, values: dict[str, Value]) -> None:
    """Apply values to a working copy; each key decided by provenance (C4, P3). A dict,
    not any Mapping: compiled, its items are then read natively (a Mapping's `items()`
    is a generic method call and iteration; issue 14, session 15)."""
    for key, new in values.items():
        if update_wins(key, new, user.fields.get(key)):
            user.fields[key] = new


FLAG_ATTRS = {"unsubscribeEmail": "unsubscribe_email", "unsubscribeTexting": "unsubscribe_texting", "hasPushToken": "has_push_token"}
"""P1: the editable flags outside `profile`, by their key and User attribute."""


def set_flags(user: User, msg: Any) -> None:
    """P1: a staff or API command sets the flags it names; absent (null) keeps the value."""
    for key, attr in FLAG_ATTRS.items():
        value = getattr(msg, key)
        if value is not None:
            setattr(user, attr, value)


def has_contact(user: User) -> bool:
    return user.value(EMAIL) is not None or user.value(MOBILE) is not None  # CONTACT_KEYS, by name


def promote(user: User) -> None:
    """C2: an anonymous user with contact data is a lead. (Chats promote explicitly.)"""
    if user.type == "anonymous" and has_contact(user):
        user.type = "lead"
