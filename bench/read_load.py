"""The reads' load generator of bench/api_bench.py, in a process of its own so that its
CPU is measured apart from the API's (the machine has 2 cores; the generator must not
be what is measured, nor hide what it costs).

Open loop: request i is due at start + i/rate whatever happened before, and its latency
counts from that moment, waiting for a free connection included (no coordinated
omission). Each keep-alive connection carries one request at a time (HTTP/1.1 without
pipelining); past `--connections` a request waits for a free one. Built on bare
asyncio protocols under uvloop: ~20-30 µs of CPU per request, against ~100 for the
StreamReader client of api_bench.py.

Reads one JSON object on stdin: {"host", "port", "rate", "seconds", "connections",
"key", "requests": [[name, path], ...]} (cycled); prints one JSON object: per name
{latencies_ms: [...], due_s: [...] (when each was due), statuses: {...}, errors}, plus "cpu_s" (this process's user +
system CPU) and "duration_s". A request is an error unless it answers 200 with a body
holding `"memberId"`.
"""

from __future__ import annotations

import asyncio
import collections
import json
import resource
import sys
import time
from typing import Any

import uvloop


class Conn(asyncio.Protocol):
    """One keep-alive connection: send a request, call `done(status, body)` when the
    whole answer (Content-Length framed) is in."""

    def __init__(self, owner: Load) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.job: tuple[str, float] | None = None
        self.ready = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.ready.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.lost(self)

    def send(self, name: str, due: float, raw: bytes) -> None:
        self.job = (name, due)
        assert self.transport is not None
        self.transport.write(raw)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).lower()
        length, at = 0, head.find(b"content-length:")
        if at >= 0:
            eol = head.find(b"\r\n", at)
            length = int(head[at + 15:eol if eol >= 0 else len(head)])
        if len(self.buf) < end + 4 + length:
            return
        status = int(self.buf[9:12])
        body = bytes(self.buf[end + 4:end + 4 + length])
        del self.buf[:end + 4 + length]
        job, self.job = self.job, None
        if job is not None:
            self.owner.answered(self, job, status, body)


class Load:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.loop = asyncio.get_running_loop()
        self.idle: collections.deque[Conn] = collections.deque()
        self.waiting: collections.deque[tuple[str, float, bytes]] = collections.deque()
        self.opened = 0
        self.outstanding = 0
        self.latencies: dict[str, list[float]] = collections.defaultdict(list)
        self.due_s: dict[str, list[float]] = collections.defaultdict(list)  # when each was due, from the start
        self.start = 0.0
        self.statuses: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.errors: collections.Counter[str] = collections.Counter()
        self.finished = asyncio.Event()

    def submit(self, name: str, due: float, raw: bytes) -> None:
        self.outstanding += 1
        if self.idle:
            self.idle.pop().send(name, due, raw)
        else:
            self.waiting.append((name, due, raw))
            if self.opened < self.spec["connections"]:
                self.opened += 1
                self.loop.create_task(self.open())

    async def open(self) -> None:
        try:
            _, conn = await self.loop.create_connection(lambda: Conn(self), self.spec["host"], self.spec["port"])
        except OSError:
            self.opened -= 1
            if self.waiting:  # count one waiting request as failed, so the run ends
                name, due, _ = self.waiting.popleft()
                self.record(name, due, "connect_failed", False)
            return
        await conn.ready
        self.free(conn)

    def free(self, conn: Conn) -> None:
        if self.waiting:
            name, due, raw = self.waiting.popleft()
            conn.send(name, due, raw)
        else:
            self.idle.append(conn)

    def answered(self, conn: Conn, job: tuple[str, float], status: int, body: bytes) -> None:
        self.record(job[0], job[1], str(status), status == 200 and b'"memberId"' in body)
        self.free(conn)

    def lost(self, conn: Conn) -> None:
        self.opened -= 1
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.job is not None:
            self.record(conn.job[0], conn.job[1], "connection_lost", False)

    def record(self, name: str, due: float, status: str, ok: bool) -> None:
        self.latencies[name].append((time.perf_counter() - due) * 1000)
        self.due_s[name].append(due - self.start)
        self.statuses[name][status] += 1
        if not ok:
            self.errors[name] += 1
        self.outstanding -= 1
        if self.outstanding == 0 and self.finished_sending:
            self.finished.set()

    finished_sending = False

    async def run(self) -> dict[str, Any]:
        spec = self.spec
        head = f"Host: bench\r\nAuthorization: Bearer {spec['key']}\r\n\r\n"
        requests = [(name, f"GET {path} HTTP/1.1\r\n{head}".encode()) for name, path in spec["requests"]]
        total, rate = int(spec["rate"] * spec["seconds"]), float(spec["rate"])
        # perf_counter, not loop.time(): uvloop's clock moves in whole milliseconds.
        start = self.start = time.perf_counter() + 0.05
        i = 0
        while i < total:
            now = time.perf_counter()
            while i < total and start + i / rate <= now:
                name, raw = requests[i % len(requests)]
                self.submit(name, start + i / rate, raw)
                i += 1
            if i < total:
                # At least 1 ms: uvloop's timers count whole milliseconds, and a shorter
                # sleep returns at once (a busy loop). Requests due meanwhile go out
                # together at the wake, their latency counted from when each was due.
                await asyncio.sleep(max(0.001, start + i / rate - time.perf_counter()))
        self.finished_sending = True
        if self.outstanding:
            try:
                await asyncio.wait_for(self.finished.wait(), 30)
            except TimeoutError:
                pass
        duration = time.perf_counter() - start
        out: dict[str, Any] = {"duration_s": duration, "connections": self.opened, "unanswered": self.outstanding}
        for name in self.latencies:
            out[name] = {"latencies_ms": self.latencies[name], "due_s": self.due_s[name],
                         "statuses": dict(self.statuses[name]), "errors": self.errors[name]}
        return out


async def main() -> None:
    spec = json.loads(sys.stdin.read())
    before = resource.getrusage(resource.RUSAGE_SELF)
    result = await Load(spec).run()
    after = resource.getrusage(resource.RUSAGE_SELF)  # the run only: not start-up nor the report
    result["cpu_s"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    sys.stdout.write(json.dumps(result))


if __name__ == "__main__":
    uvloop.run(main())
