"""Issue 11 item 3 through `unifier import`, the real broker and PostgreSQL: CSV syntax
errors, formula cells in the failures file, and rows too large for the service."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import asyncpg
import pytest

from contracts.topics import Topics
from services.importer.run import MAX_ROW_BYTES
from services.platform.config import Settings
from services.store.queries import find_user
from tests.support.imports import unifier, write_csv
from tests.support.service import read_topic, running_service

pytestmark = pytest.mark.integration

CH = "ch_hostile_csv"
FLAGS = ("--channel", CH, "--mode", "member")


def _failures(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))


async def test_i13_an_unclosed_quote_refuses_the_file_and_publishes_nothing(settings: Settings, pool: asyncpg.Pool, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "broken.csv", 'memberId,name,unsubscribeEmail,unsubscribeTexting\nm-1,A,false,false\nm-2,"B,false,false\nm-3,C,false,false\n')

    ran = await unifier(settings, "import", str(path), *FLAGS)

    assert ran.code == 2, ran.err
    assert "starts on line 3 is never closed" in ran.err
    assert await read_topic(settings, Topics(settings.topic_prefix).import_rows) == []


async def test_i15_formula_cells_reach_the_failures_file_as_text_and_import_again_unchanged(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path,
) -> None:
    """Issue 11: "formula cells (=, +, -, @) reach the failures CSV as formulas"."""
    name = "=HYPERLINK(\"http://evil.example\",\"click\")"
    members = write_csv(
        tmp_path / "m.csv",
        "memberId,name,email,unsubscribeEmail,unsubscribeTexting\n"
        f'm-1,"{name.replace(chr(34), chr(34) * 2)}",@not-an-email,false,false\n'
        "m-2,+cmd,-bad,false,false\n",
    )
    out = tmp_path / "failures.csv"
    async with running_service(settings):
        ran = await unifier(settings, "import", str(members), *FLAGS, "--failures", str(out))
        assert ran.code == 0 and ran.json()["failed"] == 2, ran.err

        failures = _failures(out)
        assert [f["name"] for f in failures] == ["'" + name, "'+cmd"]
        assert [f["profile.email"] for f in failures] == ["'@not-an-email", "'-bad"]
        # Staff blank the bad e-mails and import the file as it is.
        fixed = tmp_path / "fixed.csv"
        with fixed.open("w", encoding="utf-8-sig", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(failures[0]))
            writer.writeheader()
            writer.writerows({**row, "profile.email": ""} for row in failures)
        again = await unifier(settings, "import", str(fixed), *FLAGS)
        assert again.code == 0 and again.json()["created"] == 2, again.err

    first = await find_user(pool, CH, "member", "m-1")
    second = await find_user(pool, CH, "member", "m-2")
    assert first is not None and first["name"] == name  # the original value, no apostrophe
    assert second is not None and second["name"] == "+cmd"


async def test_i15_a_cell_that_swallowed_the_rows_after_it_fails_its_row_with_the_lines(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path,
) -> None:
    """A quote opened on line 3 and closed by a stray one on line 804: syntactically one
    cell. Its row fails naming the lines; the rows before and after are imported."""
    header = "memberId,name,unsubscribeEmail,unsubscribeTexting\n"
    swallowed = "".join(f"m-x{i},lost {i},false,false\n" for i in range(800))
    text = header + "m-1,A,false,false\n" + 'm-2,"B,false,false\n' + swallowed + 'stray",false,false\nm-3,C,false,false\n'
    path = write_csv(tmp_path / "s.csv", text)
    out = tmp_path / "failures.csv"
    async with running_service(settings):
        ran = await unifier(settings, "import", str(path), *FLAGS, "--failures", str(out))
        assert ran.code == 0, ran.err
        assert (ran.json()["created"], ran.json()["failed"]) == (2, 1)

    (failed,) = _failures(out)
    assert failed["rowNumber"] == "3"
    assert "from line 3 to line 804" in failed["errorReason"] and "not closed" in failed["errorReason"]
    assert await find_user(pool, CH, "member", "m-3") is not None


async def test_i15_a_row_too_large_for_the_service_fails_with_its_size_and_the_import_completes(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path,
) -> None:
    """The "row too large" check could never fire: an empty record batch takes any first
    record. Now the size is checked against the service's inbound limit."""
    columns = [f"note{i}" for i in range(20)]
    maps = [arg for c in columns for arg in ("--map", f"{c}=profile.{c}:string")]
    big = ",".join("x" * 3500 for _ in columns)  # 70 KB, each cell within the value limit
    small = ",".join("y" for _ in columns)
    path = write_csv(
        tmp_path / "big.csv",
        "memberId,unsubscribeEmail,unsubscribeTexting," + ",".join(columns) + "\n"
        f"m-1,false,false,{small}\nm-2,false,false,{big}\nm-3,false,false,{small}\n",
    )
    out = tmp_path / "failures.csv"
    async with running_service(settings):
        ran = await unifier(settings, "import", str(path), *FLAGS, *maps, "--failures", str(out), timeout=180)
        assert ran.code == 0, ran.err
        assert (ran.json()["created"], ran.json()["failed"]) == (2, 1)

    (failed,) = _failures(out)
    assert failed["rowNumber"] == "3" and "too large" in failed["errorReason"] and str(MAX_ROW_BYTES) in failed["errorReason"]
    assert await find_user(pool, CH, "member", "m-2") is None
