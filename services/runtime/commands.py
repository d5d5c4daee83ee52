"""The service's own commands: `unifier run`, `user show`, `channel configure` and
`digest` (docs/contract.md, "Command line"; services/runtime/cli.py lists every command).
Imported only when one of them runs; each handler imports what it needs.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from services.platform.args import UsageError, non_negative_int

if TYPE_CHECKING:
    from services.platform.config import Settings


def define_run(run: argparse.ArgumentParser) -> None:
    run.add_argument("--demo", action="store_true", help="also publish a small stream of sample SDK events")
    run.add_argument("--admin-key-file", type=Path, metavar="PATH",
                     help="make sure PATH (mode 0600) holds a live admin API key, creating one if not; print how to use it")
    run.set_defaults(handler=_run)


def define_user(user: argparse.ArgumentParser) -> None:
    show = user.add_subparsers(dest="user_command", required=True).add_parser(
        "show", help="print a user's current JSON (exit 1 when there is none)")
    show.add_argument("channel")
    who = show.add_mutually_exclusive_group(required=True)
    who.add_argument("--user-id")
    who.add_argument("--member-id")
    who.add_argument("--veil-id")
    who.add_argument("--email")
    who.add_argument("--mobile-number")
    show.set_defaults(handler=_user_show)


def define_channel(channel: argparse.ArgumentParser) -> None:
    conf = channel.add_subparsers(dest="channel_command", required=True).add_parser(
        "configure", help="set a channel's member-hash secret, MU limit, profile field types")
    conf.add_argument("channel")
    conf.add_argument("--member-hash-secret", help="H1: require memberHash on logins ('' removes it)")
    conf.add_argument("--mu-limit", type=non_negative_int, help="I17: managed-user limit")
    conf.add_argument("--field", action="append", default=[], metavar="profile.key:type", help="P2: declare a profile key's type")
    conf.set_defaults(handler=_channel_configure)


def define_digest(digest: argparse.ArgumentParser) -> None:
    digest.set_defaults(handler=_digest)


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
    from services.domain.hygiene import clean_email, clean_mobile
    from services.domain.values import Rejected
    from services.store.pool import database
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
    from services.domain.values import PARSERS

    fields: dict[str, str] = {}
    for spec in args.field:
        key, sep, type_name = spec.partition(":")
        if not sep or not key.startswith("profile.") or len(key) <= len("profile."):
            raise UsageError(f"--field {spec!r}: expected profile.key:type")
        if type_name not in PARSERS:
            raise UsageError(f"--field {spec!r}: type must be one of {', '.join(sorted(PARSERS))}")
        fields[key] = type_name
    from services.store.channels import KEEP, configure_channel
    from services.store.pool import database

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
    from services.store.pool import database

    async with database(settings) as pool:
        _print({"digest": await state_digest(pool)})
    return 0
