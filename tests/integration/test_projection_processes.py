"""Issue 14 (live ≥ 20,000 events/s): several projection processes on one machine.

- The load-balancing assignor (services/projection/assignor.py) splits a skewed backlog
  evenly between two members of the group, co-partitioned (partition p of every inbound
  topic on one member: the canonical merge), where the range assignor's blocks do not.
- `UNIFIER_PROJECTION_PROCESSES=2`: `unifier run` applies in two processes of one group
  and ends in the state a rebuild gives; SIGTERM stops both; an extra process that dies
  stops the service (exit 1); a SIGKILLed main process takes the extra one along.
"""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from contracts.topics import Topics
from services.platform.config import Settings
from services.platform.topics import ensure_topics
from services.projection.consumer import Projection
from services.replay import workload
from tests.integration.test_faults import Service, assert_state_is_a_rebuild, service, services  # noqa: F401
from tests.integration.test_replay import CHANNELS, configure_hashed_channels, publish_rounds
from tests.support.infra import wait_for

pytestmark = pytest.mark.integration

PARTITIONS = 12
# Records waiting per sdk-events partition: p6 alone is as heavy as six others. Range's
# blocks 0–5 / 6–11 carry 120 / 220 (65 %); a split by load can reach 160 / 180.
BACKLOG = {p: 120 if p == 6 else 20 for p in range(PARTITIONS)}
APPLIED_OF_P6 = 60  # half of p6 already applied: it weighs the same (backlog + applied)


async def _publish_backlog(settings: Settings, topics: Topics) -> None:
    assert settings.kafka_bootstrap
    await ensure_topics(settings.kafka_bootstrap, settings.topic_prefix, PARTITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=False, linger_ms=5)
    await producer.start()
    try:
        for p, n in BACKLOG.items():
            for _ in range(n):
                await producer.send(topics.sdk_events, value=b"{}", key=f"ch_{p}".encode(), partition=p)
        await producer.send(topics.commands, value=b"{}", key=b"ch_0", partition=0)  # another topic counts too
        await producer.flush()
    finally:
        await producer.stop()


def _gated(projection: Projection) -> Projection:
    """The member joins and is assigned partitions but fetches nothing: the backlog stays."""
    async def nothing(*_a: Any, **_kw: Any) -> dict[TopicPartition, list[Any]]:
        await asyncio.sleep(0.02)  # getmany's own wait (timeout_ms) with nothing fetched; not a wait for a condition
        return {}

    projection.consumer.getmany = nothing  # type: ignore[method-assign]
    return projection


def _settled(members: list[Projection], topics: Topics) -> list[list[int]] | None:
    """Each member's sdk-events partitions once every (topic, partition) has exactly one owner."""
    owned = [sorted(m.consumer.assignment()) for m in members]
    flat = [tp for tps in owned for tp in tps]
    if not all(owned) or len(flat) != len(set(flat)) or len(flat) != len(topics.inbound) * PARTITIONS:
        return None
    for tps in owned:  # co-partitioned: the same numbers on every inbound topic
        numbers = {t: sorted(tp.partition for tp in tps if tp.topic == t) for t in topics.inbound}
        assert len({tuple(ns) for ns in numbers.values()}) == 1, numbers
    return [sorted(tp.partition for tp in tps if tp.topic == topics.sdk_events) for tps in owned]


async def _split(settings: Settings, pool: asyncpg.Pool, assignor: str) -> list[int]:
    """Backlog records per member when two gated members of one group have settled."""
    topics = Topics(settings.topic_prefix)
    group = f"{settings.consumer_group}-{assignor}"
    members = [
        _gated(Projection(pool, settings.kafka_bootstrap or "", topics, group, 500,
                          session_timeout_ms=settings.kafka_session_timeout_ms, assignor=assignor))
        for _ in range(2)
    ]
    stop = asyncio.Event()
    running = [asyncio.create_task(members[0].run(stop))]
    try:
        await wait_for(lambda: members[0].consumer.assignment(), timeout=60, message="the first member assigned")
        running.append(asyncio.create_task(members[1].run(stop)))  # joins later: a rebalance
        shares = await wait_for(lambda: _settled(members, topics), timeout=60, message=f"two members settled ({assignor})")
    finally:
        stop.set()
        await asyncio.gather(*running)
    return sorted(sum(BACKLOG[p] for p in ps) for ps in shares)


async def test_two_members_split_a_skewed_backlog_evenly_where_range_blocks_do_not(
    settings: Settings, pool: asyncpg.Pool,
) -> None:
    topics = Topics(settings.topic_prefix)
    await _publish_backlog(settings, topics)
    await pool.execute("INSERT INTO inbox_offsets (topic, partition, next_offset) VALUES ($1, 6, $2)",
                       topics.sdk_events, APPLIED_OF_P6)
    total = sum(BACKLOG.values())
    by_load = await _split(settings, pool, "load")
    assert max(by_load) / total <= 0.55, by_load  # 180 / 340 at best with these weights
    by_range = await _split(settings, pool, "range")
    assert max(by_range) / total >= 0.64, by_range  # what the range assignor gives: 220 / 340


def _latest_generation(svc: Service) -> list[str]:
    """The assignments logged by the processes of the latest generation (one line each)."""
    text = svc.text()
    gens = [int(g) for g in re.findall(r"Joined group '[^']*' \(generation (\d+)\)", text)]
    if not gens:
        return []
    last = max(gens)
    after = text[text.index(f"(generation {last})"):]
    return re.findall(r"Setting newly assigned partitions (.*?) for group", after)


def _two_processes_assigned(svc: Service) -> bool:
    parts = _latest_generation(svc)
    return len(parts) == 2 and all(p not in ("set()", "{}", "frozenset()") for p in parts)


def _extra_pids(svc: Service) -> list[int]:
    found = re.search(r"projection in \d+ processes: this one and \[([\d, ]+)\]", svc.text())
    return [int(x) for x in found[1].split(",")] if found else []


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_unifier_run_with_two_projection_processes_ends_in_the_rebuilt_state(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path, services: list[Service],  # noqa: F811
) -> None:
    """Issue 14: the extra process applies its share (both processes are assigned
    partitions and the state is the rebuild's), and SIGTERM stops both with exit 0."""
    await configure_hashed_channels(pool)
    svc = await service(settings, tmp_path, services, "two", UNIFIER_PROJECTION_PROCESSES="2").start()
    [extra] = await wait_for(lambda: _extra_pids(svc), timeout=30, message="the extra process started")
    await wait_for(lambda: _two_processes_assigned(svc), timeout=60, message="both processes assigned partitions")
    rounds = workload.mixed_rounds(3000, rounds=4, channels=CHANNELS, poison_every=101)
    await publish_rounds(settings, pool, rounds)
    assert _two_processes_assigned(svc), "a rebalance while applying: a process left the group"
    assert await svc.stop() == 0, svc.text()[-3000:]
    assert _gone(extra)
    await assert_state_is_a_rebuild(settings)


async def test_a_dying_extra_process_stops_the_service_and_a_killed_main_one_takes_it_along(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path, services: list[Service],  # noqa: F811
) -> None:
    """Supervised as `unifier api --workers`: no half-capacity service that looks healthy;
    no orphan holding partitions beside the main process's replacement."""
    svc = await service(settings, tmp_path, services, "a", UNIFIER_PROJECTION_PROCESSES="2").start()
    [extra] = await wait_for(lambda: _extra_pids(svc), timeout=30, message="the extra process started")
    psutil.Process(extra).send_signal(signal.SIGKILL)
    assert await svc.wait() == 1
    assert svc.says("a projection process exited")

    again = await service(settings, tmp_path, services, "b", UNIFIER_PROJECTION_PROCESSES="2").start()
    [extra] = await wait_for(lambda: _extra_pids(again), timeout=30, message="the extra process started")
    await wait_for(lambda: _two_processes_assigned(again), timeout=60, message="both processes assigned partitions")
    again.signal(signal.SIGKILL)
    assert await again.wait() == -signal.SIGKILL
    await wait_for(lambda: _gone(extra), timeout=30, message="the extra process stopped with its parent")
