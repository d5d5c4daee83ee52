"""Inbound messages of docs/contract.md and the one function that parses them.

The models are strict (no coercion: `"1"` is not a number, `true` is not an integer) and
reject unknown fields, because a producer's mistake must reach the dead letter with a
reason rather than become user data. They keep values exactly as sent: identifier
hygiene (G1) and value parsing belong to the domain, which can say *why* a value is
unusable. `parse_inbound` runs for every consumed record, so its adapters are built once
here and the error report is computed only on the failure path.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeAlias, get_args, overload

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

# The limits (the door) and InboundError live in contracts.limits, without pydantic, and
# are this module's names too (issue 14, session 15).
from contracts.limits import (
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
)
from contracts.limits import InboundErrorCode as InboundErrorCode
from contracts.topics import InboundKind

# --------------------------------------------------------------------------- value types


class _OneError:
    """Replace every error of the wrapped type with one message.

    Without it a bad profile value reports one error per member of the value union,
    which buries the field name in a dead-letter reason.
    """

    def __init__(self, error_type: str, message: str) -> None:
        self.error_type, self.message = error_type, message

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.custom_error_schema(
            handler(source), custom_error_type=self.error_type, custom_error_message=self.message
        )



EventId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID)]
ChannelId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID)]
Actor = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID)]
ImportId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID)]
Id = Annotated[str, StringConstraints(max_length=MAX_ID)]
"""An identifier other than the envelope's (veilId, memberId, userId, chatId…)."""
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT)]
Contact = Annotated[str, StringConstraints(max_length=MAX_CONTACT)]
# Bounded so that it always fits PostgreSQL's bigint; orjson yields ints up to 2**64 - 1.
EpochMs = Annotated[int, Field(ge=0, le=_MAX_INT64)]

ProfileKey = Annotated[
    str,
    StringConstraints(pattern=r"^[^.](?s:.*[^.])?$", max_length=MAX_ID),
    _OneError(
        "profile_key",
        f"Profile key should be non-empty, at most {MAX_ID} characters and not start or end with '.'",
    ),
]
"""A profile key without the `profile.` prefix, e.g. `email` for `profile.email`."""

ProfileValue = Annotated[
    str | int | float | bool | list[str] | list[int | float] | None,
    _OneError(
        "profile_value",
        "Input should be a string, number, boolean, list of strings, list of numbers or null",
    ),
]
"""The JSON forms of the profile types (P2); the per-channel type is checked by the domain."""

_Value = Annotated[str, StringConstraints(max_length=MAX_VALUE)]
InboundProfileValue = Annotated[
    _Value | int | float | bool | list[_Value] | list[int | float] | None,
    _OneError(
        "profile_value",
        f"Input should be a string (at most {MAX_VALUE} characters), number, boolean,"
        " list of such strings, list of numbers or null",
    ),
]
"""A profile value as it may arrive: ProfileValue within the limits."""

Profile = dict[ProfileKey, InboundProfileValue]

Platform = Literal["web", "mobile"]
Medium = Literal["web", "mobile", "line", "instagram", "phone", "email"]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


def _missing_contact() -> PydanticCustomError:
    return PydanticCustomError("missing_contact", "At least one of email, mobileNumber is required")


# ------------------------------------------------------------------------------ envelope


class _Envelope(_Strict):
    eventId: EventId = Field(description="Unique id; a second message with it is ignored.")
    type: str
    channelId: ChannelId = Field(description="The tenant (T1); also the Kafka key.")
    occurredAt: EpochMs = Field(description="When it happened, epoch milliseconds UTC.")


class _Command(_Envelope):
    actor: Actor = Field(description="A staff id, `api`, or `system`.")


# ---------------------------------------------------------------------------- sdk-events


class Device(_Strict):
    """Device facts reported by the SDK at boot (S2)."""

    browser: Text | None = None
    browserName: Text | None = None
    os: Text | None = None
    osName: Text | None = None
    device: Text | None = None
    appName: Text | None = None
    appVersion: Text | None = None

    @property
    def as_tuple(self) -> tuple[str | None, ...]:
        """The fields in their order here (services/domain/sessions.py DEVICE_KEYS), as the
        fast decoder's struct gives them (contracts/decode.py) in one call."""
        return (self.browser, self.browserName, self.os, self.osName, self.device, self.appName, self.appVersion)


class ChatMessage(_Strict):
    """One chat message; `text` is absent for stickers, images and the like."""

    messageId: Id
    text: Annotated[str, StringConstraints(max_length=MAX_CHAT_TEXT)] | None = None


class ChatContact(_Strict):
    """Caller id or sender address; qualified for the `phone` and `email` media (C4)."""

    email: Contact | None = None
    mobileNumber: Contact | None = None

    @model_validator(mode="after")
    def _one_contact(self) -> ChatContact:
        if self.email is None and self.mobileNumber is None:
            raise _missing_contact()
        return self


class BootEvent(_Envelope):
    """A page or app start. With `memberId` it is also a login (U2)."""

    type: Literal["boot"]
    veilId: Id
    platform: Platform
    memberId: Id | None = None
    memberHash: Id | None = None
    device: Device | None = None
    language: Text | None = None
    city: Text | None = None
    country: Text | None = None
    profile: Profile | None = Field(
        default=None, description="Site data; qualified only when `memberId` is present."
    )
    name: Text | None = None


class LoginEvent(_Envelope):
    """The visitor on `veilId` logged in as `memberId` (U2)."""

    type: Literal["login"]
    veilId: Id
    memberId: Id
    memberHash: Id | None = None
    profile: Profile | None = None
    name: Text | None = None


class ChatEvent(_Envelope):
    """Chat activity; starting a chat makes an anonymous user a lead (C2)."""

    type: Literal["chat"]
    veilId: Id = Field(description="External-messenger veils look like `line:U123…`.")
    chatId: Id
    medium: Medium
    message: ChatMessage | None = None
    contact: ChatContact | None = None


class ContactEvent(_Envelope):
    """Contact data typed by the visitor (unqualified, C4)."""

    type: Literal["contact"]
    veilId: Id
    email: Contact | None = None
    mobileNumber: Contact | None = None

    @model_validator(mode="after")
    def _one_contact(self) -> ContactEvent:
        if self.email is None and self.mobileNumber is None:
            raise _missing_contact()
        return self


class TrackEvent(_Envelope):
    """A behaviour event."""

    type: Literal["track"]
    veilId: Id
    name: Text
    properties: dict[Id, Any] = Field(
        default_factory=dict,
        description=f"Free-form JSON: at most {MAX_PROPERTIES_BYTES} bytes serialised, 8 levels deep.",
    )

    @field_validator("properties")
    @classmethod
    def _bounded(cls, properties: dict[str, Any]) -> dict[str, Any]:
        # Nesting is bounded for the whole message before validation (MAX_DEPTH), so
        # this serialisation cannot recurse too deep.
        size = len(orjson.dumps(properties))
        if size > MAX_PROPERTIES_BYTES:
            raise PydanticCustomError(
                "too_large", "properties are {size} bytes as JSON; the limit is {limit}",
                {"size": size, "limit": MAX_PROPERTIES_BYTES},
            )
        return properties


# ------------------------------------------------------------------------------ commands


# P1: the flags staff and the API may edit besides `profile`; absent or null keeps the
# user's value.
UnsubscribeEmail = Annotated[bool | None, Field(description="Opted out of marketing e-mail (P1).")]
UnsubscribeTexting = Annotated[bool | None, Field(description="Opted out of marketing SMS (P1).")]
HasPushToken = Annotated[bool | None, Field(description="The app can send it push notifications (P1).")]


class UpdateProfile(_Command):
    """Staff or API edit of a user (qualified, C4)."""

    type: Literal["profile.update"]
    userId: Id
    profile: Profile
    name: Text | None = None
    tags: list[Id] | None = None
    unsubscribeEmail: UnsubscribeEmail = None
    unsubscribeTexting: UnsubscribeTexting = None
    hasPushToken: HasPushToken = None


class UpsertMember(_Command):
    """API "upsert by memberId"."""

    type: Literal["member.upsert"]
    memberId: Id
    profile: Profile
    name: Text | None = None
    unsubscribeEmail: UnsubscribeEmail = None
    unsubscribeTexting: UnsubscribeTexting = None
    hasPushToken: HasPushToken = None


class CreateLead(_Command):
    """API "create by profile"; the profile carries `email` and/or `mobileNumber`."""

    type: Literal["lead.create"]
    profile: Profile

    @field_validator("profile")
    @classmethod
    def _has_contact(cls, profile: Profile) -> Profile:
        if not any(isinstance(profile.get(key), str) for key in ("email", "mobileNumber")):
            raise PydanticCustomError(
                "missing_contact", "Profile should contain email and/or mobileNumber as a string"
            )
        return profile


class ApproveUnification(_Command):
    """Staff approve a unification candidate (U5)."""

    type: Literal["unification.approve"]
    sourceUserId: Id
    targetUserId: Id


class BlockUser(_Command):
    type: Literal["user.block"]
    userId: Id


class UnblockUser(_Command):
    type: Literal["user.unblock"]
    userId: Id


class DeleteUser(_Command):
    type: Literal["user.delete"]
    userId: Id


class DeleteMember(_Command):
    type: Literal["member.delete"]
    memberId: Id


class MarketingDelivered(_Command):
    """A campaign reached the user; the record moves with merges (U4)."""

    type: Literal["marketing.delivered"]
    userId: Id
    campaignId: Id


class CancelUnification(_Command):
    """Staff cancel a pending unification (U6); rejected `not_pending` when there is none."""

    type: Literal["unification.cancel"]
    sourceUserId: Id


# A name staff give (a grade, D2; a lookup, seed 004): at most 64 characters, not blank,
# no surrounding spaces, no `/` (it is a path segment of the HTTP API), no control characters.
_NAME_IN_PATH = StringConstraints(
    min_length=1, max_length=64, pattern=r"^[^\s/\x00-\x1f\x7f](?:[^/\x00-\x1f\x7f]*[^\s/\x00-\x1f\x7f])?$"
)
_NAME_RULE = "should be 1 to 64 characters without '/', control characters or surrounding spaces"

GradeName = Annotated[
    str,
    _NAME_IN_PATH,
    _OneError("grade_name", f"Grade name {_NAME_RULE}"),
]
Colour = Annotated[
    str,
    StringConstraints(pattern=r"^#[0-9A-Fa-f]{6}$"),
    _OneError("colour", "Colour should be #rrggbb (six hexadecimal digits)"),
]
GradeHolderKind = Literal["email", "mobileNumber", "memberId"]


class DefineGrade(_Command):
    """Define a grade, or change its colour (D2)."""

    type: Literal["grade.define"]
    name: GradeName
    colour: Colour = Field(description="`#rrggbb`, stored in lower case.")


class RemoveGrade(_Command):
    """Remove a grade everywhere (D2); rejected `unknown_grade` when it is not defined."""

    type: Literal["grade.remove"]
    name: GradeName


class AssignGrade(_Command):
    """Give the holders of a key a grade (D2): every user with that memberId or holding
    that e-mail/mobile number as a qualified contact shows it. Rejected `unknown_grade`
    when the grade is not defined."""

    type: Literal["grade.assign"]
    name: GradeName
    kind: GradeHolderKind
    value: Contact = Field(description="Compared as identity keys are (U9): e-mail lower-cased, mobile in E.164.")


class UnassignGrade(_Command):
    """Take a grade away from a key (D2); a key without it is left as it is."""

    type: Literal["grade.unassign"]
    name: GradeName
    kind: GradeHolderKind
    value: Contact


# ------------------------------------------------------------------ external lookups
# Seed 004 §2 (顧客情報連動): a company's own customer system, called by Unifier
# (services/lookup; docs/lookups.md gives the wire format the company implements).

LookupName = Annotated[
    str,
    _NAME_IN_PATH,
    _OneError("lookup_name", f"Lookup name {_NAME_RULE}"),
]
LookupVariable = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"),
    _OneError("lookup_variable", "Variable name should be 1 to 64 of A-Z a-z 0-9 _ . - and not start with a digit"),
]
LookupBinding = Literal["memberId", "email", "mobileNumber", "name"]
MAX_LOOKUP_PARAMS = 20
MAX_LOOKUP_RESULTS = 50
MAX_LOOKUP_URL = 2048
# Keys a field connection may not fill: the contact keys are identities (U9, C4), which
# a remote system's answer must not create on its own; the seed connects text fields.
UNCONNECTABLE_KEYS = frozenset({"email", "mobileNumber"})


class LookupParam(_Strict):
    """A search parameter (検索項目): free text typed by staff, or bound to a customer field."""

    label: Text = Field(description="Display name on the console.")
    name: LookupVariable = Field(description="The variable name sent to the company.")
    required: bool = False
    maxLength: Annotated[int, Field(ge=1, le=MAX_VALUE)] = MAX_TEXT
    bind: LookupBinding | None = Field(
        default=None, description="Filled from the customer's field (memberId, e-mail, phone, name); null: free text."
    )


class LookupResultField(_Strict):
    """A result field (結果項目): where to find a value in the company's answer."""

    label: Text = Field(description="Display name on the console.")
    key: Id = Field(description="Key in the answer's JSON object; `a.b` reads a nested object.")


class LookupConnection(_Strict):
    """A field connection (フィールド接続): a result fills an empty profile field."""

    result: Id = Field(description="The `key` of one of the result fields.")
    profileKey: ProfileKey = Field(description="Without `profile.`; not `email` or `mobileNumber`.")


class DefineLookup(_Command):
    """Define a lookup, or replace its definition (admin)."""

    type: Literal["lookup.define"]
    name: LookupName
    url: Annotated[str, StringConstraints(min_length=1, max_length=MAX_LOOKUP_URL)] = Field(
        description="The company's endpoint, `http://` or `https://`; the only address ever called for this lookup."
    )
    method: Literal["GET", "POST"] = "POST"
    encrypted: bool = False
    wrappedKey: Annotated[str, StringConstraints(max_length=256)] | None = Field(
        default=None,
        description="The payload key, encrypted under the service's key-encryption key (base64); with `encrypted` only.",
    )
    params: Annotated[list[LookupParam], Field(max_length=MAX_LOOKUP_PARAMS)] = Field(default_factory=list)
    results: Annotated[list[LookupResultField], Field(max_length=MAX_LOOKUP_RESULTS)] = Field(default_factory=list)
    connections: Annotated[list[LookupConnection], Field(max_length=MAX_LOOKUP_RESULTS)] = Field(default_factory=list)
    media: list[Medium] = Field(
        default_factory=list, description="A chat from one of these media calls the lookup automatically."
    )
    vouched: bool = Field(
        default=False, description="The company vouches for its data: filled values are qualified (C4)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> DefineLookup:
        problems = lookup_definition_problems(self)
        if problems:
            raise PydanticCustomError("lookup_definition", "{problems}", {"problems": "; ".join(problems)})
        return self


def lookup_definition_problems(d: DefineLookup) -> list[str]:
    """What makes a definition unusable, beyond each field's own type."""
    out: list[str] = []
    scheme = d.url.split("://", 1)[0].lower() if "://" in d.url else ""
    if scheme not in ("http", "https") or not d.url.split("://", 1)[1].split("/", 1)[0]:
        out.append("url: must be an http:// or https:// URL with a host")
    if d.encrypted and d.wrappedKey is None:
        out.append("wrappedKey: required when encrypted")
    if not d.encrypted and d.wrappedKey is not None:
        out.append("wrappedKey: only with encrypted")
    if d.encrypted and d.method != "POST":
        out.append("method: an encrypted lookup is called with POST (the payload is the body)")
    names = [p.name for p in d.params]
    if len(set(names)) != len(names):
        out.append("params: variable names must be unique")
    keys = {r.key for r in d.results}
    if len(keys) != len(d.results):
        out.append("results: keys must be unique")
    for i, c in enumerate(d.connections):
        if c.result not in keys:
            out.append(f"connections[{i}].result: {c.result!r} is not the key of a result field")
        if c.profileKey in UNCONNECTABLE_KEYS:
            out.append(f"connections[{i}].profileKey: {c.profileKey} is contact data and cannot be filled by a lookup")
    if len({c.profileKey for c in d.connections}) != len(d.connections):
        out.append("connections: each profile key may be filled by one result only")
    return out


class RemoveLookup(_Command):
    """Remove a lookup definition; removing an undefined one changes nothing."""

    type: Literal["lookup.remove"]
    name: LookupName


class LookupFailure(_Strict):
    code: Id
    message: Annotated[str, StringConstraints(max_length=MAX_TEXT)]


class LookupAnswered(_Command):
    """What an automatic lookup brought back (actor `system`): recorded on the customer,
    and its connected values fill the profile fields that are still empty."""

    type: Literal["lookup.result"]
    userId: Id
    name: LookupName
    causationId: EventId | None = Field(default=None, description="The chat that called it.")
    status: Literal["ok", "failed"]
    error: LookupFailure | None = None
    values: dict[Id, InboundProfileValue] = Field(
        default_factory=dict, description="Result key → the value the company answered."
    )
    fill: Profile = Field(default_factory=dict, description="Profile key → value, from the field connections.")
    qualified: bool = Field(default=False, description="The definition's `vouched` when it was called.")


# --------------------------------------------------------------------------- import-rows

ImportValueType = Literal["string", "number", "boolean", "date", "datetime", "list", "listOfNumber"]


class ImportColumn(_Strict):
    """One mapped CSV column (I5). `type` is the profile type (P2) the column is parsed
    as — a key the mapping creates gets it declared — and absent for keys with a format of
    their own (memberId, name, tags, the flags, the contacts)."""

    column: Text = Field(description="The CSV header as in the file.")
    key: Text = Field(description="`memberId`, `name`, `unsubscribeEmail`, `profile.email`, `tags`…")
    type: ImportValueType | None = None


class ImportStarted(_Envelope):
    """First message of an import: its settings, before any row (I1, I5, I6, I14)."""

    type: Literal["import.started"]
    importId: ImportId
    mode: Literal["member", "lead"]
    key: Literal["memberId", "email", "mobileNumber"]
    blank: Literal["keep", "clear"]
    tag: Text | None = None
    actor: Actor
    fileName: Text
    columns: list[ImportColumn]


RowNumber = Annotated[
    int, Field(ge=2, le=_MAX_INT64, description="As a spreadsheet shows it: the header is row 1.")
]
Cells = Annotated[dict[Text, str], Field(
    description="Mapped key → the cell text as in the file (a cell the service cannot store fails the row, see rowError)."
)]
RowError = Annotated[str | None, Field(
    description="Why the importer could not read the row (e.g. more cells than columns); the row fails with this reason."
)]


class ImportRow(_Envelope):
    """One CSV data row, cells still raw text so that failures can quote them (I15)."""

    type: Literal["import.row"]
    importId: ImportId
    rowNumber: RowNumber
    cells: Cells
    rowError: RowError = None


class ImportChunkRow(_Strict):
    """One CSV data row of an `import.rows` chunk: an `import.row` without its envelope."""

    rowNumber: RowNumber
    cells: Cells
    rowError: RowError = None


class ImportRows(_Envelope):
    """Consecutive CSV data rows of one import, in row order (contract 1.3.0). Each row is
    applied exactly as the `import.row` `{eventId: "{importId}:{rowNumber}", channelId,
    occurredAt, importId, rowNumber, cells, rowError}` it stands for; a row the door
    refuses is dead-lettered alone (its letter holds that `import.row`), the others are
    applied."""

    type: Literal["import.rows"]
    importId: ImportId
    rows: list[ImportChunkRow] = Field(min_length=1, max_length=MAX_CHUNK_ROWS)


class ImportFinished(_Envelope):
    """Last message of an import: how many rows were published before it."""

    type: Literal["import.finished"]
    importId: ImportId
    rows: Annotated[int, Field(ge=0, le=_MAX_INT64)]
    abandoned: bool = False


# ------------------------------------------------------------------------------- unions

SdkEvent: TypeAlias = Annotated[
    BootEvent | LoginEvent | ChatEvent | ContactEvent | TrackEvent, Field(discriminator="type")
]
Command: TypeAlias = Annotated[
    UpdateProfile
    | UpsertMember
    | CreateLead
    | ApproveUnification
    | BlockUser
    | UnblockUser
    | DeleteUser
    | DeleteMember
    | MarketingDelivered
    | CancelUnification
    | DefineGrade
    | RemoveGrade
    | AssignGrade
    | UnassignGrade
    | DefineLookup
    | RemoveLookup
    | LookupAnswered,
    Field(discriminator="type"),
]
ImportMessage: TypeAlias = Annotated[
    ImportStarted | ImportRow | ImportRows | ImportFinished, Field(discriminator="type")
]
InboundMessage: TypeAlias = (
    BootEvent
    | LoginEvent
    | ChatEvent
    | ContactEvent
    | TrackEvent
    | UpdateProfile
    | UpsertMember
    | CreateLead
    | ApproveUnification
    | BlockUser
    | UnblockUser
    | DeleteUser
    | DeleteMember
    | MarketingDelivered
    | CancelUnification
    | DefineGrade
    | RemoveGrade
    | AssignGrade
    | UnassignGrade
    | DefineLookup
    | RemoveLookup
    | LookupAnswered
    | ImportStarted
    | ImportRow
    | ImportRows
    | ImportFinished
)

UNIONS: dict[InboundKind, Any] = {
    "sdk-events": SdkEvent,
    "commands": Command,
    "import-rows": ImportMessage,
}
"""The message union of each inbound topic."""

MODELS: dict[InboundKind, dict[str, type[BaseModel]]] = {
    kind: {
        get_args(model.model_fields["type"].annotation)[0]: model
        for model in get_args(union)[0].__args__
    }
    for kind, union in UNIONS.items()
}
"""Wire `type` → model, per inbound topic."""

_ADAPTERS: dict[InboundKind, TypeAdapter[Any]] = {
    kind: TypeAdapter(union) for kind, union in UNIONS.items()
}


# ------------------------------------------------------------------------------- parsing

@overload
def parse_inbound(
    topic_kind: Literal["sdk-events"], raw: bytes
) -> BootEvent | LoginEvent | ChatEvent | ContactEvent | TrackEvent: ...
@overload
def parse_inbound(
    topic_kind: Literal["commands"], raw: bytes
) -> (
    UpdateProfile
    | UpsertMember
    | CreateLead
    | ApproveUnification
    | BlockUser
    | UnblockUser
    | DeleteUser
    | DeleteMember
    | MarketingDelivered
    | CancelUnification
    | DefineGrade
    | RemoveGrade
    | AssignGrade
    | UnassignGrade
    | DefineLookup
    | RemoveLookup
    | LookupAnswered
): ...
@overload
def parse_inbound(
    topic_kind: Literal["import-rows"], raw: bytes
) -> ImportStarted | ImportRow | ImportRows | ImportFinished: ...
@overload
def parse_inbound(topic_kind: InboundKind, raw: bytes) -> InboundMessage: ...
def parse_inbound(topic_kind: InboundKind, raw: bytes) -> InboundMessage:
    """Decode one record value of an inbound topic, or raise `InboundError`.

    Raises `KeyError` for an unknown `topic_kind`: that is the caller's bug, not the
    producer's, and must not be dead-lettered.
    """
    adapter = _ADAPTERS[topic_kind]  # KeyError first, before anything of the record is read
    # An import-rows record may be a chunk (MAX_CHUNK_BYTES); any other message keeps the
    # message limit, checked once its type is known.
    limit = MAX_CHUNK_BYTES if topic_kind == "import-rows" else MAX_MESSAGE_BYTES
    if len(raw) > limit:
        raise InboundError("too_large", f"the message is {len(raw)} bytes; the limit is {limit}")
    data = _loads(raw)
    if len(raw) > MAX_MESSAGE_BYTES and data.get("type") != "import.rows":
        raise InboundError("too_large", f"the message is {len(raw)} bytes; the limit is {MAX_MESSAGE_BYTES}")
    return _validated(adapter, topic_kind, data, b"\\u0000" in raw, raw)  # type: ignore[no-any-return]


def _loads(raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError) as exc:
        if "surrogate in string" in str(exc):  # a \\ud800 escape: JSON, but not text PostgreSQL can store
            raise InboundError("bad_text", f"a string holds a lone UTF-16 surrogate: {exc}") from None
        raise InboundError("bad_json", f"not UTF-8 JSON: {exc}") from None
    if type(data) is not dict:
        raise InboundError("bad_json", f"expected a JSON object, got {_json_kind(data)}")
    return data  # type: ignore[no-any-return]


def _validated(adapter: TypeAdapter[Any], topic_kind: InboundKind, data: dict[str, Any], has_nul: bool, raw: bytes) -> Any:
    """The door after the JSON is read: `has_nul` when JSON escaped U+0000 somewhere."""
    if data.get("type") == "import.row":
        data = _failing_cells(data, has_nul)
    # Counting brackets is a bound on the depth; only a message that may be deep is walked.
    if has_nul or raw.count(b"{") + raw.count(b"[") > MAX_DEPTH:
        _check_tree(data)
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        raise _inbound_error(topic_kind, data, exc) from None


_CHUNK_ROW_FIELDS = frozenset(ImportChunkRow.model_fields)
_ONE_ROW = b"{}"  # what a row's own depth check reads: a row is flat but for its cells


def parse_import_rows(raw: bytes) -> list[ImportRow | InboundError] | None:
    """An `import.rows` chunk as the `import.row` messages it stands for, each as
    `parse_inbound` answers that message: the row, or why the door refuses it (the
    chunk's other rows are applied). Raises `InboundError` for what refuses the whole
    chunk: its envelope, `rows` not a list of 1 to MAX_CHUNK_ROWS. None when `raw` is no
    chunk (not a JSON object of type `import.rows`, or over MAX_CHUNK_BYTES):
    `parse_inbound` answers for it as for any message.

    A row is refused by the door as the `import.row` would be (a cell with U+0000 or too
    long fails the row, I15; a wrong field is `invalid_fields`, its path prefixed with
    `rows[i]`), except for the message size: a row is bounded by its chunk's."""
    if len(raw) > MAX_CHUNK_BYTES:
        return None
    try:
        data = _loads(raw)
    except InboundError:
        return None
    if data.get("type") != "import.rows":
        return None
    has_nul = b"\\u0000" in raw
    rows = data.get("rows")
    head = {k: v for k, v in data.items() if k != "rows"}
    if type(rows) is not list or not 1 <= len(rows) <= MAX_CHUNK_ROWS:
        shown = "missing" if rows is None else f"{len(rows)} rows" if type(rows) is list else (
            "an object" if type(rows) is dict else _json_kind(rows))
        raise InboundError("invalid_fields", f"rows: a list of 1 to {MAX_CHUNK_ROWS} rows expected ({shown})")
    # The envelope alone, with a placeholder row: its errors refuse the chunk.
    envelope = _validated(_ADAPTERS["import-rows"], "import-rows", {**head, "rows": [{"rowNumber": 2, "cells": {}}]},
                          has_nul, _ONE_ROW)
    assert isinstance(envelope, ImportRows)
    out: list[ImportRow | InboundError] = []
    for i, row in enumerate(rows):
        if type(row) is not dict:
            out.append(InboundError("invalid_fields", f"rows[{i}]: expected an object, got {_json_kind(row)}",
                                    _row_bytes({"row": row})))
            continue
        extra = sorted(str(k) for k in row if k not in _CHUNK_ROW_FIELDS)
        if extra:  # a row's own fields only: it cannot override its envelope's
            out.append(InboundError("invalid_fields", f"rows[{i}].{extra[0][:64]}: extra inputs are not permitted",
                                    _row_bytes(row)))
            continue
        number = row.get("rowNumber")
        msg = {"eventId": f"{envelope.importId}:{number}", "type": "import.row", "channelId": envelope.channelId,
               "occurredAt": envelope.occurredAt, "importId": envelope.importId, **row}
        try:
            out.append(_validated(_ADAPTERS["import-rows"], "import-rows", msg, has_nul, _ONE_ROW))
        except InboundError as err:
            out.append(InboundError(err.code, f"rows[{i}]: {err.message}", _row_bytes(msg)))
    return out


def _row_bytes(msg: dict[str, Any]) -> bytes | None:
    try:
        return orjson.dumps(msg)
    except (TypeError, orjson.JSONEncodeError):  # nested past orjson's encoder: the chunk is shown instead
        return None


def _check_tree(data: dict[str, Any]) -> None:
    """Refuse a message nested deeper than MAX_DEPTH (the JSON encoders and PostgreSQL
    have recursion limits) or holding U+0000 in a key or string (PostgreSQL's text and
    jsonb cannot store it)."""
    stack: list[tuple[Any, int, tuple[int | str, ...]]] = [(data, 1, ())]
    while stack:
        node, depth, loc = stack.pop()
        if depth > MAX_DEPTH:
            raise InboundError("too_deep", f"{_path(loc)}: nested deeper than {MAX_DEPTH} levels of objects and arrays")
        items = node.items() if type(node) is dict else enumerate(node)
        for k, v in items:
            if type(k) is str and "\x00" in k:
                raise InboundError("bad_text", f"{_path(loc) or 'the message'}: a key holds U+0000, which cannot be stored")
            if type(v) is str:
                if "\x00" in v:
                    raise InboundError("bad_text", f"{_path((*loc, k))}: holds U+0000, which cannot be stored")
            elif type(v) is dict or type(v) is list:
                stack.append((v, depth + 1, (*loc, k)))


def _failing_cells(data: dict[str, Any], has_nul: bool) -> dict[str, Any]:
    """An import row whose cells the service cannot store or use fails as a row (I15),
    with the reason, like any other bad cell: U+0000 is replaced by U+FFFD in the copy
    kept for the failures file, an over-long cell is kept as it is."""
    cells = data.get("cells")
    if type(cells) is not dict:
        return data  # the model says what is wrong
    bad: list[str] = []
    kept: dict[Any, Any] = {}
    for key, cell in cells.items():
        if type(cell) is str:
            if has_nul and "\x00" in cell:
                bad.append(f"{key}: holds U+0000, which cannot be stored")
                cell = cell.replace("\x00", "\ufffd")
            elif len(cell) > MAX_VALUE:
                bad.append(f"{key}: {len(cell)} characters; the limit is {MAX_VALUE}")
        kept[key] = cell
    if not bad:
        return data
    return {**data, "cells": kept, "rowError": data.get("rowError") or "; ".join(bad)}


_MAX_REPORTED = 10
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _inbound_error(kind: InboundKind, data: dict[str, Any], exc: ValidationError) -> InboundError:
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    if errors[0]["type"] in ("union_tag_not_found", "union_tag_invalid"):
        expected = ", ".join(MODELS[kind])
        if "type" not in data:
            return InboundError("unknown_type", f"type: missing (expected one of {expected})")
        shown = orjson.dumps(data["type"]).decode()[:64]
        return InboundError("unknown_type", f"type: {shown} is not one of {expected}")
    # loc[0] is the union tag (the message type), already known from the message.
    reasons = [_reason(error["loc"][1:], error["msg"]) for error in errors[:_MAX_REPORTED]]
    if len(errors) > _MAX_REPORTED:
        reasons.append(f"and {len(errors) - _MAX_REPORTED} more")
    return InboundError("invalid_fields", "; ".join(reasons))


def _reason(loc: tuple[int | str, ...], msg: str) -> str:
    msg = msg[:1].lower() + msg[1:]
    path = _path(loc)
    return f"{path}: {msg}" if path else msg


def _path(loc: tuple[int | str, ...]) -> str:
    """`device.os`, `tags[0]`, `profile["a.b"]`: readable, and unambiguous for odd keys."""
    path = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for "the key itself", implied by the message
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        elif _PLAIN_NAME.fullmatch(part):
            path += f".{part}" if path else part
        else:
            path += f"[{orjson.dumps(part[:64]).decode()}]"
    return path


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
