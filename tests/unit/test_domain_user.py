"""The user aggregate's plumbing: copies and serialisation lose nothing, and the
publication pre-check sees every key the view shows."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from services.domain import publication
from services.domain.user import STATE_START, Platform, User, Value, new_user


def _full_user() -> User:
    return User(
        id="u_1", channel_id="ch", type="member", created_at=1, updated_at=2, member_id="m",
        fields={"name": Value("Taro", True, True, 3)}, tags=["a"], import_tags=["i"],
        unsubscribe_email=True, unsubscribe_texting=True, has_push_token=True, blocked=True,
        masked=True, deleted=False, merged_into=None, language="ja", city="Tokyo", country="JP",
        sessions_count=4, last_seen_at=5, last_activity_at=6, last_contact_at=7,
        web=Platform(2, 5, {"browser": "chrome"}), mobile=Platform(2, 4, {"appVersion": "1"}),
        veils={"v": 5}, booted=True, delivered=["c"], merged_user_ids=["u_0"], offered=["u_9"],
        pending_into="u_8", pending_since=8, last_login_at=9, version=10, mobile_veils=["v"],
    )


def test_copy_keeps_every_field_and_shares_no_mutable_state() -> None:
    user = _full_user()
    copied = user.copy()
    assert copied == user
    for f in fields(User):
        value = getattr(user, f.name)
        if isinstance(value, list | dict | Platform):
            assert getattr(copied, f.name) is not value, f.name


@given(st.sampled_from(["anonymous", "lead", "member"]), st.none() | st.just("m-1"), st.integers(0, 2**40))
def test_a_new_user_is_the_dataclass_default_and_owns_its_containers(type_: str, member_id: str | None, at: int) -> None:
    """Issue 14: `new_user` sets every slot itself instead of the dataclass __init__ —
    equal to it, every attribute set (a slot left unset would raise on reading), and no
    list, dict or Platform shared between two new users."""
    made = new_user("u_1", "ch", type_, at, member_id)  # type: ignore[arg-type]
    assert made == User(id="u_1", channel_id="ch", type=type_, created_at=at, updated_at=at, member_id=member_id)  # type: ignore[arg-type]
    other = new_user("u_2", "ch", type_, at, member_id)  # type: ignore[arg-type]
    for f in fields(User):
        value = getattr(made, f.name)
        if isinstance(value, list | dict | Platform):
            assert getattr(other, f.name) is not value, f.name
    assert made.web.device is not other.web.device and made.mobile.device is not made.web.device


def test_a_husk_keeps_only_what_u8_and_b2_keep() -> None:
    """U8/B2: a husk holds the id, class, times, version and the mark, the rest defaults."""
    user = _full_user()
    husk = user.husk(merged_into="u_9")
    assert husk == User(id="u_1", channel_id="ch", type="member", created_at=1, updated_at=2, merged_into="u_9", version=10)
    assert user.husk(deleted=True) == replace(husk, merged_into=None, deleted=True)


def test_json_round_trip_keeps_every_field() -> None:
    user = _full_user()
    assert User.from_json(user.to_json()) == user


def test_json_without_a_newer_field_reads_with_its_default() -> None:
    raw = _full_user().to_json()
    del raw["last_login_at"], raw["version"]
    assert User.from_json(raw) == replace(_full_user(), last_login_at=None, version=0)


def test_json_has_every_field_in_field_order() -> None:
    """The stored form (and so the digest) is one key per field, in declaration order."""
    assert list(_full_user().to_json()) == [f.name for f in fields(User)]


def test_publication_notices_every_visible_field() -> None:
    """`publish` (its attribute diff, `_diff`, which decides alone since issue 14
    session 17) must not miss a change the view would show."""
    user = replace(_full_user(), masked=False, blocked=False)
    quiet = {"last_seen_at", "last_activity_at", "last_contact_at", "updated_at", "version", "veils",
             "booted", "offered", "pending_into", "pending_since", "last_login_at", "has_push_token", "mobile_veils",
             "deleted", "merged_into"}
    changes = {
        "type": "lead", "masked": True, "member_id": "m2", "fields": {}, "tags": [], "import_tags": [],
        "unsubscribe_email": False, "unsubscribe_texting": False, "blocked": True, "language": "en",
        "city": None, "country": None, "sessions_count": 9, "created_at": 0, "delivered": [],
        "merged_user_ids": [], "id": "u_2", "channel_id": "c2",
        "web": Platform(3, 5, {"browser": "chrome"}), "mobile": Platform(2, 4, {}),
    }
    assert set(changes) | quiet == {f.name for f in fields(User)}
    for name, value in changes.items():
        assert publication._diff(user, replace(user, **{name: value})), name


# -- the stored state's bytes (issue 14: one serialisation per user written) ------------
_SCALAR = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=6)
_KEY = st.text(max_size=8)
_VALUES = st.builds(Value, _SCALAR | st.lists(_SCALAR, max_size=3) | st.dictionaries(_KEY, _SCALAR, max_size=3), st.booleans(), st.booleans(), st.integers(0, 2**53))
_PLATFORMS = st.builds(Platform, st.integers(0, 9), st.none() | st.integers(0, 2**53), st.dictionaries(_KEY, st.text(max_size=6), max_size=4))
_NAMES = st.lists(st.text(max_size=6), max_size=3)


@st.composite
def _any_user(draw: st.DrawFn) -> User:
    """Any user: profile keys in any insertion order, any text (non-ASCII, NUL, quotes),
    floats, lists of values, unknown device keys, veils."""
    return User(
        id=draw(st.text(max_size=8)), channel_id=draw(st.text(max_size=4)),
        type=draw(st.sampled_from(["anonymous", "lead", "member"])),
        created_at=draw(st.integers(0, 2**53)), updated_at=draw(st.integers(0, 2**53)),
        member_id=draw(st.none() | st.text(max_size=5)),
        fields=draw(st.dictionaries(st.sampled_from(["name", "profile.email", "profile.z"]) | _KEY.map("profile.".__add__), _VALUES, max_size=5)),
        tags=draw(_NAMES), import_tags=draw(_NAMES), unsubscribe_email=draw(st.booleans()),
        blocked=draw(st.booleans()), masked=draw(st.booleans()), deleted=draw(st.booleans()),
        merged_into=draw(st.none() | st.text(max_size=4)), language=draw(st.none() | st.text(max_size=3)),
        sessions_count=draw(st.integers(0, 99)), last_seen_at=draw(st.none() | st.integers(0, 2**53)),
        web=draw(_PLATFORMS), mobile=draw(_PLATFORMS), veils=draw(st.dictionaries(_KEY, st.integers(0, 2**53), max_size=3)),
        delivered=draw(_NAMES), merged_user_ids=draw(_NAMES), offered=draw(_NAMES),
        pending_since=draw(st.none() | st.integers(0, 9)), version=draw(st.integers(0, 99)), mobile_veils=draw(_NAMES),
    )


@settings(max_examples=1500)
@given(_any_user())
def test_the_state_bytes_are_to_json_serialised_canonically(user: User) -> None:
    """issue 14 / "keep the stored state format": `state_json` (what save_users and the
    rebuild's COPY store) is byte for byte `orjson.dumps(to_json())` with sorted keys, and
    it loads back to the same user. Session 12: that is the digest's canonical form of the
    state (its old computation, decoding and dumping again, leaves the bytes as they are)
    and it begins with STATE_START, which is how the digest knows it may hash it as
    stored (replay/digest.py)."""
    stored = user.state_json()
    assert stored == orjson.dumps(user.to_json(), option=orjson.OPT_SORT_KEYS)
    assert stored == orjson.dumps(orjson.loads(stored), option=orjson.OPT_SORT_KEYS)
    assert stored.startswith(STATE_START.encode())
    assert User.from_json(orjson.loads(stored)) == user


_HOSTILE_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, blacklist_categories=()), max_size=4)
_HOSTILE = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | _HOSTILE_TEXT
            | st.lists(_HOSTILE_TEXT | st.integers(), max_size=2))


def _outcome(write: Any) -> tuple[str, Any]:
    try:
        return "bytes", write()
    except Exception as err:  # the same refusal, whichever way the state is written
        return "raised", type(err)


@settings(max_examples=1500)
@given(_any_user(), st.dictionaries(_HOSTILE_TEXT.map("profile.".__add__), st.builds(Value, _HOSTILE, st.booleans(), st.booleans(), st.integers(0, 2**53)), max_size=3),
       st.dictionaries(_HOSTILE_TEXT, _HOSTILE_TEXT | st.integers(0, 9), max_size=3), _NAMES | st.lists(_HOSTILE_TEXT, max_size=2),
       st.dictionaries(_HOSTILE_TEXT, st.integers(0, 2**53), max_size=3))
def test_the_state_bytes_are_the_reference_bytes_whatever_the_state_holds(
    user: User, fields_: dict[str, Value], device: dict[str, Any], tags: list[str], veils: dict[str, int],
) -> None:
    """issue 14 session 14 (session 19: the C writer, `_native.state`): `state_json`
    writes a state by the C writer, and the values it leaves to the reference (floats,
    integers past 64 bits, lone surrogates, a device key that is a platform's own) the
    reference way (orjson over one dict). Any
    code point (surrogates included) in profile keys and values, device keys and values,
    tags and veils: the same bytes as the reference, or the same error. Dropping the
    plainness check, or catching no encoding error, fails it."""
    user.fields.update(fields_)
    user.web.device.update(device)
    user.tags, user.veils = tags, {**user.veils, **veils}
    got = _outcome(user.state_json)
    assert got == _outcome(user._state_json_reference)
    assert got == _outcome(lambda: orjson.dumps(user.to_json(), option=orjson.OPT_SORT_KEYS))


@settings(max_examples=300)
@given(st.lists(st.tuples(_any_user(), st.integers(0, 3000), st.booleans()), min_size=2, max_size=6))
def test_states_written_one_after_another_through_the_kept_buffer_are_each_their_own(
    users: list[tuple[User, int, bool]],
) -> None:
    """issue 14 session 17 (session 19: the C writer's buffer): `state_json` writes every
    state into one kept buffer and copies it out. States written in a row — longer and shorter than
    the one before (a tag of up to 3,000 characters), some refused midway (a lone
    surrogate) — are each, once all are written, the reference bytes of their own state
    (or its refusal): nothing of an earlier state stays in a later one, and no returned
    bytes change when the buffer is written again."""
    written = []
    for user, length, refused in users:
        user.tags = [*user.tags, "x" * length, *(["\ud800"] if refused else [])]
        written.append(_outcome(user.state_json))
    assert written == [_outcome(user._state_json_reference) for user, _length, _refused in users]


def test_a_loaded_platform_owns_its_device_and_leaves_the_stored_form_alone() -> None:
    """Platform.from_json takes the counters out of a copy: the caller's dict is kept."""
    raw = {"sessionsCount": 3, "lastSeenAt": 4, "os": "ios"}
    platform = Platform.from_json(raw)
    assert platform == Platform(3, 4, {"os": "ios"}) and raw == {"sessionsCount": 3, "lastSeenAt": 4, "os": "ios"}
    assert Platform.from_json({}) == Platform(0, None, {})
