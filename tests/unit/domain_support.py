"""Building facts for the pure core, and a tiny world that applies them.

`fact()` goes through `contracts.inbound.parse_inbound`, so every test exercises the
real contract models. `World` applies facts to one Directory and checks, for every
publication, what docs/contract.md promises: it validates against `UserChanged`, versions
grow by one per user, and a `merged`/`deleted` message is followed by its tombstone.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson

from contracts.inbound import MODELS, parse_inbound
from contracts.outbound import UserChanged
from services.domain import core
from services.domain.channel import ChannelSettings
from services.domain.core import Fact, Outcome
from services.domain.directory import Directory
from services.domain.saga import member_candidates
from services.domain.user import User

CH = "ch_test"
T0 = 1_746_316_800_000  # 2025-05-04T00:00:00Z
SEC = 1_000
MIN = 60 * SEC
HOUR = 60 * MIN
DAY = 24 * HOUR

_KINDS = {type_: kind for kind, models in MODELS.items() for type_ in models}
_event_ids = itertools.count(1)


def fact(
    type_: str, at: int, *, channel: str = CH, event_id: str | None = None, **fields: Any
) -> Fact:
    """A parsed inbound fact of `type_` at event time `at` (eventId and channelId filled,
    `actor` defaulted for commands)."""
    kind = _KINDS[type_]
    body: dict[str, Any] = {
        "eventId": event_id or f"ev-{next(_event_ids)}",
        "type": type_,
        "channelId": channel,
        "occurredAt": at,
    }
    if kind == "commands":
        body["actor"] = "staff_1"
    body.update(fields)
    return Fact(parse_inbound(kind, orjson.dumps(body)), at)


def snapshot(directory: Directory) -> dict[str, Any]:
    """Everything a Directory holds, comparable with ==."""
    return {
        "users": {u.id: u.to_json() for u in directory.users()},
        "changed": [(uid, u.to_json()) for uid, u in directory.changed.items()],
        "index": {k: frozenset(v) for k, v in directory.index().items() if v},
    }


class World:
    """One Directory and the channel settings; applies facts and checks publications."""

    def __init__(self, *settings: ChannelSettings, users: tuple[User, ...] = ()) -> None:
        self.directory = Directory(users)
        self.settings = {s.channel_id: s for s in settings}
        self.versions: dict[str, int] = {}
        self.published: list[dict[str, Any]] = []

    def send(self, type_: str, at: int, *, channel: str = CH, **fields: Any) -> Outcome:
        f = fact(type_, at, channel=channel, **fields)
        settings = self.settings.setdefault(channel, ChannelSettings(channel))
        outcome = core.apply(self.directory, f, settings)
        if outcome.rejection is None:
            self._check(outcome, f)
        return outcome

    def ok(self, type_: str, at: int, **fields: Any) -> Outcome:
        """Like send, but the fact must be accepted."""
        outcome = self.send(type_, at, **fields)
        assert outcome.rejection is None, outcome.rejection
        return outcome

    def _check(self, outcome: Outcome, f: Fact) -> None:
        pubs = outcome.publications
        for i, pub in enumerate(pubs):
            if pub.value is None:
                prev = pubs[i - 1].value if i else None
                assert prev is not None and prev["change"] in ("merged", "deleted")
                assert pub.key == pubs[i - 1].key
                continue
            UserChanged.model_validate(pub.value)
            msg = pub.value
            assert pub.key == f"{msg['channelId']}:{msg['userId']}"
            assert msg["causationId"] == f.event_id
            assert msg["version"] == self.versions.get(msg["userId"], 0) + 1
            self.versions[msg["userId"]] = msg["version"]
            if msg["change"] in ("merged", "deleted"):
                assert i + 1 < len(pubs) and pubs[i + 1].value is None
            self.published.append(msg)

    # -- reading --------------------------------------------------------------------
    def veil(self, veil_id: str, channel: str = CH) -> User:
        user = self.directory.by_veil(channel, veil_id)
        assert user is not None, f"no user on veil {veil_id}"
        return user

    def member(self, member_id: str, channel: str = CH) -> User:
        user = self.directory.by_member(channel, member_id)
        assert user is not None, f"no member {member_id}"
        return user

    def user(self, user_id: str) -> User:
        user = self.directory.get(user_id)
        assert user is not None, f"no user {user_id}"
        return user

    # -- common facts ---------------------------------------------------------------
    def boot(self, veil: str, at: int, **fields: Any) -> Outcome:
        fields.setdefault("platform", "web")
        return self.ok("boot", at, veilId=veil, **fields)

    def lead(self, email: str, at: int) -> User:
        """A lead created through the API (qualified e-mail, never booted)."""
        out = self.ok("lead.create", at, profile={"email": email})
        (pub,) = out.publications
        assert pub.value is not None
        return self.user(pub.value["userId"])

    def upsert_member(self, member_id: str, at: int, **profile: Any) -> User:
        self.ok("member.upsert", at, memberId=member_id, profile=profile)
        return self.member(member_id)


def changes(outcome: Outcome) -> list[tuple[str, str | None]]:
    """(key, change) of every publication; tombstones as (key, None)."""
    return [(p.key, None if p.value is None else p.value["change"]) for p in outcome.publications]


def candidates(w: World, user: User) -> list[str]:
    """The user's current unification candidates (U5, U7 order), as staff read them."""
    return member_candidates(w.directory, w.user(user.id))
