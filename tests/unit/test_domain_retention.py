"""B2 and B4: deletion erases personal data; the retention sweep's decisions are facts
that the core re-checks when it applies them."""

from __future__ import annotations

from tests.unit.domain_support import DAY, T0, World

TWO_YEARS = 2 * 365 * DAY


def test_b4_system_delete_of_a_user_silent_for_two_years_deletes_it() -> None:
    w = World()
    lead = w.lead("a@example.jp", T0)
    out = w.ok("user.delete", T0 + TWO_YEARS + DAY, actor="system", userId=lead.id)
    assert w.user(lead.id).deleted and out.erased == (lead.id,)


def test_b4_system_delete_is_skipped_when_the_user_was_in_contact_since() -> None:
    w = World()
    lead = w.lead("a@example.jp", T0)
    w.ok("profile.update", T0 + TWO_YEARS - DAY, userId=lead.id, profile={"plan": "gold"})
    out = w.ok("user.delete", T0 + TWO_YEARS + DAY, actor="system", userId=lead.id)
    assert not w.user(lead.id).deleted and out.erased == ()


def test_b2_staff_delete_does_not_wait_for_retention() -> None:
    w = World()
    lead = w.lead("a@example.jp", T0)
    w.ok("user.delete", T0 + DAY, actor="staff-1", userId=lead.id)
    assert w.user(lead.id).deleted and w.user(lead.id).fields == {}


def test_b4_a_marketing_message_received_is_contact() -> None:
    """B4 lists "marketing message" among contacts (seed 003: CRMマーケティングのメッセージの受信):
    a customer who only receives campaigns is not deleted as silent."""
    w = World()
    lead = w.lead("a@example.jp", T0)
    w.ok("marketing.delivered", T0 + TWO_YEARS - DAY, userId=lead.id, campaignId="cmp_1")
    assert w.user(lead.id).last_contact_at == T0 + TWO_YEARS - DAY
    out = w.ok("user.delete", T0 + TWO_YEARS + DAY, actor="system", userId=lead.id)
    assert not w.user(lead.id).deleted and out.erased == ()


def test_b4_a_campaign_delivered_again_is_contact_again() -> None:
    """A second delivery of a campaign already recorded is still a message received."""
    w = World()
    lead = w.lead("a@example.jp", T0)
    w.ok("marketing.delivered", T0 + DAY, userId=lead.id, campaignId="cmp_1")
    out = w.ok("marketing.delivered", T0 + TWO_YEARS - DAY, userId=lead.id, campaignId="cmp_1")
    assert w.user(lead.id).last_contact_at == T0 + TWO_YEARS - DAY and out.publications == []
