"""The projection's own CPU per fact, without PostgreSQL or the broker: decode + the loop
around the core (`parse_records` + `run_facts` with outbox bytes) over the bench stream
(bench/projection_bench.py `Stream`), in batches, users resident in one Directory.

On a machine shared with other work wall-clock and even process CPU move ±30 %; run it
under callgrind for counts that repeat exactly, and compare two checkouts with the same
command (issue 14: decode and the loop, before/after):

    .venv/bin/python bench/projection_cpu.py --events 20000            # process CPU µs/fact
    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \\
        .venv/bin/python bench/projection_cpu.py --events 2000 --warm 2000 --quiet
    callgrind_annotate /tmp/cg.out | head                              # Ir: instructions

Instructions per fact of the loop alone: the difference of two `--loop-only` runs (e.g.
`--events 4000` and `--events 2000`, both `--warm 2000`) less the same difference of
`--generate-only` runs (making the records), over the events between them.

Prints CPU µs per fact of: decoding alone (the projection's decoder and, for comparison,
`parse_inbound`), and decode + run_facts.

`--prepare` runs instead what the pipelined live path does in memory for a batch
(projection/pipeline.py `_prepare`): decode, the facts' keys, the resident users' lookups
(the store answering nothing: what is not resident is new), run_facts, the users' rows
(`repo.user_records`, encoded by `rowcodec.encode`), the identities' deltas, and the resident copy advanced and trimmed:
everything of the batch's Python but the statements' encoding and the event loop.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.projection_bench import Stream  # noqa: E402
from contracts.inbound import InboundError, parse_inbound  # noqa: E402
from contracts.topics import Topics  # noqa: E402
from services.domain.channel import ChannelSettings  # noqa: E402
from services.domain.directory import Directory  # noqa: E402
from services.platform import gc_tuning  # noqa: E402
from services.projection import batch as batch_mod  # noqa: E402
from services.projection.batch import BatchResult, parse_records, run_facts  # noqa: E402
from services.projection.records import Record  # noqa: E402
from services.projection.resident import ResidentUsers  # noqa: E402
from services.projection.window import AppliedWindow  # noqa: E402
from services.store import repository as repo  # noqa: E402
from services.store import rowcodec  # noqa: E402


def records(n: int, seed: int, topic: str) -> list[Record]:
    return [
        Record(topic, 0, i, 1_767_225_600_000 + 10 * n + i, channel.encode(), value)
        for i, (channel, _e, value) in enumerate(Stream(seed).events(n))
    ]


def _default_settings(facts: list[Any], settings: dict[str, ChannelSettings]) -> None:
    """Every channel of `facts` with the default settings, as the store gives a new one."""
    for f in facts:
        if f.channel_id not in settings:
            settings[f.channel_id] = ChannelSettings(f.channel_id)


def run(recs: list[Record], topics: Topics, batch: int) -> tuple[Directory, int]:
    directory = Directory()
    settings: dict[str, ChannelSettings] = {}
    window = AppliedWindow()
    published = 0
    for i in range(0, len(recs), batch):
        chunk = recs[i : i + batch]
        parsed = parse_records(topics, chunk)
        _default_settings([p.fact for p in parsed if p.fact is not None], settings)
        result = BatchResult()
        run_facts(directory, parsed, settings, window, topics, result, outbox=True, failed_at=0)
        published += result.published
        directory.changed.clear()  # committed: the next batch starts from these users
    return directory, published


def prepare(recs: list[Record], topics: Topics, batch: int) -> tuple[Directory, int]:
    """`run`, the way the pipelined live path prepares a batch (see the docstring)."""
    from services.projection.facts import add_keys

    resident = ResidentUsers(1_000_000)
    settings: dict[str, ChannelSettings] = {}
    window = AppliedWindow()
    published = 0
    for i in range(0, len(recs), batch):
        chunk = recs[i : i + batch]
        parsed = parse_records(topics, chunk)
        facts = [p.fact for p in parsed if p.fact is not None]
        _default_settings(facts, settings)
        directory = resident.begin({})
        ids: set[str] = set()
        keys: set[repo.Key] = set()
        add_keys(facts, ids, keys)
        for _ in range(3):
            if not ids and not keys:
                break
            want_ids, want_keys = resident.missing(ids, keys)
            if want_ids or want_keys:
                resident.loaded(want_ids, want_keys, [])
            reached = resident.reached(ids, keys)
            ids = {u.merged_into for u in reached if u.merged_into}
            keys = {(u.channel_id, "pending", u.id) for u in reached if u.type == "member"}
        result = BatchResult()
        run_facts(directory, parsed, settings, window, topics, result, outbox=True, failed_at=0)
        changed = list(directory.changed.values())
        rowcodec.encode(repo.user_records(changed, resident.revs), repo.USER_TYPES) if changed else None
        directory.moved_identities(changed)
        resident.advance()
        resident.written({}, ())
        published += result.published
    return resident.directory, published


def _decode_us(decode: Any, recs: list[Any]) -> float:
    """Process CPU µs per record to decode the records (refusals included)."""
    t = time.process_time()
    for r in recs:
        try:
            decode("sdk-events", r.value or b"")
        except InboundError:
            pass
    return (time.process_time() - t) * 1e6 / len(recs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--warm", type=int, default=0, help="events run first, not measured (imports, caches)")
    p.add_argument("--batch", type=int, default=5_000)
    p.add_argument("--seed", type=int, default=20260101)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--loop-only", action="store_true", help="only decode + run_facts (for callgrind counts)")
    p.add_argument("--prepare", action="store_true", help="the pipelined live path's whole preparation instead of run_facts")
    p.add_argument("--generate-only", action="store_true",
                   help="only make the records (callgrind: what to subtract from a --loop-only run's difference)")
    args = p.parse_args()
    gc_tuning.tune()
    topics = Topics("")
    recs = records(args.warm + args.events, args.seed, topics.sdk_events)
    if args.generate_only:
        return
    drive = prepare if args.prepare else run
    if args.warm:
        drive(recs[: args.warm], topics, args.batch)
    recs = recs[args.warm :]
    n = len(recs)
    decode = getattr(batch_mod, "decode_inbound", None)
    if args.loop_only:
        drive(recs, topics, args.batch)
        return
    pydantic_us = _decode_us(parse_inbound, recs)
    fast_us = _decode_us(decode, recs) if decode is not None else None
    t = time.process_time()
    _directory, published = drive(recs, topics, args.batch)
    loop_us = (time.process_time() - t) * 1e6 / n
    if not args.quiet:
        print(f"{n:,} facts, {published:,} publications; CPU µs per fact: parse_inbound (pydantic) {pydantic_us:.2f}, "
              f"decode_inbound {'-' if fast_us is None else f'{fast_us:.2f}'}, "
              f"{'the preparation' if args.prepare else 'decode + run_facts'} {loop_us:.1f}")


if __name__ == "__main__":
    main()
