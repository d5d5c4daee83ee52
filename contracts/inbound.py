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


_MAX_INT64 = 2**63 - 1

EventId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
ChannelId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Actor = Annotated[str, StringConstraints(min_length=1, max_length=128)]
ImportId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
# Bounded so that it always fits PostgreSQL's bigint; orjson yields ints up to 2**64 - 1.
EpochMs = Annotated[int, Field(ge=0, le=_MAX_INT64)]

ProfileKey = Annotated[
    str,
    StringConstraints(pattern=r"^[^.](?s:.*[^.])?$"),
    _OneError("profile_key", "Profile key should be non-empty and not start or end with '.'"),
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

Profile = dict[ProfileKey, ProfileValue]

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

    browser: str | None = None
    browserName: str | None = None
    os: str | None = None
    osName: str | None = None
    device: str | None = None
    appName: str | None = None
    appVersion: str | None = None


class ChatMessage(_Strict):
    """One chat message; `text` is absent for stickers, images and the like."""

    messageId: str
    text: str | None = None


class ChatContact(_Strict):
    """Caller id or sender address; qualified for the `phone` and `email` media (C4)."""

    email: str | None = None
    mobileNumber: str | None = None

    @model_validator(mode="after")
    def _one_contact(self) -> ChatContact:
        if self.email is None and self.mobileNumber is None:
            raise _missing_contact()
        return self


class BootEvent(_Envelope):
    """A page or app start. With `memberId` it is also a login (U2)."""

    type: Literal["boot"]
    veilId: str
    platform: Platform
    memberId: str | None = None
    memberHash: str | None = None
    device: Device | None = None
    language: str | None = None
    city: str | None = None
    country: str | None = None
    profile: Profile | None = Field(
        default=None, description="Site data; qualified only when `memberId` is present."
    )
    name: str | None = None


class LoginEvent(_Envelope):
    """The visitor on `veilId` logged in as `memberId` (U2)."""

    type: Literal["login"]
    veilId: str
    memberId: str
    memberHash: str | None = None
    profile: Profile | None = None
    name: str | None = None


class ChatEvent(_Envelope):
    """Chat activity; starting a chat makes an anonymous user a lead (C2)."""

    type: Literal["chat"]
    veilId: str = Field(description="External-messenger veils look like `line:U123…`.")
    chatId: str
    medium: Medium
    message: ChatMessage | None = None
    contact: ChatContact | None = None


class ContactEvent(_Envelope):
    """Contact data typed by the visitor (unqualified, C4)."""

    type: Literal["contact"]
    veilId: str
    email: str | None = None
    mobileNumber: str | None = None

    @model_validator(mode="after")
    def _one_contact(self) -> ContactEvent:
        if self.email is None and self.mobileNumber is None:
            raise _missing_contact()
        return self


class TrackEvent(_Envelope):
    """A behaviour event."""

    type: Literal["track"]
    veilId: str
    name: str
    properties: dict[str, Any] = Field(default_factory=dict)


# ------------------------------------------------------------------------------ commands


class UpdateProfile(_Command):
    """Staff or API edit of a user (qualified, C4)."""

    type: Literal["profile.update"]
    userId: str
    profile: Profile
    name: str | None = None
    tags: list[str] | None = None


class UpsertMember(_Command):
    """API "upsert by memberId"."""

    type: Literal["member.upsert"]
    memberId: str
    profile: Profile
    name: str | None = None


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
    sourceUserId: str
    targetUserId: str


class BlockUser(_Command):
    type: Literal["user.block"]
    userId: str


class UnblockUser(_Command):
    type: Literal["user.unblock"]
    userId: str


class DeleteUser(_Command):
    type: Literal["user.delete"]
    userId: str


class DeleteMember(_Command):
    type: Literal["member.delete"]
    memberId: str


class MarketingDelivered(_Command):
    """A campaign reached the user; the record moves with merges (U4)."""

    type: Literal["marketing.delivered"]
    userId: str
    campaignId: str


class CancelUnification(_Command):
    """Staff cancel a pending unification (U6); rejected `not_pending` when there is none."""

    type: Literal["unification.cancel"]
    sourceUserId: str


# A grade name (D2): unique per channel, at most 64 characters, not blank, no surrounding
# spaces, no `/` (it is a path segment of the HTTP API) and no control characters.
GradeName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[^\s/\x00-\x1f\x7f](?:[^/\x00-\x1f\x7f]*[^\s/\x00-\x1f\x7f])?$"),
    _OneError(
        "grade_name",
        "Grade name should be 1 to 64 characters without '/', control characters or surrounding spaces",
    ),
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
    value: str = Field(description="Compared as identity keys are (U9): e-mail lower-cased, mobile in E.164.")


class UnassignGrade(_Command):
    """Take a grade away from a key (D2); a key without it is left as it is."""

    type: Literal["grade.unassign"]
    name: GradeName
    kind: GradeHolderKind
    value: str


# --------------------------------------------------------------------------- import-rows

ImportValueType = Literal["string", "number", "boolean", "date", "datetime", "list", "listOfNumber"]


class ImportColumn(_Strict):
    """One mapped CSV column (I5). `type` is the profile type (P2) the column is parsed
    as — a key the mapping creates gets it declared — and absent for keys with a format of
    their own (memberId, name, tags, the flags, the contacts)."""

    column: str = Field(description="The CSV header as in the file.")
    key: str = Field(description="`memberId`, `name`, `unsubscribeEmail`, `profile.email`, `tags`…")
    type: ImportValueType | None = None


class ImportStarted(_Envelope):
    """First message of an import: its settings, before any row (I1, I5, I6, I14)."""

    type: Literal["import.started"]
    importId: ImportId
    mode: Literal["member", "lead"]
    key: Literal["memberId", "email", "mobileNumber"]
    blank: Literal["keep", "clear"]
    tag: str | None = None
    actor: Actor
    fileName: str
    columns: list[ImportColumn]


class ImportRow(_Envelope):
    """One CSV data row, cells still raw text so that failures can quote them (I15)."""

    type: Literal["import.row"]
    importId: ImportId
    rowNumber: Annotated[int, Field(ge=2, le=_MAX_INT64)] = Field(
        description="As a spreadsheet shows it: the header is row 1."
    )
    cells: dict[str, str] = Field(description="Mapped key → the cell text as in the file.")
    rowError: str | None = Field(
        default=None,
        description="Why the importer could not read the row (e.g. more cells than columns);"
        " the row fails with this reason.",
    )


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
    | UnassignGrade,
    Field(discriminator="type"),
]
ImportMessage: TypeAlias = Annotated[
    ImportStarted | ImportRow | ImportFinished, Field(discriminator="type")
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
    | ImportStarted
    | ImportRow
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

InboundErrorCode = Literal["bad_json", "unknown_type", "invalid_fields"]


class InboundError(ValueError):
    """Why a record cannot be applied; `code` and `message` go to the dead letter as is."""

    def __init__(self, code: InboundErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code: InboundErrorCode = code
        self.message = message


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
): ...
@overload
def parse_inbound(
    topic_kind: Literal["import-rows"], raw: bytes
) -> ImportStarted | ImportRow | ImportFinished: ...
@overload
def parse_inbound(topic_kind: InboundKind, raw: bytes) -> InboundMessage: ...
def parse_inbound(topic_kind: InboundKind, raw: bytes) -> InboundMessage:
    """Decode one record value of an inbound topic, or raise `InboundError`.

    Raises `KeyError` for an unknown `topic_kind`: that is the caller's bug, not the
    producer's, and must not be dead-lettered.
    """
    adapter = _ADAPTERS[topic_kind]
    try:
        data = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise InboundError("bad_json", f"not UTF-8 JSON: {exc}") from None
    if type(data) is not dict:
        raise InboundError("bad_json", f"expected a JSON object, got {_json_kind(data)}")
    try:
        return adapter.validate_python(data)  # type: ignore[no-any-return]
    except ValidationError as exc:
        raise _inbound_error(topic_kind, data, exc) from None


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
