"""What the `unifier` command costs before it does anything: its start-up, for
`unifier --help`, `unifier import --help`, `unifier import FILE` up to its first
connection, and a small admin command (`unifier digest`, up to its first connection).
The commands that connect are given a DATABASE_URL and a broker no one listens on
(127.0.0.1:1): they exit 1 at the first connection, having imported and checked
everything a real run does before it. `python -c pass` is the interpreter's floor.

Counted, deterministically (`--count`): each command once under callgrind,
PYTHONHASHSEED=0, after a run that compiles the modules' bytecode; instructions repeat
exactly whatever the machine's load, so two checkouts compare by running this in
each (`--checkout DIR`). Also the modules each command imports (len(sys.modules) at exit).

Timed (default): process CPU (user + sys, from the child's rusage) of each command,
the median of `--rounds`, the checkouts given alternated round by round.

    .venv/bin/python bench/cli_start.py --count                        # this checkout
    .venv/bin/python bench/cli_start.py --count --checkout /work/wt/base
    .venv/bin/python bench/cli_start.py --rounds 21 --checkout . --checkout /work/wt/base

(docs/decisions.md, "Issue 14, session 21: the command line's start-up (helper "cli")".
A benchmark, not a test.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.core_counts import total  # noqa: E402

NOWHERE = {"DATABASE_URL": "postgresql://unifier@127.0.0.1:1/unifier", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
# The command as `python -m services.runtime.cli` runs it; with a file named, the count
# of modules imported is written there at exit.
DRIVER = (
    "import atexit, os, runpy, sys; out = os.environ.get('CLI_START_MODULES'); "
    "out and atexit.register(lambda: open(out, 'w').write(str(len(sys.modules)))); "
    "sys.argv = ['unifier', *sys.argv[1:]]; runpy.run_module('services.runtime.cli', run_name='__main__', alter_sys=True)"
)


def commands(csv: Path) -> dict[str, list[str] | None]:
    """name → `unifier` arguments (None: `python -c pass`)."""
    return {
        "python -c pass": None,
        "unifier --help": ["--help"],
        "unifier import --help": ["import", "--help"],
        "unifier import FILE (to its first connection)": ["import", str(csv), "--channel", "bench_ch", "--mode", "member"],
        "unifier digest (to its first connection)": ["digest"],
    }


# The floor: `pass`, and the count of the interpreter's own modules when asked.
FLOOR = "import os, sys; out = os.environ.get('CLI_START_MODULES'); out and open(out, 'w').write(str(len(sys.modules)))"


def argv(checkout: Path, args: list[str] | None) -> list[str]:
    python = str(checkout / ".venv/bin/python")
    return [python, "-c", FLOOR] if args is None else [python, "-c", DRIVER, *args]


def env(interpreted: bool, modules: Path | None = None) -> dict[str, str]:
    e = dict(os.environ, PYTHONHASHSEED="0", UNIFIER_CORE="interpreted" if interpreted else "compiled", **NOWHERE)
    if modules is not None:
        e["CLI_START_MODULES"] = str(modules)
    return e


def cpu(cmd: list[str], cwd: Path, environ: dict[str, str]) -> float:
    """The child's CPU seconds (user + sys)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0  # reaped here
    return usage.ru_utime + usage.ru_stime


def count(checkout: Path, csv: Path, interpreted: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in commands(csv).items():
            cmd = argv(checkout, args)
            modules = Path(tmp) / "modules"
            subprocess.run(cmd, cwd=checkout, env=env(interpreted, modules), check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # compiles the bytecode too
            out = Path(tmp) / "callgrind.out"
            subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *cmd], cwd=checkout,
                           env=env(interpreted), check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            n = modules.read_text() if modules.exists() else "?"
            print(f"{total(out) / 1e6:9.1f} M instructions, {n:>4} modules  {name}", flush=True)


def timed(checkouts: list[Path], csv: Path, rounds: int, interpreted: bool) -> None:
    cpus: dict[tuple[Path, str], list[float]] = {}
    for checkout in checkouts:  # bytecode compiled before the first round
        for args in commands(csv).values():
            subprocess.run(argv(checkout, args), cwd=checkout, env=env(interpreted), check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(rounds):
        for name, args in commands(csv).items():
            for checkout in checkouts:
                cpus.setdefault((checkout, name), []).append(cpu(argv(checkout, args), checkout, env(interpreted)))
    print(f"CPU ms (user + sys), median of {rounds} (min–max), load {os.getloadavg()[0]:.1f}:")
    for name in commands(csv):
        for checkout in checkouts:
            v = [s * 1000 for s in cpus[(checkout, name)]]
            print(f"  {statistics.median(v):7.1f} ({min(v):.0f}–{max(v):.0f})  {name}  [{checkout}]")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", action="store_true", help="instructions by callgrind (see the docstring)")
    p.add_argument("--checkout", type=Path, action="append", help="the checkout(s) to run (default this one)")
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--interpreted", action="store_true", help="UNIFIER_CORE=interpreted (default compiled)")
    args = p.parse_args()
    checkouts = [c.resolve() for c in args.checkout or [ROOT]]
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "members.csv"
        csv.write_text("memberId,email,name\nm000000001,user1@example.jp,Aoi\n", encoding="utf-8")
        if args.count:
            for checkout in checkouts:
                print(f"{checkout} ({'interpreted' if args.interpreted else 'compiled'} core):")
                count(checkout, csv, args.interpreted)
        else:
            timed(checkouts, csv, args.rounds, args.interpreted)


if __name__ == "__main__":
    main()
