"""Profile data on every path (P1, P2) and the MU limit whatever creates a user (I17)."""

from __future__ import annotations

from .domain_support import MIN, T0, World, changes

# -- P1 ----------------------------------------------------------------------------------


def test_p1_staff_edit_the_unsubscribe_flags_and_has_push_token() -> None:
    """Seed 001 l.18/289: the marketing-receipt flags are editable (bulk action); P1
    lists them with hasPushToken. A flag left out keeps its value."""
    w = World()
    lead = w.lead("a@example.jp", T0)
    out = w.ok("profile.update", T0 + MIN, userId=lead.id, profile={}, unsubscribeEmail=True, hasPushToken=True)
    user = w.user(lead.id)
    assert (user.unsubscribe_email, user.unsubscribe_texting, user.has_push_token) == (True, False, True)
    assert out.publications[0].value is not None and out.publications[0].value["changedKeys"] == ["unsubscribeEmail"]
    w.ok("profile.update", T0 + 2 * MIN, userId=lead.id, profile={}, unsubscribeTexting=True, unsubscribeEmail=False)
    user = w.user(lead.id)
    assert (user.unsubscribe_email, user.unsubscribe_texting, user.has_push_token) == (False, True, True)


def test_p1_the_api_upsert_sets_the_flags_of_a_new_and_an_existing_member() -> None:
    w = World()
    w.ok("member.upsert", T0, memberId="m1", profile={}, unsubscribeTexting=True)
    assert w.member("m1").unsubscribe_texting and not w.member("m1").unsubscribe_email
    out = w.ok("member.upsert", T0 + MIN, memberId="m1", profile={}, unsubscribeEmail=True, hasPushToken=False)
    m = w.member("m1")
    assert (m.unsubscribe_email, m.unsubscribe_texting, m.has_push_token) == (True, True, False)
    assert [c for _, c in changes(out)] == ["updated"]


def test_p1_a_flag_must_be_a_boolean() -> None:
    w = World()
    lead = w.lead("a@example.jp", T0)
    try:
        w.ok("profile.update", T0 + MIN, userId=lead.id, profile={}, unsubscribeEmail="yes")
    except Exception as err:  # the strict contract refuses it before the core runs
        assert "unsubscribeEmail" in str(err)
    else:
        raise AssertionError("a text flag was accepted")
