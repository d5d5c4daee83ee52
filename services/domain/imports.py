"""CSV import (I1–I17): `import.started`, `import.row`, `import.finished` applied by the
same core as every other fact.

A row never dead-letters for what is in its cells: a bad value, a missing unsubscribe
flag or too many unification sources makes the row *fail* (I15), which is recorded with
the row's cells so that a person can fix it and import it again. Only a message that
names no known import, or an import definition that breaks the mapping rules (which the
importer checks before publishing), is rejected like any malformed fact.

The per-batch state an import needs beyond users — its definition, its running counts
and failed rows — is an `ImportBook` that the projection loads with the batch and
writes back in the same transaction. Handlers reach it through
the channel settings (`ImportChannel`), so the core's signature stays the one of every
other fact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from . import limits
from .channel import ChannelSettings
from .core import Fact, Outcome, Work, handles, handles_plainly
from .directory import Directory
from .hygiene import clean_email, clean_member_id, clean_mobile
from .ids import fact_user_id, member_user_id
from .limits import user_chars
from .priority import WRITE_ONCE, update_wins
from .profile import BUILTIN_TYPES, promote
from .publication import publish
from .saga import BLAST_RADIUS, approve, member_candidates, refresh_candidates
from .unification import IMPORT_TAG_LIMIT
from .user import EMAIL, MOBILE, User, Value, new_user, new_value
from .values import PARSERS, Rejected, parse_boolean, parse_string, parse_tags

# --------------------------------------------------------------------------- keys (I5, P1)

MEMBER_ID: Final = "memberId"
UNSUBSCRIBE: Final = ("unsubscribeEmail", "unsubscribeTexting")
FLAGS: Final = frozenset({*UNSUBSCRIBE, "hasPushToken"})
TOP_LEVEL: Final = frozenset({MEMBER_ID, "name", "tags", *FLAGS})
"""Editable keys outside `profile.*` (P1)."""

SYSTEM_KEYS: Final = frozenset(
    {
        # P1: set by the service only.
        "id", "createdAt", "updatedAt", "lastSeenAt", "sessionsCount", "member",
        # Also the service's: what the user record says about itself, not customer data.
        "type", "channelId", "userId", "veilId", "userImportTags", "blocked", "masked",
        "qualified", "language", "city", "country", "deliveredCampaigns", "mergedUserIds",
        "unification", "profile",
    }
)
SYSTEM_PREFIXES: Final = ("web.", "mobile.")


CONTACTS: Final = {EMAIL: "email", MOBILE: "mobile"}
LEAD_KEYS: Final = {"email": EMAIL, "mobileNumber": MOBILE}
LIST_TYPES: Final = frozenset({"list", "listOfNumber"})


class MappingError(Rejected):
    """A column mapping breaks I1/I5: the import is refused before any row is read."""

    def __init__(self, reason: str) -> None:
        super().__init__("invalid_mapping", reason)


def resolve_key(name: str) -> str:
    """The full key a column maps to: `email` → `profile.email`, `name` stays `name`.
    System keys (P1) are refused with the reason (I5)."""
    key = name.strip()
    if not key:
        raise MappingError("a column must map to a key; leave the key empty only to skip it")
    if key in TOP_LEVEL:
        return key
    if key in SYSTEM_KEYS or key.startswith(SYSTEM_PREFIXES):
        raise MappingError(
            f"{key} is set by the service and cannot be imported (system key); skip that column"
        )
    full = key if key.startswith("profile.") else "profile." + key
    rest = full[len("profile."):]
    if not rest or rest.startswith(".") or rest.endswith("."):
        raise MappingError(f"{key!r} is not a profile key: it must not be empty or start or end with '.'")
    return full


def key_type(key: str, given: str | None, declared: dict[str, str]) -> str | None:
    """The value type of a mapped key: None for keys with their own parser (contacts,
    memberId, name, tags, flags), else the profile type (P2). A new profile key needs
    its type; a declared one keeps it."""
    if given is not None and given not in PARSERS:
        raise MappingError(f"{key}: type {given!r} is not one of {', '.join(sorted(PARSERS))}")
    if key in TOP_LEVEL or key in CONTACTS:
        if given is not None:
            raise MappingError(f"{key} has a fixed format; do not give it a type")
        return None
    known = BUILTIN_TYPES.get(key) or declared.get(key)
    if known is not None:
        if given is not None and given != known:
            raise MappingError(f"{key} is a {known} key in this channel, not {given}")
        return known
    if given is None:
        raise MappingError(
            f"{key} is a new profile key: give its type, e.g. --map 'COLUMN={key}:string'"
            f" (types: {', '.join(sorted(PARSERS))})"
        )
    return given


# ------------------------------------------------------------------------ definitions


Parser = Callable[[str], Any]


@dataclass(frozen=True, slots=True)
class Column:
    column: str  # the CSV header as in the file
    key: str  # full key: memberId, name, tags, unsubscribeEmail, profile.email, …
    type: str | None  # profile type (P2), None for keys with their own format

    @property
    def label(self) -> str:
        """How a failure names the column (I9): the key, and the header when it differs."""
        return self.key if self.column.strip() == self.key else f'{self.key} (column "{self.column}")'

    def to_json(self) -> dict[str, Any]:
        return {"column": self.column, "key": self.key, "type": self.type}


# An import's number and date cells repeat (points, plans' prices, birthdays, years): a
# parse is a regular expression, int() and checks (~6–10 k instructions compiled), a
# remembered value one dict lookup (issue 14). Bounded by `_REMEMBERED_CELLS` a parser,
# emptied when full (hygiene's way), so a file of distinct values costs a parse and a
# store a cell, and memory stays flat in the file size.
_REMEMBERED_CELLS: Final = 32_768


class _RememberedCells:
    """`parse` (a number or date parser) with its values remembered by the cell's text.
    The values are ints and floats, shared safely. A refused cell is not remembered: it
    is parsed again, so it fails with the same error each time (I9)."""

    def __init__(self, parse: Parser) -> None:
        self.parse = parse
        self.known: dict[str, Any] = {}

    def __call__(self, raw: str) -> Any:
        return self.value(raw)

    def value(self, raw: str) -> Any:
        """The parsed cell (`self(raw)`; a native call for the compiled new-row path)."""
        known = self.known
        value = known.get(raw)  # a parsed value is never None
        if value is None:
            value = self.parse(raw)  # raises for a refused cell: nothing remembered
            if len(known) >= _REMEMBERED_CELLS:
                known.clear()
            known[raw] = value
        return value


_NUMBER_CELLS: Final = _RememberedCells(PARSERS["number"])
_DATE_CELLS: Final = _RememberedCells(PARSERS["date"])
_REMEMBERED_PARSERS: Final[dict[str, Parser]] = {"number": _NUMBER_CELLS, "date": _DATE_CELLS}


def forget() -> None:
    """Empty the remembered cells (benchmarks start each round cold)."""
    for parse in _REMEMBERED_PARSERS.values():
        assert isinstance(parse, _RememberedCells)
        parse.known.clear()


# ------------------------------------------------------------- a row that creates a user

# How each mapped cell of a row that creates a new user is read, and where its value goes
# in that user, decided once an import (`_NewRows`, built with the definition) rather than
# once a cell. `parse_cells` calls each column's parser as a Python object (compiled, a
# generic call a cell) into a dict that `_set` then walks, asking of every key whether it
# is the member id, a flag, the tags, a list to append to (I8) or a write-once key (P3):
# for a user that holds nothing yet none of these has a second answer, so the plain path
# (`plain_new_row`) reads the cells straight into the new user's fields, each parser
# named and called natively (issue 14, session 22). A column's parser (`_parser`) is
# chosen by its kind, so the two cannot disagree.
_MEMBER_CELL: Final = 0  # memberId (clean_member_id): the row's key, not a field
_EMAIL_CELL: Final = 1  # profile.email (clean_email): a field, and a contact no one may hold
_MOBILE_CELL: Final = 2  # profile.mobileNumber (clean_mobile): likewise
_TEXT_CELL: Final = 3  # name, or a string key (parse_string): a field
_NUMBER_CELL: Final = 4  # a number key (remembered): a field
_DATE_CELL: Final = 5  # a date key (remembered): a field
_OTHER_CELL: Final = 6  # any other type, its parser called as an object: a field
_TAGS_CELL: Final = 7  # tags (parse_tags): the user's tags
_UNSUBSCRIBE_EMAIL_CELL: Final = 8  # the flags (parse_boolean): their attributes (I7)
_UNSUBSCRIBE_TEXTING_CELL: Final = 9
_PUSH_CELL: Final = 10


def _cell_kind(col: Column) -> int:
    """How `col`'s cells parse (`_parser`) and where a new row puts the value (`_NewRows.read`)."""
    key = col.key
    if key == MEMBER_ID:
        return _MEMBER_CELL
    if key == EMAIL:
        return _EMAIL_CELL
    if key == MOBILE:
        return _MOBILE_CELL
    if key == "name":
        return _TEXT_CELL
    if key == "tags":
        return _TAGS_CELL
    if key in FLAGS:
        return _UNSUBSCRIBE_EMAIL_CELL if key == UNSUBSCRIBE[0] else _UNSUBSCRIBE_TEXTING_CELL if key == UNSUBSCRIBE[1] else _PUSH_CELL
    if col.type == "string":
        return _TEXT_CELL
    if col.type == "number":
        return _NUMBER_CELL
    if col.type == "date":
        return _DATE_CELL
    return _OTHER_CELL


_KIND_PARSERS: Final[dict[int, Parser]] = {
    _MEMBER_CELL: clean_member_id, _EMAIL_CELL: clean_email, _MOBILE_CELL: clean_mobile,
    _TEXT_CELL: parse_string, _NUMBER_CELL: _NUMBER_CELLS, _DATE_CELL: _DATE_CELLS, _TAGS_CELL: parse_tags,
    _UNSUBSCRIBE_EMAIL_CELL: parse_boolean, _UNSUBSCRIBE_TEXTING_CELL: parse_boolean, _PUSH_CELL: parse_boolean,
}


def _parser(col: Column) -> Parser:
    """The parser of `col`'s cells (I9): by its kind; any other type's from `PARSERS`."""
    kind = _cell_kind(col)
    if kind == _OTHER_CELL:
        assert col.type is not None
        return PARSERS[col.type]
    return _KIND_PARSERS[kind]


class _NewCell:
    """One mapped column, as a new row reads it."""

    def __init__(self, key: str, kind: int, parse: Parser) -> None:
        self.key = key
        self.kind = kind
        self.parse = parse  # the column's parser (`_parser`), called for _OTHER_CELL only


class _NewRow:
    """A row read for a new user (`_NewRows.read`): what `parse_cells` then `_set` would
    give a user that holds nothing yet."""

    def __init__(self) -> None:
        self.key_value = ""  # the memberId, or a lead's key contact
        self.fields: dict[str, Value] = {}
        self.email: str | None = None  # the contacts read, to check that no one holds them
        self.mobile: str | None = None
        self.tags: list[str] | None = None  # None: not set
        self.push: bool | None = None
        self.unsubscribe_email: bool | None = None  # None: absent (I7 fails a new row)
        self.unsubscribe_texting: bool | None = None


class _NewRows:
    """How the rows of one import read as new users (`plain_new_row`)."""

    def __init__(self, definition_key: str, member: bool, clear: bool, cells: list[_NewCell]) -> None:
        self.key = definition_key
        self.member = member
        self.clear = clear
        self.cells = cells

    def read(self, cells: dict[str, str], at: int) -> _NewRow | None:
        """The row as its new user holds it (imported values qualified, I4; member data
        for a member), or None when the handler must decide: a cell it refuses (I9), the
        key blank, an unsubscribe flag absent or blank (I7; I6: never cleared). The
        handler then fails the row with every reason."""
        member, key = self.member, self.key
        row = _NewRow()
        fields = row.fields
        for cell in self.cells:
            raw = cells.get(cell.key, "")
            kind = cell.kind
            if not raw.strip():
                if cell.key == key or kind == _UNSUBSCRIBE_EMAIL_CELL or kind == _UNSUBSCRIBE_TEXTING_CELL:
                    return None
                if self.clear:  # I6: a blank clears (a new user has nothing to clear, but says so)
                    if kind == _PUSH_CELL:
                        row.push = False
                    elif kind == _TAGS_CELL:
                        row.tags = []
                    else:
                        fields[cell.key] = new_value(None, True, member, at)
                continue
            value: Any
            try:
                if kind == _MEMBER_CELL:
                    row.key_value = clean_member_id(raw)
                    continue
                if kind == _EMAIL_CELL:
                    value = row.email = clean_email(raw)
                elif kind == _MOBILE_CELL:
                    value = row.mobile = clean_mobile(raw)
                elif kind == _TEXT_CELL:
                    value = parse_string(raw)
                elif kind == _NUMBER_CELL:
                    value = _NUMBER_CELLS.value(raw)
                elif kind == _DATE_CELL:
                    value = _DATE_CELLS.value(raw)
                elif kind == _OTHER_CELL:
                    value = cell.parse(raw)
                    if isinstance(value, list):  # I8: appended to nothing, a list of its own
                        value = [*value]
                elif kind == _TAGS_CELL:
                    row.tags = sorted({*parse_tags(raw)})
                    continue
                elif kind == _UNSUBSCRIBE_EMAIL_CELL:
                    row.unsubscribe_email = parse_boolean(raw)
                    continue
                elif kind == _UNSUBSCRIBE_TEXTING_CELL:
                    row.unsubscribe_texting = parse_boolean(raw)
                    continue
                else:
                    row.push = parse_boolean(raw)
                    continue
            except Rejected:
                return None
            fields[cell.key] = new_value(value, True, member, at)
        if row.unsubscribe_email is None or row.unsubscribe_texting is None:
            return None  # I7
        if not member:  # a lead's key is its contact (I3), read above: it was not blank
            contact = row.email if key == EMAIL else row.mobile
            if contact is None:
                return None
            row.key_value = contact
        return row


def _new_rows(definition_key: str, mode: str, blank: str, parsers: dict[str, tuple[Column, Parser]]) -> _NewRows:
    cells = [_NewCell(key, _cell_kind(col), parse) for key, (col, parse) in parsers.items()]
    return _NewRows(definition_key, mode == "member", blank == "clear", cells)


@dataclass(frozen=True, slots=True)
class ImportDef:
    """One import's settings (I1, I5, I6, I14), as `import.started` gave them."""

    channel_id: str
    import_id: str
    mode: str  # member | lead
    key: str  # full key of the rows' identity: memberId | profile.email | profile.mobileNumber
    blank: str  # keep | clear
    tag: str | None
    columns: tuple[Column, ...]
    parsers: dict[str, tuple[Column, Parser]] = field(compare=False, repr=False)
    # How a row that creates a user reads (`plain_new_row`); None (a definition not made
    # by `build`): such rows go to the handler.
    new_rows: _NewRows | None = field(default=None, compare=False, repr=False)

    @staticmethod
    def build(
        channel_id: str, import_id: str, mode: str, key: str, blank: str, tag: str | None,
        columns: Iterable[Column],
    ) -> ImportDef:
        """Check the mapping rules again (the message may come from any producer)."""
        cols = tuple(columns)
        seen: dict[str, str] = {}
        for col in cols:
            if resolve_key(col.key) != col.key:
                raise MappingError(f"column {col.column!r}: write the key in full, e.g. {resolve_key(col.key)}")
            if col.key in seen:
                raise MappingError(f"{col.key} is mapped from two columns, {seen[col.key]!r} and {col.column!r} (I5)")
            seen[col.key] = col.column
            if col.key not in TOP_LEVEL and col.key not in CONTACTS and col.type is None:
                raise MappingError(f"{col.key} has no type")
        full_key = MEMBER_ID if mode == "member" else LEAD_KEYS.get(key, "")
        if mode == "member" and key != MEMBER_ID:
            raise MappingError("a member import is keyed by memberId (I1)")
        if mode == "lead" and not full_key:
            raise MappingError("a lead import is keyed by email or mobileNumber (I1)")
        if full_key not in seen:
            raise MappingError(f"no column maps to {full_key}, the key of a {mode} import (I1)")
        if mode == "lead" and MEMBER_ID in seen:
            raise MappingError("a lead import cannot set memberId; import members separately (I1)")
        parsers = {col.key: (col, _parser(col)) for col in cols}
        return ImportDef(channel_id, import_id, mode, full_key, blank, tag, cols, parsers,
                         _new_rows(full_key, mode, blank, parsers))

    def new_types(self, declared: dict[str, str]) -> dict[str, str]:
        """Profile keys this import creates, with their types (I5), to declare in the
        channel so that later facts are validated the same way (P2)."""
        return {
            c.key: c.type
            for c in self.columns
            if c.type is not None and c.key not in BUILTIN_TYPES and c.key not in declared
        }


# ------------------------------------------------------------------------------ ledger


@dataclass(frozen=True, slots=True)
class FailedRow:
    """I15: one failed row, with the keys that failed, why, and its original cells."""

    row_number: int
    columns: tuple[str, ...]
    reason: str
    cells: dict[str, str]


@dataclass(slots=True)
class Tally:
    """What the rows of one import did in this batch (added to the stored counts)."""

    created: int = 0
    updated: int = 0
    failed: int = 0
    failures: list[FailedRow] = field(default_factory=list)

    def fail(self, row: FailedRow) -> None:
        self.failed += 1
        self.failures.append(row)

    def note(self, row: FailedRow) -> None:
        """A row that was applied but not in full (G2: its unifications were withheld):
        listed in the failures file with the reason, counted as created or updated."""
        self.failures.append(row)


@dataclass(frozen=True, slots=True)
class Started:
    definition: ImportDef
    event_id: str
    actor: str
    file_name: str
    at: int
    new_types: dict[str, str]


@dataclass(frozen=True, slots=True)
class Finished:
    channel_id: str
    import_id: str
    event_id: str
    rows: int
    abandoned: bool
    at: int


@dataclass(slots=True)
class ImportBook:
    """The import state of one batch: known definitions in, counts and records out."""

    definitions: dict[tuple[str, str], ImportDef] = field(default_factory=dict)
    events: list[Started | Finished] = field(default_factory=list)  # in apply order
    tallies: dict[tuple[str, str], Tally] = field(default_factory=dict)
    # The highest rowNumber applied of each import (`imports.last_row`): see `row_applied_before`.
    through: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def started(self) -> list[Started]:
        return [e for e in self.events if isinstance(e, Started)]

    @property
    def finished(self) -> list[Finished]:
        return [e for e in self.events if isinstance(e, Finished)]

    def definition(self, channel_id: str, import_id: str) -> ImportDef:
        found = self.definitions.get((channel_id, import_id))
        if found is None:
            raise Rejected("unknown_import", f"no import.started for import {import_id!r} in channel {channel_id!r}")
        return found

    def tally(self, channel_id: str, import_id: str) -> Tally:
        key = (channel_id, import_id)
        found = self.tallies.get(key)
        if found is None:  # not setdefault: a Tally built for every row costs ~0.5 µs compiled
            found = self.tallies[key] = Tally()
        return found


@dataclass(frozen=True, slots=True)
class ImportChannel(ChannelSettings):
    """Channel settings with the batch's import book attached (see module doc)."""

    book: ImportBook | None = None


def book_of(settings: ChannelSettings) -> ImportBook | None:
    """The import book the projection attached to the channel's settings, if any. Read
    by type, not `getattr(settings, "book", None)`: compiled, the getattr was a generic
    lookup returning `Any`, and every use of the book after it (its dicts, the tally's
    count) generic too — ~2 k instructions an import row (issue 14, session 18)."""
    return settings.book if isinstance(settings, ImportChannel) else None


def _book(w: Work) -> ImportBook:
    book = book_of(w.settings)
    if book is None:  # the projection attaches one to every channel with import facts
        raise Rejected("unknown_import", "import facts need the projection's import book")
    return book


# ---------------------------------------------------------------------------- handlers


@handles("import.started")
def on_import_started(w: Work) -> None:
    """Register the import's definition; a resumed import (same importId) starts again."""
    msg = w.fact.msg
    book = _book(w)
    columns = [Column(c.column, c.key, c.type or BUILTIN_TYPES.get(c.key) or w.settings.field_types.get(c.key)) for c in msg.columns]
    tag = msg.tag.strip() if msg.tag is not None and msg.tag.strip() else None
    try:
        definition = ImportDef.build(w.channel_id, msg.importId, msg.mode, msg.key, msg.blank, tag, columns)
    except MappingError as err:
        raise Rejected("invalid_import", err.reason) from None
    new_types = definition.new_types(w.settings.field_types)
    book.definitions[(w.channel_id, msg.importId)] = definition
    book.events.append(Started(definition, w.fact.event_id, msg.actor, msg.fileName, w.at, new_types))
    # Later facts of this batch see the new keys' types, as later batches will (P2).
    w.settings.field_types.update(new_types)


@handles("import.finished")
def on_import_finished(w: Work) -> None:
    msg = w.fact.msg
    book = _book(w)
    if (w.channel_id, msg.importId) not in book.definitions:
        return  # an attempt that died before its import.started: nothing to close
    book.events.append(Finished(w.channel_id, msg.importId, w.fact.event_id, msg.rows, msg.abandoned, w.at))


@handles("import.row")
def on_import_row(w: Work) -> None:
    msg = w.fact.msg
    book = _book(w)
    definition = book.definition(w.channel_id, msg.importId)
    tally = book.tally(w.channel_id, msg.importId)
    try:
        created, withheld = apply_row(w, definition, msg.cells, msg.rowError)
    except Rejected as err:
        # Undo whatever the row had changed: a failed row changes nothing (I15).
        w.rollback()
        w.before.clear()
        columns = err.columns if isinstance(err, RowFailed) else ()
        tally.fail(FailedRow(msg.rowNumber, columns, err.reason, dict(msg.cells)))
        return
    if withheld is not None:
        tally.note(FailedRow(msg.rowNumber, withheld.columns, withheld.reason, dict(msg.cells)))
    if created:
        tally.created += 1
    else:
        tally.updated += 1  # matched, even if nothing changed (I15)


@handles_plainly("import.row")
def plain_new_row(d: Directory, fact: Fact, settings: ChannelSettings, messages: bool) -> Outcome | None:
    """`on_import_row` for the commonest row of a large import: a row that creates a new
    member or lead (I2, I3, I7, I11) whose contacts no user of the channel holds, in a
    channel without an MU limit. Decided first, from the directory as it is: whoever
    holds the row's memberId or one of its contacts (any qualification) might be its
    target, a unification source (I2, U1, U6, U9) or a candidate (U5, U7), so such a
    row is handed over, as is a row that fails (I7, I9, I15: the handler records it), a
    member id once deleted (its user id taken), a channel with an MU limit (I17: the new
    user may be masked) and a user past the size limit (the fact is refused). What is
    left needs none of the handler's undo log, candidates or diff: the cells are read
    into the new user as `parse_cells` then `_set` would (`_NewRows.read`), and the user
    put, counted and published as `created`. Same outcome and state as the handler
    (tests/unit/test_core_differential.py, tests/unit/test_import_new_rows.py)."""
    msg = fact.msg
    book = book_of(settings)
    if book is None or msg.rowError or settings.mu_budget is not None:
        return None
    ch, import_id = fact.channel_id, msg.importId  # the message's fields read once: `Any`, generic reads
    definition = book.definitions.get((ch, import_id))
    if definition is None:
        return None  # unknown_import: the handler refuses it
    new_rows = definition.new_rows
    if new_rows is None:
        return None
    at = fact.at
    row = new_rows.read(msg.cells, at)  # parse_cells, then _set's steps for a user holding nothing
    if row is None:
        return None  # the row fails (I7, I9): the handler records it
    key_value = row.key_value
    member = definition.mode == "member"
    if member:
        if d.by_member(ch, key_value) is not None:
            return None  # I2: the row updates that member
        uid = member_user_id(ch, key_value)
    else:
        uid = fact_user_id(ch, fact.event_id)
    if d.get(uid) is not None:
        return None  # a memberId deleted once (a new person, another id), or a taken id
    email, mobile = row.email, row.mobile  # read at once: the buckets are not copied
    if (email is not None and d.holding((ch, "email", email))) or (mobile is not None and d.holding((ch, "mobile", mobile))):
        return None  # I3 target, I2 sources, U5/U7 candidates: the handler decides
    seen: int | None = at  # boxed once for the two times below (compiled, each store of `at` boxed it)
    # _new_user, then apply_row's steps for a user that has nothing yet.
    if member:
        user = new_user(uid, ch, "member", at, key_value)
    else:
        user = new_user(uid, ch, "lead", at)
    user.last_seen_at = seen
    user.fields = row.fields
    if row.tags is not None:
        user.tags = row.tags
    unsubscribe_email, unsubscribe_texting, push = row.unsubscribe_email, row.unsubscribe_texting, row.push
    assert unsubscribe_email is not None and unsubscribe_texting is not None  # `read` checked them (I7)
    user.unsubscribe_email, user.unsubscribe_texting = unsubscribe_email, unsubscribe_texting
    if push is not None:
        user.has_push_token = push
    if definition.tag is not None:  # I14
        user.import_tags = [definition.tag]
    user.last_contact_at = seen
    if user_chars(user) > limits.MAX_USER_CHARS:
        return None  # the handler refuses the fact (user_too_large)

    # Nothing below can fail.
    d.put(user)
    book.tally(ch, import_id).created += 1
    return Outcome(publications=publish(None, user, fact.event_id, at, messages=messages)[1])  # `created`, version 1


def row_applied_before(settings: ChannelSettings, fact: Fact) -> bool:
    """Exactly once per row (I16): an import remembers how far its rows got — the highest
    rowNumber applied — instead of one remembered eventId per row (a million-row import
    wrote a million `applied_events` rows, ~6 µs of PostgreSQL each, kept a week).
    Every attempt of an import publishes the file from its first row in row order, and
    attempts share their importId only when they share the file and the settings, so the
    rows applied so far are always a prefix of the file (a row arrives after every earlier
    row of its attempt, each applied or skipped by then): a row at or below the mark was
    applied, a row above it was not. A rebuild keeps the same mark (import_log.save
    writes it batch by batch), so it skips the same rows."""
    book = book_of(settings)
    if book is None:
        return False
    msg = fact.msg
    return msg.rowNumber <= book.through.get((fact.channel_id, msg.importId), 0)  # type: ignore[no-any-return]


def row_applied(settings: ChannelSettings, fact: Fact) -> None:
    """The row was applied (failed rows too: they are reported, I15): move the mark."""
    book = book_of(settings)
    assert book is not None  # the row was applied: its import's book was there
    msg = fact.msg
    key, row = (fact.channel_id, msg.importId), msg.rowNumber
    if row > book.through.get(key, 0):
        book.through[key] = row


class RowFailed(Rejected):
    """The row fails (I15): which keys, and why in words staff understand (I9)."""

    def __init__(self, columns: Iterable[str], reason: str) -> None:
        super().__init__("row_failed", reason)
        self.columns = tuple(columns)


# ------------------------------------------------------------------------------- a row


_CLEAR: Final = object()  # a blank cell under `--blank clear` (I6)


def parse_cells(definition: ImportDef, cells: dict[str, str]) -> dict[str, Any]:
    """Each mapped cell → its value (I9), `_CLEAR` for a blank to clear (I6); blanks to
    keep are left out. All bad cells are reported at once, each naming its column."""
    out: dict[str, Any] = {}
    bad: list[tuple[str, str]] = []
    clear = definition.blank == "clear"
    for key, (col, parse) in definition.parsers.items():
        raw = cells.get(key, "")
        if not raw.strip():
            if key == definition.key:
                bad.append((key, f"{col.label}: the key of this {definition.mode} import is blank"))
            elif clear and key not in UNSUBSCRIBE:  # I6: unsubscribe flags are never cleared by blanks
                out[key] = _CLEAR
            continue
        try:
            out[key] = parse(raw)
        except Rejected as err:
            bad.append((key, f"{col.label}: {err.reason}"))
    if bad:
        raise RowFailed([k for k, _ in bad], "; ".join(r for _, r in bad))
    return out


def apply_row(
    w: Work, definition: ImportDef, cells: dict[str, str], row_error: str | None,
) -> tuple[bool, RowFailed | None]:
    """Create or update the row's user (I2, I3): whether it was created, and why its
    unifications were withheld (G2), if they were."""
    if row_error:
        raise RowFailed((), row_error)
    values = parse_cells(definition, cells)
    found = _target(w, definition, values[definition.key])
    if found is None:
        missing = [k for k in UNSUBSCRIBE if values.get(k, _CLEAR) is _CLEAR]
        if missing:  # I7
            raise RowFailed(
                missing,
                f"{' and '.join(missing)} must be given (true or false) when a row creates a new"
                f" {definition.mode}",
            )
        user = _new_user(w, definition, values[definition.key])
    else:
        user = w.edit(found)
        user.updated_at = max(user.updated_at, w.at)  # I11: updated users only get updatedAt
    _set(user, values, w.at)
    if definition.tag is not None:  # I14, P5: the newest tag last; a 31st drops the oldest
        user.import_tags = [*(t for t in user.import_tags if t != definition.tag), definition.tag][-IMPORT_TAG_LIMIT:]
    user.last_contact_at = max(user.last_contact_at or w.at, w.at)
    promote(user)
    withheld = None
    if definition.mode == "member":
        sources = _leads_sharing_contacts(w, user)
        w.put(user)
        if len(sources) > BLAST_RADIUS:
            # G2: the member is applied, none is merged; the leads list it as their
            # candidate (computed when read) for staff, and the failures file says why.
            withheld = RowFailed(
                [k for k in CONTACTS if user.value(k) is not None],
                f"applied, but {len(sources)} leads share this member's contact, more than {BLAST_RADIUS}:"
                " none was unified automatically; they list it as a candidate for staff to check and approve",
            )
            for source in sources:
                _offer(w, source)
        else:
            for source in sources:
                _unify(w, source, user.id)
    else:
        refresh_candidates(w, user)
        w.put(user)
        current = member_candidates(w.directory, user)
        if user.type != "member" and current:
            _unify(w, user, current[0])  # U7: the most recently updated member
    return found is None, withheld


def _target(w: Work, definition: ImportDef, key_value: str) -> User | None:
    """I2: the member with that memberId. I3: the user holding that qualified contact,
    the latest seen when several do."""
    if definition.mode == "member":
        return w.directory.by_member(w.channel_id, key_value)
    kind = CONTACTS[definition.key]
    matches = [u for u in w.directory.by_contact(w.channel_id, kind, key_value, qualified_only=True) if u.alive]
    if not matches:
        return None
    return max(matches, key=lambda u: (_seen(u), u.id))


def _seen(user: User) -> int:
    return user.last_seen_at if user.last_seen_at is not None else user.created_at


def _new_user(w: Work, definition: ImportDef, key_value: str) -> User:
    """I11: created and last seen at import time. (Masked beyond the MU limit by the core
    after the row, as every new user is: mu.py, I17.)"""
    if definition.mode == "member":
        uid = member_user_id(w.channel_id, key_value)
        if w.directory.get(uid) is not None:  # that memberId was deleted once: a new person
            uid = member_user_id(w.channel_id, key_value, w.at)
        user = new_user(uid, w.channel_id, "member", w.at, key_value)
    else:
        uid = fact_user_id(w.channel_id, w.fact.event_id)
        user = new_user(uid, w.channel_id, "lead", w.at)
    user.last_seen_at = w.at
    return user


def _set(user: User, values: dict[str, Any], at: int) -> None:
    """Apply parsed cells: I4 qualified; I8 lists append, everything else replaces; I6
    blanks clear (`_CLEAR`) or were left out (keep); I7 flags overwrite when present."""
    member = user.type == "member"
    # Module names bound once: compiled, each use of one is a lookup in the module's dict.
    member_id, flags, clear = MEMBER_ID, FLAGS, _CLEAR
    for key, value in values.items():
        if key == member_id:
            continue  # the row's identity: already the user's memberId
        if key in flags:  # I7; each attribute by name (FLAG_ATTRS): compiled, a setattr is generic
            flag = False if value is clear else value
            if key == "unsubscribeEmail":
                user.unsubscribe_email = flag
            elif key == "unsubscribeTexting":
                user.unsubscribe_texting = flag
            else:
                user.has_push_token = flag
        elif key == "tags":
            user.tags = [] if value is clear else sorted({*user.tags, *value})
        elif value is clear:
            _replace(user, key, new_value(None, True, member, at))
        elif isinstance(value, list):  # I8: list and listOfNumber append
            old = user.value(key)
            _append(user, key, new_value([*(old if isinstance(old, list) else ()), *value], True, member, at))
        else:
            _replace(user, key, new_value(value, True, member, at))


def _replace(user: User, key: str, new: Value) -> None:
    """Import values are qualified (I4) and replace what an earlier fact set. Rows of one
    import share their time, so at equal time the row applied last wins (I10); a
    write-once key (P3) keeps its first value."""
    old = user.fields.get(key)
    if key in WRITE_ONCE:
        if update_wins(key, new, old):
            user.fields[key] = new
    elif old is None or (new.q, new.t) >= (old.q, old.t):
        user.fields[key] = new


def _append(user: User, key: str, new: Value) -> None:
    """I8: appending never loses what was there, so it applies whatever the times."""
    user.fields[key] = new


def _leads_sharing_contacts(w: Work, member: User) -> list[User]:
    """I2: live, unblocked leads (and anonymous users) holding one of the member's
    qualified contacts: the sources to unify into it (U1, U6, U9)."""
    found: dict[str, User] = {}
    for key, kind in CONTACTS.items():
        val = member.fields.get(key)
        if val is None or val.v is None or not val.q:
            continue
        for other in w.directory.by_contact(w.channel_id, kind, val.v, qualified_only=True):
            if other.type != "member" and other.alive and not other.blocked and other.id != member.id:
                found[other.id] = other
    return [found[k] for k in sorted(found)]


def _unify(w: Work, source: User, target_id: str) -> None:
    """I2/I3 with U5 timing: the import is the staff's approval (docs/decisions.md). A
    source that never booted merges at once; one that booted waits for the member's
    next login, listed as a candidate meanwhile."""
    current = w.directory.get(source.id) or source
    target = w.directory.get(target_id)
    if target is None or current.blocked or target.blocked or not current.alive:
        return
    if current.booted:
        _offer(w, current)
    approve(w, source.id, target_id)


def _offer(w: Work, source: User) -> None:
    """Note the members a source is now offered (U5), so a stale approval is refused."""
    current = w.directory.get(source.id) or source
    listed = current.copy()
    refresh_candidates(w, listed)
    if listed.offered != current.offered:
        w.put(listed)
