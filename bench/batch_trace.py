"""Run `unifier …` recording every projection batch and every fetch, for counting what
a paced import's batches are made of (issue 14, session 21: a paced import's batches).

    BENCH_TRACE=/tmp/t.jsonl BENCH_SERVICE_RUNNER=bench/batch_trace.py \\
        .venv/bin/python bench/import_bench.py --rows 20000 --leads 0,0.4
    .venv/bin/python bench/batch_trace.py --summary /tmp/t.jsonl

Wraps, in this process only, `Projection.batch_applied` (every committed batch, pipelined
or serial: its records by topic and partition, the import rows its chunks hold, its
elapsed time) and `CoPartitionMerge.add` (what each fetch brought). One JSON line each;
nothing of this is in the service itself. BENCH_GROUPING=off: the loop as it was before
session 21 (every release a batch at once; gathering.py's rule off), for before/after pairs
on one build. `--summary` counts, per import channel (the
bench names them `bench_unpaced`, `bench_paced_0_4`): the batches and transactions its
rows went in, their sizes in rows, the tiny batches (of other channels' records only)
committed during the import, and how the importer's records (its slices) were cut.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

_lines: list[bytes] = []
_out: Any = None


def _note(**fields: Any) -> None:
    _lines.append(orjson.dumps(fields))
    if len(_lines) >= 500:
        _flush()


def _flush() -> None:
    if _lines and _out is not None:
        _out.write(b"\n".join(_lines) + b"\n")
        _out.flush()
        _lines.clear()


def _rows(value: bytes | None) -> int:
    return (value or b"").count(b'"rowNumber"')


def _parts(records: Any) -> list[list[Any]]:
    """[topic suffix, partition, records, import rows, channel of the first record] per partition."""
    parts: dict[tuple[str, int], list[Any]] = {}
    for r in records:
        key = (r.topic.rsplit(".", 1)[-1], r.partition)
        part = parts.get(key)
        if part is None:
            part = parts[key] = [key[0], key[1], 0, 0, (r.key or b"").decode(errors="replace")]
        part[2] += 1
        part[3] += _rows(r.value)
    return list(parts.values())


def install(trace: Path) -> None:
    global _out
    _out = open(trace, "ab")  # noqa: SIM115  (closed at exit)
    atexit.register(_flush)

    from services.projection.consumer import Projection
    from services.projection.merge import CoPartitionMerge

    applied, add = Projection.batch_applied, CoPartitionMerge.add

    def traced_applied(self: Projection, records: Any, result: Any, elapsed: float) -> None:
        pipeline = self.pipeline
        _note(k="b", t=time.time(), n=len(records), el=round(elapsed * 1000, 2), p=_parts(records),
              pl=pipeline.pipelined if pipeline is not None else None)
        return applied(self, records, result, elapsed)

    def traced_add(self: CoPartitionMerge, partition: Any, records: Any) -> None:
        records = list(records)
        if records:
            _note(k="f", t=time.time(), tp=[partition[0].rsplit(".", 1)[-1], partition[1]], n=len(records),
                  rows=sum(_rows(r.value) for r in records))
        return add(self, partition, records)

    Projection.batch_applied = traced_applied  # type: ignore[method-assign]
    CoPartitionMerge.add = traced_add  # type: ignore[method-assign]
    if os.environ.get("BENCH_GROUPING") == "off":
        grouping_off()


def grouping_off() -> None:
    """The loop as before session 21: whatever the merge released is a batch at once
    (gathered records always due, so nothing is ever held for the write in flight)."""
    from services.projection.gathering import Gathering

    Gathering.due = lambda self, writing: bool(self.records)  # type: ignore[method-assign]


def _pct(values: list[int], p: float) -> int:
    if not values:
        return 0
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def summary(trace: Path) -> dict[str, Any]:
    lines = [orjson.loads(line) for line in trace.read_bytes().splitlines() if line.strip()]
    batches = [x for x in lines if x["k"] == "b"]
    fetches = [x for x in lines if x["k"] == "f"]
    out: dict[str, Any] = {}
    channels = sorted({p[4] for b in batches for p in b["p"] if p[0] == "import-rows" and p[4].startswith("bench_")})
    for channel in channels:
        mine = [b for b in batches if any(p[0] == "import-rows" and p[4] == channel for p in b["p"])]
        first, last = mine[0]["t"], mine[-1]["t"]
        during = [b for b in batches if first <= b["t"] <= last]
        rows = [sum(p[3] for p in b["p"] if p[0] == "import-rows") for b in mine]
        others = [b for b in during if not any(p[0] == "import-rows" for p in b["p"])]
        other_records = sum(b["n"] for b in during) - sum(
            sum(p[2] for p in b["p"] if p[0] == "import-rows") for b in during)
        # The importer's records: each chunk of rows, as it arrived (fetches of the import's partition).
        part = next(p[1] for b in mine for p in b["p"] if p[0] == "import-rows")
        chunk_fetches = [f for f in fetches if f["tp"] == ["import-rows", part] and first - 1 <= f["t"] <= last]
        total_rows = sum(rows)
        span = last - first
        out[channel] = {
            "import_rows": total_rows,
            "seconds": round(span, 2),
            "transactions_during": len(during),
            "batches_with_rows": len(mine),
            "batches_without_rows_during": len(others),
            "other_channel_records_during": other_records,
            "transactions_per_1000_rows": round(len(during) / max(total_rows, 1) * 1000, 2),
            "batches_with_rows_per_1000_rows": round(len(mine) / max(total_rows, 1) * 1000, 2),
            "rows_per_batch": {"min": min(rows), "p10": _pct(rows, 10), "p50": _pct(rows, 50), "p90": _pct(rows, 90),
                               "max": max(rows), "mean": round(total_rows / len(mine))},
            "rows_per_batch_histogram": _histogram(rows),
            "records_per_other_batch": {str(k): v for k, v in sorted(Counter(b["n"] for b in others).items())},
            "batch_ms_with_rows_p50": _pct([round(b["el"]) for b in mine], 50),
            "fetches_of_the_import_partition": len(chunk_fetches),
            "rows_per_fetch": {"p10": _pct([f["rows"] for f in chunk_fetches], 10),
                               "p50": _pct([f["rows"] for f in chunk_fetches], 50),
                               "p90": _pct([f["rows"] for f in chunk_fetches], 90)},
            "records_per_fetch_p50": _pct([f["n"] for f in chunk_fetches], 50),
        }
    return out


def _histogram(rows: list[int]) -> dict[str, int]:
    edges = (0, 10, 100, 300, 500, 1000, 2000, 5000, 10**9)
    h: dict[str, int] = {}
    for lo, hi in zip(edges, edges[1:], strict=False):
        n = sum(1 for r in rows if lo < r <= hi) if lo else sum(1 for r in rows if r <= hi)
        if n:
            h[f"{lo}-{hi if hi < 10**9 else ''}"] = n
    return h


if __name__ == "__main__":
    if sys.argv[1:2] == ["--summary"]:
        print(orjson.dumps(summary(Path(sys.argv[2])), option=orjson.OPT_INDENT_2).decode())
        raise SystemExit(0)
    install(Path(os.environ["BENCH_TRACE"]))
    from services.runtime.cli import main

    raise SystemExit(main(sys.argv[1:]))
