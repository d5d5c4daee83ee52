"""The import handlers of the pure core (I1–I17), one rule per test, no I/O."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.inbound import ImportFinished, ImportRow, ImportStarted
from services.domain import core
from services.domain.core import Fact, Outcome
from services.domain.directory import Directory
from services.domain.imports import Column, ImportBook, ImportChannel, ImportDef
from services.domain.mu import MuBudget
from services.domain.saga import member_candidates
from services.domain.user import EMAIL, MOBILE, User, Value

CH = "ch_imp"
IMP = "imp_1"
T0 = 1_767_225_600_000
UNSUB = {"unsubscribeEmail": "false", "unsubscribeTexting": "false"}


def col(key: str, type_: str | None = None, header: str | None = None) -> Column:
    return Column(header or key, key, type_)


MEMBER_COLUMNS = (
    col("memberId"), col("name"), col(EMAIL), col(MOBILE), col("unsubscribeEmail"), col("unsubscribeTexting"),
    col("tags"), col("profile.age", "number"), col("profile.birthday", "date"), col("profile.seen", "datetime"),
    col("profile.vip", "boolean"), col("profile.likes", "list"), col("profile.scores", "listOfNumber"),
    col("profile.utmSource", "string"), col("hasPushToken"),
)


class Harness:
    """A directory, a book and the channel settings, and a way to apply import facts."""

    def __init__(self, *users: User, mode: str = "member", key: str = "memberId", blank: str = "keep",
                 tag: str | None = None, columns: tuple[Column, ...] = MEMBER_COLUMNS, mu_limit: int | None = None) -> None:
        self.directory = Directory(users)
        self.book = ImportBook()
        self.definition = ImportDef.build(CH, IMP, mode, key, blank, tag, columns)
        self.book.definitions[(CH, IMP)] = self.definition
        budget = None
        if mu_limit is not None:
            visible = [u for u in users if u.type != "anonymous" and u.alive and not u.blocked and not u.masked]
            budget = MuBudget(mu_limit, len(visible))
        self.settings = ImportChannel(CH, mu_limit=mu_limit, mu_budget=budget, book=self.book)
        self.n = 1

    def row(self, at: int = T0, row_error: str | None = None, **cells: str) -> Outcome:
        self.n += 1
        fields: dict[str, Any] = {"rowError": row_error} if row_error else {}
        msg = ImportRow(eventId=f"{IMP}:{self.n}", type="import.row", channelId=CH, occurredAt=at, importId=IMP,
                        rowNumber=self.n, cells={_key(k): v for k, v in cells.items()}, **fields)
        return core.apply(self.directory, Fact(msg, at), self.settings)

    @property
    def tally(self) -> Any:
        return self.book.tally(CH, IMP)

    def member(self, member_id: str) -> User:
        found = self.directory.by_member(CH, member_id)
        assert found is not None
        return found

    def by(self, kind: str, value: str) -> list[User]:
        return self.directory.by_contact(CH, kind, value)


def _key(name: str) -> str:
    """Test shorthand: email=… for profile.email, age=… for profile.age."""
    plain = {"memberId", "name", "tags", "unsubscribeEmail", "unsubscribeTexting", "hasPushToken"}
    return name if name in plain or name.startswith("profile.") else f"profile.{name}"


def member(member_id: str, uid: str | None = None, **fields: Any) -> User:
    user = User(id=uid or f"u_{member_id}", channel_id=CH, type="member", member_id=member_id, created_at=T0 - 10, updated_at=T0 - 10)
    for key, v in fields.items():
        user.fields[_key(key)] = Value(v, True, True, T0 - 10)
    return user


def lead(uid: str, booted: bool = False, qualified: bool = True, seen: int | None = None, **fields: Any) -> User:
    user = User(id=uid, channel_id=CH, type="lead", created_at=T0 - 20, updated_at=T0 - 20, booted=booted, last_seen_at=seen)
    for key, v in fields.items():
        user.fields[_key(key)] = Value(v, qualified, False, T0 - 20)
    if booted:
        user.veils[f"veil-{uid}"] = T0 - 20
    return user


# --------------------------------------------------------------------------- I1 / I2


def test_i1_i2_member_row_creates_a_member_keyed_by_member_id() -> None:
    h = Harness()
    out = h.row(memberId=" m-1 ", name="山田 太郎", email="Taro@Example.JP", **UNSUB)
    assert out.rejection is None and h.tally.created == 1
    m = h.member("m-1")
    assert m.type == "member" and m.value("name") == "山田 太郎" and m.value(EMAIL) == "taro@example.jp"
    assert [p.value["change"] for p in out.publications if p.value] == ["created"]


def test_i2_member_row_updates_the_member_with_that_member_id() -> None:
    h = Harness(member("m-1", email="old@example.jp"))
    h.row(memberId="m-1", email="new@example.jp")
    assert h.tally.updated == 1 and h.tally.created == 0
    assert h.member("m-1").id == "u_m-1" and h.member("m-1").value(EMAIL) == "new@example.jp"


def test_i2_never_booted_lead_with_the_members_contact_is_merged_at_once() -> None:
    h = Harness(lead("u_lead", email="taro@example.jp"))
    out = h.row(memberId="m-1", email="taro@example.jp", **UNSUB)
    m = h.member("m-1")
    assert h.directory.get("u_lead").merged_into == m.id  # type: ignore[union-attr]
    assert m.merged_user_ids == ["u_lead"] and [r.source_id for r in out.merges] == ["u_lead"]


def test_i2_u5_booted_lead_waits_for_the_members_next_login() -> None:
    h = Harness(lead("u_lead", booted=True, email="taro@example.jp"))
    h.row(memberId="m-1", email="taro@example.jp", **UNSUB)
    m = h.member("m-1")
    waiting = h.directory.get("u_lead")
    assert waiting is not None and waiting.merged_into is None
    assert waiting.pending_into == m.id and member_candidates(h.directory, waiting) == [m.id]
    from contracts.inbound import LoginEvent

    login = LoginEvent(eventId="l1", type="login", channelId=CH, occurredAt=T0 + 1000, veilId="veil-x", memberId="m-1")
    core.apply(h.directory, Fact(login, T0 + 1000), ImportChannel(CH))
    assert h.directory.get("u_lead").merged_into == m.id  # type: ignore[union-attr]


def test_i2_u9_unqualified_contact_is_not_unified() -> None:
    h = Harness(lead("u_lead", qualified=False, email="taro@example.jp"))
    h.row(memberId="m-1", email="taro@example.jp", **UNSUB)
    assert h.directory.get("u_lead").merged_into is None  # type: ignore[union-attr]


def test_g2_more_than_50_leads_sharing_the_contact_apply_the_member_merge_none_and_say_why() -> None:
    """G2 in an import (issue 16): the member row is applied, no lead is merged, the
    leads list the member as their candidate for staff, and the failures file says why
    (the row counts as created: it was applied)."""
    leads = [lead(f"u_l{i:02d}", email="shop@example.jp") for i in range(51)]
    h = Harness(*leads)
    out = h.row(memberId="m-1", email="shop@example.jp", name="Shop", **UNSUB)
    assert (h.tally.created, h.tally.updated, h.tally.failed) == (1, 0, 0) and out.merges == ()
    (note,) = h.tally.failures
    assert (note.row_number, note.columns) == (2, (EMAIL,)) and note.reason.startswith("applied, but 51 leads")
    m = h.member("m-1")
    assert m.value("name") == "Shop" and m.merged_user_ids == []
    for u in leads:
        left = h.directory.get(u.id)
        assert left is not None and left.merged_into is None and left.pending_into is None
        assert member_candidates(h.directory, left) == [m.id] and left.offered == [m.id]


def test_g2_50_leads_sharing_the_contact_are_still_unified() -> None:
    leads = [lead(f"u_l{i:02d}", email="shop@example.jp") for i in range(50)]
    h = Harness(*leads)
    out = h.row(memberId="m-1", email="shop@example.jp", **UNSUB)
    assert len(out.merges) == 50 and h.tally.failures == []


# -------------------------------------------------------------------------------- I3


def lead_harness(*users: User, key: str = "email", **kw: Any) -> Harness:
    columns = (col(EMAIL), col(MOBILE), col("name"), col("unsubscribeEmail"), col("unsubscribeTexting"), col("profile.likes", "list"))
    return Harness(*users, mode="lead", key=key, columns=columns, **kw)


def test_i3_lead_row_updates_the_latest_seen_user_with_that_contact() -> None:
    older, newer = lead("u_a", seen=T0 - 500, email="a@example.jp"), lead("u_b", seen=T0 - 100, email="a@example.jp")
    h = lead_harness(older, newer)
    h.row(email="A@example.jp", name="Newest")
    assert h.tally.updated == 1
    assert h.directory.get("u_b").value("name") == "Newest"  # type: ignore[union-attr]
    assert h.directory.get("u_a").value("name") is None  # type: ignore[union-attr]


def test_i3_only_an_unqualified_match_means_a_new_qualified_lead() -> None:
    h = lead_harness(lead("u_typed", qualified=False, email="a@example.jp"))
    h.row(email="a@example.jp", **UNSUB)
    assert h.tally.created == 1
    created = [u for u in h.by("email", "a@example.jp") if u.id != "u_typed"]
    assert len(created) == 1 and created[0].type == "lead" and created[0].fields[EMAIL].q


def test_i3_lead_row_creates_a_lead_with_a_deterministic_id() -> None:
    h1, h2 = lead_harness(), lead_harness()
    h1.row(email="a@example.jp", **UNSUB)
    h2.row(email="a@example.jp", **UNSUB)
    assert [u.id for u in h1.by("email", "a@example.jp")] == [u.id for u in h2.by("email", "a@example.jp")]


def test_i3_lead_whose_other_contact_matches_a_member_is_unified_into_it() -> None:
    m = member("m-1", mobileNumber="+819012345678")
    h = lead_harness(m)
    h.row(email="a@example.jp", mobileNumber="+81 090-1234-5678", **UNSUB)
    (created,) = [u for u in h.directory.users() if u.type == "lead"]
    assert created.merged_into == "u_m-1"
    assert h.directory.get("u_m-1").value(EMAIL) == "a@example.jp"  # type: ignore[union-attr]


def test_i3_a_member_holding_the_contact_is_the_user_updated() -> None:
    h = lead_harness(member("m-1", email="a@example.jp"))
    h.row(email="a@example.jp", name="Via lead import")
    assert h.tally.updated == 1 and h.member("m-1").value("name") == "Via lead import"


def test_i3_the_key_column_blank_fails_the_row() -> None:
    h = lead_harness()
    h.row(email=" ", **UNSUB)
    assert h.tally.failed == 1 and h.tally.failures[0].columns == (EMAIL,)


# ---------------------------------------------------------------------------- I4 / I6


def test_i4_imported_values_are_qualified_and_beat_a_visitors_later_typing() -> None:
    h = lead_harness(key="mobileNumber")
    h.row(mobileNumber="+819012345678", email="a@example.jp", **UNSUB)
    (user,) = h.by("mobile", "+819012345678")
    assert user.fields[EMAIL].q and user.fields[MOBILE].q


def test_i6_blank_keep_leaves_existing_values() -> None:
    h = Harness(member("m-1", name="Taro", age=30))
    h.row(memberId="m-1", name="", age="  ")
    assert h.member("m-1").value("name") == "Taro" and h.member("m-1").value("profile.age") == 30


def test_i6_blank_clear_clears_values_but_never_the_unsubscribe_flags() -> None:
    existing = member("m-1", name="Taro", age=30)
    existing.unsubscribe_email = True
    h = Harness(existing, blank="clear")
    h.row(memberId="m-1", name="", age="", unsubscribeEmail="")
    m = h.member("m-1")
    assert m.value("name") is None and m.value("profile.age") is None
    assert m.unsubscribe_email is True


# -------------------------------------------------------------------------------- I7


def test_i7_new_user_without_unsubscribe_column_fails_the_row() -> None:
    h = Harness(columns=(col("memberId"), col("name")))
    h.row(memberId="m-1", name="Taro")
    assert h.tally.failed == 1 and h.tally.created == 0
    failure = h.tally.failures[0]
    assert failure.columns == ("unsubscribeEmail", "unsubscribeTexting")
    assert "must be given" in failure.reason
    assert h.directory.by_member(CH, "m-1") is None


def test_i7_new_user_with_a_blank_unsubscribe_cell_fails_the_row() -> None:
    h = Harness()
    h.row(memberId="m-1", unsubscribeEmail="true", unsubscribeTexting="")
    assert h.tally.failures[0].columns == ("unsubscribeTexting",)


def test_i7_update_without_the_column_keeps_and_with_a_value_overwrites() -> None:
    existing = member("m-1")
    existing.unsubscribe_email = existing.unsubscribe_texting = True
    h = Harness(existing, columns=(col("memberId"), col("name"), col("unsubscribeTexting")))
    h.row(memberId="m-1", name="X", unsubscribeTexting="no")
    m = h.member("m-1")
    assert m.unsubscribe_email is True and m.unsubscribe_texting is False


@pytest.mark.parametrize("flag", ["unsubscribeEmail", "unsubscribeTexting", "hasPushToken"])
def test_i7_each_flag_cell_sets_its_own_attribute_on_a_new_and_an_updated_user(flag: str) -> None:
    """I7/P1: `_set` writes each flag by attribute name (issue 14, session 18, not a
    setattr through FLAG_ATTRS): each cell moves its own attribute, the others keep."""
    from services.domain.profile import FLAG_ATTRS

    columns = (col("memberId"), col("unsubscribeEmail"), col("unsubscribeTexting"), col("hasPushToken"))
    h = Harness(member("m-1"), columns=columns)
    others = {k: "false" for k in FLAG_ATTRS if k != flag}
    h.row(memberId="m-new", **{flag: "true"}, **others)  # plain path: a new member
    h.row(memberId="m-1", **{flag: "true"})  # the handler: an update
    for member_id in ("m-new", "m-1"):
        user = h.member(member_id)
        assert {k: getattr(user, attr) for k, attr in FLAG_ATTRS.items()} == {k: k == flag for k in FLAG_ATTRS}


# -------------------------------------------------------------------------------- I8


def test_i8_list_keys_append_and_other_keys_replace() -> None:
    h = Harness(member("m-1", likes=["tea"], scores=[1], age=30))
    h.row(memberId="m-1", likes='["coffee","tea"]', scores="[2.5]", age="31")
    m = h.member("m-1")
    assert m.value("profile.likes") == ["tea", "coffee", "tea"]
    assert m.value("profile.scores") == [1, 2.5]
    assert m.value("profile.age") == 31


def test_i8_tags_are_added_to_the_users_tags() -> None:
    existing = member("m-1")
    existing.tags = ["vip"]
    h = Harness(existing)
    h.row(memberId="m-1", tags='["basic/step1","vip"]')
    assert h.member("m-1").tags == ["basic/step1", "vip"]


# -------------------------------------------------------------------------------- I9


def test_i9_values_are_stored_in_their_types() -> None:
    h = Harness()
    h.row(memberId="m-1", mobileNumber="+81 090-1234-5678", age="1.01", birthday="2025-05-04",
          seen="2025-05-04T09:00:00+09:00", vip="Yes", likes='["a","b"]', scores="[1,2]", **UNSUB)
    m = h.member("m-1")
    assert m.value(MOBILE) == "+819012345678"
    assert m.value("profile.age") == 1.01
    assert m.value("profile.birthday") == 1746316800000
    assert m.value("profile.seen") == 1746316800000
    assert m.value("profile.vip") is True
    assert m.value("profile.likes") == ["a", "b"] and m.value("profile.scores") == [1, 2]


@pytest.mark.parametrize(
    ("cell", "value", "words"),
    [
        ("mobileNumber", "09012345678", "country code"),
        ("email", "taro.example.jp", "@"),
        ("age", "1,200", "thousands separators"),
        ("birthday", "2025/05/04", "YYYY-MM-DD"),
        ("birthday", "2025.05.04", "YYYY-MM-DD"),
        ("seen", "yesterday", "ISO 8601"),
        ("vip", "maybe", "true, yes"),
        ("likes", "a,b", "JSON array"),
        ("scores", '["1"]', "numbers"),
        ("tags", '["a b"]', "spaces"),
        ("tags", '["a/b/c"]', "two levels"),
        ("unsubscribeEmail", "sometimes", "true, yes"),
    ],
)
def test_i9_a_bad_value_fails_the_row_naming_the_column(cell: str, value: str, words: str) -> None:
    h = Harness()
    h.row(memberId="m-1", **{**UNSUB, cell: value})
    assert h.tally.failed == 1
    failure = h.tally.failures[0]
    assert failure.columns == (_key(cell),)
    assert failure.reason.startswith(_key(cell)) and words in failure.reason
    assert failure.cells[_key(cell)] == value  # the original text, to fix and re-import
    assert h.directory.by_member(CH, "m-1") is None


def test_i9_every_bad_cell_of_a_row_is_reported_at_once_with_its_header() -> None:
    h = Harness(columns=(col("memberId"), col("profile.age", "number", header="年齢"), col("profile.vip", "boolean")))
    h.row(memberId="m-1", age="x", vip="?")
    failure = h.tally.failures[0]
    assert failure.columns == ("profile.age", "profile.vip")
    assert 'profile.age (column "年齢"): number' in failure.reason and "profile.vip: boolean" in failure.reason


def test_g1_placeholder_member_id_fails_the_row() -> None:
    h = Harness()
    h.row(memberId="undefined", **UNSUB)
    assert h.tally.failures[0].columns == ("memberId",) and "placeholder" in h.tally.failures[0].reason


def test_i15_a_row_the_importer_could_not_read_fails_with_its_reason() -> None:
    h = Harness()
    h.row(row_error="the row has 20 cells but the header names 15 columns", memberId="m-1", **UNSUB)
    assert h.tally.failed == 1 and "20 cells" in h.tally.failures[0].reason


# ------------------------------------------------------------------------ I10 / I11


def test_i10_the_same_user_on_two_rows_takes_the_row_applied_last() -> None:
    h = Harness()
    h.row(memberId="m-1", name="First", **UNSUB)
    h.row(memberId="m-1", name="Second")
    assert h.tally.created == 1 and h.tally.updated == 1
    assert h.member("m-1").value("name") == "Second"


def test_i11_new_users_get_created_and_last_seen_at_import_time() -> None:
    h = Harness()
    h.row(at=T0 + 5, memberId="m-1", **UNSUB)
    m = h.member("m-1")
    assert m.created_at == T0 + 5 and m.last_seen_at == T0 + 5 and not m.booted


def test_i11_updated_users_only_get_updated_at() -> None:
    existing = member("m-1", age=1)
    existing.last_seen_at = T0 - 999
    h = Harness(existing)
    h.row(at=T0 + 5, memberId="m-1", age="1")  # nothing changes, still an update
    m = h.member("m-1")
    assert h.tally.updated == 1
    assert m.updated_at == T0 + 5 and m.last_seen_at == T0 - 999 and m.created_at == T0 - 10


# ------------------------------------------------------------------------ I14 / P5


def test_i14_the_import_tag_is_added_to_every_user_touched() -> None:
    h = Harness(member("m-1"), tag="spring-2026")
    h.row(memberId="m-1")
    h.row(memberId="m-2", **UNSUB)
    assert h.member("m-1").import_tags == ["spring-2026"] == h.member("m-2").import_tags


def test_p5_a_31st_import_tag_drops_the_oldest() -> None:
    existing = member("m-1")
    existing.import_tags = [f"t{i:02d}" for i in range(30)]
    h = Harness(existing, tag="new")
    h.row(memberId="m-1")
    tags = h.member("m-1").import_tags
    assert len(tags) == 30 and tags[0] == "t01" and tags[-1] == "new"


# -------------------------------------------------------------------------------- I17


def test_i17_new_users_beyond_the_mu_limit_are_created_masked() -> None:
    h = Harness(member("m-0"), mu_limit=3)
    outs = [h.row(memberId=f"m-{i}", name=f"N{i}", email=f"n{i}@example.jp", **UNSUB) for i in range(1, 5)]
    assert [h.member(f"m-{i}").masked for i in range(1, 5)] == [False, False, True, True]
    assert h.tally.created == 4
    hidden = outs[-1].publications[0].value
    assert hidden is not None and hidden["user"]["masked"] is True
    assert hidden["user"]["profile"] is None and hidden["user"]["name"] is None and hidden["user"]["memberId"] is None


def test_i17_an_update_never_unmasks_and_still_applies() -> None:
    hidden = member("m-1", name="Old")
    hidden.masked = True
    h = Harness(hidden, mu_limit=100)
    out = h.row(memberId="m-1", name="New")
    m = h.member("m-1")
    assert m.masked and m.value("name") == "New" and h.tally.updated == 1
    for pub in out.publications:
        assert pub.value is None or (pub.value["user"]["profile"] is None and pub.value["user"]["name"] is None)


def test_i17_blocked_users_do_not_count_against_the_limit() -> None:
    blocked = member("m-0")
    blocked.blocked = True
    h = Harness(blocked, mu_limit=1)
    h.row(memberId="m-1", **UNSUB)
    assert not h.member("m-1").masked


# ------------------------------------------------------------------ started / finished


def started(columns: list[dict[str, Any]], **kw: Any) -> ImportStarted:
    body = {"eventId": "s1", "type": "import.started", "channelId": CH, "occurredAt": T0, "importId": "imp_2",
            "mode": "member", "key": "memberId", "blank": "keep", "tag": None, "actor": "staff-1",
            "fileName": "members.csv", "columns": columns, **kw}
    return ImportStarted.model_validate(body)


def test_i5_started_registers_the_import_and_declares_new_profile_types() -> None:
    book = ImportBook()
    settings = ImportChannel(CH, field_types={"profile.plan": "string"}, book=book)
    msg = started([
        {"column": "id", "key": "memberId"}, {"column": "age", "key": "profile.age", "type": "number"},
        {"column": "plan", "key": "profile.plan"}, {"column": "name", "key": "profile.name"},
    ])
    out = core.apply(Directory(), Fact(msg, T0), settings)
    assert out.rejection is None
    (s,) = book.started
    assert s.new_types == {"profile.age": "number"} and s.actor == "staff-1"
    assert book.definition(CH, "imp_2").parsers["profile.plan"][0].type == "string"
    assert settings.field_types["profile.age"] == "number"  # later facts of the batch see it


def test_i5_a_started_import_that_maps_a_system_key_is_rejected() -> None:
    msg = started([{"column": "id", "key": "memberId"}, {"column": "seen", "key": "lastSeenAt"}])
    out = core.apply(Directory(), Fact(msg, T0), ImportChannel(CH, book=ImportBook()))
    assert out.rejection is not None and out.rejection.code == "invalid_import"


def test_a_row_of_an_unknown_import_is_rejected() -> None:
    msg = ImportRow(eventId="x:2", type="import.row", channelId=CH, occurredAt=T0, importId="nope", rowNumber=2, cells={})
    out = core.apply(Directory(), Fact(msg, T0), ImportChannel(CH, book=ImportBook()))
    assert out.rejection is not None and out.rejection.code == "unknown_import"


def test_i15_finished_is_recorded_with_rows_and_abandonment() -> None:
    h = Harness()
    msg = ImportFinished(eventId="f", type="import.finished", channelId=CH, occurredAt=T0, importId=IMP, rows=7, abandoned=True)
    out = core.apply(h.directory, Fact(msg, T0), h.settings)
    assert out.rejection is None
    (f,) = h.book.finished
    assert (f.rows, f.abandoned, f.event_id) == (7, True, "f")


def test_i15_a_failed_row_changes_nothing_and_publishes_nothing() -> None:
    h = Harness(member("m-1", name="Taro"))
    out = h.row(memberId="m-1", name="Jiro", age="not a number")
    assert out.publications == [] and h.member("m-1").value("name") == "Taro"
    assert h.directory.changed == {}


def _run_rows(h: Harness, numbers: list[int], seen: Any = None) -> tuple[Any, Any]:
    """Import rows through the projection's loop (run_facts), in the given order."""
    from contracts.topics import Topics
    from services.projection.batch import BatchResult, Parsed, run_facts
    from services.projection.records import Record
    from services.projection.window import AppliedWindow

    topics = Topics("t.")
    parsed = []
    for n in numbers:
        msg = ImportRow(eventId=f"{IMP}:{n}", type="import.row", channelId=CH, occurredAt=T0, importId=IMP,
                        rowNumber=n, cells={"memberId": f"m{n}", **UNSUB})
        parsed.append(Parsed(Record(topics.import_rows, 0, n, T0, CH.encode(), b"{}"), fact=Fact(msg, T0)))
    result = BatchResult()
    fx = run_facts(h.directory, parsed, {CH: h.settings}, seen or AppliedWindow(), topics, result, outbox=False, failed_at=0)
    return fx, result


def test_i16_each_row_applied_once_by_its_imports_row_mark_not_an_eventid_per_row() -> None:
    """I16 (resume: no row twice), issue 14 item 5: an import remembers the highest row
    applied; a row at or below it is skipped (a resumed attempt publishes the file from
    its start), and applied rows leave no eventId to store (applied_events)."""
    h = Harness()
    fx, result = _run_rows(h, [2, 3, 4])
    assert (result.applied, result.skipped, fx.applied) == (3, 0, [])
    assert h.book.through[(CH, IMP)] == 4 and h.tally.created == 3
    # The next attempt: the file again from its first row; only row 5 is new.
    fx, result = _run_rows(h, [2, 3, 4, 5])
    assert (result.applied, result.skipped, fx.applied) == (1, 3, [])
    assert h.book.through[(CH, IMP)] == 5 and h.tally.created == 4
    assert h.member("m5") is not None


def test_i16_a_row_an_earlier_version_remembered_by_its_eventid_is_still_skipped() -> None:
    """I16 across an upgrade: rows applied before the row mark existed are in the
    eventId window (applied_events), with no mark; they are skipped, later rows applied."""
    from services.projection.window import AppliedWindow

    h = Harness()
    seen = AppliedWindow([(CH, f"{IMP}:2", T0), (CH, f"{IMP}:3", T0)])
    fx, result = _run_rows(h, [2, 3, 4], seen)
    assert (result.applied, result.skipped) == (1, 2) and h.tally.created == 1
    assert h.book.through[(CH, IMP)] == 4


def test_i16_a_channel_without_an_import_book_has_no_row_mark() -> None:
    """I16: the row mark lives in the import book the projection attaches to the
    channel's settings (`ImportChannel`); settings without one (read by type since issue
    14, session 18) mark no row applied, and an ImportChannel without a book neither."""
    from services.domain.channel import ChannelSettings
    from services.domain.imports import row_applied_before

    h = Harness()
    h.book.through[(CH, IMP)] = 9
    msg = ImportRow(eventId=f"{IMP}:2", type="import.row", channelId=CH, occurredAt=T0, importId=IMP,
                    rowNumber=2, cells={"memberId": "m2", **UNSUB})
    fact = Fact(msg, T0)
    assert row_applied_before(h.settings, fact)
    assert not row_applied_before(ChannelSettings(CH), fact)
    assert not row_applied_before(ImportChannel(CH), fact)


@settings(max_examples=200, deadline=None)
@given(
    file_rows=st.integers(min_value=1, max_value=12),
    attempts=st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=4),
    seed=st.randoms(use_true_random=False),
)
def test_i16_any_interleaving_of_attempts_applies_every_row_at_most_once_and_the_last_in_full(
    file_rows: int, attempts: list[int], seed: Any,
) -> None:
    """I16 by the row mark, whatever the attempts do: each publishes the file from its
    first row in order, stopping anywhere (killed), and a stalled one may go on
    publishing after the next took over (its lease ran out), interleaved with it in the
    log. Every row is applied at most once, and once an attempt publishes the whole file
    every row has been applied — the prefix argument of `row_applied_before`."""
    rows = list(range(2, file_rows + 2))
    streams = [rows[: min(n, file_rows)] for n in attempts[:-1]] + [rows]  # the last one completes
    log: list[int] = []
    cursors = [0] * len(streams)
    live = [i for i, s in enumerate(streams) if s]
    while live:  # interleave the attempts' rows, each attempt in its own order
        i = seed.choice(live)
        log.append(streams[i][cursors[i]])
        cursors[i] += 1
        live = [j for j in live if cursors[j] < len(streams[j])]
    h = Harness()
    cut = seed.randrange(len(log) + 1)  # in two batches, as a consumer may read them
    _run_rows(h, log[:cut])
    _run_rows(h, log[cut:])
    assert h.tally.created == file_rows  # each row once: created once, never updated
    assert h.tally.updated == 0 and h.book.through[(CH, IMP)] == file_rows + 1
