"""issue 14, session 19: the domain's C helpers (services/domain/_native.c), which the
compiled core writes every state and message with, makes every Value and derives every
name-based id with. The writer's bytes must be the references' (orjson over the view and `_first_keys`, the
definition: docs/contract.md, user-changed; C1; the state's sorted dump, the digest's
canonical form) for every user — first message or not, masked, visited or not, any
field, in any order, past its buffers — and it must leave to the reference exactly what
it does not write as orjson does. The hostile-content properties are in
test_publication.py and test_domain_user.py; run compiled, they pin this writer too."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import services.domain as domain
from services.domain import ids, publication
from services.domain import user as user_module
from services.domain.publication import _first_keys, _message, message_body
from services.domain.sessions import DEVICE_KEYS
from services.domain.user import Platform, User, Value
from services.domain.view import user_view
from tests.unit.test_publication import _ODD_TEXT, _hostile_user, _user

compiled_only = pytest.mark.skipif(domain.CORE != "compiled", reason="the C writer is built with the compiled core only")


def _reference(user: User, version: int, change: str, keys: list[str] | None, cause: str, at: int) -> bytes:
    view = user_view(user)
    return orjson.dumps(_message(user, version, change, _first_keys(user, view) if keys is None else keys, cause, at, view))


def _same(user: User, keys: list[str] | None, cause: str, change: str) -> None:
    try:
        want = _reference(user, 2, change, keys, cause, 9)
    except orjson.JSONEncodeError as err:
        with pytest.raises(orjson.JSONEncodeError, match=str(err)):
            message_body(user, 2, change, keys, cause, 9)
        return
    assert message_body(user, 2, change, keys, cause, 9) == want


def _state_reference(user: User) -> bytes:
    return orjson.dumps(user.to_json(), option=orjson.OPT_SORT_KEYS)


def _state_same(user: User) -> None:
    """`state_json` writes the reference's bytes, or raises the reference's error."""
    try:
        want = _state_reference(user)
    except TypeError as err:  # orjson.JSONEncodeError is a TypeError
        with pytest.raises(TypeError, match=str(err)):
            user.state_json()
        return
    assert user.state_json() == want


@settings(max_examples=1500)
@given(_user(), st.none() | st.lists(st.sampled_from(["a", "profile.x"]), max_size=2), st.sampled_from(["created", "updated"]))
def test_the_message_is_the_reference_byte_for_byte(user: User, keys: list[str] | None, change: str) -> None:
    """Any user the view can show (masked, platforms visited or not, devices, any field):
    a first message's keys (`keys` None) are `_first_keys` of the view."""
    _same(user, keys, "e1", change)


@settings(max_examples=1000)
@given(_hostile_user(), st.none() | st.lists(_ODD_TEXT, max_size=2), _ODD_TEXT)
def test_the_first_message_is_the_reference_whatever_it_holds(user: User, keys: list[str] | None, cause: str) -> None:
    """Floats, integers past 64 bits, lists, lone surrogates in the name or profile: the
    writer leaves them to the reference, which writes them or raises orjson's error."""
    _same(user, keys, cause, "created")


@settings(max_examples=300)
@given(st.lists(st.sampled_from(["name", "profile.plan", "profile.points", "other", "profile.email"]), unique=True),
       st.sampled_from([1.5, 2**70, 2**64 - 1, -(2**63), "text", 3, None, True, ["a", "b"], ("a",), [1.5]]))
def test_an_odd_value_inside_or_outside_the_profile_gives_the_reference_bytes(keys: list[str], odd: Any) -> None:
    """A float, a 70-bit integer, the 64-bit ends, None, a boolean, lists in a field the
    message does not show (`other`) or in the profile: the reference's bytes either way,
    in the message and in the state."""
    user = User(id="u1", channel_id="ch", type="member", created_at=0, updated_at=0)
    user.fields = {k: Value(odd if k in ("other", "profile.points") else "v", False, False, 0) for k in keys}
    _same(user, None, "e1", "created")
    _state_same(user)


def test_an_imported_member_shows_two_platforms_never_visited() -> None:
    """An imported member (no visit, no device): both platforms with every device key
    null, and its first message lists `_first_keys`; visited later, its platform shows it."""
    user = User(id="u1", channel_id="ch", type="member", created_at=5, updated_at=5, member_id="m1",
                fields={"profile.email": Value("a@b.c", True, False, 0), "name": Value("N", False, False, 0)})
    first = orjson.loads(message_body(user, 1, "created", None, "e1", 5))
    assert first["user"]["web"] == first["user"]["mobile"] == {"sessionsCount": 0, "lastSeenAt": None, **dict.fromkeys(DEVICE_KEYS)}
    assert first["changedKeys"] == _first_keys(user, user_view(user))
    assert first["user"]["qualified"] == ["email"] and first["user"]["lastSeenAt"] == 5
    user.web = Platform(2, 7)
    assert orjson.loads(message_body(user, 2, "updated", ["web.sessionsCount"], "e2", 7))["user"]["web"]["sessionsCount"] == 2


@settings(max_examples=300)
@given(st.lists(st.sampled_from(["name", "profile.b", "profile.a", "profile.\u00e4", "profile.Z", "profile.\u2028", "other"]),
                unique=True))
def test_the_profile_is_written_sorted_whatever_order_the_fields_were_set_in(order: list[str]) -> None:
    """The fields are read in their own order and the profile (and a first message's
    profile keys, and the state's fields) written sorted by code point: the reference's
    bytes for any insertion order. A writer that kept insertion order fails it."""
    user = User(id="u1", channel_id="ch", type="member", created_at=0, updated_at=0, member_id="m1")
    user.fields = {k: Value(f"v{i}", i % 2 == 0, False, i) for i, k in enumerate(order)}
    _same(user, None, "e1", "created")
    _same(user, ["profile.a"], "e1", "updated")
    _state_same(user)


def test_many_fields_veils_and_device_keys_are_sorted_past_the_writers_stack() -> None:
    """More fields, veils and device keys than the writer sorts on its stack (32): the
    same bytes as the references, message and state."""
    user = User(id="u1", channel_id="ch", type="member", created_at=0, updated_at=0, member_id="m1")
    user.fields = {f"profile.k{i:03d}"[::-1 if i % 3 else 1]: Value(i, False, True, i) for i in range(90)}
    user.fields["name"] = Value("N", False, False, 0)
    user.veils = {f"v{(i * 37) % 100}": i for i in range(100)}
    user.web = Platform(3, 4, {f"d{(i * 7) % 40}": "x" for i in range(40)} | {"os": "ios"})
    _same(user, None, "e1", "created")
    _state_same(user)


def test_a_huge_user_then_a_small_one_are_each_their_own() -> None:
    """A user past the kept buffer's 1 MB (a 3 MB tag) grows it, and it is given back
    after: the next, small user's bytes are its own, message and state."""
    big = User(id="u1", channel_id="ch", type="lead", created_at=0, updated_at=0, tags=["t" * 3_000_000, "\u00e9" * 1000])
    small = User(id="u2", channel_id="ch", type="lead", created_at=0, updated_at=0, tags=["s"])
    for user in (big, small, big, small):
        _same(user, ["tags"], "e1", "updated")
        _state_same(user)


@compiled_only
def test_the_compiled_core_writes_with_the_c_writer_and_leaves_it_what_it_does_not_write() -> None:
    """Compiled, both writers are the C ones; they answer None (the reference then
    writes) exactly for what orjson writes otherwise than they would or refuses: a float,
    an integer past 64 bits, a lone surrogate, a subclass, a nested list, a device's
    float, a device key that is a platform's own."""
    assert user_module._write_state is not None and publication._write_message is not None

    class Text(str):
        pass

    plain = User(id="u1", channel_id="ch", type="member", created_at=0, updated_at=0, fields={"name": Value("N", False, False, 0)})
    assert _message_written(plain) is not None and _state_written(plain) is not None
    odd_values: list[Any] = [1.5, 2**64, -(2**63) - 1, "\ud800", Text("x"), [["a"]], [1.5]]
    for odd in odd_values:
        user = User(id="u1", channel_id="ch", type="member", created_at=0, updated_at=0, fields={"name": Value(odd, False, False, 0)})
        assert _message_written(user) is None, odd
        assert _state_written(user) is None, odd
    for device in ({"os": 1.5}, {"sessionsCount": "x"}):
        user = User(id="u1", channel_id="ch", type="member", created_at=0, updated_at=0, web=Platform(1, 2, device))  # type: ignore[arg-type]
        assert _state_written(user) is None, device
    assert _message_written(User(id="u1", channel_id="ch", type="member", created_at=0, updated_at=0, web=Platform(1, 2, {"os": 1.5}))) is None  # type: ignore[dict-item]


def _message_written(user: User) -> bytes | None:
    web, mobile = user.web, user.mobile
    return publication._write_message(
        "ev", 1, "created", None, "c", 0, user.id, user.channel_id, user.type, user.member_id, user.fields, user.tags,
        user.import_tags, user.unsubscribe_email, user.unsubscribe_texting, user.blocked, user.masked, user.language,
        user.city, user.country, user.sessions_count, user.last_seen_at, user.created_at, user.updated_at,
        web.sessions_count, web.last_seen_at, web.device, mobile.sessions_count, mobile.last_seen_at, mobile.device,
        user.delivered, user.merged_user_ids,
    )


def _state_written(user: User) -> bytes | None:
    write = user_module._write_state
    assert write is not None
    web, mobile = user.web, user.mobile
    return write(
        user.blocked, user.booted, user.channel_id, user.city, user.country, user.created_at, user.deleted,
        user.delivered, user.fields, user.has_push_token, user.id, user.import_tags, user.language,
        user.last_activity_at, user.last_contact_at, user.last_login_at, user.last_seen_at, user.masked,
        user.member_id, user.merged_into, user.merged_user_ids, mobile.sessions_count, mobile.last_seen_at,
            mobile.device, user.mobile_veils, user.offered, user.pending_into, user.pending_since, user.sessions_count,
        user.tags, user.type, user.unsubscribe_email, user.unsubscribe_texting, user.updated_at, user.veils,
        user.version, web.sessions_count, web.last_seen_at, web.device,
    )


# -- a Value and a name-based id (issue 14, session 19) -----------------------------------


@settings(max_examples=300)
@given(st.none() | st.text() | st.integers() | st.booleans() | st.lists(st.text(), max_size=2), st.booleans(), st.booleans(),
       st.integers(-(2**70), 2**70))
def test_new_value_is_the_named_tuples_own_value(v: Any, q: bool, m: bool, t: int) -> None:
    """`new_value` (the C helper, compiled) makes what `Value(...)` makes: the same type,
    items, equality, hash, attributes and repr. A helper that made a plain tuple, or
    dropped or reordered an item, fails it."""
    made, want = user_module.new_value(v, q, m, t), Value(v, q, m, t)
    assert type(made) is Value and made == want and tuple(made) == tuple(want) and repr(made) == repr(want)
    assert (made.v, made.q, made.m, made.t) == (v, q, m, t)
    if not isinstance(v, list):
        assert hash(made) == hash(want)


@settings(max_examples=2000)
@given(st.binary(max_size=300))
def test_a_name_based_id_is_the_reference_whatever_the_names_length(name: bytes) -> None:
    """`ids._uuid_of` (the C helper's own SHA-1, compiled) is hashlib's version 5 UUID of
    the name for every length, the one- and two-block tails (55, 56, 63, 64 bytes …)
    included; and it is the uuid module's `uuid5` for a name in its namespace."""
    assert ids._uuid_of(name) == ids._uuid_of_reference(name)


def test_a_name_based_id_at_the_block_edges_and_as_the_uuid_module_makes_it() -> None:
    """Every length from 0 to 200 bytes, and the ids the service derives (a member's)."""
    for n in range(201):
        name = bytes((i * 7 + n) % 256 for i in range(n))
        assert ids._uuid_of(name) == ids._uuid_of_reference(name), n
    assert ids.member_user_id("ch_1", "m-1") == "u_" + uuid.uuid5(ids._NAMESPACE, "ch_1\x1fmember\x1fm-1").hex


@compiled_only
def test_the_compiled_core_makes_values_and_ids_with_the_c_helpers() -> None:
    """Compiled, `new_value` and `_uuid_of` take the C helpers (the tests above then pin
    them); `value` refuses a wrong number of items."""
    assert user_module._make_value is not None and ids._native_uuid is not None
    with pytest.raises(TypeError):
        user_module._make_value(1, 2, 3)  # type: ignore[call-arg]


def test_every_code_point_is_written_as_orjson_writes_it() -> None:
    """The writer's escaping against orjson's for every code point but the surrogates
    (which it leaves to the reference): controls, `"`, `\\`, U+007F, U+2028, every
    plane, in a tag of the state and of the message, 4,096 code points a tag. An escape
    table off by one character fails it."""
    points = [p for p in range(0x110000) if not 0xD800 <= p < 0xE000]
    user = User(id="u1", channel_id="ch", type="lead", created_at=0, updated_at=0)
    for start in range(0, len(points), 4096):
        user.tags = ["".join(map(chr, points[start : start + 4096]))]
        assert user.state_json() == _state_reference(user), hex(points[start])
        assert message_body(user, 2, "updated", ["tags"], "e1", 9) == _reference(user, 2, "updated", ["tags"], "e1", 9)
