"""The attribute diff of publication.py gives exactly the view diff (`changed_keys`)."""

from __future__ import annotations

from operator import attrgetter
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.domain.publication import (
    _QUIET,
    _diff,
    _first_keys,
    _flat,
    _message,
    _moves,
    changed_keys,
    message_body,
    publish,
)
from services.domain.sessions import DEVICE_KEYS
from services.domain.user import CONTACT_KEYS, Platform, User, Value
from services.domain.view import user_view
from tests.oracle.publication import publish as reference_publish
from tests.oracle.view import user_view as reference_view

_TEXT = st.sampled_from(["a", "b", "", "x@y.z", "名前", 'q"\\', "\u2028"]) | st.none()
_VALUE = st.builds(Value, _TEXT | st.integers(0, 2) | st.just(0.5) | st.just(["a", 1]), st.booleans(), st.booleans(), st.integers(0, 3))
_FIELD_KEYS = st.sampled_from(["name", "profile.email", "profile.mobileNumber", "profile.city", "profile.x", "profile.ä", "profile.", "other"])
_DEVICE = st.dictionaries(st.sampled_from([*DEVICE_KEYS, "extra"]), st.sampled_from(["d1", "d2"]), max_size=3)
_PLATFORM = st.builds(Platform, st.integers(0, 2), st.none() | st.integers(0, 5), _DEVICE)
_LIST = st.lists(st.sampled_from(["t1", "t2", "t3"]), max_size=3)

# Every attribute the view reads (and some it does not), each with a few values.
_CHANGES: dict[str, Any] = {
    "type": st.sampled_from(["anonymous", "lead", "member"]),
    "member_id": st.none() | st.sampled_from(["m1", "m2"]),
    "fields": st.dictionaries(_FIELD_KEYS, _VALUE, max_size=4),
    "tags": _LIST, "import_tags": _LIST, "delivered": _LIST, "merged_user_ids": _LIST,
    "unsubscribe_email": st.booleans(), "unsubscribe_texting": st.booleans(),
    "blocked": st.booleans(), "masked": st.booleans(),
    "language": st.none() | st.just("ja"), "city": st.none() | st.just("Tokyo"), "country": st.none() | st.just("JP"),
    "sessions_count": st.integers(0, 2), "last_seen_at": st.none() | st.integers(0, 3),
    "created_at": st.integers(0, 1), "updated_at": st.integers(0, 3),
    "web": _PLATFORM, "mobile": _PLATFORM, "version": st.integers(0, 2), "last_login_at": st.none() | st.integers(0, 1),
}


@st.composite
def _user(draw: st.DrawFn, base: User | None = None) -> User:
    user = base.copy() if base is not None else User(id="u1", channel_id="ch", type="lead", created_at=0, updated_at=0)
    for attr in draw(st.lists(st.sampled_from(sorted(_CHANGES)), max_size=6, unique=True)):
        setattr(user, attr, draw(_CHANGES[attr]))
    return user


@st.composite
def _pair(draw: st.DrawFn) -> tuple[User, User]:
    before = draw(_user())
    return before, draw(_user(before))


@settings(max_examples=2000)
@given(_pair())
def test_attribute_diff_is_the_view_diff(pair: tuple[User, User]) -> None:
    before, after = pair
    assert _diff(before, after) == changed_keys(before, after)


# -- the changed keys as publish found them before session 17: kept as the reference ----
# `publish` compared a tuple of every visible attribute of each user (`_visible`) and,
# when they differed, listed the keys by attrgetter tuples and sorted them.
_PREVIOUS_PLAIN = (
    ("id", "id"), ("channel_id", "channelId"), ("type", "type"), ("member_id", "memberId"),
    ("unsubscribe_email", "unsubscribeEmail"), ("unsubscribe_texting", "unsubscribeTexting"),
    ("blocked", "blocked"), ("masked", "masked"), ("language", "language"), ("city", "city"),
    ("country", "country"), ("sessions_count", "sessionsCount"), ("created_at", "createdAt"),
)
_PREVIOUS_LISTS = (
    ("tags", "tags"), ("import_tags", "userImportTags"), ("delivered", "deliveredCampaigns"),
    ("merged_user_ids", "mergedUserIds"),
)
_PLAIN_KEYS, _PLAIN_OF = tuple(k for _a, k in _PREVIOUS_PLAIN), attrgetter(*(a for a, _k in _PREVIOUS_PLAIN))
_LIST_KEYS, _LISTS_OF = tuple(k for _a, k in _PREVIOUS_LISTS), attrgetter(*(a for a, _k in _PREVIOUS_LISTS))


def _previous_visible(u: User) -> tuple[Any, ...]:
    return (
        u.type, u.masked, u.member_id, u.fields, u.tags, u.import_tags, u.unsubscribe_email,
        u.unsubscribe_texting, u.blocked, u.language, u.city, u.country, u.sessions_count,
        u.created_at, u.web.sessions_count, u.web.device, u.mobile.sessions_count,
        u.mobile.device, u.delivered, u.merged_user_ids, u.id, u.channel_id,
    )


def _previous_field_keys(old: dict[str, Value], new: dict[str, Value]) -> list[str]:
    keys = []
    for key in old.keys() | new.keys():
        if key == "name" or key.startswith("profile."):
            o, n = old.get(key), new.get(key)
            if (None if o is None else o.v) != (None if n is None else n.v):
                keys.append(key)
    if _previous_qualified(old) != _previous_qualified(new):
        keys.append("qualified")
    return keys


def _previous_qualified(fields: dict[str, Value]) -> list[str]:
    return [key for key in CONTACT_KEYS if (val := fields.get(key)) is not None and val.v is not None and val.q]


def _previous_platform_keys(name: str, old: Platform, new: Platform) -> list[str]:
    keys = [f"{name}.sessionsCount"] if old.sessions_count != new.sessions_count else []
    if old.device != new.device:
        keys.extend(f"{name}.{k}" for k in DEVICE_KEYS if old.device.get(k) != new.device.get(k))
    return keys


def _previous_diff(before: User, after: User) -> list[str]:
    """The keys `publish` listed before session 17 ([] when the pre-check found the
    visible tuples equal)."""
    if _previous_visible(before) == _previous_visible(after):
        return []
    if before.masked or after.masked:
        return changed_keys(before, after)
    keys = [key for key, old, new in zip(_PLAIN_KEYS, _PLAIN_OF(before), _PLAIN_OF(after), strict=True) if old != new]
    for key, old, new in zip(_LIST_KEYS, _LISTS_OF(before), _LISTS_OF(after), strict=True):
        if old != new and list(old) != list(new):
            keys.append(key)
    if before.fields != after.fields:
        keys.extend(_previous_field_keys(before.fields, after.fields))
    keys.extend(_previous_platform_keys("web", before.web, after.web))
    keys.extend(_previous_platform_keys("mobile", before.mobile, after.mobile))
    return sorted(keys)


# Field keys that sort anywhere among the profile's (before `name`'s neighbours, after
# `qualified`'s in code points, non-ASCII), and the contact keys.
_ODD_FIELD_KEYS = st.sampled_from(["name", "profile.", "profile.A", "profile.z", "profile.~", "profile.é", "nam", "qualified", *CONTACT_KEYS])


@st.composite
def _pair_of_any_change(draw: st.DrawFn) -> tuple[User, User]:
    """A pair as `_pair`, and sometimes: the same containers shared (a fact that moved
    nothing but quiet keys), equal copies, field keys sorting anywhere among the profile's."""
    before, after = draw(_pair())
    if draw(st.booleans()):
        after.fields = draw(st.dictionaries(_ODD_FIELD_KEYS, _VALUE, max_size=5))
    if draw(st.booleans()):
        after.fields = before.fields
    if draw(st.booleans()):
        after.tags = list(before.tags)  # equal, not the same list
    if draw(st.booleans()):
        after.web = Platform(before.web.sessions_count, before.web.last_seen_at, before.web.device)
    return before, after


@settings(max_examples=3000)
@given(_pair_of_any_change())
def test_the_attribute_diff_lists_the_keys_publish_listed_before(pair: tuple[User, User]) -> None:
    """issue 14, session 17: `_diff`, attribute by attribute with its keys appended in
    sorted order (no visible-attribute tuples compared first, no sort), gives exactly the
    list the pre-check and the previous attribute diff gave — empty when only quiet keys
    moved — both ways round, and it is the view diff."""
    before, after = pair
    assert _diff(before, after) == _previous_diff(before, after) == changed_keys(before, after)
    assert _diff(after, before) == _previous_diff(after, before) == changed_keys(after, before)


@settings(max_examples=3000)
@given(_pair())
def test_whether_a_rebuild_moves_the_version_is_whether_the_view_diff_has_keys(pair: tuple[User, User]) -> None:
    """Flow 5 / Determinism: the no-message path's decision (`_moves`, a rebuild's) is
    exactly whether any view key changed — the version moves then and only then."""
    before, after = pair
    assert _moves(before, after) == bool(changed_keys(before, after))
    assert _moves(after, before) == bool(changed_keys(after, before))


def _ended(pair: tuple[User, User], first: bool, end: str | None) -> tuple[User | None, User]:
    """(the user before — None for a first message —, the user after), the latter merged
    (U8) or deleted (B2) when `end` says so."""
    before, after = pair
    if end == "merged":
        after.merged_into = "u2"
    elif end == "deleted":
        after.deleted = True
    return (None if first else before), after


@settings(max_examples=1000)
@given(_pair(), st.booleans(), st.sampled_from([None, "merged", "deleted"]), st.integers(0, 4))
def test_a_rebuild_without_messages_moves_versions_exactly_as_publishing_does(
    pair: tuple[User, User], first: bool, end: str | None, at: int,
) -> None:
    """Flow 5 / Determinism: `messages=False` (replay) leaves the same version and
    updatedAt as building the user-changed messages would, for every kind of change."""
    old, after = _ended(pair, first, end)
    with_messages, pubs = publish(old, after.copy(), "e1", at)
    without, none = publish(old, after.copy(), "e1", at, messages=False)
    assert none == []
    assert without.to_json() == with_messages.to_json()
    assert (without.version > after.version) == bool(pubs)


@settings(max_examples=500)
@given(_user())
def test_the_keys_of_a_first_message_are_every_flattened_key_with_a_value(user: User) -> None:
    """C1: a `created` message lists every key it carries (but the quiet ones)."""
    view = user_view(user)
    assert _first_keys(user, view) == sorted(k for k, v in _flat(view).items() if k not in _QUIET and v is not None)


@settings(max_examples=1000)
@given(_user(), st.booleans())
def test_the_keys_of_a_first_message_without_device_keys_are_taken_in_order(user: User, both: bool) -> None:
    """C1, issue 14 (session 13): a user no boot described (every imported one) has its
    `created` keys taken in their sorted order rather than sorted (the C writer's first
    keys, session 19, what `message_body` lists): the same list as the definition. Fails if a view key is
    missing from the order or the profile's block goes in the wrong place."""
    user.web = Platform(user.web.sessions_count, user.web.last_seen_at)
    if both:
        user.mobile = Platform(user.mobile.sessions_count, user.mobile.last_seen_at)
    view = user_view(user)
    expected = sorted(k for k, v in _flat(view).items() if k not in _QUIET and v is not None)
    assert _first_keys(user, view) == expected
    assert orjson.loads(message_body(user, 1, "created", None, "e1", 0))["changedKeys"] == expected


def test_a_platform_shows_every_device_key_in_order() -> None:
    """docs/contract.md: `web` and `mobile` carry every device key, null when unknown."""
    user = User(id="u1", channel_id="ch", type="lead", created_at=0, updated_at=0, web=Platform(1, 2, {"os": "ios", "extra": "x"}))
    assert user_view(user)["web"] == {"sessionsCount": 1, "lastSeenAt": 2, **{k: ("ios" if k == "os" else None) for k in DEVICE_KEYS}}
    assert list(user_view(user)["mobile"]) == ["sessionsCount", "lastSeenAt", *DEVICE_KEYS]


@settings(max_examples=1500)
@given(_pair(), st.booleans(), st.sampled_from([None, "merged", "deleted"]), st.integers(0, 4))
def test_the_message_bytes_are_the_reference_message_serialised(
    pair: tuple[User, User], first: bool, end: str | None, at: int,
) -> None:
    """issue 14 (publish): the bytes `publish` builds straight from the user — view,
    changedKeys and message in one pass — are byte for byte those of the reference
    (the core before, tests/oracle/publication.py, its message serialised as the
    projection serialised it), and the user moves the same."""
    old, after = _ended(pair, first, end)
    user, pubs = publish(old, after.copy(), "e1", at)
    ref_user, ref = reference_publish(old, after.copy(), "e1", at)
    assert [(p.key, p.body) for p in pubs] == [(p.key, None if p.value is None else orjson.dumps(p.value)) for p in ref]
    assert user.to_json() == ref_user.to_json()


@settings(max_examples=1000)
@given(_user())
def test_the_view_is_the_reference_view(user: User) -> None:
    """issue 14: the one-pass `user_view` gives the reference view (tests/oracle/view.py),
    key order included (the bytes of every message and of the API's user object)."""
    assert orjson.dumps(user_view(user)) == orjson.dumps(reference_view(user))  # type: ignore[arg-type]


# Values of every kind a profile value or a name may hold, and text of every kind: what
# the C writer writes as orjson does and what it leaves to the reference (floats,
# integers beyond 64 bits, lone surrogates), so that both ways of building a message are
# taken.
_ODD_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=6)
_ANY_VALUE = (
    _ODD_TEXT | st.none() | st.booleans() | st.integers(-(2**65), 2**65) | st.floats(allow_nan=False)
    | st.lists(st.integers(0, 3) | st.floats(0, 1) | _ODD_TEXT, max_size=2)
)


@st.composite
def _hostile_user(draw: st.DrawFn) -> User:
    user = draw(_user())
    user.channel_id, user.member_id = draw(_ODD_TEXT), draw(st.none() | _ODD_TEXT)
    keys = st.sampled_from(["name", "profile.email", "profile.mobileNumber"]) | _ODD_TEXT.map(lambda k: "profile." + k)
    user.fields = draw(st.dictionaries(keys, st.builds(Value, _ANY_VALUE, st.booleans(), st.booleans(), st.just(0)), max_size=4))
    user.tags = draw(st.lists(_ODD_TEXT, max_size=2))
    user.language = draw(st.none() | _ODD_TEXT)
    user.web = Platform(1, None, draw(st.dictionaries(st.sampled_from([*DEVICE_KEYS, "extra"]), _ODD_TEXT, max_size=3)))
    return user


@settings(max_examples=1500)
@given(_hostile_user(), st.none() | st.lists(_ODD_TEXT, max_size=3), _ODD_TEXT, st.sampled_from(["created", "updated"]))
def test_a_message_built_as_structs_is_the_reference_message_serialised_whatever_it_holds(
    user: User, keys: list[str] | None, cause: str, change: str,
) -> None:
    """issue 14 session 13 (session 19: the C writer): `message_body` (the C writer, or
    the reference way for a value it leaves to it) gives exactly `orjson.dumps` of the reference message
    — any text (quotes, backslashes, controls, U+2028, non-ASCII, lone surrogates: then
    the same refusal), floats, integers past 64 bits, lists — and a first message lists
    `_first_keys` of the view."""
    listed = _first_keys(user, user_view(user)) if keys is None else keys
    try:
        want = orjson.dumps(_message(user, 3, change, listed, cause, 7, user_view(user)))
    except orjson.JSONEncodeError as err:
        with pytest.raises(orjson.JSONEncodeError, match=str(err)):
            message_body(user, 3, change, keys, cause, 7)
        return
    assert message_body(user, 3, change, keys, cause, 7) == want


@settings(max_examples=300)
@given(st.lists(st.tuples(_hostile_user(), st.integers(0, 5000)), min_size=2, max_size=6))
def test_messages_built_one_after_another_through_the_kept_buffer_are_each_their_own(
    users: list[tuple[User, int]],
) -> None:
    """issue 14 session 17 (session 19: the C writer's buffer, `kept` in _native.c):
    `message_body` writes every message into one kept buffer and copies it out. Messages
    built in a row — longer and shorter than the one before (a tag of up to 5,000
    characters: past the buffer's first 4 kB), some left by the C writer midway (then built the reference way, or refused) — are each, once
    all are built, the reference message serialised: nothing of an earlier message stays
    in a later one, and no returned bytes change when the buffer is written again."""
    def build(user: User) -> tuple[str, Any]:
        try:
            return "bytes", message_body(user, 3, "updated", ["tags"], "e1", 7)
        except orjson.JSONEncodeError as err:
            return "raised", str(err)

    def reference(user: User) -> tuple[str, Any]:
        try:
            return "bytes", orjson.dumps(_message(user, 3, "updated", ["tags"], "e1", 7, user_view(user)))
        except orjson.JSONEncodeError as err:
            return "raised", str(err)

    built = []
    for user, length in users:
        user.tags = [*user.tags, "t" * length]
        built.append(build(user))
    assert built == [reference(user) for user, _length in users]


def test_msgspec_writes_every_string_and_64_bit_integer_as_orjson_does() -> None:
    """Kept from session 13, when msgspec wrote messages (since session 19 the C writer
    does, pinned for every code point by test_native.py): the same
    bytes for every code point but the surrogates (orjson refuses those, and so the
    message is built the reference way) and at both ends of the 64-bit range."""
    encode = msgspec.json.Encoder().encode
    for point in range(0x110000):
        if not 0xD800 <= point < 0xE000:
            char = chr(point)
            assert encode(char) == orjson.dumps(char), hex(point)
    edges = [-(2**63), 2**63 - 1, 2**64 - 1, 0, -1, True, False, None]
    assert encode(edges) == orjson.dumps(edges)
