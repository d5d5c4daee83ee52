"""Issue 11 item 6: the metrics/health listener's address is configurable and a client
that does not send its request in time is disconnected (no idle connection piles up)."""

from __future__ import annotations

import asyncio
import time

from services.platform import metrics


async def test_a_silent_client_is_disconnected_after_the_read_timeout_and_others_are_served() -> None:
    server = await metrics.serve(0, lambda: {"database": True}, host="127.0.0.1", read_timeout=0.3)
    host, port = server.sockets[0].getsockname()[:2]
    try:
        assert host == "127.0.0.1"
        silent_reader, silent_writer = await asyncio.open_connection(host, port)
        started = time.monotonic()
        assert await asyncio.wait_for(silent_reader.read(), 5) == b""  # closed by the server
        assert 0.25 <= time.monotonic() - started < 5
        silent_writer.close()

        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200 OK") and b'"status":"ok"' in answer
    finally:
        server.close()
        await server.wait_closed()
