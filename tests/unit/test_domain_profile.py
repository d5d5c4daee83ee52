"""Profile data on every path (P1, P2) and the MU limit whatever creates a user (I17)."""

from __future__ import annotations

from services.domain.channel import ChannelSettings
from services.domain.mu import MuBudget

from .domain_support import CH, DAY, MIN, T0, World, changes

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


# -- P2 ----------------------------------------------------------------------------------


def test_p2_a_boot_cannot_put_text_into_a_built_in_date_key() -> None:
    """P2 on every path: `profile.lastCheckoutCompletedAt` is a date (seed 001 l.169–171),
    so a boot's "yesterday" is rejected with the key named, and nothing changes."""
    w = World()
    out = w.send("boot", T0, veilId="v1", platform="web", memberId="m1", profile={"lastCheckoutCompletedAt": "yesterday"})
    assert out.rejection is not None and out.rejection.code == "invalid_value"
    assert "profile.lastCheckoutCompletedAt" in out.rejection.reason
    assert list(w.directory.users()) == []


def test_p2_a_built_in_date_is_stored_as_an_import_stores_it() -> None:
    w = World()
    w.boot("v1", T0, memberId="m1", profile={"lastCheckoutCompletedAt": "2025-05-04"})
    assert w.member("m1").value("profile.lastCheckoutCompletedAt") == T0  # epoch ms at UTC midnight, as I9
    w.ok("member.upsert", T0 + MIN, memberId="m1", profile={"lastCheckoutCompletedAt": T0 + DAY})
    assert w.member("m1").value("profile.lastCheckoutCompletedAt") == T0 + DAY


def test_p2_commands_are_held_to_the_built_in_types_too() -> None:
    w = World()
    lead = w.lead("a@example.jp", T0)
    for type_, fields in (
        ("profile.update", {"userId": lead.id, "profile": {"name": 42}}),
        ("member.upsert", {"memberId": "m1", "profile": {"utmSource": ["ad"]}}),
        ("lead.create", {"profile": {"email": "b@example.jp", "lastCheckoutCompletedAt": "2025/05/04"}}),
    ):
        out = w.send(type_, T0 + MIN, **fields)
        assert out.rejection is not None and out.rejection.code == "invalid_value", type_


# -- I17 ---------------------------------------------------------------------------------


def limited(limit: int, visible: int = 0) -> World:
    return World(ChannelSettings(CH, mu_limit=limit, mu_budget=MuBudget(limit, visible)))


def test_i17_new_leads_and_members_beyond_the_limit_are_masked_whatever_created_them() -> None:
    """The MU limit masks new users of every path, not only an import's (seed 000 l.476:
    MU上限を超過した顧客は…自動でマスキング処理されます)."""
    w = limited(3)
    w.boot("v-anon", T0)  # anonymous: not MU (C5), not masked
    w.ok("chat", T0 + MIN, veilId="v-chat", chatId="c1", medium="web")  # 1: a lead by chat
    w.ok("member.upsert", T0 + 2 * MIN, memberId="m-api", profile={})  # 2: a member by the API
    w.ok("contact", T0 + 3 * MIN, veilId="v-anon", email="anon@example.jp")  # 3: the visitor becomes a lead
    w.boot("v-login", T0 + 4 * MIN, memberId="m-sdk")  # 4: a member by login: masked
    lead = w.lead("late@example.jp", T0 + 5 * MIN)  # 5: a lead by the API: masked
    assert [w.veil(v).masked for v in ("v-chat", "v-anon")] == [False, False]
    assert w.member("m-api").masked is False
    assert w.member("m-sdk").masked is True and w.user(lead.id).masked is True
    published = [p for p in w.published if p["userId"] == lead.id]
    assert published[0]["user"]["masked"] is True and published[0]["user"]["profile"] is None


def test_i17_an_update_never_unmasks_and_leaving_makes_room_for_the_next() -> None:
    w = limited(1)
    first = w.lead("a@example.jp", T0)
    second = w.lead("b@example.jp", T0 + MIN)
    assert (w.user(first.id).masked, w.user(second.id).masked) == (False, True)
    w.ok("user.delete", T0 + 2 * MIN, userId=first.id)  # room again …
    w.ok("profile.update", T0 + 3 * MIN, userId=second.id, profile={"plan": "gold"})
    assert w.user(second.id).masked is True  # … but an update never unmasks
    third = w.lead("c@example.jp", T0 + 4 * MIN)
    assert w.user(third.id).masked is False


def test_i17_a_rejected_fact_counts_nothing() -> None:
    w = limited(1)
    out = w.send("lead.create", T0, profile={"email": "a@example.jp", "lastCheckoutCompletedAt": "soon"})
    assert out.rejection is not None
    assert w.user(w.lead("b@example.jp", T0 + MIN).id).masked is False
