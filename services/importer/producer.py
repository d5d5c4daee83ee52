"""Publishing an import's messages fast and in order.

Every message of an import is keyed by its channel (CONTRACT), so all go to one
partition, computed once (aiokafka hashes keys in Python, ~8 µs each). Rows are packed
into record batches and shipped with `send_batch`, a bounded number in flight;
aiokafka keeps one request in flight per partition, so the partition's order is the
order of `add` calls. Idempotence is off: the embedded tansu broker refuses
idempotent producers (docs/design.md); duplicates from retries are harmless, since the
projection applies each eventId once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from services.platform.kafka import producer_options

_BATCH_BYTES = 512 * 1024
_IN_FLIGHT = 8


class ImportProducer:
    def __init__(self, bootstrap: str, topic: str, channel_id: str) -> None:
        self.topic = topic
        self.key = channel_id.encode()
        self.producer = AIOKafkaProducer(
            **producer_options(bootstrap),
            enable_idempotence=False,
            acks="all",
            linger_ms=5,
            max_batch_size=_BATCH_BYTES,
            max_request_size=4 * _BATCH_BYTES,
        )
        self.partition = 0
        self._batch: Any = None
        self._in_flight: deque[asyncio.Future[object]] = deque()
        self.sent = 0  # messages acknowledged by the broker
        self.rows = 0  # records added to batches (the import's rows)
        # (offset of a shipped batch's last record, rows added up to it), as acknowledged:
        # how far the service got in our rows, from the offset it stored (window.py).
        self._landed: deque[tuple[int, int]] = deque()
        self._passed = 0

    async def start(self) -> None:
        await self.producer.start()
        partitions = sorted(await self.producer.partitions_for(self.topic))
        self.partition = DefaultPartitioner()(self.key, partitions, partitions)
        self._batch = self.producer.create_batch()

    async def stop(self) -> None:
        await self.producer.stop()

    async def send_now(self, value: bytes) -> None:
        """Ship what is batched, then `value`, and wait until the broker has all of it."""
        await self.flush()
        fut = await self.producer.send(self.topic, value, key=self.key, partition=self.partition)
        await fut
        self.sent += 1

    def add(self, value: bytes, rows: int = 1) -> bool:
        """Append a record of `rows` rows to the open batch; False when it is full (`await
        ship()`, then add again: an empty batch takes any record, however large — sizes are
        checked by the caller)."""
        if self._batch.append(key=self.key, value=value, timestamp=None) is None:
            return False
        self.rows += rows
        return True

    async def ship(self) -> None:
        """Send the open batch and start a new one; waits while too many are in flight."""
        batch, self._batch = self._batch, self.producer.create_batch()
        if batch is None or batch.record_count() == 0:
            return
        count = batch.record_count()
        fut = await self.producer.send_batch(batch, self.topic, partition=self.partition)
        fut.add_done_callback(lambda f, n=count, through=self.rows: self._acked(f, n, through))
        self._in_flight.append(fut)
        while len(self._in_flight) > _IN_FLIGHT:
            await self._in_flight.popleft()

    def _acked(self, fut: asyncio.Future[Any], count: int, through: int) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self.sent += count
            self._landed.append((fut.result().offset + count - 1, through))

    def rows_passed(self, next_offset: int) -> int:
        """Rows of ours the service has gone past (applied, skipped as already applied,
        or dead-lettered), given the partition's offset it stored."""
        while self._landed and self._landed[0][0] < next_offset:
            self._passed = max(self._passed, self._landed.popleft()[1])
        return self._passed

    async def flush(self) -> None:
        """Ship the open batch and wait for every batch in flight (raises their errors)."""
        await self.ship()
        while self._in_flight:
            await self._in_flight.popleft()
