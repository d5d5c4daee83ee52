"""The projection's fast decoder's per-record work (issue 14, item 1), compiled by mypyc
with the core (services/compiled_core.py `COMPILED`).

contracts/decode.py holds the msgspec structs that mirror the contract's pydantic models
and their decoders, and says why the two paths stay equal (the fast path only ever
accepts; whatever it does not accept plainly goes to `parse_inbound`, which words it).
The structs stay plain Python classes there (mypyc cannot compile a msgspec.Struct);
what runs per record around them — the escapes and size checks, the models' validators
msgspec has no type for, a chunk's rows — is here, so that it runs compiled: unchanged
code, moved (issue 14, session 11). tests/unit/test_decode_differential.py checks that
it accepts nothing pydantic refuses, with equal values, on both cores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import msgspec
import orjson

from contracts.decode import (
    _CHUNK_DECODER,
    _DECODERS,
    BootEvent,
    ChatEvent,
    ContactEvent,
    CreateLead,
    ImportRow,
    LoginEvent,
    TrackEvent,
    UpdateProfile,
    UpsertMember,
    _Message,
)
from contracts.limits import (
    _MAX_INT64,
    MAX_CHUNK_BYTES,
    MAX_DEPTH,
    MAX_ID,
    MAX_MESSAGE_BYTES,
    MAX_PROPERTIES_BYTES,
    MAX_TEXT,
    MAX_VALUE,
    InboundError,
)
from contracts.topics import InboundKind

if TYPE_CHECKING:
    from contracts.inbound import InboundMessage

# The door's limits as this module's constants (compiled: read as C globals, not looked
# up in contracts.inbound's namespace per use).
_MAX_MESSAGE_BYTES: Final = MAX_MESSAGE_BYTES
_MAX_CHUNK_BYTES: Final = MAX_CHUNK_BYTES
_MAX_DEPTH: Final = MAX_DEPTH
_MAX_ID: Final = MAX_ID
_MAX_PROPERTIES_BYTES: Final = MAX_PROPERTIES_BYTES
_MAX_VALUE: Final = MAX_VALUE
_MAX_TEXT: Final = MAX_TEXT
_ROW_DIGITS: Final = len(str(_MAX_INT64))
# orjson reads integers in this range as int and any other as a float; msgspec keeps them
# all as int, so only these are the same value on both paths.
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1
# The escapes the door must word all start with a backslash, which most records lack:
# looking for one byte (an int) is a memchr, ~20 ns on a record, while `bytes in bytes`
# first tries its operand as an int and raises and clears that TypeError, ~500 ns.
_BACKSLASH: Final = ord("\\")
# The decoders' `decode` methods, bound once: compiled, `decoder.decode(raw)` on an object
# mypyc does not know looks the method up by name at every record (~300 instructions).
_DECODE: Final = {kind: decoder.decode for kind, decoder in _DECODERS.items()}
# The structs `_rules_ok` tells apart, as this module's constants: compiled, a name imported
# from another module is read from this module's globals dict at every use (a dict lookup,
# ~130 instructions, up to five a record), a Final one is a C global (issue 14, session 18).
_BOOT: Final = BootEvent
_LOGIN: Final = LoginEvent
_TRACK: Final = TrackEvent
_CHAT: Final = ChatEvent
_CONTACT: Final = ContactEvent
_IMPORT_ROW: Final = ImportRow
_UPDATE_PROFILE: Final = UpdateProfile
_UPSERT_MEMBER: Final = UpsertMember
_CREATE_LEAD: Final = CreateLead


def decode_inbound(topic_kind: InboundKind, raw: bytes) -> InboundMessage | _Message:
    """What `parse_inbound` returns or raises for `raw`, as a struct when the fast path
    accepts it (see contracts/decode.py's docstring)."""
    decode = _DECODE.get(topic_kind)
    # What the door must walk or word goes the old way: U+0000 and UTF-16 surrogate
    # escapes (orjson and msgspec read lone ones differently); other escapes are fine.
    # Only a record with a backslash can hold one (`_BACKSLASH`).
    if decode is None or len(raw) > _MAX_MESSAGE_BYTES or (
        _BACKSLASH in raw and (b"\\u0000" in raw or b"\\ud" in raw or b"\\uD" in raw)
    ):
        return _door(topic_kind, raw)
    try:
        # Typed as the structs' base: compiled, one type check here rather than one per
        # member of the returned union.
        msg: _Message = decode(raw)
    except msgspec.DecodeError:  # bad JSON, a wrong field, an unknown type: the door words it
        return _door(topic_kind, raw)
    if not _rules_ok(msg, raw):
        return _door(topic_kind, raw)
    return msg


def _door(topic_kind: InboundKind, raw: bytes) -> InboundMessage:
    """`parse_inbound`: the door's pydantic models, imported the first time a record
    needs them (`contracts.inbound` and pydantic are ~0.1 s of an interpreter's start,
    which a replay worker whose records all take the fast path never needs: issue 14,
    session 15). Its answer or its refusal, as before."""
    from contracts.inbound import parse_inbound

    return parse_inbound(topic_kind, raw)


def _door_rows(raw: bytes) -> list[Any] | None:
    """`parse_import_rows`, imported on first use as `_door`."""
    from contracts.inbound import parse_import_rows

    return parse_import_rows(raw)


def decode_import_rows(raw: bytes) -> list[ImportRow | InboundError] | list[Any] | None:
    """What `parse_import_rows` returns or raises for an `import.rows` chunk (None: no
    chunk), each row an `ImportRow` struct when the fast path accepts the chunk (see
    contracts/decode.py's docstring: whatever it does not accept plainly goes to
    `parse_import_rows`, which words it)."""
    if len(raw) > _MAX_CHUNK_BYTES or (_BACKSLASH in raw and (b"\\u0000" in raw or b"\\ud" in raw or b"\\uD" in raw)):
        return _door_rows(raw)
    try:
        chunk = _CHUNK_DECODER.decode(raw)
    except msgspec.DecodeError:
        return _door_rows(raw)
    import_id, channel_id, at = chunk.importId, chunk.channelId, chunk.occurredAt
    rows = chunk.rows
    # A row's eventId ("{importId}:{rowNumber}") must be an eventId; a cell too long fails
    # its row: parse_import_rows words both.
    if len(import_id) + 1 + _ROW_DIGITS > _MAX_ID and any(
        len(import_id) + 1 + len(str(r.rowNumber)) > _MAX_ID for r in rows
    ):
        return _door_rows(raw)
    for r in rows:
        if not _cells_ok(r.cells):
            return _door_rows(raw)
    prefix = import_id + ":"
    return [
        ImportRow(eventId=prefix + str(r.rowNumber), channelId=channel_id, occurredAt=at, importId=import_id,
                  rowNumber=r.rowNumber, cells=r.cells, rowError=r.rowError)
        for r in rows
    ]


def _rules_ok(msg: _Message, raw: bytes) -> bool:
    """The models' validators, the value unions msgspec has no type for, and the depth
    limit: the structs nest three levels at most but for track.properties (free JSON),
    so only a track can be too deep; the brackets bound its depth, as in the door (a
    profile's values are scalars or lists of them once `_profile_ok` passed them)."""
    t = type(msg)
    if t is _BOOT or t is _LOGIN:
        profile = msg.profile  # type: ignore[attr-defined]
        return profile is None or _profile_ok(profile)
    if t is _TRACK:
        if raw.count(b"{") + raw.count(b"[") > _MAX_DEPTH:
            return False
        try:
            return len(orjson.dumps(msg.properties)) <= _MAX_PROPERTIES_BYTES  # type: ignore[attr-defined]
        except orjson.JSONEncodeError:  # an integer past 64 bits, which orjson reads as a float
            return False
    if t is _CHAT:
        contact = msg.contact  # type: ignore[attr-defined]
        return contact is None or contact.email is not None or contact.mobileNumber is not None
    if t is _CONTACT:
        return msg.email is not None or msg.mobileNumber is not None  # type: ignore[attr-defined]
    if t is _IMPORT_ROW:
        return _cells_ok(msg.cells)  # type: ignore[attr-defined]
    if t is _UPDATE_PROFILE or t is _UPSERT_MEMBER:
        return _profile_ok(msg.profile)  # type: ignore[attr-defined]
    if t is _CREATE_LEAD:  # and the model's validator: a contact to create the lead by
        profile = msg.profile  # type: ignore[attr-defined]
        return _profile_ok(profile) and (type(profile.get("email")) is str or type(profile.get("mobileNumber")) is str)
    return True  # the other commands: ids only, each within its length


def _cells_ok(cells: dict[str, str]) -> bool:
    """A row's cells' keys as the model takes them: `Text` (the structs leave their length
    to this check, contracts/decode.py `ImportRow`; the cells' own are bounded there)."""
    for key in cells:
        if len(key) > _MAX_TEXT:
            return False
    return True


def _profile_ok(profile: dict[str, Any]) -> bool:
    for key, value in profile.items():
        # ProfileKey: `^[^.](?s:.*[^.])?$`, at most MAX_ID characters.
        if not key or len(key) > _MAX_ID or key[0] == "." or key[-1] == ".":
            return False
        if not _value_ok(value):
            return False
    return True


def _value_ok(value: Any) -> bool:
    """InboundProfileValue: a string within MAX_VALUE, int, float, bool, null, a list of
    such strings or a list of numbers (bools are not numbers in strict mode)."""
    t = type(value)
    if t is str:
        return len(value) <= _MAX_VALUE
    if t is int:
        return _INT_MIN <= value <= _INT_MAX
    if value is None or t is float or t is bool:
        return True
    if t is not list:
        return False
    if all(type(v) is str and len(v) <= _MAX_VALUE for v in value):
        return True
    return all((type(v) is int and _INT_MIN <= v <= _INT_MAX) or type(v) is float for v in value)
