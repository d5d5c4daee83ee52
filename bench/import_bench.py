"""CSV import benchmark: a 1,000,000-row, ~100 MB member file through `unifier import`
and a running `unifier run`, against PostgreSQL's own COPY of the same file.

In one run, on the embedded tansu broker and the PostgreSQL of DATABASE_URL (default:
the local server on 127.0.0.1:5432):

1. baseline: `COPY` of the file into a table of text columns (psql-free: asyncpg's
   `copy_to_table`), rows/s — what the machine's PostgreSQL does with no logic at all;
2. the service (`python -m services.runtime.cli run`) in a child process, warmed up by
   a 10-row import (consumer-group join, topic metadata);
3. one import per `--leads` value (`UNIFIER_IMPORT_LEAD_S`: 0 publishes the whole file
   at once, the baseline; above 0 the importer paces itself, services/importer/window.py),
   each in another child process, timed from start to its JSON line (read, publish,
   apply by the service, report), with the peak RSS of both processes sampled every
   0.2 s. Meanwhile a visitor's boot goes out every 50 ms, alternately to a channel on
   the import's partition and to one on another partition, timed to its `user-changed`:
   what other shops see during an import (issue 14 item 5: p99 < 1 s);
4. the importer alone: the same file with the service stopped, timed until it exits 3
   (every row on the broker, none applied) — what the importer side costs.

During each timed import, the CPU seconds of each party (service, importer, broker,
PostgreSQL's backends serving the service, and the whole PostgreSQL server, which on a
shared machine includes other users' work) are measured too and printed per row, with
the background (the same parties' CPU per second over 4 s with the probe running and no
import) taken out, beside what the target leaves per row on this machine's cores.
`--profile` also runs py-spy on the service during each import
(bench/results/import-<channel>.pyspy.txt).

Peak RSS is also measured for an import of a tenth of the file, to show the importer's
memory does not grow with the file (it streams). Prints a table and writes
bench/results/import.json. A benchmark, not a test: nothing here asserts.

    .venv/bin/python bench/import_bench.py                 # the issue's figure (1M rows: 15-30 min an import here)
    .venv/bin/python bench/import_bench.py --rows 20000 --leads 0,0.4   # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import orjson  # noqa: E402
import psutil  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.partitioner import DefaultPartitioner  # noqa: E402

from contracts.topics import Topics  # noqa: E402
from services.platform.embedded import EmbeddedBroker  # noqa: E402
from services.platform.topics import ensure_topics  # noqa: E402

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
RESULTS = ROOT / "bench" / "results" / "import.json"
TARGET_ROWS_S = 15_000
TARGET_OTHER_P99_MS = 1000
PARTITIONS = 12  # the service's default (UNIFIER_PARTITIONS)
PROBE_EVERY_S = 0.05
IDLE_S = 4.0  # the background's CPU is measured this long before each timed import
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
    and the broker by process, PostgreSQL as the backends serving the service's
    connections (`postgres`) and as every process of the server (`postgres_server`: on
    a machine shared with other work that counts theirs too), the importer from this
    process's waited-for children. Their sum against the machine's cores is the budget
    any end-to-end rate must fit in."""

    def __init__(self, service: int, broker: int | None, relay: int | None = None) -> None:
        self.procs = {"service": service, **({"broker": broker} if broker else {}), **({"relay": relay} if relay else {})}

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
        self._pg_after = self._postgres()
        spent["postgres_server"] = sum(t - self._pg.get(pid, 0.0) for pid, t in self._pg_after.items())
        spent["importer"] = self._children() - self._kids
        return spent

    async def service_backends(self, database_url: str) -> float:
        """CPU seconds of the backends serving the service's connections (found by the
        service's local ports): PostgreSQL's part of the work, without other users'."""
        if "127.0.0.1:5432" not in database_url:  # the embedded server (a Unix socket): ours alone
            conn = await asyncpg.connect(database_url)
            try:
                postmaster = psutil.Process(await conn.fetchval("SELECT pg_backend_pid()")).ppid()
            finally:
                await conn.close()
            ours = {pid for pid in self._pg_after if pid == postmaster or _parent(pid) == postmaster}
            return sum(self._pg_after[pid] - self._pg.get(pid, 0.0) for pid in ours)
        ports = []
        for party in ("service", "relay"):  # the relay's process (UNIFIER_RELAY_PROCESS) is the service's too
            if party in self.procs:
                with contextlib.suppress(psutil.Error):
                    ports += [c.laddr.port for c in psutil.Process(self.procs[party]).net_connections(kind="tcp")
                              if c.raddr and c.raddr.port == 5432]
        conn = await asyncpg.connect(database_url)
        try:
            pids = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE client_port = ANY($1::int[])", ports)
        finally:
            await conn.close()
        return sum(self._pg_after.get(r["pid"], 0.0) - self._pg.get(r["pid"], 0.0) for r in pids)


def _parent(pid: int) -> int | None:
    try:
        return psutil.Process(pid).ppid()
    except psutil.Error:
        return None


def partition_of(channel: str, partitions: int = PARTITIONS) -> int:
    every = list(range(partitions))
    return DefaultPartitioner()(channel.encode(), every, every)


def neighbour(channel: str, same: bool) -> str:
    """A channel whose facts land on the import's partition (same=True) or on another."""
    target = partition_of(channel)
    for i in range(10_000):
        name = f"bench_other_{i}"
        if (partition_of(name) == target) == same:
            return name
    raise RuntimeError("no such channel")


class Probe:
    """Other channels' facts during the import (issue 14 item 5): a boot of a new visitor
    every PROBE_EVERY_S, alternating between a channel on the import's partition and one
    on another partition, each timed from publish to its `user-changed`. What a customer
    of another shop sees while staff import a file."""

    def __init__(self, bootstrap: str, prefix: str, import_channel: str) -> None:
        self.bootstrap, self.topics, self.tag = bootstrap, Topics(prefix), import_channel
        self.channels = {"same_partition": neighbour(import_channel, True), "other_partition": neighbour(import_channel, False)}
        self.sent: dict[str, tuple[str, float]] = {}
        self.received: dict[str, float] = {}
        self.stop = asyncio.Event()

    async def run(self) -> None:
        await ensure_topics(self.bootstrap, self.topics.prefix, PARTITIONS)
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, enable_idempotence=False, acks=1, linger_ms=0)
        # 50 ms: polling every 5 ms made the broker spend ~12 % of a core on this reader alone
        reader = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=50)
        await producer.start()
        await reader.start()
        try:
            tps = [TopicPartition(self.topics.user_changed, p) for p in range(PARTITIONS)]
            reader.assign(tps)
            await reader.seek_to_end(*tps)
            reading = asyncio.create_task(self._read(reader))
            i = 0
            while not self.stop.is_set():
                kind = ("same_partition", "other_partition")[i % 2]
                channel, eid = self.channels[kind], f"{self.tag}-probe{i:07d}"
                value = orjson.dumps({"type": "boot", "eventId": eid, "channelId": channel, "occurredAt": int(time.time() * 1000),
                                      "veilId": f"{self.tag}-veil-{i}", "platform": "web",
                                      "memberId": f"{self.tag}-m{i}"})  # a member: visible, so published
                self.sent[eid] = (kind, time.perf_counter())
                await producer.send_and_wait(self.topics.sdk_events, value=value, key=channel.encode(), partition=partition_of(channel))
                i += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), PROBE_EVERY_S)
            deadline = time.monotonic() + 30  # the last probes: let them arrive
            while time.monotonic() < deadline:  # polling what the reader task fills
                if len(self.received) >= len(self.sent):
                    break
                await asyncio.sleep(0.1)
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
        finally:
            await producer.stop()
            await reader.stop()

    async def _read(self, reader: AIOKafkaConsumer) -> None:
        while True:
            got = await reader.getmany(timeout_ms=50)
            now = time.perf_counter()
            for msgs in got.values():
                for m in msgs:
                    if m.value is None:
                        continue
                    cause = orjson.loads(m.value).get("causationId")
                    if cause in self.sent and cause not in self.received:
                        self.received[cause] = now

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind in self.channels:
            lat = sorted((self.received[e] - t) * 1000 for e, (k, t) in self.sent.items() if k == kind and e in self.received)
            sent = sum(1 for k, _t in self.sent.values() if k == kind)
            out[kind] = {"channel": self.channels[kind], "sent": sent, "received": len(lat),
                         "p50_ms": _pct(lat, 50), "p99_ms": _pct(lat, 99), "max_ms": _pct(lat, 100)}
        return out


def _pct(sorted_ms: list[float], p: float) -> float | None:
    if not sorted_ms:
        return None
    return round(sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * p / 100))], 1)


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


async def timed_import(
    env: dict[str, str], broker: EmbeddedBroker, service: int, prefix: str, path: Path, channel: str, peak: Peak,
    profile: bool = False,
) -> dict[str, Any]:
    """One import of the big file, with the CPU of every party and another channel's
    latency measured while it runs."""
    # With UNIFIER_RELAY_PROCESS the service's one child is the relay: its CPU is counted apart.
    relay = next((c.pid for c in psutil.Process(service).children() if "relay_process" in " ".join(c.cmdline())), None)
    cpu = Cpu(service, broker.pid, relay)
    probe = Probe(broker.bootstrap, prefix, channel)
    probing = asyncio.create_task(probe.run())
    await asyncio.sleep(1.0)  # the probe's first facts arrive before the import starts
    spy = None
    if profile:  # py-spy on the service during the import (bench/results/import-<channel>.pyspy.txt)
        spy = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(service), "--rate", "200", "--format", "raw",
            "--output", str(RESULTS.parent / f"import-{channel}.pyspy.txt"), "--nonblocking",
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    # The background: what every party spends per second on the probe's facts, idle
    # fetches and polls with no import running (a slower import collects more of it).
    cpu.start()
    idle_started = time.perf_counter()
    await asyncio.sleep(IDLE_S)
    idle = cpu.stop()
    idle["postgres"] = await cpu.service_backends(env["DATABASE_URL"])
    idle_s = time.perf_counter() - idle_started
    cpu.start()
    full = await run_import(env, path, channel, peak, "importer")
    spent = cpu.stop()
    spent["postgres"] = await cpu.service_backends(env["DATABASE_URL"])
    if spy is not None:
        spy.send_signal(2)
        await spy.wait()
    probe.stop.set()
    await probing
    rows = full["result"]["created"] + full["result"]["updated"] + full["result"]["failed"]
    digest = await import_digest(env["DATABASE_URL"], env["UNIFIER_DB_SCHEMA"], channel)
    return {
        "import_digest": digest,
        "lead_s": float(env["UNIFIER_IMPORT_LEAD_S"]),
        "relay_process": relay is not None,
        "import_seconds": round(full["seconds"], 2),
        "import_rows_per_s": round(rows / full["seconds"]),
        # µs of CPU per row by party, all that was spent during the import (the probe's
        # facts and idle work included) ...
        "cpu_us_per_row": {k: round(v / rows * 1e6) for k, v in spent.items()},
        "cpu_us_per_row_total": round(sum(v for k, v in spent.items() if k != "postgres_server") / rows * 1e6),
        # ... and what the same parties spend per second with no import, to judge how
        # much of that a longer import collects (idle polling stops while busy, so
        # subtracting it all would undercount)
        "background_cpu_per_s": {k: round(v / idle_s, 3) for k, v in idle.items()},
        "other_channels_during_import": probe.summary(),
        "result": full["result"],
        "progress_tail": full["progress"],
    }


_EPOCH_MS = 10**12  # an integer this large in a user's state is a time (ms), not a cell's value


def _timeless(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and value >= _EPOCH_MS:
        return 0
    return value


async def import_digest(database_url: str, schema: str, channel: str) -> str:
    """What the import left, comparable between runs and versions: the channel's users'
    states (canonical JSON, as services/replay/digest.py, with times read as 0: the
    importer stamps rows with its clock), their identity rows, the import's record
    (status, rows, counts, row mark) and its failed rows. Equal digests: the same rows
    created, updated and failed the same way (issue 14 item 5: pipelined or serial)."""
    h = hashlib.sha256()
    conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    try:
        for row in await conn.fetch("SELECT state::text FROM users WHERE channel_id = $1 ORDER BY id", channel):
            h.update(orjson.dumps(_timeless(orjson.loads(row[0])), option=orjson.OPT_SORT_KEYS) + b"\n")
        h.update(b"--identities--\n")
        for row in await conn.fetch(
            "SELECT kind, value, user_id, qualified FROM identities WHERE channel_id = $1 ORDER BY 1, 2, 3", channel,
        ):
            h.update(orjson.dumps(list(row)) + b"\n")
        h.update(b"--import--\n")
        for row in await conn.fetch(
            "SELECT status, rows, created, updated, failed, last_row FROM imports WHERE channel_id = $1", channel,
        ):
            h.update(orjson.dumps(list(row)) + b"\n")
        for row in await conn.fetch(
            "SELECT row_number, error_columns, error_reason, cells::text FROM import_failures"
            " WHERE channel_id = $1 ORDER BY row_number", channel,
        ):
            h.update(orjson.dumps([row[0], list(row[1]), row[2], orjson.loads(row[3])], option=orjson.OPT_SORT_KEYS) + b"\n")
    finally:
        await conn.close()
    return h.hexdigest()[:16]


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
                **({"UNIFIER_RELAY_PROCESS": args.relay_process} if args.relay_process else {}),
            }
            # BENCH_SERVICE_RUNNER: a script run instead of `-m services.runtime.cli` (e.g. one
            # that runs it under cProfile); the service's arguments follow.
            runner = os.environ.get("BENCH_SERVICE_RUNNER")
            service = await asyncio.create_subprocess_exec(
                sys.executable, *([runner] if runner else ["-m", "services.runtime.cli"]), "run", env=env, cwd=ROOT,
                stdout=subprocess.DEVNULL, stderr=open(work / "service.log", "wb"),  # noqa: ASYNC230, SIM115
            )
            peak, stop = Peak(), asyncio.Event()
            peak.watch("service", service.pid)
            sampler = asyncio.create_task(peak.run(stop))
            try:
                log = work / "service.log"
                await while_alive(service, log, run_import(env, warm, "bench_warm", peak, "warmup"))
                tenth = await while_alive(service, log, run_import(env, small, "bench_tenth", peak, "importer_tenth"))
                variants = {}
                for lead in args.leads.split(","):
                    variant = "unpaced" if float(lead) == 0 else f"paced_{lead.replace('.', '_')}"
                    variants[variant] = await while_alive(service, log, timed_import(
                        {**env, "UNIFIER_IMPORT_LEAD_S": lead}, broker, service.pid, prefix, big, f"bench_{variant}", peak,
                        profile=args.profile))
                service.terminate()
                await service.wait()
                # The importer alone (check, read, publish): with no service to apply the
                # rows it exits 3 as soon as they are all on the broker.
                alone = await run_import(env, big, "bench_publish_only", peak, "importer_alone", wait_s="0.001", ok=3)
                RESULTS.parent.mkdir(parents=True, exist_ok=True)
                (RESULTS.parent / "import-service.log").write_bytes((work / "service.log").read_bytes())
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
        "target_rows_per_s": TARGET_ROWS_S,
        "target_other_p99_ms": TARGET_OTHER_P99_MS,
        "copy_rows_per_s": round(baseline["rows_per_s"]),
        "copy_seconds": round(baseline["seconds"], 2),
        "tenth_rows_per_s": round(rows // 10 / tenth["seconds"]),
        "importer_alone_rows_per_s": round(rows / alone["seconds"]),
        "cpu_us_per_row_at_target": round((os.cpu_count() or 1) / TARGET_ROWS_S * 1e6),
        "imports": variants,
        "peak_rss_mb": {k: round(v / 2**20, 1) for k, v in peak.peaks.items()},
    }


async def while_alive(service: asyncio.subprocess.Process, log: Path, step: Awaitable[T]) -> T:
    """`step`, unless the service exits first: then the bench stops with the end of the
    service's log (a dead service would leave the importer waiting for ever)."""
    task = asyncio.ensure_future(step)
    died = asyncio.ensure_future(service.wait())
    await asyncio.wait([task, died], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        died.cancel()
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    tail = log.read_text(errors="replace")[-3000:]  # noqa: ASYNC240 (the bench ends here)
    raise SystemExit(f"the service exited with {service.returncode} during the bench; its log ends:\n{tail}")


def report(r: dict[str, Any]) -> str:
    rss = r["peak_rss_mb"]
    lines = [
        f"import bench: {r['rows']:,} rows, {r['file_mb']} MB member file, PostgreSQL: {r.get('postgres', 'local')}",
        f"  PostgreSQL COPY of the same file (baseline): {r['copy_rows_per_s']:>10,} rows/s  ({r['copy_seconds']} s)",
        f"  a tenth of the file: {r['tenth_rows_per_s']:,} rows/s;"
        f" the importer alone (check, read, publish; no service): {r['importer_alone_rows_per_s']:,} rows/s",
    ]
    for variant, v in r["imports"].items():
        lines += [
            f"  {variant} (UNIFIER_IMPORT_LEAD_S={v['lead_s']:g}, relay {'in a process of its own' if v.get('relay_process') else 'in the service'}):"
            f" {v['import_rows_per_s']:>8,} rows/s ({v['import_seconds']} s)"
            f"  target {r['target_rows_per_s']:,} {'OK' if v['import_rows_per_s'] >= r['target_rows_per_s'] else 'MISSED'}",
            f"    CPU per row: {v['cpu_us_per_row_total']} µs in all (the background, with no import:"
            f" {', '.join(f'{k} {n:.2f}' for k, n in v['background_cpu_per_s'].items() if k != 'importer')} CPU s/s) ("
            + ", ".join(f"{k} {n}" for k, n in sorted(v["cpu_us_per_row"].items(), key=lambda kv: -kv[1]) if k != "postgres_server")
            + f"; the whole PostgreSQL server {v['cpu_us_per_row']['postgres_server']}, other users' work included"
            + f"); the target allows {r['cpu_us_per_row_at_target']} µs on these {os.cpu_count()} cores",
            *(
                f"    {kind.replace('_', ' ')} channel ({o['channel']}): boot -> user-changed"
                f" p50 {o['p50_ms']} ms, p99 {o['p99_ms']} ms, max {o['max_ms']} ms ({o['received']}/{o['sent']} arrived)"
                f"  target p99 < {r['target_other_p99_ms']} ms"
                f" {'OK' if o['p99_ms'] is not None and o['received'] == o['sent'] and o['p99_ms'] < r['target_other_p99_ms'] else 'MISSED'}"
                for kind, o in v["other_channels_during_import"].items()
            ),
            f"    result: {json.dumps(v['result'])}; import digest {v['import_digest']}",
        ]
    lines.append(
        f"  peak RSS: importer {rss.get('importer')} MB (a tenth of the file: {rss.get('importer_tenth')} MB),"
        f" service {rss.get('service')} MB"
    )
    return "\n".join(lines)


async def _on_postgres(args: argparse.Namespace) -> dict[str, Any]:
    if args.postgres == "local":
        return {"postgres": "local", **await main(args)}
    from deploy_pg import deploy_postgres

    async with deploy_postgres() as url:
        args.database_url = url
        return {"postgres": "deploy", **await main(args)}


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--leads", default="0,0.4",
                   help="UNIFIER_IMPORT_LEAD_S of each timed import: 0 publishes the whole file at once (the baseline),"
                        " above 0 paces the importer (services/importer/window.py)")
    p.add_argument("--relay-process", choices=("true", "false"),
                   help="UNIFIER_RELAY_PROCESS for the service (default: the environment's, else the setting's default);"
                        " the relay's process is then measured as a party of its own (`relay`)")
    p.add_argument("--profile", action="store_true", help="py-spy the service during each timed import")
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or LOCAL_POSTGRES)
    p.add_argument("--postgres", choices=("local", "deploy"), default="local",
                   help="deploy: an embedded PostgreSQL configured as deploy/ configures it (bench/deploy_pg.py)"
                        " instead of --database-url")
    args = p.parse_args()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(_on_postgres(args))
    RESULTS.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(report(result))


if __name__ == "__main__":
    cli()
