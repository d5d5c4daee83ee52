"""Issue 14, item 1: the projection's msgspec decoder (contracts/decode.py's structs,
services/projection/decoding.py's checks, compiled with the core since session 11) and
the pydantic door (contracts.inbound.parse_inbound) accept the same records with equal
values and refuse the same records with the same code and reason — for arbitrary
bytes, for messages generated from the JSON Schemas and mutated the hostile ways of
tests/support/fuzz.py, and for values at and past every limit of the door (the limits
of docs/contract.md "Limits"; the strictness of C4/P2's typed values)."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.inbound import (
    MAX_CONTACT,
    MAX_ID,
    MAX_PROPERTIES_BYTES,
    MAX_TEXT,
    MAX_VALUE,
    InboundError,
    parse_inbound,
)
from services.domain.sessions import DEVICE_KEYS
from services.projection.decoding import decode_inbound
from tests.support import fuzz

KINDS = ["sdk-events", "import-rows", "commands"]


def _typed(value: Any) -> Any:
    """A form in which 1, 1.0 and True differ (== alone would call them equal)."""
    if hasattr(value, "model_dump"):
        return ("object", _typed(value.model_dump()))
    if type(value) is dict:
        return ("dict", [(_typed(k), _typed(v)) for k, v in value.items()])
    if type(value) in (list, tuple):
        return ("list", [_typed(v) for v in value])
    return (type(value).__name__, value)


def _outcome(decode: Any, kind: str, raw: bytes) -> Any:
    try:
        msg = decode(kind, raw)
    except InboundError as err:
        return ("refused", err.code, err.message)
    return ("accepted", msg.type, _typed(msg))


def assert_same(kind: str, raw: bytes) -> None:
    old, new = _outcome(parse_inbound, kind, raw), _outcome(decode_inbound, kind, raw)
    assert new == old, raw[:500]


def _fast(kind: str, raw: bytes) -> bool:
    try:
        return not hasattr(type(decode_inbound(kind, raw)), "model_fields")
    except InboundError:
        return False


# -------------------------------------------------------------------------- arbitrary


@given(st.sampled_from(KINDS), st.binary(max_size=300))
def test_decode_any_bytes_same_outcome_as_the_door(kind: str, raw: bytes) -> None:
    assert_same(kind, raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=2**32), st.integers(min_value=1, max_value=20))
def test_decode_hostile_records_same_outcome_as_the_door(seed: int, n: int) -> None:
    """The fuzzing test's records (half valid from the schemas, half mutated)."""
    gen = fuzz.Generator(seed)
    for _ in range(n):
        h = gen.record()
        assert_same(h.kind, h.value or b"")


# ------------------------------------------------------------- values near the limits

EDGE_STRINGS = st.one_of(
    st.sampled_from(["", ".", "a.", ".a", "a.b", "a\n", "\n", " ", "é", "😀", "\ud7ff", "a\nb."]),
    st.sampled_from([MAX_ID, MAX_TEXT, MAX_CONTACT, MAX_VALUE]).flatmap(
        lambda n: st.sampled_from(["x" * n, "x" * (n + 1), "😀" * n, "😀" * (n + 1)])
    ),
    st.text(max_size=12),
)
EDGE_NUMBERS = st.one_of(
    st.sampled_from([0, 1, -1, 2, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), 0.0, -0.0, 1.0, 1.5, 1e300]),
    st.integers(min_value=-(2**64) + 1, max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)
SCALARS = st.one_of(st.none(), st.booleans(), EDGE_NUMBERS, EDGE_STRINGS)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(EDGE_STRINGS, inner, max_size=3),
    max_leaves=12,
)
FIELDS = [
    "eventId", "channelId", "occurredAt", "veilId", "platform", "memberId", "memberHash", "device", "language",
    "city", "country", "profile", "name", "chatId", "medium", "message", "contact", "email", "mobileNumber",
    "properties", "importId", "rowNumber", "cells", "rowError", "rows", "abandoned", "mode", "key", "blank",
    "tag", "actor", "fileName", "columns", "extra", "userId", "tags", "unsubscribeEmail", "unsubscribeTexting",
    "hasPushToken", "sourceUserId", "targetUserId", "campaignId",
]
BASE = {
    "sdk-events": ["boot", "login", "chat", "contact", "track"],
    "import-rows": ["import.started", "import.row", "import.finished"],
    # The commands with a struct (contracts/decode.py), and two that keep the door's path.
    "commands": ["profile.update", "member.upsert", "lead.create", "unification.approve", "user.block",
                 "user.unblock", "user.delete", "member.delete", "marketing.delivered", "unification.cancel",
                 "grade.define", "lookup.result"],
}


def _valid(wire: str, rng: random.Random) -> dict[str, Any]:
    gen = fuzz.Generator(rng.randrange(2**32))
    return gen.valid(wire)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([(k, w) for k, ws in BASE.items() for w in ws]),
    st.integers(min_value=0, max_value=2**32),
    st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=3),
    st.lists(st.sampled_from(FIELDS), max_size=2),
)
def test_decode_valid_messages_with_edge_values_same_outcome(
    kind_wire: tuple[str, str], seed: int, changes: dict[str, Any], dropped: list[str],
) -> None:
    kind, wire = kind_wire
    body = _valid(wire, random.Random(seed))
    body.update(changes)
    for name in dropped:
        body.pop(name, None)
    assert_same(kind, json.dumps(body).encode())  # json: ints past 64 bits too (orjson reads them as floats)


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(["boot", "login"]),
    st.dictionaries(EDGE_STRINGS, VALUES, max_size=4),
)
def test_decode_profiles_same_outcome(wire: str, profile: dict[str, Any]) -> None:
    """P2's value union and the profile key rule, which the fast path checks by hand."""
    body = {"eventId": "e", "type": wire, "channelId": "c", "occurredAt": 1, "veilId": "v", "memberId": "m",
            "platform": "web", "profile": profile}
    assert_same("sdk-events", json.dumps(body).encode())


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(["profile.update", "member.upsert", "lead.create"]),
    st.dictionaries(st.sampled_from(["email", "mobileNumber"]) | EDGE_STRINGS, VALUES, max_size=4),
)
def test_decode_command_profiles_same_outcome(wire: str, profile: dict[str, Any]) -> None:
    """The same rules on the commands' profiles (C4, P2), and lead.create's own: a
    contact to create the lead by, as a string."""
    body = {"eventId": "e", "type": wire, "channelId": "c", "occurredAt": 1, "actor": "api", "userId": "u",
            "memberId": "m", "profile": profile}
    body = {k: v for k, v in body.items() if k in _COMMAND_FIELDS[wire]}
    assert_same("commands", json.dumps(body).encode())


_COMMAND_FIELDS = {
    "profile.update": {"eventId", "type", "channelId", "occurredAt", "actor", "userId", "profile"},
    "member.upsert": {"eventId", "type", "channelId", "occurredAt", "actor", "memberId", "profile"},
    "lead.create": {"eventId", "type", "channelId", "occurredAt", "actor", "profile"},
}


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(EDGE_STRINGS, VALUES, max_size=4), st.integers(min_value=0, max_value=3))
def test_decode_track_properties_same_outcome(properties: dict[str, Any], padding: int) -> None:
    if padding:  # around the 16 KiB limit of track.properties
        properties["pad"] = "p" * (MAX_PROPERTIES_BYTES - 20 + 4 * padding)
    body = {"eventId": "e", "type": "track", "channelId": "c", "occurredAt": 1, "veilId": "v", "name": "n",
            "properties": properties}
    assert_same("sdk-events", json.dumps(body).encode())


# ------------------------------------------------------------------------- pinned cases


@pytest.mark.parametrize("body", [
    {"type": "boot", "veilId": "v", "platform": "web"},
    {"type": "boot", "veilId": "v", "platform": "web", "device": {"os": "iOS"}, "profile": {"a.b": [1, 2.5]}},
    {"type": "login", "veilId": "v", "memberId": "m", "profile": {"x": [], "y": None, "z": True}},
    {"type": "chat", "veilId": "v", "chatId": "c", "medium": "email", "contact": {"email": "a@b"}},
    {"type": "contact", "veilId": "v", "mobileNumber": "+81"},
    {"type": "track", "veilId": "v", "name": "n", "properties": {"k": {"n": [1, "x"]}}},
    {"type": "import.row", "importId": "i", "rowNumber": 2, "cells": {"memberId": "m"}},
    {"type": "import.started", "importId": "i", "mode": "member", "key": "memberId", "blank": "keep",
     "actor": "a", "fileName": "f.csv", "columns": [{"column": "c", "key": "memberId"}]},
    {"type": "import.finished", "importId": "i", "rows": 3},
    {"type": "profile.update", "actor": "staff-1", "userId": "u", "profile": {"mobileNumber": "+8190", "n": [1, 2.5]},
     "name": "N", "tags": ["vip"], "unsubscribeEmail": True, "unsubscribeTexting": False, "hasPushToken": None},
    {"type": "profile.update", "actor": "staff-1", "userId": "u", "profile": {}},
    {"type": "member.upsert", "actor": "api", "memberId": "m", "profile": {"email": "a@b", "plan": "gold"}},
    {"type": "member.upsert", "actor": "api", "memberId": "m", "profile": {}, "name": None, "hasPushToken": True},
    {"type": "lead.create", "actor": "api", "profile": {"mobileNumber": "+81", "x": None}},
    {"type": "unification.approve", "actor": "staff-1", "sourceUserId": "a", "targetUserId": "b"},
    {"type": "unification.cancel", "actor": "staff-1", "sourceUserId": "a"},
    {"type": "user.block", "actor": "staff-1", "userId": "u"},
    {"type": "user.unblock", "actor": "staff-1", "userId": "u"},
    {"type": "user.delete", "actor": "system", "userId": "u"},
    {"type": "member.delete", "actor": "api", "memberId": "m"},
    {"type": "marketing.delivered", "actor": "system", "userId": "u", "campaignId": "cmp-1"},
])
def test_decode_common_messages_take_the_fast_path_with_equal_values(body: dict[str, Any]) -> None:
    body = {"eventId": "e", "channelId": "c", "occurredAt": 1, **body}
    kind = _kind_of(body["type"])
    raw = orjson.dumps(body)
    assert_same(kind, raw)
    assert _fast(kind, raw)  # not the fallback: the differential tests above would pass without it


@pytest.mark.parametrize("body", [
    {"type": "contact", "veilId": "v"},  # missing_contact, a model validator
    {"type": "chat", "veilId": "v", "chatId": "c", "medium": "phone", "contact": {}},
    {"type": "boot", "veilId": "v", "platform": "web", "profile": {".a": 1}},
    {"type": "boot", "veilId": "v", "platform": "web", "profile": {"a": [1, "x"]}},
    {"type": "boot", "veilId": "v", "platform": "web", "profile": {"a": [True]}},
    {"type": "boot", "veilId": "v", "platform": "web", "occurredAt": True},
    {"type": "boot", "veilId": "v", "platform": "web", "occurredAt": 1.0},
    {"type": "boot", "veilId": "v", "platform": "tv"},
    {"type": "boot", "veilId": "v" * (MAX_ID + 1), "platform": "web"},
    {"type": "import.row", "importId": "i", "rowNumber": 2, "cells": {"a": "x" * (MAX_VALUE + 1)}},
    {"type": "import.row", "importId": "i", "rowNumber": 1, "cells": {}},
    # A cell's key is Text: the struct reads it as plain str (msgspec's key cache) and
    # decoding.py's `_cells_ok` bounds it (issue 14, session 18).
    {"type": "import.row", "importId": "i", "rowNumber": 2, "cells": {"k" * (MAX_TEXT + 1): "x"}},
    {"type": "track", "veilId": "v", "name": "n", "properties": {"p": "x" * MAX_PROPERTIES_BYTES}},
    {"type": "lead.create", "actor": "api", "profile": {"email": 1, "name": "x"}},  # missing_contact, a validator
    {"type": "lead.create", "actor": "api", "profile": {}},
    {"type": "profile.update", "actor": "", "userId": "u", "profile": {}},
    {"type": "profile.update", "actor": "a", "userId": "u"},
    {"type": "profile.update", "actor": "a", "userId": "u", "profile": {"a.": 1}},
    {"type": "profile.update", "actor": "a", "userId": "u", "profile": {}, "tags": ["t" * (MAX_ID + 1)]},
    {"type": "profile.update", "actor": "a", "userId": "u", "profile": {}, "unsubscribeEmail": 1},
    {"type": "profile.update", "actor": "a", "userId": "u", "profile": {}, "memberId": "m"},
    {"type": "member.upsert", "actor": "a", "memberId": "m", "profile": {"a": {"b": 1}}},
    {"type": "member.upsert", "actor": "a", "memberId": "m", "profile": {"a": "x" * (MAX_VALUE + 1)}},
    {"type": "marketing.delivered", "actor": "a", "userId": "u"},
    {"type": "user.block", "actor": "a", "userId": "u" * (MAX_ID + 1)},
    {"type": "grade.define", "actor": "a", "name": "gold", "colour": "#ffffff"},  # no struct: the door's path
    {"type": "teleport", "actor": "a", "userId": "u"},
])
def test_decode_refusals_are_worded_by_the_door(body: dict[str, Any]) -> None:
    body = {"eventId": "e", "channelId": "c", "occurredAt": 1, **body}
    kind = _kind_of(body["type"])
    assert_same(kind, json.dumps(body).encode())  # json: ints past 64 bits too (orjson reads them as floats)


def _kind_of(wire: str) -> str:
    if wire.startswith("import."):
        return "import-rows"
    return "sdk-events" if wire in BASE["sdk-events"] else "commands"


@pytest.mark.parametrize("raw", [
    b'{"eventId":"e","type":"boot","channelId":"c","occurredAt":1,"veilId":"v","platform":"web","type":"login"}',
    b'{"eventId":"e","type":"login","channelId":"c","occurredAt":1,"veilId":"v","memberId":"m","type":"boot"}',
    b'{"eventId":"e","type":"boot","channelId":"c","occurredAt":1,"veilId":"v","platform":"web","veilId":"w"}',
    b'{"eventId":"e","type":"boot","channelId":"c","occurredAt":1,"veilId":"v","platform":"web","profile":{"a":1,"a":"x"}}',
    b'{"eventId":"e","type":"boot","channelId":"c","occurredAt":1,"veilId":"v","platform":"web","profile":{"a":123456789012345678901234567890}}',
    b'{"eventId":"e","type":"boot","channelId":"c","occurredAt":1,"veilId":"v","platform":"web","profile":{"a":-9223372036854775809}}',
    b'{"eventId":"e","type":"boot","channelId":"c","occurredAt":1,"veilId":"v","platform":"web","profile":{"a":18446744073709551616}}',
    b'{"eventId":"e","type":"track","channelId":"c","occurredAt":1,"veilId":"v","name":"n","properties":{"a":[1e2,-0,-0.0,18446744073709551616]}}',
    b'{"eventId":"e","type":"boot","channelId":"c","occurredAt":1,"veilId":"\\udc00","platform":"web"}',
    b'{"eventId":"e","type":"boot","channelId":"c","occurredAt":1,"veilId":"\\ud83d\\ude00","platform":"web"}',
    b'{"eventId":"e","type":"boot","channelId":"c","occurredAt":1,"veilId":"\\u00e9\\u3000","platform":"web"}',
    b'{"eventId":"e","type":"boot","channelId":"c","occurredAt":1,"veilId":"\xed\xa0\x80","platform":"web"}',
    b' {"eventId":"e","type":"boot","channelId":"c","occurredAt":1,"veilId":"v","platform":"web"}\n',
    b'{"eventId":"e","type":"boot","channelId":"c","occurredAt":1e3,"veilId":"v","platform":"web"}',
    b'{"eventId":"e","type":"boot","channelId":"c","occurredAt":-0,"veilId":"v","platform":"web"}',
    b'{"eventId":"e","type":"boot","channelId":"c","occurredAt":1,"veilId":"v","platform":"web"}{}',
    b'{"eventId":"e","type":["boot"],"channelId":"c","occurredAt":1,"veilId":"v","platform":"web"}',
    b'{"eventId":"e","channelId":"c","occurredAt":1,"veilId":"v","platform":"web"}',
    b'[{"eventId":"e","type":"boot","channelId":"c","occurredAt":1,"veilId":"v","platform":"web"}]',
    b'{"eventId":"e","type":"user.block","channelId":"c","occurredAt":1,"actor":"a","userId":"u","type":"user.unblock"}',
    b'{"eventId":"e","type":"user.block","channelId":"c","occurredAt":1,"actor":"a","userId":"u","userId":"w"}',
    b'{"eventId":"e","type":"member.upsert","channelId":"c","occurredAt":1,"actor":"a","memberId":"m","profile":{"a":1,"a":"x"}}',
    b'{"eventId":"e","type":"member.upsert","channelId":"c","occurredAt":1,"actor":"a","memberId":"m","profile":{"a":18446744073709551616}}',
    b'{"eventId":"e","type":"member.upsert","channelId":"c","occurredAt":1,"actor":"a","memberId":"m","profile":{"a":[1,1e400]}}',
    b'{"eventId":"e","type":"lead.create","channelId":"c","occurredAt":1,"actor":"a","profile":{"email":"\\ud800"}}',
])
def test_decode_json_corners_same_outcome(raw: bytes) -> None:
    """Where orjson (the door's reader) and msgspec read JSON differently: duplicate keys,
    integers past 64 bits, surrogates, trailing data."""
    for kind in ("sdk-events", "import-rows", "commands"):
        assert_same(kind, raw)


# ----------------------------------------------------------------- through the core


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=2**32), st.integers(min_value=5, max_value=40))
def test_decode_structs_drive_the_core_as_the_models_do(seed: int, n: int) -> None:
    """The projection hands the core structs, the domain's unit tests hand it models:
    the same hostile stream (fuzz.py) gives the same outcomes, publications and users
    whichever decoder read it (S1/S2 sdk facts, I-rules import rows)."""
    from services.domain import core
    from services.domain.channel import ChannelSettings
    from services.domain.core import Fact
    from services.domain.directory import Directory

    gen = fuzz.Generator(seed)
    worlds = [(parse_inbound, Directory()), (decode_inbound, Directory())]
    channels = {ch: ChannelSettings(ch, member_hash_secret=fuzz.HASH_SECRET if ch == "fz_hashed" else None)
                for ch in fuzz.CHANNELS}
    for _ in range(n):
        h = gen.record()
        seen = []
        for decode, directory in worlds:
            try:
                msg = decode(h.kind, h.value or b"")
            except InboundError as err:
                seen.append(("refused", err.code))
                continue
            settings_ = channels.setdefault(msg.channelId, ChannelSettings(msg.channelId))
            out = core.apply(directory, Fact(msg, msg.occurredAt), settings_)
            rejection = None if out.rejection is None else (out.rejection.code, out.rejection.reason)
            seen.append((rejection, [(p.key, p.value) for p in out.publications], len(out.activities),
                         [(r.code, r.reason) for r in out.notices]))
        assert seen[0] == seen[1], h
    users = [{u.id: u.to_json() for u in d.users()} for _, d in worlds]
    assert users[0] == users[1]


@pytest.mark.parametrize("device", [
    {},
    {"os": "ios", "osName": "iOS", "device": "iPhone", "appName": "shop", "appVersion": "3.2.1"},
    {"browser": "chrome", "browserName": "Chrome", "os": "mac", "osName": "macOS"},
    {key: f"{key}-{i}" for i, key in enumerate(DEVICE_KEYS)},
])
def test_a_devices_fields_in_one_read_are_the_models_in_device_keys_order(device: dict[str, Any]) -> None:
    """S2: the core compares and records a boot's device by `device.as_tuple`, zipped with
    DEVICE_KEYS (issue 14, session 12: one C call for the struct instead of seven
    generic reads): the struct's and the model's must be each field by its name."""
    raw = orjson.dumps({"eventId": "e", "type": "boot", "channelId": "c", "occurredAt": 1, "veilId": "v",
                        "platform": "web", "device": device})
    fast, model = decode_inbound("sdk-events", raw), parse_inbound("sdk-events", raw)
    assert _fast("sdk-events", raw)
    by_name = tuple(device.get(key) for key in DEVICE_KEYS)
    assert fast.device.as_tuple == model.device.as_tuple == by_name  # type: ignore[union-attr]
