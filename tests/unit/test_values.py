"""Value formats (I9) and profile types (P2), as the SDK and the CSV importer see them."""

from datetime import UTC, date, datetime, timedelta, timezone

import phonenumbers
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from services.domain.values import (
    PARSERS,
    Rejected,
    ValueRejected,
    coerce_sdk_value,
    normalize_email,
    normalize_mobile,
    parse_boolean,
    parse_date,
    parse_datetime,
    parse_list,
    parse_list_of_number,
    parse_number,
    parse_string,
    parse_tags,
    parse_typed,
)
from services.domain.values_time import MAX_EPOCH_MS, MIN_EPOCH_MS

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAY_4_2025_UTC = 1_746_316_800_000  # the guide's epoch-ms example


def rejected(parse, raw) -> ValueRejected:
    with pytest.raises(ValueRejected) as caught:
        parse(raw)
    return caught.value


# --- rejection shape ----------------------------------------------------------------


def test_i9_rejection_is_invalid_value_with_a_staff_readable_reason():
    err = rejected(parse_date, "2025/04/01")
    assert isinstance(err, Rejected)
    assert err.code == "invalid_value"
    assert err.reason == str(err) == "date must be YYYY-MM-DD, e.g. 2025-04-01"


@pytest.mark.parametrize(
    ("parse", "raw", "fragment"),
    [
        (normalize_email, "yamada.taro@example", "yamada"),
        (normalize_mobile, "+81 80 9876 543", "9876"),
        (normalize_mobile, "080-9876-5432", "9876"),
    ],
)
def test_g1_rejection_reason_does_not_echo_personal_data(parse, raw, fragment):
    assert fragment not in rejected(parse, raw).reason


# --- number ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", 1), ("1.01", 1.01), ("-5", -5), ("-0.5", -0.5), (" 42 ", 42), ("007", 7), ("0", 0)],
)
def test_i9_number_accepts_integers_and_decimals(raw, expected):
    value = parse_number(raw)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    "raw",
    ["1,000", "1e3", "1E3", "+1", "1 000", "", "  ", "1.", ".5", "0x10", "NaN", "inf", "１", "--1"],
)
def test_i9_number_rejects_separators_exponents_and_other_shapes(raw):
    rejected(parse_number, raw)


def test_i9_number_names_thousands_separators_in_the_reason():
    assert "thousands" in rejected(parse_number, "1,200").reason


@pytest.mark.parametrize("raw", ["9" * 20, "-9223372036854775809", "9" * 400 + ".5", "9" * 5000])
def test_i9_number_rejects_what_cannot_be_stored(raw):
    assert rejected(parse_number, raw).reason == "number is too large"


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_i9_number_integers_round_trip(n):
    assert parse_number(str(n)) == n
    assert type(parse_number(str(n))) is int


@given(st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: "e" not in str(f)))
@example(1.01)
@example(-0.0)
def test_i9_number_finite_decimals_round_trip(f):
    assert parse_number(str(f)) == f


@given(st.decimals(allow_nan=False, allow_infinity=False, places=4))
def test_i9_number_decimal_notation_parses_like_float(d):
    text = format(d, "f")
    assert parse_number(text) == (float(text) if "." in text else int(text))


# --- boolean --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        *[(w, True) for w in ["true", "yes", "y", "1", "TRUE", "Yes", " y ", "True"]],
        *[(w, False) for w in ["false", "no", "n", "0", "FALSE", "No", " N ", "\tfalse"]],
    ],
)
def test_i9_boolean_words_any_case(raw, expected):
    assert parse_boolean(raw) is expected


@pytest.mark.parametrize("raw", ["", "t", "f", "on", "off", "2", "truee", "y e s", "はい"])
def test_i9_boolean_rejects_other_words(raw):
    rejected(parse_boolean, raw)


# --- date -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2025-05-04", MAY_4_2025_UTC),
        ("1970-01-01", 0),
        ("1969-12-31", -86_400_000),
        (" 2025-05-04 ", MAY_4_2025_UTC),
        ("2024-02-29", 1_709_164_800_000),
    ],
)
def test_i9_date_is_utc_midnight(raw, expected):
    assert parse_date(raw) == expected


@pytest.mark.parametrize("raw", ["2025/05/04", "2025/5/4"])
def test_i9_date_rejects_slashes(raw):
    rejected(parse_date, raw)


@pytest.mark.parametrize("raw", ["2025.05.04", "2025.5.4"])
def test_i9_date_rejects_dots(raw):
    rejected(parse_date, raw)


@pytest.mark.parametrize(
    "raw", ["2025-02-30", "2025-02-29", "2025-13-01", "2025-00-10", "2025-04-31", "0000-01-01"]
)
def test_i9_date_rejects_invalid_calendar_dates(raw):
    assert "calendar" in rejected(parse_date, raw).reason


@pytest.mark.parametrize(
    "raw", ["2025-4-1", "20250504", "25-05-04", "2025-05-04T00:00:00Z", "1746316800000", ""]
)
def test_i9_date_accepts_only_yyyy_mm_dd(raw):
    rejected(parse_date, raw)


@given(st.dates())
def test_i9_date_round_trips_iso_dates(d):
    assert parse_date(d.isoformat()) == (d - date(1970, 1, 1)).days * 86_400_000


# --- datetime -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "2025-05-04T09:00:00+09:00",  # the guide's JST example
        "2025-05-04T00:00:00+00:00",
        "2025-05-04T00:00:00Z",
        "2025-05-04T00:00:00",  # no offset: UTC
        "1746316800000",  # epoch milliseconds
        "2025-05-04",  # date only: UTC midnight, as in the guide's table
        "2025-05-04T09:00+09:00",
        "2025-05-04 09:00:00+0900",
        "2025-05-03T19:00:00-05",
        "2025-05-04t00:00:00z",
        " 2025-05-04T00:00:00.000Z ",
    ],
)
def test_i9_datetime_accepts_iso_8601_and_epoch_ms(raw):
    assert parse_datetime(raw) == MAY_4_2025_UTC


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2025-05-04T00:00:00.123Z", MAY_4_2025_UTC + 123),
        ("2025-05-04T00:00:00.1239Z", MAY_4_2025_UTC + 123),  # floored to the millisecond
        ("2025-05-04T00:00:00,5Z", MAY_4_2025_UTC + 500),
        ("-1", -1),
        ("0", 0),
    ],
)
def test_i9_datetime_keeps_milliseconds(raw, expected):
    assert parse_datetime(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "2025/05/04 09:00:00",
        "2025.05.04T09:00:00Z",
        "2025-05-04T24:00:00Z",
        "2025-05-04T09:60:00Z",
        "2025-05-04T09:00:00+24:00",
        "2025-02-30T00:00:00Z",
        "2025-05-04T09",
        "2025-05-04T09:00:00 +09:00",
        "2025-W18-7",
        "1.7463168e12",
        "1746316800000.0",
        "99999999999999999",
        "yesterday",
        "",
    ],
)
def test_i9_datetime_rejects_other_shapes(raw):
    rejected(parse_datetime, raw)


def _minute_offsets():
    return st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
        lambda m: timezone(timedelta(minutes=m))
    )


@given(st.datetimes(timezones=_minute_offsets()), st.sampled_from(["T", " "]))
def test_i9_datetime_aware_isoformat_parses_to_the_same_instant(dt, sep):
    assert parse_datetime(dt.isoformat(sep=sep)) == (dt - EPOCH) // timedelta(milliseconds=1)


@given(st.datetimes())
def test_i9_datetime_without_offset_is_utc(dt):
    expected = (dt.replace(tzinfo=UTC) - EPOCH) // timedelta(milliseconds=1)
    assert parse_datetime(dt.isoformat()) == expected


@given(st.integers(min_value=MIN_EPOCH_MS, max_value=MAX_EPOCH_MS))
def test_i9_datetime_epoch_ms_round_trips(ms):
    assert parse_datetime(str(ms)) == ms


# --- list, list of numbers, tags --------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('["a","b"]', ["a", "b"]),
        ('["string1","string2"]', ["string1", "string2"]),
        ('[ "a" , "a" ]', ["a", "a"]),  # I8 appends: order and repeats are the file's
        ("[]", []),
        ('["東京", ""]', ["東京", ""]),
    ],
)
def test_i9_list_is_a_json_array_of_strings(raw, expected):
    assert parse_list(raw) == expected


@pytest.mark.parametrize(
    "raw", ["a,b", '["a",1]', '{"a":1}', "['a']", '"a"', '["a"', '["\\u0000"]', "", "null"]
)
def test_i9_list_rejects_anything_else(raw):
    rejected(parse_list, raw)


@pytest.mark.parametrize(
    ("raw", "expected"), [("[1,2]", [1, 2]), ("[1.5, -2]", [1.5, -2]), ("[]", [])]
)
def test_i9_list_of_number_is_a_json_array_of_numbers(raw, expected):
    assert parse_list_of_number(raw) == expected


@pytest.mark.parametrize("raw", ["[true]", '["1"]', "[1,]", "1,2", "[null]", "[[1]]", "[NaN]"])
def test_i9_list_of_number_rejects_booleans_and_text(raw):
    rejected(parse_list_of_number, raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('["基本/段階1", "フィルター/段階2"]', ["基本/段階1", "フィルター/段階2"]),  # the guide's
        ('["vip"]', ["vip"]),
        ('["a/b", "a/b", "c"]', ["a/b", "c"]),
        ("[]", []),
    ],
)
def test_i9_tags_allow_two_levels(raw, expected):
    assert parse_tags(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        '["a/b/c"]',
        '["a//b"]',
        '["/a"]',
        '["a/"]',
        '["/"]',
        '["a.b"]',
        '["a$b"]',
        '["a\\\\b"]',
        '["a b"]',
        '["a\u3000b"]',
        '["a\\tb"]',
        '[""]',
        '"vip"',
        "vip",
        "[1]",
    ],
)
def test_i9_tags_reject_deep_levels_edge_slashes_and_forbidden_characters(raw):
    rejected(parse_tags, raw)


# --- string -----------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["", " padded ", "東京都", "a,b", "null"])
def test_p2_string_is_kept_as_typed(raw):
    assert parse_string(raw) == raw


@pytest.mark.parametrize("raw", ["a\x00b", "\ud800"])
def test_p2_string_rejects_what_storage_cannot_hold(raw):
    rejected(parse_string, raw)


# --- e-mail -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (" Taro@Example.COM ", "taro@example.com"),
        ("a.b+tag@sub.example.co.jp", "a.b+tag@sub.example.co.jp"),
        ("taro@xn--eckwd4c7c.xn--zckzah", "taro@xn--eckwd4c7c.xn--zckzah"),
    ],
)
def test_u9_email_is_trimmed_and_lower_cased(raw, expected):
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "taro",
        "taro@",
        "@example.com",
        "taro@example",
        "taro @example.com",
        "taro@exa mple.com",
        "a@b@example.com",
        "a@b.c",
        "a@.com",
        "a@b..com",
        "Taro <taro@example.com>",
        "a@b.com,c@d.com",
        "a@b.com;c@d.com",
        "",
    ],
)
def test_u9_email_rejects_what_is_not_an_address(raw):
    rejected(normalize_email, raw)


def test_u9_email_matches_case_insensitively_after_trim():
    assert normalize_email("  Taro.Yamada@Example.JP\t") == normalize_email(
        "taro.yamada@example.jp"
    )


_email_text = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._+-", min_size=1, max_size=20)
_emails = st.builds(
    lambda local, host, tld: f"{local}@{host}.{tld}",
    _email_text,
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=2, max_size=6),
)


def _recase(draw, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if flip else c for c, flip in zip(text, flips, strict=True))


_padding = st.text(alphabet=" \t\u3000", max_size=3)


@given(st.data(), _emails, _padding, _padding)
def test_u9_email_normalisation_ignores_case_and_padding(data, email, left, right):
    variant = left + _recase(data.draw, email) + right
    assert normalize_email(variant) == normalize_email(email) == email


@given(st.one_of(st.emails(), st.text()))
def test_u9_email_normalisation_is_idempotent(raw):
    try:
        once = normalize_email(raw)
    except ValueRejected:
        return
    assert normalize_email(once) == once


# --- mobile number -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+819012345678", "+819012345678"),
        ("+81 090-1234-5678", "+819012345678"),  # the national trunk 0 is dropped
        ("+81 90-1234-5678", "+819012345678"),
        (" +81-90-1234-5678 ", "+819012345678"),
        ("+81 (90) 1234 5678", "+819012345678"),
        ("＋８１ ９０－１２３４－５６７８", "+819012345678"),  # typed with a Japanese IME
        ("+1 650-253-0000", "+16502530000"),
        ("+44 7911 123456", "+447911123456"),
        ("+81312345678", "+81312345678"),  # a landline: accepted, caller ids arrive here
    ],
)
def test_i9_mobile_is_stored_e164(raw, expected):
    assert normalize_mobile(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "09012345678",  # no country code
        "819012345678",
        "0081 90 1234 5678",
        "+81 90 1234 5678 ext 12",
        "+8190123456789",  # one digit too many for Japan
        "+81901234567",
        "+81",
        "+0 123 456 789",
        "+81-90-ABCD-5678",
        "+81 90 1234 5678 / +81 80 1234 5678",
        "phone",
        "",
    ],
)
def test_i9_mobile_rejects_numbers_without_country_code_or_not_valid(raw):
    rejected(normalize_mobile, raw)


def test_i9_mobile_without_country_code_says_so():
    assert rejected(normalize_mobile, "090-1234-5678").reason == (
        "not a mobile number with a country code, e.g. +819012345678 or +81 090-1234-5678"
    )


def _example_mobiles() -> list[str]:
    numbers = (
        phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
        for region in sorted(phonenumbers.SUPPORTED_REGIONS)
    )
    return [
        phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
        for n in numbers
        if n is not None
    ]


@given(st.sampled_from(_example_mobiles()), st.sampled_from([" ", "-", "", "."]))
def test_u9_mobile_e164_normalisation_is_idempotent(formatted, separator):
    raw = formatted.replace(" ", separator)
    once = normalize_mobile(raw)
    assert once.startswith("+") and once[1:].isdigit()
    assert normalize_mobile(once) == once


@given(st.from_regex(r"\A\+[1-9][0-9 \-]{6,16}\Z"))
def test_u9_mobile_normalisation_is_idempotent_for_any_accepted_input(raw):
    try:
        once = normalize_mobile(raw)
    except ValueRejected:
        return
    assert normalize_mobile(once) == once


# --- typed parsing (P2) and SDK values ----------------------------------------------------


def test_p2_parsers_cover_every_profile_type():
    assert set(PARSERS) == {
        "string",
        "number",
        "boolean",
        "date",
        "datetime",
        "list",
        "listOfNumber",
    }


@pytest.mark.parametrize(
    ("type_name", "raw", "expected"),
    [
        ("string", " x ", " x "),
        ("number", "1.01", 1.01),
        ("boolean", "Yes", True),
        ("date", "2025-05-04", MAY_4_2025_UTC),
        ("datetime", "2025-05-04T09:00:00+09:00", MAY_4_2025_UTC),
        ("list", '["a","b"]', ["a", "b"]),
        ("listOfNumber", "[1,2]", [1, 2]),
    ],
)
def test_p2_parse_typed_dispatches_on_the_key_type(type_name, raw, expected):
    assert parse_typed(type_name, raw) == expected


def test_p2_unknown_type_is_a_programming_error_not_a_bad_value():
    with pytest.raises(ValueError, match="unknown profile type"):
        parse_typed("tag", "[]")


@pytest.mark.parametrize(
    ("type_name", "value", "expected"),
    [
        ("string", "東京", "東京"),
        ("number", 3, 3),
        ("number", 2.5, 2.5),
        ("number", "2.5", 2.5),  # JSON clients often send decimals as text
        ("boolean", True, True),
        ("boolean", "no", False),
        ("date", "2025-05-04", MAY_4_2025_UTC),
        ("date", MAY_4_2025_UTC, MAY_4_2025_UTC),
        ("datetime", "2025-05-04T00:00:00Z", MAY_4_2025_UTC),
        ("datetime", MAY_4_2025_UTC + 1, MAY_4_2025_UTC + 1),
        ("list", ["a", "b"], ["a", "b"]),
        ("listOfNumber", [1, 2.5], [1, 2.5]),
    ],
)
def test_p2_sdk_values_of_the_declared_type_are_accepted(type_name, value, expected):
    assert coerce_sdk_value(type_name, value) == expected


@pytest.mark.parametrize(
    ("type_name", "value"),
    [
        ("string", 12345),
        ("string", None),
        ("number", True),
        ("number", "1,000"),
        ("number", float("inf")),
        ("number", 2**64),
        ("number", [1]),
        ("boolean", 1),
        ("boolean", "maybe"),
        ("date", "2025/05/04"),
        ("date", MAY_4_2025_UTC + 1),  # not a UTC midnight
        ("date", True),
        ("datetime", 1.5),
        ("datetime", 10**20),
        ("list", "a"),
        ("list", ["a", 1]),
        ("listOfNumber", [True]),
        ("listOfNumber", "[1,2]"),
    ],
)
def test_p2_sdk_values_of_another_type_are_rejected(type_name, value):
    with pytest.raises(ValueRejected):
        coerce_sdk_value(type_name, value)


@given(st.sampled_from(["+81", "+810", "+8190", "+8170", "+8180", "+8160", "+8100", "+8150", "+8120", "+82", "+1"]),
       st.text(alphabet="0123456789", min_size=0, max_size=12))
@example("+8190", "12345678")
@example("+8190", "02345678")
@example("+8160", "12345678")
def test_u9_japanese_mobile_shortcut_answers_as_phonenumbers_does(prefix: str, digits: str) -> None:
    """Issue 14: `_e164`'s shortcut for Japanese mobile numbers already in E.164 gives
    what phonenumbers gives (the number itself, valid), and every other number still
    goes through phonenumbers."""
    from services.domain import values_contact

    compact = prefix + digits
    values_contact._e164.cache_clear()
    assert values_contact._e164(compact) == values_contact._parsed_e164(compact)


def test_u9_japanese_mobile_shortcut_is_taken() -> None:
    """The shortcut is not vacuous: a JP mobile number in E.164 is answered without
    phonenumbers (monkeypatched to fail here), and its answer is the library's."""
    from services.domain import values_contact

    number = "+819012345678"
    values_contact._e164.cache_clear()
    expected = values_contact._parsed_e164(number)
    assert expected == number
    saved = values_contact._parsed_e164
    values_contact._parsed_e164 = None  # type: ignore[assignment]
    try:
        assert values_contact._e164(number) == expected
    finally:
        values_contact._parsed_e164 = saved
        values_contact._e164.cache_clear()
