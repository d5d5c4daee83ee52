"""`unifier replay` on the command line (docs/contract.md): entry point only, the work is in
`replay.py`. Progress goes to stderr; stdout carries the contract's JSON only."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

import orjson

from contracts.topics import Topics
from services.platform.args import UsageError, positive_int

if TYPE_CHECKING:
    from services.platform.config import Settings


def define(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Rebuild every table from the retained inbound topics into a fresh schema, "
        "switch the live schema to it while the service keeps running, and print "
        '{"events": N, "digest": "<sha256>"}. With --dry-run, change nothing: print '
        "one JSON line per user the rebuild would change."
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--rebuild", action="store_true", help="rebuild and switch (the default)")
    mode.add_argument("--dry-run", action="store_true", help="rebuild into a scratch schema, print what differs, drop it")
    p.add_argument("--since", type=_time, metavar="TIMESTAMP",
                   help="with --dry-run: only users changed or seen at/after this time (epoch ms or ISO-8601)")
    p.add_argument("--batch", type=positive_int, default=10_000, help="records per apply transaction (default 10000)")
    p.add_argument("--workers", type=positive_int, default=_default_workers(),
                   help="processes applying channels in parallel (default: the CPU count, at most 8)")
    p.add_argument("--quiet-ms", type=positive_int, default=1000,
                   help="where a broker reports no high watermark: how long a partition must stay quiet to count as ended (default 1000)")
    p.add_argument("--lock-timeout", type=positive_int, default=60, metavar="SECONDS",
                   help="give up the switch when the live tables stay locked this long (default 60)")
    p.add_argument("--drop-archive", action="store_true", help="drop the previous live schema after the switch")
    p.add_argument("--memory-mb", type=positive_int, metavar="MB",
                   help="memory for the users held while building, all workers together; past it the log is "
                        "applied batch by batch instead, slower (default: 3/4 of the memory available at start)")
    p.set_defaults(handler=_replay)


def _default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def _time(raw: str) -> int:
    from .replay import parse_time

    try:
        return parse_time(raw)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _out(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()


async def _replay(settings: Settings, args: argparse.Namespace) -> int:
    if args.since is not None and not args.dry_run:
        raise UsageError("--since only goes with --dry-run")
    from .procs import phase, reap, spawn

    phase("command: start")

    # The workers of a rebuild are started before this process imports the rebuild
    # (~0.2 s of CPU): their own imports (~0.35–0.6 s) overlap it, and they are ready
    # when their jobs are (issue 14, session 14).
    procs = await spawn(args.workers) if args.workers > 1 and not args.dry_run else None
    phase("command: workers spawned")
    try:
        return await _replay_with(settings, args, procs)
    finally:
        if procs is not None:
            await reap(procs)


async def _replay_with(settings: Settings, args: argparse.Namespace, procs: list[Any] | None) -> int:
    from services.platform import gc_tuning
    from services.platform.embedded import infrastructure

    from .log import LogShort
    from .procs import phase
    from .rebuild import Tally
    from .replay import Options, dry_run, rebuild
    from .resident import HELD, default_budget

    gc_tuning.tune()
    phase("command: imported")

    options = Options(batch=args.batch, workers=args.workers, quiet_s=args.quiet_ms / 1000, lock_timeout_s=args.lock_timeout,
                      drop_archive=args.drop_archive,
                      memory_budget=args.memory_mb << 20 if args.memory_mb else default_budget())
    topics = Topics(settings.topic_prefix)
    tally = Tally()
    async with infrastructure(settings) as (bootstrap, database_url):
        try:
            if args.dry_run:
                live_digest, digest, changes = await dry_run(
                    database_url, bootstrap, topics, settings.db_schema, options, tally, args.since
                )
                changed = 0
                async for change in changes:
                    changed += 1
                    _out(change.to_json())
                print(orjson.dumps({"events": tally.events, "liveDigest": live_digest, "rebuiltDigest": digest,
                                    "changedUsers": changed}).decode(), file=sys.stderr)
                return 0
            result = await rebuild(database_url, bootstrap, topics, settings.db_schema, options, tally, procs)
        except LogShort as err:
            print(f"unifier replay: {err}", file=sys.stderr)
            return 1
    tally.show("replay: switched")
    kept = "dropped" if options.drop_archive else f"kept as schema {result.archive!r}"
    print(f"replay: the previous state is {kept}", file=sys.stderr)
    _out({"events": result.events, "digest": result.digest})
    phase("command: done")
    if HELD and os.path.basename(sys.argv[0]) == "unifier":
        # The `unifier` command, done: everything is committed and written out. Freeing
        # the users it held (HELD) and then the interpreter, object by object, is CPU
        # the caller waits for (~0.2 s for 36,000 users), so it ends here, as a replay
        # worker does (shards.py). Called in a process that goes on, it returns.
        sys.stderr.flush()
        logging.shutdown()
        os._exit(0)
    return 0
