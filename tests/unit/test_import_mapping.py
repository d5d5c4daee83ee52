"""Column mapping (I1, I5) and the import's file checks and row numbers (I13, I15)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.domain.imports import MappingError
from services.importer import csvfile
from services.importer.mapping import parse_map, plan
from services.importer.run import import_base_id

MEMBER_HEADER = ["memberId", "name", "email", "unsubscribeEmail", "unsubscribeTexting"]


def keys(headers: list[str], *maps: str, mode: str = "member", key: str | None = None,
         declared: dict[str, str] | None = None) -> list[tuple[str, str | None]]:
    p = plan(headers, maps, mode, key, declared or {})
    return [(c.key, c.type) for c in p.columns]


def refused(headers: list[str], *maps: str, mode: str = "member", key: str | None = None,
            declared: dict[str, str] | None = None) -> str:
    with pytest.raises(MappingError) as err:
        plan(headers, maps, mode, key, declared or {})
    return err.value.reason


def test_i5_a_header_equal_to_a_key_maps_to_it() -> None:
    assert keys(MEMBER_HEADER + ["profile.mobileNumber", "tags"]) == [
        ("memberId", None), ("name", None), ("profile.email", None), ("unsubscribeEmail", None),
        ("unsubscribeTexting", None), ("profile.mobileNumber", None), ("tags", None),
    ]


def test_i5_map_renames_and_creates_a_profile_key_with_its_type() -> None:
    got = keys(["会員ID", "誕生日", "メール"], "会員ID=memberId", "誕生日=profile.birthday:date", "メール=email")
    assert got == [("memberId", None), ("profile.birthday", "date"), ("profile.email", None)]


def test_i5_a_declared_or_builtin_key_keeps_its_type() -> None:
    got = keys(["memberId", "plan", "profile.lastCheckoutCompletedAt"], declared={"profile.plan": "string"})
    assert got == [("memberId", None), ("profile.plan", "string"), ("profile.lastCheckoutCompletedAt", "date")]
    assert "is a string key" in refused(["memberId", "plan"], "plan=profile.plan:number", declared={"profile.plan": "string"})


def test_i5_a_new_profile_key_without_a_type_is_refused_with_what_to_do() -> None:
    reason = refused(["memberId", "age"])
    assert "new profile key" in reason and "--map 'age=" in reason


def test_i5_a_key_is_used_by_one_column_only() -> None:
    assert "two columns" in refused(["memberId", "mail", "email"], "mail=email")


def test_i5_a_column_can_be_skipped() -> None:
    assert keys(["memberId", "memo", "lastSeenAt"], "memo=", "lastSeenAt=") == [("memberId", None)]


@pytest.mark.parametrize("system", ["lastSeenAt", "id", "createdAt", "sessionsCount", "web.browser", "mobile.appVersion", "userImportTags"])
def test_i5_p1_system_keys_cannot_be_mapped(system: str) -> None:
    assert "system key" in refused(["memberId", "x"], f"x={system}")
    assert "system key" in refused(["memberId", system])


def test_i5_an_unknown_type_or_a_type_on_a_fixed_key_is_refused() -> None:
    assert "not one of" in refused(["memberId", "x"], "x=profile.x:money")
    assert "fixed format" in refused(["memberId", "x"], "x=email:string")


def test_map_must_name_a_column_of_the_file_and_headers_must_differ() -> None:
    assert "names no column" in refused(MEMBER_HEADER, "Mail=email")
    assert "two columns are named" in refused(["memberId", "name", "name"])
    with pytest.raises(MappingError):
        parse_map("no equals sign")


def test_the_failures_files_own_columns_and_empty_headers_are_skipped() -> None:
    headers = ["rowNumber", "errorColumns", "errorReason", "memberId", "", "name"]
    assert keys(headers) == [("memberId", None), ("name", None)]


def test_i1_a_member_import_needs_a_member_id_column() -> None:
    assert "no column maps to memberId" in refused(["name", "email"])


def test_i1_a_lead_import_is_keyed_by_email_or_mobile_and_cannot_set_member_ids() -> None:
    assert plan(["email", "name"], (), "lead", None, {}).key == "email"  # the only contact: the key
    assert "needs --key" in refused(["email", "mobileNumber"], mode="lead")
    assert "no column maps to profile.mobileNumber" in refused(["email"], mode="lead", key="mobileNumber")
    assert "cannot set memberId" in refused(["email", "memberId"], mode="lead", key="email")
    assert "--key is for lead imports" in refused(MEMBER_HEADER, key="email")


def test_the_import_id_names_content_and_settings() -> None:
    p = plan(MEMBER_HEADER, (), "member", None, {})
    a = import_base_id("ch", "d1", p, "keep", None)
    assert a == import_base_id("ch", "d1", p, "keep", None)
    assert len({a, import_base_id("ch2", "d1", p, "keep", None), import_base_id("ch", "d2", p, "keep", None),
                import_base_id("ch", "d1", p, "clear", None), import_base_id("ch", "d1", p, "keep", "t")}) == 5


# ------------------------------------------------------------------------------ files


def test_i13_a_file_over_100_mb_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.csv"
    with big.open("wb") as f:
        f.truncate(csvfile.MAX_BYTES + 1)
    with pytest.raises(csvfile.FileRefused, match="up to 100 MB"):
        csvfile.inspect(big)


def test_i13_a_file_that_is_not_utf8_is_refused_naming_the_line(tmp_path: Path) -> None:
    sjis = tmp_path / "sjis.csv"
    sjis.write_bytes(b"memberId,name\nm1,ok\nm2," + "山田".encode("shift_jis") + b"\n")
    with pytest.raises(csvfile.FileRefused, match="not UTF-8 .*line 3"):
        csvfile.inspect(sjis)


def test_i13_a_utf8_bom_is_allowed_and_dropped(tmp_path: Path) -> None:
    f = tmp_path / "bom.csv"
    f.write_bytes("\ufeffmemberId,name\nm1,太郎\n".encode())
    assert csvfile.inspect(f).size > 0
    assert csvfile.header(f) == ["memberId", "name"]
    assert list(csvfile.records(f)) == [(2, ["m1", "太郎"])]


def test_i13_empty_and_nul_files_are_refused(tmp_path: Path) -> None:
    empty, nul = tmp_path / "empty.csv", tmp_path / "nul.csv"
    empty.write_bytes(b"")
    nul.write_bytes(b"memberId\nm\x001\n")
    for path, words in ((empty, "empty"), (nul, "NUL")):
        with pytest.raises(csvfile.FileRefused, match=words):
            csvfile.inspect(path)


def test_i15_row_numbers_count_records_as_a_spreadsheet_shows_rows(tmp_path: Path) -> None:
    f = tmp_path / "rows.csv"
    f.write_text('memberId,note\nm1,"two\nlines"\n\nm2,x\n,\nm3,"a ""quote"", and, commas"\n', encoding="utf-8")
    assert list(csvfile.records(f)) == [
        (2, ["m1", "two\nlines"]),  # a quoted line break stays in its row
        (4, ["m2", "x"]),  # row 3 is empty: skipped, still counted
        (6, ["m3", 'a "quote", and, commas']),  # row 5 has only empty cells
    ]
