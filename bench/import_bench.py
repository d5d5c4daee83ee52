"""CSV import benchmark: a 1,000,000-row, ~100 MB member file through `unifier import`
and a running `unifier run`, against PostgreSQL's own COPY of the same file.

In one run, on the embedded tansu broker and the PostgreSQL of DATABASE_URL (default:
the local server on 127.0.0.1:5432):

1. baseline: `COPY` of the file into a table of text columns (psql-free: asyncpg's
   `copy_to_table`), rows/s — what the machine's PostgreSQL does with no logic at all;
2. the service (`python -m services.runtime.cli run`) in a child process, warmed up by
   a 10-row import (consumer-group join, topic metadata);
3. the import (`python -m services.runtime.cli import FILE --channel … --mode member`)
   in another child process, timed from start to its JSON line (read, publish, apply
   by the service, report), with the peak RSS of both processes sampled every 0.2 s;
4. the importer alone: the same file with the service stopped, timed until it exits 3
   (every row on the broker, none applied) — what the importer side costs.

During the timed import, the CPU seconds of each party (service, importer, broker,
PostgreSQL) are measured too and printed per row, beside what the target leaves per row
on this machine's cores: where the time goes, and how far the whole is from fitting.

Peak RSS is also measured for an import of a tenth of the file, to show the importer's
memory does not grow with the file (it streams). Prints a table and writes
bench/results/import.json. A benchmark, not a test: nothing here asserts.

    .venv/bin/python bench/import_bench.py                 # the issue's figure (~2-3 min)
    .venv/bin/python bench/import_bench.py --rows 200000   # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import psutil  # noqa: E402

from services.platform.embedded import EmbeddedBroker  # noqa: E402

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
RESULTS = ROOT / "bench" / "results" / "import.json"
TARGET_ROWS_S = 20_000
HEADER = "memberId,name,email,unsubscribeEmail,unsubscribeTexting,plan,points,birthday,note\n"
MAPS = ("plan=profile.plan:string", "points=profile.points:number", "birthday=profile.birthday:date", "note=profile.note:string")
_NAMES = ("山田 太郎", "佐藤 花子", "鈴木 一郎", "高橋 美咲", "Tanaka Ken", "Ito Yui")
_PLANS = ("free", "basic", "gold", "platinum")


def write_members(path: Path, rows: int) -> int:
    """A deterministic member file, ~98 bytes a row; streamed, so any size fits."""
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write(HEADER)
        chunk: list[str] = []
        for i in range(rows):
            chunk.append(
                f"m{i:09d},{_NAMES[i % 6]},user{i:09d}@example.jp,{'true' if i % 7 == 0 else 'false'},"
                f"{'true' if i % 11 == 0 else 'false'},{_PLANS[i % 4]},{(i * 37) % 10000},"
                f"{1950 + i % 50}-{1 + i % 12:02d}-{1 + i % 28:02d},since 20{10 + i % 15} store {i % 97:02d}\n"
            )
            if len(chunk) == 10_000:
                f.write("".join(chunk))
                chunk.clear()
        f.write("".join(chunk))
    return path.stat().st_size


async def copy_baseline(database_url: str, schema: str, path: Path) -> dict[str, float]:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(
            f"CREATE TABLE {schema}.copy_baseline (member_id text, name text, email text, unsub_email text,"
            " unsub_texting text, plan text, points text, birthday text, note text)"
        )
        started = time.perf_counter()
        with path.open("rb") as f:
            status = await conn.copy_to_table("copy_baseline", schema_name=schema, source=f, format="csv", header=True)
        elapsed = time.perf_counter() - started
        rows = int(status.split()[-1])
        await conn.execute(f"DROP TABLE {schema}.copy_baseline")
        return {"rows": rows, "seconds": elapsed, "rows_per_s": rows / elapsed}
    finally:
        await conn.close()


class Peak:
    """Peak RSS of processes, sampled in the background."""

    def __init__(self) -> None:
        self.peaks: dict[str, int] = {}
        self.procs: dict[str, psutil.Process] = {}

    def watch(self, name: str, pid: int) -> None:
        self.procs[name] = psutil.Process(pid)
        self.peaks[name] = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for name, proc in list(self.procs.items()):
                with contextlib.suppress(psutil.Error):
                    self.peaks[name] = max(self.peaks[name], proc.memory_info().rss)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)


class Cpu:
    """CPU seconds (user + system) that each party spends during one import: the service
    and the broker by process, PostgreSQL summed over its processes (the local server
    is this bench's alone), the importer from this process's waited-for children. Their
    sum against the machine's cores is the budget any end-to-end rate must fit in."""

    def __init__(self, service: int, broker: int | None) -> None:
        self.procs = {"service": service, **({"broker": broker} if broker else {})}

    @staticmethod
    def _seconds(proc: psutil.Process) -> float:
        t = proc.cpu_times()
        return t.user + t.system

    def _postgres(self) -> dict[int, float]:
        found = {}
        for proc in psutil.process_iter(["name"]):
            if proc.info["name"] in ("postgres", "postmaster"):
                with contextlib.suppress(psutil.Error):
                    found[proc.pid] = self._seconds(proc)
        return found

    def _children(self) -> float:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    def start(self) -> None:
        self._before = {name: self._seconds(psutil.Process(pid)) for name, pid in self.procs.items()}
        self._pg = self._postgres()
        self._kids = self._children()

    def stop(self) -> dict[str, float]:
        spent = {name: self._seconds(psutil.Process(pid)) - self._before[name] for name, pid in self.procs.items()}
        spent["postgres"] = sum(t - self._pg.get(pid, 0.0) for pid, t in self._postgres().items())
        spent["importer"] = self._children() - self._kids
        return spent


async def run_import(
    env: dict[str, str], path: Path, channel: str, peak: Peak, name: str, wait_s: str = "1800", ok: int = 0,
) -> dict[str, Any]:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.runtime.cli", "import", str(path), "--channel", channel,
        "--mode", "member", *(a for m in MAPS for a in ("--map", m)), "--timeout", wait_s, "--tag", "bench",
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    peak.watch(name, proc.pid)
    out, err = await proc.communicate()
    elapsed = time.perf_counter() - started
    if proc.returncode != ok:
        raise RuntimeError(f"import exited {proc.returncode}: {err.decode()[-2000:]}")
    progress = [line for line in err.decode().splitlines() if line.startswith("unifier import")]
    return {"seconds": elapsed, "result": json.loads(out), "progress": progress[-3:]}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tag = secrets.token_hex(3)
    schema, prefix = f"bench_import_{tag}", f"bimp{tag}."
    with tempfile.TemporaryDirectory(prefix="import-bench-") as tmp:
        work = Path(tmp)
        big, small, warm = work / "members.csv", work / "members-tenth.csv", work / "warmup.csv"
        size = write_members(big, args.rows)
        write_members(small, args.rows // 10)
        write_members(warm, 10)
        print(f"file: {args.rows:,} rows, {size / 1e6:.1f} MB", file=sys.stderr)
        baseline = await copy_baseline(args.database_url, schema, big)
        print(f"COPY baseline: {baseline['rows_per_s']:,.0f} rows/s", file=sys.stderr)

        async with EmbeddedBroker(work / "broker") as broker:
            env = {
                **os.environ, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "DATABASE_URL": args.database_url,
                "UNIFIER_TOPIC_PREFIX": prefix, "UNIFIER_DB_SCHEMA": schema, "UNIFIER_CONSUMER_GROUP": f"g{tag}",
                "UNIFIER_METRICS_PORT": "0", "UNIFIER_DATA_DIR": str(work / "data"), "UNIFIER_HTTP_ADDR": "127.0.0.1:0",
            }
            service = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "services.runtime.cli", "run", env=env, cwd=ROOT,
                stdout=subprocess.DEVNULL, stderr=open(work / "service.log", "wb"),  # noqa: ASYNC230, SIM115
            )
            peak, stop = Peak(), asyncio.Event()
            peak.watch("service", service.pid)
            sampler = asyncio.create_task(peak.run(stop))
            try:
                await run_import(env, warm, "bench_warm", peak, "warmup")
                tenth = await run_import(env, small, "bench_tenth", peak, "importer_tenth")
                cpu = Cpu(service.pid, broker.pid)
                cpu.start()
                full = await run_import(env, big, "bench_full", peak, "importer")
                spent = cpu.stop()
                service.terminate()
                await service.wait()
                # The importer alone (check, read, publish): with no service to apply the
                # rows it exits 3 as soon as they are all on the broker.
                alone = await run_import(env, big, "bench_publish_only", peak, "importer_alone", wait_s="0.001", ok=3)
            finally:
                stop.set()
                await sampler
                if service.returncode is None:
                    service.terminate()
                    await service.wait()
                conn = await asyncpg.connect(args.database_url)
                await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
                await conn.close()
    rows = args.rows
    return {
        "rows": rows,
        "file_mb": round(size / 1e6, 1),
        "import_seconds": round(full["seconds"], 2),
        "import_rows_per_s": round(rows / full["seconds"]),
        "target_rows_per_s": TARGET_ROWS_S,
        "copy_rows_per_s": round(baseline["rows_per_s"]),
        "copy_seconds": round(baseline["seconds"], 2),
        "import_vs_copy": round(rows / full["seconds"] / baseline["rows_per_s"], 4),
        "tenth_rows_per_s": round(rows // 10 / tenth["seconds"]),
        "importer_alone_rows_per_s": round(rows / alone["seconds"]),
        # µs of CPU per row by party, and what the target allows on this machine's cores
        "cpu_us_per_row": {k: round(v / rows * 1e6) for k, v in spent.items()},
        "cpu_us_per_row_total": round(sum(spent.values()) / rows * 1e6),
        "cpu_us_per_row_at_target": round((os.cpu_count() or 1) / TARGET_ROWS_S * 1e6),
        "peak_rss_mb": {k: round(v / 2**20, 1) for k, v in peak.peaks.items()},
        "result": full["result"],
        "progress_tail": full["progress"],
    }


def report(r: dict[str, Any]) -> str:
    rss = r["peak_rss_mb"]
    return "\n".join([
        f"import bench: {r['rows']:,} rows, {r['file_mb']} MB member file",
        f"  unifier import (publish + apply + report): {r['import_rows_per_s']:>10,} rows/s  ({r['import_seconds']} s)"
        f"  target {r['target_rows_per_s']:,} {'OK' if r['import_rows_per_s'] >= r['target_rows_per_s'] else 'MISSED'}",
        f"  PostgreSQL COPY of the same file (baseline): {r['copy_rows_per_s']:>10,} rows/s  ({r['copy_seconds']} s)",
        f"  import / COPY: {r['import_vs_copy']:.1%}; a tenth of the file: {r['tenth_rows_per_s']:,} rows/s",
        f"  the importer alone (check, read, publish; no service): {r['importer_alone_rows_per_s']:,} rows/s",
        f"  CPU per row: {r['cpu_us_per_row_total']} µs in all ("
        + ", ".join(f"{k} {v}" for k, v in sorted(r["cpu_us_per_row"].items(), key=lambda kv: -kv[1]))
        + f"); the target allows {r['cpu_us_per_row_at_target']} µs on these {os.cpu_count()} cores",
        f"  peak RSS: importer {rss.get('importer')} MB (a tenth of the file: {rss.get('importer_tenth')} MB),"
        f" service {rss.get('service')} MB",
        f"  result: {json.dumps(r['result'])}",
    ])


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or LOCAL_POSTGRES)
    args = p.parse_args()
    result = asyncio.run(main(args))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(report(result))


if __name__ == "__main__":
    cli()
