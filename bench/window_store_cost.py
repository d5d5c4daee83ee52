"""What remembering eventIds costs PostgreSQL (issue 14, item 3: the eventId window),
by layout, in the steady state: a window held per channel, as many eventIds forgotten
as remembered in each batch, one eventId in ~600 sent again (found).

- `rows`: the layout and statements before session 12's helper "forget" (`applied_events`,
  a row per fact with an index on (channel_id, at); each channel's clock max(at), its
  expired rows deleted by every batch).
- `runs`: one row per channel and batch with the batch's eventIds and event times as
  arrays, written by binary COPY and forgotten a run at a time once its latest event
  time is out of the window. It has no way to find one eventId: the lookup would be
  answered from memory (docs/decisions.md, "Issue 14, session 12"), so only the writes
  and the forgetting are priced; `--load` also prices reading a channel's whole window
  back (what a mirror in memory costs on a channel's first batch).
- `lazy`: today's (repository.applied_window, save_applied, raise_clocks, called as the
  projection calls them, on the tree's schema.sql): rows without the (channel_id, at) index, each channel's clock
  in `applied_clocks`, a channel's expired rows swept by the batch that moves its clock
  half a window past its last sweep (the rule ignores them meanwhile).
- `gin`: the runs with a GIN index on the eventIds (fastupdate off: a pending list is
  scanned whole by every lookup), which answers the lookup in PostgreSQL.

Each statement's backend CPU is read around it from /proc/<pid>/schedstat (nanoseconds;
run it on the database's machine). Rounds alternate the variants, so that a shared
machine's load falls on all of them.

    .venv/bin/python bench/window_store_cost.py                      # ~2 minutes
    .venv/bin/python bench/window_store_cost.py --held 120000 --batches 500 --variants rows,runs
    .venv/bin/python bench/window_store_cost.py --variants textl,hashpk --batches 300 --rounds 2 --vacuum 25

A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from services.store import repository as repo  # noqa: E402

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"

ROWS_LOOKUP = """SELECT a.channel_id, a.event_id, a.at FROM applied_events a
                   JOIN unnest($1::text[], $2::text[]) AS p(c, e) ON a.channel_id = p.c AND a.event_id = p.e
                 UNION ALL
                 SELECT c, NULL, (SELECT max(at) FROM applied_events WHERE channel_id = c) FROM unnest($3::text[]) AS c"""
ROWS_FORGET = """DELETE FROM applied_events a
                  USING (SELECT c, (SELECT max(at) FROM applied_events WHERE channel_id = c) AS clock
                           FROM unnest($1::text[]) AS c) k
                  WHERE a.channel_id = k.c AND a.at < k.clock - $2::bigint"""
ROWS_DDL = """CREATE TABLE applied_events (channel_id text NOT NULL, event_id text NOT NULL, at bigint NOT NULL,
                                           PRIMARY KEY (channel_id, event_id));
              CREATE INDEX applied_events_clock ON applied_events (channel_id, at)"""
RUNS_DDL = """CREATE TABLE applied_runs (channel_id text NOT NULL, last_at bigint NOT NULL,
                                         event_ids text[] NOT NULL, ats bigint[] NOT NULL);
              CREATE INDEX applied_runs_clock ON applied_runs (channel_id, last_at)"""
# `lazy` runs on the tree's own schema.sql (the whole of it, in the bench's schema).
LAZY_DDL = (ROOT / "services" / "store" / "schema.sql").read_text()
# Session 13 (helper "window"): cheaper keys for the same rows and statements as `lazy`.
# `textl`: lazy's statements inlined (session 12's layout, whatever repository.py now does).
# `textc`: its key columns under COLLATE "C" (btree steps compare by memcmp, not strcoll).
# `hash`: one bigint key, the channel's hashtext in its high half and the eventId's in its
# low half, a stored generated column (PostgreSQL computes it, COPY and INSERTs unchanged),
# in a non-unique btree; a hit is confirmed on the exact pair in the row. `hashpk`: the same
# key as a primary key (k, channel_id, event_id). `hashpy`: a key from blake2b computed by the
# client (sent with COPY and the lookup) instead of a generated column.
HASH_SQL = "((hashtext({c})::bigint << 32) | (hashtext({e})::bigint & 4294967295))"
LAZY_TABLE = """CREATE TABLE applied_events (channel_id text {coll} NOT NULL, event_id text {coll} NOT NULL, at bigint NOT NULL{extra});
                CREATE TABLE applied_clocks (channel_id text PRIMARY KEY, clock bigint NOT NULL, swept bigint NOT NULL)"""
KEY_DDL = {
    "textl": LAZY_TABLE.format(coll="", extra=", PRIMARY KEY (channel_id, event_id)"),
    "textc": LAZY_TABLE.format(coll='COLLATE "C"', extra=", PRIMARY KEY (channel_id, event_id)"),
    # What a database created under a linguistic locale (en_US, typical of a packaged
    # server; this machine's servers are C.UTF-8) pays for the text key: ICU's en-US.
    "texticu": LAZY_TABLE.format(coll='COLLATE "en-US-x-icu"', extra=", PRIMARY KEY (channel_id, event_id)"),
    "hash": LAZY_TABLE.format(coll='COLLATE "C"', extra=", k bigint GENERATED ALWAYS AS ("
                              + HASH_SQL.format(c="channel_id", e="event_id") + ") STORED")
    + "; CREATE INDEX applied_events_key ON applied_events (k)",
    "hashpk": LAZY_TABLE.format(coll='COLLATE "C"', extra=", k bigint GENERATED ALWAYS AS ("
                                + HASH_SQL.format(c="channel_id", e="event_id") + ") STORED, PRIMARY KEY (k, channel_id, event_id)"),
    "hashany": LAZY_TABLE.format(coll="", extra=", k bigint GENERATED ALWAYS AS ("
                                 + HASH_SQL.format(c="channel_id", e="event_id") + ") STORED, PRIMARY KEY (k, channel_id, event_id)"),
    "hashpy": LAZY_TABLE.format(coll='COLLATE "C"', extra=", k bigint NOT NULL")
    + "; CREATE INDEX applied_events_key ON applied_events (k)",
}
TEXT_LOOKUP = """SELECT a.channel_id, a.event_id, a.at FROM applied_events a
                   JOIN unnest($1::text[], $2::text[]) AS p(c, e) ON a.channel_id = p.c AND a.event_id = p.e
                 UNION ALL
                 SELECT channel_id, NULL, clock FROM applied_clocks WHERE channel_id = ANY($3::text[])"""
# Per pair, one probe of the key (LATERAL … LIMIT 1: never a hash or merge join over the
# whole table, which the planner picked for a small table without statistics).
HASH_LOOKUP = """SELECT p.c, a.event_id, a.at FROM unnest($1::text[], $2::text[]) AS p(c, e)
                   CROSS JOIN LATERAL (SELECT a.event_id, a.at FROM applied_events a
                                        WHERE a.k = """ + HASH_SQL.format(c="p.c", e="p.e") + """
                                          AND a.channel_id = p.c AND a.event_id = p.e LIMIT 1) a
                 UNION ALL
                 SELECT channel_id, NULL, clock FROM applied_clocks WHERE channel_id = ANY($3::text[])"""
# `hashany`: hashpk's table, its lookup one index scan of all the batch's keys (= ANY),
# the rows of equal keys but other pairs dropped by the client.
HASHANY_LOOKUP = """SELECT a.channel_id, a.event_id, a.at FROM applied_events a
                     WHERE a.k = ANY(ARRAY(SELECT """ + HASH_SQL.format(c="p.c", e="p.e") + """
                                             FROM unnest($1::text[], $2::text[]) AS p(c, e)))
                   UNION ALL
                   SELECT channel_id, NULL, clock FROM applied_clocks WHERE channel_id = ANY($3::text[])"""
HASHPY_LOOKUP = """SELECT p.c, a.event_id, a.at FROM unnest($1::text[], $2::text[], $4::bigint[]) AS p(c, e, k)
                     CROSS JOIN LATERAL (SELECT a.event_id, a.at FROM applied_events a
                                          WHERE a.k = p.k AND a.channel_id = p.c AND a.event_id = p.e LIMIT 1) a
                   UNION ALL
                   SELECT channel_id, NULL, clock FROM applied_clocks WHERE channel_id = ANY($3::text[])"""
CLOCKS_RAISE = """INSERT INTO applied_clocks AS k (channel_id, clock, swept)
                  SELECT c, t, t FROM unnest($1::text[], $2::bigint[]) AS x(c, t)
                  ON CONFLICT (channel_id) DO UPDATE SET clock = EXCLUDED.clock,
                      swept = CASE WHEN EXCLUDED.clock >= k.swept + $3::bigint / 2 THEN EXCLUDED.clock ELSE k.swept END
                   WHERE k.clock < EXCLUDED.clock
                  RETURNING k.channel_id, k.clock, k.swept = k.clock AND xmax <> 0"""
TEXT_SWEEP = """DELETE FROM applied_events a USING unnest($1::text[], $2::bigint[]) AS k(c, clock)
                 WHERE a.channel_id = k.c AND a.at < k.clock - $3::bigint"""
# A channel's keys are one range: its hashtext in the high half.
HASH_SWEEP = """DELETE FROM applied_events a USING unnest($1::text[], $2::bigint[]) AS k(c, clock)
                 WHERE a.k BETWEEN hashtext(k.c)::bigint << 32 AND (hashtext(k.c)::bigint << 32) | 4294967295
                   AND a.channel_id = k.c AND a.at < k.clock - $3::bigint"""
HASHPY_SWEEP = """DELETE FROM applied_events a USING unnest($1::text[], $2::bigint[], $4::bigint[]) AS k(c, clock, h)
                   WHERE a.k BETWEEN k.h << 32 AND (k.h << 32) | 4294967295
                     AND a.channel_id = k.c AND a.at < k.clock - $3::bigint"""
RENEW = """DELETE FROM applied_events a USING unnest($1::text[], $2::text[]) AS r(c, e)
            WHERE a.channel_id = r.c AND a.event_id = r.e"""


def half(data: bytes) -> int:
    """A signed 32-bit hash (blake2b), for `hashpy`."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=4).digest(), "little", signed=True)


def py_key(c: str, e: str) -> int:
    return (half(c.encode()) << 32) | (half(e.encode()) & 0xFFFFFFFF)


async def keyed_batch(conn: asyncpg.Connection, variant: str, facts: list[tuple[str, str, int]], window: int,
                      tick: Callable[[str], None], chans: list[str]) -> int:
    """lazy's three statements (applied_window, save_applied, raise_clocks) on a variant's key."""
    cs, es = [f[0] for f in facts], [f[1] for f in facts]
    if variant == "hashpy":
        ks = [py_key(c, e) for c, e in zip(cs, es, strict=True)]
        rows = await conn.fetch(HASHPY_LOOKUP, cs, es, chans, ks)
    elif variant == "hashany":
        wanted = set(zip(cs, es, strict=True))
        rows = [r for r in await conn.fetch(HASHANY_LOOKUP, cs, es, chans) if r[1] is None or (r[0], r[1]) in wanted]
    else:
        rows = await conn.fetch(HASH_LOOKUP if variant.startswith("hash") else TEXT_LOOKUP, cs, es, chans)
    seen = {(r[0], r[1]) for r in rows if r[1] is not None}
    tick("lookup")
    new = [f for f in facts if (f[0], f[1]) not in seen]
    if variant == "hashpy":
        await conn.copy_records_to_table("applied_events", records=[(c, e, t, py_key(c, e)) for c, e, t in new],
                                         columns=("channel_id", "event_id", "at", "k"))
    else:
        await conn.copy_records_to_table("applied_events", records=new, columns=("channel_id", "event_id", "at"))
    tick("remember")
    latest: dict[str, int] = {}
    for c, _e, t in new:
        latest[c] = max(t, latest.get(c, t))
    due = [r for r in await conn.fetch(CLOCKS_RAISE, list(latest), list(latest.values()), window) if r[2]]
    if due:
        if variant == "hashpy":
            await conn.execute(HASHPY_SWEEP, [r[0] for r in due], [r[1] for r in due], window,
                               [half(r[0].encode()) for r in due])
        else:
            await conn.execute(HASH_SWEEP if variant.startswith("hash") else TEXT_SWEEP,
                               [r[0] for r in due], [r[1] for r in due], window)
    tick("forget")
    return len(facts) - len(new)


GIN_DDL = "CREATE INDEX applied_runs_event_ids ON applied_runs USING gin (event_ids) WITH (fastupdate = off)"

# The runs holding any of the batch's eventIds (one GIN scan of all of them: per pair,
# the planner joined by hash and tested `@>` run by run, ~70 µs an event), then the pairs.
RUNS_LOOKUP = """WITH hit AS MATERIALIZED (SELECT r.channel_id, r.event_ids, r.ats FROM applied_runs r
                                          WHERE r.event_ids && $2::text[])
                 SELECT h.channel_id, u.e, u.at FROM hit h
                   CROSS JOIN LATERAL unnest(h.event_ids, h.ats) AS u(e, at)
                   JOIN unnest($1::text[], $2::text[]) AS p(c, e) ON p.c = h.channel_id AND p.e = u.e
                 UNION ALL
                 SELECT c, NULL, (SELECT max(last_at) FROM applied_runs WHERE channel_id = c) FROM unnest($3::text[]) AS c"""
RUNS_FORGET = """DELETE FROM applied_runs a
                  USING (SELECT c, (SELECT max(last_at) FROM applied_runs WHERE channel_id = c) AS clock
                           FROM unnest($1::text[]) AS c) k
                  WHERE a.channel_id = k.c AND a.last_at < k.clock - $2::bigint"""
RUNS_LOAD = """SELECT r.channel_id, r.event_ids, r.ats FROM applied_runs r
                WHERE r.channel_id = ANY($1::text[])"""


def backend_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


SEQUENTIAL = False  # --ids sequential: projection_bench's eventIds


def event_id(n: int) -> str:
    if SEQUENTIAL:
        return f"e{n:08d}"  # short and increasing: each channel's text keys append at the right
    return hashlib.md5(str(n).encode()).hexdigest() + f"-{n}"  # ~40 characters, like a uuid


class Stream:
    """The facts of the batches: `per_batch` events over `channels`, each channel's event
    time one step an event, and one eventId of the batch before sent again."""

    def __init__(self, channels: int, per_batch: int) -> None:
        self.channels, self.per_batch, self.n = channels, per_batch, 0
        self.clock = [0] * channels

    def batch(self) -> list[tuple[str, str, int]]:
        facts = []
        for i in range(self.per_batch):
            ch = (self.n * 7 + i) % self.channels
            self.clock[ch] += 1
            facts.append((f"ch_{ch}", event_id(self.n), self.clock[ch]))
            self.n += 1
        if self.n > 2 * self.per_batch:
            c = facts[0][0]
            facts.append((c, event_id(self.n - self.per_batch - 3), self.clock[int(c[3:])]))
        return facts


async def one_batch(conn: asyncpg.Connection, variant: str, facts: list[tuple[str, str, int]], window: int,
                    pid: int, spent: dict[str, int]) -> int:
    """Apply one batch's window statements; returns the eventIds found again."""
    chans = sorted({f[0] for f in facts})
    cs, es = [f[0] for f in facts], [f[1] for f in facts]

    def tick(name: str, since: int) -> int:
        now = backend_ns(pid)
        spent[name] += now - since
        return now

    if variant in KEY_DDL:
        async with conn.transaction():
            mark = [backend_ns(pid)]

            def step(name: str) -> None:
                mark[0] = tick(name, mark[0])

            return await keyed_batch(conn, variant, facts, window, step, chans)

    async with conn.transaction():
        t = backend_ns(pid)
        if variant == "rows":
            seen = {(r[0], r[1]) for r in await conn.fetch(ROWS_LOOKUP, cs, es, chans) if r[1] is not None}
        elif variant == "lazy":
            seen_rows, _clocks = await repo.applied_window(conn, list(zip(cs, es, strict=True)), chans)
            seen = {(c, e) for c, e, _t in seen_rows}
        elif variant == "gin":
            seen = {(r[0], r[1]) for r in await conn.fetch(RUNS_LOOKUP, cs, es, chans) if r[1] is not None}
        else:
            seen = set()  # answered from memory
        t = tick("lookup", t)
        new = [f for f in facts if (f[0], f[1]) not in seen]
        if variant == "rows":
            await conn.copy_records_to_table("applied_events", records=new, columns=("channel_id", "event_id", "at"))
            t = tick("remember", t)
            await conn.execute(ROWS_FORGET, chans, window)
        elif variant == "lazy":
            await repo.save_applied(conn, new)
            t = tick("remember", t)
            await repo.raise_clocks(conn, new, window)  # the clocks, and a channel's sweep when due
        else:
            runs: dict[str, tuple[list[str], list[int]]] = defaultdict(lambda: ([], []))
            for c, e, at in new:
                runs[c][0].append(e)
                runs[c][1].append(at)
            records = [(c, max(ats), ids, ats) for c, (ids, ats) in runs.items()]
            await conn.copy_records_to_table("applied_runs", records=records, columns=("channel_id", "last_at", "event_ids", "ats"))
            t = tick("remember", t)
            await conn.execute(RUNS_FORGET, chans, window)
        tick("forget", t)
    return len(facts) - len(new)


async def measure(url: str, variant: str, args: argparse.Namespace) -> dict[str, float]:
    conn = await asyncpg.connect(url)
    schema = f"window_cost_{variant}_{os.getpid()}"
    try:
        await conn.execute(f"CREATE SCHEMA {schema}; SET search_path = {schema}")
        await conn.execute({"rows": ROWS_DDL, "lazy": LAZY_DDL, **KEY_DDL}.get(variant, RUNS_DDL))
        if variant == "gin":
            await conn.execute(GIN_DDL)
            await conn.execute("SET enable_seqscan = off")  # the GIN index, not a scan of every run
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        stream, window = Stream(args.channels, args.per_batch), args.held // args.channels
        spent: dict[str, int] = defaultdict(int)
        # Fill the window first (its first 2× is not counted), then the steady state.
        warm = 2 * args.held // args.per_batch
        for _ in range(warm):
            await one_batch(conn, variant, stream.batch(), window, pid, defaultdict(int))
        n0, found, wall = stream.n, 0, time.perf_counter()
        for b in range(args.batches):
            found += await one_batch(conn, variant, stream.batch(), window, pid, spent)
            if args.vacuum and (b + 1) % args.vacuum == 0:  # what autovacuum would do (not counted)
                await conn.execute("VACUUM " + ("applied_runs" if variant in ("runs", "gin") else "applied_events"))
        events = stream.n - n0
        if args.explain and variant in KEY_DDL and variant != "hashpy":
            facts = stream.batch()
            sql = HASHANY_LOOKUP if variant == "hashany" else HASH_LOOKUP if variant.startswith("hash") else TEXT_LOOKUP
            plan = await conn.fetch("EXPLAIN (ANALYZE, COSTS OFF) " + sql, [f[0] for f in facts], [f[1] for f in facts],
                                    sorted({f[0] for f in facts}))
            print("\n".join(r[0] for r in plan))
        out = {k: v / events / 1000 for k, v in spent.items()}
        out["total"] = sum(spent.values()) / events / 1000
        out["wall"] = (time.perf_counter() - wall) / events * 1e6
        out["found"] = found
        table = "applied_runs" if variant in ("runs", "gin") else "applied_events"
        out["mb"] = await conn.fetchval(f"SELECT pg_total_relation_size('{table}')") / 1e6
        if args.load and variant in ("runs", "gin"):
            chans = [f"ch_{i}" for i in range(args.channels)]
            t, c = time.perf_counter(), backend_ns(pid)
            rows = await conn.fetch(RUNS_LOAD, chans)
            pg = backend_ns(pid) - c
            window_ids: dict[str, dict[str, int]] = defaultdict(dict)
            for r in rows:
                held = window_ids[r[0]]
                for e, at in zip(r[1], r[2], strict=True):
                    if held.get(e, at - 1) < at:
                        held[e] = at
            held_ids = sum(len(v) for v in window_ids.values())
            out["load_pg"] = pg / held_ids / 1000
            out["load_wall"] = (time.perf_counter() - t) / held_ids * 1e6
        return out
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or LOCAL_POSTGRES)
    p.add_argument("--variants", default="rows,lazy,runs,gin")
    p.add_argument("--channels", type=int, default=12)
    p.add_argument("--per-batch", type=int, default=600, help="events a batch (over all channels)")
    p.add_argument("--held", type=int, default=60_000, help="eventIds the window holds (all channels)")
    p.add_argument("--batches", type=int, default=300, help="batches measured, after the window is full")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--vacuum", type=int, default=0, metavar="N",
                   help="VACUUM the table every N measured batches (autovacuum is off on the bench's server)")
    p.add_argument("--explain", action="store_true", help="print the lookup's plan after the measured batches")
    p.add_argument("--load", action="store_true", help="also price reading every channel's window back from the runs")
    p.add_argument("--ids", choices=("random", "sequential"), default="random",
                   help="eventIds like uuids (random), or like projection_bench's (e00000001, …)")
    args = p.parse_args()
    global SEQUENTIAL
    SEQUENTIAL = args.ids == "sequential"
    print(f"load average {os.getloadavg()[0]:.1f}; {args.held:,} eventIds held over {args.channels} channels, "
          f"{args.per_batch} a batch; backend CPU µs per event")
    for r in range(args.rounds):
        for variant in args.variants.split(","):
            o = await measure(args.database_url, variant, args)
            load = f", window read back {o['load_pg']:.2f} PG + {o['load_wall']:.2f} wall µs/eventId" if "load_pg" in o else ""
            print(f"round {r + 1} {variant:5}: {o['total']:5.1f} µs (lookup {o['lookup']:.1f}, remember {o['remember']:.1f}, "
                  f"forget {o['forget']:.1f}); wall {o['wall']:.0f} µs; found again {o['found']:.0f}; {o['mb']:.1f} MB{load}",
                  flush=True)


if __name__ == "__main__":
    asyncio.run(main())
