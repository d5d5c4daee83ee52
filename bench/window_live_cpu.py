"""The eventId window's statements in the live bench: projection_bench.py run as is, with
repository.applied_window, save_applied and raise_clocks wrapped to read their backend's
CPU around each call (/proc/<pid>/schedstat: run it on the database's machine). Only the
projection that runs in this process is counted (the resident variant), not the child
processes of the load run. Prints µs of backend CPU per pair looked up, per eventId
remembered, per eventId whose clock is raised (issue 14, session 13: the wall times of
projection_bench's stages move with the machine's load more than these).

    UNIFIER_CORE=compiled .venv/bin/python bench/window_live_cpu.py --events 60000 --naive-events 0 \\
        --duration 20 --variants resident --instances 1 --instance-modes pipelined
    cd ../base && UNIFIER_CORE=compiled .venv/bin/python ../window/bench/window_live_cpu.py …   # another tree

A benchmark, not a test.
"""

from __future__ import annotations

import atexit
import functools
import runpy
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path.cwd()  # the tree measured: run it from there (a base worktree runs this copy as is)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from services.store import repository as repo  # noqa: E402  (the measured tree's)

SPENT: dict[str, list[int]] = {"applied_window": [0, 0], "save_applied": [0, 0], "raise_clocks": [0, 0]}


def backend_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def wrap(name: str) -> None:
    orig: Callable[..., Awaitable[Any]] = getattr(repo, name)

    @functools.wraps(orig)
    async def counted(conn: Any, items: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
        pid = conn.get_server_pid()
        t = backend_ns(pid)
        try:
            return await orig(conn, items, *args, **kwargs)
        finally:
            SPENT[name][0] += backend_ns(pid) - t
            SPENT[name][1] += len(items)

    setattr(repo, name, counted)


@atexit.register
def show() -> None:
    print("window statements, backend CPU: " + ", ".join(
        f"{k} {ns / max(n, 1) / 1000:.2f} µs per item ({n:,} items)" for k, (ns, n) in SPENT.items()))


if __name__ == "__main__":
    for name in SPENT:
        wrap(name)
    sys.argv = [str(ROOT / "bench" / "projection_bench.py"), *sys.argv[1:]]
    runpy.run_path(sys.argv[0], run_name="__main__")
