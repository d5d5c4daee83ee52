"""The projection's loading keys of an SDK fact (issue 14 item 2: ids and keys computed
once per fact). `batch._keys_of` reads an SDK fact's own fields (`_sdk_keys`) instead of
asking every fact for every field any type may have; both readings must name the same
users and identity keys, or a batch would run the core without a user it needs."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.projection_bench import Stream
from contracts.decode import decode_inbound
from contracts.inbound import parse_inbound
from services.domain.core import Fact
from services.projection import batch
from tests.unit.test_core_differential import Builder, _sdk_streams, _streams


def _general(fact: Fact, monkeypatch: pytest.MonkeyPatch) -> Any:
    """`_keys_of` as it reads a command: every field any fact type may have."""
    with monkeypatch.context() as m:
        m.setattr(batch, "_SDK", frozenset())
        return batch._keys_of(fact)


def test_the_bench_stream_loads_the_same_keys_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both decoders' messages (msgspec structs and pydantic models) of the bench's SDK
    stream: visits with members and profiles, chats with contacts, contact forms."""
    for _channel, _event, raw in Stream(3).events(3_000):
        for msg in (decode_inbound("sdk-events", raw), parse_inbound("sdk-events", raw)):
            fact = Fact(msg, msg.occurredAt)
            assert batch._keys_of(fact) == _general(fact, monkeypatch)


@settings(max_examples=60, deadline=None)
@given(st.one_of(_sdk_streams, _streams))
def test_generated_streams_load_the_same_keys_both_ways(stream: list[Any]) -> None:
    """The differential test's facts (placeholders, invalid contacts, profiles with
    non-text contact values, every fact type)."""
    builder = Builder()
    with pytest.MonkeyPatch.context() as monkeypatch:
        for channel, gap, step, _pick in stream:
            for msg in builder.facts(channel, gap, step, []):
                fact = Fact(msg, msg.occurredAt)
                assert batch._keys_of(fact) == _general(fact, monkeypatch)
