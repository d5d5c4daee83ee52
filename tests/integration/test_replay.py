"""Issue 5: `unifier replay` rebuilds the state from the retained topics into a fresh
schema and switches to it while the service runs; `--dry-run` shows what a rebuild
would change; the log is read in the canonical order up to its real end.

The helpers at the top (`cli`, `publish_rounds`, …) are shared with test_faults.py and
test_deadletters.py.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import pytest_asyncio

from contracts.topics import Topics
from services.platform.config import Settings
from services.platform.topics import ensure_topics
from services.projection.records import canonical_order
from services.replay import workload
from services.replay.digest import state_digest
from services.replay.log import LogReader
from services.store.pool import ensure_schema
from tests.support.imports import cli_env as support_cli_env
from tests.support.infra import wait_for
from tests.support.service import read_topic, running_service

pytestmark = pytest.mark.integration

UNIFIER = str(Path(sys.executable).with_name("unifier"))
CHANNELS = 12


# -- shared helpers ----------------------------------------------------------------------


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment `unifier` needs to run on this test's broker, schema and prefix
    (a free metrics port, so several instances can run side by side)."""
    return support_cli_env(settings, **{"UNIFIER_METRICS_PORT": "0", "UNIFIER_HTTP_ADDR": "127.0.0.1:0", **extra})


async def cli(settings: Settings, *args: str, timeout: float = 180) -> tuple[int, str, str]:  # noqa: ASYNC109
    """Run `unifier ARGS…`; (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        UNIFIER, *args, env=cli_env(settings), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def replay(settings: Settings, *args: str) -> dict[str, Any]:
    code, out, err = await cli(settings, "replay", "--quiet-ms", "300", *args)
    assert code == 0, err
    [line] = out.splitlines()
    result: dict[str, Any] = orjson.loads(line)
    return result


async def applied_offsets(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT coalesce(sum(next_offset), 0) FROM inbox_offsets"))


async def configure_hashed_channels(pool: asyncpg.Pool, channels: int = CHANNELS) -> None:
    for ch in workload.hashed_channels(channels):
        await pool.execute(
            "INSERT INTO channels (channel_id, member_hash_secret) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            ch, workload.HASHED_CHANNEL_SECRET,
        )


async def publish_rounds(settings: Settings, pool: asyncpg.Pool, rounds: Sequence[Sequence[workload.Fact]], *, already: int = 0) -> int:
    """Publish round after round, each once the running service applied the one before
    (the stream's rounds are then applied in order, as a replay applies them)."""
    assert settings.kafka_bootstrap
    done = already
    for facts in rounds:
        await workload.publish(settings.kafka_bootstrap, Topics(settings.topic_prefix), facts)
        done += len(facts)
        await wait_for(lambda d=done: _at_least(pool, d), timeout=120, message=f"{done} records applied")
    return done


async def _at_least(pool: asyncpg.Pool, n: int) -> bool:
    return await applied_offsets(pool) >= n


async def side_schemas(database_url: str, live: str) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE $1 ORDER BY 1", live.replace("_", r"\_") + r"\_%"
        )
        return [r[0] for r in rows]
    finally:
        await conn.close()


@pytest_asyncio.fixture
async def pool(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Pool]:
    """The shared pool; archives and scratch schemas a replay made dropped afterwards."""
    yield pool
    assert settings.database_url is not None
    conn = await asyncpg.connect(settings.database_url)
    try:
        for schema in await side_schemas(settings.database_url, settings.db_schema):
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await conn.close()


# -- the tests ---------------------------------------------------------------------------


async def test_rebuild_reproduces_the_live_state_and_two_rebuilds_print_the_same_digest(settings: Settings, pool: asyncpg.Pool) -> None:
    """Flow 5: a rebuild of the same logs gives the state the live service built, by one
    worker or several; channel settings are carried over; the previous state is archived."""
    await configure_hashed_channels(pool)
    rounds = workload.mixed_rounds(3000, rounds=3, channels=CHANNELS, poison_every=50)
    async with running_service(settings):
        total = await publish_rounds(settings, pool, rounds)
    live = await state_digest(pool)
    channels_before = await pool.fetch("SELECT * FROM channels ORDER BY channel_id")

    first = await replay(settings, "--rebuild", "--workers", "1")
    second = await replay(settings, "--workers", "2", "--drop-archive")  # --rebuild is the default

    assert first == {"events": total, "digest": live}
    assert second == first
    code, out, _ = await cli(settings, "digest")
    assert code == 0 and orjson.loads(out)["digest"] == live
    assert await pool.fetch("SELECT * FROM channels ORDER BY channel_id") == channels_before
    archives = await side_schemas(settings.database_url or "", settings.db_schema)
    assert len(archives) == 1 and "_a" in archives[0]  # the first rebuild's; the second dropped its own
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0  # history is not re-sent
    # Every channel with users has its fence row (token 0: no instance's), as live writes
    # leave them: a channel without one has no users (resident.py, fresh channels).
    assert await pool.fetch("SELECT channel_id FROM users EXCEPT SELECT channel_id FROM channel_writers") == []
    assert await pool.fetchval("SELECT count(*) FROM channel_writers WHERE token = 0") > 0


async def test_a_stream_published_all_at_once_ends_live_in_the_state_a_rebuild_gives(settings: Settings, pool: asyncpg.Pool) -> None:
    """docs/design.md "Order-tolerant": with every round already in the log, the live service
    reads the sdk-events and commands partitions of a channel at different paces (a
    login and the member.upsert a day before it, on another topic); it must still apply
    them in the canonical order, so the drained state equals a rebuild's."""
    await configure_hashed_channels(pool)
    rounds = workload.mixed_rounds(6000, rounds=6, channels=CHANNELS)
    facts = [f for r in rounds for f in r]
    assert settings.kafka_bootstrap
    await ensure_topics(settings.kafka_bootstrap, settings.topic_prefix, settings.partitions)
    await workload.publish(settings.kafka_bootstrap, Topics(settings.topic_prefix), facts)
    async with running_service(settings):
        await wait_for(lambda: _at_least(pool, len(facts)), timeout=120, message="the whole stream applied")
    live = await state_digest(pool)
    assert await replay(settings, "--rebuild", "--drop-archive") == {"events": len(facts), "digest": live}


async def test_rebuilt_inbox_offsets_are_the_log_ends_so_the_service_continues_without_reapplying(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    rounds = workload.mixed_rounds(2000, rounds=2, channels=CHANNELS)
    async with running_service(settings):
        await publish_rounds(settings, pool, rounds[:1])
    await replay(settings, "--rebuild", "--drop-archive")  # no archive schema left behind
    assert settings.kafka_bootstrap
    async with LogReader(settings.kafka_bootstrap, Topics(settings.topic_prefix).inbound, quiet_s=0.3) as log:
        ends = log.stops
    stored = {(r[0], r[1]): r[2] for r in await pool.fetch("SELECT topic, partition, next_offset FROM inbox_offsets")}
    assert stored == ends  # every inbound partition, empty ones included

    async with running_service(settings):
        await publish_rounds(settings, pool, rounds[1:], already=len(rounds[0]))
    applied = await pool.fetchval("SELECT count(*) FROM applied_events")
    code, out, err = await cli(settings, "replay", "--dry-run", "--quiet-ms", "300")
    assert code == 0 and out == "", err  # the continued state is what a rebuild gives
    assert orjson.loads(err.splitlines()[-1])["changedUsers"] == 0
    assert applied == await pool.fetchval("SELECT count(*) FROM applied_events")


async def test_rebuild_while_the_service_applies_new_facts_loses_nothing_and_resends_nothing(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """The switch happens under load: the live service keeps applying rounds while the
    rebuild reads the log; afterwards every fact is applied once, the state is what a
    rebuild gives, and no user-changed message was published twice."""
    rounds = workload.mixed_rounds(4000, rounds=80, channels=CHANNELS)
    topics = Topics(settings.topic_prefix)
    # The rebuild must still be busy when the live service has applied the next round:
    # with 20 rounds to rebuild, the compiled core's rebuild switched before round 21 was
    # applied (caught up 0, seen in CI). 40 rounds, published at once (the live service
    # applies them in the canonical order as a rebuild does), give it twice the work.
    start = 40
    async with running_service(settings):
        done = before = await publish_rounds(settings, pool, [[f for r in rounds[:start] for f in r]])
        rebuilding = asyncio.create_task(
            cli(settings, "replay", "--rebuild", "--workers", "2", "--quiet-ms", "300", "--batch", "500")
        )
        fed = start
        while not rebuilding.done() and fed < len(rounds):  # keep the live service busy throughout
            done = await publish_rounds(settings, pool, rounds[fed:fed + 1], already=done)
            fed += 1
        code, out, err = await rebuilding
        assert code == 0, err
        await publish_rounds(settings, pool, rounds[fed:], already=done)
        await wait_for(lambda: _outbox_empty(pool), message="outbox relayed")
    result = orjson.loads(out)
    caught_up = int(re.search(r"caught up ([\d,]+) records", err)[1].replace(",", ""))  # type: ignore[index]
    print(f"rounds fed during the rebuild: {fed - start}; records caught up: {caught_up}")
    assert caught_up > 0 and fed < len(rounds), err  # the live service really moved on while the rebuild ran
    assert result["events"] >= before
    assert await applied_offsets(pool) == sum(len(r) for r in rounds)

    code, out, err = await cli(settings, "replay", "--dry-run", "--quiet-ms", "300")
    summary = orjson.loads(err.splitlines()[-1])
    assert code == 0 and out == "" and summary["changedUsers"] == 0, err
    assert summary["liveDigest"] == summary["rebuiltDigest"] == await state_digest(pool)

    changes = await read_topic(settings, topics.user_changed)
    ids = Counter(v["eventId"] for _, v in changes if v is not None)
    assert ids and max(ids.values()) == 1  # nothing re-sent by the switch


async def _outbox_empty(pool: asyncpg.Pool) -> bool:
    return await pool.fetchval("SELECT count(*) FROM outbox") == 0


async def test_dry_run_lists_the_users_a_rebuild_would_change_and_changes_nothing(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """Rotating a channel's member-hash secret makes old logins invalid for a rebuild
    (channel settings are configuration, applied to the whole history): the dry run
    says which users and keys would change, and leaves everything as it was."""
    rounds = workload.mixed_rounds(1500, rounds=2, channels=CHANNELS)
    async with running_service(settings):
        await publish_rounds(settings, pool, rounds)
    live = await state_digest(pool)
    rotated = workload.channel_name(1)  # not hashed by the workload: its logins carry no hash
    code, _, err = await cli(settings, "channel", "configure", rotated, "--member-hash-secret", "new-secret")
    assert code == 0, err

    code, out, err = await cli(settings, "replay", "--dry-run", "--quiet-ms", "300")
    assert code == 0, err
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert lines and {line["channelId"] for line in lines} == {rotated}
    assert all(set(line) == {"userId", "channelId", "change", "keys"} and line["keys"] for line in lines)
    assert any("memberId" in line["keys"] or "mergedInto" in line["keys"] for line in lines)
    summary = orjson.loads(err.splitlines()[-1])
    assert summary["changedUsers"] == len(lines) and summary["liveDigest"] == live != summary["rebuiltDigest"]
    assert await state_digest(pool) == live
    assert await side_schemas(settings.database_url or "", settings.db_schema) == []  # scratch dropped

    code, out, _ = await cli(settings, "replay", "--dry-run", "--since", "2100-01-01T00:00:00Z", "--quiet-ms", "300")
    assert code == 0 and out == ""  # nobody was touched after that


async def test_rebuild_refuses_when_the_log_holds_less_than_the_live_state_applied(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """tansu keeps its log in memory: after a broker restart the log is empty while
    PostgreSQL remembers what was applied. A rebuild then must not replace the state."""
    async with running_service(settings):
        await publish_rounds(settings, pool, workload.mixed_rounds(300, rounds=1, channels=CHANNELS))
    live = await state_digest(pool)
    await pool.execute("UPDATE inbox_offsets SET next_offset = next_offset + 1000")

    code, out, err = await cli(settings, "replay", "--rebuild", "--quiet-ms", "300")

    assert code == 1 and out == ""
    assert "holds less than the live state applied" in err
    assert await state_digest(pool) == live
    assert await side_schemas(settings.database_url or "", settings.db_schema) == []


async def test_two_workers_rebuild_a_channel_spread_over_partitions_as_one_worker_does(
    settings: Settings, pool: asyncpg.Pool,
) -> None:
    """Flow 5 (shards.py): workers share the log by partition number, which fits when
    producers key by channel; when a channel's facts sit on several partitions (keyed
    otherwise, or partitions added later), the build notices and is redone with every
    worker reading the whole log — the digest is the one worker's."""
    assert settings.kafka_bootstrap
    await configure_hashed_channels(pool)
    await ensure_topics(settings.kafka_bootstrap, settings.topic_prefix, settings.partitions)
    facts = workload.mixed_facts(3000, rounds=3, channels=CHANNELS)
    spread = [workload.Fact(f.kind, f"{f.key}#{i % 3}", f.value, f.timestamp) for i, f in enumerate(facts)]
    await workload.publish(settings.kafka_bootstrap, Topics(settings.topic_prefix), spread)

    one = await replay(settings, "--rebuild", "--workers", "1", "--drop-archive")
    code, out, err = await cli(settings, "replay", "--quiet-ms", "300", "--rebuild", "--workers", "2", "--drop-archive")

    assert code == 0, err
    assert orjson.loads(out) == one
    assert "rebuilding with every worker reading the whole log" in err


async def test_a_build_over_its_memory_budget_is_redone_batch_by_batch_with_the_same_digest(
    settings: Settings, pool: asyncpg.Pool,
) -> None:
    """Flow 5 / Determinism (resident.py): a build keeps its users in memory; one that
    outgrows `--memory-mb` (here any: 1 MB) must not run the machine out of memory but
    stop and apply the log batch by batch as live, ending in the same state, with one
    worker or several."""
    assert settings.kafka_bootstrap
    await configure_hashed_channels(pool)
    await ensure_topics(settings.kafka_bootstrap, settings.topic_prefix, settings.partitions)
    await workload.publish(settings.kafka_bootstrap, Topics(settings.topic_prefix),
                           workload.mixed_facts(2000, rounds=2, channels=CHANNELS, poison_every=50))

    resident = await replay(settings, "--rebuild", "--workers", "1", "--drop-archive")
    for workers in ("1", "2"):
        code, out, err = await cli(settings, "replay", "--quiet-ms", "300", "--workers", workers, "--memory-mb", "1",
                                   "--drop-archive")
        assert code == 0, err
        assert orjson.loads(out) == resident
        assert "OverBudget" in err and "rebuilding batch by batch" in err


async def test_a_rebuilt_schema_has_every_index_a_fresh_schema_has(settings: Settings, pool: asyncpg.Pool) -> None:
    """Flow 5 (indexes.py): a build makes some indexes only after its COPY; the schema
    switched to must have them all, as `ensure_schema` makes them — by one worker and
    by two."""
    assert settings.kafka_bootstrap and settings.database_url
    await configure_hashed_channels(pool)
    await ensure_topics(settings.kafka_bootstrap, settings.topic_prefix, settings.partitions)
    await workload.publish(settings.kafka_bootstrap, Topics(settings.topic_prefix),
                           workload.mixed_facts(600, channels=CHANNELS))
    fresh = f"{settings.db_schema}_fresh"
    await ensure_schema(settings.database_url, fresh)
    try:
        query = "SELECT tablename, indexname, replace(indexdef, $1, 'S') FROM pg_indexes WHERE schemaname = $1 ORDER BY 1, 2"
        expected = [tuple(r) for r in await pool.fetch(query, fresh)]
        for workers in ("1", "2"):
            await replay(settings, "--rebuild", "--workers", workers, "--drop-archive")
            assert [tuple(r) for r in await pool.fetch(query, settings.db_schema)] == expected
    finally:
        await pool.execute(f'DROP SCHEMA "{fresh}" CASCADE')


async def test_streaming_merge_is_the_canonical_order_and_reads_past_the_reported_ends(settings: Settings) -> None:
    """The k-way merge of the whole log equals `canonical_order` of the partitions, and
    the reader reaches the real end although tansu's reported end offsets lag."""
    assert settings.kafka_bootstrap
    topics = Topics(settings.topic_prefix)
    await ensure_topics(settings.kafka_bootstrap, settings.topic_prefix, settings.partitions)
    facts = workload.mixed_facts(20_000, rounds=4, channels=CHANNELS)
    # Timestamps that tie across partitions exercise the tie-break on topic, partition, offset.
    facts = [workload.Fact(f.kind, f.key, f.value, f.timestamp - f.timestamp % 600_000) for f in facts]
    await workload.publish(settings.kafka_bootstrap, topics, facts)

    async with LogReader(settings.kafka_bootstrap, topics.inbound, quiet_s=0.3) as log:
        merged = [r for chunk in [c async for c in log.merged(chunk=777)] for r in chunk]
    async with LogReader(settings.kafka_bootstrap, topics.inbound, quiet_s=0.3) as log:
        runs: dict[tuple[str, int], list[Any]] = {}
        async for chunk in log.per_partition(chunk=1000):
            for r in chunk:
                runs.setdefault((r.topic, r.partition), []).append(r)

    assert len(merged) == len(facts)
    assert merged == canonical_order(runs.values())


# -- pure helpers (no infrastructure, kept here with the feature they serve) -------------


def test_since_accepts_epoch_ms_and_iso_8601_in_utc() -> None:
    from services.replay.replay import parse_time

    assert parse_time("1767225600000") == parse_time("2026-01-01T00:00:00Z") == parse_time("2026-01-01T09:00:00+09:00")
    assert parse_time("2026-01-01T00:00:00") == 1_767_225_600_000  # no zone: UTC
    with pytest.raises(ValueError):
        parse_time("yesterday")


def test_side_schema_names_fit_postgresql_identifiers() -> None:
    from services.replay.replay import side_schema

    longest = "s" * 63
    for kind in ("r", "a", "d"):
        name = side_schema(longest, kind)
        assert len(name) <= 63 and len(f"{name}_s99") <= 63  # shard schemas of the rebuild too


async def test_two_rebuilds_within_one_second_archive_under_two_names(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flow 5: the archive of a rebuild never collides with the archive of the one before it
    (CI once ran two rebuilds of a short log within the same second: DuplicateSchemaError)."""
    from services.replay import replay as replay_module

    monkeypatch.setattr(replay_module, "_stamp", lambda: "20261130080855")
    live = "t_same_second"
    taken = replay_module.side_schema(live, "a")
    async with pool.acquire() as conn:
        await conn.execute(f'CREATE SCHEMA "{taken}"')
        try:
            second = await replay_module.free_side_schema(conn, live, "a")
            await conn.execute(f'CREATE SCHEMA "{second}"')
            try:
                third = await replay_module.free_side_schema(conn, live, "a")
            finally:
                await conn.execute(f'DROP SCHEMA "{second}"')
        finally:
            await conn.execute(f'DROP SCHEMA "{taken}"')
    assert (second, third) == (f"{taken}_2", f"{taken}_3")


def test_a_channel_always_lands_in_the_same_shard_and_bad_values_in_shard_0() -> None:
    from services.projection.records import Record
    from services.replay.shards import shard_of

    def rec(value: bytes) -> Record:
        return Record("t", 0, 0, 0, b"k", value)

    one = orjson.dumps({"channelId": "ch_7", "eventId": "a"})
    other = orjson.dumps({"eventId": "b", "type": "boot", "channelId": "ch_7"})
    assert shard_of(rec(one), 5) == shard_of(rec(other), 5)
    assert {shard_of(rec(orjson.dumps({"channelId": f"ch_{i}"})), 4) for i in range(50)} == {0, 1, 2, 3}
    for bad in (b"{oops", b"[1]", orjson.dumps({"channelId": 7}), b""):
        assert shard_of(rec(bad), 4) == 0


async def test_p2_a_type_an_import_declares_later_does_not_reject_earlier_facts_in_a_rebuild(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """P2 and replay = live (issue 16): a boot stores `profile.age` as text; a later
    import declares `profile.age` a number, so later boots must send numbers. A rebuild
    learns that type from the import's fact where the live service did — not from the
    channel row at the end of the log — so it keeps the early boot and ends in the same
    state; a type staff configured stays configuration and is carried over."""
    from tests.support.service import Publisher

    ch = "ch_p2"
    head = {"channelId": ch, "importId": "imp_age"}
    started = {"eventId": "imp:s", "type": "import.started", "occurredAt": 2_000, **head, "mode": "member",
               "key": "memberId", "blank": "keep", "actor": "staff-1", "fileName": "a.csv", "tag": None,
               "columns": [{"column": "memberId", "key": "memberId"}, {"column": "age", "key": "profile.age", "type": "number"},
                           {"column": "unsubscribeEmail", "key": "unsubscribeEmail"},
                           {"column": "unsubscribeTexting", "key": "unsubscribeTexting"}]}
    row = {"eventId": "imp:2", "type": "import.row", "occurredAt": 2_000, **head, "rowNumber": 2,
           "cells": {"memberId": "m-2", "profile.age": "30", "unsubscribeEmail": "false", "unsubscribeTexting": "false"}}
    finished = {"eventId": "imp:f", "type": "import.finished", "occurredAt": 2_000, **head, "rows": 1}
    await pool.execute("INSERT INTO channels (channel_id, field_types) VALUES ($1, $2)", ch, {"profile.plan": "string"})
    async with running_service(settings), Publisher(settings) as pub:
        await pub.sdk({"eventId": "b1", "type": "boot", "channelId": ch, "occurredAt": 1_000, "veilId": "v1",
                       "platform": "web", "memberId": "m-1", "profile": {"age": "forty"}})
        await wait_for(lambda: _at_least(pool, 1), message="the boot applied")
        await pub.send(pub.topics.import_rows, [started, row, finished])
        await wait_for(lambda: _at_least(pool, 4), message="the import applied")
        await pub.sdk({"eventId": "b2", "type": "boot", "channelId": ch, "occurredAt": 3_000, "veilId": "v1",
                       "platform": "web", "memberId": "m-1", "profile": {"age": "fifty"}})
        await wait_for(lambda: _at_least(pool, 5), message="the late boot consumed")
    live = await state_digest(pool)
    ages = await pool.fetch("SELECT member_id, state::json->'fields'->'profile.age'->>0 AS age FROM users ORDER BY 1")
    assert [tuple(r) for r in ages] == [("m-1", "forty"), ("m-2", "30")]  # b2 was dead-lettered (P2)
    assert (await replay(settings, "--rebuild", "--drop-archive"))["digest"] == live
    types = await pool.fetchrow("SELECT field_types, imported_types FROM channels WHERE channel_id = $1", ch)
    assert (types["field_types"], types["imported_types"]) == ({"profile.plan": "string"}, {"profile.age": "number"})


async def test_the_digest_taken_beside_the_indexes_is_printed_only_when_nothing_was_caught_up(
    settings: Settings, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Flow 5, "Rebuild = live" (issue 14, session 15): a rebuild reads its built schema's
    digest while the indexes are made, and prints it without reading the switched state
    again when nothing was caught up after the build; when the live service applied more
    meanwhile, the printed digest is the state switched to, read on the switch's snapshot."""
    from services.replay import digest as digest_module
    from services.replay import replay as replay_module
    from services.replay.rebuild import Tally

    await configure_hashed_channels(pool)
    rounds = workload.mixed_rounds(1500, rounds=3, channels=CHANNELS)
    async with running_service(settings):
        done = await publish_rounds(settings, pool, rounds[:2])
    reads: list[str] = []
    hash_users = digest_module._hash_users

    async def counted(c: asyncpg.Connection, h: Any) -> None:
        reads.append(await c.fetchval("SELECT current_schema()"))
        await hash_users(c, h)

    monkeypatch.setattr(digest_module, "_hash_users", counted)
    assert settings.database_url and settings.kafka_bootstrap
    topics, options = Topics(settings.topic_prefix), replay_module.Options(workers=1, quiet_s=0.3, drop_archive=True)

    quiet = await replay_module.rebuild(settings.database_url, settings.kafka_bootstrap, topics, settings.db_schema,
                                        options, Tally(out=None))
    assert len(reads) == 1  # read once, beside the indexes
    assert quiet.digest == await state_digest(pool)

    built = replay_module.build

    async def build_while_live_moves_on(*args: Any, **kwargs: Any) -> Any:
        ends = await built(*args, **kwargs)
        async with running_service(settings):  # applies the third round to the live schema
            await publish_rounds(settings, pool, rounds[2:], already=done)
        return ends

    monkeypatch.setattr(replay_module, "build", build_while_live_moves_on)
    reads.clear()
    moved = await replay_module.rebuild(settings.database_url, settings.kafka_bootstrap, topics, settings.db_schema,
                                        options, Tally(out=None))
    assert sum(moved.offsets.values()) == done + len(rounds[2])  # caught up the third round
    assert len(reads) == 2 and moved.digest != quiet.digest  # the built state's, then the switched state's
    assert moved.digest == await state_digest(pool)
