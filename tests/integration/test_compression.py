"""Compressed record batches (issue 14, session 24; docs/decisions.md, "Issue 14, session
24: compressed batches"): the service's producers send zstd batches by default
(UNIFIER_KAFKA_COMPRESSION) — what the broker stores and serves is then a fraction of the
bytes — and its consumers read batches an SDK producer compressed with any codec Kafka
has (aiokafka reads all but gzip through cramjam, a declared dependency: without it the
fetch of such a batch raises UnsupportedCodecError, before any record reaches the
dead-letter path). Against the real broker and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.consumer import fetcher
from aiokafka.record.default_records import DefaultRecordBatch

from contracts.topics import Topics
from services.platform import kafka
from services.platform.config import Settings
from services.platform.topics import ensure_topics
from tests.support.infra import wait_for
from tests.support.service import read_topic, running_service

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000
CODECS = {"none": 0, "gzip": DefaultRecordBatch.CODEC_GZIP, "snappy": DefaultRecordBatch.CODEC_SNAPPY,
          "lz4": DefaultRecordBatch.CODEC_LZ4, "zstd": DefaultRecordBatch.CODEC_ZSTD}


def member_boot(channel: str, n: int) -> dict[str, Any]:
    return {"eventId": f"boot-{n}", "type": "boot", "channelId": channel, "occurredAt": T0 + n * 60_000,
            "veilId": f"veil-{n}", "platform": "web", "memberId": f"mem-{n}"}


@contextmanager
def batch_codecs() -> Iterator[list[int]]:
    """The codec of every record batch this process's consumers fetch, in order (the
    fetcher's record reader, wrapped)."""
    seen: list[int] = []
    real = fetcher.MemoryRecords

    class Recording:
        def __init__(self, data: bytes) -> None:
            self.records = real(data)

        def __getattr__(self, name: str) -> Any:  # size_in_bytes, has_next, …
            return getattr(self.records, name)

        def next_batch(self) -> Any:
            batch = self.records.next_batch()
            if batch is not None:
                seen.append(batch.compression_type)
            return batch

    fetcher.MemoryRecords = Recording  # type: ignore[misc,assignment]
    try:
        yield seen
    finally:
        fetcher.MemoryRecords = real  # type: ignore[misc]


@pytest.mark.parametrize("codec", ["zstd", "none"])
async def test_facts_of_every_codec_are_applied_and_user_changed_goes_out_in_the_configured_one(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, codec: str,
) -> None:
    """Contract 1.4.0 (docs/contract.md, "Compression"): a member boot sent by an SDK
    producer in a batch of each codec is applied (C1: one member user each), and every
    user-changed batch the relay sends is in UNIFIER_KAFKA_COMPRESSION's codec (zstd by
    default; none when set so)."""
    monkeypatch.setattr(kafka, "_COMPRESSION", kafka.compression())  # use() below sets it for the process
    configured = settings.replace(kafka_compression=codec)
    topics = Topics(settings.topic_prefix)
    channel = f"ch_codec_{codec}"
    assert configured.kafka_bootstrap is not None
    await ensure_topics(configured.kafka_bootstrap, configured.topic_prefix, configured.partitions)
    async with running_service(configured):
        for n, sdk_codec in enumerate(c for c in CODECS if c != "none"):
            producer = AIOKafkaProducer(bootstrap_servers=configured.kafka_bootstrap, enable_idempotence=False,
                                        compression_type=sdk_codec)
            await producer.start()
            try:
                await producer.send_and_wait(topics.sdk_events, orjson.dumps(member_boot(channel, n)), key=channel.encode())
            finally:
                await producer.stop()

        async def four_members_published() -> bool:
            members = {v["user"]["memberId"] for _, v in await read_topic(configured, topics.user_changed)
                       if v and v.get("channelId") == channel and v.get("user")}
            return members == {f"mem-{n}" for n in range(4)}

        await wait_for(four_members_published, message="a member of each codec's boot published")
    with batch_codecs() as seen:
        published = [v for _, v in await read_topic(configured, topics.user_changed) if v and v.get("channelId") == channel]
    assert len(published) >= 4
    assert seen and set(seen) == {CODECS[codec]}, seen
