"""Serving the API on uvicorn inside our own event loop (for `unifier api` and
`unifier run`): the process's signal handling stays the caller's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

log = logging.getLogger("unifier.api")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The composition root owns SIGTERM/SIGINT and stops us through `stop`.
        yield


class ApiStartError(RuntimeError):
    """The API could not listen (address in use, not permitted) or start its app."""


def split_address(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


async def serve(
    app: FastAPI, addr: str, stop: asyncio.Event, *, bound: asyncio.Future[str] | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Serve `app` on `addr` (host:port; port 0 picks a free one) until `stop`; in-flight
    requests are finished. `bound` receives the address actually listened on. `sock`: a
    socket already listening on `addr` (a worker of `unifier api --workers N`, see
    workers.py) instead of binding one."""
    host, port = split_address(addr)
    config = uvicorn.Config(
        # log_config=None: uvicorn's loggers go to the process's JSON handler (platform/logs),
        # scrubbed like every line, instead of handlers of their own.
        app, host=host, port=port, lifespan="on", log_level="warning", access_log=False, log_config=None,
        http="httptools", loop="none", timeout_graceful_shutdown=10, server_header=False,
    )
    server = _Server(config)

    async def run() -> None:
        try:
            await server.serve(sockets=[sock] if sock is not None else None)
        except SystemExit:  # uvicorn's answer to a port taken or a failed lifespan start
            raise ApiStartError(f"the HTTP API could not start on {addr} (UNIFIER_HTTP_ADDR); see the log") from None

    task = asyncio.create_task(run(), name="http-api")
    try:
        while not server.started:  # uvicorn has no event for it
            if task.done():
                task.result()  # the start-up failure (port taken, database away …)
                raise RuntimeError("the HTTP API stopped while starting")
            if stop.is_set():  # told to stop before it listens: no request to finish
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return
            await asyncio.sleep(0.01)
        name = server.servers[0].sockets[0].getsockname()
        address = f"{name[0]}:{name[1]}"
        log.info("HTTP API on http://%s (OpenAPI at /openapi.json, docs at /docs)", address)
        if bound is not None and not bound.done():
            bound.set_result(address)
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([task, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if task.done():
            task.result()  # it ended by itself: say why (an error) rather than stop quietly
    finally:
        server.should_exit = True
        if not task.done():
            await task
