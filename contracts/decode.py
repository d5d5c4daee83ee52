"""The projection's fast decoder for the hot inbound messages (issue 14, item 1).

`parse_inbound` (inbound.py) validates with pydantic: ~11 µs per boot. The projection
decodes every record, so it calls `decode_inbound` instead, which accepts the same
messages with the same values for a fraction of that, by msgspec structs that mirror the
pydantic models field by field (same strictness: no coercion, unknown fields refused;
same limits). The pydantic models stay the contract: JSON Schemas, AsyncAPI, and every
error's wording.

How the two stay equal: the fast path only ever *accepts*. Whatever it does not accept
plainly — any msgspec error, a message the door would have to walk or word (U+0000 and
UTF-16 surrogate escapes, deep nesting, over the size limit), a value orjson would read
otherwise (integers past 64 bits), an import row with a cell to fail, a type it does not
mirror (all commands: rare, and their validators are involved) — goes to
`parse_inbound`, which then refuses it with today's code and reason, or accepts it as
today. So a refusal is worded by the one path that always worded it; what the fast path
must guarantee is only that it accepts nothing pydantic refuses, with equal values.
tests/unit/test_decode_differential.py checks exactly that on arbitrary and hostile bytes.

The structs answer `msg.type` and the attributes the domain reads, like the models do;
`model_dump()` (the one pydantic method the core calls on an sdk-event: the device) gives
the same dict.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

import msgspec
import orjson
from msgspec import Meta

from contracts.inbound import (
    _MAX_INT64,
    MAX_CHAT_TEXT,
    MAX_CHUNK_BYTES,
    MAX_CHUNK_ROWS,
    MAX_CONTACT,
    MAX_DEPTH,
    MAX_ID,
    MAX_MESSAGE_BYTES,
    MAX_PROPERTIES_BYTES,
    MAX_TEXT,
    MAX_VALUE,
    InboundError,
    InboundMessage,
    parse_import_rows,
    parse_inbound,
)
from contracts.topics import InboundKind

EventId = Annotated[str, Meta(min_length=1, max_length=MAX_ID)]
Id = Annotated[str, Meta(max_length=MAX_ID)]
Text = Annotated[str, Meta(max_length=MAX_TEXT)]
Contact = Annotated[str, Meta(max_length=MAX_CONTACT)]
EpochMs = Annotated[int, Meta(ge=0, le=_MAX_INT64)]
Platform = Literal["web", "mobile"]
Medium = Literal["web", "mobile", "line", "instagram", "phone", "email"]


# gc=False: a decoded message is a tree (frozen, built from JSON), never part of a cycle,
# so the cyclic collector need not track the ~10,000 of them alive in a batch.
class _Struct(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, gc=False):
    def model_dump(self) -> dict[str, Any]:
        """The pydantic model's `model_dump()`: every field, nested structs as dicts."""
        return {name: _dumped(getattr(self, name)) for name in self.__struct_fields__}


def _dumped(value: Any) -> Any:
    if isinstance(value, _Struct):
        return value.model_dump()
    if type(value) is list:
        return [_dumped(v) for v in value]
    return value


class _Message(_Struct, frozen=True, tag_field="type"):
    eventId: EventId
    channelId: EventId
    occurredAt: EpochMs

    def model_dump(self) -> dict[str, Any]:
        dumped = super().model_dump()
        return {"eventId": dumped.pop("eventId"), "type": self.type, **dumped}  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- sdk-events


class Device(_Struct, frozen=True, kw_only=True):
    browser: Text | None = None
    browserName: Text | None = None
    os: Text | None = None
    osName: Text | None = None
    device: Text | None = None
    appName: Text | None = None
    appVersion: Text | None = None


class ChatMessage(_Struct, frozen=True, kw_only=True):
    messageId: Id
    text: Annotated[str, Meta(max_length=MAX_CHAT_TEXT)] | None = None


class ChatContact(_Struct, frozen=True, kw_only=True):
    email: Contact | None = None
    mobileNumber: Contact | None = None


Profile = dict[str, Any]  # keys and values checked by _profile_ok (one rule each, like the models)


class BootEvent(_Message, frozen=True, kw_only=True, tag="boot"):
    veilId: Id
    platform: Platform
    memberId: Id | None = None
    memberHash: Id | None = None
    device: Device | None = None
    language: Text | None = None
    city: Text | None = None
    country: Text | None = None
    profile: Profile | None = None
    name: Text | None = None


class LoginEvent(_Message, frozen=True, kw_only=True, tag="login"):
    veilId: Id
    memberId: Id
    memberHash: Id | None = None
    profile: Profile | None = None
    name: Text | None = None


class ChatEvent(_Message, frozen=True, kw_only=True, tag="chat"):
    veilId: Id
    chatId: Id
    medium: Medium
    message: ChatMessage | None = None
    contact: ChatContact | None = None


class ContactEvent(_Message, frozen=True, kw_only=True, tag="contact"):
    veilId: Id
    email: Contact | None = None
    mobileNumber: Contact | None = None


class TrackEvent(_Message, frozen=True, kw_only=True, tag="track"):
    veilId: Id
    name: Text
    properties: dict[Id, Any] = {}


# --------------------------------------------------------------------------- import-rows


class ImportColumn(_Struct, frozen=True, kw_only=True):
    column: Text
    key: Text
    type: Literal["string", "number", "boolean", "date", "datetime", "list", "listOfNumber"] | None = None


class ImportStarted(_Message, frozen=True, kw_only=True, tag="import.started"):
    importId: EventId
    mode: Literal["member", "lead"]
    key: Literal["memberId", "email", "mobileNumber"]
    blank: Literal["keep", "clear"]
    tag: Text | None = None
    actor: EventId
    fileName: Text
    columns: list[ImportColumn]


class ImportRow(_Message, frozen=True, kw_only=True, tag="import.row"):
    importId: EventId
    rowNumber: Annotated[int, Meta(ge=2, le=_MAX_INT64)]
    cells: dict[Text, str]
    rowError: str | None = None


class ImportChunkRow(_Struct, frozen=True, kw_only=True):
    rowNumber: Annotated[int, Meta(ge=2, le=_MAX_INT64)]
    cells: dict[Text, str]
    rowError: str | None = None


class ImportRows(_Message, frozen=True, kw_only=True, tag="import.rows"):
    importId: EventId
    rows: Annotated[list[ImportChunkRow], Meta(min_length=1, max_length=MAX_CHUNK_ROWS)]


class ImportFinished(_Message, frozen=True, kw_only=True, tag="import.finished"):
    importId: EventId
    rows: Annotated[int, Meta(ge=0, le=_MAX_INT64)]
    abandoned: bool = False


_STRUCTS: dict[str, dict[str, type[_Message]]] = {
    "sdk-events": {"boot": BootEvent, "login": LoginEvent, "chat": ChatEvent, "contact": ContactEvent,
                   "track": TrackEvent},
    "import-rows": {"import.started": ImportStarted, "import.row": ImportRow, "import.finished": ImportFinished},
}
for _types in _STRUCTS.values():
    for _wire, _cls in _types.items():
        _cls.type = _wire  # type: ignore[attr-defined]  # `msg.type`, as the models answer it


# ------------------------------------------------------------------------------ decoding


_DECODERS = {
    kind: msgspec.json.Decoder(Union[tuple(types.values())])  # type: ignore[misc]  # noqa: UP007
    for kind, types in _STRUCTS.items()
}


def decode_inbound(topic_kind: InboundKind, raw: bytes) -> InboundMessage | _Message:
    """What `parse_inbound` returns or raises for `raw`, as a struct when the fast path
    accepts it (see the module's docstring)."""
    decoder = _DECODERS.get(topic_kind)
    # What the door must walk or word goes the old way: U+0000 and UTF-16 surrogate
    # escapes (orjson and msgspec read lone ones differently); other escapes are fine.
    if decoder is None or len(raw) > MAX_MESSAGE_BYTES or (
        b"\\u" in raw and (b"\\u0000" in raw or b"\\ud" in raw or b"\\uD" in raw)
    ):
        return parse_inbound(topic_kind, raw)
    try:
        msg = decoder.decode(raw)
    except msgspec.DecodeError:  # bad JSON, a wrong field, an unknown type: the door words it
        return parse_inbound(topic_kind, raw)
    if not _rules_ok(msg, raw):
        return parse_inbound(topic_kind, raw)
    return msg  # type: ignore[no-any-return]


_CHUNK_DECODER = msgspec.json.Decoder(ImportRows)
ImportRows.type = "import.rows"  # type: ignore[attr-defined]
_ROW_DIGITS = len(str(_MAX_INT64))


def decode_import_rows(raw: bytes) -> list[ImportRow | InboundError] | list[Any] | None:
    """What `parse_import_rows` returns or raises for an `import.rows` chunk (None: no
    chunk), each row an
    `ImportRow` struct when the fast path accepts the chunk (see the module's docstring:
    whatever it does not accept plainly goes to `parse_import_rows`, which words it)."""
    if len(raw) > MAX_CHUNK_BYTES or (b"\\u" in raw and (b"\\u0000" in raw or b"\\ud" in raw or b"\\uD" in raw)):
        return parse_import_rows(raw)
    try:
        chunk = _CHUNK_DECODER.decode(raw)
    except msgspec.DecodeError:
        return parse_import_rows(raw)
    import_id, channel_id, at = chunk.importId, chunk.channelId, chunk.occurredAt
    rows = chunk.rows
    # A row's eventId ("{importId}:{rowNumber}") must be an eventId; a cell too long fails
    # its row: parse_import_rows words both.
    if len(import_id) + 1 + _ROW_DIGITS > MAX_ID and any(
        len(import_id) + 1 + len(str(r.rowNumber)) > MAX_ID for r in rows
    ):
        return parse_import_rows(raw)
    for r in rows:
        for cell in r.cells.values():
            if len(cell) > MAX_VALUE:
                return parse_import_rows(raw)
    prefix = import_id + ":"
    return [
        ImportRow(eventId=prefix + str(r.rowNumber), channelId=channel_id, occurredAt=at, importId=import_id,
                  rowNumber=r.rowNumber, cells=r.cells, rowError=r.rowError)
        for r in rows
    ]


def _rules_ok(msg: _Message, raw: bytes) -> bool:
    """The models' validators, the value unions msgspec has no type for, and the depth
    limit: the structs nest three levels at most but for track.properties (free JSON),
    so only a track can be too deep; the brackets bound its depth, as in the door."""
    t = type(msg)
    if t is BootEvent or t is LoginEvent:
        return msg.profile is None or _profile_ok(msg.profile)  # type: ignore[attr-defined]
    if t is TrackEvent:
        if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH:
            return False
        try:
            return len(orjson.dumps(msg.properties)) <= MAX_PROPERTIES_BYTES  # type: ignore[attr-defined]
        except orjson.JSONEncodeError:  # an integer past 64 bits, which orjson reads as a float
            return False
    if t is ChatEvent:
        contact = msg.contact  # type: ignore[attr-defined]
        return contact is None or contact.email is not None or contact.mobileNumber is not None
    if t is ContactEvent:
        return msg.email is not None or msg.mobileNumber is not None  # type: ignore[attr-defined]
    if t is ImportRow:  # a cell too long for the service fails the row: parse_inbound words it
        return all(len(cell) <= MAX_VALUE for cell in msg.cells.values())  # type: ignore[attr-defined]
    return True


def _profile_ok(profile: dict[str, Any]) -> bool:
    for key, value in profile.items():
        # ProfileKey: `^[^.](?s:.*[^.])?$`, at most MAX_ID characters.
        if not key or len(key) > MAX_ID or key[0] == "." or key[-1] == ".":
            return False
        if not _value_ok(value):
            return False
    return True


def _value_ok(value: Any) -> bool:
    """InboundProfileValue: a string within MAX_VALUE, int, float, bool, null, a list of
    such strings or a list of numbers (bools are not numbers in strict mode)."""
    t = type(value)
    if t is str:
        return len(value) <= MAX_VALUE
    if t is int:
        return _INT_MIN <= value <= _INT_MAX
    if value is None or t is float or t is bool:
        return True
    if t is not list:
        return False
    if all(type(v) is str and len(v) <= MAX_VALUE for v in value):
        return True
    return all((type(v) is int and _INT_MIN <= v <= _INT_MAX) or type(v) is float for v in value)


# orjson reads integers in this range as int and any other as a float; msgspec keeps them
# all as int, so only these are the same value on both paths.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
