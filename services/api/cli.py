"""`unifier api` (the HTTP API alone) and `unifier api-key create|list|revoke`.

    unifier api [--workers N]                     serve on UNIFIER_HTTP_ADDR until SIGTERM/SIGINT
    unifier api-key create --scope read|write|admin [--channel C] [--name N]
    unifier api-key list
    unifier api-key revoke KEY_ID|NAME
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any

import orjson

from services.platform.args import UsageError, positive_int
from services.platform.config import Settings
from services.store import api_keys
from services.store.pool import database


def define_api(api: argparse.ArgumentParser) -> None:
    api.add_argument("--workers", type=positive_int, default=1, metavar="N",
                     help="serve from N processes sharing the address (default 1: this process; "
                          "one per core: a request's CPU is Python's)")
    # uvloop: the event loop of libuv, less CPU per request (docs/decisions.md, "HTTP API: reads measured").
    api.set_defaults(handler=_api, uvloop=True)


def define_keys(keys: argparse.ArgumentParser) -> None:
    ksub = keys.add_subparsers(dest="key_command", required=True)
    create = ksub.add_parser("create", help="create a key and print it once (only its hash is kept)")
    create.add_argument("--scope", required=True, choices=api_keys.SCOPES, help="read < write < admin")
    create.add_argument("--channel", help="limit the key to one channel")
    create.add_argument("--name", help="the key's name: the `actor` of the commands it sends (default key-<id>)")
    create.set_defaults(handler=_create)
    ksub.add_parser("list", help="every key (never the key itself)").set_defaults(handler=_list)
    revoke = ksub.add_parser("revoke", help="revoke a key by its id or name (at once: its next request is 401)")
    revoke.add_argument("key", metavar="KEY_ID|NAME")
    revoke.set_defaults(handler=_revoke)


def _print(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()


async def _api(settings: Settings, args: argparse.Namespace) -> int:
    from services.platform import gc_tuning
    from services.platform.embedded import infrastructure

    from .app import create_app
    from .server import serve

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    if args.workers > 1:
        from .workers import supervise

        return await supervise(settings, args.workers, stop)
    async with infrastructure(settings) as (bootstrap, database_url):
        resolved = settings.replace(kafka_bootstrap=bootstrap, database_url=database_url)
        app = create_app(resolved)
        gc_tuning.tune()  # a request allocates thousands of objects, nearly none in cycles
        await serve(app, settings.http_addr, stop)
    return 0


async def _create(settings: Settings, args: argparse.Namespace) -> int:
    name = args.name.strip() if args.name is not None else None
    if name is not None and not 0 < len(name) <= 128:
        raise UsageError("--name must be 1 to 128 characters")
    async with database(settings) as pool:
        try:
            key, record = await api_keys.create_key(pool, args.scope, args.channel, name)
        except ValueError as err:
            raise UsageError(str(err)) from None
    _print({**record, "key": key})
    print("unifier: the key is shown once; store it now (only its hash is kept)", file=sys.stderr)
    return 0


async def _list(settings: Settings, args: argparse.Namespace) -> int:
    async with database(settings) as pool:
        for record in await api_keys.list_keys(pool):
            _print(record)
    return 0


async def _revoke(settings: Settings, args: argparse.Namespace) -> int:
    async with database(settings) as pool:
        record = await api_keys.revoke_key(pool, args.key)
    if record is None:
        print(f"unifier: no live key with id or name {args.key!r}", file=sys.stderr)
        return 1
    _print(record)
    return 0
