"""Drive `unifier` commands as a person would: in a child process, with the test's
broker, database, topic prefix and schema in its environment."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from services.platform.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    assert settings.kafka_bootstrap and settings.database_url
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap,
        "DATABASE_URL": settings.database_url,
        "UNIFIER_TOPIC_PREFIX": settings.topic_prefix,
        "UNIFIER_DB_SCHEMA": settings.db_schema,
        "UNIFIER_CONSUMER_GROUP": settings.consumer_group,
        "UNIFIER_PARTITIONS": str(settings.partitions),
        "UNIFIER_DATA_DIR": str(settings.data_dir),
        "UNIFIER_HTTP_ADDR": "127.0.0.1:0",  # `unifier run` serves the API: never on a shared port
        "UNIFIER_KAFKA_SESSION_TIMEOUT_MS": str(settings.kafka_session_timeout_ms),  # joins in 2 s, not 5
        **extra,
    }


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        lines = self.out.strip().splitlines()
        assert lines, f"no output; stderr: {self.err}"
        return orjson.loads(lines[-1])

    def lines(self) -> list[Any]:
        return [orjson.loads(line) for line in self.out.strip().splitlines()]


async def unifier(settings: Settings, *args: str, timeout: float = 120, **env: str) -> Ran:  # noqa: ASYNC109
    """Run `unifier ARGS…` to completion (as `python -m services.runtime.cli`)."""
    proc = await start_unifier(settings, *args, **env)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


async def start_unifier(settings: Settings, *args: str, **env: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.runtime.cli", *args, env=cli_env(settings, **env), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL: no handler runs, nothing is cleaned up — a crash."""
    proc.send_signal(signal.SIGKILL)
    await proc.wait()


def write_csv(path: Path, text: str, *, bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path
