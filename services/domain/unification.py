"""Merging a source (anonymous user or lead) into a target member (U1, U3, U4, U8, G4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from .priority import merge_winner
from .user import Platform, User, bare_user

IMPORT_TAG_LIMIT: Final = 30  # P5


class MergeRefused(Exception):
    """U1: only anonymous users and leads merge, and only into a member."""


@dataclass(frozen=True, slots=True)
class Contested:
    """G4: a key both users had, and which side's value the target kept."""

    key: str
    winner: str  # "source" | "target"
    source_value: Any
    target_value: Any

    # Written out so mypyc compiles it (see core.Fact.__init__).
    def __init__(self, key: str, winner: str, source_value: Any, target_value: Any) -> None:
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "winner", winner)
        object.__setattr__(self, "source_value", source_value)
        object.__setattr__(self, "target_value", target_value)


@dataclass(frozen=True, slots=True)
class MergeRecord:
    """G4: every merge is recorded; the record outlives the source."""

    channel_id: str
    source_id: str
    target_id: str
    causation_id: str
    occurred_at: int
    contested: tuple[Contested, ...]

    # Written out so mypyc compiles it (see core.Fact.__init__).
    def __init__(self, channel_id: str, source_id: str, target_id: str, causation_id: str, occurred_at: int,
                 contested: tuple[Contested, ...]) -> None:
        object.__setattr__(self, "channel_id", channel_id)
        object.__setattr__(self, "source_id", source_id)
        object.__setattr__(self, "target_id", target_id)
        object.__setattr__(self, "causation_id", causation_id)
        object.__setattr__(self, "occurred_at", occurred_at)
        object.__setattr__(self, "contested", contested)

    def to_json(self) -> dict[str, Any]:
        return {
            "channelId": self.channel_id,
            "sourceId": self.source_id,
            "targetId": self.target_id,
            "causationId": self.causation_id,
            "occurredAt": self.occurred_at,
            "contested": {
                c.key: {"winner": c.winner, "source": c.source_value, "target": c.target_value}
                for c in self.contested
            },
        }


def merge(source: User, target: User, at: int, causation_id: str) -> tuple[User, User, MergeRecord]:
    """Return (retired source, enriched target, record). Pure: inputs are untouched."""
    if target.type != "member" or source.type == "member" or not (source.alive and target.alive):
        raise MergeRefused(f"cannot merge {source.type} {source.id} into {target.type} {target.id}")
    if source.channel_id != target.channel_id:  # T1
        raise MergeRefused("users of different channels never merge")

    # The target is built in one pass, each slot set once (issue 14: a copy of the
    # target whose lists, platforms and fields were then replaced cost twice the work).
    # Every slot of User is set here; test_domain_unification checks the result against
    # the copy-then-replace definition, slot for slot.
    fields = dict(target.fields)
    t_fields = target.fields
    contested: list[Contested] = []
    for key in sorted(source.fields):  # a key only the target has stays as it is
        s_val, t_val = source.fields[key], t_fields.get(key)
        if t_val is None:
            fields[key] = s_val  # new keys in sorted order, after the target's, as before
            continue
        won = merge_winner(key, s_val, t_val)
        fields[key] = won  # type: ignore[assignment]  # both present: never None
        if s_val.v is not None and t_val.v is not None:
            contested.append(Contested(key, "target" if won is t_val else "source", s_val.v, t_val.v))

    t = bare_user()
    t.id, t.channel_id, t.type, t.updated_at, t.member_id = target.id, target.channel_id, target.type, target.updated_at, target.member_id
    t.fields = fields
    t.blocked, t.masked, t.deleted, t.merged_into = target.blocked, target.masked, target.deleted, target.merged_into
    t.offered, t.pending_into, t.pending_since = list(target.offered), target.pending_into, target.pending_since
    t.last_login_at, t.version = target.last_login_at, target.version
    # U4: sessions add up, lastSeenAt is the later, createdAt the earlier.
    t.sessions_count = target.sessions_count + source.sessions_count
    t.web = _merge_platform(target.web, source.web)
    t.mobile = _merge_platform(target.mobile, source.mobile)
    t.last_seen_at = _max(target.last_seen_at, source.last_seen_at)
    t.last_activity_at = _max(target.last_activity_at, source.last_activity_at)
    t.last_contact_at = _max(target.last_contact_at, source.last_contact_at)
    t.created_at = min(target.created_at, source.created_at)
    if (source.last_seen_at or 0) > (target.last_seen_at or 0):
        # Locale follows the most recent visit.
        t.language = source.language or target.language
        t.city = source.city or target.city
        t.country = source.country or target.country
    else:
        t.language = target.language or source.language
        t.city = target.city or source.city
        t.country = target.country or source.country
    t.tags = sorted(set(target.tags) | set(source.tags))
    t.import_tags = _union(target.import_tags, source.import_tags)[-IMPORT_TAG_LIMIT:]
    t.delivered = sorted(set(target.delivered) | set(source.delivered))  # no campaign twice
    # Unsubscribing is a person's wish: if either record asked for it, it holds.
    t.unsubscribe_email = target.unsubscribe_email or source.unsubscribe_email
    t.unsubscribe_texting = target.unsubscribe_texting or source.unsubscribe_texting
    t.has_push_token = target.has_push_token or source.has_push_token
    veils = dict(target.veils)
    for veil, last in source.veils.items():
        veils[veil] = max(last, veils.get(veil, last))
    t.veils = veils
    t.mobile_veils = sorted({*target.mobile_veils, *source.mobile_veils})  # a veil has one owner: no conflict
    t.booted = target.booted or source.booted
    t.merged_user_ids = sorted({*target.merged_user_ids, source.id, *source.merged_user_ids})

    s = retired(source, target.id)
    record = MergeRecord(source.channel_id, source.id, target.id, causation_id, at, tuple(contested))
    return s, t, record


def retired(source: User, target_id: str) -> User:
    """U8: what stays of a merged source: its id resolves to the target forever."""
    return source.husk(merged_into=target_id)


def _merge_platform(a: Platform, b: Platform) -> Platform:
    newer = a if (a.last_seen_at or 0) >= (b.last_seen_at or 0) else b
    older = b if newer is a else a
    return Platform(
        a.sessions_count + b.sessions_count,
        _max(a.last_seen_at, b.last_seen_at),
        {**older.device, **newer.device},
    )


def _max(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _union(first: list[str], second: list[str]) -> list[str]:
    seen = set(first)
    return [*first, *(x for x in second if not (x in seen or seen.add(x)))]  # type: ignore[func-returns-value]
