"""What preparing one import row costs the service, in process, without PostgreSQL or
the broker: the rows of import_bench.py's member file (its columns and its values, which
repeat as a real file's do) in `import.rows` chunks of CHUNK_ROWS as `unifier import`
publishes them, through what the pipelined projection does in memory for a batch
(projection/pipeline.py `_prepare`): decode, the facts' keys, the resident users'
lookups (the store answering nothing: every member is new), `run_facts` (the core's
plain path for a new member: `parse_cells`, the member's id, the user, its `created`
message), the new users' COPY rows, the identities' deltas, the resident copy advanced
and the imported users let go. Everything of the batch's Python but the statements'
encoding and the event loop.

Counted, deterministically (`--count`): runs itself under callgrind with `--rows 2N`
and `--rows N` (both after `--warm W` rows), and `--generate-only` twice (making the
records), PYTHONHASHSEED=0, the collector off as the pipelined preparation runs it: the
difference of the first two less that of the last two, over N rows, is the
instructions of one prepared row. Counts repeat exactly whatever the machine's load, so
two checkouts compare by running this in each (`--checkout DIR`).

Timed (default): process CPU µs a prepared row, the best of `--rounds`, and in the
same run, alternated with it, a baseline that only decodes the same chunks
(`orjson.loads`): on a shared machine the ratio moves less than either figure.

    .venv/bin/python bench/import_row_prep.py --count              # instructions a row, this checkout
    .venv/bin/python bench/import_row_prep.py --count --checkout /work/wt/base
    .venv/bin/python bench/import_row_prep.py --rows 20000 --rounds 5

(docs/decisions.md, "Issue 14, session 17: ... (helper "importflow")". A benchmark, not a test.)
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

import services.domain as domain  # noqa: E402
from bench.core_counts import inclusive, total  # noqa: E402
from bench.import_bench import _NAMES, _PLANS  # noqa: E402
from contracts.topics import Topics  # noqa: E402
from services.domain.channel import ChannelSettings  # noqa: E402
from services.domain.imports import Column, ImportBook, ImportChannel, ImportDef  # noqa: E402
from services.importer.run import CHUNK_ROWS  # noqa: E402
from services.platform import gc_tuning  # noqa: E402
from services.projection.batch import BatchResult, _written_by_imports, parse_records, run_facts  # noqa: E402
from services.projection.facts import add_keys  # noqa: E402
from services.projection.records import Record  # noqa: E402
from services.projection.resident import ResidentUsers  # noqa: E402
from services.projection.window import AppliedWindow  # noqa: E402
from services.store import repository as repo  # noqa: E402
from services.store import rowcodec  # noqa: E402

CH, IMP, T0 = "bench_ch", "imp_bench", 1_767_225_600_000
# import_bench.py's file as `unifier import --map` (its MAPS) maps it.
COLUMNS = (
    Column("memberId", "memberId", None), Column("name", "name", None), Column("email", "profile.email", None),
    Column("unsubscribeEmail", "unsubscribeEmail", None), Column("unsubscribeTexting", "unsubscribeTexting", None),
    Column("plan", "profile.plan", "string"), Column("points", "profile.points", "number"),
    Column("birthday", "profile.birthday", "date"), Column("note", "profile.note", "string"),
)


def cells(i: int) -> dict[str, str]:
    """Row i of import_bench.write_members' file, keyed as mapped."""
    return {
        "memberId": f"m{i:09d}", "name": _NAMES[i % 6], "profile.email": f"user{i:09d}@example.jp",
        "unsubscribeEmail": "true" if i % 7 == 0 else "false", "unsubscribeTexting": "true" if i % 11 == 0 else "false",
        "profile.plan": _PLANS[i % 4], "profile.points": str((i * 37) % 10000),
        "profile.birthday": f"{1950 + i % 50}-{1 + i % 12:02d}-{1 + i % 28:02d}",
        "profile.note": f"since 20{10 + i % 15} store {i % 97:02d}",
    }


def records(rows: int, topic: str) -> list[Record]:
    out = []
    for offset, start in enumerate(range(0, rows, CHUNK_ROWS)):
        part = [{"rowNumber": i + 2, "cells": cells(i)} for i in range(start, min(start + CHUNK_ROWS, rows))]
        body = {"channelId": CH, "occurredAt": T0, "eventId": f"{IMP}:rows:{start + 2}", "type": "import.rows",
                "importId": IMP, "rows": part}
        out.append(Record(topic, 0, offset, T0, CH.encode(), orjson.dumps(body)))
    return out


class Prep:
    """The service's in-memory side of an import's batches (pipeline.py `_prepare`)."""

    def __init__(self, topics: Topics) -> None:
        self.topics = topics
        self.resident = ResidentUsers(200_000)
        self.window = AppliedWindow()
        book = ImportBook()
        book.definitions[(CH, IMP)] = ImportDef.build(CH, IMP, "member", "memberId", "keep", "bench", COLUMNS)
        self.settings: dict[str, ChannelSettings] = {CH: ImportChannel(CH, book=book)}
        self.created = 0

    def batch(self, recs: list[Record]) -> None:
        resident = self.resident
        parsed = parse_records(self.topics, recs)
        facts = [p.fact for p in parsed if p.fact is not None]
        directory = resident.begin({})
        ids: set[str] = set()
        keys: set[repo.Key] = set()
        add_keys(facts, ids, keys)
        for _ in range(3):
            if not ids and not keys:
                break
            want_ids, want_keys = resident.missing(ids, keys)
            if want_ids or want_keys:
                resident.loaded(want_ids, want_keys, [])
            reached = resident.reached(ids, keys)
            ids = {u.merged_into for u in reached if u.merged_into}
            keys = {(u.channel_id, "pending", u.id) for u in reached if u.type == "member"}
        result = BatchResult()
        run_facts(directory, parsed, self.settings, self.window, self.topics, result, outbox=True, failed_at=0)
        changed = list(directory.changed.values())
        copied, updated = repo.new_to_copy(changed, resident.revs)
        # As Pipeline._prepare: each set's rows encoded at once as its COPY's payload.
        for users in (copied, updated):
            if users:
                rowcodec.encode(repo.user_records(users, resident.revs), repo.USER_TYPES)
        directory.moved_identities(changed)  # as Pipeline._prepare (it derived them again here)
        imported = _written_by_imports(facts, directory)
        resident.advance()
        resident.written({}, (), forget=imported)
        self.created += len(copied)


def batches(recs: list[Record], rows_a_batch: int) -> list[list[Record]]:
    step = max(1, rows_a_batch // CHUNK_ROWS)
    return [recs[i : i + step] for i in range(0, len(recs), step)]


def prepare_all(prep: Prep, recs: list[Record], rows_a_batch: int) -> None:
    for b in batches(recs, rows_a_batch):
        prep.batch(b)


def decode_all(recs: list[Record]) -> None:
    for r in recs:
        orjson.loads(r.value or b"")


def timed(rows: int, warm: int, rows_a_batch: int, rounds: int) -> None:
    topics = Topics("")
    recs = records(warm + rows, topics.import_rows)
    warm_recs, recs = recs[: warm // CHUNK_ROWS], recs[warm // CHUNK_ROWS :]
    n = sum(len(orjson.loads(r.value or b"")["rows"]) for r in recs)
    best_prep = best_decode = float("inf")
    for _ in range(rounds):
        prep = Prep(topics)  # a fresh import each round; the process's memos stay warm, as a service's
        prepare_all(prep, warm_recs, rows_a_batch)
        with gc_tuning.paused():
            t = time.process_time()
            prepare_all(prep, recs, rows_a_batch)
            best_prep = min(best_prep, time.process_time() - t)
            t = time.process_time()
            decode_all(recs)
            best_decode = min(best_decode, time.process_time() - t)
        assert prep.created == warm + n, (prep.created, warm + n)
    print(f"{n:,} import rows after {warm:,} ({domain.CORE} core, batches of {rows_a_batch:,} rows, load "
          f"{os.getloadavg()[0]:.1f}), CPU µs a row, best of {rounds}: prepared {best_prep / n * 1e6:.2f}, "
          f"decoded only (orjson.loads, baseline) {best_decode / n * 1e6:.2f}, ratio {best_prep / best_decode:.1f}")


# The driver under callgrind: this file's main with the collector off for the whole run.
DRIVER = (
    "import gc, runpy, sys; gc.disable(); from services.platform import gc_tuning; "
    "gc_tuning.tune = lambda: gc.disable(); "
    "sys.argv = ['import_row_prep.py'] + sys.argv[1:]; "
    "runpy.run_path('bench/import_row_prep.py', run_name='__main__')"
)


def _callgrind(checkout: Path, args: list[str], out: Path, env: dict[str, str]) -> int:
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", str(checkout / ".venv/bin/python"),
           "-c", DRIVER, *args]
    subprocess.run(cmd, cwd=checkout, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return total(out)


def count(checkout: Path, n: int, warm: int, rows_a_batch: int, interpreted: bool, top: int, keep: Path | None) -> None:
    env = dict(os.environ, PYTHONHASHSEED="0", UNIFIER_CORE="interpreted" if interpreted else "compiled")
    common = ["--warm", str(warm), "--batch", str(rows_a_batch)]
    with tempfile.TemporaryDirectory() as tmp:
        d = keep or Path(tmp)
        d.mkdir(parents=True, exist_ok=True)
        runs = {}
        for name, extra in (("big", ["--loop-only", "--rows", str(2 * n)]), ("small", ["--loop-only", "--rows", str(n)]),
                            ("gen_big", ["--generate-only", "--rows", str(2 * n)]),
                            ("gen_small", ["--generate-only", "--rows", str(n)])):
            runs[name] = _callgrind(checkout, [*extra, *common], d / f"{name}.out", env)
        per_row = ((runs["big"] - runs["small"]) - (runs["gen_big"] - runs["gen_small"])) / n
        print(f"{checkout} ({env['UNIFIER_CORE']}): {per_row:,.0f} instructions a prepared import row "
              f"({n} rows after {warm}, batches of {rows_a_batch}; generation "
              f"{(runs['gen_big'] - runs['gen_small']) / n:,.0f} a row subtracted)")
        a, b = inclusive(d / "big.out"), inclusive(d / "small.out")
        g_a, g_b = inclusive(d / "gen_big.out"), inclusive(d / "gen_small.out")
        diff = {k: (a.get(k, 0) - b.get(k, 0) - (g_a.get(k, 0) - g_b.get(k, 0))) / n for k in a}
        print(f"top {top} by inclusive instructions a row:")
        for name, v in sorted(diff.items(), key=lambda kv: -kv[1])[:top]:
            print(f"  {v:>10,.0f}  {name}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, help="rows measured (default 20,000); --count: N, the rows between its two runs (2,000)")
    p.add_argument("--warm", type=int, default=10_000, help="rows prepared first, not measured (a multiple of CHUNK_ROWS)")
    p.add_argument("--batch", type=int, default=2_000, help="rows a batch (the service's steady state: ~2,000)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--count", action="store_true", help="instructions a row by callgrind (see the docstring)")
    p.add_argument("--checkout", type=Path, default=ROOT, help="--count: the checkout to count")
    p.add_argument("--interpreted", action="store_true", help="--count: UNIFIER_CORE=interpreted")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--keep", type=Path, help="--count: keep the callgrind files in this directory")
    p.add_argument("--loop-only", action="store_true", help="(under --count) only prepare the rows")
    p.add_argument("--generate-only", action="store_true", help="(under --count) only make the records")
    args = p.parse_args()
    if args.count:
        count(args.checkout, args.rows or 2_000, args.warm, args.batch, args.interpreted, args.top, args.keep)
        return
    gc_tuning.tune()
    if args.loop_only or args.generate_only:
        topics = Topics("")
        recs = records(args.warm + (args.rows or 20_000), topics.import_rows)
        if args.generate_only:
            return
        prep = Prep(topics)
        gc.disable()
        prepare_all(prep, recs, args.batch)
        return
    timed(args.rows or 20_000, args.warm, args.batch, args.rounds)


if __name__ == "__main__":
    main()
