"""What a fact changed, as `user-changed` messages (docs/contract.md).

Only leads and members are published (C1); their first message carries everything
gathered while anonymous. Activity inside one session (lastSeenAt moving) is not a
visible change; a new session is (sessionsCount moves). Versions grow by one per
message of a user.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from tests.oracle.ids import outbound_event_id
from tests.oracle.sessions import DEVICE_KEYS
from tests.oracle.user import CONTACT_KEYS, Platform, User, Value
from tests.oracle.view import user_view

# Keys whose change alone is activity within a session, not a visible change.
_QUIET = frozenset({"lastSeenAt", "web.lastSeenAt", "mobile.lastSeenAt", "updatedAt"})


@dataclass(frozen=True, slots=True)
class Publication:
    """One outbound message: `value is None` is the tombstone after merged/deleted."""

    key: str
    value: dict[str, Any] | None


def _flat(view: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, val in view.items():
        if key in ("web", "mobile", "profile") and isinstance(val, dict):
            for sub, subval in val.items():
                out[f"{key}.{sub}"] = subval
        else:
            out[key] = val
    return out


def changed_keys(before: User | None, after: User) -> list[str]:
    """The reference definition of `changedKeys`: the flattened views compared key by key."""
    old = _flat(user_view(before)) if before is not None else {}
    new = _flat(user_view(after))
    return sorted(k for k in old.keys() | new.keys() if k not in _QUIET and old.get(k) != new.get(k))


# View key of each plain attribute `user_view` shows as is (quiet ones left out).
_PLAIN = (
    ("id", "id"), ("channel_id", "channelId"), ("type", "type"), ("member_id", "memberId"),
    ("unsubscribe_email", "unsubscribeEmail"), ("unsubscribe_texting", "unsubscribeTexting"),
    ("blocked", "blocked"), ("masked", "masked"), ("language", "language"), ("city", "city"),
    ("country", "country"), ("sessions_count", "sessionsCount"), ("created_at", "createdAt"),
)
# ... and of each list attribute (the view copies it into a list).
_LISTS = (
    ("tags", "tags"), ("import_tags", "userImportTags"), ("delivered", "deliveredCampaigns"),
    ("merged_user_ids", "mergedUserIds"),
)


def _diff(before: User, after: User) -> list[str]:
    """`changed_keys(before, after)` for two users, from their attributes: building and
    flattening both views cost more than the rest of a typical fact. Masking nulls whole
    parts of the view, so a masked user (rare) takes the reference path.
    tests/unit/test_publication.py holds the two equal."""
    if before.masked or after.masked:
        return changed_keys(before, after)
    keys = [key for attr, key in _PLAIN if getattr(before, attr) != getattr(after, attr)]
    for attr, key in _LISTS:
        old, new = getattr(before, attr), getattr(after, attr)
        if old != new and list(old) != list(new):
            keys.append(key)
    if before.fields != after.fields:
        keys.extend(_field_keys(before.fields, after.fields))
    keys.extend(_platform_keys("web", before.web, after.web))
    keys.extend(_platform_keys("mobile", before.mobile, after.mobile))
    return sorted(keys)


def _field_keys(old: dict[str, Value], new: dict[str, Value]) -> list[str]:
    """`name`, `profile.*` (the view shows a profile key's value, absent when None) and
    `qualified` (the contact keys holding a qualified value)."""
    keys = []
    for key in old.keys() | new.keys():
        if key == "name" or key.startswith("profile."):
            o, n = old.get(key), new.get(key)
            if (None if o is None else o.v) != (None if n is None else n.v):
                keys.append(key)
    if _qualified(old) != _qualified(new):
        keys.append("qualified")
    return keys


def _qualified(fields: dict[str, Value]) -> list[str]:
    return [key for key in CONTACT_KEYS if (val := fields.get(key)) is not None and val.v is not None and val.q]


def _platform_keys(name: str, old: Platform, new: Platform) -> list[str]:
    keys = [f"{name}.sessionsCount"] if old.sessions_count != new.sessions_count else []
    if old.device != new.device:
        keys.extend(f"{name}.{k}" for k in DEVICE_KEYS if old.device.get(k) != new.device.get(k))
    return keys


def _visible(u: User) -> tuple[Any, ...]:
    """Everything `user_view` reads except the quiet keys: equal tuples mean no changed
    keys (an exact pre-check; unequal ones still go through the view diff)."""
    return (
        u.type, u.masked, u.member_id, u.fields, u.tags, u.import_tags, u.unsubscribe_email,
        u.unsubscribe_texting, u.blocked, u.language, u.city, u.country, u.sessions_count,
        u.created_at, u.web.sessions_count, u.web.device, u.mobile.sessions_count,
        u.mobile.device, u.delivered, u.merged_user_ids, u.id, u.channel_id,
    )


def _published(user: User | None) -> bool:
    return user is not None and user.version > 0


def publish(
    before: User | None, after: User, causation_id: str, at: int, *, messages: bool = True,
) -> tuple[User, list[Publication]]:
    """The messages that the change before → after makes visible, and `after` with its
    version (and updatedAt, the time of the last visible change) moved on.
    `messages=False` (a rebuild, whose messages were published when they happened)
    moves the version and updatedAt exactly the same and builds no message."""
    key = f"{after.channel_id}:{after.id}"
    if after.merged_into is not None or after.deleted:
        if not _published(before) or (before is not None and not before.alive):
            return after, []
        change = "merged" if after.merged_into is not None else "deleted"
        version = after.version + 1
        if not messages:
            return replace(after, version=version), []
        msg = _message(after, version, change, [], causation_id, at, None)
        msg["mergedInto"] = after.merged_into
        return replace(after, version=version), [Publication(key, msg), Publication(key, None)]

    if after.type == "anonymous":
        return after, []

    first = not _published(before)
    view: dict[str, Any] | None = None
    keys: list[str] = []
    if first or before is None:
        if messages:
            view = user_view(after)  # built once: for the keys and, with updatedAt moved, the message
            keys = sorted(k for k, v in _flat(view).items() if k not in _QUIET and v is not None)
    else:
        if _visible(before) == _visible(after):
            return after, []  # e.g. another boot in the same session: only quiet keys moved
        keys = _diff(before, after)
        if not keys:
            return after, []
        if messages:
            view = user_view(after)
    if first:
        change = "created"
    elif before is not None and before.blocked != after.blocked:
        change = "blocked" if after.blocked else "unblocked"
    else:
        change = "updated"
    version = after.version + 1
    if after is before:  # a stored instance is never changed in place
        after = replace(after, version=version, updated_at=max(after.updated_at, at))
    else:  # the fact's own working copy (replace() of a 34-field user costs ~8 µs)
        after.version, after.updated_at = version, max(after.updated_at, at)
    if view is None:
        return after, []
    view["updatedAt"] = after.updated_at  # the only view key the two replaced fields feed
    return after, [Publication(key, _message(after, version, change, keys, causation_id, at, view))]


def _message(
    user: User, version: int, change: str, keys: list[str], causation_id: str, at: int,
    view: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "eventId": outbound_event_id(user.id, version),
        "channelId": user.channel_id,
        "userId": user.id,
        "version": version,
        "change": change,
        "changedKeys": keys,
        "causationId": causation_id,
        "occurredAt": at,
        "mergedInto": None,
        "user": view,
    }
