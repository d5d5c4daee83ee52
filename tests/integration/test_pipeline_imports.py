"""An import's rows on the pipelined projection (services/projection/pipeline.py; issue 14
item 5): batch N+1 of an import's chunks is prepared while N commits, its import book's
row marks taken from what N leaves in memory (`pipeline._book_after`), and must end in
exactly the state the serial path reaches (apply_batch, each batch after the one before
committed): users, the import's record with its counts and row mark, its failed rows,
every message — also when a chunk comes again right after N (a producer's retry: its rows
at or below N's mark are skipped), and when N's commit fails after N+1 was prepared on it.
Against the real PostgreSQL; the records are those of test_import_chunks.py (rows that
update, share a contact and fail)."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from services.platform.config import Settings
from services.projection.batch import BatchResult, apply_batch, dead_letter_record
from services.projection.isolation import NOT_THE_RECORD, apply_isolating
from services.projection.pipeline import Pipeline
from services.projection.records import Record
from services.projection.resident import ResidentUsers
from services.store import import_log
from services.store import repository as repo
from tests.integration.test_faults import Service, assert_state_is_a_rebuild, service, services  # noqa: F401
from tests.integration.test_import_chunks import CH, TOPICS, Log, _outcome
from tests.integration.test_import_resident import pools  # noqa: F401  # two schemas, dropped after
from tests.integration.test_pipeline import _fail_commit
from tests.support.imports import unifier, write_csv

pytestmark = pytest.mark.integration

LAST = 801  # rows 2…801
ROWS = 50  # a chunk's; two chunks a batch: ~80 new users, which go by COPY (repo.COPY_NEW_FROM)
DUPLICATED = 6  # the chunk that comes twice: last of a batch, then alone as the next batch


def _batches() -> list[list[Record]]:
    """An import's records in batches as the consumer cuts them: its start with the first
    chunk, then two chunks of 50 rows a batch, one chunk published twice (the copy, a
    batch of its own, right after the batch holding the first), the last chunk with the
    finish."""
    log = Log()
    started = log.started()
    chunks = [log.chunk(range(a, min(a + ROWS, LAST + 1))) for a in range(2, LAST + 1, ROWS)]
    again = log.chunk(range(2 + ROWS * DUPLICATED, 2 + ROWS * DUPLICATED + ROWS))  # a retried produce: the same rows
    rows = chunks[1:-1]
    batches = [[started, chunks[0]]]
    for i in range(0, len(rows), 2):
        batches.append(rows[i : i + 2])
        if rows[i + 1 : i + 2] == [chunks[DUPLICATED]]:
            batches.append([again])
    batches.append([chunks[-1], log.finished(LAST - 1)])
    assert [again] in batches
    # Offsets in the order the records are applied (the copy was published after the chunk).
    flat = [r for b in batches for r in b]
    renumbered = iter(range(len(flat)))
    return [[r._replace(offset=next(renumbered)) for r in b] for b in batches]


def _pipeline(pool: asyncpg.Pool, resident: ResidentUsers) -> Pipeline:
    """A pipeline whose serial path is the consumer's (test_pipeline._pipeline), with
    the outbox written, so that every message is compared."""

    async def attempt(batch: list[Record]) -> BatchResult:
        for _ in range(10):
            try:
                return await apply_batch(pool, TOPICS, batch, now_ms=0, resident=resident)
            except (repo.Conflict, *NOT_THE_RECORD):
                continue
        raise AssertionError("the serial path kept failing")

    async def dead_letter(record: Record, code: str, reason: str) -> BatchResult:
        return await dead_letter_record(pool, TOPICS, record, code, reason, now_ms=0)

    async def serial(records: list[Record]) -> BatchResult:
        serial.batches += 1  # type: ignore[attr-defined]
        return await apply_isolating(attempt, records, dead_letter, passthrough=())

    serial.batches = 0  # type: ignore[attr-defined]
    return Pipeline(pool, TOPICS, resident, serial, lambda _r, _res, _e: None)


async def _serial(pool: asyncpg.Pool, batches: list[list[Record]]) -> None:
    for records in batches:
        await apply_batch(pool, TOPICS, records, now_ms=0)


async def _hold_commits_of_the_import_log(pool: asyncpg.Pool) -> None:
    """Each batch's update of the import's counts and mark takes 0.2 s more in PostgreSQL,
    so the next batch's preparation reads the import log before the batch in flight
    committed (what the overlay is for), every time, not only when the loop's turns
    happen to fall so."""
    await pool.execute("""
        CREATE FUNCTION slow_import_log() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_sleep(0.2); RETURN NULL; END $$;
        CREATE TRIGGER slow_import_log AFTER UPDATE ON imports FOR EACH STATEMENT EXECUTE FUNCTION slow_import_log();
    """)


async def test_i16_an_imports_rows_prepared_ahead_end_as_the_serial_path_with_a_chunk_delivered_twice(
    pools: list[asyncpg.Pool], monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    """I15, I16 (every row once, counted once), issue 14 item 5: the import's batches of
    rows are prepared while the batch before commits (its start and finish go serially),
    and end with the serial path's users, record (counts, mark), failed rows and
    messages. A chunk delivered again in the batch after its first delivery has its rows
    skipped by the row mark that batch left in memory — not yet stored when the next one
    read the import log. The users the import wrote are not kept resident (as the serial
    path lets them go); its new users are written by COPY, as the serial path writes them."""
    serial, piped = pools
    batches = _batches()
    serial_resident = ResidentUsers(10**6)
    for records in batches:
        await apply_batch(serial, TOPICS, records, now_ms=0, resident=serial_resident)
    expected = await _outcome(serial)
    status, rows, created, updated, failed, mark = expected[1]
    assert (status, rows, mark) == ("completed", LAST - 1, LAST) and created and updated and failed

    await _hold_commits_of_the_import_log(piped)
    copied: list[int] = []
    real_copy = repo.copy_new_users

    async def copy_new_users(conn: asyncpg.Connection, payload: bytes) -> None:
        copied.append(len(payload))  # counted, then written by the real COPY
        await real_copy(conn, payload)

    monkeypatch.setattr(repo, "copy_new_users", copy_new_users)
    resident = ResidentUsers(10**6)
    pipe = _pipeline(piped, resident)
    for records in batches:
        await pipe.feed(records)
    await pipe.drain()
    assert len(copied) >= pipe.pipelined - 1 > 0  # its new users went by COPY, as apply_batch's
    assert pipe.redone == 0 and resident.drops == 0
    assert pipe.serial.batches == 2  # type: ignore[attr-defined]  # the start's batch and the finish's
    assert pipe.pipelined == len(batches) - 2  # every batch of rows alone was prepared ahead
    assert await _outcome(piped) == expected
    # The users the import wrote are let go after each commit, as the serial path lets
    # them go (it keeps only those a batch read and did not change): no more are kept.
    kept = {u.id for u in resident.directory.users() if u.channel_id == CH}
    assert kept <= {u.id for u in serial_resident.directory.users() if u.channel_id == CH}


@pytest.mark.parametrize("how", ["check", "kill"])
async def test_a_commit_failing_mid_import_after_the_next_batch_was_prepared_ends_as_the_serial_path(
    pools: list[asyncpg.Pool], how: str,  # noqa: F811
) -> None:
    """G3, crash safety, I16: the transaction of a pipelined batch of import rows fails
    (`check`: a record the store refuses, so the serial path isolates; `kill`: its
    backend dies, an outage) after the next batch was prepared on its import book. All in
    memory is dropped, both batches are applied by the serial path from the committed
    state, and the import ends with the serial path's users, record, failed rows and
    messages: no row counted twice or lost."""
    serial, piped = pools
    batches = _batches()
    await _serial(serial, batches)
    await _hold_commits_of_the_import_log(piped)
    # Statements writing users: two by the start's batch (a new member is INSERTed, one
    # updated), then about two a batch; the fifth is a pipelined batch's.
    await _fail_commit(piped, 5, how)
    resident = ResidentUsers(10**6)
    pipe = _pipeline(piped, resident)
    for records in batches:
        await pipe.feed(records)
    await pipe.drain()
    assert await piped.fetchval("SELECT last_value FROM fault_count") > 5  # the fault fired
    assert pipe.redone == 2 and resident.drops >= 1  # the failed batch and the one prepared on it
    assert await _outcome(piped) == await _outcome(serial)
    stored = await repo.stored_offsets(piped, [TOPICS.import_rows])
    assert stored == await repo.stored_offsets(serial, [TOPICS.import_rows])


LIVE_CH, LIVE_ROWS = "ch_pipe_import", 3000


def _live_file(path: Path) -> tuple[Path, dict[str, int]]:
    """A member file whose rows meet: every 7th updates the member of the row before
    (I2), every 11th has a bad e-mail (fails, I9); a list column appends (I8), so a row
    applied twice shows twice. With the counts its import must report."""
    members: set[str] = set()
    counts = {"created": 0, "updated": 0, "failed": 0}
    lines = ["memberId,email,purchases,unsubscribeEmail,unsubscribeTexting\n"]
    for i in range(LIVE_ROWS):
        member = f"m-{i - 1:05d}" if i % 7 == 0 and i else f"m-{i:05d}"
        email = "not-an-email" if i % 11 == 0 else f"u{i}@example.jp"
        lines.append(f'{member},{email},"[""p{i}""]",false,false\n')
        if i % 11 == 0:
            counts["failed"] += 1
        elif member in members:
            counts["updated"] += 1
        else:
            counts["created"] += 1
            members.add(member)
    return write_csv(path, "".join(lines)), counts


async def test_an_import_through_unifier_run_with_commits_killed_ends_as_a_rebuild_with_its_counts(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path, services: list[Service],  # noqa: F811
) -> None:
    """I15, I16, crash safety, issue 14 item 5: `unifier import` of 3,000 rows into
    `unifier run` (real broker and PostgreSQL, small batches, UNIFIER_BATCH_MAX=150, so
    most are prepared while the one before commits), with every 5th statement writing users
    killing its own backend — mostly a pipelined import batch's, with the next one
    prepared on its import book. The import reports every row once with the counts the
    file implies, its record and failed rows say the same, and the state is a rebuild's."""
    await pool.execute("""
        CREATE SEQUENCE fault_count;
        CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF nextval('fault_count') % 5 = 0 THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF;
          RETURN NULL;
        END $$;
        CREATE TRIGGER fault AFTER INSERT OR UPDATE ON users FOR EACH STATEMENT EXECUTE FUNCTION fault();
    """)
    path, counts = _live_file(tmp_path / "members.csv")
    svc = await service(settings, tmp_path, services, "run", UNIFIER_BATCH_MAX="150").start()
    ran = await unifier(settings, "import", str(path), "--channel", LIVE_CH, "--mode", "member",
                        "--map", "purchases=profile.purchases:list", timeout=300)
    assert ran.code == 0, ran.err[-3000:]
    assert await svc.stop() == 0, svc.text()[-3000:]
    await pool.execute("DROP TRIGGER fault ON users")

    report = ran.json()
    assert {k: report[k] for k in counts} == counts
    # At least one backend was killed (every 5th statement): how many statements an
    # import makes depends on how its chunks fall into batches, which load shifts (7 seen
    # under load, 10+ quiet), so only "the fault fired" is asserted here, and the next line
    # that it hit a pipelined commit.
    assert await pool.fetchval("SELECT last_value FROM fault_count") >= 5
    assert svc.says("pipelined batch of") and svc.says("not committed")  # a pipelined commit failed
    [record] = await import_log.list_imports(pool, LIVE_CH)
    assert (record["status"], record["rows"]) == ("completed", LIVE_ROWS)
    assert {k: record[k] for k in counts} == counts
    assert await pool.fetchval("SELECT count(*) FROM import_failures WHERE channel_id = $1", LIVE_CH) == counts["failed"]
    await assert_state_is_a_rebuild(settings)
