"""The projection's fast decoder for the hot inbound messages (issue 14, item 1).

`parse_inbound` (inbound.py) validates with pydantic: ~11 µs per boot. The projection
decodes every record, so it calls `decode_inbound` instead, which accepts the same
messages with the same values for a fraction of that, by msgspec structs that mirror the
pydantic models field by field (same strictness: no coercion, unknown fields refused;
same limits). The pydantic models stay the contract: JSON Schemas, AsyncAPI, and every
error's wording. The structs and their decoders are here; `decode_inbound`,
`decode_import_rows` and the checks they run per record are in
services/projection/decoding.py, compiled by mypyc with the core (a msgspec.Struct
cannot be compiled, so the two live apart; issue 14, session 11).

How the two stay equal: the fast path only ever *accepts*. Whatever it does not accept
plainly — any msgspec error, a message the door would have to walk or word (U+0000 and
UTF-16 surrogate escapes, deep nesting, over the size limit), a value orjson would read
otherwise (integers past 64 bits), an import row with a cell to fail, a type it does not
mirror (the grades' and lookups' commands: rare, their names matched by patterns) — goes to
`parse_inbound`, which then refuses it with today's code and reason, or accepts it as
today. So a refusal is worded by the one path that always worded it; what the fast path
must guarantee is only that it accepts nothing pydantic refuses, with equal values.
tests/unit/test_decode_differential.py checks exactly that on arbitrary and hostile bytes.

The structs answer `msg.type` and the attributes the domain reads, like the models do;
`model_dump()` gives the same dict (a dead letter's import row), and a device's
`as_tuple` (what the core reads of a boot's device) the same fields in the same order.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

import msgspec
from msgspec import Meta

from contracts.limits import (  # the limits only: pydantic's models are the door's (inbound.py)
    _MAX_INT64,
    MAX_CHAT_TEXT,
    MAX_CHUNK_ROWS,
    MAX_CONTACT,
    MAX_ID,
    MAX_TEXT,
    MAX_VALUE,
)

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


# `device.as_tuple`: the fields in their order (the model's, services/domain/sessions.py
# DEVICE_KEYS) in one C call. The compiled core compares a boot's device field by field;
# read one by one, each field of a struct is a generic attribute lookup (~340
# instructions through operator.attrgetter), seven a device (issue 14, session 12).
Device.as_tuple = property(msgspec.structs.astuple)  # type: ignore[attr-defined]


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


# A row's cells as `dict[str, Cell]`: the model's keys are `Text` (at most MAX_TEXT), which
# decoding.py checks. A constrained key type turns off msgspec's cache of short dict keys,
# and an import's rows repeat the same keys: decoding an import_bench row's nine cells cost
# ~25 % more with it (issue 14, session 18). A cell is bounded here, in C: one too long
# fails the fast path, and the door fails its row (I15), as a check after decoding did.
Cell = Annotated[str, Meta(max_length=MAX_VALUE)]


class ImportRow(_Message, frozen=True, kw_only=True, tag="import.row"):
    importId: EventId
    rowNumber: Annotated[int, Meta(ge=2, le=_MAX_INT64)]
    cells: dict[str, Cell]  # keys within MAX_TEXT: decoding.py
    rowError: str | None = None


class ImportChunkRow(_Struct, frozen=True, kw_only=True):
    rowNumber: Annotated[int, Meta(ge=2, le=_MAX_INT64)]
    cells: dict[str, Cell]  # keys within MAX_TEXT: decoding.py (see ImportRow)
    rowError: str | None = None


class ImportRows(_Message, frozen=True, kw_only=True, tag="import.rows"):
    importId: EventId
    rows: Annotated[list[ImportChunkRow], Meta(min_length=1, max_length=MAX_CHUNK_ROWS)]


class ImportFinished(_Message, frozen=True, kw_only=True, tag="import.finished"):
    importId: EventId
    rows: Annotated[int, Meta(ge=0, le=_MAX_INT64)]
    abandoned: bool = False


# ------------------------------------------------------------------------------ commands
# The commands of every day (staff and API edits, deliveries, blocks, unifications); the
# grades' and lookups' (names matched by patterns, a definition's own validator) are rare
# and keep the door's path (not in the union: msgspec refuses their tag).


class _CommandMessage(_Message, frozen=True, kw_only=True):
    actor: EventId


class UpdateProfile(_CommandMessage, frozen=True, kw_only=True, tag="profile.update"):
    userId: Id
    profile: Profile
    name: Text | None = None
    tags: list[Id] | None = None
    unsubscribeEmail: bool | None = None
    unsubscribeTexting: bool | None = None
    hasPushToken: bool | None = None


class UpsertMember(_CommandMessage, frozen=True, kw_only=True, tag="member.upsert"):
    memberId: Id
    profile: Profile
    name: Text | None = None
    unsubscribeEmail: bool | None = None
    unsubscribeTexting: bool | None = None
    hasPushToken: bool | None = None


class CreateLead(_CommandMessage, frozen=True, kw_only=True, tag="lead.create"):
    profile: Profile


class ApproveUnification(_CommandMessage, frozen=True, kw_only=True, tag="unification.approve"):
    sourceUserId: Id
    targetUserId: Id


class BlockUser(_CommandMessage, frozen=True, kw_only=True, tag="user.block"):
    userId: Id


class UnblockUser(_CommandMessage, frozen=True, kw_only=True, tag="user.unblock"):
    userId: Id


class DeleteUser(_CommandMessage, frozen=True, kw_only=True, tag="user.delete"):
    userId: Id


class DeleteMember(_CommandMessage, frozen=True, kw_only=True, tag="member.delete"):
    memberId: Id


class MarketingDelivered(_CommandMessage, frozen=True, kw_only=True, tag="marketing.delivered"):
    userId: Id
    campaignId: Id


class CancelUnification(_CommandMessage, frozen=True, kw_only=True, tag="unification.cancel"):
    sourceUserId: Id


_STRUCTS: dict[str, dict[str, type[_Message]]] = {
    "sdk-events": {"boot": BootEvent, "login": LoginEvent, "chat": ChatEvent, "contact": ContactEvent,
                   "track": TrackEvent},
    "import-rows": {"import.started": ImportStarted, "import.row": ImportRow, "import.finished": ImportFinished},
    "commands": {"profile.update": UpdateProfile, "member.upsert": UpsertMember, "lead.create": CreateLead,
                 "unification.approve": ApproveUnification, "user.block": BlockUser, "user.unblock": UnblockUser,
                 "user.delete": DeleteUser, "member.delete": DeleteMember, "marketing.delivered": MarketingDelivered,
                 "unification.cancel": CancelUnification},
}
for _types in _STRUCTS.values():
    for _wire, _cls in _types.items():
        _cls.type = _wire  # type: ignore[attr-defined]  # `msg.type`, as the models answer it


# ------------------------------------------------------------------------------ decoding


_DECODERS = {
    kind: msgspec.json.Decoder(Union[tuple(types.values())])  # type: ignore[misc]  # noqa: UP007
    for kind, types in _STRUCTS.items()
}


_CHUNK_DECODER = msgspec.json.Decoder(ImportRows)
ImportRows.type = "import.rows"  # type: ignore[attr-defined]
