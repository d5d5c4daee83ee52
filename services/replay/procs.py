"""The replay's worker processes, started and reaped (`shards.py` hands them their jobs).

A module of its own, importing nothing heavy: `unifier replay` starts its workers
before it imports the rebuild (`cli._replay`), so that their interpreters start
(~0.35–0.6 s of imports each) while it imports and prepares (issue 14, session 14).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

_PHASES = bool(os.environ.get("UNIFIER_REPLAY_PHASES"))


def phase(name: str) -> None:
    """With UNIFIER_REPLAY_PHASES set, a line on stderr: this process, the wall clock, its
    CPU so far and `name` (bench/replay_phases.py reads them: where a rebuild's time goes)."""
    if _PHASES:
        sys.stderr.write(f"phase {os.getpid()} {time.time():.4f} {time.process_time():.4f} {name}\n")
        sys.stderr.flush()


# `-m` puts the working directory first on a child's path: run from another checkout
# (a bench comparing two worktrees, an operator's shell in a source tree), the workers
# would import that tree's `services` while this process runs its own. PYTHONSAFEPATH
# (Python 3.11+) leaves it off: the workers import what this interpreter does.
_WORKER_ENV = {**os.environ, "PYTHONSAFEPATH": "1"}


async def spawn(workers: int) -> list[asyncio.subprocess.Process]:
    """Start the worker processes for shards 1 … `workers`-1 (shard 0 is applied by the
    caller, `build_sharded`); each waits for its job on stdin. Started first thing
    (`cli._replay`, else `replay.rebuild`), so that their imports (~0.35 s of CPU each)
    overlap this process's own, the log check, the new schema's DDL and the probe of
    the log's end."""
    # Plain child interpreters (`python -m services.replay.shards`), not
    # multiprocessing: nothing of this process (event loop, sockets, __main__) is copied
    # or re-imported, whatever program called us.
    procs = []
    try:
        for _ in range(workers - 1):
            procs.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "services.replay.shards", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                env=_WORKER_ENV,
            ))
    except BaseException:
        await reap(procs)
        raise
    return procs


async def reap(procs: list[asyncio.subprocess.Process]) -> None:
    """Kill the workers still running (the build failed or was cancelled)."""
    for p in procs:
        if p.returncode is None:
            p.kill()
            await p.wait()
