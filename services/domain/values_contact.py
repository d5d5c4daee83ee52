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

from .rejections import ValueRejected

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


# A Japanese mobile number written in full (+81 and ten digits, 60/70/80/90 first, no
# trunk 0): the commonest number of an import file, each seen once, so the cache does
# not help and phonenumbers costs ~25 µs a number. For these, phonenumbers' own verdict
# is read from its metadata directly: a national number that matches the region's
# general and mobile descriptions (lengths and patterns, matched as `_match` does: from
# the start, the whole number) is a valid number (`_number_type_helper` finds a type),
# and its E.164 form is the input itself. Anything else — or a number these do not
# match — goes through phonenumbers as before. tests/unit/test_values.py holds the two
# equal over every prefix the shape allows.
_JP_MOBILE_SHAPE = re.compile(r"\+81[6-9]0[0-9]{8}", re.ASCII)
_JP = phonenumbers.PhoneMetadata.metadata_for_region("JP")
_JP_DESCS = () if _JP is None else tuple(
    (frozenset(d.possible_length), re.compile(d.national_number_pattern))
    for d in (_JP.general_desc, _JP.mobile) if d is not None and d.national_number_pattern
)


def _jp_mobile(compact: str) -> bool:
    """Whether phonenumbers finds `compact` a valid number, told from JP's metadata."""
    if len(_JP_DESCS) != 2 or _JP_MOBILE_SHAPE.fullmatch(compact) is None:
        return False
    national = compact[3:]
    for lengths, pattern in _JP_DESCS:
        if lengths and len(national) not in lengths:
            return False
        found = pattern.match(national)
        if found is None or found.end() != len(national):
            return False
    return True


# SDK facts repeat the same user's number on every boot; the cache makes those free.
# Separators are dropped first: phonenumbers parses the compact form faster.
@lru_cache(maxsize=16_384)
def _e164(compact: str) -> str | None:
    if _jp_mobile(compact):
        return compact
    try:
        number = phonenumbers.parse(compact, None)
    except NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)
