"""G1 identifier hygiene: placeholders and unparsable contacts never match or merge."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.domain.hygiene import (
    PLACEHOLDERS,
    IdentifierRejected,
    clean_email,
    clean_member_id,
    clean_mobile,
    clean_veil_id,
    is_placeholder,
)
from services.domain.values import Rejected

CLEANERS = [clean_member_id, clean_veil_id, clean_email, clean_mobile]
G1_PLACEHOLDERS = [
    "null",
    "undefined",
    "none",
    "nan",
    "0",
    "-1",
    "anonymous",
    "guest",
    "[object Object]",
]


def rejection(clean, raw) -> IdentifierRejected:
    with pytest.raises(IdentifierRejected) as caught:
        clean(raw)
    return caught.value


def test_g1_placeholder_list_is_the_rules():
    assert PLACEHOLDERS == frozenset(G1_PLACEHOLDERS)


@pytest.mark.parametrize("clean", CLEANERS)
@pytest.mark.parametrize(
    "raw", [*G1_PLACEHOLDERS, "NULL", " Undefined ", "NaN", "GUEST", "[OBJECT OBJECT]", " -1\t"]
)
def test_g1_placeholder_identifiers_are_rejected(clean, raw):
    err = rejection(clean, raw)
    assert isinstance(err, Rejected)
    assert err.code == "placeholder_identifier"
    assert "placeholder" in err.reason


@pytest.mark.parametrize("clean", CLEANERS)
@pytest.mark.parametrize("raw", [None, "", " ", "\t\n", "\u3000"])
def test_g1_blank_identifiers_are_rejected(clean, raw):
    assert rejection(clean, raw).code == "placeholder_identifier"


def test_g1_placeholder_member_ids_are_rejected():
    err = rejection(clean_member_id, "undefined")
    assert err.reason == "memberId is blank or a placeholder such as null, undefined or guest"


@pytest.mark.parametrize(
    "raw", ["00", "1", "-2", "nullable", "guest1", "anonymous-42", "[object]", "Object", "n/a"]
)
def test_g1_near_placeholders_are_real_identifiers(raw):
    assert not is_placeholder(raw)
    assert clean_member_id(raw) == raw


@pytest.mark.parametrize("clean", [clean_member_id, clean_veil_id])
def test_g1_ids_are_trimmed_and_keep_their_case(clean):
    assert clean("  M-00123abc\t") == "M-00123abc"
    assert clean("Abc") != clean("abc")


@pytest.mark.parametrize(
    ("clean", "raw"),
    [
        (clean_email, "taro"),
        (clean_email, "taro@example"),
        (clean_email, "taro @example.com"),
        (clean_mobile, "090-1234-5678"),
        (clean_mobile, "+8190123456789"),
        (clean_mobile, "+81 90 ABCD 5678"),
    ],
)
def test_g1_contacts_that_do_not_parse_are_rejected(clean, raw):
    err = rejection(clean, raw)
    assert err.code == "invalid_contact"
    assert err.reason


def test_u9_email_matches_case_insensitively_after_trim():
    assert (
        clean_email(" Taro@Example.COM ") == clean_email("taro@example.com") == "taro@example.com"
    )


def test_u9_mobile_matches_in_e164():
    assert clean_mobile("+81 090-1234-5678") == clean_mobile("+819012345678") == "+819012345678"


@st.composite
def disguised_placeholders(draw):
    """A placeholder in any casing, padded with any whitespace."""
    word = draw(st.sampled_from(sorted(PLACEHOLDERS)))
    flips = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    recased = "".join(c.upper() if f else c.lower() for c, f in zip(word, flips, strict=True))
    pad = st.text(alphabet=" \t\n\r\u3000\u00a0", max_size=4)
    return draw(pad) + recased + draw(pad)


@given(disguised_placeholders(), st.sampled_from(CLEANERS))
def test_g1_every_placeholder_in_any_casing_or_padding_is_rejected(raw, clean):
    assert is_placeholder(raw)
    assert rejection(clean, raw).code == "placeholder_identifier"


@given(st.one_of(st.text(), disguised_placeholders()))
def test_g1_member_ids_are_rejected_only_when_blank_or_a_placeholder(raw):
    trimmed = raw.strip()
    if not trimmed or trimmed.lower() in {p.lower() for p in PLACEHOLDERS}:
        assert rejection(clean_member_id, raw).code == "placeholder_identifier"
    else:
        assert clean_member_id(raw) == trimmed


@pytest.mark.parametrize("clean", CLEANERS)
def test_g1_remembered_identifiers_clean_as_they_did_and_refusals_are_refused_every_time(clean):
    """issue 14 session 14: each cleaner remembers what a text cleaned to (plain dicts,
    emptied when full). A remembered text cleans to what it cleaned to the first time; a
    refused one (G1) raises every time, never remembered; past the memo's size the
    cleaning goes on the same (the memo is emptied, not grown)."""
    from services.domain import hygiene

    raws = [f" {i}@Example.com " if clean is clean_email else f"+81 90-12{i:02d}-5678" if clean is clean_mobile
            else f" id-{i} " for i in range(50)]
    first = [clean(raw) for raw in raws]
    assert [clean(raw) for raw in raws] == first  # remembered
    hygiene.forget()
    assert [clean(raw) for raw in raws] == first  # derived again
    for _ in range(2):
        assert rejection(clean, "undefined").code == "placeholder_identifier"
    for i in range(hygiene._REMEMBERED + 5):
        clean_veil_id(f"veil-{i}")
    assert len(hygiene._VEIL_IDS) <= hygiene._REMEMBERED
    assert [clean(raw) for raw in raws] == first
