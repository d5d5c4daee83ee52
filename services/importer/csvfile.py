"""Reading the CSV file: the checks that refuse it (I13) and its records, streamed.

Row numbers count as a spreadsheet shows rows: the header is row 1, each following
*record* is the next row. A cell with a quoted line break is still one record, so it
does not shift the numbers of later rows (a spreadsheet shows it as one row). Blank
records — an empty line, or a line of empty cells — keep their number but are skipped.

CSV syntax is checked strictly before anything is published (issue 11): a quote that is
never closed (it would swallow the rest of the file into one cell) or text after a
closing quote refuses the file, naming the line. A quote closed much later by a stray one
cannot be told from a long multi-line cell by syntax; such a cell, longer than any cell
may be, fails its row with a reason that names the lines it swallowed (`swallowed`).

A cell the failures file neutralised (`'=…`, see failures.py) comes back without the
apostrophe, so that file can be fixed and imported again as it is.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    import _csv

from contracts.limits import MAX_VALUE

MAX_BYTES = 100 * 1024 * 1024  # I13
MAX_CELL = MAX_VALUE  # characters of one cell (what the service accepts in one)
_CHUNK = 1 << 20
# The first characters that make a spreadsheet read a cell as a formula (OWASP, "CSV
# injection"); failures.py prefixes such cells with an apostrophe.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

# What str.strip() strips (the characters str.isspace() is true of), and the comma: a
# line of only these is a record of blank cells (tests/unit/test_importer_output.py
# checks the list against every code point).
_BLANK = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000,"
)

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
    read = 0  # bytes before the chunk (lines are counted only to name one: `_line_at`)
    quoted = False  # no quote mark anywhere: no record can break the CSV syntax
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            quoted = quoted or b'"' in chunk
            if b"\x00" in chunk:
                line = _line_at(path, read + chunk.index(b"\x00"))
                raise FileRefused(f"{path.name} has NUL bytes (line {line}): it is not a CSV text file")
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as err:
                raise FileRefused(_not_utf8(path, _line_at(path, read + max(err.start, 0)))) from None
            read += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise FileRefused(_not_utf8(path, _line_at(path, read))) from None
    if quoted:
        _check_syntax(path)
    return FileFacts(size, digest.hexdigest())


def _line_at(path: Path, offset: int) -> int:
    """The line the file's byte at `offset` is on."""
    lines = 1
    with path.open("rb") as f:
        while offset > 0 and (chunk := f.read(min(_CHUNK, offset))):
            lines += chunk.count(b"\n")
            offset -= len(chunk)
    return lines


def _check_syntax(path: Path) -> None:
    """Parse every record strictly; FileRefused naming the line of the first error.

    Only a record with a quote mark can break the syntax (the file has no NUL, and a
    line ends at its line break: a line break inside a cell needs quotes), so only those
    are parsed, as the records are (`records_with_lines`)."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        held, reader = _quoted_records(f, strict=True)
        before = 0  # the lines before the record being read
        for line in f:
            if '"' not in line:
                before += 1
                continue
            held.append(line)
            at = reader.line_num
            try:
                next(reader)
            except csv.Error as err:
                if "unexpected end of data" in str(err):
                    raise FileRefused(
                        f"{path.name}: the quoted cell that starts on line {before + 1} is never closed, so it"
                        " would take in the rest of the file; close the quote (a quote inside a cell is written"
                        " as \"\")"
                    ) from None
                raise FileRefused(
                    f"{path.name}, line {before + reader.line_num - at}: not valid CSV ({err}); quote the whole"
                    " cell and write each quote inside it as \"\""
                ) from None
            before += reader.line_num - at


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
    for number, cells, lines in rows(path):
        yield number, cells.split(",") if isinstance(cells, str) else cells, lines


def rows(path: Path) -> Iterator[tuple[int, str | list[str], tuple[int, int]]]:
    """`records_with_lines`, but a plain line — no quote mark, no apostrophe — comes as
    its text without its line break, not split: its cells are `text.split(",")`, as read.

    Read as csv.reader reads them, ~5× faster (issue 14, session 20): a line without a
    quote mark is a whole record, its cells what lies between its commas — the reader
    finds exactly those, stepping through every character; a line with one starts a
    record that the csv module reads (`_quoted_records`), from that line on, as many
    lines as it spans (a record starts in the reader's first state whatever it read
    before, so the lines it skips do not matter)."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        held, reader = _quoted_records(f)
        held.extend(itertools.islice(f, 1))  # the header
        next(reader, None)
        number, last = 1, reader.line_num
        for line in f:
            number += 1
            if '"' not in line:
                first = last = last + 1
                text = line.rstrip("\r\n")
                if "'" not in text:
                    if text.strip(_BLANK):  # blank: empty cells, or only spaces
                        yield number, text, (first, first)
                    continue
                cells = text.split(",") if text else []
            else:
                held.append(line)
                at = reader.line_num
                cells = next(reader)
                first, last = last + 1, last + reader.line_num - at
            joined = "".join(cells)
            if cells and joined.strip():
                # Only a cell starting with a quote mark is restored: a row with none
                # anywhere is yielded as read.
                yield number, [_restore(c) for c in cells] if "'" in joined else cells, (first, last)


def _quoted_records(f: TextIO, strict: bool = False) -> tuple[list[str], _csv.Reader]:
    """A csv.reader for the records that start on a line with a quote mark: put the
    line in `held`, and the reader's next record is the one that starts there, read on
    from `f` as far as it spans (its `line_num` counts the lines it read). One reader
    for the file: a reader a record cost more than the csv module's parsing saved."""
    held: list[str] = []

    def lines() -> Iterator[str]:
        while line := held.pop() if held else f.readline():  # "": the end of the file
            yield line

    return held, csv.reader(lines(), strict=strict)


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
