"""`make run` (`unifier run --demo`) on the embedded broker and PostgreSQL, as a
newcomer runs it: the demo's changes show up in the log, and a Ctrl-C stops everything
cleanly — the last batch relayed before the embedded servers are stopped."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.support.infra import private_dir, wait_for

pytestmark = pytest.mark.integration

UNIFIER = str(Path(sys.executable).with_name("unifier"))


# Not beside the other embedded-PostgreSQL test on another xdist worker: the wheel
# creates its system user with useradd on first use, and two first uses would race.
# relay_process: the relay in a process of its own (UNIFIER_RELAY_PROCESS, issue 14
# session 15) is handed the embedded servers the main process started (never starts its
# own), ignores the Ctrl-C that reaches the whole process group, and still publishes the
# last batch before the main process stops the embedded servers.
@pytest.mark.xdist_group("embedded-postgres")
@pytest.mark.parametrize("relay_process", ["false", "true"])
async def test_run_demo_on_embedded_infrastructure_publishes_merges_and_stops_cleanly_on_ctrl_c(relay_process: str) -> None:
    with private_dir("unifier-run-") as work:
        env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")}
        env |= {"UNIFIER_DATA_DIR": str(work / "data"), "UNIFIER_METRICS_PORT": "0", "UNIFIER_HTTP_ADDR": "127.0.0.1:0",
                "UNIFIER_RELAY_PROCESS": relay_process}
        log = work / "run.log"
        with log.open("wb") as out:
            # A session of its own, so the Ctrl-C below reaches its process group only.
            proc = await asyncio.create_subprocess_exec(
                UNIFIER, "run", "--demo", env=env, stdout=out, stderr=out, start_new_session=True
            )
        try:
            text = lambda: log.read_text(errors="replace")  # noqa: E731
            # U2 end to end: a later visitor logs in as a recurring member and is merged.
            await wait_for(lambda: " merged" in text() or proc.returncode is not None, timeout=90,
                           message="the demo's first merge published")
            assert proc.returncode is None, text()[-3000:]
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
            assert await asyncio.wait_for(proc.wait(), 60) == 0, text()[-3000:]
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        said = text()
        assert "user-changed" in said and "unifier stopped cleanly" in said
        # The embedded servers outlive the stop signal: nothing was cut off mid-drain.
        assert "WARNING" not in said and "Traceback" not in said, said[-3000:]
        assert ("relay process stopped cleanly" in said) == (relay_process == "true")
        assert not (work / "data" / "pg" / "postmaster.pid").exists()  # and they were stopped after
