"""Where the service's thread spends an import's wall time: on a CPU, waiting for one
(the run queue: runnable, no core free), or neither (waiting for PostgreSQL, the broker,
its next records). Runs `bench/import_bench.py --rows N --leads 0` in the worktree given
(default: this one) and samples `/proc/<service>/task/*/schedstat` (CPU ns, run-queue
ns) every 0.25 s; the import's stretch is where the service uses over 0.3 of a core.

Why (docs/decisions.md, "Issue 14, session 11: an import's rows on the pipelined path"):
the pipeline turns the service's waits for PostgreSQL into work; whether that buys rows
depends on a core being free for it, which the rate alone does not show on a shared
machine. Linux only. A benchmark, not a test.

    .venv/bin/python bench/import_runqueue.py [WORKTREE] [--rows 100000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def _schedstat(pid: int) -> tuple[int, int]:
    cpu = wait = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        fields = Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()
        cpu, wait = cpu + int(fields[0]), wait + int(fields[1])
    return cpu, wait


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("worktree", nargs="?", default=str(ROOT))
    p.add_argument("--rows", type=int, default=100_000)
    args = p.parse_args()
    bench = subprocess.Popen(
        [str(Path(args.worktree) / ".venv" / "bin" / "python"), "bench/import_bench.py", "--rows", str(args.rows), "--leads", "0"],
        cwd=args.worktree,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    samples: list[tuple[float, int, int]] = []
    service: psutil.Process | None = None
    while bench.poll() is None:
        if service is None:
            for child in psutil.Process(bench.pid).children():
                with_args = child.cmdline()
                if "services.runtime.cli" in with_args and "run" in with_args:
                    service = child
        if service is not None:
            try:
                samples.append((time.time(), *_schedstat(service.pid)))
            except (OSError, ValueError):
                pass  # the service ended between two samples
        time.sleep(0.25)
    out = bench.stdout.read().decode() if bench.stdout else ""
    print(next((line.strip() for line in out.splitlines() if line.strip().startswith("unpaced")), out[-500:]))
    busy = [(a, b) for a, b in zip(samples, samples[1:], strict=False) if (b[1] - a[1]) / 1e9 / (b[0] - a[0]) > 0.3]
    wall = sum(b[0] - a[0] for a, b in busy)
    cpu = sum(b[1] - a[1] for a, b in busy) / 1e9
    wait = sum(b[2] - a[2] for a, b in busy) / 1e9
    if wall:
        print(f"service during the import ({wall:.1f} s): on a CPU {cpu / wall:.2f}, waiting for one (run queue)"
              f" {wait / wall:.2f}, neither (PostgreSQL, the broker, idle) {1 - (cpu + wait) / wall:.2f}")


if __name__ == "__main__":
    main()
