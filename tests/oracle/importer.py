"""The importer's reading and publishing as they were before issue 14 session 20 (helper
"importer"), kept as the oracle of tests/unit/test_importer_output.py: the same file
through this copy and through services/importer must give the same refusal (its
wording), the same records and the same published bytes, chunk by chunk, in the same
order, with the same batches shipped.

A verbatim copy of services/importer/csvfile.py and of `_Chunk`, `Import._publish_rows`
and `Import._send_chunk` of services/importer/run.py at 2c4cde8 (the methods as
functions of the import `self`; imports rewritten). Never edit it to make a test pass:
it is the behaviour the importer must keep.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from contracts.inbound import MAX_VALUE
from services.importer.producer import ImportProducer
from services.importer.run import CHUNK_BYTES, CHUNK_ROWS, MAX_ROW_BYTES, ImportNotApplied, _now_ms

MAX_BYTES = 100 * 1024 * 1024  # I13
MAX_CELL = MAX_VALUE  # characters of one cell (what the service accepts in one)
_CHUNK = 1 << 20
# The first characters that make a spreadsheet read a cell as a formula (OWASP, "CSV
# injection"); failures.py prefixes such cells with an apostrophe.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

# A cell may be as large as the file; the default 128 kB limit would stop mid-import.
csv.field_size_limit(MAX_BYTES)


class FileRefused(Exception):
    """The file cannot be imported (I13); the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class FileFacts:
    size: int
    sha256: str


def inspect(path: Path) -> FileFacts:
    """Check size and encoding before anything is published, streaming the file once.
    Also returns its digest, which names the import (see importer.run)."""
    try:
        size = path.stat().st_size
    except OSError as err:
        raise FileRefused(f"cannot read {path}: {err.strerror}") from None
    if not path.is_file():
        raise FileRefused(f"{path} is not a file")
    if size > MAX_BYTES:
        raise FileRefused(f"{path.name} is {size / 1e6:.1f} MB; files up to 100 MB can be imported (I13): split it")
    if size == 0:
        raise FileRefused(f"{path.name} is empty: the first row must name the columns")
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines = 1
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            if b"\x00" in chunk:
                line = lines + chunk[: chunk.index(b"\x00")].count(b"\n")
                raise FileRefused(f"{path.name} has NUL bytes (line {line}): it is not a CSV text file")
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as err:
                line = lines + chunk[: max(err.start, 0)].count(b"\n")
                raise FileRefused(_not_utf8(path, line)) from None
            lines += chunk.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise FileRefused(_not_utf8(path, lines)) from None
    _check_syntax(path)
    return FileFacts(size, digest.hexdigest())


def _check_syntax(path: Path) -> None:
    """Parse every record strictly; FileRefused naming the line of the first error."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, strict=True)
        started = 1  # the line the record being read starts on
        try:
            for _ in reader:
                started = reader.line_num + 1
        except csv.Error as err:
            if "unexpected end of data" in str(err):
                raise FileRefused(
                    f"{path.name}: the quoted cell that starts on line {started} is never closed, so it would"
                    " take in the rest of the file; close the quote (a quote inside a cell is written as \"\")"
                ) from None
            raise FileRefused(
                f"{path.name}, line {reader.line_num}: not valid CSV ({err}); quote the whole cell and write"
                " each quote inside it as \"\""
            ) from None


def _not_utf8(path: Path, line: int) -> str:
    return (
        f"{path.name} is not UTF-8 (first bad byte on line {line}); save it as"
        " \"CSV UTF-8 (comma delimited)\" and import it again (I13)"
    )


def header(path: Path) -> list[str]:
    """The first record: the column names (a UTF-8 BOM before it is dropped)."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        first = next(csv.reader(f), None)
    if not first or not any(cell.strip() for cell in first):
        raise FileRefused(f"{path.name}: the first row must name the columns")
    return first


def records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(rowNumber, cells) of every non-blank data record, in file order."""
    for number, cells, _lines in records_with_lines(path):
        yield number, cells


def records_with_lines(path: Path) -> Iterator[tuple[int, list[str], tuple[int, int]]]:
    """(rowNumber, cells, (first line, last line)) of every non-blank data record."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        next(reader, None)
        number, last = 1, reader.line_num
        for cells in reader:
            number += 1
            first, last = last + 1, reader.line_num
            joined = "".join(cells)
            if cells and joined.strip():
                # Only a cell starting with a quote mark is restored: a row with none
                # anywhere is yielded as read (most rows; ~2 µs a row of nine cells).
                yield number, [_restore(c) for c in cells] if "'" in joined else cells, (first, last)


def _restore(cell: str) -> str:
    """Undo failures.py's neutralisation: `'=SUM(…)` is read as `=SUM(…)`."""
    return cell[1:] if cell[:1] == "'" and cell[1:2] in FORMULA_START else cell


def swallowed(cells: list[str], lines: tuple[int, int]) -> str | None:
    """Why the row looks like an unclosed quote took in the lines after it, or None: a
    cell with line breaks longer than any cell may be."""
    if lines[0] == lines[1]:
        return None  # a record read from one line: no cell of it holds a line break
    for i, cell in enumerate(cells):
        if "\n" in cell and len(cell) > MAX_CELL:
            return (
                f"column {i + 1} runs from line {lines[0]} to line {lines[1]} ({len(cell)} characters): a quote"
                " is probably not closed, and the lines after it were read into this cell"
            )
    return None


class _Chunk:
    """The `import.rows` record being filled: rows as their JSON, joined when it is sent
    (each row is serialised once)."""

    def __init__(self, channel: str, import_id: str) -> None:
        self.channel, self.import_id = channel, import_id
        self.rows: list[bytes] = []
        self.first = 0
        self.size = 0
        # An `import.row` is its envelope and the row's fields: the envelope's size, with
        # the eventId's row number and occurredAt's digits counted apart.
        self._envelope = len(orjson.dumps({
            "eventId": f"{import_id}:", "type": "import.row", "channelId": channel, "occurredAt": _now_ms(),
            "importId": import_id,
        }))

    def one_row_bytes(self, row: bytes, number: int) -> int:
        return self._envelope + len(str(number)) + len(row) - 1  # the row's braces replace one of the envelope's

    def fits(self, row: bytes) -> bool:
        return len(self.rows) < CHUNK_ROWS and self.size + len(row) + 1 <= CHUNK_BYTES

    def add(self, row: bytes, number: int) -> None:
        if not self.rows:
            self.first = number
        self.rows.append(row)
        self.size += len(row) + 1

    def take(self, now: int) -> tuple[bytes, int]:
        head = orjson.dumps({
            "eventId": f"{self.import_id}:rows:{self.first}", "type": "import.rows", "channelId": self.channel,
            "occurredAt": now, "importId": self.import_id,
        })
        value = head[:-1] + b',"rows":[' + b",".join(self.rows) + b"]}"
        n = len(self.rows)
        self.rows, self.size = [], 0
        return value, n


async def _publish_rows(self: Any, producer: ImportProducer) -> int:
    """The rows in `import.rows` chunks (contract 1.3.0): consecutive rows, in row
    order, up to CHUNK_ROWS or CHUNK_BYTES a record, so the broker and the service pay
    per chunk rather than per row. A chunk is cut where the window stops publishing,
    so pacing stays in rows."""
    pairs = list(zip(self.mapping.positions, self.mapping.keys, strict=True))
    reach = max(self.mapping.positions) + 1
    width = self.width
    stall = self.settings.import_stall_after_rows
    chunk = _Chunk(self.channel, self.import_id)
    for number, cells, lines in records_with_lines(self.req.path):
        if stall and self.read == stall:
            await _send_chunk(self, producer, chunk)
            await producer.flush()
            await asyncio.Event().wait()
        n = len(cells)
        if n >= reach:
            mapped = {key: cells[i] for i, key in pairs}
        else:
            mapped = {key: cells[i] if i < n else "" for i, key in pairs}
        row: dict[str, Any] = {"rowNumber": number, "cells": mapped}
        if n > width and any(c.strip() for c in cells[width:]):
            row["rowError"] = (
                f"the row has {n} cells but the header names {width} columns;"
                " a cell with a comma must be quoted"
            )
        elif (why := swallowed(cells, lines)) is not None:  # renamed: the function's name here
            row["cells"], row["rowError"] = {}, why
        value = orjson.dumps(row)
        # A row must fit the service's inbound limit as the one-row `import.row` it
        # stands for (a dead letter of it holds that message; a retry applies it).
        if (size := chunk.one_row_bytes(value, number)) > MAX_ROW_BYTES:
            row["cells"], row["rowError"] = {}, (
                f"the row is too large to import ({size} bytes as a message; the limit is {MAX_ROW_BYTES})"
            )
            value = orjson.dumps(row)
        if self.read >= self.allowed:
            await _send_chunk(self, producer, chunk)
            await producer.ship()
            await self._wait_for_room(producer)
        elif not chunk.fits(value):
            await _send_chunk(self, producer, chunk)
        chunk.add(value, number)
        self.read += 1
    await _send_chunk(self, producer, chunk)
    await producer.flush()
    return self.read


async def _send_chunk(self: Any, producer: ImportProducer, chunk: _Chunk) -> None:
    if not chunk.rows:
        return
    value, rows = chunk.take(_now_ms())
    if not producer.add(value, rows):
        await producer.ship()
        producer.add(value, rows)  # an empty batch takes any record
        if self.lock_lost:
            raise ImportNotApplied("the import lock was lost (the importer stalled past its lease)", self._result(None))
        await self._report(None)
