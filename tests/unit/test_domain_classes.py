"""Tenancy (T1), customer classes (C1–C4) and profile data (P1–P4) in the pure core."""

from __future__ import annotations

from services.domain.channel import ChannelSettings
from services.domain.mu import mu_visible
from services.domain.view import user_view

from .domain_support import CH, HOUR, MIN, T0, World, candidates, changes, snapshot

CH_B = "ch_other"


# -- T1 ----------------------------------------------------------------------------------


def test_t1_same_member_id_in_two_channels_is_two_users():
    w = World()
    w.boot("v1", T0, memberId="m1")
    w.boot("v1", T0 + MIN, memberId="m1", channel=CH_B)

    a, b = w.member("m1"), w.member("m1", channel=CH_B)
    assert a.id != b.id
    assert (a.channel_id, b.channel_id) == (CH, CH_B)
    assert a.sessions_count == b.sessions_count == 1
    assert a.merged_user_ids == b.merged_user_ids == []


def test_t1_same_email_in_two_channels_never_makes_a_candidate():
    w = World()
    w.upsert_member("m1", T0, email="taro@example.jp")
    lead = w.ok("lead.create", T0 + MIN, channel=CH_B, profile={"email": "taro@example.jp"})

    (pub,) = lead.publications
    other = w.user(pub.value["userId"])
    assert other.channel_id == CH_B
    assert candidates(w, other) == []
    assert w.directory.by_contact(CH_B, "email", "taro@example.jp") == [other]


def test_t1_login_in_another_channel_does_not_merge_into_that_channels_member():
    w = World()
    m = w.upsert_member("m1", T0)
    w.boot("v9", T0 + MIN, channel=CH_B)
    out = w.boot("v9", T0 + 2 * MIN, channel=CH_B, memberId="m1")

    assert out.merges == ()
    assert w.user(m.id).sessions_count == 0
    assert w.veil("v9", channel=CH_B).id != m.id


def test_t1_approval_across_channels_is_rejected():
    w = World()
    m = w.upsert_member("m1", T0, email="taro@example.jp")
    w.ok("lead.create", T0, channel=CH_B, profile={"email": "taro@example.jp"})
    (lead,) = [u for u in w.directory.users() if u.channel_id == CH_B]
    before = snapshot(w.directory)

    out = w.send(
        "unification.approve", T0 + MIN, channel=CH_B, sourceUserId=lead.id, targetUserId=m.id
    )

    assert out.rejection is not None and out.rejection.code == "unknown_user"
    assert snapshot(w.directory) == before


# -- C1 ----------------------------------------------------------------------------------


def test_c1_anonymous_user_is_not_published():
    w = World()
    out = [
        w.boot("v1", T0, device={"browser": "chrome"}, language="ja"),
        w.ok("track", T0 + MIN, veilId="v1", name="viewed", properties={"page": "/"}),
        w.boot("v1", T0 + 2 * MIN, profile={"plan": "free"}),
    ]
    assert [o.publications for o in out] == [[], [], []]
    user = w.veil("v1")
    assert user.type == "anonymous"
    assert user.version == 0
    assert user.value("profile.plan") == "free"  # collected all the same
    assert out[1].activities[0].user_id == user.id


# -- C2 ----------------------------------------------------------------------------------


def test_c2_chat_makes_a_lead():
    w = World()
    w.boot("v1", T0)
    out = w.ok(
        "chat",
        T0 + MIN,
        veilId="v1",
        chatId="c1",
        medium="web",
        message={"messageId": "x", "text": "hi"},
    )
    assert w.veil("v1").type == "lead"
    assert changes(out) == [(f"{CH}:{w.veil('v1').id}", "created")]


def test_c2_contact_data_makes_a_lead():
    w = World()
    w.boot("v1", T0)
    w.ok("contact", T0 + MIN, veilId="v1", email="taro@example.jp")
    assert w.veil("v1").type == "lead"


def test_c2_staff_entering_contact_makes_a_lead():
    w = World()
    w.boot("v1", T0)
    uid = w.veil("v1").id
    w.ok("profile.update", T0 + MIN, userId=uid, profile={"mobileNumber": "+819012345678"})
    assert w.user(uid).type == "lead"


def test_c2_staff_entering_other_data_keeps_an_anonymous_user():
    w = World()
    w.boot("v1", T0)
    uid = w.veil("v1").id
    out = w.ok("profile.update", T0 + MIN, userId=uid, profile={"company": "ACME"})
    assert w.user(uid).type == "anonymous"
    assert out.publications == []


def test_c2_api_lead_create_makes_a_lead():
    w = World()
    lead = w.lead("taro@example.jp", T0)
    assert lead.type == "lead"
    assert lead.booted is False


def test_c2_receiving_a_marketing_message_does_not_make_a_lead():
    w = World()
    w.boot("v1", T0)
    uid = w.veil("v1").id
    out = w.ok("marketing.delivered", T0 + MIN, userId=uid, campaignId="cmp_1")
    assert w.user(uid).type == "anonymous"
    assert w.user(uid).delivered == ["cmp_1"]
    assert out.publications == []


# -- C3 ----------------------------------------------------------------------------------


def test_c3_login_makes_a_member_and_it_never_becomes_a_lead_again():
    w = World()
    w.boot("v1", T0)
    w.boot("v1", T0 + MIN, memberId="m1")
    uid = w.member("m1").id
    w.ok("contact", T0 + 2 * MIN, veilId="v1", email="taro@example.jp")
    w.ok("chat", T0 + 3 * MIN, veilId="v1", chatId="c1", medium="web")
    w.ok("profile.update", T0 + 4 * MIN, userId=uid, profile={"email": None})

    user = w.user(uid)
    assert user.type == "member"
    assert user.member_id == "m1"


# -- C4 ----------------------------------------------------------------------------------


def test_c4_visitor_typed_contact_is_unqualified():
    w = World()
    w.boot("v1", T0)
    w.ok("contact", T0 + MIN, veilId="v1", email="taro@example.jp")
    val = w.veil("v1").fields["profile.email"]
    assert (val.v, val.q) == ("taro@example.jp", False)
    assert user_view(w.veil("v1"))["qualified"] == []


def test_c4_staff_edit_is_qualified():
    w = World()
    w.boot("v1", T0)
    uid = w.veil("v1").id
    w.ok("profile.update", T0 + MIN, userId=uid, profile={"email": "taro@example.jp"})
    assert w.user(uid).fields["profile.email"].q is True
    assert user_view(w.user(uid))["qualified"] == ["email"]


def test_c4_site_data_is_qualified_only_with_member_id():
    w = World()
    w.boot("v1", T0, profile={"company": "anon-typed"})
    w.boot("v2", T0, memberId="m1", profile={"company": "site"})
    assert w.veil("v1").fields["profile.company"].q is False
    assert w.member("m1").fields["profile.company"].q is True
    assert w.member("m1").fields["profile.company"].m is True


def test_c4_phone_caller_id_is_qualified_web_chat_contact_is_not():
    w = World()
    w.ok(
        "chat",
        T0,
        veilId="phone:1",
        chatId="c1",
        medium="phone",
        contact={"mobileNumber": "+819012345678"},
    )
    w.ok("chat", T0, veilId="v2", chatId="c2", medium="web", contact={"email": "hanako@example.jp"})
    assert w.veil("phone:1").fields["profile.mobileNumber"].q is True
    assert w.veil("v2").fields["profile.email"].q is False


def test_c4_unqualified_typing_never_overwrites_a_qualified_value():
    w = World()
    w.boot("v1", T0)
    uid = w.veil("v1").id
    w.ok("profile.update", T0 + MIN, userId=uid, profile={"email": "staff@example.jp"})
    w.ok("contact", T0 + 2 * MIN, veilId="v1", email="typed@example.jp")
    assert w.user(uid).value("profile.email") == "staff@example.jp"


# -- C5 ----------------------------------------------------------------------------------


def test_c5_mu_counts_leads_and_members_but_not_anonymous_or_blocked_users():
    w = World()
    w.boot("v_anon", T0)
    w.boot("v_lead", T0)
    w.ok("contact", T0 + MIN, veilId="v_lead", email="lead@example.jp")
    w.boot("v_member", T0, memberId="m1")
    w.boot("v_blocked", T0, memberId="m2")
    w.ok("user.block", T0 + MIN, userId=w.member("m2").id)
    w.boot("v_gone", T0, memberId="m3")
    w.ok("member.delete", T0 + MIN, memberId="m3")

    counted = {u.id for u in w.directory.users() if mu_visible(u)}
    assert counted == {w.veil("v_lead").id, w.member("m1").id}


# -- P1 ----------------------------------------------------------------------------------


def test_p1_profile_update_cannot_change_system_keys():
    w = World()
    w.boot("v1", T0)
    w.ok("contact", T0 + MIN, veilId="v1", email="taro@example.jp")
    uid = w.veil("v1").id
    before = w.user(uid)

    w.ok(
        "profile.update",
        T0 + 2 * MIN,
        userId=uid,
        profile={"sessionsCount": 99, "createdAt": 5, "lastSeenAt": 7, "id": "u_x", "member": True},
    )

    after = w.user(uid)
    assert after.id == uid
    assert (after.sessions_count, after.created_at, after.last_seen_at) == (1, T0, T0)
    assert after.type == "lead"
    assert after.member_id is None
    view = user_view(after)
    assert (view["sessionsCount"], view["createdAt"], view["lastSeenAt"]) == (1, T0, T0)
    assert view["web"] == user_view(before)["web"]
    # What was sent stays a profile key; it never reaches the top level.
    assert {k for k in after.fields if not k.startswith("profile.")} == set()


# -- P2 ----------------------------------------------------------------------------------


def test_p2_declared_type_rejects_a_bad_value_and_changes_nothing():
    w = World(ChannelSettings(CH, field_types={"profile.age": "number"}))
    w.boot("v1", T0)
    uid = w.veil("v1").id
    w.ok("profile.update", T0 + MIN, userId=uid, profile={"email": "taro@example.jp"})
    before = snapshot(w.directory)

    out = w.send(
        "profile.update", T0 + 2 * MIN, userId=uid, profile={"age": "forty", "company": "ACME"}
    )

    assert out.rejection is not None and out.rejection.code == "invalid_value"
    assert "profile.age" in out.rejection.reason
    assert out.publications == []
    assert snapshot(w.directory) == before


def test_p2_declared_type_coerces_a_good_value():
    w = World(ChannelSettings(CH, field_types={"profile.age": "number", "profile.vip": "boolean"}))
    w.boot("v1", T0, memberId="m1", profile={"age": "42", "vip": "yes"})
    assert w.member("m1").value("profile.age") == 42
    assert w.member("m1").value("profile.vip") is True


def test_p2_boot_with_a_bad_declared_value_is_rejected():
    w = World(ChannelSettings(CH, field_types={"profile.age": "number"}))
    out = w.send("boot", T0, veilId="v1", platform="web", profile={"age": True})
    assert out.rejection is not None and out.rejection.code == "invalid_value"
    assert list(w.directory.users()) == []


# -- P3 ----------------------------------------------------------------------------------


def test_p3_first_utm_and_referrer_stay_through_updates():
    w = World()
    w.boot("v1", T0, profile={"utmSource": "google", "referrer": "https://a.example/"})
    uid = w.veil("v1").id
    w.boot("v1", T0 + HOUR, profile={"utmSource": "bing", "referrer": "https://b.example/"})
    w.ok(
        "profile.update",
        T0 + 2 * HOUR,
        userId=uid,
        profile={"utmSource": "staff", "email": "t@example.jp"},
    )

    user = w.user(uid)
    assert user.value("profile.utmSource") == "google"
    assert user.value("profile.referrer") == "https://a.example/"


def test_p3_write_once_keeps_earliest_value_through_a_merge():
    w = World()
    w.boot("v1", T0, profile={"utmCampaign": "spring"})  # anonymous, unqualified, earliest
    w.boot("v2", T0 + HOUR, memberId="m1", profile={"utmCampaign": "summer"})  # member data
    w.boot("v1", T0 + 2 * HOUR, memberId="m1")  # U2: merged into m1

    assert w.member("m1").value("profile.utmCampaign") == "spring"


def test_p3_write_once_is_set_by_a_later_value_when_missing():
    w = World()
    w.boot("v1", T0, memberId="m1")
    w.boot("v1", T0 + MIN, memberId="m1", profile={"utmTerm": "shoes"})
    assert w.member("m1").value("profile.utmTerm") == "shoes"


# -- P4 ----------------------------------------------------------------------------------


def test_p4_name_and_profile_name_are_different_keys():
    w = World()
    w.boot("v1", T0, memberId="m1", name="Yamada Taro", profile={"name": "taro-chan"})
    uid = w.member("m1").id
    w.ok("profile.update", T0 + MIN, userId=uid, profile={"name": "typed"})

    user = w.user(uid)
    assert user.value("name") == "Yamada Taro"
    assert user.value("profile.name") == "typed"
    view = user_view(user)
    assert view["name"] == "Yamada Taro"
    assert view["profile"]["name"] == "typed"
