"""Prometheus metrics and the `/metrics` + `/healthz` HTTP endpoint.

A tiny asyncio HTTP server rather than a framework: two fixed paths, no dependency
beyond prometheus_client, and it stops with the service's event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger("unifier.metrics")

EVENTS_APPLIED = Counter("unifier_events_applied_total", "Inbound facts applied to the state")
DEAD_LETTERS = Counter("unifier_dead_letters_total", "Inbound records dead-lettered", ["code"])
CONFLICTS = Counter("unifier_batch_conflicts_total", "Batches retried after a concurrent change (G3)")
BATCH_SECONDS = Histogram(
    "unifier_batch_seconds", "Time to apply one batch (validate, load, decide, commit)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CONSUMER_LAG = Gauge("unifier_consumer_lag", "Records behind the partition end (approximate on tansu)", ["topic", "partition"])
OUTBOX_BACKLOG = Gauge("unifier_outbox_backlog", "Outbox messages waiting to be published")
PUBLISHED = Counter("unifier_published_total", "Messages published by the relay", ["topic"])
PARKED = Counter("unifier_outbox_parked_total", "Outbox messages the broker refused, parked by the relay", ["topic", "code"])
RESIDENT_USERS = Gauge("unifier_resident_users", "Users the projection holds in memory between batches")
RESIDENT_LOOKUPS = Counter(
    "unifier_resident_lookups_total", "Ids and identity keys a batch needed, by where they were found", ["found"])
RESIDENT_DROPS = Counter("unifier_resident_drops_total", "Times the projection dropped the users it held (rebalance, failed batch, another writer)")
OUTBOX_PARKED = Gauge("unifier_outbox_parked_messages", "Parked outbox messages waiting for `unifier outbox parked retry`")

Health = Callable[[], dict[str, bool]]


async def serve(port: int, health: Health, *, host: str = "0.0.0.0", read_timeout: float = 5.0) -> asyncio.Server:
    """Start the endpoint on `host:port`; port 0 picks a free one (see `server.sockets`).

    A client has `read_timeout` seconds to send its request head (at most 64 KiB, the
    stream's limit): a slow or silent connection is closed rather than held open."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), read_timeout)
            path = request.split(b" ", 2)[1].decode() if request.count(b" ") >= 2 else "/"
            if path.startswith("/metrics"):
                status, ctype, body = 200, CONTENT_TYPE_LATEST, generate_latest()
            elif path.startswith("/healthz"):
                checks = health()
                ok = all(checks.values())
                status, ctype = (200 if ok else 503), "application/json"
                body = orjson.dumps({"status": "ok" if ok else "degraded", **checks})
            else:
                status, ctype, body = 404, "text/plain", b"not found\n"
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode() + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    log.info("metrics and health on %s:%d", host, server.sockets[0].getsockname()[1])
    return server
