"""`UNIFIER_PROJECTION_PROCESSES=N`: `unifier run` applies facts in N processes.

Why processes: the projection is Python bound to one core per process (~60 µs of CPU a
fact), so one process leaves the other cores of a machine to PostgreSQL and idle; the
service already runs as several members of one consumer group (fenced by the stored
offsets and `channel_writers`), which share the inbound partitions by load
(services/projection/assignor.py). Measured: docs/decisions.md, "Several projection
processes from one `unifier run`".

How: the main process (the supervisor) runs everything `unifier run` runs — the
projection too, so N = 1 is exactly the single process — and starts N − 1 extra
processes (`python -m services.runtime.projections`) that run the projection only: no
relay standby, lookups worker, API or metrics endpoint, whose one copy in the main
process is enough. They get the main process's settings (the embedded broker's and
database's addresses filled in) on stdin, not in their environment, so secrets stay out of
it. Supervised as `unifier api --workers`: when an extra process dies by itself the main
process stops the others and exits 1, for the process manager to restart the whole (no
half-capacity service that looks healthy); on SIGTERM every process finishes its batch in
flight; when the main process dies, even by SIGKILL, the extras get SIGTERM
(PR_SET_PDEATHSIG) and stop. A kill -9 of any of them loses nothing: each batch commits
state and offsets in one transaction, and a partition's next owner starts from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import orjson
from pydantic import SecretStr

from contracts.topics import Topics
from services.platform.config import Settings

log = logging.getLogger("unifier")


class ProjectionProcessDied(RuntimeError):
    """An extra projection process exited while the service was not stopping."""


def settings_bytes(settings: Settings) -> bytes:
    """`settings` for a child (secrets in clear: written to its stdin only)."""
    values: dict[str, Any] = {}
    for name, value in settings.model_dump().items():
        values[name] = value.get_secret_value() if isinstance(value, SecretStr) else value
    return orjson.dumps(values, default=lambda v: str(v) if isinstance(v, Path) else repr(v))


def child_settings(settings: Settings) -> Settings:
    """What a projection-only process runs with: the broker and database in use (no
    embedded ones), one process, and the main process's decision to pipeline or not
    (alone in its settings, "auto" would count one process and pipeline it)."""
    return settings.replace(projection_processes=1, embedded=False, pipeline=settings.pipelined)


async def run_extra_projections(settings: Settings, stop: asyncio.Event) -> None:
    """Start `settings.projection_processes − 1` projection processes and watch them until
    `stop`; then SIGTERM them and wait for each to finish its batch. Raises
    ProjectionProcessDied when one exits first. `settings` names the broker and database
    in use (no embedded ones are started by the children)."""
    extra = settings.projection_processes - 1
    if extra <= 0:
        await stop.wait()  # a task of the service like the others: it ends with it
        return
    given = settings_bytes(child_settings(settings))
    procs: list[asyncio.subprocess.Process] = []
    try:
        for _ in range(extra):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "services.runtime.projections", stdin=asyncio.subprocess.PIPE,
            )
            assert proc.stdin is not None
            proc.stdin.write(given)
            await proc.stdin.drain()
            proc.stdin.close()
            procs.append(proc)
        log.info("projection in %d processes: this one and %s", extra + 1, [p.pid for p in procs])
        waits = [asyncio.ensure_future(p.wait()) for p in procs]
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([*waits, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not stop.is_set():
            raise ProjectionProcessDied(
                f"a projection process exited ({[(p.pid, p.returncode) for p in procs]}); stopping the service")
    finally:
        for p in procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        # Each finishes its batch in flight (the relay, in this process, waits for us).
        await asyncio.shield(asyncio.gather(*(p.wait() for p in procs)))


async def _projection_only(settings: Settings) -> int:
    """One extra process: the projection alone until SIGTERM/SIGINT."""
    from services.platform import gc_tuning
    from services.projection.consumer import Projection
    from services.store.pool import create_pool

    from .service import until_up

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    gc_tuning.tune()
    assert settings.kafka_bootstrap and settings.database_url  # filled in by the main process
    database_url = settings.database_url
    # The main process migrated the schema before starting us.
    pool = await until_up("database", lambda: create_pool(database_url, settings.db_schema, max_size=4, migrate=False), stop)
    if pool is None:
        return 0
    try:
        projection = Projection(
            pool, settings.kafka_bootstrap, Topics(settings.topic_prefix), settings.consumer_group, settings.batch_max,
            settings.resident_users, session_timeout_ms=settings.kafka_session_timeout_ms,
            assignor=settings.partition_assignor, pipelined=settings.pipelined,
        )
        await projection.run(stop)
    finally:
        await pool.close()
    log.info("projection process stopped cleanly")
    return 0


def _main() -> int:
    from services.platform.process import run_child

    return run_child(_projection_only, "projection process")


if __name__ == "__main__":
    raise SystemExit(_main())
