"""The rebuild's resident applier (services/replay/resident.py) against PostgreSQL.

Flow 5 / Determinism: a rebuild keeps its users in memory and writes them every so
many facts; the state must not depend on where those writes fall, and must be the
state the live projection's batch-by-batch `apply_batch` builds from the same records
— users, merges (G4), chats re-pointed to survivors (U4), imports with the MU limit
(I17). The records are fed directly (no broker): what is under test is the applier.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest_asyncio

from contracts.topics import Topics
from services.domain.core import Activity
from services.domain.unification import MergeRecord
from services.platform.config import Settings
from services.projection.batch import Effects, apply_batch
from services.projection.records import Record, canonical_order
from services.replay import workload
from services.replay.digest import state_digest
from services.replay.resident import HeldOutcomes, Resident, _repointed
from services.store import bulk, outcomes
from services.store import repository as repo
from services.store.pool import create_pool
from tests.support.infra import drop_schema

CHANNELS = 6
MU_CHANNEL = workload.channel_name(2)
LEAD_CHANNEL = workload.channel_name(1)
TOPICS = Topics("t")


def _imports(after: int) -> list[workload.Fact]:
    """A lead import keyed by e-mail matching visitors' contacts and members (U5, I2),
    and a member import into a channel at its MU limit (I1, I17)."""
    facts: list[workload.Fact] = []
    at = after

    def fact(ch: str, **body: Any) -> None:
        nonlocal at
        at += 1_000
        facts.append(workload.Fact("import-rows", ch, orjson.dumps({"channelId": ch, "occurredAt": at, **body}), at))

    flags = [{"column": "ue", "key": "unsubscribeEmail"}, {"column": "ut", "key": "unsubscribeTexting"}]
    unsubscribed = {"unsubscribeEmail": "false", "unsubscribeTexting": "true"}  # I7: required of new users
    lead_cols = [{"column": "email", "key": "profile.email"}, {"column": "plan", "key": "profile.plan", "type": "string"}, *flags]
    fact(LEAD_CHANNEL, eventId="imp-l-s", type="import.started", importId="L", mode="lead", key="email", blank="keep",
         actor="staff-1", fileName="leads.csv", columns=lead_cols, tag="spring")
    for n in range(60):
        email = f"v{n * CHANNELS + 1}@example.jp" if n % 2 else f"mem-{n * CHANNELS + 1}@members.example"
        fact(LEAD_CHANNEL, eventId=f"imp-l-{n}", type="import.row", importId="L", rowNumber=n + 2,
             cells={"profile.email": email if n % 7 else "not-an-email", "profile.plan": "gold", **unsubscribed})
    fact(LEAD_CHANNEL, eventId="imp-l-f", type="import.finished", importId="L", rows=60)

    member_cols = [{"column": "id", "key": "memberId"}, {"column": "name", "key": "name"}, *flags]
    fact(MU_CHANNEL, eventId="imp-m-s", type="import.started", importId="M", mode="member", key="memberId",
         blank="clear", actor="staff-1", fileName="members.csv", columns=member_cols)
    for n in range(80):
        member = f"mem-{n * CHANNELS + 2}" if n % 3 else f"new-{n}"
        fact(MU_CHANNEL, eventId=f"imp-m-{n}", type="import.row", importId="M", rowNumber=n + 2,
             cells={"memberId": member, "name": f"Imported {n}", **unsubscribed})
    fact(MU_CHANNEL, eventId="imp-m-f", type="import.finished", importId="M", rows=80)
    return facts


def _records() -> list[Record]:
    facts = workload.mixed_facts(4_000, rounds=4, channels=CHANNELS, poison_every=97)
    facts += _imports(max(f.timestamp for f in facts))
    # A second stream over the same veils and channels, interleaved in event time.
    facts += workload.mixed_facts(1_500, rounds=2, channels=CHANNELS, seed=2, prefix="late")
    topic = {"sdk-events": TOPICS.sdk_events, "commands": TOPICS.commands, "import-rows": TOPICS.import_rows}
    runs: dict[str, list[Record]] = {}
    for f in facts:
        run = runs.setdefault(f.kind, [])
        run.append(Record(topic[f.kind], 0, len(run), f.timestamp, f.key.encode(), f.value))
    return canonical_order(runs.values())


@pytest_asyncio.fixture
async def schemas(settings: Settings) -> AsyncIterator[list[asyncpg.Pool]]:
    assert settings.database_url is not None
    names = [f"{settings.db_schema}_{k}" for k in ("live", "r1", "r2")]
    pools = [await create_pool(settings.database_url, n) for n in names]
    for p in pools:
        for ch in workload.hashed_channels(CHANNELS):
            await p.execute("INSERT INTO channels (channel_id, member_hash_secret) VALUES ($1, $2)", ch, workload.HASHED_CHANNEL_SECRET)
        await p.execute("INSERT INTO channels (channel_id, mu_limit) VALUES ($1, 25)", MU_CHANNEL)
    yield pools
    for p in pools:
        await p.close()
    for n in names:
        await drop_schema(settings.database_url, n)


async def _activities(pool: asyncpg.Pool) -> list[tuple[Any, ...]]:
    rows = await pool.fetch("SELECT channel_id, event_id, user_id, kind, body::text FROM activities ORDER BY 1, 2, 3")
    return [tuple(r) for r in rows]


async def _imports_log(pool: asyncpg.Pool) -> list[tuple[Any, ...]]:
    rows = await pool.fetch("SELECT channel_id, import_id, status, rows::text FROM imports ORDER BY 1, 2")
    return [tuple(r) for r in rows]


async def test_resident_rebuild_equals_batch_by_batch_apply_wherever_its_writes_fall(schemas: list[asyncpg.Pool]) -> None:
    """Flow 5, U4, G4, I17: the same records give the same users, merges, chats and
    import log whether applied as the live projection does (batches of 250, load and
    write each) or resident with chats and eventIds written every 333 facts or only at the end
    (written beside the chunks that follow, here slowly: issue 14, session 15)."""
    live, small, whole = schemas
    records = _records()
    chunk = 250
    for i in range(0, len(records), chunk):
        await apply_batch(live, TOPICS, records[i : i + chunk], now_ms=0, outbox=False)
    for pool, flush_every in ((small, 333), (whole, 10**9)):
        keeper = Resident(pool, TOPICS, flush_every=flush_every)
        write = keeper._write_apart

        async def slow_write(fx: Effects, write: Any = write) -> None:  # a slow server: writes overlap the chunks after
            await asyncio.sleep(0.1)
            await write(fx)

        keeper._write_apart = slow_write  # type: ignore[method-assign]
        for i in range(0, len(records), chunk):
            await keeper.apply(records[i : i + chunk])
        await keeper.finish()
        assert await _activities(pool) == await _activities(live)  # every write done once `finish` returns

    expected = await state_digest(live)
    assert await live.fetchval("SELECT count(*) FROM merges") > 0  # the stream does unify
    assert await live.fetchval("SELECT count(*) FROM users WHERE masked") > 0  # the MU limit bit (I17)
    assert await live.fetchval("SELECT count(*) FROM users WHERE masked AND type = 'lead'") > 0  # … not only imports'
    for pool in (small, whole):
        assert await state_digest(pool) == expected
        assert await _activities(pool) == await _activities(live)
        assert await _imports_log(pool) == await _imports_log(live)
        ids = "SELECT channel_id, kind, value, user_id, qualified FROM identities ORDER BY 1, 2, 3, 4"
        assert [tuple(r) for r in await pool.fetch(ids)] == [tuple(r) for r in await live.fetch(ids)]
        assert await _outcomes(pool) == await _outcomes(live)  # held and written once at the end (issue 14)
    assert any(row[3] is not None for row in await _outcomes(live))  # rejected commands among them


async def _outcomes(pool: asyncpg.Pool) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await pool.fetch("SELECT channel_id, event_id, at, code, message FROM command_outcomes ORDER BY 1, 2")]


async def test_held_outcomes_are_the_rows_the_store_keeps(schemas: list[asyncpg.Pool]) -> None:
    """Issue 14: a resident build holds the commands' outcomes and COPYs them at the end;
    at the same flush points they are the rows `outcomes.save` and `forget_and_announce`
    leave: applied wins over a later rejection of one eventId (and replaces an earlier
    one), repeats keep the last, and each flush forgets its channels' outcomes older than
    their latest command minus KEEP_MS (another channel's are kept until it flushes)."""
    store, copied, _ = schemas
    keep = outcomes.KEEP_MS
    flushes: list[list[outcomes.Outcome]] = [
        [("a", "1", 10, None, None), ("a", "2", 20, "x", "no"), ("b", "1", 5, "y", "no"), ("a", "2", 21, None, None),
         ("c", "1", 1, None, None)],
        [("a", "2", 30, "z", "late"), ("a", "3", 31, "x", "no"), ("a", "3", 32, "x", "again"), ("b", "9", 6, None, None),
         ("c", "1", 2, "z", "a rejection after the applied one")],
        [("a", "4", 40 + keep, None, None)],  # a's outcomes before 40 are forgotten, b's stay
        [("b", "2", 7, None, None), ("a", "1", 41 + keep, "r", "repeat past the window"), ("a", "5", 45 + keep, "x", "no")],
    ]
    held = HeldOutcomes()
    for rows in flushes:
        async with store.acquire() as conn, conn.transaction():
            await outcomes.save(conn, rows)
            await outcomes.forget_and_announce(conn, [r[0] for r in rows], [])
        held.save(rows)
    async with copied.acquire() as conn:
        await held.copy(conn)
    expected = await _outcomes(store)
    assert ("a", "1", 41 + keep, "r", "repeat past the window") in expected and ("a", "2", 21, None, None) not in expected
    assert ("b", "1", 5, "y", "no") in expected and ("c", "1", 1, None, None) in expected
    assert await _outcomes(copied) == expected


async def test_a_part_of_the_end_refused_fails_it_once_every_part_has_stopped(schemas: list[asyncpg.Pool]) -> None:
    """Flow 5: `Resident.finish` writes the users, their identities and the rest on
    connections of their own at once (issue 14, session 14). A part the store refuses
    (here the users' COPY: a row with the first user's id is there already) fails the
    build, which then empties the schema and redoes the log batch by batch
    (rebuild._batch_by_batch): so the failure is raised only once no other part still
    writes, every connection back in the pool."""
    live, target, _ = schemas
    records = _records()
    await apply_batch(live, TOPICS, records, now_ms=0, outbox=False)
    keeper = Resident(target, TOPICS, flush_every=10**9)  # everything pending until the end
    for i in range(0, len(records), 250):
        await keeper.apply(records[i : i + 250])
    source = await live.fetchval("SELECT current_schema()")
    await target.execute(f'INSERT INTO users SELECT * FROM "{source}".users ORDER BY id LIMIT 1')
    try:
        await keeper.finish()
    except asyncpg.UniqueViolationError:
        pass
    else:
        raise AssertionError("the users' COPY was not refused")
    assert target.get_idle_size() == target.get_size()  # no part left writing


async def test_a_later_merge_moves_exactly_the_chats_save_merges_would(schemas: list[asyncpg.Pool]) -> None:
    """U4, G4 (issue 14, session 15): a resident build records its merges by COPY and
    re-points only the activities of users it has written activities for
    (`resident._save_merges`), where `repository.save_merges` matched every source against
    the whole table at every write. Over random writes — chats of users merged in the
    same write, in a later one, chains across writes (A into B, later B into C), users
    never merged — the activities and merges are the rows `save_merges` leaves."""
    reference, resident, _ = schemas

    async def write(keeper: Resident, acts: list[Activity], merges: list[MergeRecord]) -> None:
        async with reference.acquire() as conn, conn.transaction():  # the writes before session 15
            await bulk.copy_activities(conn, _repointed(acts, merges))
            await repo.save_merges(conn, merges)
        async with resident.acquire() as conn:
            await keeper._write_effects(conn, Effects(activities=acts, merges=merges))

    # A's chat written; A into B (no chat of its own); then B into C: the chat goes on to C.
    keeper = Resident(resident, TOPICS)
    await write(keeper, [Activity("ch", "a", "chat", "e-a", 1, {})], [])
    await write(keeper, [], [MergeRecord("ch", "a", "b", "c1", 2, ())])
    await write(keeper, [], [MergeRecord("ch", "b", "c", "c2", 3, ())])
    assert await resident.fetchval("SELECT user_id FROM activities WHERE event_id = 'e-a'") == "c"
    for seed in range(6):
        rng = random.Random(seed)
        keeper = Resident(resident, TOPICS)
        alive = [f"u{seed}-{n}" for n in range(14)]
        event = 0
        moved_later = 0
        for _write in range(5):
            acts = []
            for _ in range(rng.randint(0, 12)):
                event += 1
                acts.append(Activity("ch", rng.choice(alive), "chat", f"e{seed}-{event}", event, {"n": event}))
            merges = []
            for _ in range(rng.randint(0, 3)):
                if len(alive) < 2:
                    break
                source, target = rng.sample(alive, 2)
                alive.remove(source)
                merges.append(MergeRecord("ch", source, target, f"c{event}", event, ()))
            moved_later += sum(1 for m in merges if m.source_id in keeper._written)
            await write(keeper, acts, merges)
        assert moved_later > 0  # some merge found chats written before it
    for table in ("SELECT channel_id, event_id, user_id, kind, body::text FROM activities ORDER BY 1, 2",
                  "SELECT channel_id, source_id, target_id, causation_id, occurred_at, contested::text FROM merges ORDER BY 1, 2"):
        assert [tuple(r) for r in await resident.fetch(table)] == [tuple(r) for r in await reference.fetch(table)]


async def test_a_write_beside_the_build_refused_fails_the_build_with_nothing_left_writing(
    schemas: list[asyncpg.Pool],
) -> None:
    """Flow 5 (issue 14, session 15): the pending effects are written beside the next
    chunks, one write at a time. A write the store refuses (here an activity whose
    eventId is there already) fails the build — at the next write or at the end — and
    once the build has failed nothing still writes (rebuild.apply_all's `abandon`): the
    fallback empties the schema next."""
    live, target, _ = schemas
    records = _records()
    await apply_batch(live, TOPICS, records, now_ms=0, outbox=False)
    source = await live.fetchval("SELECT current_schema()")
    await target.execute(f'INSERT INTO activities SELECT * FROM "{source}".activities ORDER BY event_id DESC LIMIT 1')
    keeper = Resident(target, TOPICS, flush_every=333)
    try:
        for i in range(0, len(records), 250):
            await keeper.apply(records[i : i + 250])
        await keeper.finish()
    except asyncpg.UniqueViolationError:
        pass
    else:
        raise AssertionError("the activities' COPY was not refused")
    finally:
        await keeper.abandon()
    assert target.get_idle_size() == target.get_size()  # no write left running
