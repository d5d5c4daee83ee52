"""Unification candidates and the delayed-unification saga (U5, U6, U7, G2).

The saga's state is on the source user (`pending_into`, `pending_since`), so it is
written in the same transaction as the fact that moves it. It is defined in event
time: a login that happened after the approval fires it, whichever was consumed first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .unification import merge
from .user import EMAIL, MOBILE, User
from .values import Rejected

if TYPE_CHECKING:  # core imports the handlers, which import this module
    from .core import Work
    from .directory import Directory

BLAST_RADIUS = 50  # G2: one fact merges at most this many sources


def member_candidates(directory: Directory, user: User) -> list[str]:
    """U5/U7/U9: the user's current candidates — live, unblocked members holding one of
    its qualified contacts, most recently updated first. Only a live, unblocked anonymous
    user or lead has candidates (U1, U6). `store/queries.member_candidates` is the same
    rule as the read side computes it."""
    if user.type == "member" or not user.alive or user.blocked:
        return []
    found: dict[str, User] = {}
    for key, kind in ((EMAIL, "email"), (MOBILE, "mobile")):
        val = user.fields.get(key)
        if val is None or val.v is None or not val.q:
            continue  # U9: unqualified contacts never unify
        for other in directory.by_contact(user.channel_id, kind, val.v, qualified_only=True):
            if other.type == "member" and other.alive and not other.blocked and other.id != user.id:
                found[other.id] = other
    ranked = sorted(found.values(), key=lambda m: (-(m.updated_at or 0), m.id))
    return [m.id for m in ranked]


def refresh_candidates(w: Work, user: User) -> None:
    """After a working copy's contacts changed: note the members it is now offered (U5),
    so that approving one of them after the match went away can be refused."""
    now = member_candidates(w.directory, user)
    if any(m not in user.offered for m in now):
        user.offered = sorted({*user.offered, *now})


def offer_to_leads(w: Work, member: User) -> None:
    """U5: a member holding a qualified contact is offered to the leads that hold it too
    (noted on them, so that approving it after the match went away can be refused)."""
    if member.type != "member" or not member.alive:
        return
    for key, kind in ((EMAIL, "email"), (MOBILE, "mobile")):
        val = member.fields.get(key)
        if val is None or val.v is None or not val.q:
            continue
        for other in w.directory.by_contact(w.channel_id, kind, val.v, qualified_only=True):
            if other.type != "member" and other.alive and member.id not in other.offered:
                lead = other.copy()
                refresh_candidates(w, lead)
                w.put(lead)


def shares_qualified_contact(a: User, b: User) -> bool:
    """U5/U9: do both hold one e-mail or mobile number as qualified contact data?"""
    for key in (EMAIL, MOBILE):
        x, y = a.fields.get(key), b.fields.get(key)
        if x is not None and y is not None and x.q and y.q and x.v is not None and x.v == y.v:
            return True
    return False


def approve(w: Work, source_id: str, target_id: str) -> None:
    """U5: merge at once a source that never booted, or one whose target member has
    already logged in after this approval (event time); else wait for that login."""
    d = w.directory
    source, target = d.get(source_id), d.resolve(target_id)
    if source is not None and target is not None and source.merged_into == target.id:
        return  # approved again after it already happened: nothing to do (U6: never twice)
    source = d.resolve(source_id)
    if source is None or not source.alive or source.channel_id != w.channel_id:
        raise Rejected("unknown_user", f"no live user {source_id!r} to unify")
    if target is not None and target.id in source.offered and target.channel_id == w.channel_id:
        _refuse_stale_offer(source, target)
    if target is None or not target.alive or target.channel_id != w.channel_id:  # T1
        raise Rejected("unknown_user", f"no live member {target_id!r} to unify into")
    if target.type != "member" or source.type == "member":
        raise Rejected("invalid_unification", f"only an anonymous user or lead merges into a member (U1): {source.type} → {target.type}")
    if source.blocked or target.blocked:
        raise Rejected("invalid_unification", "a blocked user is not unified (U6)")
    if not source.booted or (target.last_login_at is not None and target.last_login_at >= w.at):
        do_merge(w, source, target)
        return
    waiting = w.edit(source)
    waiting.pending_into, waiting.pending_since = target.id, w.at
    w.put(waiting)


def _refuse_stale_offer(source: User, target: User) -> None:
    """U5/U7: staff approve what they were offered; if the member has since been deleted,
    blocked or no longer shares a qualified contact with the source, the match they saw
    is gone and the approval is refused rather than merging two strangers. (A member never
    offered may still be approved by hand, D1: staff who found the person themselves.)"""
    if not target.alive:
        why = "was deleted"
    elif target.blocked:
        why = "is blocked"
    elif not shares_qualified_contact(source, target):
        why = "no longer shares a qualified e-mail or mobile number with it"
    else:
        return
    raise Rejected(
        "stale_candidate",
        f"member {target.id!r} was offered as a candidate of {source.id!r} but {why}: read its current candidates (U5)",
    )


def on_member_login(w: Work, member: User) -> None:
    """The saga's trigger: the member's login fires the unifications approved before it."""
    member = w.directory.get(member.id) or member
    login_at = max(member.last_login_at or w.at, w.at)
    if w.made(member):  # the login handler's own working copy, put just before: no second copy
        member.last_login_at = login_at
    else:
        updated = member.copy()
        updated.last_login_at = login_at
        w.put(updated)
    waiting = [
        s for s in w.directory.pending_for(w.channel_id, member.id)
        # A source that became a member meanwhile no longer waits (U6; its login cleared
        # it, but a state stored before that rule may still name it): never member→member (U1).
        if s.alive and s.type != "member" and s.pending_since is not None and s.pending_since <= w.at
    ]
    if len(waiting) > BLAST_RADIUS:
        # G2: a login that would merge more than 50 sources merges none; they stay pending
        # (listed for staff) and the fact says so.
        w.outcome.notices += (Rejected(
            "blast_radius",
            f"{len(waiting)} approved unifications wait for this member, more than {BLAST_RADIUS}: none merged automatically",
        ),)
        return
    for source in waiting:
        target = w.directory.get(member.id)
        assert target is not None
        do_merge(w, source, target)


def cancel_pending(w: Work, user: User) -> None:
    """U6: deleting or blocking either side cancels a pending unification."""
    if user.pending_into is not None:
        left = w.edit(w.directory.get(user.id) or user)
        left.pending_into = left.pending_since = None
        w.put(left)
    for source in w.directory.pending_for(w.channel_id, user.id):
        left = w.edit(source)
        left.pending_into = left.pending_since = None
        w.put(left)


def do_merge(w: Work, source: User, target: User) -> None:
    retired_source, merged_target, record = merge(source, target, w.at, w.fact.event_id)
    w.put(retired_source)
    w.put(merged_target)
    w.outcome.merges += (record,)
