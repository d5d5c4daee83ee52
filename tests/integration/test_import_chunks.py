"""Import rows published in chunks (`import.rows`, contract 1.3.0; docs/decisions.md,
"Issue 14, session 9: import rows in chunks"), against the real broker and PostgreSQL:
a chunk's rows are applied exactly as the one-row `import.row` records they stand for,
wherever the chunks are cut and whatever the batches; the row mark holds across both
formats (a log an older importer wrote replays, an import it left resumes); a hostile
chunk or row is refused with its reason and consumption goes on; a service killed -9
mid-import applies every row once."""

from __future__ import annotations

import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from contracts.inbound import MAX_CHUNK_BYTES
from contracts.topics import Topics
from services.importer.run import CHUNK_ROWS
from services.platform.config import Settings
from services.projection.batch import apply_batch
from services.projection.records import Record
from services.replay.digest import state_digest
from services.store import import_log
from services.store.queries import find_user
from tests.integration.test_faults import Service, assert_state_is_a_rebuild, service, services  # noqa: F401
from tests.integration.test_import_resident import pools  # noqa: F401  # two schemas, dropped after
from tests.support.imports import unifier, write_csv
from tests.support.infra import wait_for
from tests.support.service import Publisher, read_topic, running_service

pytestmark = pytest.mark.integration

TOPICS = Topics("t")
CH, IMP = "ch_chunks", "imp_chunks"
T0 = 1_767_225_600_000
COLUMNS = [
    {"column": "memberId", "key": "memberId"}, {"column": "email", "key": "profile.email"},
    {"column": "purchases", "key": "profile.purchases", "type": "list"},
    {"column": "unsubscribeEmail", "key": "unsubscribeEmail"}, {"column": "unsubscribeTexting", "key": "unsubscribeTexting"},
]
LAST = 121  # rows 2…121


def cells(n: int) -> dict[str, str]:
    """Rows that meet each other, so that their order and grouping matter: every 7th
    updates the member of the row before it (I2), every 13th shares the e-mail of the row
    two before (a contact someone holds: the general path), every 11th has a bad e-mail
    (fails, I9). A list column appends (I8): a row applied twice would show twice."""
    member = f"m{n - 1}" if n % 7 == 0 else f"m{n}"
    email = "not-an-email" if n % 11 == 0 else f"u{n - 2 if n % 13 == 0 else n}@example.jp"
    return {"memberId": member, "profile.email": email, "profile.purchases": f'["p{n}"]',
            "unsubscribeEmail": "false", "unsubscribeTexting": "true"}


class Log:
    """An import's records on one partition of import-rows, offsets counted."""

    def __init__(self, topic: str = TOPICS.import_rows) -> None:
        self.topic, self.offset = topic, 0

    def record(self, value: bytes) -> Record:
        self.offset += 1
        return Record(self.topic, 0, self.offset - 1, T0 + self.offset, CH.encode(), value)

    def body(self, body: dict[str, Any]) -> Record:
        return self.record(orjson.dumps({"channelId": CH, "occurredAt": T0, "importId": IMP, **body}))

    def started(self) -> Record:
        return self.body({"eventId": f"{IMP}:started:1", "type": "import.started", "mode": "member", "key": "memberId",
                          "blank": "keep", "actor": "staff", "fileName": "m.csv", "columns": COLUMNS})

    def row(self, n: int) -> Record:  # the one-row record contract 1.2.0's importer wrote
        return self.body({"eventId": f"{IMP}:{n}", "type": "import.row", "rowNumber": n, "cells": cells(n)})

    def chunk(self, numbers: Sequence[int], rows: list[Any] | None = None) -> Record:
        return self.body({"eventId": f"{IMP}:rows:{numbers[0] if numbers else 0}", "type": "import.rows",
                          "rows": rows if rows is not None else [{"rowNumber": n, "cells": cells(n)} for n in numbers]})

    def finished(self, rows: int) -> Record:
        return self.body({"eventId": f"{IMP}:finished:1", "type": "import.finished", "rows": rows})


async def _apply(pool: asyncpg.Pool, batches: list[list[Record]]) -> None:
    for records in batches:
        await apply_batch(pool, TOPICS, records, now_ms=0)


async def _outcome(pool: asyncpg.Pool) -> tuple[Any, ...]:
    """Everything an import leaves: the users (digest), its record, its failed rows, and
    the messages it published (user-changed keys and bodies, in order)."""
    async with pool.acquire() as conn:
        digest = await state_digest(conn)
    record = await pool.fetchrow(
        "SELECT status, rows, created, updated, failed, last_row FROM imports WHERE channel_id = $1", CH)
    failures = await pool.fetch(
        "SELECT row_number, error_columns, error_reason, cells FROM import_failures ORDER BY row_number")
    outbox = await pool.fetch("SELECT topic, key, value FROM outbox_messages ORDER BY id, ordinal")
    return digest, tuple(record), [tuple(f) for f in failures], [tuple(m) for m in outbox]


async def test_rows_in_chunks_cut_anywhere_end_as_the_one_row_records_do(pools: list[asyncpg.Pool]) -> None:  # noqa: F811
    """The format change keeps every I-rule's outcome: the same users, counts, failed
    rows and messages, with chunks cut before, inside and after rows that meet (a member
    updated by the next row, a shared e-mail, a failing row) and batches of one chunk or
    several."""
    one_row, chunked = pools
    old = Log()
    await _apply(one_row, [[old.started(), *[old.row(n) for n in range(2, 40)]],
                           [old.row(n) for n in range(40, LAST + 1)], [old.finished(LAST - 1)]])
    new = Log()
    started = new.started()
    cuts = [(2, 2), (3, 7), (8, 13), (14, 14), (15, 77), (78, LAST)]  # 7, 13, 14 at the edges
    chunks = [new.chunk(range(a, b + 1)) for a, b in cuts]
    await _apply(chunked, [[started, chunks[0]], chunks[1:4], [chunks[4]], [chunks[5], new.finished(LAST - 1)]])

    expected = await _outcome(one_row)
    status, rows, created, updated, failed, mark = expected[1]
    assert (status, rows, mark) == ("completed", LAST - 1, LAST) and created and updated and failed  # every case met
    assert await _outcome(chunked) == expected


async def test_an_import_an_older_importer_left_resumes_in_chunks_without_applying_a_row_twice(
    pools: list[asyncpg.Pool],  # noqa: F811
) -> None:
    """A log an older version wrote (one-row records) is still applied, and the row mark
    holds across the formats: rows 2…50 as one-row records, then the resumed attempt
    publishes the file from its first row in chunks. Rows up to 50 are skipped, the rest
    applied: the state of the import applied once."""
    once, resumed = pools
    log = Log()
    await _apply(once, [[log.started(), *[log.row(n) for n in range(2, LAST + 1)], log.finished(LAST - 1)]])
    log = Log()
    await _apply(resumed, [[log.started(), *[log.row(n) for n in range(2, 51)]],
                           [log.chunk(range(2, 60)), log.chunk(range(60, LAST + 1))], [log.finished(LAST - 1)]])
    assert (await _outcome(resumed))[:3] == (await _outcome(once))[:3]


async def test_a_hostile_chunk_is_refused_with_its_reason_and_a_bad_row_alone_and_consumption_goes_on(
    pool: asyncpg.Pool,
) -> None:
    """The door for chunks (docs/contract.md, "Limits"; hostile input, issue 11): a chunk
    too large, not a list of rows, or not JSON is dead-lettered whole with its code; a row
    the door refuses is dead-lettered alone (reason prefixed `rows[i]`, the letter's value
    that row's `import.row`); a cell with U+0000 fails its row (I15); the rest is applied."""
    log = Log()
    bad_rows: list[Any] = [
        {"rowNumber": 2, "cells": cells(2)},
        {"rowNumber": "three", "cells": cells(3)},  # not a number
        {"rowNumber": 4, "cells": {**cells(4), "profile.email": "a\u0000@example.jp"}},  # U+0000: the row fails (I15)
        {"rowNumber": 5, "cells": cells(5), "eventId": "x"},  # a row cannot set its envelope
        "row six",
        {"rowNumber": 8, "cells": cells(8)},
    ]
    records = [
        log.started(),
        log.chunk([2], bad_rows),
        huge := log.chunk([10], [{"rowNumber": n, "cells": {**cells(n), "name": "x" * 3000}} for n in range(10, 110)]),
        log.chunk([], {"rowNumber": 9}),  # type: ignore[arg-type]  # rows not a list
        log.chunk([], []),  # no row
        log.record(b'{"type": "import.rows", "rows": [{'),  # not JSON
        log.chunk(range(122, 124)),
        log.finished(9),
    ]
    assert len(huge.value or b"") > MAX_CHUNK_BYTES
    result = await apply_batch(pool, TOPICS, records, now_ms=0)

    assert dict(result.dead_letters) == {"invalid_fields": 5, "too_large": 1, "bad_json": 1}
    letters = [orjson.loads(v) for (v,) in await pool.fetch(
        "SELECT value FROM outbox_messages WHERE topic = $1 ORDER BY id, ordinal", TOPICS.dead_letter)]
    reasons = [(lt["offset"], lt["error"]["code"], lt["error"]["message"]) for lt in letters]
    assert [r[:2] for r in reasons] == [(1, "invalid_fields")] * 3 + [
        (2, "too_large"), (3, "invalid_fields"), (4, "invalid_fields"), (5, "bad_json")]
    assert reasons[0][2].startswith("rows[1]: rowNumber:") and reasons[1][2].startswith("rows[3].eventId:")
    assert reasons[2][2].startswith("rows[4]: expected an object") and str(MAX_CHUNK_BYTES) in reasons[3][2]
    row_three = orjson.loads(letters[0]["value"])  # the row as its own import.row: a retry applies it alone
    assert (row_three["type"], row_three["eventId"], row_three["rowNumber"]) == ("import.row", f"{IMP}:three", "three")
    for n in (2, 8, 122, 123):
        assert await find_user(pool, CH, "member", f"m{n}") is not None, n
    failed = await pool.fetch("SELECT row_number, error_reason FROM import_failures")
    assert [(r[0], "U+0000" in r[1]) for r in failed] == [(4, True)]
    record = await import_log.import_record(pool, CH, IMP)
    assert record is not None and (record["created"], record["failed"], record["status"]) == (4, 1, "completed")


async def test_unifier_import_publishes_chunks_of_rows_in_row_order(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path,
) -> None:
    """`unifier import` publishes `import.rows` records (no `import.row`), each at most
    CHUNK_ROWS rows, every row once, in row order; the service applies every one."""
    rows = 2 * CHUNK_ROWS + 234
    body = "".join(f'm{n},"[""p{n}""]",false,true\n' for n in range(2, rows + 2))
    path = write_csv(tmp_path / "m.csv", "memberId,purchases,unsubscribeEmail,unsubscribeTexting\n" + body)
    async with running_service(settings):
        ran = await unifier(settings, "import", str(path), "--channel", CH, "--mode", "member",
                            "--map", "purchases=profile.purchases:list")
        assert ran.code == 0, ran.err
        assert ran.json()["created"] == rows
    published = [v for _, v in await read_topic(settings, Topics(settings.topic_prefix).import_rows)]
    types = [v["type"] for v in published]
    assert types[0] == "import.started" and types[-1] == "import.finished"
    assert set(types[1:-1]) == {"import.rows"} and len(types) - 2 >= 3
    numbers = [r["rowNumber"] for v in published[1:-1] for r in v["rows"]]
    assert numbers == list(range(2, rows + 2))
    assert max(len(v["rows"]) for v in published[1:-1]) <= CHUNK_ROWS
    assert await pool.fetchval("SELECT count(*) FROM users WHERE channel_id = $1", CH) == rows


async def test_kill_9_mid_chunk_then_restart_applies_every_row_once_and_a_rebuild_agrees(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path, services: list[Service],  # noqa: F811
) -> None:
    """A chunk is applied in one transaction with its offset: a service killed while
    applying an import applies each row once after its restart (a list column would show
    a row twice), and a rebuild of the log (chunks read again) gives the same state."""
    total_chunks, per_chunk = 40, 100
    last = 1 + total_chunks * per_chunk
    log = Log(Topics(settings.topic_prefix).import_rows)

    def fresh(n: int) -> dict[str, Any]:
        return {"rowNumber": n, "cells": {"memberId": f"m{n}", "profile.purchases": f'["p{n}"]',
                                          "unsubscribeEmail": "false", "unsubscribeTexting": "true"}}

    values = [log.started().value, *[log.chunk([a], [fresh(n) for n in range(a, a + per_chunk)]).value
                                     for a in range(2, last + 1, per_chunk)], log.finished(last - 1).value]
    svc = await service(settings, tmp_path, services, "first", UNIFIER_BATCH_MAX="300").start()
    async with Publisher(settings) as pub:
        await pub.send(pub.topics.import_rows, [v for v in values if v is not None], key=CH)

    async def some_applied() -> int | None:
        record = await import_log.import_record(pool, CH, IMP)
        return record["created"] + record["updated"] if record is not None and record["created"] > 0 else None

    before = await wait_for(some_applied, timeout=60, message="the import under way", interval=0.005)
    svc.signal(signal.SIGKILL)
    assert await svc.wait() == -signal.SIGKILL
    at_kill = await some_applied()
    assert at_kill is not None and before <= at_kill < last - 1  # killed mid-import

    await service(settings, tmp_path, services, "restart", UNIFIER_BATCH_MAX="300").start()

    async def done() -> bool:
        record = await import_log.import_record(pool, CH, IMP)
        return record is not None and record["status"] == "completed"

    await wait_for(done, timeout=120, message="the import completed after the restart")
    record = await import_log.import_record(pool, CH, IMP)
    assert record is not None
    assert (record["created"] + record["updated"] + record["failed"], record["rows"]) == (last - 1, last - 1)
    assert (record["created"], record["updated"], record["failed"]) == (last - 1, 0, 0)
    for n in (2, at_kill, at_kill + 1, at_kill + 2, last):  # around where it was killed, and the ends
        user = await find_user(pool, CH, "member", f"m{n}")
        assert user is not None and user["profile"]["purchases"] == [f"p{n}"], user  # applied once (I8 appends)
    assert await pool.fetchval("SELECT last_row FROM imports WHERE channel_id = $1", CH) == last
    await assert_state_is_a_rebuild(settings)
