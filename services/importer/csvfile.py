"""Reading the CSV file: the checks that refuse it (I13) and its records, streamed.

Row numbers count as a spreadsheet shows rows: the header is row 1, each following
*record* is the next row. A cell with a quoted line break is still one record, so it
does not shift the numbers of later rows (a spreadsheet shows it as one row). Blank
records — an empty line, or a line of empty cells — keep their number but are skipped.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAX_BYTES = 100 * 1024 * 1024  # I13
_CHUNK = 1 << 20

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
    return FileFacts(size, digest.hexdigest())


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
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        next(reader, None)
        number = 1
        for cells in reader:
            number += 1
            if cells and "".join(cells).strip():
                yield number, cells
