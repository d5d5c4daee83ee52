"""Request bodies and documented answers of the HTTP API. Field types come from the
contract's models (contracts/inbound.py), so the API accepts exactly what the service
applies; unknown fields are refused (422), as on the topics."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from contracts.inbound import HasPushToken, Profile, Text, UnsubscribeEmail, UnsubscribeTexting


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


Id = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class MemberBody(_Body):
    """`PUT …/members/{memberId}`: upsert by memberId (member.upsert). The flags: absent
    or null keeps the user's value (P1)."""

    profile: Profile = Field(default_factory=dict)
    name: Text | None = None
    unsubscribeEmail: UnsubscribeEmail = None
    unsubscribeTexting: UnsubscribeTexting = None
    hasPushToken: HasPushToken = None


class LeadBody(_Body):
    """`POST …/leads`: create by profile (lead.create); `email` and/or `mobileNumber`."""

    profile: Profile


class ProfilePatch(_Body):
    """`PATCH …/users/{userId}` (profile.update): the keys given are set (qualified)."""

    profile: Profile = Field(default_factory=dict)
    name: Text | None = None
    tags: list[str] | None = None
    unsubscribeEmail: UnsubscribeEmail = None
    unsubscribeTexting: UnsubscribeTexting = None
    hasPushToken: HasPushToken = None


class UnificationBody(_Body):
    sourceUserId: Id
    targetUserId: Id


class DeliveryBody(_Body):
    userId: Id
    campaignId: Id


class GradeBody(_Body):
    colour: Annotated[str, StringConstraints(pattern=r"^#[0-9A-Fa-f]{6}$")]


class HolderBody(_Body):
    """Exactly one key: the holder's e-mail, mobile number or memberId (D2)."""

    email: Id | None = None
    mobileNumber: Id | None = None
    memberId: Id | None = None

    @model_validator(mode="after")
    def _one_key(self) -> HolderBody:
        given = [k for k in ("email", "mobileNumber", "memberId") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of email, mobileNumber, memberId")
        return self

    def key(self) -> tuple[str, str]:
        for kind in ("email", "mobileNumber", "memberId"):
            if (value := getattr(self, kind)) is not None:
                return kind, value
        raise AssertionError("validated")


FieldType = Literal["string", "number", "boolean", "date", "datetime", "list", "listOfNumber"]


class SettingsPatch(_Body):
    """`PATCH …/settings`: what is given changes; `null` removes the MU limit or the secret."""

    muLimit: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    memberHashSecret: Annotated[str, StringConstraints(max_length=1024)] | None = None
    fields: dict[Annotated[str, StringConstraints(pattern=r"^profile\.[^.](?s:.*[^.])?$", max_length=256)], FieldType] = Field(
        default_factory=dict
    )


# -- answers (for the OpenAPI document) ------------------------------------------------


class Accepted(BaseModel):
    eventId: str


class CommandError(BaseModel):
    code: str
    message: str


class CommandStatus(BaseModel):
    state: Literal["pending", "applied", "rejected"]
    error: CommandError | None = None


class Applied(BaseModel):
    """`?wait=` on a command with no user to show (a deletion, a grade)."""

    eventId: str
    state: Literal["applied"]


class MergedAway(BaseModel):
    id: str
    mergedInto: str


class Page(BaseModel):
    items: list[dict[str, Any]]
    next: str | None


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, str]] | None = None


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the problem statuses a route may answer: 400 (a body or
    header that is not even JSON or multipart), 401, 403 and 503 on every route."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted({400, 401, 403, 503, *statuses}):
        out[status] = {"model": Problem, "content": {"application/problem+json": {}}}
    return out


def command_responses() -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` of a command route (docs/contract.md, "HTTP API", Commands)."""
    return {
        **problems(422),
        200: {"description": "With `?wait=`: applied. The user the command changed (as `GET …/users/{id}` shows it),"
                             " or `{\"eventId\", \"state\": \"applied\"}` when there is none to show (a deletion, a grade).",
              "content": {"application/json": {"schema": {"type": "object"}}}},
        202: {"model": Accepted, "description": "Published (or, with `?wait=`, still pending): see `Location`."},
        422: {"model": Problem, "content": {"application/problem+json": {}},
              "description": "Invalid fields (nothing published), or with `?wait=` rejected: `error` holds the dead"
                             " letter's `code` and `message`."},
    }
