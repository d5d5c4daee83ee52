"""A batch's facts in memory: its records parsed into facts, the identity keys the
facts look up, the core run over them, and the effects for the store to write.

The synchronous hot part of applying a batch (batch.py, pipeline.py and the rebuild
await the store around it), kept apart from the asyncpg code so that it runs compiled by
mypyc with the domain core, in the same build (services/compiled_core.py, UNIFIER_CORE):
per live fact it is most of the service's Python outside the core. Pure: no I/O, no
clock; what it changes is what its arguments hand it (a directory, a window, a result).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from contracts.limits import MAX_MESSAGE_BYTES, InboundError
from contracts.topics import InboundKind, Topics
from services.domain import core
from services.domain.channel import ChannelSettings
from services.domain.core import Activity, Fact
from services.domain.directory import Directory
from services.domain.grades import GradeChange
from services.domain.hygiene import clean_email, clean_member_id, clean_mobile, clean_veil_id
from services.domain.ids import member_user_id, veil_user_id
from services.domain.imports import row_applied, row_applied_before
from services.domain.lookups import LookupChange
from services.domain.unification import MergeRecord
from services.domain.values import Rejected
from services.projection.decoding import decode_import_rows, decode_inbound
from services.store.outcomes import Outcome

from .records import Record
from .window import Applied, AppliedWindow

Key = tuple[str, str, str]  # (channel_id, kind, value): an identity key (repository.Key)

_LETTER_KEY_BYTES = 1024

log = logging.getLogger("unifier.projection")


@dataclass(slots=True)
class BatchResult:
    applied: int = 0
    skipped: int = 0  # already applied (redelivery or duplicate eventId)
    dead_letters: Counter[str] = field(default_factory=Counter)
    published: int = 0
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)


@dataclass(slots=True)
class Parsed:
    record: Record
    fact: Fact | None = None
    error: tuple[str, str] | None = None  # (code, message)
    chunk_row: bool = False  # a row of an `import.rows` chunk: `record` is the chunk's

    # Written out, not generated: one is made per record, and mypyc compiles only the
    # methods a class spells out (docs/decisions.md, "the compiled core's hot spots").
    def __init__(
        self, record: Record, fact: Fact | None = None, error: tuple[str, str] | None = None, chunk_row: bool = False,
    ) -> None:
        self.record = record
        self.fact = fact
        self.error = error
        self.chunk_row = chunk_row


@dataclass(slots=True)
class Effects:
    """What the core made of a run of facts, for the store to write (besides the users
    in `directory.changed`)."""

    applied: list[Applied] = field(default_factory=list)  # (channel, eventId, event time)
    merges: list[MergeRecord] = field(default_factory=list)
    erased: list[str] = field(default_factory=list)
    activities: list[Activity] = field(default_factory=list)
    messages: list[tuple[str, str | None, bytes | None]] = field(default_factory=list)  # outbox rows
    grades: list[GradeChange] = field(default_factory=list)  # D2, in fact order
    lookups: list[LookupChange] = field(default_factory=list)  # seed 004 §2, in fact order
    # Commands decided (applied, or rejected with code and reason) for command_outcomes,
    # and commands skipped as repeats of an applied eventId: both told to the API's waiters.
    outcomes: list[Outcome] = field(default_factory=list)
    repeats: list[tuple[str, str]] = field(default_factory=list)

    def extend(self, other: Effects) -> None:
        self.applied.extend(other.applied)
        self.grades.extend(other.grades)
        self.lookups.extend(other.lookups)
        self.merges.extend(other.merges)
        self.erased.extend(other.erased)
        self.activities.extend(other.activities)
        self.messages.extend(other.messages)
        self.outcomes.extend(other.outcomes)
        self.repeats.extend(other.repeats)


def run_facts(
    directory: Directory, parsed: list[Parsed], settings: dict[str, ChannelSettings], seen: AppliedWindow,
    topics: Topics, result: BatchResult, *, outbox: bool, failed_at: int,
) -> Effects:
    """Run the core over `parsed` in order: facts whose eventId is in `seen` are skipped
    (and applied ones added to it), bad records and rejected facts become dead letters.
    Pure but for `directory`, `seen` and `result`, which it updates."""
    fx = Effects()
    # Per fact this loop is the service's own overhead around the core: names bound once,
    # and the effect lists touched only when the fact has effects of that kind.
    applied, messages, dead_letters = fx.applied, fx.messages, result.dead_letters
    user_changed, commands = topics.user_changed, topics.commands
    published = rows = 0
    for p in parsed:
        fact = p.fact
        if fact is not None:
            channel_id, event_id = fact.channel_id, fact.event_id
            channel = settings[channel_id]
            # An import row is remembered by its import's row mark, not by its eventId
            # (imports.row_applied_before); the eventId is still looked up, for rows an
            # earlier version remembered that way.
            is_row = fact.type == "import.row"
            if seen.seen(channel_id, event_id) or (is_row and row_applied_before(channel, fact)):
                result.skipped += 1  # idempotency on eventId (CONTRACT)
                if p.record.topic == commands:  # a retried request: its waiter hears "applied"
                    fx.repeats.append((channel_id, event_id))
                continue
            # `core.apply` named in full, not bound to a local: compiled, that is a native
            # call; a local made it a generic call with a keyword (~330 instructions a fact).
            outcome = core.apply(directory, fact, channel, messages=outbox)
            if outcome.rejection is None:
                if is_row:
                    row_applied(channel, fact)
                    rows += 1
                else:
                    seen.add(channel_id, event_id, fact.at)
                    applied.append((channel_id, event_id, fact.at))
                if p.record.topic == commands:
                    fx.outcomes.append((channel_id, event_id, fact.at, None, None))
                if outcome.merges:
                    fx.merges.extend(outcome.merges)
                if outcome.erased:
                    fx.erased.extend(outcome.erased)
                if outcome.activities:
                    fx.activities.extend(outcome.activities)
                if outcome.grades:
                    fx.grades.extend(outcome.grades)
                if outcome.lookups:
                    fx.lookups.extend(outcome.lookups)
                if outcome.publications:
                    published += len(outcome.publications)
                    if outbox:  # the message bytes (built once, by publish) are COPYed as they are
                        for pub in outcome.publications:
                            messages.append((user_changed, pub.key, pub.body))
                for notice in outcome.notices:  # applied, but a merge was withheld (G2)
                    if outbox:
                        messages.append(_dead_letter(topics, _letter_record(p), notice.code, notice.reason, failed_at))
                    dead_letters[notice.code] += 1
                continue
            p.error = (outcome.rejection.code, outcome.rejection.reason)
            if outcome.rejection.__cause__ is not None:  # internal_error: a bug this fact met
                log.error("fact %s of channel %s failed in the core; dead-lettered", event_id,
                          channel_id, exc_info=outcome.rejection.__cause__,
                          extra={"eventId": event_id, "channelId": channel_id})
            if p.record.topic == commands:  # the API answers "rejected, because …"
                fx.outcomes.append((channel_id, event_id, fact.at, *p.error))
        assert p.error is not None
        if outbox:
            messages.append(_dead_letter(topics, _letter_record(p), *p.error, failed_at))
        dead_letters[p.error[0]] += 1
    result.published += published
    result.applied += len(fx.applied) + rows
    return fx


def facts_of(parsed: list[Parsed]) -> tuple[list[Fact], set[str]]:
    """The facts of `parsed` (its records that parsed), in order, and their channels: one
    compiled pass over a rebuild's chunk instead of three interpreted ones."""
    facts: list[Fact] = []
    channels: set[str] = set()
    for p in parsed:
        fact = p.fact
        if fact is not None:
            facts.append(fact)
            channels.add(fact.channel_id)
    return facts, channels


def grade_channels(facts: list[Fact]) -> set[str]:
    """The channels of the grade commands in `facts` (D2: their definitions are loaded)."""
    return {f.channel_id for f in facts if f.type.startswith("grade.")}


def parse_records(topics: Topics, records: list[Record]) -> list[Parsed]:
    kinds = {topic: topics.kind(topic) for topic in {r.topic for r in records}}  # once per topic, not per record
    if topics.import_rows not in kinds:
        return [_parse(kinds[r.topic], r) for r in records]
    out: list[Parsed] = []
    for r in records:
        # A chunk names its type; a one-row record (or anything else) is read as before.
        if r.topic == topics.import_rows and r.value and b'"import.rows"' in r.value:
            rows = _chunk_rows(r)
            if rows is not None:
                out.extend(rows)
                continue
        p = _parse(kinds[r.topic], r)
        if p.fact is not None and p.fact.type == "import.rows":  # a chunk with its type escaped
            out.extend(_chunk_rows(r) or [])
        else:
            out.append(p)
    return out


def _chunk_rows(record: Record) -> list[Parsed] | None:
    """The rows of an `import.rows` chunk, each applied as its own `import.row` fact, in
    row order at the chunk's offset (docs/import.md); None when the record is no chunk. A
    row the door refuses is dead-lettered alone, with that `import.row` as the letter's
    value (retrying the letter applies that row as a one-row record)."""
    try:
        rows = decode_import_rows(record.value or b"")
    except InboundError as err:  # the chunk as a whole: its envelope
        return [Parsed(record, error=(err.code, err.message))]
    if rows is None:
        return None
    out: list[Parsed] = []
    for row in rows:
        if isinstance(row, InboundError):
            shown = record if row.raw is None else record._replace(value=row.raw)
            out.append(Parsed(shown, error=(row.code, row.message)))
            continue
        at = row.occurredAt
        if record.timestamp > 0 and at > record.timestamp:
            at = record.timestamp  # event time never runs ahead of the log
        out.append(Parsed(record, fact=Fact(row, at), chunk_row=True))
    return out


def _letter_record(p: Parsed) -> Record:
    """The record a dead letter names: a chunk's row is named by its own `import.row`
    (what the door read; retrying the letter applies that row alone), at the chunk's offset."""
    if not p.chunk_row or p.fact is None:
        return p.record
    try:
        return p.record._replace(value=orjson.dumps(p.fact.msg.model_dump()))
    except (TypeError, orjson.JSONEncodeError):  # pragma: no cover - the row was decoded from JSON
        return p.record


def _parse(kind: InboundKind, record: Record) -> Parsed:
    try:
        msg = decode_inbound(kind, record.value or b"")  # parse_inbound's answers, faster
    except InboundError as err:
        return Parsed(record, error=(err.code, err.message))
    at = msg.occurredAt
    if record.timestamp > 0 and at > record.timestamp:
        at = record.timestamp  # event time never runs ahead of the log
    return Parsed(record, fact=Fact(msg, at))


def _dead_letter(topics: Topics, r: Record, code: str, message: str, failed_at: int) -> tuple[str, str | None, bytes]:
    # Cut to sizes that keep every letter far below the broker's message limit (1 MiB):
    # a value over the door's limit could not be applied anyway (`too_large` says how
    # large it was), and a real key is a channelId.
    key = storable_text(r.key[:_LETTER_KEY_BYTES]) if r.key is not None else None
    body = {
        "sourceTopic": r.topic,
        "partition": r.partition,
        "offset": r.offset,
        "key": key,
        "value": storable_text((r.value or b"")[:MAX_MESSAGE_BYTES]),
        "error": {"code": code, "message": storable_text(message.encode("utf-8", "backslashreplace"))},
        "failedAt": failed_at,
    }
    return (topics.dead_letter, key, orjson.dumps(body))


def storable_text(raw: bytes) -> str:
    """The record's bytes as text any consumer and PostgreSQL can hold: UTF-8 as it is;
    bytes that are not UTF-8 as `\\xNN` (Python's backslashreplace, as the contract
    says), and U+0000, which no PostgreSQL text can hold, as `\\x00` too. Only a junk
    key or value is changed by this (docs/contract.md, "identity.dead-letter")."""
    text = raw.decode("utf-8", "backslashreplace")
    return text.replace("\x00", "\\x00") if "\x00" in text else text


# -- the identity keys a fact looks up (the batch loads their users) ---------------


_SDK: Final = frozenset({"boot", "login", "chat", "contact", "track"})


def _keys_of(fact: Fact) -> tuple[set[str], set[Key]]:
    """Every user id and identity key this fact may look up (best effort: a value that
    does not clean is skipped here; the handler rejects the fact). The cleaning and the
    ids are remembered (hygiene, ids: lru caches), so the core's handler, which cleans
    and derives them again, finds them computed."""
    msg, ch, kind = fact.msg, fact.channel_id, fact.type
    if kind in _SDK:
        return _sdk_keys(msg, ch, kind)
    if kind == "import.row":
        return _import_row_keys(msg, ch)
    return _general_keys(msg, ch)


def add_keys(facts: list[Fact], ids: set[str], keys: set[Key]) -> None:
    """Adds every fact's `_keys_of` to `ids` and `keys`: the loaders' first round (batch.py,
    pipeline.py), here so that its per-fact loop runs compiled. An SDK fact's and an import
    row's keys are added as they are found (`_add_sdk_keys`, `_add_import_row_keys`), no
    sets of their own built and merged (~2 k instructions an import row)."""
    for fact in facts:
        kind = fact.type
        if kind in _SDK:
            _add_sdk_keys(fact.msg, fact.channel_id, kind, ids, keys)
            continue
        if kind == "import.row":
            _add_import_row_keys(fact.msg.cells, fact.channel_id, ids, keys)
            continue
        f_ids, f_keys = _keys_of(fact)
        ids |= f_ids
        keys |= f_keys


def _general_keys(msg: Any, ch: str) -> tuple[set[str], set[Key]]:
    """`_keys_of` of any fact type (the commands): every field any type may have."""
    get = _fields_of(msg)
    ids: set[str] = set()
    keys: set[Key] = set()

    def add(kind: str, raw: Any, clean: Any) -> str | None:
        if not isinstance(raw, str):
            return None
        try:
            value = clean(raw)
        except Rejected:
            return None
        keys.add((ch, kind, value))
        return value

    if (veil := add("veil", get("veilId"), clean_veil_id)) is not None:
        ids.add(veil_user_id(ch, veil))
    if (member := add("member", get("memberId"), clean_member_id)) is not None:
        ids.add(member_user_id(ch, member))
    for attr in ("userId", "sourceUserId", "targetUserId"):
        if isinstance(uid := get(attr), str):
            ids.add(uid)
    contact = get("contact")
    contact_of = _fields_of(contact) if contact is not None else {}.get
    profile = get("profile") or {}
    for raw, kind, clean in (
        (get("email"), "email", clean_email),
        (get("mobileNumber"), "mobile", clean_mobile),
        (contact_of("email"), "email", clean_email),
        (contact_of("mobileNumber"), "mobile", clean_mobile),
        (profile.get("email"), "email", clean_email),
        (profile.get("mobileNumber"), "mobile", clean_mobile),
    ):
        add(kind, raw, clean)
    return ids, keys


def _sdk_keys(msg: Any, ch: str, kind: str) -> tuple[set[str], set[Key]]:
    """`_keys_of` of an SDK fact (`_add_sdk_keys` into sets of its own)."""
    ids: set[str] = set()
    keys: set[Key] = set()
    _add_sdk_keys(msg, ch, kind, ids, keys)
    return ids, keys


def _add_sdk_keys(msg: Any, ch: str, kind: str, ids: set[str], keys: set[Key]) -> None:
    """Adds an SDK fact's keys to `ids` and `keys`, reading the fields its type has (~2×
    faster than the general reading for every fact type, and these are most facts): the
    veil, a boot's or login's memberId, the contact data of a profile, a chat or a
    contact form. A veil's and a memberId's key and user id are remembered per raw text
    (`_KEYS`): a visitor's facts repeat them, and cleaning and hashing them again cost
    ~5 k instructions a fact (issue 14, session 14)."""
    memo = _KEYS
    if (veil := memo.veil(ch, msg.veilId)) is not None:
        keys.add(veil[0])
        ids.add(veil[1])
    if kind == "boot" or kind == "login":
        if (member := memo.member(ch, msg.memberId)) is not None:
            keys.add(member[0])
            ids.add(member[1])
        contact = msg.profile
        if not contact:
            return
        email, mobile = contact.get("email"), contact.get("mobileNumber")
    elif kind == "chat":
        if (chat_contact := msg.contact) is None:
            return
        email, mobile = chat_contact.email, chat_contact.mobileNumber
    elif kind == "contact":
        email, mobile = msg.email, msg.mobileNumber
    else:
        return
    if email is not None and (key := memo.contact(ch, "email", email)) is not None:
        keys.add(key)
    if mobile is not None and (key := memo.contact(ch, "mobile", mobile)) is not None:
        keys.add(key)


# An identity key and the user id it derives (a veil's, a member's): a tuple `(Key, str)`
# built once, held as an object. Typed as a tuple, compiled code would keep it unboxed and
# build a new tuple (and a new key tuple) at every read.
_Found = Any
_MEMO_SIZE: Final = 65_536  # entries kept, as the lru caches of hygiene and ids


class _KeyMemo:
    """The keys of raw identifiers as `_add_sdk_keys` derives them, per channel and raw
    text: pure functions of the two (hygiene's cleaning, ids' name-based ids), so
    remembering them changes nothing (a refused identifier is not remembered: it is
    refused again, and skipped). Emptied when it holds `_MEMO_SIZE` entries."""

    def __init__(self) -> None:
        self.veils: dict[str, dict[str, _Found]] = {}
        self.members: dict[str, dict[str, _Found]] = {}
        self.contacts: dict[tuple[str, str], dict[str, Any]] = {}  # Any: a Key, boxed (above)
        self.size = 0

    def veil(self, ch: str, raw: Any) -> _Found | None:
        return self._identifier(self.veils, ch, raw, "veil")

    def member(self, ch: str, raw: Any) -> _Found | None:
        return self._identifier(self.members, ch, raw, "member")

    def _identifier(self, memo: dict[str, dict[str, _Found]], ch: str, raw: Any, kind: str) -> _Found | None:
        """A veilId's or memberId's key and user id (`kind` picks the cleaning and the id,
        as direct calls: compiled, they stay native)."""
        if not isinstance(raw, str):
            return None
        of = memo.get(ch)
        if of is None:
            of = memo[ch] = {}
        else:
            found = of.get(raw)
            if found is not None:
                return found
        try:
            if kind == "veil":
                value = clean_veil_id(raw)
                found = ((ch, "veil", value), veil_user_id(ch, value))
            else:
                value = clean_member_id(raw)
                found = ((ch, "member", value), member_user_id(ch, value))
        except Rejected:
            return None
        self._count()
        of[raw] = found
        return found

    def contact(self, ch: str, kind: str, raw: Any) -> Any:
        """`kind`: "email" or "mobile"."""
        if not isinstance(raw, str):
            return None
        of = self.contacts.get((ch, kind))
        if of is None:
            of = self.contacts[(ch, kind)] = {}
        else:
            key = of.get(raw)
            if key is not None:
                return key
        try:
            value = clean_email(raw) if kind == "email" else clean_mobile(raw)
        except Rejected:
            return None
        key = (ch, kind, value)
        self._count()
        of[raw] = key
        return key

    def _count(self) -> None:
        self.size += 1
        if self.size > _MEMO_SIZE:
            self.veils.clear()
            self.members.clear()
            self.contacts.clear()
            self.size = 0  # the entry being added is not kept either


_KEYS: Final = _KeyMemo()


def _import_row_keys(msg: Any, ch: str) -> tuple[set[str], set[Key]]:
    """`_keys_of` of an import row (`_add_import_row_keys` into sets of its own)."""
    ids: set[str] = set()
    keys: set[Key] = set()
    _add_import_row_keys(msg.cells, ch, ids, keys)
    return ids, keys


def _add_import_row_keys(cells: dict[str, str], ch: str, ids: set[str], keys: set[Key]) -> None:
    """Adds an import row's keys, the bulk of an import batch: its cells are keyed by the
    mapped key (I5), so the memberId, e-mail and mobile cells are its keys, and the
    memberId's user id (a lead's id derives from its eventId, never stored before). The
    cells typed as the dict they are: compiled, a read is a dict lookup, not a generic
    method call (~0.4 k instructions each)."""
    if (member := _cleaned(clean_member_id, cells.get("memberId"))) is not None:
        keys.add((ch, "member", member))
        ids.add(member_user_id(ch, member))  # remembered by ids.py: the row's handler looks it up again
    if (value := _cleaned(clean_email, cells.get("profile.email"))) is not None:
        keys.add((ch, "email", value))
    if (value := _cleaned(clean_mobile, cells.get("profile.mobileNumber"))) is not None:
        keys.add((ch, "mobile", value))


def _cleaned(clean: Any, raw: Any) -> str | None:
    """`clean(raw)`, or None for a missing, non-text or refused value."""
    if not isinstance(raw, str):
        return None
    try:
        return clean(raw)  # type: ignore[no-any-return]
    except Rejected:
        return None


def _fields_of(msg: Any) -> Any:
    """`get(name)` → the message's field or None. A pydantic model's fields are in its
    __dict__ (getattr of a field the model lacks goes through pydantic's __getattr__ and
    an AttributeError, ~4 µs each); a decoded struct (contracts/decode.py) has none."""
    fields = getattr(msg, "__dict__", None)
    if fields is not None:
        return fields.get
    # A struct: getattr of a field it lacks raises inside; its field names say which it has.
    names = _STRUCT_FIELDS.get(type(msg))
    if names is None:
        names = _STRUCT_FIELDS[type(msg)] = frozenset(type(msg).__struct_fields__)
    return lambda name: getattr(msg, name) if name in names else None


_STRUCT_FIELDS: dict[type, frozenset[str]] = {}
