"""What the importer process (`unifier import`, services/importer/) spends per row, without
the broker or PostgreSQL: import_bench.py's member file (its columns, its `--map`s) through
what `unifier import` does with it in this process — `csvfile.inspect` (size, digest,
UTF-8, strict CSV syntax), `csvfile.header`, the mapping, and `Import._publish_rows`
(reading the records, mapping and checking the cells, each row's JSON, the `import.rows`
chunks, and the producer's append to aiokafka's record batches, each batch built as the
sender builds it; `send_batch` is not called). Pacing is off (`import_lead_s` 0), as in
import_bench.py's `--leads 0`.

Counted, deterministically (`--count`): runs itself under callgrind with `--rows 2N` and
`--rows N` and `--generate-only` twice (writing the file), PYTHONHASHSEED=0: the
difference of the first two less that of the last two, over N rows, is the instructions
of one row. In the same run, the same for a baseline that only reads the file with
`csv.reader` (a floor for any importer in Python that reads CSV). Counts repeat exactly
whatever the machine's load, so two checkouts compare by running this in each
(`--checkout DIR`).

Timed (default): process CPU µs a row, the best of `--rounds`, each part apart (inspect,
publish) and, alternated with them, the baseline.

    .venv/bin/python bench/importer_cpu.py --count                 # instructions a row, this checkout
    .venv/bin/python bench/importer_cpu.py --count --checkout /work/wt/base
    .venv/bin/python bench/importer_cpu.py --rows 100000 --rounds 5

(docs/decisions.md, "Issue 14, session 20: the importer's CPU per row (helper "importer")".
A benchmark, not a test.)
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gc
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.core_counts import inclusive, total  # noqa: E402
from bench.import_bench import MAPS, write_members  # noqa: E402
from services.importer import csvfile  # noqa: E402
from services.importer.mapping import plan  # noqa: E402
from services.importer.producer import ImportProducer  # noqa: E402
from services.importer.run import Import, ImportRequest  # noqa: E402

CH, IMP = "bench_ch", "imp_bench"


class BuiltProducer(ImportProducer):
    """The real producer's `add` (aiokafka's record batch append); `ship` builds the batch
    as aiokafka's sender does (header, CRC) instead of sending it."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1:9", "bench.import-rows", CH)  # never started: no connection
        self._batch = self.producer.create_batch()
        self.built = 0  # bytes of the built batches

    async def ship(self) -> None:
        batch, self._batch = self._batch, self.producer.create_batch()
        if batch.record_count():
            self.built += len(batch._build())

    async def flush(self) -> None:
        await self.ship()


async def import_file(path: Path) -> tuple[int, int]:
    """(rows published, bytes built): the importer's in-process work on `path`."""
    csvfile.inspect(path)
    headers = csvfile.header(path)
    mapping = plan(headers, MAPS, "member", None, {})
    settings: Any = SimpleNamespace(import_lead_s=0.0, import_stall_after_rows=0)
    req = ImportRequest(path, CH, "member", maps=MAPS, tag="bench", actor="bench")
    run = Import(settings, req, None, "127.0.0.1:9", mapping, "bench", len(headers), None)  # type: ignore[arg-type]
    run.import_id = IMP
    producer = BuiltProducer()
    rows = await run._publish_rows(producer)
    await producer.stop()
    return rows, producer.built


def baseline(path: Path) -> int:
    """Only reading the file's records with csv.reader."""
    with path.open(encoding="utf-8", newline="") as f:
        return sum(1 for _ in csv.reader(f)) - 1


def timed(path: Path, rows: int, rounds: int) -> None:
    best = {"inspect": float("inf"), "all": float("inf"), "baseline": float("inf")}
    for _ in range(rounds):
        gc.collect()
        t = time.process_time()
        csvfile.inspect(path)
        best["inspect"] = min(best["inspect"], time.process_time() - t)
        t = time.process_time()
        asyncio.run(import_file(path))
        best["all"] = min(best["all"], time.process_time() - t)
        t = time.process_time()
        baseline(path)
        best["baseline"] = min(best["baseline"], time.process_time() - t)
    us = {k: v / rows * 1e6 for k, v in best.items()}
    print(f"{rows:,} rows of import_bench's member file (load {os.getloadavg()[0]:.1f}), CPU µs a row, best of {rounds}: "
          f"importer {us['all']:.2f} (inspect {us['inspect']:.2f}, the rest {us['all'] - us['inspect']:.2f}); "
          f"baseline (csv.reader only) {us['baseline']:.2f}")


def _callgrind(checkout: Path, args: list[str], out: Path, env: dict[str, str]) -> int:
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", str(checkout / ".venv/bin/python"),
           "bench/importer_cpu.py", *args]
    subprocess.run(cmd, cwd=checkout, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return total(out)


def count(checkout: Path, n: int, interpreted: bool, top: int, keep: Path | None) -> None:
    env = dict(os.environ, PYTHONHASHSEED="0", UNIFIER_CORE="interpreted" if interpreted else "compiled")
    with tempfile.TemporaryDirectory() as tmp:
        d = keep or Path(tmp)
        d.mkdir(parents=True, exist_ok=True)
        runs = {}
        for name, extra in (("big", ["--import-only", "--rows", str(2 * n)]), ("small", ["--import-only", "--rows", str(n)]),
                            ("base_big", ["--baseline-only", "--rows", str(2 * n)]),
                            ("base_small", ["--baseline-only", "--rows", str(n)]),
                            ("gen_big", ["--generate-only", "--rows", str(2 * n)]),
                            ("gen_small", ["--generate-only", "--rows", str(n)])):
            runs[name] = _callgrind(checkout, [*extra, "--dir", str(d / name)], d / f"{name}.out", env)
        gen = (runs["gen_big"] - runs["gen_small"]) / n
        per_row = (runs["big"] - runs["small"]) / n - gen
        base = (runs["base_big"] - runs["base_small"]) / n - gen
        print(f"{checkout} ({env['UNIFIER_CORE']}): {per_row:,.0f} instructions a row in the importer "
              f"(inspect, header, mapping, publish; {n} rows), baseline csv.reader only {base:,.0f} "
              f"(writing the file, {gen:,.0f} a row, subtracted)")
        a, b = inclusive(d / "big.out"), inclusive(d / "small.out")
        g_a, g_b = inclusive(d / "gen_big.out"), inclusive(d / "gen_small.out")
        diff = {k: (a.get(k, 0) - b.get(k, 0) - (g_a.get(k, 0) - g_b.get(k, 0))) / n for k in a}
        print(f"top {top} by inclusive instructions a row:")
        for name, v in sorted(diff.items(), key=lambda kv: -kv[1])[:top]:
            print(f"  {v:>10,.0f}  {name}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, help="rows of the file (default 50,000); --count: N, the rows between its two runs (5,000)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--count", action="store_true", help="instructions a row by callgrind (see the docstring)")
    p.add_argument("--checkout", type=Path, default=ROOT, help="--count: the checkout to count")
    p.add_argument("--interpreted", action="store_true", help="--count: UNIFIER_CORE=interpreted")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--keep", type=Path, help="--count: keep the callgrind files in this directory")
    p.add_argument("--dir", type=Path, help="(under --count) where the file is written")
    p.add_argument("--import-only", action="store_true", help="(under --count) write the file and import it")
    p.add_argument("--baseline-only", action="store_true", help="(under --count) write the file and read it with csv.reader")
    p.add_argument("--generate-only", action="store_true", help="(under --count) only write the file")
    args = p.parse_args()
    if args.count:
        count(args.checkout, args.rows or 5_000, args.interpreted, args.top, args.keep)
        return
    with tempfile.TemporaryDirectory() as tmp:
        d = args.dir or Path(tmp)
        d.mkdir(parents=True, exist_ok=True)
        path = d / "members.csv"
        rows = args.rows or 50_000
        write_members(path, rows)
        if args.generate_only:
            return
        if args.import_only:
            assert asyncio.run(import_file(path))[0] == rows
            return
        if args.baseline_only:
            assert baseline(path) == rows
            return
        timed(path, rows, args.rounds)


if __name__ == "__main__":
    main()
