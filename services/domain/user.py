"""The user aggregate: one customer record of a channel (T1) with its provenance.

Profile values carry where they came from (`Value`): whether they are qualified (C4),
whether they are member data, and the event time they were set. Merges and updates are
decided from that provenance (U3), never from the order facts happened to arrive in.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal, NamedTuple

import orjson

UserType = Literal["anonymous", "lead", "member"]

# The profile keys that are contact data (C2, C4, U9).
EMAIL = "profile.email"
MOBILE = "profile.mobileNumber"
CONTACT_KEYS = (EMAIL, MOBILE)


class Value(NamedTuple):
    """A profile value with its provenance. `v is None` is an explicit clear.

    A named tuple, not a frozen dataclass: every profile value of every fact builds one,
    and a frozen dataclass costs ~0.8 µs to build against ~0.2 µs (issue 14). Immutable
    all the same, so users may share one."""

    v: Any
    q: bool  # qualified (C4)
    m: bool  # member data: sent for a member by the site, the API or a member import (U3)
    t: int  # event time it was set (epoch ms)

    def to_json(self) -> list[Any]:
        return [self.v, self.q, self.m, self.t]

    @staticmethod
    def from_json(raw: list[Any]) -> Value:
        return Value(raw[0], raw[1], raw[2], raw[3])


@dataclass(slots=True)
class Platform:
    """Per-platform activity (S1, S2): `web` or `mobile`."""

    sessions_count: int = 0
    last_seen_at: int | None = None
    device: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"sessionsCount": self.sessions_count, "lastSeenAt": self.last_seen_at, **self.device}

    def copy(self) -> Platform:
        n = Platform.__new__(Platform)
        n.sessions_count, n.last_seen_at, n.device = self.sessions_count, self.last_seen_at, dict(self.device)
        return n

    @staticmethod
    def from_json(raw: dict[str, Any]) -> Platform:
        n = Platform.__new__(Platform)  # the slots set here, without the dataclass __init__
        device = dict(raw)
        n.sessions_count, n.last_seen_at, n.device = device.pop("sessionsCount", 0), device.pop("lastSeenAt", None), device
        return n


@dataclass(slots=True)
class User:
    """State of one user. Handlers change a stored user in place after `Work.edit` took
    its snapshot (the undo log, core.Snapshot), or hand a new state (a `copy()`, a merge's
    result) to `Work.put`. Lists are always replaced whole, never changed in place
    (`user.tags = [...]`, not `.append`): the snapshot holds the old list as the old value.
    Only `fields`, `veils` and the platforms are changed in place, and the snapshot copies them."""

    id: str
    channel_id: str
    type: UserType
    created_at: int
    updated_at: int
    member_id: str | None = None
    fields: dict[str, Value] = field(default_factory=dict)  # "name", "profile.*"
    tags: list[str] = field(default_factory=list)
    import_tags: list[str] = field(default_factory=list)
    unsubscribe_email: bool = False
    unsubscribe_texting: bool = False
    has_push_token: bool = False
    blocked: bool = False
    masked: bool = False
    deleted: bool = False
    merged_into: str | None = None
    language: str | None = None
    city: str | None = None
    country: str | None = None
    sessions_count: int = 0
    last_seen_at: int | None = None
    last_activity_at: int | None = None  # for the 30-minute session window (S1)
    last_contact_at: int | None = None  # for retention (B4)
    web: Platform = field(default_factory=Platform)
    mobile: Platform = field(default_factory=Platform)
    veils: dict[str, int] = field(default_factory=dict)  # veilId -> its last activity (S3, S4)
    booted: bool = False  # ever booted: decides the U5 timing
    delivered: list[str] = field(default_factory=list)  # marketing campaigns (U4)
    merged_user_ids: list[str] = field(default_factory=list)
    # Members ever offered as its unification candidates (U5), sorted. The current
    # candidates are computed when read (saga.member_candidates, store/queries); this
    # record only lets an approval of an offer that no longer holds be refused.
    offered: list[str] = field(default_factory=list)
    pending_into: str | None = None  # approved, waiting for the member's next login (U5 saga)
    pending_since: int | None = None  # event time of that approval
    last_login_at: int | None = None  # a member's latest login (a boot/login with memberId)
    version: int = 0  # last user-changed version published; 0 = never published
    mobile_veils: list[str] = field(default_factory=list)  # veils last booted by the app: a login there is mobile (S1)

    # -- copying and serialisation -------------------------------------------------
    def copy(self) -> User:
        # Slot by slot into a bare instance: the dataclass __init__ runs eight default
        # factories and costs ~2.3 µs before a single field is set, and every fact copies
        # the users it changes (~4.1 → ~2 µs). test_domain_user checks that a copy equals
        # the original and shares no list, dict or Platform with it.
        n = User.__new__(User)
        n.id, n.channel_id, n.type, n.created_at, n.updated_at = self.id, self.channel_id, self.type, self.created_at, self.updated_at
        n.member_id, n.fields, n.tags, n.import_tags = self.member_id, dict(self.fields), list(self.tags), list(self.import_tags)
        n.unsubscribe_email, n.unsubscribe_texting, n.has_push_token = self.unsubscribe_email, self.unsubscribe_texting, self.has_push_token
        n.blocked, n.masked, n.deleted, n.merged_into = self.blocked, self.masked, self.deleted, self.merged_into
        n.language, n.city, n.country, n.sessions_count = self.language, self.city, self.country, self.sessions_count
        n.last_seen_at, n.last_activity_at, n.last_contact_at = self.last_seen_at, self.last_activity_at, self.last_contact_at
        n.web, n.mobile = self.web.copy(), self.mobile.copy()
        n.veils, n.booted, n.delivered = dict(self.veils), self.booted, list(self.delivered)
        n.merged_user_ids, n.offered = list(self.merged_user_ids), list(self.offered)
        n.pending_into, n.pending_since, n.last_login_at = self.pending_into, self.pending_since, self.last_login_at
        n.version, n.mobile_veils = self.version, list(self.mobile_veils)
        return n

    def husk(self, *, deleted: bool = False, merged_into: str | None = None) -> User:
        """What stays of a user that is gone (deleted, B2, or merged, U8): its id, class,
        times and version, and the mark saying why; no personal data, no identities."""
        husk = new_user(self.id, self.channel_id, self.type, self.created_at)
        husk.updated_at, husk.deleted, husk.merged_into, husk.version = self.updated_at, deleted, merged_into, self.version
        return husk

    def value(self, key: str) -> Any:
        got = self.fields.get(key)
        return None if got is None else got.v

    @property
    def alive(self) -> bool:
        return not self.deleted and self.merged_into is None

    def to_json(self) -> dict[str, Any]:
        # Spelled out (every batch serialises each changed user; a loop over fields()
        # with getattr cost twice as much). Keys in field order; test_domain_user checks
        # that every field is here. Containers are copied: users change in place, and a
        # JSON form taken now must not follow later facts.
        return {
            "id": self.id, "channel_id": self.channel_id, "type": self.type,
            "created_at": self.created_at, "updated_at": self.updated_at, "member_id": self.member_id,
            "fields": {k: [v.v, v.q, v.m, v.t] for k, v in sorted(self.fields.items())},
            "tags": list(self.tags), "import_tags": list(self.import_tags),
            "unsubscribe_email": self.unsubscribe_email, "unsubscribe_texting": self.unsubscribe_texting,
            "has_push_token": self.has_push_token, "blocked": self.blocked, "masked": self.masked,
            "deleted": self.deleted, "merged_into": self.merged_into, "language": self.language,
            "city": self.city, "country": self.country, "sessions_count": self.sessions_count,
            "last_seen_at": self.last_seen_at, "last_activity_at": self.last_activity_at,
            "last_contact_at": self.last_contact_at, "web": self.web.to_json(), "mobile": self.mobile.to_json(),
            "veils": dict(self.veils), "booted": self.booted, "delivered": list(self.delivered),
            "merged_user_ids": list(self.merged_user_ids), "offered": list(self.offered),
            "pending_into": self.pending_into, "pending_since": self.pending_since,
            "last_login_at": self.last_login_at, "version": self.version, "mobile_veils": list(self.mobile_veils),
        }

    def state_json(self) -> bytes:
        """`orjson.dumps(self.to_json())`, the stored state's text, in one step: no
        container copied (the bytes cannot follow later changes), a platform's device
        spread in place. Every batch writes each changed user and a rebuild every user
        through here; tests/unit/test_domain_user.py holds the bytes equal to
        `to_json()`'s, which stays the definition of the format."""
        fields, web, mobile = self.fields, self.web, self.mobile
        return _dumps({
            "id": self.id, "channel_id": self.channel_id, "type": self.type,
            "created_at": self.created_at, "updated_at": self.updated_at, "member_id": self.member_id,
            "fields": {k: [*fields[k]] for k in sorted(fields)} if fields else {},
            "tags": self.tags, "import_tags": self.import_tags,
            "unsubscribe_email": self.unsubscribe_email, "unsubscribe_texting": self.unsubscribe_texting,
            "has_push_token": self.has_push_token, "blocked": self.blocked, "masked": self.masked,
            "deleted": self.deleted, "merged_into": self.merged_into, "language": self.language,
            "city": self.city, "country": self.country, "sessions_count": self.sessions_count,
            "last_seen_at": self.last_seen_at, "last_activity_at": self.last_activity_at,
            "last_contact_at": self.last_contact_at,
            "web": {"sessionsCount": web.sessions_count, "lastSeenAt": web.last_seen_at, **web.device},
            "mobile": {"sessionsCount": mobile.sessions_count, "lastSeenAt": mobile.last_seen_at, **mobile.device},
            "veils": self.veils, "booted": self.booted, "delivered": self.delivered,
            "merged_user_ids": self.merged_user_ids, "offered": self.offered,
            "pending_into": self.pending_into, "pending_since": self.pending_since,
            "last_login_at": self.last_login_at, "version": self.version, "mobile_veils": self.mobile_veils,
        })

    @staticmethod
    def from_json(raw: dict[str, Any]) -> User:
        # Field by field rather than User(**raw) over a patched copy (half the time):
        # every batch reads each user it touches through here.
        try:
            return User._from_complete_json(raw)
        except KeyError:  # a state stored before some field existed: its default then
            stored, raw = raw, {k: v for k, v in raw.items() if k in _FIELDS}
            if "candidates" in stored:  # stored before candidates were computed when read
                raw.setdefault("offered", sorted(set(stored["candidates"])))
            raw["fields"] = {k: Value.from_json(v) for k, v in raw["fields"].items()}
            raw["web"] = Platform.from_json(raw["web"])
            raw["mobile"] = Platform.from_json(raw["mobile"])
            return User(**raw)

    @staticmethod
    def _from_complete_json(raw: dict[str, Any]) -> User:
        return User(
            raw["id"], raw["channel_id"], raw["type"], raw["created_at"], raw["updated_at"], raw["member_id"],
            {k: _value(Value, v) for k, v in raw["fields"].items()},
            raw["tags"], raw["import_tags"], raw["unsubscribe_email"], raw["unsubscribe_texting"],
            raw["has_push_token"], raw["blocked"], raw["masked"], raw["deleted"], raw["merged_into"],
            raw["language"], raw["city"], raw["country"], raw["sessions_count"], raw["last_seen_at"],
            raw["last_activity_at"], raw["last_contact_at"], Platform.from_json(raw["web"]),
            Platform.from_json(raw["mobile"]), raw["veils"], raw["booted"], raw["delivered"],
            raw["merged_user_ids"], raw["offered"], raw["pending_into"], raw["pending_since"],
            raw["last_login_at"], raw["version"], raw["mobile_veils"],
        )


_FIELDS = tuple(f.name for f in fields(User))
FIELD_NAMES = _FIELDS
"""Every attribute of a user, in field order (core.Snapshot reads them in one call)."""
_dumps = orjson.dumps
# A stored value's list [v, q, m, t] as a Value, by tuple's own constructor (a named
# tuple's __new__ is a Python function: twice the time). Stored values always have the
# four items to_json writes.
_value = tuple.__new__


def new_user(user_id: str, channel_id: str, type_: UserType, at: int, member_id: str | None = None) -> User:
    """`User(id=user_id, channel_id=channel_id, type=type_, created_at=at, updated_at=at,
    member_id=member_id)`: a new user, every other attribute its default, each container
    its own. Slot by slot into a bare instance: the dataclass __init__ with its eight
    default factories costs about twice as much, and most facts of a log create a user
    (a first boot, a new member, a husk). test_domain_user holds the two equal."""
    n = User.__new__(User)
    n.id, n.channel_id, n.type, n.created_at, n.updated_at, n.member_id = user_id, channel_id, type_, at, at, member_id
    n.fields, n.tags, n.import_tags, n.veils = {}, [], [], {}
    n.unsubscribe_email = n.unsubscribe_texting = n.has_push_token = n.blocked = n.masked = n.deleted = n.booted = False
    n.merged_into = n.language = n.city = n.country = None
    n.last_seen_at = n.last_activity_at = n.last_contact_at = n.pending_into = n.pending_since = n.last_login_at = None
    n.sessions_count = n.version = 0
    web, mobile = Platform.__new__(Platform), Platform.__new__(Platform)
    web.sessions_count, web.last_seen_at, web.device = 0, None, {}
    mobile.sessions_count, mobile.last_seen_at, mobile.device = 0, None, {}
    n.web, n.mobile = web, mobile
    n.delivered, n.merged_user_ids, n.offered, n.mobile_veils = [], [], [], []
    return n


def bare_user() -> User:
    """A User with no attribute set yet, for code that sets every one (core.Snapshot)."""
    return User.__new__(User)
