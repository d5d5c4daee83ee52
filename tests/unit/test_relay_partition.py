"""The relay remembers which partition a key goes to (aiokafka's murmur2 is pure Python):
the choice must stay exactly the default partitioner's, or a user's messages would change
partition and lose their order (docs/contract.md "user-changed": ordered per user)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given, settings
from hypothesis import strategies as st

from services.relay import partitioner
from services.relay import relay as relay_mod
from services.relay.relay import Relay


def _relay() -> Relay:
    async def make() -> Relay:
        r = Relay(None, "127.0.0.1:1", "lock")  # type: ignore[arg-type]  # no connection is made
        await r.producer.stop()  # never started; _partition needs no broker
        return r

    return asyncio.run(make())


RELAY = _relay()


@settings(max_examples=300)
@given(st.binary(min_size=0, max_size=80), st.integers(min_value=1, max_value=64), st.integers(min_value=1, max_value=3))
def test_relay_partition_is_the_default_partitioners_choice(key: bytes, n: int, times: int) -> None:
    partitions = list(range(n))
    expected = DefaultPartitioner()(key, partitions, partitions)
    for _ in range(times):  # remembered or not, the same answer
        assert RELAY._partition(key, partitions) == expected


def test_relay_partition_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    r = _relay()
    monkeypatch.setattr(relay_mod, "_KEYS_REMEMBERED", 50)
    for i in range(150):
        r._partition(b"u_%d" % i, list(range(8)))
        assert len(r._partitions_of_key) <= 50


@settings(max_examples=500)
@given(st.binary(min_size=0, max_size=300))
def test_relay_murmur2_is_aiokafkas(key: bytes) -> None:
    """The relay's faster murmur2 gives aiokafka's hash for any key, every length (the
    words read at once, the 1–3 trailing bytes, keys past the precompiled word counts)."""
    from aiokafka.partitioner import murmur2

    assert partitioner.murmur2(key) == murmur2(key)


def test_relay_murmur2_of_user_keys_is_aiokafkas() -> None:
    """The keys the relay sends most (`channelId:userId`), each length around them."""
    from aiokafka.partitioner import murmur2

    for n in range(200):
        key = f"ch_{n}:{'u' * n}-{n * 7919:x}".encode()
        assert partitioner.murmur2(key) == murmur2(key)


def test_relay_murmur2_of_extreme_words_is_aiokafkas() -> None:
    """Words and tails of all ones and all zeros, every length to past the precompiled
    word counts: the compiled hash takes its 32-bit products by 16-bit halves, and a
    carry lost there shows first on words of all ones."""
    from aiokafka.partitioner import murmur2

    for n in range(300):
        for key in (b"\xff" * n, b"\x00" * n, b"\x80" * n, bytes(range(256))[:n]):
            assert partitioner.murmur2(key) == murmur2(key)


@settings(max_examples=500)
@given(st.one_of(st.none(), st.text(max_size=60)), st.one_of(st.none(), st.binary(max_size=3000)), st.integers(min_value=0, max_value=4000))
def test_a_message_the_relay_sends_unestimated_is_within_the_limit(key: str | None, value: bytes | None, limit: int) -> None:
    """The relay skips the producer's size estimate only when the lengths prove the
    message fits: whatever it lets through unestimated, the estimate keeps within the
    limit (else a message over it would be sent, refused, and not parked as too large)."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    if relay_mod._surely_fits(key, value, limit):
        assert DefaultRecordBatchBuilder.estimate_size_in_bytes(key.encode() if key is not None else None, value, []) <= limit


@settings(max_examples=300)
@given(st.lists(st.text(max_size=40), max_size=20), st.integers(min_value=1, max_value=24), st.integers(1, 5))
def test_a_rows_keys_go_where_the_default_partitioner_sends_them(keys: list[str], n: int, remembered: int) -> None:
    """issue 14, session 15: `keyed` (the relay's per-row step, compiled) encodes each key
    as UTF-8 and gives it the default partitioner's partition, remembered or not, and
    never remembers more than it is told (C: ordered per user)."""
    partitions = list(range(n))
    memo: dict[tuple[bytes, int], int] = {}
    for _ in range(2):
        encoded, chosen = partitioner.keyed(keys, partitions, memo, remembered)
        assert encoded == [k.encode() for k in keys]
        assert chosen == [DefaultPartitioner()(k.encode(), partitions, partitions) for k in keys]
        assert len(memo) <= remembered
        assert all(memo[key] == DefaultPartitioner()(key[0], partitions, partitions) for key in memo)


def test_keyed_shares_the_relays_memory_and_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """The memo `keyed` fills is the relay's own (`_partition` reads the same choice), and
    the relay's bound applies to it."""
    r = _relay()
    partitions = list(range(12))
    keys = [f"ch:u_{i}" for i in range(40)]
    _encoded, chosen = partitioner.keyed(keys, partitions, r._partitions_of_key, relay_mod._KEYS_REMEMBERED)
    assert len(r._partitions_of_key) == 40
    assert [r._partition(k.encode(), partitions) for k in keys] == chosen
    partitioner.keyed([f"x{i}" for i in range(100)], partitions, r._partitions_of_key, 50)
    assert len(r._partitions_of_key) <= 50
