"""Issue 14, session 22: a row that creates a new member or lead is read straight into
the new user (imports._NewRows, the plain path `plain_new_row`), and its `created`
message, stored state and COPY row are those of the general path — the `import.row`
handler (`on_import_row`: `parse_cells`, `_new_user`, `_set`, the core's publish), the
oracle here — byte for byte, whatever the cells hold.

Each property applies the same rows to two copies of one world, one with the plain path
and one without it (`core.PLAIN` emptied of `import.row`), and compares after every row:
the outcome (a rejection's code and reason; the messages' keys and bytes), every user's
stored state and COPY row, the directory's index and which users changed in which order,
and the import's tally with its failed rows (I15: their columns and reasons, I9). The
rows draw every column kind (memberId, contacts, name, the flags, tags, each profile
type) with hostile cells: blanks and spaces, any Unicode (lone surrogates, NUL, controls),
placeholders (G1), refused values of each type (I9), a missing column; in member and lead
imports (I1, I3), keeping or clearing blanks (I6), with and without a tag (I14), beside
users holding the rows' memberIds and contacts (I2, I3, U5) and past the size limit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.inbound import ImportRow
from services.domain import core, imports, limits
from services.domain.core import Fact, Outcome
from services.domain.directory import Directory
from services.domain.hygiene import clean_email, clean_member_id, clean_mobile
from services.domain.ids import member_user_id
from services.domain.imports import Column, ImportBook, ImportChannel, ImportDef
from services.domain.user import EMAIL, MOBILE, User, Value
from services.domain.values import parse_boolean, parse_string, parse_tags
from services.store import rowcodec
from services.store.rows import USER_TYPES, user_record

CH, IMP, T0 = "ch_new", "imp_new", 1_767_225_600_000

# Every column kind a row can hold: cells that fit it (a blank fits all but the key and
# the flags, I6/I7), and cells it refuses (I9, G1) or any text at all (surrogates,
# controls, NUL). Mostly the first, so that most rows create users.
_FLAGS = (["true", "false", "yes", "no", "Y", "n", "1", "0", " TRUE "], ["maybe", "2", "", "  "])
_CELLS: dict[str, tuple[list[str], list[str]]] = {
    "memberId": ([*(f"n{i}" for i in range(30)), "m1", "m2", " m3 ", "会員4"], ["null", "undefined", " guest ", "", "  "]),
    "name": (["Taro", "花子", " spaced ", "tab\there", "\u2028", "\x7f", "", " "], ["a\x00b", "\ud800"]),
    EMAIL: ([*(f"r{i}@x.jp" for i in range(30)), "a@x.jp", "A@X.JP ", "b@x.jp", "c@x.jp", "", " "],
            ["not-an-email", "null"]),
    MOBILE: ([*(f"+8190{i:08d}" for i in range(30)), "+819012345678", "+81 90-1234-5678", "+819087654321", ""],
             ["+81", "090"]),
    "unsubscribeEmail": _FLAGS,
    "unsubscribeTexting": _FLAGS,
    "hasPushToken": (_FLAGS[0] + ["", " "], ["maybe"]),
    "tags": (['["t1"]', '["a/b","t1","t1"]', '["b","a"]', "[]", "", " "], ['["a b"]', "[1"]),
    "profile.plan": (["gold", " free ", "", "  ", "\x1f", "\U0001f600", "\"q\"", "x" * 300], ["\udfff"]),
    "profile.points": (["1", "01", "1.5", "-0", " 7 ", "9223372036854775807", "0.1", ""],
                       ["1,200", "x", "99999999999999999999", "9223372036854775808", "1e3"]),
    "profile.birthday": (["1990-05-17", " 1990-05-17 ", "2000-02-29", ""], ["1990/05/17", "1990-02-30", "never"]),
    "profile.seen": (["2026-01-02T03:04:05Z", "2026-01-02T03:04:05+09:00", "2026-01-02T03:04:05", "1767225600000", ""],
                     ["soon"]),
    "profile.vip": (_FLAGS[0] + [""], ["maybe"]),
    "profile.likes": (['["a","b"]', "[]", '["a","a"]', ""], ['["a",1]', "[1"]),
    "profile.scores": (["[1,2]", "[1.5]", "[]", ""], ['["x"]']),
    "profile.utmSource": (["ads", "mail", ""], []),  # write-once (P3)
    "profile.referrer": (["https://x.jp/?a=1", ""], []),  # write-once (P3)
}
_TYPES = {"profile.plan": "string", "profile.points": "number", "profile.birthday": "date",
          "profile.seen": "datetime", "profile.vip": "boolean", "profile.likes": "list",
          "profile.scores": "listOfNumber", "profile.utmSource": "string", "profile.referrer": "string"}
_OPTIONAL = sorted(k for k in _CELLS if k not in ("memberId", EMAIL, MOBILE, "unsubscribeEmail", "unsubscribeTexting"))
_any_text = st.text(st.characters(codec=None), max_size=12)


def _cell(key: str) -> st.SearchStrategy[str]:
    good, bad = _CELLS[key]
    # Hypothesis leans to small draws: the fitting cells first, refused ones at the end.
    return st.integers(0, 29).flatmap(
        lambda i: st.sampled_from(good) if i < 27 or not bad else st.sampled_from(bad) if i < 29 else _any_text)


@st.composite
def _definitions(draw: st.DrawFn) -> ImportDef:
    """A member or lead import (I1) of a subset of the columns, each header the key or not."""
    mode = draw(st.sampled_from(["member", "lead"]))
    keys: list[str] = []
    if mode == "member":
        keys.append("memberId")
        keys += [k for k in (EMAIL, MOBILE) if draw(st.booleans())]
        key = "memberId"
    else:
        key = draw(st.sampled_from(["email", "mobileNumber"]))
        keys.append(EMAIL if key == "email" else MOBILE)
        other = MOBILE if key == "email" else EMAIL
        if draw(st.booleans()):
            keys.append(other)
    # I7: both flags mapped, mostly; a new row fails without either.
    keys += [k for k in ("unsubscribeEmail", "unsubscribeTexting") if draw(st.integers(0, 9)) < 9]
    keys += draw(st.lists(st.sampled_from(_OPTIONAL), unique=True, max_size=len(_OPTIONAL)))
    order = draw(st.permutations(keys))
    columns = [Column(k if draw(st.booleans()) else f"Col {i}", k, _TYPES.get(k)) for i, k in enumerate(order)]
    return ImportDef.build(CH, IMP, mode, key, draw(st.sampled_from(["keep", "clear"])),
                           draw(st.sampled_from([None, "spring"])), columns)


def _cells(definition: ImportDef) -> st.SearchStrategy[dict[str, str]]:
    """A row of `definition`: a cell a column, now and then one missing."""
    row = st.fixed_dictionaries({c.key: _cell(c.key) for c in definition.columns})
    return row.flatmap(lambda cells: st.sampled_from([None] * 20 + sorted(cells)).map(
        lambda gone: {k: v for k, v in cells.items() if k != gone}))


def _world() -> list[User]:
    """Users holding some of the rows' memberIds and contacts: rows that update them (I2,
    I3), share a contact with them (U5, U7) or name a member id once deleted."""
    m1 = User(id="u_old_m1", channel_id=CH, type="member", member_id="m1", created_at=T0 - 10, updated_at=T0 - 10)
    m1.fields[EMAIL] = Value("b@x.jp", True, True, T0 - 10)
    lead = User(id="u_lead", channel_id=CH, type="lead", created_at=T0 - 20, updated_at=T0 - 20)
    lead.fields[MOBILE] = Value("+819087654321", True, False, T0 - 20)
    visitor = User(id="u_visitor", channel_id=CH, type="anonymous", created_at=T0 - 30, updated_at=T0 - 30)
    visitor.fields[EMAIL] = Value("c@x.jp", False, False, T0 - 30)  # unqualified (I3, U9)
    visitor.veils["v1"] = T0 - 30
    deleted = User(id=member_user_id(CH, "m2"), channel_id=CH, type="member", created_at=T0 - 40, updated_at=T0 - 40,
                   deleted=True, version=1)  # B3: m2 imported again is a new person
    return [m1, lead, visitor, deleted]


class _Side:
    """One world: a directory, the import's book, the channel's settings."""

    def __init__(self, definition: ImportDef) -> None:
        self.directory = Directory(_world())
        self.book = ImportBook()
        self.book.definitions[(CH, IMP)] = definition
        self.settings = ImportChannel(CH, book=self.book)

    def apply(self, n: int, at: int, cells: dict[str, str]) -> Outcome:
        msg = ImportRow(eventId=f"{IMP}:{n}", type="import.row", channelId=CH, occurredAt=at, importId=IMP,
                        rowNumber=n, cells=dict(cells))
        return core.apply(self.directory, Fact(msg, at), self.settings)

    def seen(self) -> dict[str, Any]:
        """Everything the row's outputs are made of: each user's stored state and COPY row
        (at a new user's first revision), the index, the changed users in order, the tally."""
        users = sorted(self.directory.users(), key=lambda u: u.id)
        tally = self.book.tally(CH, IMP)
        rows = [user_record(u, 1) for u in users]
        return {
            "states": [u.state_json() for u in users],
            "rows": rows,
            "copy": rowcodec.encode(rows, USER_TYPES),
            "index": {k: sorted(v) for k, v in self.directory.index().items()},
            "changed": list(self.directory.changed),
            "tally": (tally.created, tally.updated, tally.failed,
                      [(f.row_number, f.columns, f.reason, f.cells) for f in tally.failures]),
        }


def _outcome(outcome: Outcome) -> Any:
    rejection = outcome.rejection
    return ((rejection.code, rejection.reason) if rejection is not None else None,
            [(p.key, p.body) for p in outcome.publications], outcome.merges,
            [(n.code, n.reason) for n in outcome.notices])


@contextmanager
def _general_path() -> Iterator[None]:
    """The core without the import rows' plain path: every row through the handler."""
    plain = core.PLAIN.pop("import.row")
    try:
        yield
    finally:
        core.PLAIN["import.row"] = plain


class _Taken:
    """Counts the rows the plain path applied itself (not vacuous)."""

    def __init__(self) -> None:
        self.count = 0
        self.plain = core.PLAIN["import.row"]

    def __call__(self, *args: Any) -> Any:
        done = self.plain(*args)
        self.count += done is not None
        return done


_TAKEN: list[int] = []


def _compare(definition: ImportDef, rows: list[tuple[int, dict[str, str]]]) -> None:
    plain, general = _Side(definition), _Side(definition)
    watched = _Taken()
    core.PLAIN["import.row"] = watched
    try:
        for n, (gap, cells) in enumerate(rows, start=2):
            at = T0 + gap
            got = _outcome(plain.apply(n, at, cells))
            with _general_path():
                want = _outcome(general.apply(n, at, cells))
            assert got == want, cells
            assert plain.seen() == general.seen(), cells
    finally:
        core.PLAIN["import.row"] = watched.plain
    _TAKEN.append(watched.count)


def _property(data: st.DataObject) -> None:
    definition = data.draw(_definitions())
    rows = data.draw(st.lists(st.tuples(st.sampled_from([0, 0, 1, 60_000]), _cells(definition)), min_size=1, max_size=8))
    _compare(definition, rows)


_SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}


@settings(max_examples=600, **_SETTINGS)  # type: ignore[arg-type]
@given(st.data())
def test_i2_i3_i6_i7_i9_i14_a_new_rows_user_message_state_and_copy_row_are_the_handlers(data: st.DataObject) -> None:
    """I1–I15 as the handler applies them: the same outcome, messages, states, COPY rows,
    index and tally, row after row, whatever the import and its cells."""
    _property(data)


def test_the_property_takes_the_plain_path() -> None:
    """Not vacuous: the property's rows mostly create users, which the plain path applies."""
    _TAKEN.clear()
    settings(max_examples=60, derandomize=True, **_SETTINGS)(given(st.data())(_property))()  # type: ignore[arg-type]
    assert sum(_TAKEN) >= 20, _TAKEN


@pytest.mark.parametrize("blank", ["keep", "clear"])
def test_i6_i8_i14_p3_a_new_row_of_every_column_kind_is_the_handlers(blank: str) -> None:
    """Every column kind with a value (I8: lists as they are, tags sorted; P3: write-once
    keys set), then every optional cell blank (I6: kept absent, or cleared to null and
    hasPushToken false, tags empty): the plain path applies both, as the handler does."""
    keys = ["memberId", EMAIL, MOBILE, "unsubscribeEmail", "unsubscribeTexting", *_OPTIONAL]
    definition = ImportDef.build(CH, IMP, "member", "memberId", blank, "spring", [Column(k, k, _TYPES.get(k)) for k in keys])
    full = {"memberId": "n1", EMAIL: "new@x.jp", MOBILE: "+819011112222", "unsubscribeEmail": "yes",
            "unsubscribeTexting": "0", "hasPushToken": "y", "name": "Taro", "tags": '["b","a/b","b"]',
            "profile.plan": "gold", "profile.points": "1.5", "profile.birthday": "1990-05-17",
            "profile.seen": "2026-01-02T03:04:05+09:00", "profile.vip": "no", "profile.likes": '["x","x"]',
            "profile.scores": "[1,2.5]", "profile.utmSource": "ads", "profile.referrer": "https://x.jp/"}
    blanks = {**{k: " " for k in _OPTIONAL}, "memberId": "n2", EMAIL: "other@x.jp", MOBILE: "",
              "unsubscribeEmail": "false", "unsubscribeTexting": "true"}
    watched = _Taken()
    core.PLAIN["import.row"] = watched
    try:
        _compare(definition, [(0, full), (0, blanks)])
    finally:
        core.PLAIN["import.row"] = watched.plain
    assert watched.count == 2


def test_i9_i15_failing_rows_are_left_to_the_handler_with_the_same_reasons() -> None:
    """A refused cell of each kind, a blank key, a blank or missing flag (I7), a user past
    the size limit: the plain path applies none of them, and the failed rows list the
    same columns and reasons as the handler's (I9, I15)."""
    keys = ["memberId", EMAIL, MOBILE, "unsubscribeEmail", "unsubscribeTexting", *_OPTIONAL]
    definition = ImportDef.build(CH, IMP, "member", "memberId", "clear", None, [Column(k, k, _TYPES.get(k)) for k in keys])
    good = {"memberId": "n1", "unsubscribeEmail": "no", "unsubscribeTexting": "no"}
    bad = {"memberId": "null", EMAIL: "x", MOBILE: "090", "unsubscribeEmail": "maybe", "name": "a\x00",
           "tags": '["a b"]', "profile.plan": "\ud800", "profile.points": "1,200", "profile.birthday": "1990/05/17",
           "profile.seen": "soon", "profile.vip": "2", "profile.likes": "[1", "profile.scores": '["x"]'}
    rows = [(0, {**good, k: v}) for k, v in bad.items()]
    rows += [(0, {**good, "memberId": " "}), (0, {**good, "unsubscribeTexting": ""}),
             (0, {k: v for k, v in good.items() if k != "unsubscribeEmail"}), (0, bad)]
    saved = limits.MAX_USER_CHARS
    watched = _Taken()
    core.PLAIN["import.row"] = watched
    try:
        _compare(definition, rows)
        limits.MAX_USER_CHARS = 2_000
        _compare(definition, [(0, {**good, "name": "x" * 1_000, "profile.plan": "y" * 1_000})])
    finally:
        limits.MAX_USER_CHARS = saved
        core.PLAIN["import.row"] = watched.plain
    assert watched.count == 0


def test_the_new_rows_cell_kinds_parse_with_the_columns_own_parsers() -> None:
    """`_cell_kind` mirrors `_parser`: each kind the plan calls natively is the parser the
    definition holds for that column (parse_cells calls that one)."""
    keys = ["memberId", EMAIL, MOBILE, "unsubscribeEmail", "unsubscribeTexting", *_OPTIONAL]
    definition = ImportDef.build(CH, IMP, "member", "memberId", "keep", None, [Column(k, k, _TYPES.get(k)) for k in keys])
    native = {imports._MEMBER_CELL: clean_member_id, imports._EMAIL_CELL: clean_email, imports._MOBILE_CELL: clean_mobile,
              imports._TEXT_CELL: parse_string, imports._NUMBER_CELL: imports._NUMBER_CELLS,
              imports._DATE_CELL: imports._DATE_CELLS, imports._TAGS_CELL: parse_tags,
              imports._UNSUBSCRIBE_EMAIL_CELL: parse_boolean, imports._UNSUBSCRIBE_TEXTING_CELL: parse_boolean,
              imports._PUSH_CELL: parse_boolean}
    plan = definition.new_rows
    assert plan is not None
    assert [c.key for c in plan.cells] == list(definition.parsers)
    for cell in plan.cells:
        parse = definition.parsers[cell.key][1]
        assert cell.parse is parse
        assert native.get(cell.kind, parse) is parse, cell.key
    assert {c.kind for c in plan.cells} == {*native, imports._OTHER_CELL}


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.sampled_from(["true", "yes", "y", "1", "false", "no", "n", "0", " TRUE", "No ", "Y\t", "\u0130"]),
                 st.text(st.characters(codec=None), max_size=6)))
def test_i9_a_flag_cell_taken_as_it_is_reads_as_its_stripped_lowered_word(raw: str) -> None:
    """parse_boolean looks the cell up as it is first (a listed word: no copies made):
    the same value, or the same refusal, as the word stripped and lowered (I9)."""
    words = {"true": True, "yes": True, "y": True, "1": True, "false": False, "no": False, "n": False, "0": False}
    want = words.get(raw.strip().lower())
    if want is None:
        with pytest.raises(imports.Rejected, match="boolean must be true, yes, y, 1 or false, no, n, 0"):
            parse_boolean(raw)
    else:
        assert parse_boolean(raw) is want
