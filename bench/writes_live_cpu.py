"""The live batch's statements in the live bench, statement by statement: projection_bench.py
run as is, with the store functions a batch calls wrapped to read their backend's CPU
around each call (/proc/<pid>/schedstat: run it on the database's machine), as
bench/window_live_cpu.py does for the eventId window alone. Only the projection that runs
in this process is counted (the resident variant), not child processes. Prints each
function's backend CPU in µs per event (the events given by --events) and its calls.

    UNIFIER_CORE=compiled .venv/bin/python bench/writes_live_cpu.py --events 60000 --naive-events 0 \\
        --duration 0 --variants resident --instances 1 --instance-modes pipelined
    cd ../base && UNIFIER_CORE=compiled .venv/bin/python ../writes/bench/writes_live_cpu.py …   # another tree

A benchmark, not a test.
"""

from __future__ import annotations

import atexit
import functools
import runpy
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path.cwd()  # the tree measured: run it from there
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from services.store import import_log, outcomes  # noqa: E402  (the measured tree's)
from services.store import lookups as lookup_store  # noqa: E402
from services.store import repository as repo  # noqa: E402

WRAPPED: dict[Any, tuple[str, ...]] = {
    repo: ("load_users", "copy_new_users", "save_user_columns", "save_user_rows", "save_identities", "save_activities",
           "save_merges", "erase_personal_data", "save_grade_changes", "applied_window", "save_applied",
           "raise_clocks", "save_outbox", "lock_offsets", "lock_channels_held", "save_positions", "lock_batch", "finish_batch",
           "load_channels", "load_grades", "channel_tokens"),
    lookup_store: ("save_changes", "erase", "enqueue_chats"),
    outcomes: ("save", "forget_and_announce"),
    import_log: ("save",),
}
SPENT: dict[str, list[int]] = {}
WAL: dict[str, int] = {}
WITH_WAL = bool(__import__("os").environ.get("WRITES_WAL"))
"""With WRITES_WAL=1, the WAL each function wrote too (bytes an event: deterministic where
nobody else writes to the server, but for full-page images after a checkpoint; the CPU
figures then include the two LSN reads a call)."""
_LSN = "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn"
STATEMENTS: dict[str, list[int]] = {}
"""With WRITES_STATEMENTS=1 in the environment, asyncpg's calls too, by statement (first words)."""


def backend_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def wrap(module: Any, name: str) -> None:
    orig: Callable[..., Awaitable[Any]] | None = getattr(module, name, None)
    if orig is None:
        return
    label = f"{module.__name__.rsplit('.', 1)[-1]}.{name}"
    SPENT[label] = [0, 0, 0]
    WAL[label] = 0

    @functools.wraps(orig)
    async def counted(conn: Any, *args: Any, **kwargs: Any) -> Any:
        pid = conn.get_server_pid() if hasattr(conn, "get_server_pid") else None
        lsn = await conn.fetchval(_LSN) if pid and WITH_WAL else 0
        t = backend_ns(pid) if pid else 0
        try:
            return await orig(conn, *args, **kwargs)
        finally:
            if pid:
                SPENT[label][0] += backend_ns(pid) - t
            if pid and WITH_WAL:
                WAL[label] += int(await conn.fetchval(_LSN)) - int(lsn)
            SPENT[label][1] += 1
            first = args[0] if args else None
            if isinstance(first, (list, tuple)):
                SPENT[label][2] += len(first)

    setattr(module, name, counted)


def _events() -> int:
    argv = sys.argv
    for i, a in enumerate(argv):
        if a == "--events":
            return int(argv[i + 1])
        if a.startswith("--events="):
            return int(a.split("=", 1)[1])
    return 1


EVENTS = _events()


@atexit.register
def show() -> None:
    total = sum(v[0] for v in SPENT.values())
    print(f"store statements, backend CPU per event ({EVENTS:,} events): total {total / EVENTS / 1000:.2f} µs")
    for label, (ns, calls, items) in sorted(SPENT.items(), key=lambda kv: -kv[1][0]):
        if calls:
            each = f"{ns / items / 1000:6.2f} µs per item" if items else ""
            wal = f"  WAL {WAL[label] / EVENTS:7.1f} B" if WITH_WAL else ""
            print(f"  {ns / EVENTS / 1000:6.2f} µs{wal}  {calls:6d} calls {items:8d} items {each}  {label}")
    if STATEMENTS:
        print("by statement:")
        for label, (ns, calls) in sorted(STATEMENTS.items(), key=lambda kv: -kv[1][0])[:25]:
            print(f"  {ns / EVENTS / 1000:6.2f} µs  {calls:6d} calls  {label}")


def wrap_statements() -> None:
    import asyncpg

    for name in ("fetch", "fetchval", "fetchrow", "execute", "copy_records_to_table", "copy_to_table"):
        orig = getattr(asyncpg.connection.Connection, name)

        def make(name: str, orig: Any) -> Any:
            async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
                what = args[0] if args and isinstance(args[0], str) else ""
                label = f"{name}: {' '.join(what.split())[:90]}"
                pid = self.get_server_pid()
                t = backend_ns(pid)
                try:
                    return await orig(self, *args, **kwargs)
                finally:
                    st = STATEMENTS.setdefault(label, [0, 0])
                    st[0] += backend_ns(pid) - t
                    st[1] += 1

            return counted

        setattr(asyncpg.connection.Connection, name, make(name, orig))


if __name__ == "__main__":
    import os

    if os.environ.get("WRITES_STATEMENTS"):
        wrap_statements()
    for module, names in WRAPPED.items():
        for name in names:
            wrap(module, name)
    sys.argv = [str(ROOT / "bench" / "projection_bench.py"), *sys.argv[1:]]
    runpy.run_path(sys.argv[0], run_name="__main__")
