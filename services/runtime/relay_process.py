"""`UNIFIER_RELAY_PROCESS=true`: `unifier run` publishes the outbox from a process of its own.

Why: during an import the main process's one thread is the bottleneck (the projection
~0.8 of a core), and the relay shares it (~10 µs of CPU a message); in a process of its
own the relay runs on another core. Measured: docs/decisions.md, "Issue 14, session 15:
the relay's process".

How (as services/runtime/projections.py runs the extra projection processes): the main
process starts `python -m services.runtime.relay_process` and hands it its settings (the
embedded broker's and database's addresses filled in: embedded ones are started once,
by the main process) on stdin, not in its environment. The child runs `Relay` exactly as
the main process would have, with the same advisory lock (one relay per schema: order
and one publication per outbox id hold, with several instances too), until SIGTERM; then
it drains what the last batches wrote and exits 0 (a child still starting is first given
up to `START_S` to report: it sets its SIGTERM handler before its first report, and a
SIGTERM before that would kill it undrained, exit -15). It ignores SIGINT (a Ctrl-C reaches
the whole process group): it stops only when the main process says so, after the
projection (and the extra projection processes) committed their last batches.

Supervision: the child reports its health and its relay metrics (published, parked, the
backlog and parked gauges) as one JSON line on its stdout about every
`REPORT_S`; the main process's `/healthz` part `relay` is "the child is running and
said it relays less than `SILENT_S` ago", its `/metrics` carries the child's counts. A child that exits while the
service is not stopping stops the service with exit 1 (`RelayProcessDied`), as a dying
extra projection process does: no service that applies facts but publishes nothing,
looking half healthy; the process manager restarts the whole. A main process that dies,
even by SIGKILL, takes the child along (PR_SET_PDEATHSIG: SIGTERM, so it drains and
exits). A kill -9 of either loses nothing: unsent rows stay in the outbox, and a re-sent
one is deduplicated by consumers as ever (relay.py, at least once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import orjson

from services.platform import metrics
from services.platform.config import Settings
from services.runtime.projections import settings_bytes

log = logging.getLogger("unifier")

REPORT_S = 0.25  # how often the child reports its health and metrics
SILENT_S = 10.0  # a child that has not reported for this long is not healthy (hung)
START_S = 30.0  # how long a stopping service waits for a child still starting to report


class RelayProcessDied(RuntimeError):
    """The relay's process exited while the service was not stopping."""


def child_settings(settings: Settings) -> Settings:
    """What the relay's process runs with: the broker and database in use (no embedded
    ones), no projection processes of its own."""
    return settings.replace(projection_processes=1, embedded=False)


class _Reported:
    """The child's last report, applied to this process's metrics (counters by delta)."""

    def __init__(self) -> None:
        self.healthy = False
        self.at = 0.0  # the event loop's clock at the last report
        self._counted: dict[tuple[str, ...], float] = {}
        self.first = asyncio.Event()  # set by the first report (the module's docstring)

    def fresh(self) -> bool:
        """Healthy as of its last report, which is recent."""
        return self.healthy and asyncio.get_running_loop().time() - self.at < SILENT_S

    def apply(self, report: dict[str, Any], at: float = 0.0) -> None:
        self.healthy = bool(report.get("healthy"))
        self.at = at
        self.first.set()
        metrics.OUTBOX_BACKLOG.set(report.get("backlog", 0))
        metrics.OUTBOX_PARKED.set(report.get("parked_messages", 0))
        for topic, total in report.get("published", {}).items():
            self._add(("published", topic), total, metrics.PUBLISHED.labels(topic=topic))
        for topic, code, total in report.get("parked", []):
            self._add(("parked", topic, code), total, metrics.PARKED.labels(topic=topic, code=code))

    def _add(self, key: tuple[str, ...], total: float, counter: Any) -> None:
        delta = total - self._counted.get(key, 0.0)
        if delta > 0:
            counter.inc(delta)
            self._counted[key] = total


async def run_relay_process(
    settings: Settings, stop: asyncio.Event, parts: dict[str, Callable[[], bool]],
) -> None:
    """Start the relay's process and watch it until `stop` (the service sets it after the
    projection's last batch); then SIGTERM it and wait while it drains. Raises
    RelayProcessDied when it exits first. `parts["relay"]` reports it."""
    reported = _Reported()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.runtime.relay_process",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    parts["relay"] = lambda: proc.returncode is None and reported.fresh()
    reading: asyncio.Task[None] | None = None
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(settings_bytes(child_settings(settings)))
        await proc.stdin.drain()
        proc.stdin.close()
        log.info("relay in process %d (UNIFIER_RELAY_PROCESS)", proc.pid)
        reading = asyncio.create_task(_read_reports(proc.stdout, reported), name="relay-reports")
        exited = asyncio.ensure_future(proc.wait())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([exited, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not stop.is_set():
            raise RelayProcessDied(f"the relay's process {proc.pid} exited ({proc.returncode}); stopping the service")
    finally:
        if proc.returncode is None and not reported.first.is_set():
            # Still starting (a loaded machine's interpreter start and imports take
            # seconds): its SIGTERM handler is set when it first reports.
            first = asyncio.ensure_future(reported.first.wait())
            await asyncio.wait([first, asyncio.ensure_future(proc.wait())], timeout=START_S,
                               return_when=asyncio.FIRST_COMPLETED)
            first.cancel()
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        # It drains what the last batches wrote, then exits.
        await asyncio.shield(proc.wait())
        if reading is not None:
            await asyncio.shield(reading)  # its last report: the drain's counts
    if proc.returncode != 0:
        raise RelayProcessDied(f"the relay's process {proc.pid} stopped with exit {proc.returncode}")


async def _read_reports(stdout: asyncio.StreamReader, reported: _Reported) -> None:
    while line := await stdout.readline():
        try:
            reported.apply(orjson.loads(line), asyncio.get_running_loop().time())
        except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
            log.warning("the relay's process wrote an unreadable report: %r", line[:200])


# -- the child ---------------------------------------------------------------------------


def _report(relay_healthy: bool) -> bytes:
    published: dict[str, float] = {}
    parked: list[tuple[str, str, float]] = []
    for family in metrics.PUBLISHED.collect():
        for s in family.samples:
            if s.name.endswith("_total"):
                published[s.labels["topic"]] = s.value
    for family in metrics.PARKED.collect():
        for s in family.samples:
            if s.name.endswith("_total"):
                parked.append((s.labels["topic"], s.labels["code"], s.value))
    backlog = next(iter(metrics.OUTBOX_BACKLOG.collect())).samples[0].value
    parked_messages = next(iter(metrics.OUTBOX_PARKED.collect())).samples[0].value
    return orjson.dumps({
        "healthy": relay_healthy, "backlog": backlog, "parked_messages": parked_messages,
        "published": published, "parked": parked,
    }) + b"\n"


async def _relay_only(settings: Settings) -> int:
    """The relay alone until SIGTERM (SIGINT ignored: see the module's docstring)."""
    from services.platform import gc_tuning
    from services.relay.relay import Relay
    from services.store.pool import create_pool

    from .service import until_up

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    gc_tuning.tune()
    assert settings.kafka_bootstrap and settings.database_url  # filled in by the main process
    database_url = settings.database_url
    out = sys.stdout.fileno()
    os.set_blocking(out, False)  # a report never holds up the relay
    relay: Relay | None = None

    def report() -> None:
        # One write of a line under PIPE_BUF: on a pipe, all of it or nothing. Nothing
        # when the main process is behind reading: the next report carries the totals.
        with contextlib.suppress(BlockingIOError):
            os.write(out, _report(relay is not None and relay.healthy))

    async def reporting() -> None:
        while not stop.is_set():
            report()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REPORT_S)

    reporter = asyncio.create_task(reporting(), name="relay-reports")
    try:
        # The main process migrated the schema before starting us.
        pool = await until_up("database", lambda: create_pool(database_url, settings.db_schema, max_size=2, migrate=False), stop)
        if pool is None:
            return 0
        try:
            relay = Relay(
                pool, settings.kafka_bootstrap, f"unifier-relay:{settings.db_schema}",
                idempotence=settings.kafka_idempotence, max_message_bytes=settings.max_message_bytes,
            )
            await relay.run(stop)
        finally:
            await pool.close()
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        with contextlib.suppress(BrokenPipeError):
            report()
    log.info("relay process stopped cleanly")
    return 0


def _main() -> int:
    from services.platform.process import run_child

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches us too: the main process says when
    return run_child(_relay_only, "relay process")


if __name__ == "__main__":
    raise SystemExit(_main())
