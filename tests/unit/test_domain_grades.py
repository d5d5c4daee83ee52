"""Grades (D2) and staff cancelling a pending unification (U6) in the pure core."""

from __future__ import annotations

from services.domain.grades import GradeChange
from services.domain.user import User

from .domain_support import CH, HOUR, MIN, T0, World, candidates

EMAIL = "taro@example.jp"


def grade_changes(w: World, type_: str, at: int, **fields: object) -> list[GradeChange]:
    return list(w.ok(type_, at, **fields).grades)  # a tuple (Outcome): compared to lists here


def test_d2_define_then_assign_normalises_the_key_as_identities_are():
    """D2 + U9: the holder key is stored in its matching form."""
    w = World()
    assert grade_changes(w, "grade.define", T0, name="VIP", colour="#FFD700") == [
        GradeChange(CH, "define", "VIP", colour="#ffd700")
    ]
    assert grade_changes(w, "grade.assign", T0 + MIN, name="VIP", kind="email", value=" Taro@Example.JP ") == [
        GradeChange(CH, "assign", "VIP", kind="email", value=EMAIL)
    ]
    assert grade_changes(w, "grade.assign", T0 + MIN, name="VIP", kind="mobileNumber", value="+81 090-1234-5678") == [
        GradeChange(CH, "assign", "VIP", kind="mobileNumber", value="+819012345678")
    ]
    assert grade_changes(w, "grade.unassign", T0 + MIN, name="VIP", kind="memberId", value=" m-1 ") == [
        GradeChange(CH, "unassign", "VIP", kind="memberId", value="m-1")
    ]


def test_d2_assigning_an_undefined_grade_is_rejected_unknown_grade():
    w = World()
    out = w.send("grade.assign", T0, name="VIP", kind="email", value=EMAIL)
    assert out.rejection is not None and out.rejection.code == "unknown_grade"
    out = w.send("grade.remove", T0, name="VIP")
    assert out.rejection is not None and out.rejection.code == "unknown_grade"


def test_d2_a_removed_grade_is_undefined_and_redefining_changes_the_colour():
    w = World()
    w.ok("grade.define", T0, name="VIP", colour="#ffd700")
    assert grade_changes(w, "grade.define", T0 + MIN, name="VIP", colour="#ffd700") == []  # same: nothing to write
    assert grade_changes(w, "grade.define", T0 + MIN, name="VIP", colour="#000000") == [
        GradeChange(CH, "define", "VIP", colour="#000000")
    ]
    assert grade_changes(w, "grade.remove", T0 + 2 * MIN, name="VIP") == [GradeChange(CH, "remove", "VIP")]
    out = w.send("grade.assign", T0 + 3 * MIN, name="VIP", kind="email", value=EMAIL)
    assert out.rejection is not None and out.rejection.code == "unknown_grade"


def test_d2_t1_grades_are_per_channel():
    w = World()
    w.ok("grade.define", T0, name="VIP", colour="#ffd700")
    out = w.send("grade.assign", T0, channel="ch_other", name="VIP", kind="email", value=EMAIL)
    assert out.rejection is not None and out.rejection.code == "unknown_grade"


def test_d2_g1_a_placeholder_or_malformed_key_is_rejected():
    w = World()
    w.ok("grade.define", T0, name="VIP", colour="#ffd700")
    out = w.send("grade.assign", T0, name="VIP", kind="memberId", value="null")
    assert out.rejection is not None and out.rejection.code == "placeholder_identifier"
    out = w.send("grade.assign", T0, name="VIP", kind="email", value="not-an-address")
    assert out.rejection is not None and out.rejection.code == "invalid_contact"


def test_d2_grade_commands_change_no_user():
    w = World()
    m = w.upsert_member("m1", T0, email=EMAIL)
    w.ok("grade.define", T0 + MIN, name="VIP", colour="#ffd700")
    out = w.ok("grade.assign", T0 + 2 * MIN, name="VIP", kind="memberId", value="m1")
    assert out.publications == []
    assert w.user(m.id).version == 1


# -- U6: staff cancel ------------------------------------------------------------------


def _pending(w: World) -> tuple[User, User]:
    m = w.upsert_member("m1", T0, email=EMAIL)
    w.boot("v1", T0)
    lead = w.veil("v1")
    w.ok("profile.update", T0 + MIN, userId=lead.id, profile={"email": EMAIL})
    w.ok("unification.approve", T0 + HOUR, sourceUserId=lead.id, targetUserId=m.id)
    assert w.user(lead.id).pending_into == m.id
    return w.user(lead.id), m


def test_u6_staff_cancel_a_pending_unification_and_the_login_merges_nothing():
    w = World()
    lead, m = _pending(w)
    w.ok("unification.cancel", T0 + 2 * HOUR, sourceUserId=lead.id)
    assert w.user(lead.id).pending_into is None
    assert candidates(w, lead) == [m.id]  # still a candidate: staff may approve again
    assert w.ok("login", T0 + 3 * HOUR, veilId="v9", memberId="m1").merges == ()


def test_u6_cancel_without_a_pending_unification_is_rejected_not_pending():
    w = World()
    lead, _m = _pending(w)
    w.ok("unification.cancel", T0 + 2 * HOUR, sourceUserId=lead.id)
    out = w.send("unification.cancel", T0 + 3 * HOUR, sourceUserId=lead.id)
    assert out.rejection is not None and out.rejection.code == "not_pending"
    out = w.send("unification.cancel", T0 + 3 * HOUR, sourceUserId="u_nobody")
    assert out.rejection is not None and out.rejection.code == "unknown_user"
