"""`unifier import …` (docs/contract.md, "Command line"). Parses and hands over.

    unifier import FILE --channel C --mode member|lead [--key email|mobileNumber]
        [--map "CSV column=key[:type]"]… [--blank keep|clear] [--tag TAG]
        [--failures OUT.csv] [--actor STAFF] [--timeout SECONDS] [--lease SECONDS]
    unifier import log C                          the channel's import log, newest first
    unifier import failures C IMPORT_ID [--failures OUT.csv]   its failed rows as CSV

A file literally named `log` or `failures` is imported as `./log`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from services.platform.args import UsageError, positive_seconds

if TYPE_CHECKING:
    from services.platform.config import Settings

_USAGE = """unifier import FILE --channel C --mode member|lead [--key email|mobileNumber]
                      [--map "CSV column=key[:type]"]... [--blank keep|clear] [--tag TAG]
                      [--failures OUT.csv] [--actor STAFF] [--timeout SECONDS]
       unifier import log CHANNEL
       unifier import failures CHANNEL IMPORT_ID [--failures OUT.csv]"""


def define(p: argparse.ArgumentParser) -> None:
    p.usage, p.description, p.formatter_class = _USAGE, __doc__, argparse.RawDescriptionHelpFormatter
    p.add_argument("file", metavar="FILE", help="the CSV file (UTF-8, up to 100 MB), or `log` / `failures`")
    p.add_argument("more", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--channel", help="the channel to import into")
    p.add_argument("--mode", choices=("member", "lead"), help="I1: member rows are keyed by memberId, lead rows by --key")
    p.add_argument("--key", choices=("email", "mobileNumber"), help="the key of a lead import's rows")
    p.add_argument("--map", action="append", default=[], metavar="COLUMN=KEY[:TYPE]",
                   help="map a column to a key (creating a profile key of TYPE); 'COLUMN=' skips it")
    p.add_argument("--blank", choices=("keep", "clear"), default="keep", help="I6: what a blank cell does (default keep)")
    p.add_argument("--tag", help="I14: customer import tag added to every user the import touches")
    p.add_argument("--failures", type=Path, metavar="OUT.csv", help="write the failed rows there (I15)")
    p.add_argument("--actor", help="the staff member importing (default: the OS user)")
    p.add_argument("--timeout", type=positive_seconds, default=600.0, metavar="SECONDS",
                   help="how long to wait for the service to apply the rows (default 600); exit 3 after")
    p.add_argument("--lease", type=positive_seconds, default=30.0, metavar="SECONDS",
                   help="I12: the import lock lapses this long after a killed importer's last heartbeat")
    p.set_defaults(handler=handler)


def _print(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()


async def handler(settings: Settings, args: argparse.Namespace) -> int:

    if args.file == "log" and args.more:
        if len(args.more) != 1:
            raise UsageError("usage: unifier import log CHANNEL")
        return await _log(settings, args.more[0])
    if args.file == "failures" and args.more:
        if len(args.more) != 2:
            raise UsageError("usage: unifier import failures CHANNEL IMPORT_ID [--failures OUT.csv]")
        return await _failures(settings, args.more[0], args.more[1], args.failures)
    if args.more:
        raise UsageError(f"unexpected arguments: {' '.join(args.more)}")
    if args.channel is None or args.mode is None:
        raise UsageError("unifier import FILE needs --channel and --mode member|lead")
    return await _import(settings, args)


async def _import(settings: Settings, args: argparse.Namespace) -> int:
    from .run import ImportNotApplied, ImportRefused, ImportRequest, run_import

    request = ImportRequest(
        path=Path(args.file), channel=args.channel, mode=args.mode, key=args.key, maps=tuple(args.map),
        blank=args.blank, tag=args.tag, failures=args.failures, timeout_s=args.timeout, lease_s=args.lease,
        **({"actor": args.actor} if args.actor else {}),
    )
    try:
        result = await run_import(settings, request, progress=sys.stderr)
    except ImportRefused as err:
        print(f"unifier: import refused: {err}", file=sys.stderr)
        return 2
    except ImportNotApplied as err:
        _print(err.result.to_json())
        print(f"unifier: {err}", file=sys.stderr)
        return 3
    _print(result.to_json())
    return 0


async def _log(settings: Settings, channel: str) -> int:
    from services.store import import_log
    from services.store.pool import database

    now = int(time.time() * 1000)
    async with database(settings) as pool:
        await import_log.purge_failures(pool, now)
        for r in await import_log.list_imports(pool, channel):
            _print(import_log.log_entry(r, now))
    return 0


async def _failures(settings: Settings, channel: str, import_id: str, out: Path | None) -> int:
    from services.store import import_log
    from services.store.pool import database

    from .failures import write_failures, write_failures_file

    now = int(time.time() * 1000)
    async with database(settings) as pool:
        record = await import_log.import_record(pool, channel, import_id)
        if record is None:
            print(f"unifier: no import {import_id!r} in channel {channel!r}", file=sys.stderr)
            return 1
        finished = record["finished_at"]
        if finished is not None and finished + import_log.FAILURES_KEPT_MS <= now:
            print(f"unifier: the failed rows of {import_id} were kept 30 days after it finished (I15); they are gone", file=sys.stderr)
            return 1
        keys = [c["key"] for c in record["columns"]]
        if out is not None:
            await write_failures_file(pool, channel, import_id, keys, out)
        else:
            await write_failures(pool, channel, import_id, keys, sys.stdout)
            sys.stdout.flush()
    return 0
