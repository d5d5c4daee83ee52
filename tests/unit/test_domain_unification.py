"""Unification (U1–U10), merge protection (G2, G4) and help-desk matching (D1)."""

from __future__ import annotations

from typing import Any

from services.domain.priority import merge_winner
from services.domain.saga import BLAST_RADIUS
from services.domain.unification import Contested, MergeRecord, merge
from services.domain.user import User, Value

from .domain_support import CH, HOUR, MIN, T0, World, candidates, changes

EMAIL = "taro@example.jp"
MOBILE = "+819012345678"

MOBILE_KEY = "profile.mobileNumber"


def booted_lead(w: World, veil: str, at: int, **profile: object) -> User:
    """An anonymous user that booted, then got a qualified contact from staff (U5)."""
    w.boot(veil, at)
    uid = w.veil(veil).id
    w.ok("profile.update", at + MIN, userId=uid, profile=profile)
    return w.user(uid)


# -- U1 ----------------------------------------------------------------------------------


def test_u1_member_login_on_another_members_veil_never_merges():
    w = World()
    w.boot("v1", T0, memberId="m1")
    m2 = w.upsert_member("m2", T0)
    out = w.boot("v1", T0 + MIN, memberId="m2")

    m1 = w.member("m1")
    assert out.merges == ()
    assert m1.alive and m1.merged_user_ids == [] and "v1" not in m1.veils
    assert w.veil("v1").id == m2.id
    assert w.user(m2.id).merged_user_ids == []


def test_u1_member_into_member_approval_is_refused():
    w = World()
    m1, m2 = w.upsert_member("m1", T0), w.upsert_member("m2", T0)
    out = w.send("unification.approve", T0 + MIN, sourceUserId=m1.id, targetUserId=m2.id)
    assert out.rejection is not None and out.rejection.code == "invalid_unification"
    assert w.user(m1.id).alive and w.user(m2.id).alive


def test_u1_lead_into_lead_is_never_done():
    w = World()
    a, b = w.lead(EMAIL, T0), w.lead("hanako@example.jp", T0)
    w.ok("profile.update", T0 + MIN, userId=b.id, profile={"mobileNumber": MOBILE})
    w.ok("profile.update", T0 + MIN, userId=a.id, profile={"mobileNumber": MOBILE})
    assert candidates(w, w.user(a.id)) == [] and candidates(w, w.user(b.id)) == []

    out = w.send("unification.approve", T0 + 2 * MIN, sourceUserId=a.id, targetUserId=b.id)
    assert out.rejection is not None and out.rejection.code == "invalid_unification"


# -- U2 ----------------------------------------------------------------------------------


def test_u2_login_with_known_member_id_merges_at_once():
    w = World()
    m = w.upsert_member("m1", T0)
    w.boot("v1", T0 + MIN)
    anon = w.veil("v1").id

    out = w.boot("v1", T0 + 2 * MIN, memberId="m1")

    assert [(r.source_id, r.target_id) for r in out.merges] == [(anon, m.id)]
    assert w.user(anon).merged_into == m.id
    assert w.veil("v1").id == m.id
    assert changes(out) == [(f"{CH}:{m.id}", "updated")]  # the anonymous source was never published


def test_u2_lead_login_with_known_member_id_merges_and_publishes_the_merge():
    w = World()
    m = w.upsert_member("m1", T0)
    w.boot("v1", T0 + MIN)
    w.ok("chat", T0 + 2 * MIN, veilId="v1", chatId="c1", medium="web")
    lead = w.veil("v1").id

    out = w.boot("v1", T0 + 3 * MIN, memberId="m1")

    assert sorted(changes(out), key=str) == sorted(
        [(f"{CH}:{lead}", "merged"), (f"{CH}:{lead}", None), (f"{CH}:{m.id}", "updated")], key=str
    )
    merged = next(p.value for p in out.publications if p.value and p.value["change"] == "merged")
    assert merged["mergedInto"] == m.id and merged["user"] is None


def test_u2_login_with_unknown_member_id_makes_the_same_user_a_member():
    w = World()
    w.boot("v1", T0)
    w.ok("chat", T0 + MIN, veilId="v1", chatId="c1", medium="web")
    lead = w.veil("v1")

    out = w.boot("v1", T0 + 2 * MIN, memberId="m1")

    member = w.member("m1")
    assert member.id == lead.id
    assert member.type == "member"
    assert out.merges == ()
    (pub,) = out.publications
    assert pub.value["change"] == "updated"
    assert {"memberId", "type"} <= set(pub.value["changedKeys"])


# -- U3 ----------------------------------------------------------------------------------

KEY = "profile.company"


def test_u3_qualified_beats_unqualified_member_data():
    qualified_lead = Value("staff", q=True, m=False, t=1)
    typed_by_member = Value("typed", q=False, m=True, t=9)
    assert merge_winner(KEY, qualified_lead, typed_by_member) is qualified_lead
    assert merge_winner(KEY, typed_by_member, qualified_lead) is qualified_lead


def test_u3_member_data_beats_newer_lead_data():
    member = Value("site", q=True, m=True, t=1)
    lead = Value("staff", q=True, m=False, t=9)
    assert merge_winner(KEY, lead, member) is member
    assert merge_winner(KEY, member, lead) is member


def test_u3_a_value_beats_a_newer_clear():
    value = Value("kept", q=True, m=True, t=1)
    cleared = Value(None, q=True, m=True, t=9)
    assert merge_winner(KEY, cleared, value) is value
    assert merge_winner(KEY, value, cleared) is value


def test_u3_otherwise_the_most_recently_set_value_wins():
    old, new = Value("old", q=True, m=False, t=1), Value("new", q=True, m=False, t=2)
    assert merge_winner(KEY, old, new) is new
    assert merge_winner(KEY, new, old) is new


def test_u3_a_key_only_one_side_has_is_kept():
    only = Value("x", q=False, m=False, t=1)
    assert merge_winner(KEY, only, None) is only
    assert merge_winner(KEY, None, only) is only


def test_u3_qualified_lead_contact_beats_the_members_typed_contact_in_a_merge():
    w = World()
    w.boot("vm", T0, memberId="m1")
    w.ok("contact", T0 + MIN, veilId="vm", email="typed@example.jp")  # member, unqualified
    lead = w.lead(EMAIL, T0 - HOUR)  # qualified, older, never booted
    w.ok("unification.approve", T0 + 2 * MIN, sourceUserId=lead.id, targetUserId=w.member("m1").id)
    assert w.member("m1").value("profile.email") == EMAIL


def test_u3_member_site_data_beats_newer_anonymous_data_in_a_login_merge():
    w = World()
    w.boot("v2", T0, memberId="m1", profile={"company": "site-co"})
    w.boot("v1", T0 + HOUR, profile={"company": "anon-co", "hobby": "tea"})
    w.boot("v1", T0 + 2 * HOUR, memberId="m1")
    member = w.member("m1")
    assert member.value("profile.company") == "site-co"
    assert member.value("profile.hobby") == "tea"  # a value beats no value


# -- U4 ----------------------------------------------------------------------------------


def _user(uid: str, type_: str, **kw: Any) -> User:
    return User(id=uid, channel_id=CH, type=type_, updated_at=0, **kw)


def test_u4_merge_moves_sessions_activity_tags_and_deliveries():
    source = _user(
        "u_s",
        "lead",
        created_at=100,
        sessions_count=2,
        last_seen_at=900,
        tags=["a", "shared"],
        import_tags=["imp1"],
        delivered=["cmp_s", "cmp_x"],
        merged_user_ids=["u_older"],
    )
    source.web.sessions_count, source.web.last_seen_at = 2, 900
    target = _user(
        "u_t",
        "member",
        created_at=200,
        member_id="m1",
        sessions_count=3,
        last_seen_at=500,
        tags=["m", "shared"],
        import_tags=["imp2"],
        delivered=["cmp_t", "cmp_x"],
    )
    target.mobile.sessions_count, target.mobile.last_seen_at = 3, 500

    retired, t, record = merge(source, target, 1_000, "ev-cause")

    assert t.sessions_count == 5
    assert (t.web.sessions_count, t.mobile.sessions_count) == (2, 3)
    assert t.last_seen_at == 900
    assert t.created_at == 100
    assert t.tags == ["a", "m", "shared"]
    assert t.import_tags == ["imp2", "imp1"]
    assert t.delivered == ["cmp_s", "cmp_t", "cmp_x"]
    assert t.merged_user_ids == ["u_older", "u_s"]
    assert retired.merged_into == "u_t" and retired.fields == {} and retired.tags == []
    assert (record.source_id, record.target_id, record.causation_id, record.occurred_at) == (
        "u_s",
        "u_t",
        "ev-cause",
        1_000,
    )
    assert target.sessions_count == 3 and source.merged_into is None  # inputs untouched


def test_u4_login_merge_adds_sessions_and_keeps_earliest_created_at():
    w = World()
    w.boot("v1", T0)  # A: created T0, session 1
    w.boot("v1", T0 + 2 * HOUR)  # A: session 2
    anon = w.veil("v1").id
    w.ok("profile.update", T0 + 2 * HOUR, userId=anon, profile={}, tags=["a", "shared"])
    w.ok("marketing.delivered", T0 + 2 * HOUR, userId=anon, campaignId="cmp_a")
    w.boot("v2", T0 + HOUR, memberId="m1")  # M: created T0+1h, session 1
    m = w.member("m1").id
    w.ok("profile.update", T0 + HOUR, userId=m, profile={}, tags=["shared", "vip"])
    w.ok("marketing.delivered", T0 + HOUR, userId=m, campaignId="cmp_m")

    out = w.boot("v1", T0 + 2 * HOUR + 10 * MIN, memberId="m1", event_id="ev-login")

    member = w.user(m)
    assert member.sessions_count == 3  # 2 + 1; the login is inside A's session
    assert member.web.sessions_count == 3
    assert member.created_at == T0
    assert member.last_seen_at == T0 + 2 * HOUR + 10 * MIN
    assert member.tags == ["a", "shared", "vip"]
    assert member.delivered == ["cmp_a", "cmp_m"]
    assert member.merged_user_ids == [anon]
    assert sorted(member.veils) == ["v1", "v2"]
    # Chats and events are re-pointed by the store from this record.
    assert out.merges == (MergeRecord(CH, anon, m, "ev-login", T0 + 2 * HOUR + 10 * MIN, ()),)


def test_u4_chat_message_keeps_the_author_name_it_was_written_under():
    w = World()
    w.boot("v2", T0, memberId="m1", name="Yamada Taro")
    w.boot("v1", T0, profile={"name": "taro-chan"})
    before = w.ok("chat", T0 + MIN, veilId="v1", chatId="c1", medium="web")
    w.boot("v1", T0 + 2 * MIN, memberId="m1")  # merged into m1
    after = w.ok("chat", T0 + 3 * MIN, veilId="v1", chatId="c1", medium="web")

    assert before.activities[0].body["authorName"] == "taro-chan"
    assert after.activities[0].body["authorName"] == "Yamada Taro"
    assert after.activities[0].user_id == w.member("m1").id


# -- U5 ----------------------------------------------------------------------------------


def test_u5_qualified_contact_of_a_new_lead_records_the_member_as_candidate():
    w = World()
    m = w.upsert_member("m1", T0, email=EMAIL)
    lead = w.lead(EMAIL, T0 + MIN)
    assert candidates(w, lead) == [m.id]
    assert lead.pending_into is None
    assert lead.alive and w.user(m.id).merged_user_ids == []


def test_u5_member_gaining_a_leads_contact_becomes_its_candidate():
    w = World()
    lead = w.lead(EMAIL, T0)
    m = w.upsert_member("m1", T0 + MIN, email=EMAIL)
    assert candidates(w, w.user(lead.id)) == [m.id]


def test_u5_approval_of_never_booted_source_merges_at_once():
    w = World()
    m = w.upsert_member("m1", T0, email=EMAIL)
    lead = w.lead(EMAIL, T0 + MIN)

    out = w.ok("unification.approve", T0 + 2 * MIN, sourceUserId=lead.id, targetUserId=m.id)

    assert [(r.source_id, r.target_id) for r in out.merges] == [(lead.id, m.id)]
    assert w.user(lead.id).merged_into == m.id
    assert candidates(w, w.user(m.id)) == []


def test_u5_approval_of_booted_source_waits_for_the_members_next_login():
    w = World()
    m = w.upsert_member("m1", T0, email=EMAIL)
    lead = booted_lead(w, "v1", T0, email=EMAIL)
    assert candidates(w, lead) == [m.id]

    out = w.ok("unification.approve", T0 + HOUR, sourceUserId=lead.id, targetUserId=m.id)
    assert out.merges == ()
    waiting = w.user(lead.id)
    assert (waiting.pending_into, waiting.pending_since) == (m.id, T0 + HOUR)
    assert waiting.alive and w.user(m.id).alive  # both still readable separately
    assert w.directory.pending_for(CH, m.id) == [waiting]

    out = w.boot("v9", T0 + 2 * HOUR, memberId="m1", event_id="ev-next-login")
    assert [(r.source_id, r.target_id, r.causation_id) for r in out.merges] == [
        (lead.id, m.id, "ev-next-login")
    ]
    assert w.user(lead.id).merged_into == m.id


def test_u5_a_login_before_the_approval_in_event_time_does_not_fire_it():
    w = World()
    m = w.upsert_member("m1", T0, email=EMAIL)
    lead = booted_lead(w, "v1", T0, email=EMAIL)
    w.ok("unification.approve", T0 + 2 * HOUR, sourceUserId=lead.id, targetUserId=m.id)

    late = w.ok("login", T0 + HOUR, veilId="v9", memberId="m1")  # happened before, consumed after
    assert late.merges == ()
    assert w.user(lead.id).pending_into == m.id

    out = w.ok("login", T0 + 3 * HOUR, veilId="v9", memberId="m1")
    assert [r.source_id for r in out.merges] == [lead.id]


def test_u5_a_login_after_the_approval_consumed_first_fires_it_at_approval():
    w = World()
    m = w.upsert_member("m1", T0, email=EMAIL)
    lead = booted_lead(w, "v1", T0, email=EMAIL)
    w.ok("login", T0 + 3 * HOUR, veilId="v9", memberId="m1")

    out = w.ok("unification.approve", T0 + 2 * HOUR, sourceUserId=lead.id, targetUserId=m.id)
    assert [r.source_id for r in out.merges] == [lead.id]


# -- U6 ----------------------------------------------------------------------------------


def _pending(w: World) -> tuple[User, User]:
    m = w.upsert_member("m1", T0, email=EMAIL)
    lead = booted_lead(w, "v1", T0, email=EMAIL)
    w.ok("unification.approve", T0 + HOUR, sourceUserId=lead.id, targetUserId=m.id)
    assert w.user(lead.id).pending_into == m.id
    return lead, m


def test_u6_pending_cancelled_when_source_is_blocked():
    w = World()
    lead, m = _pending(w)
    w.ok("user.block", T0 + 2 * HOUR, userId=lead.id)
    w.ok("user.unblock", T0 + 3 * HOUR, userId=lead.id)
    assert w.user(lead.id).pending_into is None
    assert w.ok("login", T0 + 4 * HOUR, veilId="v9", memberId="m1").merges == ()


def test_u6_pending_cancelled_when_target_is_blocked():
    w = World()
    lead, m = _pending(w)
    w.ok("user.block", T0 + 2 * HOUR, userId=m.id)
    assert w.user(lead.id).pending_into is None
    assert w.directory.pending_for(CH, m.id) == []


def test_u6_pending_cancelled_when_source_is_deleted():
    w = World()
    lead, m = _pending(w)
    w.ok("user.delete", T0 + 2 * HOUR, userId=lead.id)
    assert w.ok("login", T0 + 3 * HOUR, veilId="v9", memberId="m1").merges == ()
    assert w.user(m.id).merged_user_ids == []


def test_u6_pending_cancelled_when_target_is_deleted():
    w = World()
    lead, m = _pending(w)
    w.ok("member.delete", T0 + 2 * HOUR, memberId="m1")
    assert w.user(lead.id).pending_into is None
    assert w.user(lead.id).alive


def test_u6_pending_cancelled_when_source_is_merged_elsewhere_first():
    w = World()
    lead, m1 = _pending(w)
    m2 = w.upsert_member("m2", T0)
    w.boot("v1", T0 + 2 * HOUR, memberId="m2")  # the source logs in as m2 (U2)
    assert w.user(lead.id).merged_into == m2.id

    out = w.ok("login", T0 + 3 * HOUR, veilId="v9", memberId="m1")
    assert out.merges == ()
    assert w.user(m1.id).merged_user_ids == []


def test_u6_pending_cancelled_when_source_becomes_member():
    """U6 + U1: lead L pending into member M; L logs in as another (new) member, so L is a
    member itself; M's login then has nothing to merge (it used to raise MergeRefused
    out of the core)."""
    w = World()
    lead, m = _pending(w)
    w.boot("v1", T0 + 2 * HOUR, memberId="m2")  # no member m2 yet: the lead becomes it (U2)
    became = w.user(lead.id)
    assert became.type == "member" and became.member_id == "m2"
    assert became.pending_into is None and candidates(w, became) == [] and became.offered == []
    assert w.directory.pending_for(CH, m.id) == []

    out = w.ok("login", T0 + 3 * HOUR, veilId="v9", memberId="m1")
    assert out.merges == ()
    assert w.user(m.id).merged_user_ids == [] and w.user(lead.id).alive


def test_u6_u1_a_stored_pending_member_source_is_not_merged_at_the_targets_login():
    """A state written before the U6 rule (a member still marked pending) is skipped."""
    w = World()
    lead, m = _pending(w)
    stale = w.user(lead.id).copy()
    stale.type, stale.member_id = "member", "m2"
    w.directory.put(stale)
    out = w.ok("login", T0 + 3 * HOUR, veilId="v9", memberId="m1")
    assert out.merges == ()


def test_u6_pending_unification_never_fires_twice():
    w = World()
    lead, m = _pending(w)
    first = w.ok("login", T0 + 2 * HOUR, veilId="v9", memberId="m1")
    again = w.ok("login", T0 + 5 * HOUR, veilId="v9", memberId="m1")
    reapproved = w.ok("unification.approve", T0 + 6 * HOUR, sourceUserId=lead.id, targetUserId=m.id)

    assert len(first.merges) == 1
    assert again.merges == () and reapproved.merges == ()
    assert reapproved.publications == []
    assert w.user(m.id).merged_user_ids == [lead.id]


# -- U7 ----------------------------------------------------------------------------------


def test_u7_candidates_list_the_most_recently_updated_member_first():
    w = World()
    m1 = w.upsert_member("m1", T0, email=EMAIL)
    m2 = w.upsert_member("m2", T0 + MIN, email=EMAIL)
    lead = w.lead(EMAIL, T0 + 2 * MIN)
    assert candidates(w, lead) == [m2.id, m1.id]

    w.ok("profile.update", T0 + 3 * MIN, userId=m1.id, profile={"company": "ACME"})
    w.ok("profile.update", T0 + 4 * MIN, userId=lead.id, profile={"email": EMAIL})
    assert candidates(w, w.user(lead.id)) == [m1.id, m2.id]


def test_u7_candidates_follow_the_members_updates_without_the_lead_changing():
    """U7 as read now: a member updated after the lead was offered moves to the front."""
    w = World()
    m1 = w.upsert_member("m1", T0, email=EMAIL)
    m2 = w.upsert_member("m2", T0 + MIN, email=EMAIL)
    lead = w.lead(EMAIL, T0 + 2 * MIN)
    assert candidates(w, lead) == [m2.id, m1.id]
    w.ok("profile.update", T0 + 3 * MIN, userId=m1.id, profile={"company": "ACME"})
    assert candidates(w, lead) == [m1.id, m2.id]


def test_u5_u7_a_member_that_changed_its_contact_is_no_longer_a_candidate_and_approving_it_is_refused():
    """Candidates are current (issue 16): the member staff were offered changed its
    e-mail, so it is not listed any more, and approving the stale offer is refused with
    `stale_candidate` instead of merging two strangers."""
    w = World()
    m = w.upsert_member("m1", T0, email=EMAIL)
    lead = w.lead(EMAIL, T0 + MIN)
    assert candidates(w, lead) == [m.id]
    w.ok("member.upsert", T0 + 2 * MIN, memberId="m1", profile={"email": "moved@example.jp"})
    assert candidates(w, lead) == []
    out = w.send("unification.approve", T0 + 3 * MIN, sourceUserId=lead.id, targetUserId=m.id)
    assert out.rejection is not None and out.rejection.code == "stale_candidate"
    assert "no longer shares" in out.rejection.reason and w.user(lead.id).alive


def test_u5_u6_a_blocked_member_is_no_longer_a_candidate_and_approving_it_is_refused():
    w = World()
    m = w.upsert_member("m1", T0, email=EMAIL)
    lead = w.lead(EMAIL, T0 + MIN)
    w.ok("user.block", T0 + 2 * MIN, userId=m.id)
    assert candidates(w, lead) == []
    out = w.send("unification.approve", T0 + 3 * MIN, sourceUserId=lead.id, targetUserId=m.id)
    assert out.rejection is not None and (out.rejection.code, "is blocked" in out.rejection.reason) == ("stale_candidate", True)
    w.ok("user.unblock", T0 + 4 * MIN, userId=m.id)
    assert candidates(w, lead) == [m.id]  # current again: listed again, approvable again
    assert w.ok("unification.approve", T0 + 5 * MIN, sourceUserId=lead.id, targetUserId=m.id).merges


def test_u5_b2_a_deleted_member_is_no_longer_a_candidate_and_approving_it_is_refused():
    w = World()
    m1 = w.upsert_member("m1", T0, email=EMAIL)
    m2 = w.upsert_member("m2", T0 + MIN, email=EMAIL)
    lead = w.lead(EMAIL, T0 + 2 * MIN)
    w.ok("member.delete", T0 + 3 * MIN, memberId="m2")
    assert candidates(w, lead) == [m1.id]
    out = w.send("unification.approve", T0 + 4 * MIN, sourceUserId=lead.id, targetUserId=m2.id)
    assert out.rejection is not None and (out.rejection.code, "was deleted" in out.rejection.reason) == ("stale_candidate", True)


def test_u5_a_lead_that_lost_the_shared_contact_has_no_candidate_and_its_stale_approval_is_refused():
    w = World()
    m = w.upsert_member("m1", T0, email=EMAIL)
    lead = w.lead(EMAIL, T0 + MIN)
    w.ok("profile.update", T0 + 2 * MIN, userId=lead.id, profile={"email": "other@example.jp"})
    assert candidates(w, lead) == []
    out = w.send("unification.approve", T0 + 3 * MIN, sourceUserId=lead.id, targetUserId=m.id)
    assert out.rejection is not None and out.rejection.code == "stale_candidate"


def test_u5_a_match_made_by_the_members_own_login_data_is_offered_and_goes_stale_alike():
    """The site's login data gives the member the lead's e-mail: the lead lists it; the
    member later logs in with another address, so approving that offer is refused."""
    w = World()
    lead = w.lead(EMAIL, T0)
    w.boot("vm", T0 + MIN, memberId="m1", profile={"email": EMAIL})
    m = w.member("m1")
    assert candidates(w, lead) == [m.id] and w.user(lead.id).offered == [m.id]
    w.boot("vm", T0 + 2 * MIN, memberId="m1", profile={"email": "new@example.jp"})
    assert candidates(w, lead) == []
    out = w.send("unification.approve", T0 + 3 * MIN, sourceUserId=lead.id, targetUserId=m.id)
    assert out.rejection is not None and out.rejection.code == "stale_candidate"


def test_d1_a_member_never_offered_may_still_be_unified_by_hand():
    """Staff who identified the person themselves (D1: merge two customers by hand) are
    not refused: only an offer that went stale is."""
    w = World()
    m = w.upsert_member("m1", T0)
    lead = w.lead(EMAIL, T0 + MIN)
    assert candidates(w, lead) == []
    assert w.ok("unification.approve", T0 + 2 * MIN, sourceUserId=lead.id, targetUserId=m.id).merges


# -- U8 ----------------------------------------------------------------------------------


def test_u8_merged_id_resolves_to_the_target():
    w = World()
    m = w.upsert_member("m1", T0, email=EMAIL)
    lead = w.lead(EMAIL, T0)
    w.ok("unification.approve", T0 + MIN, sourceUserId=lead.id, targetUserId=m.id)

    assert w.directory.get(lead.id).merged_into == m.id
    assert w.directory.resolve(lead.id).id == m.id
    assert w.directory.by_contact(CH, "email", EMAIL) == [w.user(m.id)]


def test_u8_destructive_commands_naming_a_merged_id_are_rejected_naming_the_survivor():
    """U8: block, unblock, delete and profile update of a merged-away id never act on the
    survivor; the rejection (`merged_user`) names it."""
    w = World()
    m = w.upsert_member("m1", T0, email=EMAIL)
    lead = w.lead(EMAIL, T0)
    w.ok("unification.approve", T0 + MIN, sourceUserId=lead.id, targetUserId=m.id)
    before = w.user(m.id).to_json()

    for type_, extra in (
        ("user.delete", {}), ("user.block", {}), ("user.unblock", {}),
        ("profile.update", {"profile": {"company": "ACME"}}),
    ):
        out = w.send(type_, T0 + 2 * MIN, userId=lead.id, **extra)
        assert out.rejection is not None and out.rejection.code == "merged_user", type_
        assert m.id in out.rejection.reason
        assert out.publications == []

    assert w.user(m.id).to_json() == before
    assert w.user(m.id).alive


def test_u8_u4_a_delivery_naming_a_merged_id_follows_the_person():
    """U4: delivery records follow the survivor so no campaign is sent twice."""
    w = World()
    m = w.upsert_member("m1", T0, email=EMAIL)
    lead = w.lead(EMAIL, T0)
    w.ok("unification.approve", T0 + MIN, sourceUserId=lead.id, targetUserId=m.id)

    w.ok("marketing.delivered", T0 + 3 * MIN, userId=lead.id, campaignId="cmp_1")
    assert w.user(m.id).delivered == ["cmp_1"]
    assert w.user(lead.id).fields == {} and w.user(lead.id).delivered == []


# -- U9 ----------------------------------------------------------------------------------


def test_u9_email_matches_case_insensitively_after_trimming():
    w = World()
    m = w.upsert_member("m1", T0, email="Taro@Example.JP")
    out = w.ok("lead.create", T0 + MIN, profile={"email": "  taro@EXAMPLE.jp "})
    lead = w.user(out.publications[0].value["userId"])
    assert lead.value("profile.email") == EMAIL
    assert candidates(w, lead) == [m.id]


def test_u9_mobile_numbers_match_in_e164():
    w = World()
    m = w.upsert_member("m1", T0, mobileNumber="+81 090-1234-5678")
    out = w.ok("lead.create", T0 + MIN, profile={"mobileNumber": MOBILE})
    lead = w.user(out.publications[0].value["userId"])
    assert w.user(m.id).value("profile.mobileNumber") == MOBILE
    assert candidates(w, lead) == [m.id]


def test_u9_unqualified_contacts_never_make_candidates():
    w = World()
    w.upsert_member("m1", T0, email=EMAIL)
    w.boot("v1", T0)
    w.boot("v2", T0)  # a known visitor's web chat is its own (an unknown veil's would go to m1, D1)
    w.ok("contact", T0 + MIN, veilId="v1", email=EMAIL)
    w.ok("chat", T0 + MIN, veilId="v2", chatId="c", medium="web", contact={"email": EMAIL})
    for veil in ("v1", "v2"):
        user = w.veil(veil)
        assert user.type == "lead"
        assert candidates(w, user) == [] and user.pending_into is None and user.alive


def test_u9_a_members_unqualified_contact_never_makes_it_a_candidate():
    w = World()
    w.boot("vm", T0, memberId="m1")
    w.ok("contact", T0 + MIN, veilId="vm", email=EMAIL)
    assert candidates(w, w.lead(EMAIL, T0 + 2 * MIN)) == []


# -- U10 ---------------------------------------------------------------------------------


def test_u10_line_chat_makes_a_lead_that_unifies_at_once_after_staff_enter_a_contact():
    w = World()
    m = w.upsert_member("m1", T0, mobileNumber=MOBILE)
    chat = w.ok(
        "chat",
        T0 + MIN,
        veilId="line:U123",
        chatId="c1",
        medium="line",
        message={"messageId": "1", "text": "hi"},
    )
    lead = w.veil("line:U123")
    assert lead.type == "lead" and not lead.booted and candidates(w, lead) == []
    assert [c for _, c in changes(chat)] == ["created"]
    assert chat.activities[0].user_id == lead.id

    w.ok("profile.update", T0 + 2 * MIN, userId=lead.id, profile={"mobileNumber": MOBILE})
    assert candidates(w, w.user(lead.id)) == [m.id]

    out = w.ok("unification.approve", T0 + 3 * MIN, sourceUserId=lead.id, targetUserId=m.id)
    assert [(r.source_id, r.target_id) for r in out.merges] == [(lead.id, m.id)]
    assert w.veil("line:U123").id == m.id


# -- G2 ----------------------------------------------------------------------------------


def _pending_sources(w: World, m, n: int) -> list[str]:
    sources = []
    for i in range(n):
        w.boot(f"v{i}", T0)
        sources.append(w.veil(f"v{i}").id)
        w.ok("unification.approve", T0 + MIN, sourceUserId=sources[-1], targetUserId=m.id)
    return sources


def test_g2_a_login_merges_up_to_blast_radius_pending_sources():
    w = World()
    m = w.upsert_member("m1", T0)
    sources = _pending_sources(w, m, BLAST_RADIUS)

    out = w.ok("login", T0 + HOUR, veilId="vm", memberId="m1")

    assert BLAST_RADIUS == 50
    assert len(out.merges) == 50 and not out.notices
    assert all(not w.user(s).alive for s in sources)


def test_g2_a_login_that_would_merge_more_than_blast_radius_merges_none_and_says_so():
    w = World()
    m = w.upsert_member("m1", T0)
    sources = _pending_sources(w, m, BLAST_RADIUS + 1)

    out = w.ok("login", T0 + HOUR, veilId="vm", memberId="m1")

    assert out.merges == ()
    assert [n.code for n in out.notices] == ["blast_radius"]
    assert all(w.user(s).alive and w.user(s).pending_into == m.id for s in sources)  # still listed


# -- G4 ----------------------------------------------------------------------------------


def test_g4_merge_record_lists_contested_keys_with_the_winner():
    w = World()
    w.ok("lead.create", T0, profile={"email": EMAIL, "company": "lead-co", "utmSource": "ad"})
    lead = w.directory.by_contact(CH, "email", EMAIL)[0]
    m = w.upsert_member("m1", T0 + HOUR, company="m-co", utmSource="direct", plan="gold")

    out = w.ok(
        "unification.approve",
        T0 + 2 * HOUR,
        event_id="ev-approve",
        sourceUserId=lead.id,
        targetUserId=m.id,
    )

    (record,) = out.merges
    assert record == MergeRecord(
        CH,
        lead.id,
        m.id,
        "ev-approve",
        T0 + 2 * HOUR,
        (
            Contested("profile.company", "target", "lead-co", "m-co"),
            Contested("profile.utmSource", "source", "ad", "direct"),
        ),
    )


# -- D1 ----------------------------------------------------------------------------------


def test_d1_phone_chat_attaches_to_the_customer_with_that_number():
    w = World()
    m = w.upsert_member("m1", T0, mobileNumber=MOBILE)
    w.ok("lead.create", T0, profile={"mobileNumber": MOBILE})  # a lead with it too: members first
    count = len(list(w.directory.users()))

    out = w.ok(
        "chat",
        T0 + MIN,
        veilId="phone:1",
        chatId="c1",
        medium="phone",
        contact={"mobileNumber": "+81 90 1234 5678"},
    )

    assert out.activities[0].user_id == m.id
    assert len(list(w.directory.users())) == count
    assert w.directory.by_veil(CH, "phone:1") is None  # D1b: the inquiry, not the veil


def test_d1_email_inquiry_attaches_to_the_customer_with_that_address():
    w = World()
    lead = w.lead(EMAIL, T0)
    out = w.ok(
        "chat",
        T0 + MIN,
        veilId="mail:1",
        chatId="c1",
        medium="email",
        contact={"email": "TARO@example.jp"},
    )
    assert out.activities[0].user_id == lead.id


def test_d1b_an_email_chat_naming_a_members_address_never_hands_the_browser_veil_to_the_member():
    """D1b + H1: a chat with medium `email` carrying a member's address, sent from a
    fresh browser veil, attaches the chat to the member; that browser's later boots are
    an anonymous visitor, never the member without a login."""
    w = World()
    m = w.upsert_member("m1", T0, email=EMAIL)
    out = w.ok("chat", T0 + MIN, veilId="v-browser", chatId="c1", medium="email", contact={"email": EMAIL},
               message={"messageId": "x", "text": "hi"})
    assert out.activities[0].user_id == m.id
    assert "v-browser" not in w.user(m.id).veils
    assert w.directory.by_veil(CH, "v-browser") is None

    w.boot("v-browser", T0 + 2 * MIN)
    visitor = w.veil("v-browser")
    assert visitor.id != m.id and visitor.type == "anonymous"
    w.ok("track", T0 + 3 * MIN, veilId="v-browser", name="view")
    assert w.user(m.id).veils == {}


def test_d1_inquiry_without_a_match_creates_a_new_customer():
    w = World()
    w.lead(EMAIL, T0)
    out = w.ok(
        "chat",
        T0 + MIN,
        veilId="phone:2",
        chatId="c1",
        medium="phone",
        contact={"mobileNumber": MOBILE},
    )
    new = w.veil("phone:2")
    assert out.activities[0].user_id == new.id
    assert new.type == "lead"
    assert new.fields["profile.mobileNumber"].q is True


def _chat(w: World, veil: str, medium: str, at: int, **contact: str):
    return w.send("chat", at, veilId=veil, chatId=f"c-{veil}", medium=medium, contact=contact,
                  message={"messageId": f"m-{veil}", "text": "hello"})


def test_d1_a_phone_inquiry_never_goes_to_a_visitor_who_merely_typed_that_number():
    """D1 uses qualified contacts: a visitor who typed a stranger's number must not
    receive that stranger's call; with no customer holding it as qualified, the call is
    a new customer of its own."""
    w = World()
    w.boot("v-typist", T0)
    w.ok("contact", T0 + MIN, veilId="v-typist", mobileNumber=MOBILE)
    typist = w.veil("v-typist")
    out = _chat(w, "phone:9", "phone", T0 + HOUR, mobileNumber=MOBILE)
    assert out.rejection is None and out.activities[0].user_id != typist.id
    caller = w.user(out.activities[0].user_id)
    assert caller.type == "lead" and caller.fields[MOBILE_KEY].q


def test_d1_a_web_form_inquiry_with_an_email_attaches_to_the_customer_holding_it_qualified():
    """D1: "other channels (e-mail, web form) … same e-mail". The typed address does not
    become qualified anywhere, no customer is created and no veil is handed over (D1b)."""
    w = World()
    m = w.upsert_member("m1", T0, email=EMAIL)
    count = len(list(w.directory.users()))
    out = _chat(w, "web-form-1", "web", T0 + MIN, email=" Taro@Example.jp", mobileNumber=MOBILE)
    assert out.rejection is None and out.activities[0].user_id == m.id
    assert len(list(w.directory.users())) == count and w.directory.by_veil(CH, "web-form-1") is None
    member = w.user(m.id)
    assert member.fields["profile.email"].q and MOBILE_KEY not in member.fields  # the typed number is not added


def test_d1_a_web_form_email_only_typed_by_someone_else_matches_nobody():
    w = World()
    w.boot("v-typist", T0)
    w.ok("contact", T0 + MIN, veilId="v-typist", email=EMAIL)
    out = _chat(w, "web-form-2", "web", T0 + HOUR, email=EMAIL)
    own = w.veil("web-form-2")
    assert out.activities[0].user_id == own.id != w.veil("v-typist").id
    assert own.type == "lead" and not own.fields["profile.email"].q


def test_d1_a_phone_inquiry_matches_by_number_and_an_email_by_address_only():
    """Phone by the caller's number; e-mail by the address (not by whatever else they carry)."""
    w = World()
    m = w.upsert_member("m1", T0, email=EMAIL)
    out = _chat(w, "phone:3", "phone", T0 + MIN, mobileNumber=MOBILE, email=EMAIL)
    assert out.activities[0].user_id != m.id


def test_d1_b1_a_blocked_customer_is_not_matched():
    """Only blocked customers hold the number: the call is refused (seed 000: a blocked
    caller gets no connection), no customer is created. Another, unblocked holder is
    matched instead; a web form naming a blocked customer's address is the visitor's own."""
    w = World()
    m = w.upsert_member("m1", T0, mobileNumber=MOBILE, email=EMAIL)
    w.ok("user.block", T0 + MIN, userId=m.id)
    count = len(list(w.directory.users()))
    out = _chat(w, "phone:4", "phone", T0 + HOUR, mobileNumber=MOBILE)
    assert out.rejection is not None and out.rejection.code == "blocked_customer"
    assert len(list(w.directory.users())) == count

    web = _chat(w, "web-form-3", "web", T0 + HOUR, email=EMAIL)
    assert web.activities[0].user_id == w.veil("web-form-3").id != m.id

    other = w.lead("hanako@example.jp", T0 + 2 * HOUR)
    w.ok("profile.update", T0 + 2 * HOUR, userId=other.id, profile={"mobileNumber": MOBILE})
    again = _chat(w, "phone:5", "phone", T0 + 3 * HOUR, mobileNumber=MOBILE)
    assert again.rejection is None and again.activities[0].user_id == other.id


def test_u9_a_full_width_email_typed_with_an_ime_is_the_same_address():
    """U9: NFKC before comparing: ｔａｒｏ＠ｅｘａｍｐｌｅ．ｊｐ is taro@example.jp."""
    w = World()
    m = w.upsert_member("m1", T0, email=EMAIL)
    out = w.ok("lead.create", T0 + MIN, profile={"email": "ｔａｒｏ＠ｅｘａｍｐｌｅ．ｊｐ"})
    lead = w.user(out.publications[0].value["userId"])
    assert lead.value("profile.email") == EMAIL
    assert candidates(w, lead) == [m.id]
