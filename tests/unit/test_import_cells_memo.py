"""Issue 14 (import ≥ 15,000 rows/s): `parse_cells` remembers the values of number and
date cells by their text (imports._RememberedCells, bounded), and a row's values and
errors (I9: a bad cell names its column and why) stay exactly those of the type's own
parser, however often a cell repeats."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.domain import imports
from services.domain.imports import Column, ImportDef, RowFailed, parse_cells
from services.domain.values import PARSERS, parse_date, parse_number

CH, IMP = "ch_cells", "imp_cells"
COLUMNS = (Column("id", "memberId", None), Column("points", "profile.points", "number"),
           Column("birthday", "profile.birthday", "date"), Column("plan", "profile.plan", "string"))
REMEMBERING = ImportDef.build(CH, IMP, "member", "memberId", "keep", None, COLUMNS)
# The same definition with the types' own parsers: what every row must equal.
PLAIN = ImportDef(CH, IMP, "member", "memberId", "keep", None, COLUMNS, {
    key: (col, PARSERS[col.type] if col.type in ("number", "date") else parse)
    for key, (col, parse) in REMEMBERING.parsers.items()
})

_NUMBERS = st.one_of(st.integers(-10**21, 10**21).map(str), st.floats(allow_nan=False).map(str),
                     st.sampled_from(["1", "01", "1.0", "1.01", " 7 ", "-0", "1,200", "+1", "1e3", "", " ", "x",
                                      "99999999999999999999", "9223372036854775808", "1.5.2"]))
_DATES = st.one_of(st.dates().map(str),
                   st.sampled_from(["1990-05-17", " 1990-05-17 ", "1990/05/17", "1990-02-30", "1990-13-01",
                                    "0000-01-01", "", "never", "1990-5-17"]))


def _outcome(definition: ImportDef, cells: dict[str, str]) -> Any:
    """The row's values with their types (1 and 1.0 differ), or its failure."""
    try:
        return sorted((k, type(v).__name__, v) for k, v in parse_cells(definition, cells).items())
    except RowFailed as err:
        return ("failed", err.code, err.columns, err.reason)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_NUMBERS, _DATES), min_size=1, max_size=6))
def test_i9_a_repeated_number_or_date_cell_gives_its_types_value_and_error(pairs: list[tuple[str, str]]) -> None:
    # Each cell once more, remembered by then, and in the other column too (a text read
    # as a number is no date).
    for points, birthday in [*pairs, *pairs, *((b, p) for p, b in pairs)]:
        cells = {"memberId": "M1", "profile.points": points, "profile.birthday": birthday, "profile.plan": "gold"}
        assert _outcome(REMEMBERING, cells) == _outcome(PLAIN, cells)


def test_i9_a_refused_cell_is_not_remembered_and_fails_the_same_way_again() -> None:
    cells = {"memberId": "M1", "profile.points": "1,200", "profile.birthday": "1990/05/17"}
    first = _outcome(REMEMBERING, cells)
    assert first == _outcome(REMEMBERING, cells) == _outcome(PLAIN, cells)
    assert first[2] == ("profile.points", "profile.birthday")
    numbers, dates = imports._REMEMBERED_PARSERS["number"], imports._REMEMBERED_PARSERS["date"]
    assert "1,200" not in numbers.known and "1990/05/17" not in dates.known  # type: ignore[attr-defined]


def test_the_remembered_cells_are_bounded_and_emptied_when_full() -> None:
    """Memory flat in the file size (issue 14): at most _REMEMBERED_CELLS values a
    parser; the next new one empties it first, and values stay right across it."""
    numbers: Any = imports._REMEMBERED_PARSERS["number"]
    dates: Any = imports._REMEMBERED_PARSERS["date"]
    cap = imports._REMEMBERED_CELLS
    assert cap == 32_768
    imports.forget()
    assert not numbers.known and not dates.known
    for i in range(cap):
        assert numbers(str(i)) == i
    assert len(numbers.known) == cap
    assert numbers("1.5") == 1.5 and len(numbers.known) == 1  # full: emptied, then kept
    assert numbers(str(cap - 1)) == cap - 1 and len(numbers.known) == 2
    assert dates("1970-01-02") == parse_date("1970-01-02") == 86_400_000
    assert numbers(" 7 ") == parse_number(" 7 ") == 7


@pytest.mark.parametrize("type_", ["string", "boolean", "datetime", "list", "listOfNumber"])
def test_other_types_are_parsed_as_before(type_: str) -> None:
    """Only number and date cells are remembered; the other types keep their parser."""
    definition = ImportDef.build(CH, IMP, "member", "memberId", "keep", None,
                                 (Column("id", "memberId", None), Column("x", "profile.x", type_)))
    assert definition.parsers["profile.x"][1] is PARSERS[type_]
