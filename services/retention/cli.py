"""`unifier retention sweep`: run the B4 retention decision now (e.g. daily from cron)."""

from __future__ import annotations

import argparse
import time

import orjson

from contracts.topics import Topics
from services.platform.config import Settings
from services.store.pool import database


def define(p: argparse.ArgumentParser) -> None:
    retention = p.add_subparsers(dest="retention_command", required=True)
    sweep = retention.add_parser("sweep", help="publish user.delete for every expired user")
    sweep.add_argument("--now", type=int, help="decision time, epoch ms (default: the clock now)")
    sweep.set_defaults(handler=_sweep)


async def _sweep(settings: Settings, args: argparse.Namespace) -> int:
    from services.platform.embedded import infrastructure

    from .retention import sweep

    now = args.now if args.now is not None else int(time.time() * 1000)  # the decision's input, logged as a fact
    async with infrastructure(settings) as (bootstrap, _url), database(settings) as pool:
        n = await sweep(pool, bootstrap, Topics(settings.topic_prefix), now, idempotence=settings.kafka_idempotence)
    print(orjson.dumps({"now": now, "deleted": n}).decode())
    return 0
