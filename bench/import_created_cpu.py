"""What an import row's `created` message costs the service: N members created by
import rows through the core (bench/core_bench.py's import mix: name, e-mail, mobile,
plan, points, as import_bench.py's file has), then `publication.message_body(user, 1,
"created", None, ...)` of each, timed (µs a message, the fastest of `--rounds`), and
beside it, in the same run, the reference way (`orjson.dumps` of the reference message
with `user_view`), whose bytes every message is checked equal to.

For deterministic counts, run it under callgrind collecting only the builder (the
compiled core's C symbol; `--toggle-collect`), then divide by the messages built
(`--rounds 1`: users x 1):

    valgrind --tool=callgrind --toggle-collect='CPyDef_publication___message_body' \\
        .venv/bin/python bench/import_created_cpu.py --users 2000 --rounds 1 --no-reference
    .venv/bin/python bench/import_created_cpu.py --users 20000 --rounds 5

(docs/decisions.md, "Issue 14, session 15: ... (helper "import")". A benchmark, not a test.)
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

import services.domain as domain  # noqa: E402
from bench.core_bench import NEW, import_mix  # noqa: E402
from contracts.inbound import parse_inbound  # noqa: E402
from services.domain import publication  # noqa: E402
from services.domain.view import user_view  # noqa: E402


def created_users(n: int) -> list[object]:
    """The users n import rows create, as the core leaves them (version 1 after `created`)."""
    facts = [parse_inbound(kind, raw) for kind, raw in import_mix(n, 7)]
    core = NEW
    directory = core.directory.Directory()
    settings = core.imports.ImportChannel("ch_import", member_hash_secret=None, book=core.imports.ImportBook())
    for msg in facts:
        core.core.apply(directory, core.core.Fact(msg, msg.occurredAt), settings, messages=False)
    return [u for u in directory.users() if u.type == "member"]


def reference(user: object) -> bytes:
    keys = publication._first_keys(user, user_view(user))  # type: ignore[arg-type]
    return orjson.dumps(publication._message(user, 1, "created", keys, "cause", 7, user_view(user)))  # type: ignore[arg-type]


def timed(users: list[object], build: object, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        gc.disable()
        t0 = time.process_time()
        for u in users:
            build(u)  # type: ignore[operator]
        best = min(best, time.process_time() - t0)
        gc.enable()
    return best / len(users) * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--no-reference", action="store_true", help="only message_body (for callgrind)")
    args = p.parse_args()
    users = created_users(args.users)
    body = publication.message_body

    def now(u: object) -> bytes:
        return body(u, 1, "created", None, "cause", 7)  # type: ignore[arg-type]

    if args.no_reference:
        for u in users:
            now(u)
        print(f"{len(users)} messages built ({domain.CORE} core)")
        return
    for u in users:
        assert now(u) == reference(u), u
    print(f"`created` of {len(users)} imported members ({domain.CORE} core), CPU µs a message, best of {args.rounds}:")
    print(f"  message_body       {timed(users, now, args.rounds):6.2f}")
    print(f"  reference (view)   {timed(users, reference, args.rounds):6.2f}")


if __name__ == "__main__":
    main()
