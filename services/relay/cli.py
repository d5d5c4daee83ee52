"""`unifier outbox parked list|retry`: the messages the broker refused (relay.py, "parked").

`list` prints one JSON line per parked message, oldest first: where it was going, why it
was refused, its size, and with `--with-value` the message itself (it holds personal
data: print it only to inspect it). `retry` puts messages back at the end of the outbox
(after the broker's limit or UNIFIER_MAX_MESSAGE_BYTES was raised, or the topic fixed);
the running relay publishes them at once, or parks them again with a new id if the
broker still refuses them. A retried `user-changed` arrives after later versions of
the same user: consumers drop it as stale (contract: `version`), so nothing regresses.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import asyncpg
import orjson

from services.platform.args import positive_int
from services.platform.config import Settings
from services.store.pool import database


def define(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="outbox_command", required=True)
    parked = sub.add_parser("parked", help="messages parked because the broker refused them").add_subparsers(
        dest="parked_command", required=True
    )
    ls = parked.add_parser("list", help="print one JSON line per parked message, oldest first")
    ls.add_argument("--limit", type=positive_int, help="print at most N messages")
    ls.add_argument("--with-value", action="store_true", help="include the message (personal data: inspect only)")
    ls.set_defaults(handler=_list)
    retry = parked.add_parser("retry", help="put parked messages back into the outbox (all, or --id)")
    retry.add_argument("--id", type=positive_int, action="append", dest="ids", metavar="ID", help="only this one (repeatable)")
    retry.set_defaults(handler=_retry)


async def parked_messages(pool: asyncpg.Pool, *, limit: int | None = None, with_value: bool = False) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        """SELECT id, topic, key, value, code, reason, parked_at, octet_length(value) AS bytes
           FROM outbox_parked ORDER BY id LIMIT $1""",
        limit,
    )
    out = []
    for r in rows:
        item: dict[str, Any] = {
            "id": r["id"], "topic": r["topic"], "key": r["key"], "bytes": r["bytes"] or 0,
            "code": r["code"], "reason": r["reason"], "parkedAt": int(r["parked_at"].timestamp() * 1000),
        }
        if with_value:
            item["value"] = None if r["value"] is None else bytes(r["value"]).decode("utf-8", "backslashreplace")
        out.append(item)
    return out


async def retry_parked(pool: asyncpg.Pool, ids: list[int] | None = None) -> int:
    """Move parked messages (all, or `ids`) back to the end of the outbox, in their order;
    how many. The relay is woken by the same notification a projection commit sends."""
    async with pool.acquire() as conn, conn.transaction():
        moved = await conn.fetchval(
            """WITH moved AS (
                   DELETE FROM outbox_parked WHERE $1::bigint[] IS NULL OR id = ANY($1::bigint[])
                   RETURNING id, topic, key, value),
               queued AS (INSERT INTO outbox (topic, key, value) SELECT topic, key, value FROM moved ORDER BY id RETURNING 1)
               SELECT count(*) FROM queued""",
            ids,
        )
        await conn.execute("NOTIFY unifier_outbox")
    return int(moved)


async def _list(settings: Settings, args: argparse.Namespace) -> int:
    async with database(settings) as pool:
        for item in await parked_messages(pool, limit=args.limit, with_value=args.with_value):
            sys.stdout.write(orjson.dumps(item).decode() + "\n")
    sys.stdout.flush()
    return 0


async def _retry(settings: Settings, args: argparse.Namespace) -> int:
    async with database(settings) as pool:
        n = await retry_parked(pool, args.ids)
    sys.stdout.write(orjson.dumps({"retried": n}).decode() + "\n")
    return 0
