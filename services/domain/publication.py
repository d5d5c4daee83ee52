"""What a fact changed, as `user-changed` messages (docs/contract.md).

Only leads and members are published (C1); their first message carries everything
gathered while anonymous. Activity inside one session (lastSeenAt moving) is not a
visible change; a new session is (sessionsCount moves). Versions grow by one per
message of a user.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final

import orjson

from .ids import outbound_event_id
from .sessions import DEVICE_KEYS
from .user import CONTACT_KEYS, Platform, User, Value
from .view import user_view

# Keys whose change alone is activity within a session, not a visible change.
_QUIET = frozenset({"lastSeenAt", "web.lastSeenAt", "mobile.lastSeenAt", "updatedAt"})


@dataclass(frozen=True, slots=True)
class Publication:
    """One outbound message, as the bytes sent (`body`, orjson: built once, by `publish`,
    and copied to the outbox as they are). `body is None` is the tombstone after
    merged/deleted."""

    key: str
    body: bytes | None

    # Written out so mypyc compiles it (see core.Fact.__init__).
    def __init__(self, key: str, body: bytes | None) -> None:
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "body", body)

    @property
    def value(self) -> dict[str, Any] | None:
        """The message decoded (tests and tools read it; the projection sends `body`)."""
        return None if self.body is None else orjson.loads(self.body)  # type: ignore[no-any-return]


def _flat(view: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, val in view.items():
        if key in ("web", "mobile", "profile") and isinstance(val, dict):
            for sub, subval in val.items():
                out[f"{key}.{sub}"] = subval
        else:
            out[key] = val
    return out


_PROFILE: Final = "profile."
# Each platform's name, its device keys flattened (`web.os`) and its sessionsCount's.
_PLATFORM_FLAT = tuple((p, {sub: f"{p}.{sub}" for sub in DEVICE_KEYS}, f"{p}.sessionsCount") for p in ("web", "mobile"))
# View keys a first message never lists: the quiet ones and the three objects, whose
# own keys it lists flattened.
_NOT_LISTED = _QUIET | {"profile", "web", "mobile"}


def _first_keys(user: User, view: dict[str, Any]) -> list[str]:
    """`changedKeys` of a first message: every flattened key with a value, but the quiet
    ones — `sorted(k for k, v in _flat(view).items() if k not in _QUIET and v is not None)`
    for the `user_view` of `user` (a profile holds no null; a platform shows its
    sessionsCount and the device keys of DEVICE_KEYS), without flattening: every
    `created` message (every import row, every new lead) lists its keys.
    The definition the C writer's first keys (`_native.c` `write_first_keys`, from the
    user, without its view) are held equal to by tests/unit/test_publication.py."""
    keys = [key for key, val in view.items() if val is not None and key not in _NOT_LISTED]
    profile = view["profile"]
    if profile:
        keys.extend([_PROFILE + sub for sub in profile])
    for name, flat, sessions in _PLATFORM_FLAT:
        platform: Platform = getattr(user, name)
        if platform.sessions_count is not None:
            keys.append(sessions)
        if platform.device:  # usually a few keys, or none (an imported member)
            keys.extend([flat[k] for k, v in platform.device.items() if v is not None and k in flat])
    keys.sort()
    return keys


def changed_keys(before: User | None, after: User) -> list[str]:
    """The reference definition of `changedKeys`: the flattened views compared key by key."""
    old = _flat(user_view(before)) if before is not None else {}
    new = _flat(user_view(after))
    return sorted(k for k in old.keys() | new.keys() if k not in _QUIET and old.get(k) != new.get(k))


# Each platform's device keys and their flattened names, in sorted order.
_WEB_SORTED: Final = tuple((k, f"web.{k}") for k in sorted(DEVICE_KEYS))
_MOBILE_SORTED: Final = tuple((k, f"mobile.{k}") for k in sorted(DEVICE_KEYS))


def _diff(before: User, after: User) -> list[str]:
    """`changed_keys(before, after)` for two users, from their attributes: building and
    flattening both views cost more than the rest of a typical fact. Attribute by
    attribute, each key appended in the sorted order `changed_keys` returns (only the
    fields' own keys, `name` and `profile.*`, are sorted among themselves): no tuple of
    the visible attributes built per user and compared first (the pre-check `_visible`
    was), no attrgetter tuples, no sort (issue 14, session 17). Empty when nothing
    visible moved. Masking nulls whole parts of the view, so a masked user (rare) takes
    the reference path. tests/unit/test_publication.py holds it equal to
    `changed_keys` and to the definition before session 17."""
    if before.masked or after.masked:
        return changed_keys(before, after)
    keys: list[str] = []
    if before.blocked != after.blocked:
        keys.append("blocked")
    if before.channel_id != after.channel_id:
        keys.append("channelId")
    if before.city != after.city:
        keys.append("city")
    if before.country != after.country:
        keys.append("country")
    if before.created_at != after.created_at:
        keys.append("createdAt")
    if _list_moved(before.delivered, after.delivered):
        keys.append("deliveredCampaigns")
    if before.id != after.id:
        keys.append("id")
    if before.language != after.language:
        keys.append("language")
    # `masked`: neither is masked here.
    if before.member_id != after.member_id:
        keys.append("memberId")
    if _list_moved(before.merged_user_ids, after.merged_user_ids):
        keys.append("mergedUserIds")
    _platform_diff(keys, before.mobile, after.mobile, _MOBILE_SORTED, "mobile.sessionsCount")
    old, new = before.fields, after.fields
    if old is not new and old != new:
        _field_diff(keys, old, new)
    if before.sessions_count != after.sessions_count:
        keys.append("sessionsCount")
    if _list_moved(before.tags, after.tags):
        keys.append("tags")
    if before.type != after.type:
        keys.append("type")
    if before.unsubscribe_email != after.unsubscribe_email:
        keys.append("unsubscribeEmail")
    if before.unsubscribe_texting != after.unsubscribe_texting:
        keys.append("unsubscribeTexting")
    if _list_moved(before.import_tags, after.import_tags):
        keys.append("userImportTags")
    _platform_diff(keys, before.web, after.web, _WEB_SORTED, "web.sessionsCount")
    return keys


def _list_moved(old: list[str], new: list[str]) -> bool:
    """The view shows a list attribute copied into a list: a tuple equal item by item
    is no change. Lists are never changed in place (user.py): the same list is equal."""
    return old is not new and old != new and list(old) != list(new)


def _field_diff(keys: list[str], old: dict[str, Value], new: dict[str, Value]) -> None:
    """Appends `name` and the `profile.*` keys whose shown value (absent: None) moved,
    sorted (they sort after `mobile.*` and before `qualified`), then `qualified` if the
    contact keys holding a qualified value moved."""
    moved: list[str] = []
    for key, val in new.items():
        if key == "name" or key.startswith(_PROFILE):
            was = old.get(key)
            if (None if was is None else was.v) != val.v:
                moved.append(key)
    for key, val in old.items():
        if (key == "name" or key.startswith(_PROFILE)) and key not in new and val.v is not None:
            moved.append(key)
    if len(moved) > 1:
        moved.sort()
    keys.extend(moved)
    if _qualified(old) != _qualified(new):
        keys.append("qualified")


def _qualified(fields: dict[str, Value]) -> list[str]:
    return [key for key in CONTACT_KEYS if (val := fields.get(key)) is not None and val.v is not None and val.q]


def _platform_diff(keys: list[str], old: Platform, new: Platform, flat: tuple[tuple[str, str], ...], sessions: str) -> None:
    """Appends a platform's flattened device keys whose value moved, in sorted order,
    then its sessionsCount (which sorts after every device key) if it moved."""
    before, after = old.device, new.device
    if before is not after and before != after:
        for key, dotted in flat:
            if before.get(key) != after.get(key):
                keys.append(dotted)
    if old.sessions_count != new.sessions_count:
        keys.append(sessions)


def _moves(before: User, after: User) -> bool:
    """`bool(_diff(before, after))`, decided at the first visible difference: all that a
    rebuild (`publish(..., messages=False)`) needs of a change is whether the version
    moves. The pre-check's two tuples of visible attributes and `_diff`'s key list (as
    they were then: its attrgetters, the fields' key union, the platforms' generators,
    the sort) cost ~40 k instructions for a merging login, whose mergedUserIds always
    moves (issue 14, session 14). A masked
    user (rare) takes the reference path, as in `_diff`. tests/unit/test_publication.py
    holds the two equal, and `publish` with and without messages."""
    if before.masked or after.masked:
        return bool(changed_keys(before, after))
    # The lists first: a merge names its source in mergedUserIds.
    old_list, new_list = before.merged_user_ids, after.merged_user_ids
    if old_list != new_list and list(old_list) != list(new_list):
        return True
    if (
        before.type != after.type or before.member_id != after.member_id
        or before.sessions_count != after.sessions_count or before.id != after.id
        or before.channel_id != after.channel_id or before.blocked != after.blocked
        or before.unsubscribe_email != after.unsubscribe_email
        or before.unsubscribe_texting != after.unsubscribe_texting or before.language != after.language
        or before.city != after.city or before.country != after.country or before.created_at != after.created_at
    ):
        return True
    for old_list, new_list in (
        (before.tags, after.tags), (before.import_tags, after.import_tags), (before.delivered, after.delivered),
    ):
        if old_list != new_list and list(old_list) != list(new_list):
            return True
    if _platform_moves(before.web, after.web) or _platform_moves(before.mobile, after.mobile):
        return True
    old, new = before.fields, after.fields
    if old == new:
        return False
    for key, val in new.items():  # `name` and `profile.*`: the value shown (absent: None)
        if key == "name" or key.startswith(_PROFILE):
            was = old.get(key)
            if (None if was is None else was.v) != val.v:
                return True
    for key, val in old.items():
        if (key == "name" or key.startswith(_PROFILE)) and key not in new and val.v is not None:
            return True
    return _qualified(old) != _qualified(new)


def _platform_moves(old: Platform, new: Platform) -> bool:
    """`bool(_platform_keys(name, old, new))`."""
    if old.sessions_count != new.sessions_count:
        return True
    before, after = old.device, new.device
    if before == after:
        return False
    for key in DEVICE_KEYS:
        if before.get(key) != after.get(key):
            return True
    return False


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
        # The husk is the fact's own new state (a merge's retired source, an erasure's
        # husk): its version moves in place, as a working copy's below (replace() of a
        # 34-field user cost ~8 µs of every merge of a published lead).
        if after is before:  # a stored instance is never changed in place
            after = replace(after, version=version)
        else:
            after.version = version
        if not messages:
            return after, []
        msg = _message(after, version, change, [], causation_id, at, None)
        msg["mergedInto"] = after.merged_into
        return after, [Publication(key, _dumps(msg)), Publication(key, None)]

    if after.type == "anonymous":
        return after, []

    first = not _published(before)
    keys: list[str] | None = None  # a first message's: every key it carries, from its view
    if not first:
        assert before is not None
        if not messages:  # a rebuild: whether the version moves, not which keys changed
            if not _moves(before, after):
                return after, []
        else:
            keys = _diff(before, after)
            if not keys:
                return after, []  # e.g. another boot in the same session: only quiet keys moved
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
    if not messages:
        return after, []
    return after, [Publication(key, message_body(after, version, change, keys, causation_id, at))]


_dumps = orjson.dumps


# -- the message's bytes -------------------------------------------------------------
# The C writer built with the compiled core (services/domain/_native.c, `EXTENSIONS` of
# services/compiled_core.py) writes the message straight from the user's attributes:
# `orjson.dumps(_message(..., user_view(user)))` built the view's dicts (~40 keys) only
# for orjson to walk them (a third of a publishing fact, issue 14 session 13), and the
# msgspec structs that replaced them still cost ~29 k instructions a `created` (session
# 19: ~3 k). Found on the package's path only when the process runs the compiled core;
# interpreted, the reference writes.
try:
    from ._native import message as _native_message
except ImportError:
    _native_message = None  # type: ignore[assignment]
_write_message: Final = _native_message  # compiled, a static read (not the module's dict)


def message_body(user: User, version: int, change: str, keys: list[str] | None, causation_id: str, at: int) -> bytes:
    """The bytes of the `user-changed` message of `user` at `version` (its view as it is
    now): `orjson.dumps(_message(...))`, with `changedKeys` `keys`, or for a first
    message (`keys is None`) every key it carries (`_first_keys`). Every message of a
    lead or member but a tombstone's is built here; tests/unit/test_publication.py holds
    the bytes equal to the reference message serialised, whatever the user holds.
    The C writer answers None for a value it does not write exactly as orjson does (a
    float, an integer past 64 bits, a lone surrogate, a subclass): such a message, and
    every message of the interpreted core, is written the reference way, which raises
    what orjson raises."""
    if _write_message is not None:
        web, mobile = user.web, user.mobile
        written: bytes | None = _write_message(
            outbound_event_id(user.id, version), version, change, keys, causation_id, at,
            user.id, user.channel_id, user.type, user.member_id, user.fields, user.tags, user.import_tags,
            user.unsubscribe_email, user.unsubscribe_texting, user.blocked, user.masked, user.language, user.city,
            user.country, user.sessions_count, user.last_seen_at, user.created_at, user.updated_at,
            web.sessions_count, web.last_seen_at, web.device, mobile.sessions_count, mobile.last_seen_at, mobile.device,
            user.delivered, user.merged_user_ids,
        )
        if written is not None:
            return written
    view = user_view(user)
    return _dumps(_message(user, version, change, _first_keys(user, view) if keys is None else keys, causation_id, at, view))


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
