"""Issue 11 item 3, the CSV side: syntax errors refuse the file or fail the row with a
clear reason, and formula cells never reach the failures file as formulas (I13, I15)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.importer import csvfile
from services.importer.failures import neutralise


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "in.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_i13_an_unclosed_quote_refuses_the_file_naming_the_line_it_opens_on(tmp_path: Path) -> None:
    """Without the check the quote took in every later row as one cell, silently."""
    path = _file(tmp_path, 'memberId,name\nm-1,Taro\nm-2,"Hanako\nm-3,Jiro\nm-4,Saburo\n')

    with pytest.raises(csvfile.FileRefused, match="starts on line 3 is never closed"):
        csvfile.inspect(path)


def test_i13_text_after_a_closing_quote_refuses_the_file_naming_the_line(tmp_path: Path) -> None:
    path = _file(tmp_path, 'memberId,name\nm-1,Taro\nm-2,"Ha"nako\n')

    with pytest.raises(csvfile.FileRefused, match=r"line 3: not valid CSV"):
        csvfile.inspect(path)


def test_i13_quoted_line_breaks_and_doubled_quotes_are_valid(tmp_path: Path) -> None:
    path = _file(tmp_path, 'memberId,memo\nm-1,"two\nlines"\nm-2,"say ""hi"""\n')

    csvfile.inspect(path)
    assert list(csvfile.records_with_lines(path)) == [
        (2, ["m-1", "two\nlines"], (2, 3)), (3, ["m-2", 'say "hi"'], (4, 4)),
    ]


def test_i15_a_cell_that_took_in_the_rows_after_it_fails_its_row_naming_the_lines() -> None:
    """A quote closed by a stray one far below: valid syntax, but the cell is longer than
    any cell may be and holds line breaks, so the row fails with the lines it swallowed."""
    swallowed = "Hanako\n" + "m-9,x\n" * 900 + "end"

    reason = csvfile.swallowed(["m-2", swallowed], (3, 903))

    assert reason is not None and "from line 3 to line 903" in reason and "not closed" in reason
    assert csvfile.swallowed(["m-2", "a\nshort\nmemo"], (3, 5)) is None
    assert csvfile.swallowed(["m-2", "x" * 10_000], (3, 3)) is None  # long but one line: the value's limit says so


@pytest.mark.parametrize("cell", ["=1+1", "+81 90-1234-5678", "-2", "@SUM(A1)", "\tx", "\rx", '=HYPERLINK("http://x","y")'])
def test_i15_formula_cells_are_written_as_text_and_read_back_unchanged(cell: str) -> None:
    """OWASP CSV injection: an apostrophe before =, +, -, @, tab, CR; the importer drops it."""
    written = neutralise(cell)

    assert written == "'" + cell
    assert csvfile._restore(written) == cell


@given(st.text(max_size=40))
def test_i15_neutralise_then_restore_is_the_identity(cell: str) -> None:
    assert csvfile._restore(neutralise(cell)) == cell or cell.startswith("'") and cell[1:2] in csvfile.FORMULA_START


def test_i15_plain_cells_are_left_alone() -> None:
    for cell in ("Taro", "taro@example.jp", "090-1234-5678", "'quoted", "1,200", ""):
        assert neutralise(cell) == cell


def test_i15_a_failures_file_row_reads_back_as_the_original_cells(tmp_path: Path) -> None:
    row = ["m-1", "=cmd|' /C calc'!A0", "@x", "plain"]
    out = io.StringIO()
    csv.writer(out).writerows([["memberId", "a", "b", "c"], [neutralise(c) for c in row]])
    path = _file(tmp_path, out.getvalue())

    assert [cells for _, cells in csvfile.records(path)] == [row]


def _records_as_before(path: Path) -> list[tuple[int, list[str], tuple[int, int]]]:
    """records_with_lines before issue 14 session 12: every cell restored, every row."""
    out = []
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        next(reader, None)
        number, last = 1, reader.line_num
        for cells in reader:
            number += 1
            first, last = last + 1, reader.line_num
            if cells and "".join(cells).strip():
                out.append((number, [csvfile._restore(c) for c in cells], (first, last)))
    return out


def _swallowed_as_before(cells: list[str]) -> bool:
    return any("\n" in cell and len(cell) > csvfile.MAX_CELL for cell in cells)


_CELL = st.one_of(
    st.text(alphabet="ab '=+-@\t\r\n,\"", max_size=8),
    st.sampled_from(["'=SUM(A1)", "O'Brien", "'", "''", "'\r", "a\nb", "\r\n", " ", ""]),
    st.builds(lambda n: "x\n" * n, st.integers(min_value=2_100, max_value=2_300)),  # longer than MAX_CELL
)


# No deadline: cells of ~4,600 characters took over hypothesis' 200 ms on a loaded CI machine.
@settings(deadline=None)
@given(st.lists(st.lists(_CELL, min_size=1, max_size=4), max_size=6), st.sampled_from(["\n", "\r\n", "\r"]))
def test_i15_rows_read_with_the_fast_paths_are_the_rows_read_before(rows: list[list[str]], eol: str) -> None:
    """The importer's fast paths (a row without a quote mark yielded as read; a row read
    from one line never checked for a swallowing cell) change no row, no line span and
    no verdict, with quote marks, formulas, line breaks of every kind and long cells."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        buf = io.StringIO()
        csv.writer(buf, lineterminator=eol).writerows([["memberId", "memo"], *rows])
        path = _file(Path(tmp), buf.getvalue())
        got = list(csvfile.records_with_lines(path))
        assert got == _records_as_before(path)
        for _number, cells, lines in got:
            assert (csvfile.swallowed(cells, lines) is not None) == _swallowed_as_before(cells)
