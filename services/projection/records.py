"""Inbound records and their canonical order.

Live consumption and replay both apply records in the same order: each partition in
offset order (never reordered: it is one channel's history), partitions and topics
merged by record timestamp, ties broken by topic, partition, offset (docs/design.md).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    timestamp: int  # broker/producer record time, epoch ms
    key: bytes | None
    value: bytes | None


def canonical_order(partitions: Iterable[Sequence[Record]]) -> list[Record]:
    """Merge per-partition runs (each already in offset order) by timestamp."""
    runs = [list(run) for run in partitions if run]
    return list(heapq.merge(*runs, key=lambda r: (r.timestamp, r.topic, r.partition, r.offset)))
