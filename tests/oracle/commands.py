"""Handlers of `identity.commands` (staff tools, the API, the service itself)."""

from __future__ import annotations

from services.domain.values import Rejected, parse_tags
from tests.oracle.core import Work, handles
from tests.oracle.hygiene import clean_member_id
from tests.oracle.ids import fact_user_id, member_user_id
from tests.oracle.profile import profile_values, promote, set_flags, set_values
from tests.oracle.saga import approve, cancel_pending, offer_to_leads, refresh_candidates
from tests.oracle.user import EMAIL, MOBILE, User, Value


def _live(w: Work, user_id: str) -> User:
    """The user a command names. A merged id is rejected (U8): an edit, block or delete
    meant for the merged record must never land on the survivor, who may be someone
    staff did not mean (code `merged_user`, the reason names the survivor)."""
    user = w.directory.get(user_id)
    if user is None or user.deleted or user.channel_id != w.channel_id:
        raise Rejected("unknown_user", f"no user {user_id!r} in channel {w.channel_id!r}")
    if user.merged_into is not None:
        survivor = w.directory.resolve(user_id)
        into = survivor.id if survivor is not None else user.merged_into
        raise Rejected("merged_user", f"user {user_id!r} was merged into {into!r}; send the command for {into!r} (U8)")
    return user


def _resolved(w: Work, user_id: str) -> User:
    """The user a command names, a merged id resolved to its survivor (U8): for records
    that follow the person (a marketing delivery, so no campaign is sent twice, U4)."""
    user = w.directory.resolve(user_id)
    if user is None or user.deleted or user.channel_id != w.channel_id:
        raise Rejected("unknown_user", f"no user {user_id!r} in channel {w.channel_id!r}")
    return user


@handles("profile.update")
def on_profile_update(w: Work) -> None:
    """Staff/API edits: qualified (C4); an anonymous user given contact data is a lead (C2)."""
    msg = w.fact.msg
    user = _live(w, msg.userId).copy()
    is_member = user.type == "member"
    values = profile_values(msg.profile, w.settings, qualified=True, member=is_member, at=w.at)
    if msg.name is not None:
        values["name"] = Value(msg.name, True, is_member, w.at)
    if msg.tags is not None:
        user.tags = _tags(msg.tags)
    set_values(user, values)
    set_flags(user, msg)
    promote(user)
    user.last_contact_at = max(user.last_contact_at or w.at, w.at)
    refresh_candidates(w, user)
    w.put(user)
    offer_to_leads(w, user)


def _tags(tags: list[str]) -> list[str]:
    import orjson

    try:
        return sorted(set(parse_tags(orjson.dumps(tags).decode())))
    except Rejected as err:
        raise Rejected("invalid_value", f"tags: {err.reason}") from None


@handles("member.upsert")
def on_member_upsert(w: Work) -> None:
    """The API's upsert by memberId: update that member or create it (member data, qualified)."""
    msg = w.fact.msg
    member_id = clean_member_id(msg.memberId)
    values = profile_values(msg.profile, w.settings, qualified=True, member=True, at=w.at)
    if msg.name is not None:
        values["name"] = Value(msg.name, True, True, w.at)
    found = w.directory.by_member(w.channel_id, member_id)
    if found is not None:
        user = found.copy()
    else:
        uid = member_user_id(w.channel_id, member_id)
        if w.directory.get(uid) is not None:
            uid = member_user_id(w.channel_id, member_id, w.at)
        user = User(id=uid, channel_id=w.channel_id, type="member", member_id=member_id, created_at=w.at, updated_at=w.at)
    set_values(user, values)
    set_flags(user, msg)
    user.last_contact_at = max(user.last_contact_at or w.at, w.at)
    w.put(user)
    offer_to_leads(w, user)


@handles("lead.create")
def on_lead_create(w: Work) -> None:
    """The API's create by profile. A lead already holding that qualified contact is
    updated instead of duplicated (the API is retried by its callers)."""
    msg = w.fact.msg
    values = profile_values(msg.profile, w.settings, qualified=True, member=False, at=w.at)
    existing = None
    for key, kind in ((EMAIL, "email"), (MOBILE, "mobile")):
        val = values.get(key)
        if val is not None and val.v is not None and existing is None:
            leads = [u for u in w.directory.by_contact(w.channel_id, kind, val.v, qualified_only=True) if u.type == "lead"]
            existing = max(leads, key=lambda u: (u.last_seen_at or 0, u.id)) if leads else None
    if existing is not None:
        user = existing.copy()
    else:
        user = User(id=fact_user_id(w.channel_id, w.fact.event_id), channel_id=w.channel_id, type="lead", created_at=w.at, updated_at=w.at)
    set_values(user, values)
    user.last_contact_at = max(user.last_contact_at or w.at, w.at)
    refresh_candidates(w, user)
    w.put(user)


@handles("marketing.delivered")
def on_delivered(w: Work) -> None:
    """Delivery records follow the user through merges so no campaign is sent twice (U4).
    Receiving a message does not make a lead (C2), but it is contact (B4): a customer
    who only receives campaigns is not deleted as silent."""
    msg = w.fact.msg
    user = _resolved(w, msg.userId).copy()
    user.delivered = sorted({*user.delivered, msg.campaignId})
    user.last_contact_at = max(user.last_contact_at or w.at, w.at)
    w.put(user)


@handles("unification.approve")
def on_approve(w: Work) -> None:
    msg = w.fact.msg
    approve(w, msg.sourceUserId, msg.targetUserId)


@handles("unification.cancel")
def on_cancel(w: Work) -> None:
    """U6: staff cancel a pending unification; the source stays as it is (its candidates
    too: staff may approve again)."""
    msg = w.fact.msg
    source = _live(w, msg.sourceUserId)
    if source.pending_into is None:
        raise Rejected("not_pending", f"user {msg.sourceUserId!r} has no pending unification")
    left = source.copy()
    left.pending_into = left.pending_since = None
    w.put(left)


@handles("user.block", "user.unblock")
def on_block(w: Work) -> None:
    """B1: blocked users are hidden and not MU; blocking cancels pending unifications (U6)."""
    msg = w.fact.msg
    user = _live(w, msg.userId)
    blocked = msg.type == "user.block"
    if user.blocked == blocked:
        return
    changed = user.copy()
    changed.blocked = blocked
    w.put(changed)
    if blocked:
        cancel_pending(w, changed)


RETENTION_MS = 2 * 365 * 24 * 60 * 60 * 1000  # B4: two years without contact


@handles("user.delete")
def on_delete(w: Work) -> None:
    """B2 by staff or the API; B4 when the retention sweep (actor `system`) decided it,
    unless the user was in contact again after the sweep looked."""
    msg = w.fact.msg
    user = _live(w, msg.userId)
    if msg.actor == "system" and (user.last_contact_at or user.created_at) >= w.at - RETENTION_MS:
        return
    erase(w, user)


@handles("member.delete")
def on_member_delete(w: Work) -> None:
    """B3: sites delete withdrawn members by memberId."""
    msg = w.fact.msg
    member_id = clean_member_id(msg.memberId)
    user = w.directory.by_member(w.channel_id, member_id)
    if user is None:
        raise Rejected("unknown_user", f"no member {member_id!r} in channel {w.channel_id!r}")
    erase(w, user)


def erase(w: Work, user: User) -> None:
    """B2: irreversible; personal data removed, the id kept so it never comes back."""
    cancel_pending(w, user)
    user = w.directory.get(user.id) or user
    w.outcome.erased.append(user.id)
    w.put(user.husk(deleted=True))
