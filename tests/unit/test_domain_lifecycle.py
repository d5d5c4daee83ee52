"""Blocking and deletion (B1–B3), member hash (H1), identifier hygiene (G1), the
`user-changed` publication rules of docs/contract.md, and rejected facts changing nothing."""

from __future__ import annotations

from typing import Any

import pytest

from services.domain import core
from services.domain.channel import ChannelSettings, member_hash
from services.domain.core import Work
from services.domain.user import User
from services.domain.values import Rejected

from .domain_support import CH, HOUR, MIN, T0, World, changes, fact, snapshot

EMAIL = "taro@example.jp"
SECRET = "s3cret"


def published_lead(w: World, veil: str = "v1", at: int = T0) -> User:
    w.boot(veil, at)
    w.ok("chat", at + MIN, veilId=veil, chatId="c1", medium="web")
    return w.veil(veil)


# -- B1 ----------------------------------------------------------------------------------


def test_b1_block_and_unblock_are_published_as_blocked_and_unblocked():
    w = World()
    lead = published_lead(w)
    key = f"{CH}:{lead.id}"

    blocked = w.ok("user.block", T0 + HOUR, userId=lead.id)
    again = w.ok("user.block", T0 + HOUR + MIN, userId=lead.id)
    unblocked = w.ok("user.unblock", T0 + 2 * HOUR, userId=lead.id)

    assert changes(blocked) == [(key, "blocked")]
    assert blocked.publications[0].value["user"]["blocked"] is True
    assert blocked.publications[0].value["changedKeys"] == ["blocked"]
    assert again.publications == []
    assert changes(unblocked) == [(key, "unblocked")]
    assert unblocked.publications[0].value["user"]["blocked"] is False
    assert not w.user(lead.id).blocked


def test_b1_blocking_an_anonymous_user_is_not_published():
    w = World()
    w.boot("v1", T0)
    out = w.ok("user.block", T0 + MIN, userId=w.veil("v1").id)
    assert out.publications == []
    assert w.veil("v1").blocked


# -- B2 ----------------------------------------------------------------------------------


def test_b2_delete_publishes_deleted_then_tombstone_and_removes_personal_data():
    w = World()
    w.boot("v1", T0, memberId="m1", name="Yamada Taro", profile={"email": EMAIL}, language="ja")
    m = w.member("m1")
    w.ok("profile.update", T0 + MIN, userId=m.id, profile={}, tags=["vip"])

    out = w.ok("user.delete", T0 + HOUR, userId=m.id)

    key = f"{CH}:{m.id}"
    assert changes(out) == [(key, "deleted"), (key, None)]
    msg = out.publications[0].value
    assert msg["user"] is None and msg["mergedInto"] is None and msg["version"] == 3
    gone = w.user(m.id)
    assert gone.deleted
    assert (gone.fields, gone.member_id, gone.tags, gone.veils, gone.language) == (
        {},
        None,
        [],
        {},
        None,
    )
    assert w.directory.by_member(CH, "m1") is None
    assert w.directory.by_veil(CH, "v1") is None
    assert w.directory.by_contact(CH, "email", EMAIL) == []


def test_b2_deleted_user_is_gone_for_good():
    w = World()
    lead = published_lead(w)
    w.ok("user.delete", T0 + HOUR, userId=lead.id)

    update = w.send("profile.update", T0 + 2 * HOUR, userId=lead.id, profile={"company": "x"})
    assert update.rejection is not None and update.rejection.code == "unknown_user"
    again = w.send("user.delete", T0 + 2 * HOUR, userId=lead.id)
    assert again.rejection is not None and again.rejection.code == "unknown_user"
    w.boot("v1", T0 + 3 * HOUR)
    assert w.veil("v1").id != lead.id
    assert w.veil("v1").sessions_count == 1


def test_b2_deleting_an_anonymous_user_publishes_nothing():
    w = World()
    w.boot("v1", T0)
    out = w.ok("user.delete", T0 + MIN, userId=w.veil("v1").id)
    assert out.publications == []


# -- B3 ----------------------------------------------------------------------------------


def test_b3_member_delete_by_member_id():
    w = World()
    m = w.upsert_member("m1", T0, email=EMAIL)
    out = w.ok("member.delete", T0 + HOUR, memberId="m1")

    assert changes(out) == [(f"{CH}:{m.id}", "deleted"), (f"{CH}:{m.id}", None)]
    assert w.user(m.id).deleted
    w.boot("v1", T0 + 2 * HOUR, memberId="m1")  # the memberId comes back: a new person
    assert w.member("m1").id != m.id


def test_b3_member_delete_of_unknown_member_id_is_rejected():
    w = World()
    out = w.send("member.delete", T0, memberId="nobody")
    assert out.rejection is not None and out.rejection.code == "unknown_user"


# -- H1 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("given", [None, "", "0" * 64, member_hash(SECRET, "m2")])
@pytest.mark.parametrize("type_", ["boot", "login"])
def test_h1_wrong_member_hash_changes_nothing(type_: str, given: str | None):
    w = World(ChannelSettings(CH, member_hash_secret=SECRET))
    w.boot("v1", T0)
    w.ok("chat", T0 + MIN, veilId="v1", chatId="c1", medium="web")
    w.ok("member.upsert", T0, memberId="m1", profile={})
    before = snapshot(w.directory)

    extra: dict[str, Any] = {"platform": "web"} if type_ == "boot" else {}
    if given is not None:
        extra["memberHash"] = given
    out = w.send(type_, T0 + 2 * MIN, veilId="v1", memberId="m1", **extra)

    assert out.rejection is not None and out.rejection.code == "invalid_member_hash"
    assert out.publications == [] and out.merges == ()
    assert snapshot(w.directory) == before


def test_h1_right_member_hash_logs_in():
    w = World(ChannelSettings(CH, member_hash_secret=SECRET))
    w.boot("v1", T0)  # no memberId: no hash needed
    w.boot("v1", T0 + MIN, memberId="m1", memberHash=member_hash(SECRET, "m1").upper())
    assert w.member("m1").id == w.veil("v1").id


# -- G1 ----------------------------------------------------------------------------------

PLACEHOLDER_FACTS = [
    ("boot", {"veilId": "v1", "platform": "web", "memberId": "undefined"}),
    ("login", {"veilId": "v1", "memberId": " NULL "}),
    ("boot", {"veilId": "[object Object]", "platform": "web"}),
    ("chat", {"veilId": "guest", "chatId": "c", "medium": "web"}),
    ("track", {"veilId": "none", "name": "x"}),
    ("contact", {"veilId": "v1", "email": "anonymous"}),
    ("contact", {"veilId": "v1", "mobileNumber": "0"}),
    ("chat", {"veilId": "v1", "chatId": "c", "medium": "phone", "contact": {"mobileNumber": "-1"}}),
    ("member.upsert", {"memberId": "nan", "profile": {}}),
    ("member.delete", {"memberId": ""}),
    ("lead.create", {"profile": {"email": "null"}}),
    ("boot", {"veilId": "v1", "platform": "web", "memberId": "m1", "profile": {"email": "Guest"}}),
]


@pytest.mark.parametrize(("type_", "fields"), PLACEHOLDER_FACTS)
def test_g1_placeholder_identifier_dead_letters_and_changes_nothing(
    type_: str, fields: dict[str, Any]
):
    w = World()
    w.boot("v1", T0)
    before = snapshot(w.directory)
    out = w.send(type_, T0 + MIN, **fields)
    assert out.rejection is not None and out.rejection.code == "placeholder_identifier"
    assert snapshot(w.directory) == before


def test_g1_profile_update_with_placeholder_email_is_rejected():
    w = World()
    w.boot("v1", T0)
    uid = w.veil("v1").id
    out = w.send("profile.update", T0 + MIN, userId=uid, profile={"email": "undefined"})
    assert out.rejection is not None and out.rejection.code == "placeholder_identifier"
    assert w.user(uid).fields == {}


def test_g1_unparsable_contact_is_rejected():
    w = World()
    out = w.send("contact", T0, veilId="v1", email="not-an-address")
    assert out.rejection is not None and out.rejection.code == "invalid_contact"
    assert list(w.directory.users()) == []


# -- publication (docs/contract.md, user-changed) -----------------------------------------------


def test_publication_versions_start_at_1_and_grow_by_one_per_user():
    w = World()
    lead = published_lead(w)
    other = published_lead(w, "v2")
    w.ok("profile.update", T0 + HOUR, userId=lead.id, profile={"company": "ACME"})
    w.ok("user.block", T0 + HOUR, userId=lead.id)
    w.ok("user.unblock", T0 + HOUR, userId=lead.id)

    assert [m["version"] for m in w.published if m["userId"] == lead.id] == [1, 2, 3, 4]
    assert [m["version"] for m in w.published if m["userId"] == other.id] == [1]
    assert w.user(lead.id).version == 4


def test_publication_first_message_of_a_new_lead_carries_everything_gathered():
    w = World()
    w.boot(
        "v1",
        T0,
        device={"browser": "chrome"},
        language="ja",
        country="JP",
        profile={"company": "ACME"},
    )
    uid = w.veil("v1").id
    w.ok("marketing.delivered", T0 + MIN, userId=uid, campaignId="cmp_1")

    out = w.ok("contact", T0 + 2 * MIN, veilId="v1", email=EMAIL)

    (pub,) = out.publications
    msg = pub.value
    assert (msg["change"], msg["version"]) == ("created", 1)
    user = msg["user"]
    assert user["type"] == "lead"
    assert user["profile"] == {"company": "ACME", "email": EMAIL}
    assert user["web"]["browser"] == "chrome"
    assert (user["language"], user["country"], user["sessionsCount"]) == ("ja", "JP", 1)
    assert user["deliveredCampaigns"] == ["cmp_1"]
    assert user["createdAt"] == T0
    assert {
        "profile.email",
        "profile.company",
        "web.browser",
        "language",
        "sessionsCount",
        "deliveredCampaigns",
    } <= set(msg["changedKeys"])


def test_publication_first_message_of_a_new_member_is_created():
    w = World()
    w.boot("v1", T0)
    out = w.boot("v1", T0 + MIN, memberId="m1")
    (pub,) = out.publications
    assert pub.value["change"] == "created"
    assert pub.value["user"]["memberId"] == "m1"
    assert pub.value["user"]["type"] == "member"


def test_publication_activity_within_one_session_is_not_published_a_new_session_is():
    w = World()
    lead = published_lead(w)
    same = w.boot("v1", T0 + 10 * MIN)
    new = w.boot("v1", T0 + 10 * MIN + 31 * MIN)

    assert same.publications == []
    (pub,) = new.publications
    assert pub.value["change"] == "updated"
    assert pub.value["changedKeys"] == ["sessionsCount", "web.sessionsCount"]
    assert pub.value["user"]["lastSeenAt"] == T0 + 41 * MIN
    assert pub.value["user"]["updatedAt"] == T0 + 41 * MIN
    assert w.user(lead.id).version == 2


def test_publication_merged_carries_user_null_then_a_tombstone():
    w = World()
    m = w.upsert_member("m1", T0, email=EMAIL)
    lead = w.lead(EMAIL, T0)
    out = w.ok("unification.approve", T0 + MIN, sourceUserId=lead.id, targetUserId=m.id)

    key = f"{CH}:{lead.id}"
    msgs = [(p.key, p.value) for p in out.publications if p.key == key]
    assert [v is None for _, v in msgs] == [False, True]
    merged = msgs[0][1]
    assert (merged["change"], merged["user"], merged["mergedInto"], merged["version"]) == (
        "merged",
        None,
        m.id,
        2,
    )
    target = next(p.value for p in out.publications if p.key == f"{CH}:{m.id}")
    assert target["change"] == "updated"
    assert target["user"]["mergedUserIds"] == [lead.id]


def test_publication_every_message_validates_against_user_changed():
    # World validates each message with contracts.outbound.UserChanged; this drives every change kind.
    w = World()
    m = w.upsert_member("m1", T0, email=EMAIL)
    lead = w.lead(EMAIL, T0)
    other = published_lead(w, "v2")
    w.ok("user.block", T0 + HOUR, userId=other.id)
    w.ok("user.unblock", T0 + HOUR, userId=other.id)
    w.ok("unification.approve", T0 + HOUR, sourceUserId=lead.id, targetUserId=m.id)
    w.ok("user.delete", T0 + 2 * HOUR, userId=other.id)

    assert {msg["change"] for msg in w.published} == {
        "created",
        "updated",
        "merged",
        "deleted",
        "blocked",
        "unblocked",
    }


# -- rejected facts change nothing ---------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "fields", "code"),
    [
        ("profile.update", {"userId": "u_nobody", "profile": {}}, "unknown_user"),
        ("profile.update", {"userId": "LEAD", "profile": {}, "tags": ["a b"]}, "invalid_value"),
        ("profile.update", {"userId": "LEAD", "profile": {"age": "old"}}, "invalid_value"),
        (
            "unification.approve",
            {"sourceUserId": "LEAD", "targetUserId": "LEAD"},
            "invalid_unification",
        ),
        ("boot", {"veilId": "v1", "platform": "web", "memberId": "m1"}, "invalid_member_hash"),
        ("user.block", {"userId": "u_nobody"}, "unknown_user"),
    ],
)
def test_rejected_fact_leaves_the_directory_exactly_as_before(
    type_: str, fields: dict[str, Any], code: str
):
    w = World(ChannelSettings(CH, member_hash_secret=SECRET, field_types={"profile.age": "number"}))
    lead = published_lead(w)
    fields = {k: lead.id if v == "LEAD" else v for k, v in fields.items()}
    before = snapshot(w.directory)

    out = w.send(type_, T0 + HOUR, **fields)

    assert out.rejection is not None and out.rejection.code == code
    assert (out.publications, out.merges, out.activities) == ([], (), ())
    assert snapshot(w.directory) == before


def test_rejected_fact_rolls_back_what_its_handler_already_wrote(monkeypatch: pytest.MonkeyPatch):
    w = World()
    published_lead(w)  # v1: changed earlier in this batch
    w.boot("v2", T0)
    w.directory.changed.pop(w.veil("v2").id)  # v2: as if loaded from the store
    before = snapshot(w.directory)

    def half_done(work: Work) -> None:
        for veil in ("v1", "v2"):
            user = work.directory.by_veil(CH, veil).copy()
            user.veils = {"v3": work.at}
            user.fields.clear()
            work.put(user)
        work.put(
            User(
                id="u_new",
                channel_id=CH,
                type="anonymous",
                created_at=work.at,
                updated_at=work.at,
                veils={"v4": 1},
            )
        )
        raise Rejected("invalid_value", "late failure")

    monkeypatch.setitem(core.HANDLERS, "track", half_done)
    monkeypatch.delitem(core.PLAIN, "track")  # the handler's undo, not the plain path's
    out = core.apply(
        w.directory, fact("track", T0 + HOUR, veilId="v1", name="x"), ChannelSettings(CH)
    )

    assert out.rejection is not None and out.rejection.reason == "late failure"
    assert out.publications == []
    assert snapshot(w.directory) == before
    assert w.directory.get("u_new") is None
    assert w.directory.by_veil(CH, "v3") is None and w.directory.by_veil(CH, "v4") is None


def test_rejected_fact_then_the_next_fact_applies_normally():
    w = World(ChannelSettings(CH, member_hash_secret=SECRET))
    w.send("boot", T0, veilId="v1", platform="web", memberId="m1", memberHash="bad")
    out = w.boot("v1", T0 + MIN, memberId="m1", memberHash=member_hash(SECRET, "m1"))
    assert [c for _, c in changes(out)] == ["created"]
    assert w.member("m1").sessions_count == 1
