"""The `unifier` command line (docs/contract.md, "Command line").

Entry points only parse and hand over. Usage errors exit 2 with what is wrong
(argparse's convention); "not found" exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from services.domain.hygiene import clean_email, clean_mobile
from services.domain.values import PARSERS, Rejected
from services.platform import kafka, logs
from services.platform.args import UsageError, non_negative_int
from services.platform.config import ConfigError, Settings
from services.store.pool import database


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as err:
        print(f"unifier: {err}", file=sys.stderr)
        return 2
    # The long-running commands say what they do; one-shot commands only what goes wrong.
    logs.setup(settings.log_level or ("INFO" if args.command in LONG_RUNNING else "WARNING"), settings.log_format)
    kafka.use(settings)
    # A command may ask for uvloop (`set_defaults(uvloop=True)`: `unifier api`).
    run = _uvloop_run if getattr(args, "uvloop", False) else asyncio.run
    try:
        return int(run(args.handler(settings, args)) or 0)
    except UsageError as err:
        print(f"unifier: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception:
        # One JSON line with the error and its stack, scrubbed like every log line,
        # rather than a raw traceback on stderr.
        logging.getLogger("unifier").critical("unifier %s stopped by an unexpected error", args.command, exc_info=True)
        return 1


LONG_RUNNING = frozenset({"run", "api"})


def _uvloop_run(main: Any) -> Any:
    import uvloop

    return uvloop.run(main)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unifier", description="Event-sourced customer identity: unify anonymous users, leads and members.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run projection, saga and outbox relay until SIGTERM/SIGINT")
    run.add_argument("--demo", action="store_true", help="also publish a small stream of sample SDK events")
    run.add_argument("--admin-key-file", type=Path, metavar="PATH",
                     help="make sure PATH (mode 0600) holds a live admin API key, creating one if not; print how to use it")
    run.set_defaults(handler=_run)

    user = sub.add_parser("user", help="read users").add_subparsers(dest="user_command", required=True)
    show = user.add_parser("show", help="print a user's current JSON (exit 1 when there is none)")
    show.add_argument("channel")
    who = show.add_mutually_exclusive_group(required=True)
    who.add_argument("--user-id")
    who.add_argument("--member-id")
    who.add_argument("--veil-id")
    who.add_argument("--email")
    who.add_argument("--mobile-number")
    show.set_defaults(handler=_user_show)

    channel = sub.add_parser("channel", help="channel settings").add_subparsers(dest="channel_command", required=True)
    conf = channel.add_parser("configure", help="set a channel's member-hash secret, MU limit, profile field types")
    conf.add_argument("channel")
    conf.add_argument("--member-hash-secret", help="H1: require memberHash on logins ('' removes it)")
    conf.add_argument("--mu-limit", type=non_negative_int, help="I17: managed-user limit")
    conf.add_argument("--field", action="append", default=[], metavar="profile.key:type", help="P2: declare a profile key's type")
    conf.set_defaults(handler=_channel_configure)

    digest = sub.add_parser("digest", help="print the sha256 digest of the live state")
    digest.set_defaults(handler=_digest)

    for module in EXTENSIONS:
        importlib.import_module(module).register(sub)
    return p


# Packages that add their own subcommands: each has `register(subparsers)` whose
# handlers are `async def handler(settings, args) -> int` (see `_user_show`).
EXTENSIONS: tuple[str, ...] = (
    "services.importer.cli", "services.replay.cli", "services.runtime.deadletters", "services.retention.cli",
    "services.relay.cli",
    "services.api.cli",
)


def _print(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    from services.platform import gc_tuning

    from .service import run_service

    gc_tuning.tune()

    if not args.demo and args.admin_key_file is None:
        await run_service(settings)
        return 0
    from .demo import CHANNEL, run_demo

    ready = asyncio.Event()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    greet = None
    if args.admin_key_file is not None:
        from .newcomer import greet as greet_newcomer

        async def greet(address: str, running: Settings) -> None:
            await greet_newcomer(running, args.admin_key_file, address, CHANNEL)

    service = asyncio.create_task(run_service(settings, stop, ready=ready, api_started=greet))
    started: list[asyncio.Future[Any]] = [service, asyncio.ensure_future(ready.wait())]
    await asyncio.wait(started, return_when=asyncio.FIRST_COMPLETED)
    demo = None if service.done() or not args.demo else asyncio.create_task(run_demo(settings, stop))
    await service
    if demo is not None:
        demo.cancel()
    return 0


async def _user_show(settings: Settings, args: argparse.Namespace) -> int:
    from services.store.queries import find_user

    try:
        if args.user_id is not None:
            by, value = "id", args.user_id
        elif args.member_id is not None:
            by, value = "member", args.member_id.strip()
        elif args.veil_id is not None:
            by, value = "veil", args.veil_id.strip()
        elif args.email is not None:
            by, value = "email", clean_email(args.email)
        else:
            by, value = "mobile", clean_mobile(args.mobile_number)
    except Rejected as err:
        raise UsageError(err.reason) from None
    async with database(settings) as pool:
        found = await find_user(pool, args.channel, by, value)
    if found is None:
        print(f"unifier: no user in channel {args.channel!r} with {by} {value!r}", file=sys.stderr)
        return 1
    _print(found)
    return 0


async def _channel_configure(settings: Settings, args: argparse.Namespace) -> int:
    fields: dict[str, str] = {}
    for spec in args.field:
        key, sep, type_name = spec.partition(":")
        if not sep or not key.startswith("profile.") or len(key) <= len("profile."):
            raise UsageError(f"--field {spec!r}: expected profile.key:type")
        if type_name not in PARSERS:
            raise UsageError(f"--field {spec!r}: type must be one of {', '.join(sorted(PARSERS))}")
        fields[key] = type_name
    from services.store.channels import KEEP, configure_channel

    async with database(settings) as pool:
        configured = await configure_channel(
            pool, args.channel, fields=fields,
            member_hash_secret=KEEP if args.member_hash_secret is None else args.member_hash_secret,
            mu_limit=KEEP if args.mu_limit is None else args.mu_limit,
        )
    _print(configured)
    return 0


async def _digest(settings: Settings, args: argparse.Namespace) -> int:
    from services.replay.digest import state_digest

    async with database(settings) as pool:
        _print({"digest": await state_digest(pool)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
