"""Observability (issue 2): Prometheus text on the metrics port, and /healthz."""

from __future__ import annotations

import asyncio

import pytest

from services.platform.config import Settings
from services.platform.embedded import free_port
from tests.support.infra import wait_for
from tests.support.service import Publisher, running_service

pytestmark = pytest.mark.integration


async def _get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.decode().partition("\r\n\r\n")
    return int(head.split(" ", 2)[1]), body


async def test_metrics_count_applied_events_and_dead_letters_and_healthz_reports_ok(settings: Settings) -> None:
    port = free_port()
    settings = settings.replace(metrics_port=port)
    async with running_service(settings), Publisher(settings) as pub:
        first = await _get(port, "/metrics")
        before = _value(first, "unifier_events_applied_total")
        letters = _value(first, 'unifier_dead_letters_total{code="bad_json"}')  # counters are per process
        await pub.sdk({"eventId": "m-1", "type": "boot", "channelId": "ch_m", "occurredAt": 1, "veilId": "v", "platform": "web"})
        await pub.send(pub.topics.sdk_events, [b"not json"], key="ch_m")

        async def counted() -> bool:
            now = await _get(port, "/metrics")
            return _value(now, "unifier_events_applied_total") >= before + 1 and _value(now, 'unifier_dead_letters_total{code="bad_json"}') == letters + 1

        await wait_for(counted, message="metrics moved")
        status, body = await _get(port, "/healthz")
        assert status == 200 and '"status":"ok"' in body
        text = (await _get(port, "/metrics"))[1]
        for name in ("unifier_batch_seconds_bucket", "unifier_consumer_lag", "unifier_outbox_backlog"):
            assert name in text, name
        assert (await _get(port, "/nope"))[0] == 404


def _value(response: tuple[int, str], name: str) -> float:
    for line in response[1].splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0
