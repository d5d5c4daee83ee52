"""Handlers of `identity.commands` (staff tools, the API, the service itself)."""

from __future__ import annotations

from typing import Any, Final

from . import limits
from .channel import ChannelSettings
from .core import Fact, Outcome, Work, handles, handles_plainly
from .directory import Directory
from .hygiene import clean_member_id
from .ids import fact_user_id, member_user_id
from .limits import user_chars
from .priority import update_wins
from .profile import FLAG_ATTRS, profile_values, promote, set_flags, set_values
from .saga import approve, cancel_pending, member_candidates, offer_to_leads, refresh_candidates
from .sdk import _offered, _publish, _qualified, _shown_value
from .user import EMAIL, MOBILE, User, Value, new_user, new_value
from .values import Rejected, parse_tags


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
    user = w.edit(_live(w, msg.userId))
    is_member = user.type == "member"
    values = profile_values(msg.profile, w.settings, qualified=True, member=is_member, at=w.at)
    if msg.name is not None:
        values["name"] = new_value(msg.name, True, is_member, w.at)
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
        values["name"] = new_value(msg.name, True, True, w.at)
    found = w.directory.by_member(w.channel_id, member_id)
    if found is not None:
        user = w.edit(found)
    else:
        uid = member_user_id(w.channel_id, member_id)
        if w.directory.get(uid) is not None:
            uid = member_user_id(w.channel_id, member_id, w.at)
        user = new_user(uid, w.channel_id, "member", w.at, member_id)
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
        user = w.edit(existing)
    else:
        user = new_user(fact_user_id(w.channel_id, w.fact.event_id), w.channel_id, "lead", w.at)
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
    user = w.edit(_resolved(w, msg.userId))
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
    left = w.edit(source)
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
    changed = w.edit(user)
    changed.blocked = blocked
    w.put(changed)
    if blocked:
        cancel_pending(w, changed)


RETENTION_MS: Final = 2 * 365 * 24 * 60 * 60 * 1000  # B4: two years without contact


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
    w.outcome.erased += (user.id,)
    w.put(user.husk(deleted=True))


# -- plain paths (core.PLAIN) -----------------------------------------------------------
# The commonest commands of the live and replay mixes (an API upsert of a member, a
# staff edit of a member or lead, a delivery record), applied as sdk.py's plain paths
# are: each decides first, from the user as it is, everything that could refuse the fact
# or make it do more than it knows how to, and returns None *before any change* when
# that is the case (the handler above then applies the fact, and refuses it with its
# reason). What it changes it knows, so it knows the message's changed keys without the
# undo log, the snapshot and the diff of the general path. The size (limits) is the one
# check that needs the changed user: it comes before anything else moves, and what it
# set for it is put back when the user would be too large.
# tests/unit/test_core_differential.py holds every outcome and state equal to the oracle's.


def _flag_keys(user: User, msg: Any) -> list[str] | None:
    """set_flags' changes (P1) as the keys the view shows them by (hasPushToken is not
    shown); None when the command sets no flag to a new value."""
    keys: list[str] | None = None
    for key, attr in FLAG_ATTRS.items():
        value = getattr(msg, key)
        if value is not None and getattr(user, attr) != value:
            if keys is None:
                keys = []
            if key in _SHOWN_FLAGS:
                keys.append(key)
    return keys


_SHOWN_FLAGS = frozenset({"unsubscribeEmail", "unsubscribeTexting"})  # user_view's keys of set_flags' attributes


def _won(old_fields: dict[str, Value], values: dict[str, Value]) -> dict[str, Value]:
    """set_values' winners (C4, P3), without changing anything."""
    return {key: new for key, new in values.items() if update_wins(key, new, old_fields.get(key))} if values else values


def _field_keys(old_fields: dict[str, Value], new_fields: dict[str, Value], won: dict[str, Value]) -> list[str]:
    """The view's keys the values that won move: `name`, `profile.*` (their shown value)
    and `qualified` (C4) when a contact moved."""
    keys = [key for key, new in won.items() if _shown_value(old_fields.get(key)) != new.v]
    if (EMAIL in won or MOBILE in won) and _qualified(old_fields) != _qualified(new_fields):
        keys.append("qualified")
    return keys


def _settle(d: Directory, user: User, msg: Any, flags: list[str] | None, at: int, contacts: bool) -> None:
    """The last steps of a plain upsert or edit, once nothing can fail: the flags (P1),
    the last contact, and the directory (re-indexed only when a contact key moved)."""
    if flags is not None:
        set_flags(user, msg)
    user.last_contact_at = max(user.last_contact_at or at, at)
    if contacts:
        d.put(user)
    else:
        d.touched(user)


@handles_plainly("member.upsert")
def plain_member_upsert(d: Directory, fact: Fact, settings: ChannelSettings, messages: bool) -> Outcome | None:
    """`on_member_upsert` for an upsert that updates a live member or creates a new one.
    None sends the fact to the handler: a masked member (I17: publication.publish
    decides what its message shows), a new member in a channel with an MU limit (I17:
    maybe masked), a member whose qualified contacts are offered to leads holding them
    (U5: saga.offer_to_leads notes it on them), both ids of the memberId taken (B3), a
    member that would grow past the size limit."""
    msg = fact.msg
    ch, at = msg.channelId, fact.at
    member_id = clean_member_id(msg.memberId)  # G1: refusals raise here, before any change
    values = profile_values(msg.profile, settings, qualified=True, member=True, at=at) if msg.profile else {}
    if msg.name is not None:
        values["name"] = new_value(msg.name, True, True, at)
    user = d.by_member(ch, member_id)
    if user is None:
        return _new_member(d, fact, settings, member_id, values, messages)
    if user.masked:
        return None
    old_fields = user.fields
    won = _won(old_fields, values)
    new_fields = {**old_fields, **won} if won else old_fields
    contacts = EMAIL in won or MOBILE in won
    if (EMAIL in new_fields or MOBILE in new_fields) and _offered(d, user, new_fields):
        return None  # U5
    flags = _flag_keys(user, msg)
    if won:
        user.fields = new_fields
        if user_chars(user) > limits.MAX_USER_CHARS:
            user.fields = old_fields
            return None  # on_member_upsert refuses it (user_too_large)

    # Nothing below can fail.
    _settle(d, user, msg, flags, at, contacts)
    keys = _field_keys(old_fields, new_fields, won) if won else []
    if flags:
        keys.extend(flags)
    return Outcome(publications=_publish(user, keys, fact, messages))


def _new_member(
    d: Directory, fact: Fact, settings: ChannelSettings, member_id: str, values: dict[str, Value], messages: bool,
) -> Outcome | None:
    """A member.upsert of a memberId no live user has: a new member (its first message,
    `created`)."""
    msg = fact.msg
    ch, at = msg.channelId, fact.at
    if settings.mu_budget is not None:
        return None  # I17: a new MU, maybe masked
    uid = member_user_id(ch, member_id)
    if d.get(uid) is not None:  # that memberId was deleted once (B3): a new person
        uid = member_user_id(ch, member_id, at)
        if d.get(uid) is not None:
            return None  # on_member_upsert replaces that user
    user = new_user(uid, ch, "member", at, member_id)
    user.fields = dict(values)  # every value wins on a user with none (set_values)
    if (EMAIL in values or MOBILE in values) and _offered(d, user, user.fields):
        return None  # U5
    if user_chars(user) > limits.MAX_USER_CHARS:
        return None  # on_member_upsert refuses it (user_too_large)
    set_flags(user, msg)
    user.last_contact_at = at
    d.put(user)
    return Outcome(publications=_publish(user, [], fact, messages))


@handles_plainly("profile.update")
def plain_profile_update(d: Directory, fact: Fact, settings: ChannelSettings, messages: bool) -> Outcome | None:
    """`on_profile_update` for staff and API edits of a live member or lead (C4:
    qualified). None sends the fact to the handler: an unknown, deleted or merged user
    (U8: refused there), an anonymous user (C2: maybe promoted), a masked user (I17), a
    lead with a unification candidate it was not offered yet (U5: noted on it), a member
    whose qualified contacts are offered to leads (U5), a user that would grow past the
    size limit."""
    msg = fact.msg
    ch, at = msg.channelId, fact.at
    user = d.get(msg.userId)
    if user is None or user.deleted or user.channel_id != ch or user.merged_into is not None:
        return None  # _live refuses it (unknown_user, merged_user)
    if user.type == "anonymous" or user.masked:
        return None
    is_member = user.type == "member"
    values = profile_values(msg.profile, settings, qualified=True, member=is_member, at=at) if msg.profile else {}
    if msg.name is not None:
        values["name"] = new_value(msg.name, True, is_member, at)
    tags = None if msg.tags is None else _tags(msg.tags)  # a bad tag raises here
    old_fields, old_tags = user.fields, user.tags
    won = _won(old_fields, values)
    new_fields = {**old_fields, **won} if won else old_fields
    contacts = EMAIL in won or MOBILE in won
    if is_member:
        if (EMAIL in new_fields or MOBILE in new_fields) and _offered(d, user, new_fields):
            return None  # U5
    elif not user.blocked:  # saga.refresh_candidates, whether or not a contact moved
        user.fields = new_fields
        fresh = any(m not in user.offered for m in member_candidates(d, user))
        user.fields = old_fields
        if fresh:
            return None  # U5: the lead's new candidates are noted on it
    flags = _flag_keys(user, msg)
    retagged = tags is not None and tags != old_tags
    if won or retagged:
        user.fields = new_fields
        if retagged:
            user.tags = tags  # type: ignore[assignment]
        if user_chars(user) > limits.MAX_USER_CHARS:
            user.fields, user.tags = old_fields, old_tags
            return None  # on_profile_update refuses it (user_too_large)

    # Nothing below can fail.
    if tags is not None and not retagged:
        user.tags = tags  # the same tags, as on_profile_update sets them
    _settle(d, user, msg, flags, at, contacts)
    keys = _field_keys(old_fields, new_fields, won) if won else []
    if retagged:
        keys.append("tags")
    if flags:
        keys.extend(flags)
    return Outcome(publications=_publish(user, keys, fact, messages))


@handles_plainly("marketing.delivered")
def plain_delivered(d: Directory, fact: Fact, settings: ChannelSettings, messages: bool) -> Outcome | None:
    """`on_delivered`: the campaign noted on the user the id resolves to (U4), its last
    contact moved (B4). None sends the fact to the handler: an unknown or deleted user
    (refused there), a user that would grow past the size limit."""
    msg = fact.msg
    ch, at = msg.channelId, fact.at
    user = d.resolve(msg.userId)
    if user is None or user.deleted or user.channel_id != ch or user.merged_into is not None:
        return None  # _resolved refuses it
    # A masked user's message shows its campaigns (I17 hides the personal data only): the
    # same key as anyone's.
    old = user.delivered
    new = old if msg.campaignId in old else sorted({*old, msg.campaignId})
    if new is not old:
        user.delivered = new
        if user_chars(user) > limits.MAX_USER_CHARS:
            user.delivered = old
            return None  # on_delivered refuses it (user_too_large)

    # Nothing below can fail.
    user.last_contact_at = max(user.last_contact_at or at, at)
    d.touched(user)
    return Outcome(publications=_publish(user, [] if new is old else ["deliveredCampaigns"], fact, messages))
