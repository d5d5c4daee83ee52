"""Instructions per prepared fact, counted by callgrind: the method of docs/decisions.md
"Issue 14, session 14: the identity keys once per raw identifier" (helper "state"), as one
command, with the inclusive count of the functions that matter.

Runs `bench/projection_cpu.py --loop-only --prepare --warm W` under callgrind twice
(`--events 2N` and `--events N`) and `--generate-only` twice (making the records), the
collector off as the live preparation runs it (`gc_tuning.paused`), PYTHONHASHSEED=0:
the difference of the first two less the difference of the last two, over N facts, is
what the preparation costs a fact. Instruction counts repeat exactly whatever the load,
so two checkouts compare by running this in each (`--checkout DIR`).

    .venv/bin/python bench/core_counts.py                       # this checkout
    .venv/bin/python bench/core_counts.py --checkout /work/wt/core-base --top 40

Prints the whole figure, then the top functions by inclusive instructions a fact
(callgrind_annotate --inclusive=yes; compiled functions are `CPyDef_<module>___<name>`).
`--rebuild` counts instead `bench/replay_cpu.py`'s path if asked (not by default).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The driver: projection_cpu's main, with the collector off for the whole run (the
# pipelined preparation runs under gc_tuning.paused()).
DRIVER = (
    "import gc, runpy, sys; from services.platform import gc_tuning; "
    "t = gc_tuning.tune; gc_tuning.tune = lambda: (t(), gc.disable()); "
    "sys.argv = ['projection_cpu.py'] + sys.argv[1:]; "
    "runpy.run_path('bench/projection_cpu.py', run_name='__main__')"
)


def callgrind(checkout: Path, args: list[str], out: Path, env: dict[str, str]) -> int:
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", str(checkout / ".venv/bin/python"),
           "-c", DRIVER, *args]
    subprocess.run(cmd, cwd=checkout, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return total(out)


def total(out: Path) -> int:
    for line in out.read_text(errors="replace").splitlines():
        if line.startswith("summary:") or line.startswith("totals:"):
            return int(line.split()[1])
    raise SystemExit(f"no total in {out}")


_LINE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+\S*?:?(\S+)\s")


def inclusive(out: Path) -> dict[str, int]:
    """Inclusive instructions by function name (files stripped)."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(out)],
                          check=True, capture_output=True, text=True).stdout
    counts: dict[str, int] = {}
    for line in text.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*)$", line)
        if not m:
            continue
        try:
            n = int(m.group(1).replace(",", ""))
        except ValueError:
            continue
        where = m.group(2)
        name = where.rsplit(":", 1)[-1].split(" [")[0].strip()
        if name:
            counts[name] = counts.get(name, 0) + n
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkout", type=Path, default=ROOT)
    ap.add_argument("--facts", type=int, default=2000, help="N: the facts between the two runs")
    ap.add_argument("--warm", type=int, default=2000)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--interpreted", action="store_true", help="UNIFIER_CORE=interpreted")
    ap.add_argument("--keep", type=Path, help="keep the callgrind files in this directory")
    args = ap.parse_args()
    env = dict(os.environ, PYTHONHASHSEED="0", UNIFIER_CORE="interpreted" if args.interpreted else "compiled")
    n, w = args.facts, str(args.warm)
    with tempfile.TemporaryDirectory() as tmp:
        d = args.keep or Path(tmp)
        d.mkdir(parents=True, exist_ok=True)
        base = ["--loop-only", "--prepare", "--warm", w]
        big, small = d / "big.out", d / "small.out"
        ir_big = callgrind(args.checkout, [*base, "--events", str(2 * n)], big, env)
        ir_small = callgrind(args.checkout, [*base, "--events", str(n)], small, env)
        gen = ["--generate-only", "--warm", w]
        gen_big = callgrind(args.checkout, [*gen, "--events", str(2 * n)], d / "gen_big.out", env)
        gen_small = callgrind(args.checkout, [*gen, "--events", str(n)], d / "gen_small.out", env)
        per_fact = ((ir_big - ir_small) - (gen_big - gen_small)) / n
        print(f"{args.checkout} ({env['UNIFIER_CORE']}): {per_fact:,.0f} instructions a prepared fact "
              f"({n} facts; generation {(gen_big - gen_small) / n:,.0f} a record subtracted)")
        a, b = inclusive(big), inclusive(small)
        g_a, g_b = inclusive(d / "gen_big.out"), inclusive(d / "gen_small.out")
        diff = {k: (a.get(k, 0) - b.get(k, 0) - (g_a.get(k, 0) - g_b.get(k, 0))) / n for k in a}
        print(f"top {args.top} by inclusive instructions a fact:")
        for name, v in sorted(diff.items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"  {v:>10,.0f}  {name}")


if __name__ == "__main__":
    sys.exit(main())
