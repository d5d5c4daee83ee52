"""Issue 14, session 15 (docs/decisions.md, "the relay's process"): with
`UNIFIER_RELAY_PROCESS=true`, `unifier run` publishes the outbox from a child process
(services/runtime/relay_process.py), keeping every guarantee of the in-process relay:

- messages are published, every user's versions without a gap, and `/metrics` and
  `/healthz` of the main process report the child's relay;
- the relay stops only after the projection committed its last batch: rows written
  before the SIGTERM are drained by the child, and the service exits 0;
- a SIGKILLed main process takes the child along (no orphan relaying beside the
  replacement), and a child that dies stops the service loudly (exit 1).
"""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import asyncpg
import psutil
import pytest

from contracts.topics import Topics
from services.platform.config import Settings
from services.replay import workload
from tests.integration.test_faults import (  # noqa: F401
    Service,
    _healthz,
    _waiting_on,
    assert_every_record_applied_or_dead_lettered_once,
    assert_state_is_a_rebuild,
    assert_versions_have_no_gaps,
    publish_rounds_unwaited,
    service,
    services,
)
from tests.integration.test_replay import (
    CHANNELS,
    applied_offsets,
    configure_hashed_channels,
    publish_rounds,
)
from tests.support.infra import wait_for
from tests.support.service import read_topic

pytestmark = pytest.mark.integration

ON = {"UNIFIER_RELAY_PROCESS": "true"}


def _relay_pid(svc: Service) -> int | None:
    found = re.search(r"relay in process (\d+)", svc.text())
    return int(found[1]) if found else None


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def _metric(port: int, name: str) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    body = (await reader.read()).decode()
    writer.close()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith(name))


async def test_the_relay_process_publishes_every_version_and_reports_to_the_main_process(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path, services: list[Service],  # noqa: F811
) -> None:
    """Published through the child: every user-changed version arrives (C: versions
    without a gap), the state is a rebuild's, and the main process's /healthz part
    `relay` and `unifier_published_total` are the child's."""
    await configure_hashed_channels(pool)
    svc = await service(settings, tmp_path, services, "run", **ON).start()
    child = await wait_for(lambda: _relay_pid(svc), timeout=30, message="the relay process started")
    assert psutil.Process(child).ppid() == svc.proc.pid  # type: ignore[union-attr]
    await publish_rounds(settings, pool, workload.mixed_rounds(2000, rounds=2, channels=CHANNELS, poison_every=101))
    await wait_for(lambda: _outbox_empty(pool), timeout=60, message="the outbox published")
    # Healthy once the child has reported since its last publication: on a loaded machine
    # a produce request may time out and be retried, /healthz saying degraded meanwhile
    # (the relay's backoff), so the part is awaited, not sampled once.
    seen: list[tuple[int, dict[str, object]]] = []
    try:
        await wait_for(lambda: _healthy_with_relay(svc.port(), seen), timeout=30,
                       message="/healthz 200 with its relay part true")
    except AssertionError as err:
        raise AssertionError(f"{err}; the last answer: {seen[-1]}") from None
    changes = await read_topic(settings, Topics(settings.topic_prefix).user_changed)
    assert_versions_have_no_gaps(changes)
    published = await wait_for(lambda: _published_at_least(svc.port(), len(changes)), timeout=10,
                               message="the child's count reported")
    assert published >= len(changes)
    assert await svc.stop() == 0, svc.text()[-3000:]
    assert _gone(child)
    assert svc.says("relay process stopped cleanly")
    await assert_state_is_a_rebuild(settings)


async def _healthy_with_relay(port: int, seen: list[tuple[int, dict[str, object]]]) -> bool:
    status, body = await _healthz(port)
    seen.append((status, body))
    return status == 200 and body["relay"] is True


async def _outbox_empty(pool: asyncpg.Pool) -> bool:
    return await pool.fetchval("SELECT count(*) FROM outbox") == 0


async def _published_at_least(port: int, n: int) -> float | None:
    got = await _metric(port, "unifier_published_total")
    return got if got >= n else None


async def test_sigterm_drains_through_the_relay_process_after_the_last_batch(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path, services: list[Service],  # noqa: F811
) -> None:
    """The relay stops only after the projection's last batch: a batch held up inside
    its transaction at SIGTERM commits, and its messages — written while the child was
    frozen, so only its drain can send them — leave before the exit (0)."""
    svc = await service(settings, tmp_path, services, "run", UNIFIER_BATCH_MAX="1000", **ON).start()
    child = await wait_for(lambda: _relay_pid(svc), timeout=30, message="the relay process started")
    blocker = await asyncpg.connect(settings.database_url)
    try:
        hold = blocker.transaction()
        await hold.start()
        await blocker.execute(f'LOCK TABLE "{settings.db_schema}".applied_events IN SHARE MODE')
        await publish_rounds_unwaited(settings, workload.mixed_rounds(3000, rounds=1, channels=CHANNELS)[0])
        await wait_for(lambda: _waiting_on(blocker, settings.db_schema), timeout=60, message="a batch in flight")
        psutil.Process(child).suspend()  # SIGSTOP: it relays nothing until its SIGTERM is seen
        svc.signal(signal.SIGTERM)
        with pytest.raises(TimeoutError):
            await svc.wait(timeout=1.0)  # still finishing its batch
        await hold.rollback()
        await wait_for(lambda: _at_least_one_applied(pool), timeout=60, message="the batch in flight committed")
        assert await pool.fetchval("SELECT count(*) FROM outbox") > 0  # nothing relayed yet: the child is frozen
        with pytest.raises(TimeoutError):
            await svc.wait(timeout=1.0)  # waits for the relay's drain
        psutil.Process(child).resume()
        assert await svc.wait() == 0, svc.text()[-3000:]
    finally:
        await blocker.close()
        if not _gone(child):
            psutil.Process(child).resume()
    assert 0 < await applied_offsets(pool) <= 1000
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0  # drained by the child before exit
    assert _gone(child)
    await assert_every_record_applied_or_dead_lettered_once(settings, pool)


_SLOW_START = """import os, time
# Test fault injection: the relay's process starts slowly (as on a loaded machine), before
# it sets its SIGTERM handler. Only that process: every other one starts as usual.
with open("/proc/self/cmdline", "rb") as f:
    if b"services.runtime.relay_process" in f.read():
        time.sleep(float(os.environ["TEST_RELAY_START_S"]))
"""


async def test_a_service_stopped_while_its_relay_process_starts_waits_for_it_and_exits_0(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path, services: list[Service],  # noqa: F811
) -> None:
    """The relay's process sets its SIGTERM handler only once its interpreter and imports
    are up (seconds on a loaded machine; CI once saw exit -15, "the relay's process
    stopped with exit -15"): a service stopped before that waits for the child's first
    report before signalling it, so the child drains and the service exits 0."""
    (tmp_path / "sitecustomize.py").write_text(_SLOW_START)
    svc = await service(settings, tmp_path, services, "slow", PYTHONPATH=str(tmp_path), TEST_RELAY_START_S="4", **ON).start()
    child = await wait_for(lambda: _relay_pid(svc), timeout=30, message="the relay process started")
    svc.signal(signal.SIGTERM)  # the child is still in its slow start
    assert await svc.wait() == 0, svc.text()[-3000:]
    assert not svc.says("stopped with exit"), svc.text()[-3000:]
    assert _gone(child)


async def _at_least_one_applied(pool: asyncpg.Pool) -> bool:
    return await applied_offsets(pool) > 0


async def test_a_killed_main_process_takes_the_relay_along_and_a_dying_relay_stops_the_service(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path, services: list[Service],  # noqa: F811
) -> None:
    """No orphan relay beside the main process's replacement; no service that applies
    facts but publishes nothing while looking alive (exit 1, for the process manager)."""
    svc = await service(settings, tmp_path, services, "a", **ON).start()
    child = await wait_for(lambda: _relay_pid(svc), timeout=30, message="the relay process started")
    psutil.Process(child).send_signal(signal.SIGKILL)
    assert await svc.wait() == 1, svc.text()[-3000:]
    assert svc.says("the relay's process")

    again = await service(settings, tmp_path, services, "b", **ON).start()
    child = await wait_for(lambda: _relay_pid(again), timeout=30, message="the relay process started")
    again.signal(signal.SIGKILL)
    assert await again.wait() == -signal.SIGKILL
    await wait_for(lambda: _gone(child), timeout=30, message="the relay process stopped with its parent")
