"""The failed-rows CSV (I15): `rowNumber`, `errorColumns`, `errorReason`, then the
mapped keys with the row's original values — a file a person can fix and import again
as it is (the header names keys, and the importer skips the three first columns).

Written with a UTF-8 BOM when it goes to a file, so that Excel opens Japanese text
correctly (the guide's advice for CSV files); the importer accepts the BOM.

Cells come from whoever wrote the imported file, so a cell starting with `=`, `+`, `-`,
`@`, a tab or a carriage return would run as a formula when staff open this file in a
spreadsheet (CSV injection). Every such cell is written with an apostrophe before it, as
OWASP advises, which spreadsheets show as text; the importer drops that apostrophe again
(csvfile.py), so a fixed file imports the original values.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import asyncpg

from services.store import import_log

from .csvfile import FORMULA_START


async def write_failures(
    pool: asyncpg.Pool, channel_id: str, import_id: str, keys: Sequence[str], out: IO[str],
) -> int:
    """Stream the import's failed rows into `out`; returns how many were written."""
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["rowNumber", "errorColumns", "errorReason", *(neutralise(k) for k in keys)])
    written = 0
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        async for number, columns, reason, cells in import_log.failed_rows(conn, channel_id, import_id):
            row = [",".join(columns), reason, *(cells.get(k, "") for k in keys)]
            writer.writerow([number, *(neutralise(c) for c in row)])
            written += 1
    return written


def neutralise(cell: str) -> str:
    """`cell` as text a spreadsheet will not evaluate (see the module's docstring)."""
    return "'" + cell if isinstance(cell, str) and cell.startswith(FORMULA_START) else cell


async def write_failures_file(
    pool: asyncpg.Pool, channel_id: str, import_id: str, keys: Sequence[str], path: Path,
) -> int:
    with path.open("w", encoding="utf-8-sig", newline="") as out:
        return await write_failures(pool, channel_id, import_id, keys, out)
