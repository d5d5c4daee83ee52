"""Issue 11, item 5 at unit speed: the door and the core never let an exception out,
whatever the bytes (hypothesis); the integration test (tests/integration/test_fuzz.py)
sends the same hostile records through the real broker and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.inbound import InboundError, parse_inbound
from services.domain import core
from services.domain.channel import ChannelSettings
from services.domain.core import Fact
from services.domain.directory import Directory
from tests.support import fuzz

KINDS = st.sampled_from(["sdk-events", "commands", "import-rows"])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(KINDS, st.binary(max_size=300))
def test_door_any_bytes_are_a_message_or_an_inbound_error(kind: Any, raw: bytes) -> None:
    try:
        parse_inbound(kind, raw)
    except InboundError as err:
        assert err.code and err.message


@given(KINDS, st.sampled_from(sorted(fuzz.KIND_OF)), st.dictionaries(st.sampled_from(
    ["veilId", "memberId", "profile", "properties", "cells", "userId", "email", "name", "message", "contact"]
), JSON, max_size=4))
def test_door_any_json_in_any_field_is_a_message_or_an_inbound_error(kind: Any, wire: str, fields: dict[str, Any]) -> None:
    body = {"eventId": "e", "type": wire, "channelId": "c", "occurredAt": 1, **fields}
    try:
        msg = parse_inbound(kind, json.dumps(body).encode())  # orjson refuses ints past 64 bits
    except InboundError as err:
        assert err.code and err.message
        return
    assert "\x00" not in orjson.dumps(msg.model_dump()).decode().replace("\\u0000", "\x00")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=2**32), st.integers(min_value=1, max_value=30))
def test_core_hostile_facts_are_applied_or_rejected_never_raised(seed: int, n: int) -> None:
    """A run of hostile records over one directory: each accepted one is applied or
    rejected with a code; `internal_error` would mean a bug found (the seed says which)."""
    gen = fuzz.Generator(seed)
    directory = Directory()
    channels = {ch: ChannelSettings(ch, member_hash_secret=fuzz.HASH_SECRET if ch == "fz_hashed" else None)
                for ch in fuzz.CHANNELS}
    for _ in range(n):
        h = gen.record()
        try:
            msg = parse_inbound(h.kind, h.value or b"")  # type: ignore[arg-type]
        except InboundError:
            continue
        settings_ = channels.get(msg.channelId, ChannelSettings(msg.channelId))
        outcome = core.apply(directory, Fact(msg, msg.occurredAt), settings_)
        if outcome.rejection is not None:
            assert outcome.rejection.code != "internal_error", (seed, outcome.rejection.reason)
