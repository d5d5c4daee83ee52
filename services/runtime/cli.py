"""The `unifier` command line (docs/contract.md, "Command line").

Entry points only parse and hand over. Usage errors exit 2 with what is wrong
(argparse's convention); "not found" exits 1.

`COMMANDS` lists every command and where it is defined. A command's module is imported
only when that command runs (pip's `commands_dict` does the same), so that `unifier
import` does not load the HTTP API, the replay or the projection, and `unifier --help`
loads none of them (docs/decisions.md, "Issue 14, session 21").
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

from services.platform.args import UsageError


class Command(NamedTuple):
    define: str  # "module:function": adds the command's arguments and handler to its parser
    help: str  # its line in `unifier --help`


# Every command, in the order `unifier --help` lists them. `define(parser)` adds the
# command's arguments, subcommands and `handler` (`async def handler(settings, args) ->
# int`, see commands.py) to the parser made here with the command's name and help.
COMMANDS: dict[str, Command] = {
    "run": Command("services.runtime.commands:define_run", "run projection, saga and outbox relay until SIGTERM/SIGINT"),
    "user": Command("services.runtime.commands:define_user", "read users"),
    "channel": Command("services.runtime.commands:define_channel", "channel settings"),
    "digest": Command("services.runtime.commands:define_digest", "print the sha256 digest of the live state"),
    "import": Command("services.importer.cli:define", "import members or leads from a CSV file; the import log; failed rows"),
    "replay": Command("services.replay.cli:define", "rebuild state from the retained topics into a fresh schema and switch to it"),
    "dead-letters": Command("services.runtime.deadletters:define", "list or retry dead-lettered inbound records"),
    "retention": Command("services.retention.cli:define", "B4: delete leads and members silent for two years"),
    "outbox": Command("services.relay.cli:define", "the relay's outbox: messages the broker refused"),
    "api": Command("services.api.cli:define_api", "serve the HTTP API alone (stateless: run as many as needed)"),
    "api-key": Command("services.api.cli:define_keys", "API keys: create (printed once), list, revoke"),
}

# The long-running commands say what they do; one-shot commands only what goes wrong.
LONG_RUNNING = frozenset({"run", "api"})


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser(argv).parse_args(argv)
    # Imported once the command line is parsed: `--help` and usage errors need none of it.
    import asyncio
    import logging

    from services.platform import kafka, logs
    from services.platform.config import ConfigError, Settings

    try:
        settings = Settings.from_env()
    except ConfigError as err:
        print(f"unifier: {err}", file=sys.stderr)
        return 2
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


def _uvloop_run(main: Any) -> Any:
    import uvloop

    return uvloop.run(main)


def _parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The command line's parser, with the arguments of the command `argv` names: the
    other commands are only their names and help lines, which is all that `unifier
    --help` and an unknown command's error show of them."""
    p = argparse.ArgumentParser(prog="unifier", description="Event-sourced customer identity: unify anonymous users, leads and members.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # `unifier` has no option but -h, so the command is the first word that is not an option.
    named = next((a for a in argv if not a.startswith("-")), None)
    for name, command in COMMANDS.items():
        parser = sub.add_parser(name, help=command.help)
        if name == named:
            define(command)(parser)
    return p


def define(command: Command) -> Any:
    """The function that defines `command` (importing its module)."""
    module, _, function = command.define.partition(":")
    return getattr(importlib.import_module(module), function)


if __name__ == "__main__":
    raise SystemExit(main())
