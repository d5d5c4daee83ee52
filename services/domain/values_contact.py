"""Contact values: e-mail addresses and mobile numbers in the form U9 compares.

Two users share a contact only if the normalised strings are equal, so whatever these
return is the matching key: e-mail NFKC-normalised, trimmed and lower-cased, mobile
numbers in E.164.
"""

import re
import unicodedata
from functools import lru_cache

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat

from services.domain.rejections import ValueRejected

# Pragmatic, not RFC 5322: one @, no spaces, a dotted domain whose last label has at least
# two characters. Commas, semicolons and brackets are refused because they mean two
# addresses in one cell or a pasted "Name <a@b.jp>", not an address.
_NOT_IN_EMAIL = r"\s@,;:<>()\[\]\\\""
_EMAIL = re.compile(rf"[^{_NOT_IN_EMAIL}]+@(?:[^{_NOT_IN_EMAIL}.]+\.)+[^{_NOT_IN_EMAIL}.]{{2,}}")
_EMAIL_MAX = 254

# Cheap shape check so phonenumbers (tens of µs) only sees plausible input: "+", a digit,
# then digits and the separators people type. Letters ("ext. 12") are refused here.
_MOBILE_SHAPE = re.compile(r"\+[0-9][0-9 ().\-]{5,24}", re.ASCII)
_DROP_SEPARATORS = str.maketrans("", "", " ().-")
_MOBILE_EXAMPLE = "e.g. +819012345678 or +81 090-1234-5678"


def normalize_email(raw: str) -> str:
    """NFKC, trim and lower-case; refuse what cannot be an address (U9, G1).

    NFKC first: an address typed with a Japanese IME arrives in full-width forms
    (`ｔａｒｏ＠ｅｘａｍｐｌｅ．ｊｐ`), which staff and the site mean as `taro@example.jp`."""
    email = raw.strip()
    if not email.isascii():
        email = unicodedata.normalize("NFKC", email).strip()
    email = email.lower()
    if "@" not in email:
        raise ValueRejected("e-mail address must contain @, e.g. name@example.com")
    if len(email) > _EMAIL_MAX or _EMAIL.fullmatch(email) is None:
        raise ValueRejected("not an e-mail address like name@example.com")
    return email


def normalize_mobile(raw: str) -> str:
    """A phone number with its country code → E.164 (`+819012345678`).

    The Japanese trunk 0 written after the country code (`+81 090-…`) is dropped by
    phonenumbers. Full-width digits typed with a Japanese IME are accepted. Landlines
    are accepted although the guide keeps them for `landlineNumber`: phone-channel caller
    ids (C4, D1) arrive here too, and refusing them would dead-letter those inquiries.
    """
    s = raw.strip()
    if not s.isascii():
        s = unicodedata.normalize("NFKC", s)
    if not s.startswith("+"):
        raise ValueRejected(f"not a mobile number with a country code, {_MOBILE_EXAMPLE}")
    if _MOBILE_SHAPE.fullmatch(s) is None:
        raise ValueRejected(
            "after the +, a mobile number may contain only digits, spaces, hyphens, dots and"
            f" parentheses, {_MOBILE_EXAMPLE}"
        )
    e164 = _e164(s.translate(_DROP_SEPARATORS))
    if e164 is None:
        raise ValueRejected(f"not a valid phone number for its country code, {_MOBILE_EXAMPLE}")
    return e164


# Japanese mobile numbers, most of what sites and staff send, in E.164 already
# (`+81` and a national number of the library's own mobile pattern, no trunk 0): such a
# number is valid (it is of a known type, mobile) and is its own E.164 form, which is
# what phonenumbers answers for it after ~20 µs of parsing (issue 14: every staff edit
# and import row with a new number paid it). The patterns are read from phonenumbers'
# metadata, so the shortcut follows the library; tests/unit/test_values.py holds its
# answers equal to the library's.
def _jp_pattern(kind: str) -> str:
    """The national number pattern of Japan's `kind` (`mobile`, `general_desc`) in phonenumbers' metadata."""
    desc = getattr(phonenumbers.PhoneMetadata.metadata_for_region("JP"), kind)
    pattern = desc.national_number_pattern
    assert isinstance(pattern, str), f"phonenumbers has no {kind} pattern for JP"
    return pattern


_JP_MOBILE = re.compile(rf"\+81((?:{_jp_pattern('mobile')}))", re.ASCII)
_JP_GENERAL = re.compile(_jp_pattern("general_desc"), re.ASCII)


# SDK facts repeat the same user's number on every boot; the cache makes those free.
# Separators are dropped first: phonenumbers parses the compact form faster.
@lru_cache(maxsize=16_384)
def _e164(compact: str) -> str | None:
    jp = _JP_MOBILE.fullmatch(compact)
    if jp is not None and _JP_GENERAL.fullmatch(jp[1]) is not None:
        return compact
    return _parsed_e164(compact)


def _parsed_e164(compact: str) -> str | None:
    """What phonenumbers makes of a compact number: its E.164 form, None if invalid."""
    try:
        number = phonenumbers.parse(compact, None)
    except NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)
