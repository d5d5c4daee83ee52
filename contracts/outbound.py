"""Outbound messages of docs/contract.md: `user-changed`, `dead-letter`, and the user JSON.

We build these ourselves, so they are not strict (an `int` may fill a `float`), but they
still reject unknown fields and check the invariants the contract promises consumers:
a model that cannot be built is a bug caught before it is published.
Serialise with `model_dump(mode="json")` then `orjson`; never drop `None` values —
the contract prints absent values as `null`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.inbound import ChannelId, EpochMs, EventId, ProfileValue

UserType = Literal["anonymous", "lead", "member"]
Change = Literal["created", "updated", "merged", "deleted", "blocked", "unblocked"]

Count = Annotated[int, Field(ge=0)]


class _Outbound(BaseModel):
    # Consumers always receive every key (null when absent), so the serialization
    # schema lists defaulted fields as required too.
    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_serialization_defaults_required=True
    )


class PlatformView(_Outbound):
    """Activity on one platform; `lastSeenAt` is null until the first boot on it.

    Device keys are those of the last boot on the platform (S2), null when never sent.
    """

    sessionsCount: Count = 0
    lastSeenAt: EpochMs | None = None
    browser: str | None = None
    browserName: str | None = None
    os: str | None = None
    osName: str | None = None
    device: str | None = None
    appName: str | None = None
    appVersion: str | None = None


class UserView(_Outbound):
    """The `user` object: one user as consumers and `unifier user show` see it.

    `profile` keys have no `profile.` prefix (`{"email": …}`); `qualified` lists the
    profile keys whose value is qualified (C4). Masked users carry `memberId`, `name`
    and `profile` as null.
    """

    id: str
    channelId: ChannelId
    type: UserType
    memberId: str | None
    name: str | None
    tags: list[str]
    userImportTags: list[str] = Field(max_length=30, description="P5: at most 30, oldest dropped.")
    profile: dict[str, ProfileValue] | None
    qualified: list[str]
    unsubscribeEmail: bool
    unsubscribeTexting: bool
    blocked: bool
    masked: bool
    language: str | None
    city: str | None
    country: str | None
    sessionsCount: Count
    lastSeenAt: EpochMs
    createdAt: EpochMs
    updatedAt: EpochMs
    web: PlatformView
    mobile: PlatformView
    deliveredCampaigns: list[str]
    mergedUserIds: list[str] = Field(description="Ids of the users merged into this one (U8).")

    @model_validator(mode="after")
    def _masked_has_no_personal_data(self) -> UserView:
        if self.masked and (
            self.memberId is not None or self.name is not None or self.profile is not None
        ):
            raise ValueError("a masked user carries memberId, name and profile as null")
        return self


class UserChanged(_Outbound):
    """One visible change of a lead or member; key `{channelId}:{userId}`.

    `version` grows by one per message of the user: consumers drop stale ones.
    `merged` and `deleted` carry `user: null`, followed by a null-value tombstone.
    """

    eventId: EventId
    channelId: ChannelId
    userId: str
    version: Annotated[int, Field(ge=1)]
    change: Change
    changedKeys: list[str] = Field(description="`profile.email`, `memberId`, … that changed.")
    causationId: str = Field(description="`eventId` of the inbound message that caused it.")
    occurredAt: EpochMs
    # Always present, null unless change=merged. docs/contract.md says "only for
    # change=merged" of the value, and everywhere else it writes an absent value as an
    # explicit null (`"user": null` for merged/deleted, `"memberId": null`), so a stable
    # set of keys is the reading consistent with the rest of the contract.
    mergedInto: str | None = Field(
        description="Only for change=merged: the user this one was merged into; else null."
    )
    user: UserView | None

    @model_validator(mode="after")
    def _shape_follows_change(self) -> UserChanged:
        gone = self.change in ("merged", "deleted")
        if (self.mergedInto is not None) != (self.change == "merged"):
            raise ValueError("mergedInto is set exactly when change is merged")
        if (self.user is None) != gone:
            raise ValueError("user is null exactly when change is merged or deleted")
        if self.user is not None:
            if self.user.type == "anonymous":
                raise ValueError("anonymous users are never published")
            if (self.user.id, self.user.channelId) != (self.userId, self.channelId):
                raise ValueError("user.id and user.channelId must match userId and channelId")
        return self


class DeadLetterError(_Outbound):
    code: str = Field(
        description="`bad_json`, `unknown_type`, `invalid_fields`, `invalid_member_hash`…"
    )
    message: str


class DeadLetter(_Outbound):
    """A record the service could not apply, with the reason; key: the original key.

    `value` is the original record text; bytes that are not UTF-8 cannot be carried
    verbatim in JSON, so the writer decodes them with `errors="backslashreplace"`.
    """

    sourceTopic: str
    partition: Annotated[int, Field(ge=0)]
    offset: Annotated[int, Field(ge=0)]
    key: str | None
    value: str
    error: DeadLetterError
    failedAt: EpochMs


# ----------------------------------------------------------------- `unifier user show`


class UnificationView(_Outbound):
    candidates: list[str] = Field(description="User ids of members this user may be merged into.")
    pendingInto: str | None = Field(description="The member an approved merge waits for (U5).")


class UserShow(UserView):
    """What `unifier user show` prints for a live user."""

    unification: UnificationView


class MergedUserRef(_Outbound):
    """What `unifier user show` prints for an id that was merged away (U8)."""

    id: str
    mergedInto: str
