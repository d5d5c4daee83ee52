"""A rebuild's own Python per record, without PostgreSQL or the broker: what
`resident.Resident` does with the replay workload (services/replay/workload.py, as
bench/replay_bench.py publishes it), in memory, stage by stage.

The records are made as the log hands them to `LogReader.merged` (one partition per
topic here, in the canonical order: timestamp, topic, offset), then, per chunk of
`--batch`: `parse_records`, `run_facts` (outbox off, as a rebuild), `Directory.settle`;
at the end each user's row and identities as the final COPY makes them
(`store.rows.user_row`, `directory.loaded_identities`) and the chats' and events' rows.
Prints process CPU µs per record of each stage. Under callgrind, for counts that repeat:

    PYTHONHASHSEED=0 UNIFIER_CORE=compiled valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \\
        .venv/bin/python bench/replay_cpu.py --events 20000 --quiet
    callgrind_annotate /tmp/cg.out | head -60

`--stage decode` stops after decoding (the difference of two runs is the rest).
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

from contracts.topics import Topics  # noqa: E402
from services.domain.channel import ChannelSettings  # noqa: E402
from services.domain.directory import Directory, identities  # noqa: E402
from services.platform import gc_tuning  # noqa: E402
from services.projection.facts import BatchResult, Effects, parse_records, run_facts  # noqa: E402
from services.projection.records import Record  # noqa: E402
from services.projection.window import AppliedWindow  # noqa: E402
from services.replay import workload  # noqa: E402
from services.store.rows import user_row  # noqa: E402


def records(n: int, channels: int, topics: Topics) -> list[Record]:
    names = {"sdk-events": topics.sdk_events, "commands": topics.commands, "import-rows": topics.import_rows}
    offsets: dict[str, int] = {}
    out = []
    for f in workload.mixed_facts(n, channels=channels, rounds=10):
        topic = names[f.kind]
        off = offsets.get(topic, 0)
        offsets[topic] = off + 1
        out.append(Record(topic, 0, off, f.timestamp, f.key.encode(), f.value))
    out.sort(key=lambda r: (r.timestamp, r.topic, r.partition, r.offset))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--channels", type=int, default=48)
    p.add_argument("--batch", type=int, default=10_000)
    p.add_argument("--stage", choices=["generate", "decode", "core", "all"], default="all")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    gc_tuning.tune()
    topics = Topics("")
    recs = records(args.events, args.channels, topics)
    if args.stage == "generate":
        return
    hashed = set(workload.hashed_channels(args.channels))
    settings = {
        workload.channel_name(i): ChannelSettings(
            workload.channel_name(i),
            member_hash_secret=workload.HASHED_CHANNEL_SECRET if workload.channel_name(i) in hashed else None,
        )
        for i in range(args.channels)
    }
    directory = Directory()
    seen = AppliedWindow()
    pending = Effects()
    spent = dict.fromkeys(("decode", "run_facts", "settle", "user rows", "identities", "activity rows"), 0.0)
    clock = time.process_time
    gc.freeze()
    gc.disable()  # as a resident build (rebuild.apply_all pauses the collector)
    for i in range(0, len(recs), args.batch):
        chunk = recs[i : i + args.batch]
        t0 = clock()
        parsed = parse_records(topics, chunk)
        t1 = clock()
        spent["decode"] += t1 - t0
        if args.stage == "decode":
            continue
        result = BatchResult()
        fx = run_facts(directory, parsed, settings, seen, topics, result, outbox=False, failed_at=0)
        pending.extend(fx)
        t2 = clock()
        spent["run_facts"] += t2 - t1
        directory.settle()
        spent["settle"] += clock() - t2
    if args.stage == "all":
        t0 = clock()
        users = sorted(directory.users(), key=lambda u: u.id)
        rows = [user_row(u, 1) for u in users]
        t1 = clock()
        known = directory.loaded_identities
        ids = [(u.channel_id, kind, value, u.id, q) for u in users for kind, value, q in (known(u.id) or identities(u))]
        t2 = clock()
        acts = [(a.channel_id, a.event_id, a.user_id, a.kind, a.at, a.body) for a in pending.activities]
        t3 = clock()
        spent["user rows"], spent["identities"], spent["activity rows"] = t1 - t0, t2 - t1, t3 - t2
        del rows, ids, acts
    n = len(recs)
    if not args.quiet:
        total = sum(spent.values())
        print(f"{n:,} records, {len(list(directory.users())):,} users; CPU µs per record: "
              + ", ".join(f"{k} {1e6 * v / n:.2f}" for k, v in spent.items()) + f"; total {1e6 * total / n:.2f}")


if __name__ == "__main__":
    main()
