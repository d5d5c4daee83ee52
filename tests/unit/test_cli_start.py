"""The command line imports what the command it runs uses, and no more (docs/decisions.md,
"Issue 14, session 21: the command line's start-up"): `unifier --help` none of the
commands' modules, `unifier import` neither the HTTP API, the console, the replay, the
projection nor the inbound contract's pydantic models. Each command runs in a child
process, as a person runs it; the broker and database it is given listen nowhere, so a
command that connects stops at its first connection, having imported everything it
imports before connecting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.runtime import cli

ROOT = Path(__file__).resolve().parents[2]
NOWHERE = {"DATABASE_URL": "postgresql://unifier@127.0.0.1:1/unifier", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
# `python -m services.runtime.cli ARGS`, writing the names of the modules imported at exit.
DRIVER = (
    "import atexit, json, runpy, sys; out = sys.argv.pop(1); "
    "atexit.register(lambda: open(out, 'w').write(json.dumps(sorted(sys.modules)))); "
    "sys.argv = ['unifier', *sys.argv[1:]]; runpy.run_module('services.runtime.cli', run_name='__main__', alter_sys=True)"
)
# What no `unifier import` needs: the API and the console (FastAPI, templates, metrics),
# the replay, the live projection, and pydantic's inbound models (the importer reads the
# limits from contracts.limits).
NOT_FOR_IMPORT = (
    "services.api", "services.console", "fastapi", "starlette", "jinja2", "prometheus_client", "uvicorn",
    "faststream", "services.replay", "services.projection", "services.relay", "msgspec", "contracts.inbound",
)
# What the command line itself needs to print its help: none of the commands' modules,
# no settings, no driver.
NOT_FOR_HELP = (
    *NOT_FOR_IMPORT, "services.importer", "services.runtime.commands", "services.domain", "services.store",
    "pydantic", "pydantic_settings", "asyncpg", "aiokafka", "asyncio", "orjson",
)


def imported(tmp_path: Path, *args: str) -> tuple[int, set[str]]:
    out = tmp_path / "modules.json"
    ran = subprocess.run(
        [sys.executable, "-c", DRIVER, str(out), *args], cwd=ROOT, env={**os.environ, **NOWHERE},
        capture_output=True, timeout=120, check=False,
    )
    return ran.returncode, set(json.loads(out.read_text()))


def loaded(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    """The modules of `packages` among `modules`."""
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


def test_help_imports_no_command_module(tmp_path: Path) -> None:
    code, modules = imported(tmp_path, "--help")
    assert code == 0
    assert loaded(modules, NOT_FOR_HELP) == []


def test_import_help_imports_only_the_import_command(tmp_path: Path) -> None:
    code, modules = imported(tmp_path, "import", "--help")
    assert code == 0
    assert "services.importer.cli" in modules
    assert loaded(modules, NOT_FOR_HELP) == ["orjson", "orjson.orjson", "services.importer", "services.importer.cli"]


def test_an_import_loads_neither_the_api_nor_the_replay_nor_the_projection(tmp_path: Path) -> None:
    csv = tmp_path / "members.csv"
    csv.write_text("memberId,email\nm1,a@example.com\n", encoding="utf-8")
    code, modules = imported(tmp_path, "import", str(csv), "--channel", "ch", "--mode", "member")
    assert code == 1  # stopped at its first connection (nothing listens there)
    assert "services.importer.run" in modules and "aiokafka" in modules  # it got that far
    assert loaded(modules, NOT_FOR_IMPORT) == []


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_command_is_defined_where_commands_says(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """COMMANDS names a function that defines the command: its `--help` works."""
    with pytest.raises(SystemExit) as stopped:
        cli.main([name, "--help"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: unifier {name}")


def test_help_lists_every_command_with_its_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    listed = capsys.readouterr().out
    for name, command in cli.COMMANDS.items():
        assert f"    {name}" in listed and command.help.split()[0] in listed
