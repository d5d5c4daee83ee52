"""The default partitioner's hash (aiokafka's `murmur2`, the Java client's
`Utils.murmur2`): which partition a `user-changed` key goes to. Every `created` of an
import has a key the relay never saw, so this runs once a new user; in pure Python it
was the relay's largest cost per message (~3–9 µs). Compiled with the domain core
(services/compiled_core.py `COMPILED`), every step is a machine-word operation: a
compiled `int` stays a word only while each factor of a product is under 2**30, hence
the 32-bit products taken by 16-bit halves (`_times_m`, written out where it is used).
tests/unit/test_relay_partition.py holds it equal to aiokafka's, compiled and not."""

from __future__ import annotations

import struct
from typing import Final

_M_HI: Final = 0x5BD1  # murmur2's multiplier 0x5BD1E995, by 16-bit halves
_M_LO: Final = 0xE995
_MASK: Final = 0xFFFFFFFF
_LOW16: Final = 0xFFFF
_SEED: Final = 0x9747B28C
_WORDS = [struct.Struct(f"<{n}I").unpack_from for n in range(64)]  # keys are ~45 bytes


def _times_m(x: int) -> int:
    """x * 0x5BD1E995 mod 2**32, for 0 <= x < 2**32, from 16-bit halves (every factor
    and sum stays a machine word when compiled)."""
    lo = x & _LOW16
    return (lo * _M_LO + ((((x >> 16) * _M_LO + lo * _M_HI) & _LOW16) << 16)) & _MASK


def murmur2(data: bytes) -> int:
    """aiokafka.partitioner.murmur2 of `data`: the little-endian words read by one
    struct call, then the 1–3 trailing bytes."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    n4 = length >> 2
    words: tuple[int, ...] = (_WORDS[n4] if n4 < 64 else struct.Struct(f"<{n4}I").unpack_from)(data)
    for w in words:
        k = _times_m(w)
        k = _times_m(k ^ (k >> 24))
        h = _times_m(h) ^ k
    extra = length & 3
    if extra:
        tail = length & ~3
        if extra >= 3:
            h ^= data[tail + 2] << 16
        if extra >= 2:
            h ^= data[tail + 1] << 8
        h = _times_m(h ^ data[tail])
    h ^= h >> 13
    h = _times_m(h)
    return h ^ (h >> 15)


def partition_of(key: bytes, partitions: list[int]) -> int:
    """The default partitioner's choice for `key` among the sorted `partitions`."""
    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]


def keyed(
    keys: list[str], partitions: list[int], memo: dict[tuple[bytes, int], int], remembered: int,
) -> tuple[list[bytes], list[int]]:
    """Each text key encoded (UTF-8) and its partition, as `partition_of` chooses it,
    through `memo` ((key, partition count) -> partition), which is emptied when it
    holds `remembered` keys: the relay's per-message steps for a row's messages, in one
    compiled call (every `created` of an import has a key never seen; issue 14,
    session 15). tests/unit/test_relay_partition.py holds it equal to the default
    partitioner."""
    n = len(partitions)
    encoded: list[bytes] = []
    chosen: list[int] = []
    for text in keys:
        key = text.encode()
        mk = (key, n)
        partition = memo.get(mk)
        if partition is None:
            if len(memo) >= remembered:
                memo.clear()
            partition = partitions[(murmur2(key) & 0x7FFFFFFF) % n]
            memo[mk] = partition
        encoded.append(key)
        chosen.append(partition)
    return encoded, chosen
