"""Issue 5: faults, each test proving one thing. The service runs as `unifier run` in
a subprocess (as in production: signals, exit codes, a process that dies), fed a
deterministic stream (services/replay/workload.py) round by round.

The reference state is what a rebuild of the same log gives: `unifier replay
--dry-run` rebuilds into a scratch schema and must find no user that differs, and the
two digests must be equal (a rebuild equals an uninterrupted run of the same rounds:
test_replay.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import pytest_asyncio

import services.domain as domain
from contracts.topics import Topics
from services.platform.config import Settings
from services.platform.embedded import broker_binary, free_port
from services.projection.window import WINDOW_MS
from services.replay import workload
from services.replay.log import LogReader
from tests.integration.test_replay import (
    CHANNELS,
    UNIFIER,
    applied_offsets,
    cli,
    cli_env,
    configure_hashed_channels,
    publish_rounds,
)
from tests.support.infra import wait_for
from tests.support.service import read_topic, running_service

pytestmark = pytest.mark.integration


class Service:
    """`unifier run` in a subprocess, its log in a file."""

    def __init__(self, settings: Settings, log: Path, **env: str) -> None:
        self.settings, self.log, self.env = settings, log, env
        self.proc: asyncio.subprocess.Process | None = None

    async def spawn(self) -> None:
        out = await asyncio.to_thread(open, self.log, "ab")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                UNIFIER, "run", env=cli_env(self.settings, **self.env), stdout=out, stderr=out,
            )
        finally:
            out.close()

    async def start(self) -> Service:
        await self.spawn()
        await wait_for(lambda: self.says("unifier running") or self.exited(), timeout=60, message=f"{self.log.name} up")
        assert not self.exited(), self.text()
        # The service runs the core this test process runs (UNIFIER_CORE is inherited;
        # compiled in CI: docs/decisions.md, "The compiled core").
        assert self.says(f"domain core {domain.CORE}"), self.text()
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def says(self, what: str) -> bool:
        return what in self.text()

    def exited(self) -> bool:
        return self.proc is not None and self.proc.returncode is not None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout: float = 60) -> int:  # noqa: ASYNC109
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def stop(self) -> int:
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc else 0
        self.signal(signal.SIGTERM)
        return await self.wait()

    def port(self) -> int:
        found = re.search(r"metrics and health on \S+:(\d+)", self.text())
        assert found, self.text()
        return int(found[1])



@pytest_asyncio.fixture
async def services(settings: Settings, tmp_path: Path) -> AsyncIterator[list[Service]]:
    """Services a test starts; whatever still runs at the end is killed."""
    started: list[Service] = []
    yield started
    for s in started:
        if s.proc is not None and s.proc.returncode is None:
            s.proc.kill()
            await s.proc.wait()


def service(settings: Settings, tmp_path: Path, services: list[Service], name: str, **env: str) -> Service:
    s = Service(settings, tmp_path / f"{name}.log", **env)
    services.append(s)
    return s


async def assert_state_is_a_rebuild(settings: Settings) -> dict[str, Any]:
    """No user differs from a rebuild of the log, and the digests are equal."""
    code, out, err = await cli(settings, "replay", "--dry-run", "--quiet-ms", "300")
    assert code == 0, err
    assert out == "", f"users that differ from a rebuild:\n{out[:2000]}"
    summary: dict[str, Any] = orjson.loads(err.splitlines()[-1])
    assert summary["liveDigest"] == summary["rebuiltDigest"]
    return summary


async def assert_every_record_applied_or_dead_lettered_once(settings: Settings, pool: asyncpg.Pool) -> None:
    """What the inbox says was consumed is, record by record, either an applied eventId
    or a dead letter (published, or still in the outbox) — none lost (dead letters are
    published at least once: counted by source offset). `applied_events` remembers a
    window of each channel (7 days of event time, services/projection/window.py): a
    fact further behind its channel's clock than that is applied and forgotten."""
    topics = Topics(settings.topic_prefix)
    consumed = await applied_offsets(pool)
    remembered = {(r[0], r[1]) for r in await pool.fetch("SELECT channel_id, event_id FROM applied_events")}
    clocks = {r[0]: r[1] for r in await pool.fetch("SELECT channel_id, max(at) FROM applied_events GROUP BY channel_id")}
    letters = [v for _, v in await read_topic(settings, topics.dead_letter) if v is not None]
    letters += [orjson.loads(r[0]) for r in await pool.fetch("SELECT value FROM outbox_messages WHERE topic = $1", topics.dead_letter)]
    dead = {(v["sourceTopic"], v["partition"], v["offset"]) for v in letters}
    applied = forgotten = 0
    lost: list[tuple[str, int, int]] = []
    assert settings.kafka_bootstrap is not None
    stored = {(r[0], r[1]): r[2] for r in await pool.fetch("SELECT topic, partition, next_offset FROM inbox_offsets")}
    async with LogReader(settings.kafka_bootstrap, topics.inbound, stop=stored, quiet_s=0.3) as log:  # what was consumed
        async for chunk in log.per_partition():
            for r in chunk:
                if (r.topic, r.partition, r.offset) in dead:
                    continue
                fact = orjson.loads(r.value or b"")
                channel, at = fact["channelId"], min(fact["occurredAt"], r.timestamp)
                if (channel, fact["eventId"]) in remembered:
                    applied += 1
                elif at < clocks.get(channel, at) - WINDOW_MS:
                    forgotten += 1
                else:
                    lost.append((r.topic, r.partition, r.offset))
    assert lost == []
    assert applied >= len(remembered) and applied + forgotten + len(dead) == consumed


async def _outbox_empty(pool: asyncpg.Pool) -> bool:
    return await pool.fetchval("SELECT count(*) FROM outbox") == 0


def assert_versions_have_no_gaps(changes: list[tuple[str | None, Any]]) -> None:
    """user-changed is at least once: duplicates are allowed, a missing version is not."""
    versions: dict[str, set[int]] = {}
    for _, v in changes:
        if v is not None:
            versions.setdefault(v["userId"], set()).add(v["version"])
    assert versions
    for user, seen in versions.items():
        assert seen == set(range(1, max(seen) + 1)), (user, sorted(seen))


# -- the tests ---------------------------------------------------------------------------


async def test_sigterm_finishes_and_relays_the_batch_in_flight_and_exits_0(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path, services: list[Service]
) -> None:
    """A batch held up inside its transaction when SIGTERM arrives is committed and its
    changes relayed (the relay stops after the projection), then the process exits 0:
    nothing of it is lost, left half-applied or left waiting for the next start."""
    svc = await service(settings, tmp_path, services, "run", UNIFIER_BATCH_MAX="1000").start()
    blocker = await asyncpg.connect(settings.database_url)
    try:
        hold = blocker.transaction()
        await hold.start()
        # The batch's applied eventIds cannot be written while we hold this lock.
        await blocker.execute(f'LOCK TABLE "{settings.db_schema}".applied_events IN SHARE MODE')
        await publish_rounds_unwaited(settings, workload.mixed_rounds(3000, rounds=1, channels=CHANNELS)[0])
        await wait_for(lambda: _waiting_on(blocker, settings.db_schema), timeout=60, message="a batch in flight")
        assert await applied_offsets(pool) == 0

        svc.signal(signal.SIGTERM)
        with pytest.raises(TimeoutError):
            await svc.wait(timeout=1.0)  # still finishing its batch: it must not just quit
        await hold.rollback()
        assert await svc.wait() == 0, svc.text()
    finally:
        await blocker.close()

    in_flight = await applied_offsets(pool)
    assert 0 < in_flight <= 1000  # that batch, and no other after the signal
    assert svc.says("unifier stopped cleanly")
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0  # relayed before exit
    await assert_every_record_applied_or_dead_lettered_once(settings, pool)


async def publish_rounds_unwaited(settings: Settings, facts: list[workload.Fact]) -> None:
    assert settings.kafka_bootstrap
    await workload.publish(settings.kafka_bootstrap, Topics(settings.topic_prefix), facts)


async def _waiting_on(conn: asyncpg.Connection, schema: str) -> bool:
    return bool(await conn.fetchval(
        "SELECT count(*) FROM pg_locks WHERE relation = to_regclass($1) AND NOT granted", f"{schema}.applied_events"
    ))


async def test_kill_9_mid_stream_then_restart_ends_in_the_state_of_an_uninterrupted_run(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path, services: list[Service]
) -> None:
    await configure_hashed_channels(pool)
    rounds = workload.mixed_rounds(4000, rounds=4, channels=CHANNELS, poison_every=97)
    svc = await service(settings, tmp_path, services, "first", UNIFIER_BATCH_MAX="200").start()
    done = await publish_rounds(settings, pool, rounds[:1])
    kills = 0
    for facts in rounds[1:3]:  # killed in the middle of each of these rounds
        await publish_rounds_unwaited(settings, facts)
        await wait_for(lambda d=done: _past(pool, d), timeout=60, message="the round under way")
        svc.signal(signal.SIGKILL)
        assert await svc.wait() == -signal.SIGKILL
        kills += 1 if await applied_offsets(pool) < done + len(facts) else 0
        svc = await service(settings, tmp_path, services, f"restart{kills}", UNIFIER_BATCH_MAX="200").start()
        done += len(facts)
        await wait_for(lambda d=done: _past(pool, d - 1), timeout=120, message="the round finished")
    done = await publish_rounds(settings, pool, rounds[3:], already=done)
    await wait_for(lambda: _outbox_empty(pool), message="outbox relayed")
    assert await svc.stop() == 0

    assert kills >= 1  # at least one kill landed mid-round (batches of 200 records)
    assert await applied_offsets(pool) == done
    await assert_state_is_a_rebuild(settings)
    await assert_every_record_applied_or_dead_lettered_once(settings, pool)
    assert_versions_have_no_gaps(await read_topic(settings, Topics(settings.topic_prefix).user_changed))


async def _past(pool: asyncpg.Pool, n: int, svc: Service | None = None) -> bool:
    """More than `n` records applied (or, given `svc`, that service has exited)."""
    return (svc is not None and svc.exited()) or await applied_offsets(pool) > n


POISON = (
    ("bad_json", lambda i: b"{not json " + str(i).encode()),
    ("unknown_type", lambda i: orjson.dumps({"eventId": f"p{i}", "type": "teleport", "channelId": "ch_000", "occurredAt": 1})),
    ("invalid_fields", lambda i: orjson.dumps({"eventId": f"p{i}", "type": "boot", "channelId": "ch_001", "occurredAt": 1, "veilId": 7, "platform": "tv"})),
    ("invalid_member_hash", lambda i: orjson.dumps({
        "eventId": f"p{i}", "type": "login", "channelId": "ch_000", "occurredAt": 1_767_225_600_000,
        "veilId": f"pv{i}", "memberId": f"pm{i}", "memberHash": "00"})),
)


async def test_ten_thousand_poison_messages_are_all_dead_lettered_while_good_messages_flow(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    await configure_hashed_channels(pool)
    good = workload.mixed_rounds(2000, rounds=1, channels=CHANNELS)[0]
    poison = [
        workload.Fact("sdk-events", workload.channel_name(i % 2), POISON[i % len(POISON)][1](i), 1_767_225_600_000 + i)
        for i in range(10_000)
    ]
    stream = [f for pair in zip(poison[:len(good)], good, strict=True) for f in pair] + poison[len(good):]
    async with running_service(settings):
        await publish_rounds_unwaited(settings, stream)
        await wait_for(lambda: _past(pool, len(stream) - 1), timeout=180, message="every record consumed")
        await wait_for(lambda: _outbox_empty(pool), timeout=60, message="dead letters relayed")

    letters = [v for _, v in await read_topic(settings, Topics(settings.topic_prefix).dead_letter) if v is not None]
    distinct = {(v["sourceTopic"], v["partition"], v["offset"]): v["error"]["code"] for v in letters}
    assert len(distinct) == 10_000
    assert Counter(distinct.values()) == {code: 2500 for code, _ in POISON}
    assert await pool.fetchval("SELECT count(*) FROM applied_events") == len(good)  # every good fact applied


async def test_two_instances_in_one_group_share_the_partitions_and_end_in_the_single_instance_state(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path, services: list[Service]
) -> None:
    await configure_hashed_channels(pool)
    a = await service(settings, tmp_path, services, "a").start()
    b = await service(settings, tmp_path, services, "b").start()
    await wait_for(lambda: _both_assigned(a, b), timeout=60, message="both instances assigned partitions")
    rounds = workload.mixed_rounds(4000, rounds=8, channels=CHANNELS, poison_every=101)
    await publish_rounds(settings, pool, rounds)
    assert await a.stop() == 0 and await b.stop() == 0

    assert a.says("batch: ") and b.says("batch: ")  # both applied batches
    await assert_state_is_a_rebuild(settings)
    await assert_every_record_applied_or_dead_lettered_once(settings, pool)


async def test_kill_9_of_one_of_two_instances_mid_stream_the_other_takes_over_and_ends_in_the_uninterrupted_state(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path, services: list[Service]
) -> None:
    """G3 and crash safety together: instance b dies by SIGKILL in the middle of a round
    while a keeps running; a is handed b's partitions at the next rebalance, starts them
    at the offsets stored with the state, and the end state is the rebuild's."""
    await configure_hashed_channels(pool)
    a = await service(settings, tmp_path, services, "a", UNIFIER_BATCH_MAX="200").start()
    b = await service(settings, tmp_path, services, "b", UNIFIER_BATCH_MAX="200").start()
    await wait_for(lambda: _both_assigned(a, b), timeout=60, message="both instances assigned partitions")
    rounds = workload.mixed_rounds(4000, rounds=4, channels=CHANNELS, poison_every=97)
    done = await publish_rounds(settings, pool, rounds[:1])
    await publish_rounds_unwaited(settings, rounds[1])
    await wait_for(lambda: _past(pool, done), timeout=60, message="the round under way")
    b.signal(signal.SIGKILL)
    assert await b.wait() == -signal.SIGKILL
    killed_mid_round = await applied_offsets(pool) < done + len(rounds[1])
    done += len(rounds[1])
    # a alone finishes b's share once the group notices b is gone (session timeout).
    await wait_for(lambda: _past(pool, done - 1, a), timeout=120, message="the survivor finished the round")
    assert not a.exited(), a.text()[-3000:]
    done = await publish_rounds(settings, pool, rounds[2:], already=done)
    await wait_for(lambda: _outbox_empty(pool), message="outbox relayed")
    assert await a.stop() == 0

    assert killed_mid_round  # the kill landed while b still had records of the round to apply
    assert await applied_offsets(pool) == done
    await assert_state_is_a_rebuild(settings)
    await assert_every_record_applied_or_dead_lettered_once(settings, pool)
    assert_versions_have_no_gaps(await read_topic(settings, Topics(settings.topic_prefix).user_changed))


def _both_assigned(a: Service, b: Service) -> bool:
    """The latest assignment of each instance is non-empty, in the same generation."""
    def latest(s: Service) -> tuple[str, bool] | None:
        gens = re.findall(r"Joined group '[^']*' \(generation (\d+)\)", s.text())
        parts = re.findall(r"Setting newly assigned partitions (.*) for group", s.text())
        return (gens[-1], parts[-1] not in ("set()", "{}", "frozenset()")) if gens and parts else None
    la, lb = latest(a), latest(b)
    return la is not None and lb is not None and la[0] == lb[0] and la[1] and lb[1]


@contextlib.asynccontextmanager
async def own_role(settings: Settings) -> AsyncIterator[str]:
    """A login role only the service under test uses, so its backends can be told apart
    (and terminated) without touching anyone else's; the URL that logs in with it."""
    assert settings.database_url
    role = f"r_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(settings.database_url)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN SUPERUSER")
        yield re.sub(r"^(postgres(?:ql)?://)([^@/]*@)?", rf"\g<1>{role}@", settings.database_url)
    finally:
        await admin.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'")
        await admin.execute(f"REASSIGN OWNED BY {role} TO CURRENT_USER")
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()


@pytest.mark.parametrize("whose", ["projection", "all"])
async def test_postgres_connection_loss_is_survived_without_losing_or_doubling_anything(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path, services: list[Service], whose: str
) -> None:
    """The service's backends are terminated (pg_terminate_backend) after every round
    it is fed — the projection's only, or all of them including the relay's: it
    reconnects and carries on, and ends in the state a rebuild gives."""
    await configure_hashed_channels(pool)
    rounds = workload.mixed_rounds(4000, rounds=8, channels=CHANNELS, poison_every=89)
    # The relay is the backend holding the advisory lock.
    spare = "" if whose == "all" else "AND pid NOT IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory')"
    async with own_role(settings) as url:
        svc = await service(settings, tmp_path, services, "run", DATABASE_URL=url, UNIFIER_BATCH_MAX="200").start()
        role = url.split("://", 1)[1].split("@", 1)[0]
        done = terminated = 0
        admin = await asyncpg.connect(settings.database_url)
        try:
            for facts in rounds:
                await publish_rounds_unwaited(settings, facts)
                await wait_for(lambda d=done: _past(pool, d, svc), timeout=60, message="round under way")
                terminated += await admin.fetchval(
                    f"""SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                         WHERE usename = $1 {spare}) t""", role,
                )
                done += len(facts)
                await wait_for(lambda d=done: _past(pool, d - 1, svc), timeout=60, message="round applied")
                assert not svc.exited(), svc.text()[-3000:]
        finally:
            await admin.close()
        await wait_for(lambda: _outbox_empty(pool), message="outbox relayed")
        assert await svc.stop() == 0, svc.text()[-3000:]

    assert terminated >= len(rounds)
    await assert_state_is_a_rebuild(settings)
    await assert_every_record_applied_or_dead_lettered_once(settings, pool)
    assert_versions_have_no_gaps(await read_topic(settings, Topics(settings.topic_prefix).user_changed))


async def test_broker_unreachable_at_start_reports_degraded_and_recovers_without_a_crash_loop(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path, services: list[Service]
) -> None:
    """Started against a port where no broker listens yet, the service stays up and
    says `degraded` on /healthz; once a broker comes up there, it applies facts."""
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    svc = service(settings, tmp_path, services, "run", KAFKA_BOOTSTRAP_SERVERS=bootstrap)
    await svc.spawn()
    await wait_for(lambda: svc.says("metrics and health on ") or svc.exited(), timeout=30, message="health endpoint up")
    assert not svc.exited(), svc.text()[-3000:]
    status, body = await _healthz(svc.port())
    assert status == 503 and body["status"] == "degraded"

    url = f"tcp://127.0.0.1:{port}"
    broker = await asyncio.create_subprocess_exec(
        broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
        "--storage-engine", "memory://tansu/", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        late = settings.replace(kafka_bootstrap=bootstrap)
        await wait_for(lambda: svc.says("unifier running") or svc.exited(), timeout=60, message="service running")
        await publish_rounds(late, pool, workload.mixed_rounds(200, rounds=1, channels=CHANNELS))
        status, body = await _healthz(svc.port())
        assert status == 200 and body["status"] == "ok"
        assert await svc.stop() == 0
    finally:
        broker.terminate()
        await broker.wait()


async def _healthz(port: int) -> tuple[int, dict[str, Any]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), orjson.loads(body)
