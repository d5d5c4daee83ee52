"""Projection benchmark: a realistic mixed SDK stream through the real projection.

Measures, in one run, on the embedded tansu broker and the PostgreSQL of DATABASE_URL
(default: the local server on 127.0.0.1:5432):

1. throughput: N events pre-published to `{prefix}sdk-events`, then the projection
   (`Projection` + `apply_batch`) is started and timed until every record is applied
   (the inbox's stored offsets sum to N). Reported with and without the consumer-group
   join (~5 s on tansu), with a per-stage breakdown of the batch path.
2. naive: the simplest correct pipeline, one transaction per message (the same
   `Projection` with `batch_max=1`: consume one record, `apply_batch([record])`), on a
   fresh schema over the first `--naive-events` records of the same topic.
3. latency: `run_service` (projection + relay) in a child process, the stream published
   at a fixed rate, and publish → `user-changed` latency per message measured through
   `causationId` (only leads and members are published, so only those facts count).
   The service runs the stage timers too (`service stages` in the report), and a trace
   of where each measured fact waited (published → fetched into the merge → released
   into a batch → its batch committed → read from the outbox by the relay → acked by
   the broker → received), its CPU by event-loop task, and PostgreSQL's CPU of its own
   backends (`pg_backends`; the server's total counts other users of a shared server).
   BENCH_CHILD_PROFILE=/tmp/x.prof dumps a cProfile of the whole service child.
4. optional: `--instances 1,2,3` times the resident projection again in N processes of
   one consumer group (each the projection of `unifier run` with embedded off, on the
   bench's broker and database; the group's assignor splits the 12 partitions:
   `--assignors load,range` runs each, UNIFIER_PARTITION_ASSIGNOR), from the moment
   the group has settled until every record is applied, with the CPU of every process by
   party and the state digest compared with the in-process run's;
   `--latency-instances 1,2` runs the latency phase with N `run_service` processes.
5. optional: `--profile N` runs N events again under cProfile (top functions);
   `--py-spy` samples the throughput run with py-spy instead of the stage timers.

Every phase gets its own schema `bench_<run>_*` (dropped at the end unless --keep) and
the broker is an embedded tansu started here and stopped at the end. The cores are
shared with PostgreSQL, the broker and whatever else runs: the report gives the load
average and the Python CPU µs per event, which moves less than events/s does.

Prints a summary table and writes bench/results/projection.json. A benchmark, not a
test: nothing here asserts; the targets are printed beside the figures.

    .venv/bin/python bench/projection_bench.py              # default, about 2 minutes
    .venv/bin/python bench/projection_bench.py --events 300000 --naive-events 10000  # ~3.5 min
    .venv/bin/python bench/projection_bench.py --events 30000 --naive-events 0 --duration 0 --py-spy
    .venv/bin/python bench/projection_bench.py --events 100000 --naive-events 0 --variants resident \
        --instances 1,2,3 --latency-instances 2   # several projection processes, ~3 min
    .venv/bin/python bench/projection_bench.py --events 100000 --naive-events 0 --variants resident \
        --duration 0 --instances 1,2 --assignors load,range   # the assignors side by side
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import gc
import io
import itertools
import json
import logging
import os
import pstats
import random
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SELF = Path(__file__).resolve()
ROOT = SELF.parents[1]
if str(ROOT) not in sys.path:  # `python bench/projection_bench.py` from anywhere
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import orjson  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.partitioner import DefaultPartitioner  # noqa: E402

from contracts.topics import Topics  # noqa: E402
from services.platform import gc_tuning  # noqa: E402
from services.platform.config import Settings  # noqa: E402
from services.platform.embedded import EmbeddedBroker  # noqa: E402
from services.platform.topics import ensure_topics  # noqa: E402
from services.projection import batch as batch_mod  # noqa: E402
from services.projection.batch import BatchResult  # noqa: E402
from services.projection.consumer import Projection  # noqa: E402
from services.projection.records import Record  # noqa: E402
from services.store import repository as repo  # noqa: E402
from services.store.pool import create_pool  # noqa: E402

log = logging.getLogger("bench")

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
RESULTS = ROOT / "bench" / "results" / "projection.json"
PARTITIONS = 12
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z: event time, before any broker timestamp
STEP_MS = 500  # event time between consecutive events (300k events ≈ 42 h of traffic)

TARGET_EPS = 25_000
TARGET_RATIO = 10.0
TARGET_P99_MS = 500.0


# ------------------------------------------------------------------------------ stream


class Stream:
    """A deterministic, realistic SDK stream: ~100 channels of skewed size, a pool of
    veils (mostly repeat visitors), logins drawn from a member pool so some merge a
    visitor into an existing member, occurredAt increasing. Same seed, same stream."""

    MIX = (("boot", 0.60), ("chat", 0.15), ("contact", 0.10), ("login", 0.10), ("track", 0.05))

    def __init__(self, seed: int, *, channels: int = 100, veils: int = 100_000, tag: str = "") -> None:
        self.rng = random.Random(seed)
        self.tag = tag  # eventId prefix: streams of one run never share ids
        weights = [1 / (i + 1) ** 0.7 for i in range(channels)]
        total = sum(weights)
        self.channels = [f"ch_{i:03d}" for i in range(channels)]
        self.cum = list(_accumulate(weights))
        self.pool = [max(20, round(veils * w / total)) for w in weights]  # veils per channel
        self.members_pool = [max(5, p * 3 // 10) for p in self.pool]
        self.seen: list[list[int]] = [[] for _ in range(channels)]  # veil indexes that booted
        self.next_veil = [0] * channels
        self.veil_member: list[dict[int, int]] = [{} for _ in range(channels)]
        self.known_members: list[list[int]] = [[] for _ in range(channels)]
        self.next_member = [0] * channels
        self.kinds = Counter[str]()
        self.i = 0

    def events(self, n: int) -> Iterator[tuple[str, str, bytes]]:
        """(channelId, eventId, JSON value) × n, continuing where the last call stopped."""
        cum_mix = list(_accumulate([w for _k, w in self.MIX]))
        kinds = [k for k, _w in self.MIX]
        rng = self.rng
        for _ in range(n):
            c = rng.choices(range(len(self.channels)), cum_weights=self.cum)[0]
            kind = rng.choices(kinds, cum_weights=cum_mix)[0]
            if kind != "boot" and kind != "chat" and not self.seen[c]:
                kind = "boot"
            ev = getattr(self, "_" + kind)(c)
            eid = f"{self.tag}e{self.i:08d}"
            ev.update(eventId=eid, channelId=self.channels[c], occurredAt=T0 + self.i * STEP_MS)
            self.kinds[ev["type"]] += 1
            self.i += 1
            yield self.channels[c], eid, orjson.dumps(ev)

    # -- helpers -------------------------------------------------------------------------
    def _veil(self, c: int, v: int) -> str:
        return f"v{c:03d}-{v:06d}"

    def _repeat(self, c: int) -> int:
        seen = self.seen[c]
        return seen[int(len(seen) * self.rng.random() ** 1.5)]  # loyal visitors come back more

    def _member_of(self, c: int, v: int) -> int | None:
        return self.veil_member[c].get(v)

    # -- the kinds -----------------------------------------------------------------------
    def _boot(self, c: int) -> dict[str, Any]:
        rng = self.rng
        new = not self.seen[c] or (rng.random() < 0.25 and self.next_veil[c] < self.pool[c])
        if new:
            v = self.next_veil[c]
            self.next_veil[c] += 1
            self.seen[c].append(v)
        else:
            v = self._repeat(c)
        mobile = v % 5 == 0
        ev: dict[str, Any] = {"type": "boot", "veilId": self._veil(c, v), "platform": "mobile" if mobile else "web"}
        if new or rng.random() < 0.3:
            ev["device"] = (
                {"os": "ios", "osName": "iOS", "device": "iPhone", "appName": "shop", "appVersion": "3.2.1"}
                if mobile else {"browser": "chrome", "browserName": "Chrome", "os": "mac", "osName": "macOS"}
            )
            ev["language"], ev["country"] = ("ja", "JP") if v % 7 else ("en", "US")
            if v % 3 == 0:
                ev["city"] = "Tokyo"
        m = self._member_of(c, v)
        if m is not None and rng.random() < 0.95:  # a logged-in visitor's boots carry the memberId
            ev["memberId"] = f"m-{m:06d}"
            if rng.random() < 0.2:
                ev["profile"] = {"plan": rng.choice(["free", "gold", "platinum"]), "points": rng.randrange(10_000)}
        return ev

    def _chat(self, c: int) -> dict[str, Any]:
        rng = self.rng
        medium = rng.choices(["web", "mobile", "line", "instagram", "email", "phone"], cum_weights=[55, 65, 80, 85, 93, 100])[0]
        ev: dict[str, Any] = {"type": "chat", "chatId": f"chat-{rng.randrange(1_000_000)}", "medium": medium}
        if medium in ("web", "mobile") and self.seen[c]:
            ev["veilId"] = self._veil(c, self._repeat(c))
        elif medium in ("line", "instagram"):
            ev["veilId"] = f"{medium}:U{rng.randrange(self.pool[c] // 4 + 1):08x}"
        else:
            who = rng.randrange(self.pool[c])
            if medium == "email":
                ev["veilId"] = f"mail:{who}"
                ev["contact"] = {"email": f"user{c}-{who}@example.jp"}
            else:
                ev["veilId"] = f"tel:{who}"
                ev["contact"] = {"mobileNumber": _mobile(c, who)}
        if rng.random() < 0.9:
            ev["message"] = {"messageId": f"msg-{self.i}", "text": "こんにちは、在庫はありますか？"}
        return ev

    def _contact(self, c: int) -> dict[str, Any]:
        v = self._repeat(c)
        ev: dict[str, Any] = {"type": "contact", "veilId": self._veil(c, v)}
        r = self.rng.random()
        if r < 0.7:
            ev["email"] = f"user{c}-{v}@example.jp"
        if r > 0.5:
            ev["mobileNumber"] = _mobile(c, v, typed=True)
        return ev

    def _login(self, c: int) -> dict[str, Any]:
        rng = self.rng
        v = self._repeat(c)
        m = self._member_of(c, v)
        if m is None:
            known = self.known_members[c]
            if known and (rng.random() < 0.3 or self.next_member[c] >= self.members_pool[c]):
                m = rng.choice(known)  # another device of a known member: U2 merges the visitor
            else:
                m = self.next_member[c]
                self.next_member[c] += 1
                known.append(m)
            self.veil_member[c][v] = m
        ev: dict[str, Any] = {"type": "login", "veilId": self._veil(c, v), "memberId": f"m-{m:06d}"}
        if rng.random() < 0.3:
            ev["name"] = f"会員 {m}"
            ev["profile"] = {"email": f"member{c}-{m}@example.jp"}
        return ev

    def _track(self, c: int) -> dict[str, Any]:
        v = self._repeat(c)
        name = self.rng.choice(["page_view", "page_view", "add_to_cart", "search", "purchase"])
        return {"type": "track", "veilId": self._veil(c, v), "name": name,
                "properties": {"path": f"/items/{self.rng.randrange(5000)}", "ref": "top"}}


def _mobile(c: int, v: int, typed: bool = False) -> str:
    """A valid Japanese mobile number per (channel, veil); typed ones with separators."""
    n = 20_000_000 + c * 200_000 + v % 200_000
    return f"+81 90-{n // 10000:04d}-{n % 10000:04d}" if typed else f"+8190{n:08d}"


def _accumulate(ws: list[float]) -> Iterator[float]:
    total = 0.0
    for w in ws:
        total += w
        yield total


# ------------------------------------------------------------------------- publishing


class Partitions:
    """aiokafka's default partitioner, cached per key (murmur2 in Python is ~8 µs a key)."""

    def __init__(self, partitions: int) -> None:
        self.all = list(range(partitions))
        self.cache: dict[bytes, int] = {}
        self.partitioner = DefaultPartitioner()

    def __call__(self, key: bytes) -> int:
        p = self.cache.get(key)
        if p is None:
            p = self.cache[key] = self.partitioner(key, self.all, self.all)
        return p


def fast_producer(bootstrap: str, linger_ms: int = 20) -> AIOKafkaProducer:
    # tansu rejects idempotent producers (docs/design.md).
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=False, acks=1, linger_ms=linger_ms,
        max_batch_size=512 * 1024, max_request_size=8 * 1024 * 1024,
    )


async def publish_all(bootstrap: str, topic: str, events: list[tuple[str, str, bytes]]) -> float:
    """Publish as fast as the broker takes it; the elapsed seconds."""
    part = Partitions(PARTITIONS)
    producer = fast_producer(bootstrap)
    await producer.start()
    try:
        started = time.perf_counter()
        pending: list[asyncio.Future[Any]] = []
        for ch, _eid, value in events:
            key = ch.encode()
            pending.append(await producer.send(topic, value=value, key=key, partition=part(key)))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        return time.perf_counter() - started
    finally:
        await producer.stop()


# ---------------------------------------------------------------------------- timing


@dataclass
class Stages:
    """Wall time per stage of the batch path, by patching the module attributes that
    batch.py / consumer.py call through (a few perf_counter calls per batch or fact)."""

    seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: Counter[str] = field(default_factory=Counter)
    _undo: list[Callable[[], None]] = field(default_factory=list)

    def patch_async(self, module: Any, name: str, label: str) -> None:
        orig = getattr(module, name)

        @functools.wraps(orig)
        async def timed(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return await orig(*a, **kw)
            finally:
                self.seconds[label] += time.perf_counter() - t
                self.calls[label] += 1

        setattr(module, name, timed)
        self._undo.append(lambda: setattr(module, name, orig))

    def patch_sync(self, module: Any, name: str, label: str) -> None:
        orig = getattr(module, name)

        @functools.wraps(orig)
        def timed(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return orig(*a, **kw)
            finally:
                self.seconds[label] += time.perf_counter() - t
                self.calls[label] += 1

        setattr(module, name, timed)
        self._undo.append(lambda: setattr(module, name, orig))

    def install(self) -> None:
        from asyncpg import transaction as tx_mod

        from services import domain
        from services.domain import core
        from services.projection import facts

        # Compiled (services/compiled_core.py), the facts' loop calls the core and the
        # decoder directly and the merge is a native class: those stages are not timed.
        compiled = domain.CORE == "compiled"
        if not compiled:
            self.patch_sync(facts, "_parse", "parse (orjson + pydantic)")
        for name in ("lock_offsets", "already_applied", "load_channels", "applied_window", "lock_batch"):
            if hasattr(repo, name):
                self.patch_async(repo, name, f"sql {name}")
        self.patch_async(batch_mod, "_load", "load (keys + query + User.from_json)")
        self.patch_async(repo, "load_users", "  of which sql load_users")
        if not compiled:
            self.patch_sync(core, "apply", "core.apply (handlers + publish)")
            self.patch_sync(core, "publish", "  of which publish (diff + view)")
        self.patch_async(batch_mod, "_load_resident", "load, resident (keys + missing + query)")
        for name in ("lock_channels", "stamp_channels", "channel_clocks", "save_clocks", "forget_applied", "raise_clocks", "save_rejected",
                     "save_offsets", "save_positions", "finish_batch"):
            if hasattr(repo, name):
                self.patch_async(repo, name, f"sql {name}")
        for name in ("save_users", "save_identities", "save_activities", "save_merges",
                     "save_applied", "save_outbox"):
            self.patch_async(repo, name, f"sql {name}")
        from services.projection.merge import CoPartitionMerge

        if not compiled:
            self.patch_sync(CoPartitionMerge, "release", "merge.release (canonical order)")
        orig_exit = tx_mod.Transaction.__aexit__

        async def aexit(tx: Any, *exc: Any) -> Any:
            t = time.perf_counter()
            try:
                return await orig_exit(tx, *exc)
            finally:
                self.seconds["COMMIT"] += time.perf_counter() - t
                self.calls["COMMIT"] += 1

        tx_mod.Transaction.__aexit__ = aexit  # type: ignore[method-assign]
        self._undo.append(lambda: setattr(tx_mod.Transaction, "__aexit__", orig_exit))

    def uninstall(self) -> None:
        while self._undo:
            self._undo.pop()()


class TimedProjection(Projection):
    """The real Projection; records fetch and apply times and stops after `target` records."""

    def __init__(self, *a: Any, target: int, done: asyncio.Event, cpu: Cpu | None = None, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.target, self.done, self.cpu = target, done, cpu
        self.cpu_first: dict[str, Any] | None = None
        self.consumed = 0
        self.skipped = 0
        self.dead = 0
        self.assignments: list[float] = []
        self.offsets: dict[tuple[str, int], int] = {}
        self.applied = 0
        self.published = 0
        self.batches: list[tuple[float, float, int]] = []  # (start, end, records)
        self.fetch_s = 0.0
        getmany = self.consumer.getmany

        async def timed_getmany(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            got = await getmany(*a, **kw)
            if got and self.cpu and self.cpu_first is None:
                self.cpu_first = self.cpu.sample()  # CPU over the consuming time, not the join
            if got and self.batches:  # fetch time once consuming, not the group join
                self.fetch_s += time.perf_counter() - t
            return got

        self.consumer.getmany = timed_getmany  # type: ignore[method-assign]

    def batch_applied(self, records: list[Record], result: BatchResult, elapsed: float) -> None:
        """Every batch committed, by the serial path or the pipeline (pipeline.py)."""
        super().batch_applied(records, result, elapsed)
        now = time.perf_counter()
        self.batches.append((now - elapsed, now, len(records)))
        self.consumed += len(records)
        self.skipped += result.skipped
        self.dead += sum(result.dead_letters.values())
        self.applied += result.applied
        self.published += result.published
        self.offsets.update(result.next_offsets)
        if sum(self.offsets.values()) >= self.target:  # what the inbox stored, not what was fetched
            self.done.set()

    async def seek_to_stored(self, partitions: list[TopicPartition]) -> None:
        self.assignments.append(time.perf_counter())
        await super().seek_to_stored(partitions)


class Cpu:
    """CPU seconds of this process, the broker, and the PostgreSQL server under test (its
    postmaster and every process it forked: backends, WAL writer, checkpointer,
    autovacuum). On the machine's shared server that includes other users' work."""

    def __init__(self, broker_pid: int | None, postmaster_pid: int | None = None) -> None:
        self.broker_pid = broker_pid
        self.postmaster_pid = postmaster_pid
        self.tck = os.sysconf("SC_CLK_TCK")

    def _stat(self, pid: int) -> list[str] | None:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None

    def _proc(self, pid: int) -> float:
        parts = self._stat(pid)
        return 0.0 if parts is None else (int(parts[11]) + int(parts[12])) / self.tck

    def _postgres(self) -> dict[int, float]:
        """CPU seconds per process of the server (compared pid by pid: a backend or an
        autovacuum worker that exits between two samples takes its seconds with it)."""
        found: dict[int, float] = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            pid = int(d)
            parts = self._stat(pid)
            if parts is None:
                continue
            if self.postmaster_pid is None:  # unknown server: every postgres process
                try:
                    if Path(f"/proc/{d}/comm").read_text().strip() != "postgres":
                        continue
                except OSError:
                    continue
            elif pid != self.postmaster_pid and int(parts[1]) != self.postmaster_pid:
                continue
            found[pid] = (int(parts[11]) + int(parts[12])) / self.tck
        return found

    def of(self, pid: int) -> float:
        return self._proc(pid)

    def sample(self) -> dict[str, Any]:
        return {
            "python": time.process_time(),
            "broker": self._proc(self.broker_pid) if self.broker_pid else 0.0,
            "postgres": self._postgres(),
            "wall": time.perf_counter(),
        }

    @staticmethod
    def _spent(a: dict[str, Any], b: dict[str, Any], k: str) -> float:
        if k == "postgres":  # pid by pid; a process started meanwhile counts from 0
            return sum(t - a["postgres"].get(pid, 0.0) for pid, t in b["postgres"].items())
        if k == "pg_backends":  # the projection's own connections only (set by run_projection)
            own = b.get("own") or ()
            return sum(b["postgres"].get(pid, 0.0) - a["postgres"].get(pid, 0.0) for pid in own)
        return float(b[k] - a[k])

    @staticmethod
    def delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
        wall = b["wall"] - a["wall"]
        return {k: round(Cpu._spent(a, b, k) / wall, 2) for k in ("python", "broker", "postgres")}  # cores used

    @staticmethod
    def per_fact(a: dict[str, Any], b: dict[str, Any], facts: int) -> dict[str, float]:
        """CPU µs per fact by party (python = the service's process)."""
        out = {k: round(1e6 * Cpu._spent(a, b, k) / max(facts, 1), 1) for k in ("python", "broker", "postgres")}
        if b.get("own"):
            out["pg_backends"] = round(1e6 * Cpu._spent(a, b, "pg_backends") / max(facts, 1), 1)
        return out


def _socket_ports(pids: list[int]) -> set[int]:
    """The local TCP ports of the processes' sockets (/proc): matched against
    pg_stat_activity.client_port, they name the server backends serving them."""
    inodes: set[str] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if len(cols) > 9 and cols[9] in inodes:
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


async def backends_of(conn: asyncpg.Connection, pids: list[int]) -> set[int]:
    """The server pids of the backends connected from `pids` (the service's own share
    of PostgreSQL's CPU, apart from other users of a shared server)."""
    ports = _socket_ports(pids)
    rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE client_port = ANY($1::int[])", sorted(ports))
    return {r["pid"] for r in rows}


async def postmaster_of(database_url: str) -> int | None:
    """The pid of the postmaster serving `database_url` (the parent of our backend), if it
    runs on this machine."""
    conn = await asyncpg.connect(database_url)
    try:
        backend = await conn.fetchval("SELECT pg_backend_pid()")
    finally:
        await conn.close()
    try:
        stat = await asyncio.to_thread(Path(f"/proc/{backend}/stat").read_text)
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


# --------------------------------------------------------------------------- phases


async def _exec(database_url: str, sql: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class GcTimer:
    """gc.callbacks hook: how many collections and how long they took (CPU of this process)."""

    def __init__(self) -> None:
        self.collections = 0
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            self.collections += 1
            self.seconds += time.process_time() - self._started


async def run_projection(
    bootstrap: str, database_url: str, topics: Topics, schema: str, group: str, target: int,
    batch_max: int, stages: Stages | None = None, cpu: Cpu | None = None, limit_s: float = 900.0,
    spy: Path | None = None, resident_users: int = 0, pipelined: bool = True,
) -> dict[str, Any]:
    """Start a projection on a fresh schema and time it until `target` records are applied."""
    await _exec(database_url, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    pool = await create_pool(database_url, schema, min_size=4, max_size=4)
    own = await _backends(pool, 4)
    try:
        done, stop = asyncio.Event(), asyncio.Event()
        proj = TimedProjection(pool, bootstrap, topics, group, batch_max, target=target, done=done, cpu=cpu,
                               resident_users=resident_users, pipelined=pipelined)
        if stages:
            stages.install()
        spying = await _start_py_spy(spy) if spy else None
        gc_timer = GcTimer()
        gc.callbacks.append(gc_timer)
        started = time.perf_counter()
        task = asyncio.create_task(proj.run(stop))
        try:
            await asyncio.wait_for(_first(done, task), limit_s)
        finally:
            finished = time.perf_counter()
            gc.callbacks.remove(gc_timer)
            cpu1 = cpu.sample() if cpu else None
            if cpu1 is not None:
                cpu1["own"] = own
            if spying:
                spying.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                await asyncio.wait_for(spying.wait(), 60)
            stop.set()
            await asyncio.wait_for(task, 60)
            if stages:
                stages.uninstall()
        stored = int(await pool.fetchval("SELECT coalesce(sum(next_offset), 0) FROM inbox_offsets"))
        counts = await pool.fetchrow(
            """SELECT (SELECT count(*) FROM users) AS users,
                      (SELECT count(*) FROM users WHERE type = 'member') AS members,
                      (SELECT count(*) FROM users WHERE type = 'lead') AS leads,
                      (SELECT count(*) FROM merges) AS merges,
                      (SELECT coalesce(sum(n), 0) FROM outbox) AS outbox,  -- messages (a row may be a pack)
                      (SELECT count(*) FROM applied_events) AS applied"""
        )
    finally:
        await pool.close()
    first = proj.batches[0][0]
    sizes = [b[2] for b in proj.batches]
    apply_s = sum(b[1] - b[0] for b in proj.batches)
    out = {
        "records": int(stored),
        "fetched": proj.consumed,
        "skipped": proj.skipped,
        "dead_letters": proj.dead,
        "assignments_after_start_s": [round(a - started, 2) for a in proj.assignments],
        "applied": proj.applied,
        "published": proj.published,
        "join_s": round(first - started, 2),
        "wall_s": round(finished - started, 2),
        "consume_s": round(finished - first, 2),
        "eps_incl_join": round(stored / (finished - started)),
        "eps": round(stored / (finished - first)),
        "gc": {"collections": gc_timer.collections, "us_per_event": round(gc_timer.seconds * 1e6 / max(stored, 1), 2)},
        "batches": len(sizes),
        "batch_mean": round(statistics.fmean(sizes), 1),
        "batch_ms_mean": round(1000 * apply_s / len(sizes), 2),
        "apply_share": round(apply_s / (finished - first), 3),
        "fetch_s": round(proj.fetch_s, 2),
        "state": dict(counts) if counts else {},
    }
    if proj.cpu_first and cpu1:
        out["cores_used"] = Cpu.delta(proj.cpu_first, cpu1)
        # CPU per event: steadier than events/s when other work shares the cores
        out["python_cpu_us_per_event"] = round(1e6 * (cpu1["python"] - proj.cpu_first["python"]) / stored, 1)
        out["cpu_us_per_event"] = Cpu.per_fact(proj.cpu_first, cpu1, stored)
    if stages:
        out["stages_s"] = {k: round(v, 3) for k, v in stages.seconds.items()}
        out["stages_us_per_event"] = {k: round(1e6 * v / stored, 1) for k, v in stages.seconds.items()}
    return out


async def run_trivial(
    bootstrap: str, database_url: str, topics: Topics, schema: str, target: int, batch_max: int,
    cpu: Cpu | None = None, limit_s: float = 300.0, min_s: float = 5.0,
) -> dict[str, Any]:
    """The ceiling: the simplest batched pipeline, no rules. Per batch of records (the
    projection's getmany size): decode each value (orjson), one set-based upsert of a row
    per (channel, veil) keeping a count and the last event, and the partition offsets, in
    one transaction. What a fact costs when the work is only "decode, write, remember
    where we are".

    The stream is read again from the start until at least `min_s` seconds were timed:
    one pass of 60,000 events takes this pipeline well under a second, and a rate timed
    over a fraction of a second moved 2.5x between runs (67k-179k events/s, session 11),
    which made the live / trivial ratio noise."""
    await _exec(database_url, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    await _exec(database_url, f"""CREATE SCHEMA {schema};
        CREATE TABLE {schema}.visitors (channel_id text, veil_id text, n bigint NOT NULL, last json NOT NULL,
                                        PRIMARY KEY (channel_id, veil_id));
        CREATE TABLE {schema}.offsets (topic text, partition int, next_offset bigint NOT NULL,
                                       PRIMARY KEY (topic, partition));""")
    conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    own = {await conn.fetchval("SELECT pg_backend_pid()")}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_bytes=32 * 1024 * 1024)
    try:
        await consumer.start()
        tps = [TopicPartition(topics.sdk_events, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        started = time.perf_counter()
        cpu0: dict[str, Any] | None = None
        first = 0.0
        records = batches = passed = 0
        deadline = time.monotonic() + limit_s
        while True:
            if passed >= target:
                if time.perf_counter() - first >= min_s:
                    break
                await consumer.seek_to_beginning(*tps)
                passed = 0
            if time.monotonic() > deadline:
                raise TimeoutError(f"trivial pipeline: {passed}/{target} after {limit_s} s")
            got = await consumer.getmany(timeout_ms=200, max_records=batch_max)
            if not got:
                continue
            if cpu0 is None:
                cpu0 = cpu.sample() if cpu else {}
                first = time.perf_counter()
            rows: dict[tuple[str, str], list[Any]] = {}
            ends: dict[tuple[str, int], int] = {}
            for tp, msgs in got.items():
                for m in msgs:
                    ev = orjson.loads(m.value)
                    key = (ev["channelId"], ev.get("veilId") or "")
                    row = rows.get(key)
                    if row is None:
                        rows[key] = [1, m.value]
                    else:
                        row[0] += 1
                        row[1] = m.value
                ends[(tp.topic, tp.partition)] = msgs[-1].offset + 1
                records += len(msgs)
                passed += len(msgs)
            async with conn.transaction():
                await conn.execute(
                    """INSERT INTO visitors AS v (channel_id, veil_id, n, last)
                       SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[]::json[])
                       ON CONFLICT (channel_id, veil_id) DO UPDATE SET n = v.n + EXCLUDED.n, last = EXCLUDED.last""",
                    [k[0] for k in rows], [k[1] for k in rows], [r[0] for r in rows.values()],
                    [r[1].decode() for r in rows.values()])
                await conn.execute(
                    """INSERT INTO offsets AS o (topic, partition, next_offset)
                       SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[])
                       ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset""",
                    [k[0] for k in ends], [k[1] for k in ends], list(ends.values()))
            batches += 1
        finished = time.perf_counter()
        cpu1 = cpu.sample() if cpu else None
        if cpu1 is not None:
            cpu1["own"] = own
    finally:
        await consumer.stop()
        await conn.close()
    out: dict[str, Any] = {
        "records": records, "passes": round(records / target, 1), "batches": batches, "consume_s": round(finished - first, 2),
        "wall_s": round(finished - started, 2), "eps": round(records / (finished - first)),
    }
    if cpu0 and cpu1:
        out["cores_used"] = Cpu.delta(cpu0, cpu1)
        out["cpu_us_per_event"] = Cpu.per_fact(cpu0, cpu1, records)
    return out


async def _backends(pool: asyncpg.Pool, n: int) -> set[int]:
    """The server pids of the pool's `n` connections (all held at once, so all differ)."""
    conns = [await pool.acquire() for _ in range(n)]
    try:
        return {await c.fetchval("SELECT pg_backend_pid()") for c in conns}
    finally:
        for c in conns:
            await pool.release(c)


async def _start_py_spy(out: Path) -> asyncio.subprocess.Process:
    """Sample this process (Python and native frames) into `out` (collapsed stacks)."""
    spy_bin = Path(sys.executable).with_name("py-spy")
    proc = await asyncio.create_subprocess_exec(
        str(spy_bin), "record", "--pid", str(os.getpid()), "--rate", "250", "--format", "raw",
        "--nonblocking", "--output", str(out), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(1.0)  # attached before the consumer starts
    return proc


# Leaf-to-root: the first frame that matches names the sample's stage.
SPY_STAGES: tuple[tuple[str, str], ...] = (
    ("_parse (", "parse (orjson + pydantic)"),
    ("load_users (", "load: sql + User.from_json"),
    ("_keys_of (", "load: keys of facts (clean, ids)"),
    ("_load (", "load: Directory build"),
    ("publish (", "core: publish (diff + view)"),
    ("apply (services/domain/core.py", "core: handlers"),
    ("save_users (", "save_users (to_json + sql)"),
    ("save_identities (", "save_identities"),
    ("save_outbox (", "save_outbox"),
    ("save_applied (", "save_applied"),
    ("save_activities (", "save_activities"),
    ("save_merges (", "save_merges"),
    ("already_applied (", "already_applied"),
    ("lock_offsets (", "lock_offsets"),
    ("__aexit__ (asyncpg/transaction", "COMMIT"),
    ("apply_batch (", "apply_batch: other (outbox dumps, loop)"),
    ("aiokafka", "kafka client (fetch, decode)"),
    ("Projection.run (", "consumer: Record build + canonical order"),
    ("Projection.apply (", "apply_batch: other (outbox dumps, loop)"),
    ("select (", "idle: event loop waiting"),
)


def summarize_py_spy(path: Path) -> dict[str, float]:
    """Share of samples per stage of SPY_STAGES (everything else: `other`)."""
    counts: Counter[str] = Counter()
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = stack.split(";")
        label = "other"
        for frame in reversed(frames):
            hit = next((name for key, name in SPY_STAGES if key in frame), None)
            if hit:
                label = hit
                break
        counts[label] += int(n)
    total = sum(counts.values()) or 1
    return {k: round(100 * v / total, 1) for k, v in counts.most_common()}


async def _first(done: asyncio.Event, task: asyncio.Task[None]) -> None:
    waiter = asyncio.ensure_future(done.wait())
    try:
        await asyncio.wait([waiter, task], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # the projection died: raise why
            raise RuntimeError("projection stopped before all records were applied")
    finally:
        waiter.cancel()


async def profile_projection(
    bootstrap: str, database_url: str, topics: Topics, schema: str, group: str, target: int, batch_max: int,
    resident_users: int = 0, dump: str | None = None,
) -> dict[str, Any]:
    prof = cProfile.Profile()
    prof.enable()
    try:
        res = await run_projection(bootstrap, database_url, topics, schema, group, target, batch_max,
                                   resident_users=resident_users)
    finally:
        prof.disable()
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf)
    st.sort_stats("tottime").print_stats(30)
    st.sort_stats("cumulative").print_stats(60)
    if dump:  # for pstats' callers/callees, which the printed tables do not show
        prof.dump_stats(dump)
    res["profile_text"] = buf.getvalue()
    return res


# -- latency --------------------------------------------------------------------------

SERVE_FLAG = "--serve-child"
DEFAULT_GC = gc.get_threshold()  # before anything tunes it


def serve_child() -> None:
    """Child process until SIGTERM: `run_service` (projection + relay, as `unifier run`
    with embedded off), or with BENCH_CHILD_MODE=projection the projection alone (what
    the in-process throughput run times), holding off its first fetch until the file
    BENCH_GATE_FILE exists. Every assignment it is given is appended to
    BENCH_ASSIGN_FILE (one JSON list of sdk-events partitions a line), so the bench can
    start the clock once the group is settled."""
    from services.runtime.service import run_service

    level = os.environ.get("BENCH_SERVICE_LOG", "WARNING")  # INFO: one line per batch
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka.consumer.group_coordinator").setLevel(logging.CRITICAL)
    settings = Settings.from_env()
    if os.environ.get("BENCH_GROUPING") == "off":  # before/after pairs on one build (bench/batch_trace.py)
        from batch_trace import grouping_off

        grouping_off()
    if os.environ.get("BENCH_GC_DEFAULT") != "1":
        gc_tuning.tune()  # as `unifier run` does
    assign_file = os.environ.get("BENCH_ASSIGN_FILE")
    if assign_file:
        _record_assignments(Path(assign_file), Topics(settings.topic_prefix).sdk_events)
    stages_file = os.environ.get("BENCH_SERVICE_STAGES")
    stages = Stages()
    if stages_file:
        stages.install()
    trace_file = os.environ.get("BENCH_TRACE_FILE")
    trace = Trace() if trace_file else None
    if trace is not None:
        trace.install()
    task_cpu = TaskCpu() if trace_file else None  # CPU by task, with the trace
    if task_cpu is not None:
        task_cpu.install()
    profile_file = os.environ.get("BENCH_CHILD_PROFILE")  # cProfile of the whole child, dumped at exit
    profiler = cProfile.Profile() if profile_file else None
    started = time.perf_counter()
    try:
        if profiler is not None:
            profiler.enable()
        if os.environ.get("BENCH_CHILD_MODE") == "projection":
            asyncio.run(_projection_child(settings, Path(os.environ["BENCH_GATE_FILE"])))
        else:
            asyncio.run(run_service(settings))
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(profile_file))
        if stages_file:
            Path(stages_file).write_text(json.dumps({
                "wall_s": time.perf_counter() - started, "seconds": stages.seconds, "calls": stages.calls}))
        if trace is not None and trace_file:
            Path(trace_file).write_text(json.dumps({"times": trace.times, "task_cpu": task_cpu.seconds if task_cpu else {}}))


def _id_in(value: bytes | None, field: bytes) -> str | None:
    """The string field `field` (b'"eventId":"') of a JSON message, without parsing it."""
    if not value:
        return None
    i = value.find(field)
    if i < 0:
        return None
    i += len(field)
    j = value.find(b'"', i)
    return value[i:j].decode() if j > 0 else None


class TaskCpu:
    """CPU seconds of the event loop's callbacks by what they serve: a task's steps by
    the task's name (aiokafka's and asyncpg's own tasks by their coroutine), transport
    callbacks by their protocol. Cumulative from the child's start; the bench reads it
    at the start and end of the measured window (BENCH_TRACE_FILE has the end)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def install(self) -> None:
        import asyncio.events as events

        run = events.Handle._run
        clock = time.thread_time
        seconds = self.seconds

        def label(handle: Any) -> str:
            cb = handle._callback
            owner = getattr(cb, "__self__", None)
            if isinstance(owner, asyncio.Task):
                name = owner.get_name()
                if name.startswith("Task-"):
                    coro = owner.get_coro()
                    name = "task:" + getattr(coro, "__qualname__", type(coro).__name__)
                return name
            if owner is not None:
                proto = getattr(owner, "_protocol", None)
                return f"cb:{type(owner).__name__}" + (f"/{type(proto).__name__}" if proto is not None else "")
            return "cb:" + getattr(cb, "__qualname__", repr(cb))[:60]

        def timed_run(handle: Any) -> None:
            t = clock()
            try:
                run(handle)
            finally:
                seconds[label(handle)] += clock() - t

        events.Handle._run = timed_run  # type: ignore[method-assign]


class Trace:
    """When each fact passes each point of the service (CLOCK_MONOTONIC, as the driver's
    perf_counter): fetched (into the merge), released (into a batch), committed (its
    batch's transaction), and for each user-changed it caused, read from the outbox by
    the relay and acknowledged by the broker. The first time only (a redone batch keeps
    its first marks but its latest commit)."""

    def __init__(self) -> None:
        self.times: dict[str, dict[str, float]] = {}

    def _mark(self, key: str | None, point: str, now: float, last: bool = False) -> None:
        if key is None:
            return
        marks = self.times.setdefault(key, {})
        if last or point not in marks:
            marks[point] = now

    def install(self) -> None:
        from services.projection import merge as merge_mod
        from services.projection import pipeline as pipeline_mod
        from services.relay import relay as relay_mod

        trace = self
        eid, cid = b'"eventId":"', b'"causationId":"'
        add, release = merge_mod.CoPartitionMerge.add, merge_mod.CoPartitionMerge.release

        def traced_add(self: Any, partition: Any, records: Any) -> None:
            records = list(records)
            now = time.perf_counter()
            for r in records:
                trace._mark(_id_in(r.value, eid), "fetched", now)
            add(self, partition, records)

        def traced_release(self: Any, *a: Any, **kw: Any) -> Any:
            out = release(self, *a, **kw)
            now = time.perf_counter()
            for r in out:
                trace._mark(_id_in(r.value, eid), "released", now)
            return out

        def committed(records: list[Record]) -> None:
            now = time.perf_counter()
            for r in records:
                trace._mark(_id_in(r.value, eid), "committed", now, last=True)

        write = pipeline_mod.Pipeline._write

        async def traced_write(self: Any, p: Any) -> Any:
            out = await write(self, p)
            committed(p.records)
            return out

        apply = Projection.apply

        async def traced_apply(self: Any, records: list[Record]) -> Any:
            out = await apply(self, records)
            committed(records)
            return out

        send = relay_mod.Relay._send

        async def traced_send(self: Any, rows: list[Any], refused: Any) -> Any:
            now = time.perf_counter()
            # a row is one message (value) or a pack (vals): relay.py `_send`
            causes = [_id_in(v, cid) for r in rows for v in ([r["value"]] if r["vals"] is None else r["vals"])]
            for c in causes:
                trace._mark(c, "relay_read", now)
            futures = await send(self, rows, refused)

            def acked(_: Any) -> None:
                t = time.perf_counter()
                for c in causes:
                    trace._mark(c, "acked", t)

            if futures:
                asyncio.gather(*(f[0] for f in futures), return_exceptions=True).add_done_callback(acked)
            return futures

        merge_mod.CoPartitionMerge.add = traced_add  # type: ignore[method-assign]
        merge_mod.CoPartitionMerge.release = traced_release  # type: ignore[method-assign]
        pipeline_mod.Pipeline._write = traced_write  # type: ignore[method-assign]
        Projection.apply = traced_apply  # type: ignore[method-assign]
        relay_mod.Relay._send = traced_send  # type: ignore[method-assign]


_TRACE_POINTS = ("fetched", "released", "committed", "relay_read", "acked")


def trace_breakdown(sent_at: dict[str, float], received: dict[str, float], times: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Where a measured fact waited: each segment's p50/p90/p99 (ms) over the facts that
    have both its ends, and the mean share of each segment among the slowest 1 %."""
    segments: dict[str, list[float]] = defaultdict(list)
    slow_cut = sorted(received[e] - sent_at[e] for e in received)
    slow_cut_at = slow_cut[int(0.99 * len(slow_cut))] if slow_cut else 0.0
    slow: dict[str, list[float]] = defaultdict(list)
    for e, got in received.items():
        marks = times.get(e, {})
        points = [("published", sent_at[e])] + [(k, marks[k]) for k in _TRACE_POINTS if k in marks] + [("received", got)]
        for (a, ta), (b, tb) in itertools.pairwise(points):
            segments[f"{a}→{b}"].append(1000 * (tb - ta))
            if got - sent_at[e] >= slow_cut_at:
                slow[f"{a}→{b}"].append(1000 * (tb - ta))
    return {
        name: {"n": len(xs), "p50": round(_pct(sorted(xs), 50), 1), "p90": round(_pct(sorted(xs), 90), 1),
               "p99": round(_pct(sorted(xs), 99), 1), "slowest_1pct_mean": round(statistics.fmean(slow[name]), 1) if slow.get(name) else None}
        for name, xs in segments.items()
    }


def _record_assignments(path: Path, sdk_topic: str) -> None:
    seek_to_stored = Projection.seek_to_stored

    async def recorded(self: Projection, partitions: list[TopicPartition]) -> None:
        await seek_to_stored(self, partitions)
        with path.open("a") as f:
            f.write(json.dumps(sorted(tp.partition for tp in partitions if tp.topic == sdk_topic)) + "\n")

    Projection.seek_to_stored = recorded  # type: ignore[method-assign]


async def _projection_child(settings: Settings, gate: Path) -> None:
    """The projection alone (no relay, no API), as the in-process throughput run."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    assert settings.kafka_bootstrap and settings.database_url
    pool = await create_pool(settings.database_url, settings.db_schema, min_size=4, max_size=4, migrate=False)
    try:
        proj = Projection(pool, settings.kafka_bootstrap, Topics(settings.topic_prefix), settings.consumer_group,
                          settings.batch_max, settings.resident_users, assignor=settings.partition_assignor,
                          pipelined=os.environ.get("BENCH_PIPELINED", "1") == "1")
        getmany = proj.consumer.getmany

        async def gated(*a: Any, **kw: Any) -> Any:  # joins and rebalances go on; nothing is fetched
            if not _exists(gate):
                await asyncio.sleep(0.02)
                return {}
            return await getmany(*a, **kw)

        proj.consumer.getmany = gated  # type: ignore[method-assign]
        await proj.run(stop)
    finally:
        await pool.close()


def _child_env(bootstrap: str, database_url: str, prefix: str, group: str, schema: str, batch_max: int,
               resident_users: int, **extra: str) -> dict[str, str]:
    """`unifier run`'s environment for a bench child: embedded off, the bench's broker and
    database, an API on a free port (several children run side by side)."""
    return {
        **os.environ,
        "UNIFIER_EMBEDDED": "0", "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "DATABASE_URL": database_url,
        "UNIFIER_TOPIC_PREFIX": prefix, "UNIFIER_CONSUMER_GROUP": group, "UNIFIER_DB_SCHEMA": schema,
        "UNIFIER_METRICS_PORT": "0", "UNIFIER_HTTP_ADDR": "127.0.0.1:0", "UNIFIER_BATCH_MAX": str(batch_max),
        "UNIFIER_RESIDENT_USERS": str(resident_users), "UNIFIER_PARTITIONS": str(PARTITIONS),
        "BENCH_GC_DEFAULT": "1" if gc.get_threshold() == DEFAULT_GC else "0",  # the bench's GC setting
        **extra,
    }


def _exists(path: Path) -> bool:
    return path.exists()


def _remove(files: list[Path], folder: Path | None = None) -> None:
    with contextlib.suppress(OSError):
        for f in files:
            f.unlink(missing_ok=True)
        if folder is not None:
            folder.rmdir()


def _settled(files: list[Path]) -> bool:
    """Every child's latest assignment is non-empty and together they own each
    sdk-events partition exactly once: the group is settled, no rebalance is pending."""
    latest = []
    for f in files:
        try:
            lines = f.read_text().splitlines()
        except OSError:
            return False
        if not lines:
            return False
        latest.append(json.loads(lines[-1]))
    owned = [p for parts in latest for p in parts]
    return all(latest) and sorted(owned) == list(range(PARTITIONS))


async def _wait_settled(files: list[Path], children: list[asyncio.subprocess.Process], limit_s: float = 90) -> float:
    started = time.perf_counter()
    deadline = time.monotonic() + limit_s
    while not _settled(files):
        if any(c.returncode is not None for c in children):
            raise RuntimeError(f"a child exited: {[c.returncode for c in children]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"group not settled: {[f.read_text() if f.exists() else None for f in files]}")
        await asyncio.sleep(0.05)
    return time.perf_counter() - started


async def _stop_children(children: list[asyncio.subprocess.Process]) -> None:
    for c in children:
        if c.returncode is None:
            c.send_signal(signal.SIGTERM)  # stops cleanly on SIGTERM
    for c in children:
        try:
            await asyncio.wait_for(c.wait(), 60)
        except TimeoutError:
            c.kill()
            await c.wait()


async def run_instances(
    bootstrap: str, database_url: str, topics: Topics, schema: str, group: str, target: int, batch_max: int,
    instances: int, cpu: Cpu, resident_users: int, limit_s: float = 300.0, assignor: str = "load",
    pipelined: bool = True,
) -> dict[str, Any]:
    """The pre-published stream applied by `instances` projection processes in one
    consumer group (range assignor: each gets a share of the partitions). The clock
    starts when the group is settled and the children are let fetch; it stops when the
    inbox's stored offsets sum to `target`. CPU by party over that window."""
    await _exec(database_url, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    pool = await create_pool(database_url, schema)  # migrated here, not by N children at once
    await pool.close()
    tmp = Path(tempfile.mkdtemp(prefix="bench-instances-"))
    gate = tmp / "go"
    files = [tmp / f"assign-{i}.txt" for i in range(instances)]
    children: list[asyncio.subprocess.Process] = []
    conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    try:
        for f in files:
            env = _child_env(bootstrap, database_url, topics.prefix, group, schema, batch_max, resident_users,
                             BENCH_CHILD_MODE="projection", BENCH_GATE_FILE=str(gate), BENCH_ASSIGN_FILE=str(f),
                             UNIFIER_PARTITION_ASSIGNOR=assignor, BENCH_PIPELINED="1" if pipelined else "0")
            children.append(await asyncio.create_subprocess_exec(sys.executable, str(SELF), SERVE_FLAG, env=env, cwd=ROOT))
        settle_s = await _wait_settled(files, children)
        shares = [json.loads(f.read_text().splitlines()[-1]) for f in files]
        cpu0, child0 = cpu.sample(), [cpu.of(c.pid) for c in children]
        gate.touch()
        started = time.perf_counter()
        deadline = time.monotonic() + limit_s
        while (stored := int(await conn.fetchval("SELECT coalesce(sum(next_offset), 0) FROM inbox_offsets"))) < target:
            if time.monotonic() > deadline or any(c.returncode is not None for c in children):
                raise RuntimeError(f"instances: {stored}/{target} applied; children {[c.returncode for c in children]}")
            await asyncio.sleep(0.02)
        finished = time.perf_counter()
        cpu1, child1 = cpu.sample(), [cpu.of(c.pid) for c in children]
        by_partition = dict(await conn.fetch(
            "SELECT partition, next_offset FROM inbox_offsets WHERE topic = $1", topics.sdk_events))
    finally:
        await conn.close()
        await _stop_children(children)
        _remove([*files, gate], tmp)
    wall = finished - started
    spent = [b - a for a, b in zip(child0, child1, strict=True)]
    per_fact = Cpu.per_fact(cpu0, cpu1, stored)
    per_fact["python"] = round(1e6 * sum(spent) / stored, 1)  # the service processes, not this driver
    return {
        "instances": instances,
        "assignor": assignor,
        "records": stored,
        "settle_s": round(settle_s, 2),
        "consume_s": round(wall, 2),
        "eps": round(stored / wall),
        "partitions": shares,
        "facts_by_instance": [sum(by_partition.get(p, 0) for p in share) for share in shares],
        "cores_by_instance": [round(x / wall, 2) for x in spent],
        "cores_used": {**Cpu.delta(cpu0, cpu1), "python": round(sum(spent) / wall, 2)},
        "cpu_us_per_event": per_fact,
    }


async def measure_latency(
    bootstrap: str, database_url: str, prefix: str, schema: str, group: str, rate: int,
    duration: float, seed: int, burst_ms: float, batch_max: int, cpu: Cpu, resident_users: int = 0,
    instances: int = 1, assignor: str = "load",
) -> dict[str, Any]:
    topics = Topics(prefix)
    await ensure_topics(bootstrap, prefix, PARTITIONS)
    stream = Stream(seed + 1, tag="L")
    n = int(rate * duration)
    warm = list(Stream(seed + 2, channels=10, veils=1000, tag="W").events(300))
    events = list(stream.events(n))
    sent_at: dict[str, float] = {}
    received: dict[str, float] = {}
    changes = Counter[str]()
    stages_file = Path(tempfile.mkdtemp(prefix="bench-stages-")) / "stages.json"
    trace_file = stages_file.parent / "trace.json"

    if instances > 1:  # migrated once here, not by several children at once
        await (await create_pool(database_url, schema)).close()
    assign_files = [stages_file.parent / f"assign-{i}.txt" for i in range(instances)]
    children = []
    for i, f in enumerate(assign_files):
        # the stage timers of the first child only (one file)
        extra = {"BENCH_SERVICE_STAGES": str(stages_file), "BENCH_TRACE_FILE": str(trace_file)} if i == 0 else {}
        env = _child_env(bootstrap, database_url, prefix, group, schema, batch_max, resident_users,
                         BENCH_ASSIGN_FILE=str(f), UNIFIER_PARTITION_ASSIGNOR=assignor, **extra)
        children.append(await asyncio.create_subprocess_exec(sys.executable, str(SELF), SERVE_FLAG, env=env, cwd=ROOT))
    child = children[0]
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                              fetch_max_wait_ms=5, max_partition_fetch_bytes=4 * 1024 * 1024)
    producer = fast_producer(bootstrap, linger_ms=1)
    part = Partitions(PARTITIONS)
    stop_reading = asyncio.Event()

    async def read() -> None:
        while not stop_reading.is_set():
            got = await reader.getmany(timeout_ms=50, max_records=10_000)
            now = time.perf_counter()
            for msgs in got.values():
                for m in msgs:
                    if m.value is None:
                        continue
                    body = orjson.loads(m.value)
                    cause = body.get("causationId")
                    if cause in sent_at and cause not in received:
                        received[cause] = now
                        changes[body["change"]] += 1

    try:
        await reader.start()
        tps = [TopicPartition(topics.user_changed, p) for p in range(PARTITIONS)]
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        await producer.start()
        reading = asyncio.create_task(read())

        # Warm up: the child's group join (~5 s on tansu) and first batches are not latency.
        for ch, eid, value in warm:
            sent_at[eid] = time.perf_counter()
            await producer.send(topics.sdk_events, value=value, key=ch.encode(), partition=part(ch.encode()))
        await producer.flush()
        deadline = time.monotonic() + 90
        while not any(e in received for _c, e, _v in warm):
            if child.returncode is not None:
                raise RuntimeError(f"service exited with {child.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError("service did not publish user-changed for the warm-up")
            await asyncio.sleep(0.1)
        await _wait_settled(assign_files, children)  # no rebalance in the measured window
        await asyncio.sleep(1.0)
        for _c, e, _v in warm:
            sent_at.pop(e, None)
            received.pop(e, None)
        changes.clear()

        # Paced: a small burst every `burst_ms`, on a fixed schedule (no drift).
        conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
        own = await backends_of(conn, [c.pid for c in children])
        cpu0, child0 = cpu.sample(), sum(cpu.of(c.pid) for c in children)
        per_burst = max(1, round(rate * burst_ms / 1000))
        interval = per_burst / rate
        started = time.perf_counter()
        late = 0
        for k in range(0, n, per_burst):
            due = started + (k // per_burst) * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.05:
                late += 1
            for ch, eid, value in events[k:k + per_burst]:
                key = ch.encode()
                sent_at[eid] = time.perf_counter()
                await producer.send(topics.sdk_events, value=value, key=key, partition=part(key))
        await producer.flush()
        publish_s = time.perf_counter() - started

        # Drain: every fact applied, the outbox empty, then a quiet second on user-changed.
        try:
            deadline = time.monotonic() + 120
            while True:
                applied = await conn.fetchval(
                    "SELECT coalesce(sum(next_offset), 0) FROM inbox_offsets WHERE topic = $1", topics.sdk_events)
                backlog = await conn.fetchval("SELECT count(*) FROM outbox")
                if applied >= n + len(warm) and backlog == 0:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"not drained: applied {applied}/{n + len(warm)}, outbox {backlog}")
                await asyncio.sleep(0.1)
            drained_s = time.perf_counter() - started
            own |= await backends_of(conn, [c.pid for c in children])
            cpu1, child1 = cpu.sample(), sum(cpu.of(c.pid) for c in children)
            cpu1["own"] = own
            last = dict(await conn.fetch("SELECT pid, left(query, 60) FROM pg_stat_activity WHERE pid = ANY($1::int[])", sorted(own)))
            by_backend = sorted(
                ((round(1e6 * (cpu1["postgres"].get(p, 0.0) - cpu0["postgres"].get(p, 0.0)) / n, 1), last.get(p, "")) for p in own),
                reverse=True)
        finally:
            await conn.close()
        seen = -1
        while seen != len(received):
            seen = len(received)
            await asyncio.sleep(1.0)
        stop_reading.set()
        await reading
    finally:
        await producer.stop()
        await reader.stop()
        await _stop_children(children)  # run_service stops cleanly on SIGTERM
        _remove(assign_files)

    lat = sorted(1000 * (received[e] - sent_at[e]) for e in received)
    traced = _read_and_remove(trace_file, keep_folder=True) or {}
    times = traced.get("times")
    task_cpu = sorted(((round(1e6 * v / n, 1), k) for k, v in traced.get("task_cpu", {}).items()), reverse=True)
    service_stages = _read_and_remove(stages_file)
    return {
        "breakdown_ms": trace_breakdown(sent_at, received, times) if times else None,
        "pg_backends_us_per_event": by_backend,  # the service's backends: (CPU µs/event, last query)
        "service_task_us_per_event": task_cpu[:25],  # whole child run incl. warm-up, per measured fact
        "service_stages_s": service_stages and {k: round(v, 3) for k, v in service_stages["seconds"].items()},
        "service_stage_calls": service_stages and service_stages["calls"],
        "events": n,
        "target_rate": rate,
        "instances": instances,
        "achieved_rate": round(n / publish_s),
        "publish_s": round(publish_s, 2),
        "late_bursts": late,
        "drained_after_s": round(drained_s, 2),
        "measured": len(lat),
        "changes": dict(changes),
        "p50_ms": round(_pct(lat, 50), 1),
        "p95_ms": round(_pct(lat, 95), 1),
        "p99_ms": round(_pct(lat, 99), 1),
        "max_ms": round(lat[-1], 1) if lat else None,
        "mean_ms": round(statistics.fmean(lat), 1) if lat else None,
        "cores_used": {**Cpu.delta(cpu0, cpu1), "service": round((child1 - child0) / (cpu1["wall"] - cpu0["wall"]), 2)},
        # by party over publish + drain (python = this load driver and reader, not the service)
        "cpu_us_per_event": {**Cpu.per_fact(cpu0, cpu1, n), "service": round(1e6 * (child1 - child0) / n, 1)},
    }


def _read_and_remove(path: Path, keep_folder: bool = False) -> Any:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = None
    with contextlib.suppress(OSError):
        path.unlink()
        if not keep_folder:
            path.parent.rmdir()
    return data


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, round(p / 100 * len(xs) + 0.5) - 1))  # nearest rank
    return xs[k]


# ------------------------------------------------------------------------------ main


async def main(args: argparse.Namespace) -> dict[str, Any]:
    run = f"{os.getpid():x}{int(time.time()) % 100000:x}"
    results: dict[str, Any] = {
        "args": {k: v for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "loadavg_before": os.getloadavg()},
        "targets": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-tansu-") as tmp:
        broker = EmbeddedBroker(Path(tmp))
        bootstrap = await broker.start()
        try:
            prefix = f"b{run}."
            topics = Topics(prefix)
            await ensure_topics(bootstrap, prefix, PARTITIONS)

            t = time.perf_counter()
            stream = Stream(args.seed)
            events = list(stream.events(args.events))
            gen_s = time.perf_counter() - t
            pub_s = await publish_all(bootstrap, topics.sdk_events, events)
            results["stream"] = {
                "events": len(events), "kinds": dict(stream.kinds), "channels": len(stream.channels),
                "veil_pool": sum(stream.pool), "veils_seen": sum(len(s) for s in stream.seen),
                "members_known": sum(len(m) for m in stream.known_members),
                "generate_s": round(gen_s, 2), "publish_s": round(pub_s, 2),
                "publish_eps": round(len(events) / pub_s),
                "bytes_mean": round(statistics.fmean(len(v) for _c, _e, v in events)),
            }
            _say(f"published {len(events):,} events in {pub_s:.1f} s ({len(events) / pub_s:,.0f}/s)")
            del events

            for target in args.postgres.split(","):
                async with _database(target, args.database_url) as db:
                    results["targets"][target] = await run_target(args, run, bootstrap, topics, target, db, broker.pid)
        finally:
            await broker.stop()
    first = next(iter(results["targets"].values()))
    results["batch"] = first["batch"][args.variants.split(",")[-1]]
    for k in ("naive", "latency", "profile"):
        if k in first:
            results[k] = first[k]
    if "naive" in first:
        results["ratio"] = round(results["batch"]["eps"] / first["naive"]["eps"], 1)
    return results


@contextlib.asynccontextmanager
async def _database(target: str, local_url: str) -> Any:
    """`local`: the machine's server (DATABASE_URL); `deploy`: an embedded PostgreSQL with
    deploy/compose.yaml's settings (bench/deploy_pg.py)."""
    if target == "local":
        yield local_url
    elif target == "deploy":
        from bench.deploy_pg import deploy_postgres

        async with deploy_postgres() as url:
            yield url
    else:
        raise SystemExit(f"--postgres: unknown target {target!r} (local, deploy)")


async def run_target(
    args: argparse.Namespace, run: str, bootstrap: str, topics: Topics, target: str, db: str, broker_pid: int | None,
) -> dict[str, Any]:
    """Every phase against one PostgreSQL: the projection in each variant, the trivial
    ceiling, the naive pipeline, the latency run; interleaved in one run so the figures
    share the machine's load."""
    from bench.deploy_pg import describe

    tag = f"{run}_{target[0]}"
    cpu = Cpu(broker_pid, await postmaster_of(db))
    out: dict[str, Any] = {"settings": await describe(db), "loadavg": os.getloadavg(), "batch": {}, "digests": {}}
    schemas: list[str] = []
    try:
        for variant in args.variants.split(","):
            schema = f"bench_{tag}_{variant.replace('-', '')}"
            schemas.append(schema)
            stages = None if args.py_spy else Stages()  # one profiler at a time
            spy = RESULTS.parent / f"projection.{variant}.py-spy.txt" if args.py_spy else None
            b = await run_projection(
                bootstrap, db, topics, schema, f"bench-{tag}-{variant}", args.events, args.batch_max,
                stages=stages, cpu=cpu, spy=spy, resident_users=_resident_users(variant, args),
                pipelined=variant != "serial",
            )
            if spy:
                b["py_spy_percent"] = summarize_py_spy(spy)
            b["loadavg_after"] = os.getloadavg()
            out["batch"][variant] = b
            out["digests"][variant] = await _digest(db, schema)
            _say(f"[{target}] {variant}: {b['eps']:,} events/s ({b['records']:,} in {b['consume_s']} s), "
                 f"CPU µs/event {b.get('cpu_us_per_event')}, load {os.getloadavg()[0]:.1f}")
        out["digests_equal"] = len(set(out["digests"].values())) == 1

        for (n, assignor), piped in itertools.product(
            _instance_runs(args.instances, args.assignors), [m == "pipelined" for m in args.instance_modes.split(",")],
        ):
            mode = "" if piped else "s"
            schema = f"bench_{tag}_x{n}{assignor}{mode}"
            schemas.append(schema)
            loadavg = os.getloadavg()
            x = await run_instances(
                bootstrap, db, topics, schema, f"bench-{tag}-x{n}-{assignor}{mode}", args.events, args.batch_max, n, cpu,
                resident_users=args.resident_users, assignor=assignor, pipelined=piped,
            )
            x["loadavg_before"] = loadavg
            x["loadavg_after"] = os.getloadavg()
            x["digest"] = await _digest(db, schema)
            runs = out.setdefault("instances", {})
            name = f"{n} ({assignor}{'' if piped else ', serial'})"
            runs[name + (f" #{len(runs)}" if name in runs else "")] = x
            _say(f"[{target}] {n} projection process(es), {assignor}{'' if piped else ', not pipelined'}: {x['eps']:,} events/s ({x['records']:,} in {x['consume_s']} s), "
                 f"facts by instance {x['facts_by_instance']}, cores {x['cores_used']}, CPU µs/event {x['cpu_us_per_event']}, "
                 f"digest equal: {x['digest'] in out['digests'].values()}")

        if args.trivial:
            schema = f"bench_{tag}_trivial"
            schemas.append(schema)
            out["trivial"] = await run_trivial(bootstrap, db, topics, schema, args.events, args.batch_max, cpu=cpu)
            _say(f"[{target}] trivial: {out['trivial']['eps']:,} events/s, CPU µs/event {out['trivial'].get('cpu_us_per_event')}")

        if args.naive_events:
            schema = f"bench_{tag}_naive"
            schemas.append(schema)
            out["naive"] = await run_projection(
                bootstrap, db, topics, schema, f"bench-{tag}-naive", min(args.naive_events, args.events), 1, cpu=cpu,
                resident_users=0,
            )
            _say(f"[{target}] naive: {out['naive']['eps']:,} events/s")

        if args.profile:
            schema = f"bench_{tag}_prof"
            schemas.append(schema)
            out["profile"] = await profile_projection(
                bootstrap, db, topics, schema, f"bench-{tag}-prof", min(args.profile, args.events), args.batch_max,
                resident_users=_resident_users(args.variants.split(",")[-1], args), dump=args.profile_dump,
            )
            _say(f"profiled {out['profile']['records']:,} records")

        if args.duration > 0:
            for variant in args.latency_variants.split(","):
                for n, assignor in _instance_runs(args.latency_instances, args.assignors):
                    name = variant if n == 1 else f"{variant} x{n} ({assignor})"
                    schema = f"bench_{tag}_lat{variant.replace('-', '')}{n}{assignor}"
                    schemas.append(schema)
                    loadavg = os.getloadavg()
                    la = await measure_latency(
                        bootstrap, db, f"l{tag}{variant[0]}{n}{assignor[0]}.", schema,
                        f"bench-{tag}-lat-{variant}-{n}-{assignor}", args.rate,
                        args.duration, args.seed, args.burst_ms, args.batch_max, cpu,
                        resident_users=_resident_users(variant, args), instances=n, assignor=assignor,
                    )
                    la["loadavg_before"] = loadavg
                    la["loadavg_after"] = os.getloadavg()
                    out.setdefault("latency_by_variant", {})[name] = la
                    out["latency"] = la
                    _say(f"[{target}] latency {name} @ {la['target_rate']:,}/s: p50 {la['p50_ms']} ms, "
                         f"p99 {la['p99_ms']} ms, CPU µs/event {la['cpu_us_per_event']}")
    finally:
        if not args.keep:
            for s in schemas:
                with contextlib.suppress(Exception):
                    await _exec(db, f"DROP SCHEMA IF EXISTS {s} CASCADE")
    return out


def _instance_runs(instances: str, assignors: str) -> list[tuple[int, str]]:
    """(processes, assignor) pairs: one process once (no assignor to compare), more
    processes with each assignor, interleaved so that they share the machine's load."""
    runs: list[tuple[int, str]] = []
    names = [a for a in assignors.split(",") if a]
    for n in [int(x) for x in instances.split(",") if x]:
        runs.extend([(n, names[0])] if n == 1 else [(n, a) for a in names])
    return runs


def _resident_users(variant: str, args: argparse.Namespace) -> int:
    """`per-batch`: every batch loads its users (no resident state); `resident`: users
    stay in memory between batches, up to --resident-users."""
    if variant == "per-batch":
        return 0
    if variant in ("resident", "serial"):  # serial: resident, batches not pipelined (pipeline.py)
        return args.resident_users
    raise SystemExit(f"unknown variant {variant!r} (per-batch, resident, serial)")


async def _digest(db: str, schema: str) -> str:
    from services.replay.digest import state_digest

    conn = await asyncpg.connect(db, server_settings={"search_path": schema})
    try:
        return await state_digest(conn)
    finally:
        await conn.close()


def _say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def report(r: dict[str, Any]) -> str:
    lines: list[str] = []
    s, b = r["stream"], r["batch"]
    lines.append(f"stream: {s['events']:,} events, {s['channels']} channels, {s['veils_seen']:,} veils seen "
                 f"(pool {s['veil_pool']:,}), {s['members_known']:,} members; "
                 + ", ".join(f"{k} {100 * v / s['events']:.0f}%" for k, v in sorted(s["kinds"].items())))
    lines.append(f"published in {s['publish_s']} s ({s['publish_eps']:,}/s), {s['bytes_mean']} B/event mean")
    m = r["machine"]
    lines.append(f"machine: {m['cpus']} CPUs, load average {m['loadavg_before'][0]:.2f} before the run "
                 "(other work on the cores lowers every figure: compare CPU µs/event too)")
    lines.append("")
    rows = [("figure", "measured", "target", "ok")]
    rows.append(("batched projection, events/s", f"{b['eps']:,}", f">= {TARGET_EPS:,}", _ok(b["eps"] >= TARGET_EPS)))
    rows.append(("  incl. consumer-group join", f"{b['eps_incl_join']:,}", "", ""))
    if "naive" in r:
        rows.append(("naive (1 tx/message), events/s", f"{r['naive']['eps']:,}", "", ""))
        rows.append(("ratio batched / naive", f"{r['ratio']}x", f">= {TARGET_RATIO:.0f}x", _ok(r["ratio"] >= TARGET_RATIO)))
    if "latency" in r:
        la = r["latency"]
        rows.append((f"latency @ {la['target_rate']:,}/s (achieved {la['achieved_rate']:,}/s) p50", f"{la['p50_ms']} ms", "", ""))
        rows.append(("  p95", f"{la['p95_ms']} ms", "", ""))
        rows.append(("  p99", f"{la['p99_ms']} ms", f"< {TARGET_P99_MS:.0f} ms", _ok(la["p99_ms"] < TARGET_P99_MS)))
        rows.append(("  max", f"{la['max_ms']} ms", "", ""))
    w = [max(len(row[i]) for row in rows) for i in range(4)]
    for i, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w[j]) for j, c in enumerate(row)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * x for x in w))
    lines.append("")
    lines.append(f"batched: {b['batches']} batches, mean {b['batch_mean']} records, {b['batch_ms_mean']} ms each; "
                 f"apply {100 * b['apply_share']:.0f}% of the time, fetch {b['fetch_s']} s; "
                 f"cores used {b.get('cores_used')}; Python CPU {b.get('python_cpu_us_per_event')} µs/event, "
                 f"of which GC {b.get('gc', {}).get('us_per_event')} µs ({b.get('gc', {}).get('collections')} collections)")
    lines.append(f"fetched {b['fetched']:,} records for {b['records']:,} offsets ({b['skipped']:,} skipped as already applied; "
                 f"assignments at {b['assignments_after_start_s']} s); {b['dead_letters']} dead letters")
    lines.append(f"state: {b['state']}")
    if "naive" in r:
        n = r["naive"]
        lines.append(f"naive: {n['records']:,} records in {n['consume_s']} s, {n['batch_ms_mean']} ms per message; "
                     f"cores used {n.get('cores_used')}")
    if "latency" in r:
        la = r["latency"]
        lines.append(f"latency: {la['measured']:,} user-changed measured of {la['events']:,} facts "
                     f"({la['changes']}); drained {la['drained_after_s']} s after start; late bursts {la['late_bursts']}")
        lines.append(f"latency run cores used (python = this driver): {la['cores_used']}")
        if la.get("service_task_us_per_event"):
            lines.append("the service's CPU by event-loop task (µs per fact, whole run): " + "; ".join(
                f"{k} {us}" for us, k in la["service_task_us_per_event"] if us >= 0.5))
        if la.get("pg_backends_us_per_event"):
            lines.append("the service's PostgreSQL backends, CPU µs/event (last query): " + "; ".join(
                f"{us} ({q!r})" for us, q in la["pg_backends_us_per_event"]))
        if la.get("breakdown_ms"):
            lines.append("where a measured fact waited (ms: p50 / p90 / p99; mean among the slowest 1 %):")
            for seg, x in la["breakdown_ms"].items():
                lines.append(f"  {seg:<26} {x['p50']:>8} / {x['p90']:>8} / {x['p99']:>8}; {x['slowest_1pct_mean']}  (n {x['n']:,})")
        if la.get("service_stages_s"):
            lines.append("service stages during the latency run (wall s, incl. warm-up): " + ", ".join(
                f"{k} {v}" for k, v in sorted(la["service_stages_s"].items(), key=lambda kv: -kv[1]) if v >= 0.05))
    for target, t in r.get("targets", {}).items():
        lines.append("")
        st = t["settings"]
        lines.append(f"PostgreSQL {target}: {st.get('server_version')}, shared_buffers {st.get('shared_buffers')}, "
                     f"autovacuum {st.get('autovacuum')}, wal_compression {st.get('wal_compression')}; "
                     f"load average {t['loadavg'][0]:.1f} at its start")
        lines.append(f"  {'pipeline':<34} {'events/s':>9}  {'CPU µs/event: service  postgres (own backends)  broker':<54} load after")
        rows2 = [(f"projection, {v}", x) for v, x in t["batch"].items()]
        if "trivial" in t:
            rows2.append(("trivial batched (ceiling)", t["trivial"]))
        if "naive" in t:
            rows2.append(("naive (1 tx/message)", t["naive"]))
        for name, x in rows2:
            c = x.get("cpu_us_per_event") or {}
            lines.append(f"  {name:<34} {x['eps']:>9,}  {c.get('python', '?'):>21} {c.get('postgres', '?'):>9} "
                         f"{'(' + str(c.get('pg_backends', '?')) + ')':>14} {c.get('broker', '?'):>8}   "
                         f"{x.get('loadavg_after', [float('nan')])[0]:.1f}")
        if "trivial" in t:
            for v, x in t["batch"].items():
                lines.append(f"  {v} / trivial: {x['eps'] / t['trivial']['eps']:.2f}")
        lines.append(f"  digests equal across variants: {t.get('digests_equal')} {t['digests']}")
        for n, x in t.get("instances", {}).items():
            c = x["cpu_us_per_event"]
            # The 0.67 is a ratio to the trivial pipeline of the same run, whatever the
            # number of processes: print it for the instances too, not only for the variants.
            ratio = f" ({x['eps'] / t['trivial']['eps']:.2f} of trivial)" if "trivial" in t else ""
            lines.append(f"  {n} projection process(es): {x['eps']:,} events/s{ratio}; CPU µs/event service {c['python']}, "
                         f"postgres {c['postgres']}, broker {c['broker']}; cores {x['cores_used']} "
                         f"(by instance {x['cores_by_instance']}); facts by instance {x['facts_by_instance']}; "
                         f"digest equal to the variants': {x['digest'] in t['digests'].values()}; "
                         f"load average {_loads(x)}")
        for v, la in t.get("latency_by_variant", {}).items():
            c = la.get("cpu_us_per_event", {})
            lines.append(f"  latency {v} @ {la['target_rate']:,}/s (achieved {la['achieved_rate']:,}): p50 {la['p50_ms']} ms, "
                         f"p95 {la['p95_ms']} ms, p99 {la['p99_ms']} ms, max {la['max_ms']} ms; drained after "
                         f"{la['drained_after_s']} s; CPU µs/event service {c.get('service')}, postgres {c.get('postgres')}, "
                         f"broker {c.get('broker')}; load average {_loads(la)}")
    if "stages_s" in b:
        lines.append("")
        lines.append(f"batch path by stage (wall, {b['records']:,} records, {b['consume_s']} s):")
        total = b["consume_s"]
        for k in _stage_order(b["stages_s"]):
            v = b["stages_s"][k]
            lines.append(f"  {k:<42} {v:8.2f} s  {100 * v / total:5.1f}%  {b['stages_us_per_event'][k]:7.1f} µs/event")
    if "py_spy_percent" in b:
        lines.append("")
        lines.append(f"batch path by py-spy samples (% of samples of this process while not idle, {b['wall_s']} s run):")
        for k, v in b["py_spy_percent"].items():
            lines.append(f"  {k:<42} {v:5.1f}%")
    return "\n".join(lines)


# Nested timers ("  of which …") print under the stage that contains them.
_PARENT = {"  of which publish (diff + view)": "core.apply (handlers + publish)",
           "  of which sql load_users": "load (keys + query + User.from_json)"}


def _loads(x: dict[str, Any]) -> str:
    """1-minute load average before → after a phase."""
    before, after = x.get("loadavg_before"), x.get("loadavg_after")
    return f"{before[0]:.1f} → {after[0]:.1f}" if before and after else "?"


def _stage_order(stages: dict[str, float]) -> list[str]:
    order: list[str] = []
    for k, _v in sorted(stages.items(), key=lambda kv: -kv[1]):
        if k in _PARENT:
            continue
        order.append(k)
        order.extend(c for c, parent in _PARENT.items() if parent == k and c in stages)
    return order


def _ok(flag: bool) -> str:
    return "yes" if flag else "NO"


def cli() -> None:
    if SERVE_FLAG in sys.argv:
        serve_child()
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=100_000, help="events pre-published for the throughput run (default 100000)")
    p.add_argument("--naive-events", type=int, default=3_000, help="events for the naive baseline (0: skip; default 3000)")
    p.add_argument("--rate", type=int, default=5_000, help="events/s for the latency run (default 5000)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of paced publishing (0: skip latency; default 20)")
    p.add_argument("--burst-ms", type=float, default=10.0, help="pacing interval of the latency producer (default 10 ms)")
    p.add_argument("--batch-max", type=int, default=Settings().batch_max, help="projection getmany max_records")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="also run N events under cProfile and print the top functions")
    p.add_argument("--profile-dump", metavar="PATH", help="with --profile: also write the cProfile stats to PATH (pstats)")
    p.add_argument("--py-spy", action="store_true", help="sample the throughput run with py-spy (instead of the stage timers)")
    p.add_argument("--gc-default", action="store_true",
                   help="keep Python's GC thresholds (default: the service's, services/platform/gc_tuning.py)")
    p.add_argument("--postgres", default="local",
                   help="comma-separated: local (DATABASE_URL, the machine's server), deploy (embedded, deploy/ settings)")
    p.add_argument("--variants", default="per-batch,resident",
                   help="projection variants run one after the other in the same run (per-batch, resident)")
    p.add_argument("--instance-modes", default="pipelined",
                   help="--instances runs pipelined (the default) and/or serial (batches not pipelined): pipelined,serial")
    p.add_argument("--latency-variants", default="resident", help="variants of the latency run (default: resident)")
    p.add_argument("--instances", default="",
                   help="also time the resident projection in N processes of one consumer group, e.g. 1,2,3 (default: skip)")
    p.add_argument("--latency-instances", default="1",
                   help="service processes (`unifier run`, one group) in the latency run, e.g. 1,2 (default 1)")
    p.add_argument("--assignors", default="load",
                   help="partition assignors of the several-process runs, each in turn: load, range (default load)")
    p.add_argument("--resident-users", type=int, default=Settings().resident_users,
                   help="users kept in memory by the resident variant")
    p.add_argument("--no-trivial", dest="trivial", action="store_false", help="skip the trivial-pipeline ceiling")
    p.add_argument("--seed", type=int, default=20260101)
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or LOCAL_POSTGRES)
    p.add_argument("--keep", action="store_true", help="keep the bench_* schemas for inspection")
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args()
    if args.py_spy and not Path(sys.executable).with_name("py-spy").exists():
        p.error("--py-spy samples with py-spy, which is not a dependency: .venv/bin/pip install py-spy")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The projection's Kafka offset commits are hints; tansu drops them at consumer stop.
    logging.getLogger("aiokafka.consumer.group_coordinator").setLevel(logging.CRITICAL)
    if not args.gc_default:
        gc_tuning.tune()
    started = time.perf_counter()
    results = asyncio.run(main(args))
    results["runtime_s"] = round(time.perf_counter() - started, 1)
    text = report(results)
    print(text)
    if "profile" in results:
        print("\ncProfile of the batch path:\n" + results["profile"]["profile_text"])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str))
    print(f"\n{results['runtime_s']} s; results in {args.output}")


if __name__ == "__main__":
    cli()
