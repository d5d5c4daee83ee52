"""Where one rebuild's time goes: `unifier replay --rebuild` run `--runs` times on one
published log, with UNIFIER_REPLAY_PHASES set, each phase line (process, wall clock,
that process's CPU) printed relative to the command's start.

    .venv/bin/python bench/replay_phases.py [--events 200000] [--runs 2] [--workers N]

No live run: the live schema is empty at the first run (its channels' secrets set, as
replay_bench's) and the previous rebuild's afterwards, so every run rebuilds the whole
log; the digests of the runs must be equal. The broker is embedded; PostgreSQL is
DATABASE_URL's server or the local one (a database of its own, dropped at the end)."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import secrets
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.replay_bench import LOCAL_POSTGRES, UNIFIER, PartyCpu, _prepare, _with_database  # noqa: E402
from contracts.topics import Topics  # noqa: E402
from services.platform.embedded import EmbeddedBroker  # noqa: E402
from services.platform.topics import ensure_topics  # noqa: E402
from services.replay import workload  # noqa: E402

_LINE = re.compile(rb"^phase (\d+) ([\d.]+) ([\d.]+) (.*)$", re.M)


async def _once(env: dict[str, str], workers: int, unifier: str = UNIFIER, extra: dict[str, str] | None = None) -> tuple[str, float]:
    env = {**env, **(extra or {})}
    cmd = [unifier, "replay", "--rebuild", "--drop-archive"]
    if spy := os.environ.get("REPLAY_PHASES_SPY"):  # a sampling profiler's command line to run it under
        cmd = [*spy.split(), *cmd]
    if workers:
        cmd += ["--workers", str(workers)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    proc = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                cwd=Path(unifier).parents[2])  # the tree's own (base: its workers' `-m`)
    out, err = await proc.communicate()
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise RuntimeError(err.decode())
    pids: dict[bytes, str] = {}
    print(f"{'wall s':>7} {'cpu s':>6}  process  phase", file=sys.stderr)
    for pid, at, cpu, name in _LINE.findall(err):
        who = pids.setdefault(pid, "command" if not pids else f"worker{len(pids)}")
        print(f"{float(at) - t0:7.3f} {float(cpu):6.3f}  {who:8} {name.decode()}", file=sys.stderr)
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"{wall:7.3f}  exit; CPU of the command and its workers {used:.2f} s", file=sys.stderr)
    return orjson.loads(next(line for line in out.splitlines() if line.startswith(b"{")))["digest"], wall


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--channels", type=int, default=48)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE",
                    help="also run this tree with this variable set (repeatable: one run each)")
    ap.add_argument("--compare", metavar="TREE",
                    help="another worktree (its .venv built): its `unifier replay` and this one's alternate, "
                         "base first, --runs times each")
    args = ap.parse_args()
    async with AsyncExitStack() as stack:
        work = Path(os.environ.get("TMPDIR", "/tmp")) / f"unifier-phases-{secrets.token_hex(3)}"
        work.mkdir(parents=True)
        broker = await stack.enter_async_context(EmbeddedBroker(work))
        server_url = os.environ.get("DATABASE_URL", LOCAL_POSTGRES)
        tag = secrets.token_hex(3)
        prefix, schema, database = f"phases{tag}.", f"phases_{tag}", f"replay_phases_{tag}"
        admin = await asyncpg.connect(server_url)
        await admin.execute(f'CREATE DATABASE "{database}"')
        database_url = _with_database(server_url, database)
        try:
            conn = await asyncpg.connect(database_url)
            await _prepare(conn, database_url, schema, args.channels)
            await conn.close()
            await ensure_topics(broker.bootstrap, prefix, 12)
            await workload.publish(broker.bootstrap, Topics(prefix),
                                   workload.mixed_facts(args.events, channels=args.channels, rounds=10))
            env = {
                **os.environ, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "DATABASE_URL": database_url,
                "UNIFIER_TOPIC_PREFIX": prefix, "UNIFIER_DB_SCHEMA": schema, "UNIFIER_METRICS_PORT": "0",
                "UNIFIER_DATA_DIR": str(work), "UNIFIER_REPLAY_PHASES": "1",
            }
            digests = []
            trees: list[tuple[str, str, dict[str, str]]] = [("this", UNIFIER, {})]
            if args.compare:
                trees.insert(0, ("base", str(Path(args.compare) / ".venv" / "bin" / "unifier"), {}))
            for v in args.variant:
                key, _, value = v.partition("=")
                trees.append((v, UNIFIER, {key: value}))
            walls: dict[str, list[float]] = {name: [] for name, _, _ in trees}
            sampler = await asyncpg.connect(database_url)
            cpu = PartyCpu(sampler, database, broker.pid)
            for _ in range(args.runs):
                for name, unifier, extra in trees:
                    await cpu.start()
                    digest, wall = await _once(env, args.workers, unifier, extra)
                    used = await cpu.stop(args.events)
                    digests.append(digest)
                    walls[name].append(wall)
                    print(f"run ({name}): {args.events / wall:,.0f} events/s, CPU µs an event {used}, "
                          f"digest {digest[:12]}", file=sys.stderr)
            await sampler.close()
            for name, ws in walls.items():
                print(f"{name}: {', '.join(f'{w:.2f}' for w in ws)} s", file=sys.stderr)
            if len(set(digests)) != 1:
                print("DIGESTS DIFFER", file=sys.stderr)
                return 1
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            await admin.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
