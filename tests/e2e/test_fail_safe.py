"""Issue 11 item 6: with UNIFIER_EMBEDDED=0 (as in the container image) a missing broker
or database address stops `unifier` at once, naming the variable; nothing is started."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

UNIFIER = str(Path(sys.executable).with_name("unifier"))


@pytest.mark.parametrize("command", [["run"], ["digest"], ["dead-letters", "list"]])
async def test_embedded_off_and_no_addresses_exits_2_without_starting_a_server(command: list[str], tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")}
    env |= {"UNIFIER_EMBEDDED": "0", "UNIFIER_DATA_DIR": str(tmp_path / "data"), "UNIFIER_METRICS_PORT": "0"}
    proc = await asyncio.create_subprocess_exec(
        UNIFIER, *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)

    assert proc.returncode == 2, err.decode()
    assert "UNIFIER_EMBEDDED=0" in err.decode() and "KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL" in err.decode()
    assert not (tmp_path / "data").exists()  # no broker log, no PostgreSQL data directory
