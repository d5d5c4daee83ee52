"""issue 14, session 15 (helper "import"): `message_body` gathers the profile, the name,
`qualified`, the profile's flattened keys and plainness in one pass, encodes into a
buffer of its own and shares one platform struct for a platform never visited. Its
bytes must stay those of the builder it replaced (session 14's, kept below as it was),
for every user, first message or not (docs/contract.md, user-changed; C1)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.domain import publication
from services.domain.ids import outbound_event_id
from services.domain.publication import _NO_VISIT, _PLATFORM, message_body
from services.domain.sessions import DEVICE_KEYS
from services.domain.user import Platform, User, Value
from services.domain.view import profile_parts, user_view
from tests.unit.test_publication import _ODD_TEXT, _hostile_user, _user

_encode = publication._ENCODER.encode


def _session14_platform(p: Platform) -> Any:
    device = p.device
    if not device:
        return _PLATFORM(p.sessions_count, p.last_seen_at, None, None, None, None, None, None, None)
    return _PLATFORM(p.sessions_count, p.last_seen_at, *(device.get(k) for k in DEVICE_KEYS))


def _session14_keys_of_first(user: User, profile: dict[str, Any], name: Any) -> list[str]:
    keys = ["blocked", "channelId"]
    if user.city is not None:
        keys.append("city")
    if user.country is not None:
        keys.append("country")
    keys.extend(("createdAt", "deliveredCampaigns", "id"))
    if user.language is not None:
        keys.append("language")
    keys.append("masked")
    if not user.masked and user.member_id is not None:
        keys.append("memberId")
    keys.append("mergedUserIds")
    publication._platform_keys_of_first(keys, user.mobile.device, publication._MOBILE_SORTED, "mobile.sessionsCount")
    if not user.masked:
        if name is not None:
            keys.append("name")
        keys.extend("profile." + sub for sub in profile)
    keys.extend(("qualified", "sessionsCount", "tags", "type", "unsubscribeEmail", "unsubscribeTexting", "userImportTags"))
    publication._platform_keys_of_first(keys, user.web.device, publication._WEB_SORTED, "web.sessionsCount")
    return keys


def _session14_body(user: User, version: int, change: str, keys: list[str] | None, cause: str, at: int) -> bytes:
    """`message_body` as session 14 left it (main 74cb070)."""
    masked = user.masked
    profile, name, qualified = profile_parts(user)
    plain = publication._plain(name) and all(publication._plain(v) for v in profile.values())
    if keys is None:
        keys = _session14_keys_of_first(user, profile, name)
    if plain:
        last_seen = user.last_seen_at
        view = publication._VIEW(
            user.id, user.channel_id, user.type, None if masked else user.member_id, None if masked else name,
            user.tags, user.import_tags, None if masked else profile, qualified, user.unsubscribe_email,
            user.unsubscribe_texting, user.blocked, masked, user.language, user.city, user.country,
            user.sessions_count, last_seen if last_seen is not None else user.created_at, user.created_at,
            user.updated_at, _session14_platform(user.web), _session14_platform(user.mobile), user.delivered,
            user.merged_user_ids,
        )
        try:
            return _encode(publication._MESSAGE(  # type: ignore[no-any-return]
                outbound_event_id(user.id, version), user.channel_id, user.id, version, change, keys, cause, at, None, view,
            ))
        except (TypeError, ValueError):
            pass
    return orjson.dumps(publication._message(user, version, change, keys, cause, at, user_view(user)))


def _same(user: User, keys: list[str] | None, cause: str, change: str) -> None:
    try:
        want = _session14_body(user, 2, change, keys, cause, 9)
    except orjson.JSONEncodeError as err:
        with pytest.raises(orjson.JSONEncodeError, match=str(err)):
            message_body(user, 2, change, keys, cause, 9)
        return
    assert message_body(user, 2, change, keys, cause, 9) == want


@settings(max_examples=1500)
@given(_user(), st.none() | st.lists(st.sampled_from(["a", "profile.x"]), max_size=2), st.sampled_from(["created", "updated"]))
def test_the_message_is_session_14s_byte_for_byte(user: User, keys: list[str] | None, change: str) -> None:
    """Any user the view can show (masked, platforms visited or not, devices, any field)."""
    _same(user, keys, "e1", change)


@settings(max_examples=1000)
@given(_hostile_user(), st.none() | st.lists(_ODD_TEXT, max_size=2), _ODD_TEXT)
def test_the_message_is_session_14s_byte_for_byte_whatever_it_holds(user: User, keys: list[str] | None, cause: str) -> None:
    """Floats, integers past 64 bits, lists, lone surrogates in the name or profile: the
    plainness folded into the one pass sends the same values the reference way."""
    _same(user, keys, cause, "created")


@settings(max_examples=300)
@given(st.lists(st.sampled_from(["name", "profile.plan", "profile.points", "other", "profile.email"]), unique=True),
       st.sampled_from([1.5, 2**70, "text", 3, None, True]))
def test_an_odd_value_inside_or_outside_the_profile_gives_session_14s_bytes(keys: list[str], odd: Any) -> None:
    """A float, a 70-bit integer, None or a boolean in a field the message does not show
    (`other`) or in the profile: the bytes of the one pass are session 14's either way."""
    user = User(id="u1", channel_id="ch", type="member", created_at=0, updated_at=0)
    user.fields = {k: Value(odd if k in ("other", "profile.points") else "v", False, False, 0) for k in keys}
    _same(user, None, "e1", "created")


def test_an_imported_member_shares_the_never_visited_platform_and_leaves_it_as_it_was() -> None:
    """The shared struct is only encoded: after building, it still says a platform never
    visited, and a visited platform (sessions or a last visit) does not take it."""
    user = User(id="u1", channel_id="ch", type="member", created_at=5, updated_at=5, member_id="m1",
                fields={"profile.email": Value("a@b.c", True, False, 0), "name": Value("N", False, False, 0)})
    first = orjson.loads(message_body(user, 1, "created", None, "e1", 5))
    assert first["user"]["web"] == first["user"]["mobile"] == {"sessionsCount": 0, "lastSeenAt": None, **dict.fromkeys(DEVICE_KEYS)}
    assert first["changedKeys"] == _session14_keys_of_first(user, *profile_parts(user)[:2])
    assert orjson.loads(_encode(_NO_VISIT)) == first["user"]["web"]
    assert publication._platform_struct(Platform(0, 3)) is not _NO_VISIT
    assert publication._platform_struct(Platform(1, None)) is not _NO_VISIT
    user.web = Platform(2, 7)
    assert orjson.loads(message_body(user, 2, "updated", ["web.sessionsCount"], "e2", 7))["user"]["web"]["sessionsCount"] == 2


def test_a_first_messages_keys_are_remembered_encoded_as_orjson_writes_them_and_bounded() -> None:
    """The remembered `changedKeys` of a first message without device keys: the bytes
    orjson writes for `_keys_of_first`, the same object for a user with the same facts
    and profile keys, another for each fact that changes the list, and never more than
    `_FIRST_KEYS_KEPT` lists kept (profile keys are the channel's: many channels, many
    lists)."""
    user = User(id="u1", channel_id="ch", type="member", created_at=0, updated_at=0, member_id="m1")
    listed = ["profile.\u00e4", 'profile.q"\\', "profile.\u2028"]
    raw = publication._first_keys_raw(user, listed, "N")
    assert bytes(raw) == orjson.dumps(publication._keys_of_first(user, sorted(listed), "N"))
    # issue 14, session 18: `listed` comes in the fields' order; the keys are written sorted.
    assert bytes(publication._first_keys_raw(user, listed[::-1], "N")) == bytes(raw)
    other = User(id="u2", channel_id="ch", type="member", created_at=1, updated_at=1, member_id="m2")
    assert publication._first_keys_raw(other, list(listed), "M") is raw
    for change in ("city", "country", "language", "masked", "member_id", "name"):
        user = User(id="u1", channel_id="ch", type="member", created_at=0, updated_at=0, member_id="m1")
        name: Any = "N"
        if change == "name":
            name = None
        elif change == "member_id":
            user.member_id = None
        else:
            setattr(user, change, True if change == "masked" else "x")
        got = publication._first_keys_raw(user, listed, name)
        assert bytes(got) == orjson.dumps(publication._keys_of_first(user, sorted(listed), name)), change
        assert bytes(got) != bytes(raw), change
    for i in range(publication._FIRST_KEYS_KEPT + 10):
        publication._first_keys_raw(user, [f"profile.k{i}"], None)
        assert len(publication._FIRST_KEYS_RAW) <= publication._FIRST_KEYS_KEPT


@settings(max_examples=300)
@given(st.lists(st.sampled_from(["name", "profile.b", "profile.a", "profile.\u00e4", "profile.Z", "profile.\u2028", "other"]),
                unique=True))
def test_the_profile_is_written_sorted_whatever_order_the_fields_were_set_in(order: list[str]) -> None:
    """issue 14, session 18: `message_body` gathers the profile in the fields' own order
    and the encoder sorts it (by UTF-8 bytes, the code points' order): the bytes are
    session 14's (which sorted the fields first) for any insertion order, created
    (changedKeys listed) or not. An encoder that kept insertion order fails it."""
    user = User(id="u1", channel_id="ch", type="member", created_at=0, updated_at=0, member_id="m1")
    user.fields = {k: Value(f"v{i}", i % 2 == 0, False, i) for i, k in enumerate(order)}
    _same(user, None, "e1", "created")
    _same(user, ["profile.a"], "e1", "updated")
