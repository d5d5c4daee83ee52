"""Run `unifier …` with timestamps taken along a command's path, for bench/api_bench.py's
commands phase (issue 12, item 7: where the milliseconds of a `?wait=` go).

    python bench/command_trace.py TRACE_FILE run|api [args…]

Wraps, in this process only, the few functions a command passes through and appends
one JSON line per event to TRACE_FILE (wall clock, epoch ms; the bench joins the lines
of every process by eventId):

- API side (CommandBus): `submit` entered (the request has been routed, authenticated
  and parsed), `published` (the broker acknowledged), `seen` (the waiter has its
  outcome);
- projection side: `fetched` (the consumer handed the record to the merge), `applying`
  (its batch starts), `committed` (its batch's transaction committed), with the
  record's broker timestamp and the batch size.

Nothing of this is in the service itself: the wrappers are installed here, before the
CLI starts, so the measured code is the shipped code plus a few dict appends.
"""

from __future__ import annotations

import asyncio
import atexit
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

_lines: list[bytes] = []
_snapshotting: Any = None
_out: Any = None


def _note(**fields: Any) -> None:
    _lines.append(orjson.dumps(fields))
    if len(_lines) >= 200:
        _flush()


def _flush() -> None:
    if _lines and _out is not None:
        _out.write(b"\n".join(_lines) + b"\n")
        _out.flush()
        _lines.clear()


def _now() -> float:
    return time.time() * 1000


def install(trace: Path) -> None:
    global _out
    _out = open(trace, "ab")  # noqa: SIM115  (closed at exit)
    atexit.register(_flush)

    from services.api.commands import CommandBus
    from services.projection.consumer import Projection
    from services.projection.merge import CoPartitionMerge

    submit, wait = CommandBus.submit, CommandBus.wait

    async def traced_submit(self: CommandBus, channel: str, command: dict[str, Any], **kw: Any) -> str:
        entered = _now()
        event_id = await submit(self, channel, command, **kw)
        _note(e=event_id, submit=entered, published=_now())
        return event_id

    async def traced_wait(self: CommandBus, channel: str, event_id: str, timeout_s: float) -> Any:
        outcome = await wait(self, channel, event_id, timeout_s)
        _note(e=event_id, seen=_now())
        return outcome

    CommandBus.submit = traced_submit  # type: ignore[method-assign]
    CommandBus.wait = traced_wait  # type: ignore[method-assign]

    add, apply = CoPartitionMerge.add, Projection.apply

    def commands_of(records: Any) -> list[tuple[str, int]]:
        found = []
        for r in records:
            if r.topic.endswith("commands") and r.value:
                try:
                    found.append((orjson.loads(r.value)["eventId"], r.timestamp))
                except (ValueError, KeyError, TypeError):
                    pass
        return found

    def traced_add(self: CoPartitionMerge, partition: Any, records: Any) -> Any:
        at = _now()
        for event_id, broker_ts in commands_of(records):
            _note(e=event_id, fetched=at, appended=broker_ts)
        return add(self, partition, records)

    async def traced_apply(self: Projection, records: Any) -> Any:
        global _snapshotting
        if _snapshotting is None and _start_snapshots is not None:
            _snapshotting = asyncio.ensure_future(_start_snapshots())
        started = _now()
        result = await apply(self, records)
        done = _now()
        for event_id, _ts in commands_of(records):
            _note(e=event_id, applying=started, committed=done, batch=len(records))
        _flush()
        return result

    CoPartitionMerge.add = traced_add  # type: ignore[method-assign]
    Projection.apply = traced_apply  # type: ignore[method-assign]
    _trace_database()


def _trace_database() -> None:
    """The PostgreSQL backends this process talks to (their pids, for the bench to read
    their CPU) and the wall time of each kind of statement (first words), summed."""
    import asyncpg

    from services.store import pool as pool_mod

    init = pool_mod._init

    async def traced_init(conn: asyncpg.Connection) -> None:
        await init(conn)
        _note(e="", backend=conn.get_server_pid())
        _flush()

    pool_mod._init = traced_init
    spent: dict[str, list[float]] = {}

    def timed(method: Any) -> Any:
        async def call(self: Any, query: Any, *args: Any, **kw: Any) -> Any:
            started = time.perf_counter()
            try:
                return await method(self, query, *args, **kw)
            finally:
                key = " ".join(str(query).split())[:70]
                entry = spent.setdefault(key, [0, 0.0])
                entry[0] += 1
                entry[1] += (time.perf_counter() - started) * 1000
        return call

    for name in ("execute", "fetch", "fetchrow", "fetchval", "copy_records_to_table"):
        setattr(asyncpg.Connection, name, timed(getattr(asyncpg.Connection, name)))
    def dump() -> None:
        _note(e="", at=_now(), sql={k: [n, round(ms, 1)] for k, (n, ms) in spent.items()})
        _flush()

    async def snapshots() -> None:  # the sums every half second: the bench diffs them per phase
        while True:
            await asyncio.sleep(0.5)
            dump()

    global _start_snapshots
    _start_snapshots = snapshots
    atexit.register(dump)


_start_snapshots: Any = None


if __name__ == "__main__":
    install(Path(sys.argv[1]))
    from services.runtime.cli import main

    raise SystemExit(main(sys.argv[2:]))
