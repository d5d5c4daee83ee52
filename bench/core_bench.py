"""Micro-benchmark of the pure domain core (issue 14 item 2): µs per fact through
`core.apply`, in memory only — no broker, no PostgreSQL, no decoding in the timed part.

The baseline is measured in the same run: the core as it was before the lean core,
kept under tests/oracle/ (the oracle of tests/unit/test_core_differential.py). Both cores
apply the same parsed facts to their own Directory, with `user-changed` messages built
(`messages=True`, as live), the directory settled every `--batch` facts as the resident
projection does between batches. Each core runs `--rounds` times, alternating, and the
fastest round counts (the machine is shared: the minimum is the least disturbed). When
the process runs the compiled core (services/compiled_core.py), the domain's source is
loaded beside it and measured too: compiled against interpreted in the same run.

Mixes:
- `sdk`: bench/projection_bench.py's Stream (boot 60 %, chat 15 %, contact 10 %, login
  10 %, track 5 %; ~100 channels, repeat visitors, logins merging visitors);
- `commands`: services/replay/workload.py's mixed stream (SDK journeys plus member
  upserts, profile edits, deliveries, blocks);
- `import`: a member import whose rows all create a new member (`created`, I2).

Per-type figures are µs per fact of that type inside `core.apply`, timed with
perf_counter_ns around each call (thread_time_ns costs ~3 µs a call on this machine, as
much as a cheap fact) as a trimmed mean: the slowest 2 % of each type are left out,
which drops the calls another process preempted on the shared cores. The last line is
process CPU per fact over the whole run (driver included), the steadiest figure.
The outcomes of both cores are compared (publications byte for byte, states) so a
figure never comes from a core that does something else.

    .venv/bin/python bench/core_bench.py                   # ~1 minute
    .venv/bin/python bench/core_bench.py --facts 60000 --rounds 3
    .venv/bin/python bench/core_bench.py --mix commands --rebuild   # as a rebuild: no messages built
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

import services.domain as domain  # noqa: E402
from contracts.inbound import parse_inbound  # noqa: E402
from services.domain import channel as new_channel  # noqa: E402
from services.domain import core as new_core  # noqa: E402
from services.domain import directory as new_directory  # noqa: E402
from services.domain import imports as new_imports  # noqa: E402
from services.platform import gc_tuning  # noqa: E402
from services.replay.workload import HASHED_CHANNEL_SECRET, hashed_channels, mixed_facts  # noqa: E402
from tests.oracle import channel as old_channel  # noqa: E402
from tests.oracle import core as old_core  # noqa: E402
from tests.oracle import directory as old_directory  # noqa: E402
from tests.oracle import imports as old_imports  # noqa: E402

KIND = {"sdk-events": "sdk-events", "commands": "commands", "import-rows": "import-rows"}


class Core:
    """One core: its modules, so the oracle and the new core run the same driver."""

    def __init__(self, name: str, core: ModuleType, directory: ModuleType, channel: ModuleType, imports: ModuleType) -> None:
        self.name, self.core, self.directory, self.channel, self.imports = name, core, directory, channel, imports


OLD = Core("oracle", old_core, old_directory, old_channel, old_imports)
NEW = Core("compiled" if domain.CORE == "compiled" else "domain", new_core, new_directory, new_channel, new_imports)


def source_core() -> Core | None:
    """When this process runs the compiled core: the domain's source loaded beside it
    under another package name (`domain_source`; the domain imports itself relatively),
    so one run compares compiled and interpreted on the same facts."""
    if domain.CORE != "compiled":
        return None
    pkg = ModuleType("domain_source")
    pkg.__path__ = [str(ROOT / "services" / "domain")]
    sys.modules["domain_source"] = pkg
    m = {n: importlib.import_module(f"domain_source.{n}") for n in ("core", "directory", "channel", "imports")}
    return Core("interpreted", m["core"], m["directory"], m["channel"], m["imports"])


def sdk_mix(n: int, seed: int) -> list[tuple[str, bytes]]:
    from bench.projection_bench import Stream

    return [("sdk-events", raw) for _ch, _eid, raw in Stream(seed).events(n)]


def commands_mix(n: int, seed: int) -> list[tuple[str, bytes]]:
    return [(f.kind, f.value) for f in mixed_facts(n, rounds=4, seed=seed)]


def import_mix(n: int, seed: int) -> list[tuple[str, bytes]]:
    ch, imp, t0 = "ch_import", f"imp-{seed}", 1_767_225_600_000
    columns = [
        {"column": "id", "key": "memberId"}, {"column": "name", "key": "name"},
        {"column": "email", "key": "profile.email"}, {"column": "mobile", "key": "profile.mobileNumber"},
        {"column": "unsub_e", "key": "unsubscribeEmail"}, {"column": "unsub_t", "key": "unsubscribeTexting"},
        {"column": "plan", "key": "profile.plan", "type": "string"},
        {"column": "points", "key": "profile.points", "type": "number"},
    ]
    started = {"eventId": f"{imp}:start", "type": "import.started", "channelId": ch, "occurredAt": t0,
               "importId": imp, "mode": "member", "key": "memberId", "blank": "keep", "tag": "spring",
               "actor": "staff-1", "fileName": "members.csv", "columns": columns}
    out = [("import-rows", orjson.dumps(started))]
    for i in range(n):
        cells = {"memberId": f"m-{i:07d}", "name": f"会員 {i}", "profile.email": f"m{i}@members.example",
                 "profile.mobileNumber": f"+8190{20_000_000 + i:08d}", "unsubscribeEmail": "false",
                 "unsubscribeTexting": "no", "profile.plan": "gold", "profile.points": str(i % 1000)}
        row = {"eventId": f"{imp}:{i + 2}", "type": "import.row", "channelId": ch, "occurredAt": t0,
               "importId": imp, "rowNumber": i + 2, "cells": cells}
        out.append(("import-rows", orjson.dumps(row)))
    return out


MIXES: dict[str, Callable[[int, int], list[tuple[str, bytes]]]] = {
    "sdk": sdk_mix, "commands": commands_mix, "import": import_mix,
}


class Run:
    """Per-type nanoseconds and counts of one core over one mix."""

    def __init__(self) -> None:
        self.ns: dict[str, list[int]] = defaultdict(list)
        self.cpu = 0.0
        self.wall_ns = 0
        self.digest: list[Any] = []

    def label(self, msg: Any, outcome: Any) -> str:
        t = msg.type
        if t == "import.row":
            return "import.row " + ("failed" if outcome.rejection else "created" if any(
                _change(p) == "created" for p in outcome.publications) else "updated")
        return t


def _change(pub: Any) -> str | None:
    """A publication's `change`: the oracle's message is a dict; the lean core's is its
    bytes (`body`), read without decoding them: the first `"change":"` is the message's
    own (the keys before it are fixed, and a quote inside a string is escaped)."""
    if not hasattr(pub, "body"):
        return None if pub.value is None else pub.value["change"]  # type: ignore[no-any-return]
    body = pub.body
    if body is None:
        return None
    start = body.index(b'"change":"') + 10
    return body[start : body.index(b'"', start)].decode()  # type: ignore[no-any-return]


def _message_bytes(pub: Any) -> bytes | None:
    """The bytes sent: the lean core's `body`; the oracle's dict as the projection serialised it."""
    if hasattr(pub, "body"):
        return pub.body  # type: ignore[no-any-return]
    return None if pub.value is None else orjson.dumps(pub.value)


def forget(core: Core) -> None:
    """Empty the core's remembered ids (lru caches, hygiene's dicts), so no round starts warmer than the first."""
    for name in ("hygiene", "ids", "imports"):
        module = sys.modules.get(core.core.__name__.rsplit(".", 1)[0] + "." + name)
        if callable(getattr(module, "forget", None)):
            # plain dicts since issue 14, sessions 14 (hygiene), 15 (ids) and 17 (imports' cells)
            module.forget()  # type: ignore[union-attr]
        for value in vars(module).values() if module is not None else ():
            if callable(getattr(value, "cache_clear", None)):
                value.cache_clear()
    # The oracle normalises contacts through services/domain/values_contact: every loaded
    # copy's cache is emptied for each run too, so no core meets the numbers another parsed.
    for package in ("services.domain", "domain_source"):
        module = sys.modules.get(package + ".values_contact")
        if module is not None:
            module._e164.cache_clear()


def run(core: Core, facts: list[Any], batch: int, *, check: bool, secret: set[str], messages: bool = True) -> Run:
    """Apply `facts` (parsed messages) in order through `core`, timing each apply."""
    forget(core)
    d = core.directory.Directory()
    settings: dict[str, Any] = {}
    book = core.imports.ImportBook()
    result = Run()
    apply = core.core.apply
    Fact = core.core.Fact
    perf = time.perf_counter_ns
    gc.collect()
    cpu0, wall0 = time.process_time(), perf()
    for i, msg in enumerate(facts):
        ch = msg.channelId
        s = settings.get(ch)
        if s is None:
            s = settings[ch] = core.imports.ImportChannel(
                ch, member_hash_secret=HASHED_CHANNEL_SECRET if ch in secret else None, book=book)
        fact = Fact(msg, msg.occurredAt)
        t0 = perf()
        outcome = apply(d, fact, s, messages=messages)
        dt = perf() - t0
        result.ns[result.label(msg, outcome)].append(dt)
        if check:
            result.digest.append((
                None if outcome.rejection is None else (outcome.rejection.code, outcome.rejection.reason),
                [(p.key, _message_bytes(p)) for p in outcome.publications],
                [m.to_json() for m in outcome.merges],
                [(a.user_id, a.kind, a.event_id) for a in outcome.activities],
            ))
        if (i + 1) % batch == 0:
            d.settle()
    result.cpu = time.process_time() - cpu0
    result.wall_ns = perf() - wall0
    if check:
        result.digest.append(sorted(orjson.dumps(u.to_json()) for u in d.users()))
    return result


def trimmed(ns: list[int]) -> float:
    """Mean µs of the fastest 98 % (see the module doc)."""
    if not ns:
        return 0.0
    kept = sorted(ns)[: max(1, len(ns) * 98 // 100)]
    return sum(kept) / len(kept) / 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--facts", type=int, default=30_000, help="facts per mix (import: rows)")
    ap.add_argument("--rounds", type=int, default=2, help="runs per core and mix; the fastest counts")
    ap.add_argument("--batch", type=int, default=5_000, help="facts between Directory.settle()")
    ap.add_argument("--mix", action="append", choices=sorted(MIXES), help="default: all")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--rebuild", action="store_true",
                    help="as a rebuild applies facts: no user-changed messages built (messages=False)")
    args = ap.parse_args()
    gc_tuning.tune()  # the collector as the service sets it
    source = source_core()
    cores = [OLD, NEW] + ([source] if source is not None else [])
    print(f"domain core in this process: {domain.CORE}" + ("; its source loaded beside it" if source else ""))
    for mix in args.mix or list(MIXES):
        raws = MIXES[mix](args.facts if mix != "import" else args.facts // 3, args.seed)
        facts = [parse_inbound(KIND[k], raw) for k, raw in raws]  # type: ignore[arg-type]
        # The workload's hashed channels need member hashes (H1); the others none.
        secret = set(hashed_channels(24)) if mix == "commands" else set()
        best: dict[str, Run] = {}
        digests: dict[str, Any] = {}
        for r in range(args.rounds):
            for core in cores:
                got = run(core, facts, args.batch, check=r == 0, secret=secret, messages=not args.rebuild)
                if r == 0:
                    digests[core.name] = got.digest
                if core.name not in best or got.cpu < best[core.name].cpu:
                    best[core.name] = got
        differ = [c.name for c in cores if digests[c.name] != digests[OLD.name]]
        old, n = best[OLD.name], len(facts)
        others = [best[c.name] for c in cores[1:]]
        print(f"\n== mix {mix}: {n} facts, best of {args.rounds}; outcomes identical: {not differ}")
        print(f"{'µs per fact':<26}{'count':>8}{'oracle':>10}" + "".join(f"{c.name:>13}{'×':>6}" for c in cores[1:]))

        def row(label: str, count: int, o: float, figures: list[float]) -> None:
            print(f"{label:<26}{count:>8}{o:>10.1f}" + "".join(f"{f:>13.1f}{o / f if f else 0:>5.1f}×" for f in figures))

        for kind in sorted(old.ns, key=lambda k: -len(old.ns[k])):
            row(kind, len(old.ns[kind]), trimmed(old.ns[kind]), [trimmed(r.ns.get(kind, [])) for r in others])
        row("all (in core.apply)", n, trimmed([t for ts in old.ns.values() for t in ts]),
            [trimmed([t for ts in r.ns.values() for t in ts]) for r in others])
        row("process CPU per fact", n, old.cpu / n * 1e6, [r.cpu / n * 1e6 for r in others])
        if differ:
            print(f"!! {', '.join(differ)}: outcomes differ from the oracle's: the figures compare different work",
                  file=sys.stderr)

if __name__ == "__main__":
    main()
