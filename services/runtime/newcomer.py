"""`make run`'s welcome: an admin API key for the embedded default, kept in a file only
its owner can read, and how to call the API with it.

The key is created only when the file does not hold a live key already (revoked or
from another database: a new one), so restarting keeps the key a newcomer has pasted
somewhere, and the key list does not grow by one per start.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from services.platform.config import Settings
from services.store import api_keys
from services.store.pool import create_pool

NAME = "newcomer"


async def greet(settings: Settings, key_file: Path, address: str, channel: str) -> None:
    """`settings`: with the database in use (run_service's `api_started` hook gives them)."""
    assert settings.database_url is not None
    stored = key_file.read_text().strip() if key_file.is_file() else ""  # noqa: ASYNC240 - a line, once
    async with contextlib.AsyncExitStack() as stack:
        pool = await create_pool(settings.database_url, settings.db_schema, max_size=1)
        stack.push_async_callback(pool.close)
        created = False
        if not stored or await api_keys.authenticate(pool, stored) is None:
            await api_keys.revoke_key(pool, NAME)  # its file was lost: the name is free again
            stored, _ = await api_keys.create_key(pool, "admin", None, NAME)
            key_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(stored + "\n")
            os.chmod(key_file, 0o600)
            created = True
    lines = [
        "",
        f"HTTP API on http://{address}  (OpenAPI: http://{address}/docs)",
        f"staff console: http://{address}/console/c/{channel}/customers  (sign in with the key below)",
        f"staff console on http://{address}/console/c/{channel}/customers  (sign in with the admin key below)",
        f"admin API key ({'new, ' if created else ''}kept in {key_file}, mode 0600):",
        f"  {stored}" if created else f"  $(cat {key_file})",
        "try:",
        f'  curl -s -H "Authorization: Bearer $(cat {key_file})" "http://{address}/v1/channels/{channel}/users?limit=5"',
        f'  curl -s -X PUT -H "Authorization: Bearer $(cat {key_file})" -H "Content-Type: application/json" \\',
        '       -d \'{"profile": {"email": "new@example.com"}, "name": "New Member"}\' \\',
        f'       "http://{address}/v1/channels/{channel}/members/m-new?wait=5"',
        "",
    ]
    print("\n".join(lines), flush=True)
