"""`unifier api --workers N`: N processes serving the API on one listening socket.

Why processes: a read costs the API a few hundred µs of Python CPU (docs/decisions.md,
"HTTP API: reads measured"), so one process is bound to one core; the API keeps no state
of its own between requests (PostgreSQL holds it; the auth cache is per process and
short, see auth.CACHE_S), so any process may answer any request.

How: this process (the supervisor) resolves the broker and the database (embedded ones
are started here, once), binds the address, and starts N workers
(`python -m services.api.workers`) that inherit the listening socket and accept on it;
the kernel hands each new connection to one of them. The supervisor serves nothing. On
SIGTERM/SIGINT it stops every worker (each finishes its in-flight requests); when a
worker dies by itself, it stops the others and exits 1, for the process manager to
restart the whole (no half-capacity API that looks healthy).

One thing is not shared: the console's import drafts sit on the answering process's
local disk (UNIFIER_DATA_DIR/console-uploads); the workers of one `unifier api` share
it, API processes on several machines need sticky sessions for /console/imports or a
shared data folder (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys

from services.platform.config import Settings
from services.platform.process import die_with_parent

from .server import split_address

log = logging.getLogger("unifier.api")

FD_VARIABLE = "UNIFIER_API_LISTEN_FD"
"""Set by the supervisor for its workers only: the inherited listening socket."""


def listen(addr: str) -> socket.socket:
    host, port = split_address(addr)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


async def supervise(settings: Settings, workers: int, stop: asyncio.Event) -> int:
    """Run `workers` API processes on `settings.http_addr` until `stop`; 1 when one died."""
    from services.platform.embedded import infrastructure

    async with infrastructure(settings) as (bootstrap, database_url):
        sock = listen(settings.http_addr)
        host, port = sock.getsockname()[:2]
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "DATABASE_URL": database_url,
               FD_VARIABLE: str(sock.fileno())}
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-m", "services.api.workers", env=env, pass_fds=(sock.fileno(),),
            )
            for _ in range(workers)
        ]
        sock.close()  # the workers hold it now
        log.info("HTTP API on http://%s:%s with %d worker processes", host, port, workers)
        waits = [asyncio.ensure_future(p.wait()) for p in procs]
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([*waits, stopping], return_when=asyncio.FIRST_COMPLETED)
        died = not stop.is_set()
        if died:
            log.error("an API worker exited (%s); stopping the others", [p.returncode for p in procs])
        for p in procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        await asyncio.gather(*waits)
        stopping.cancel()
        return 1 if died else 0


async def _worker() -> int:
    from services.platform import gc_tuning, kafka, logs

    from .app import create_app
    from .server import serve

    settings = Settings.from_env()
    logs.setup(settings.log_level or "INFO", settings.log_format)
    kafka.use(settings)
    sock = socket.socket(fileno=int(os.environ[FD_VARIABLE]))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    app = create_app(settings)
    gc_tuning.tune()  # a request allocates thousands of objects, nearly none in cycles
    await serve(app, settings.http_addr, stop, sock=sock)
    return 0


if __name__ == "__main__":
    import uvloop

    die_with_parent()
    raise SystemExit(uvloop.run(_worker()))
