"""G1 identifier hygiene: never match or merge on an identifier that identifies no one.

Sites send `"null"`, `"undefined"` or `"[object Object]"` as a memberId when their own
code fails; if such a value were matched, every visitor hit by the same bug would be
merged into one member. Each `clean_*` returns the identifier in its matching form or
raises `IdentifierRejected`; the SDK path dead-letters the fact, the importer fails the
row, both with the reason.
"""

from collections.abc import Callable
from typing import Final

from .values import Rejected, ValueRejected, normalize_email, normalize_mobile

# What broken site code sends instead of an id (G1), compared in any case after trimming.
PLACEHOLDERS = frozenset(
    {"null", "undefined", "none", "nan", "0", "-1", "anonymous", "guest", "[object Object]"}
)
_PLACEHOLDER_KEYS: Final = frozenset(p.lower() for p in PLACEHOLDERS)


class IdentifierRejected(Rejected):
    """An identifier that must not be used to match or merge (G1)."""


# The last identifiers cleaned, per cleaner: the projection cleans every fact's ids to
# know which users to load, then the handler cleans them again, and SDK facts repeat the
# same visitor's ids (issue 14: ids and keys computed once per fact). Pure functions of
# the text, so remembering changes nothing; a refused identifier raises every time
# (refusals are not remembered). Plain dicts emptied when full, not lru caches: compiled,
# a call of an lru-cached function is a generic call into functools' wrapper (~1.4 k
# instructions a hit), a dict read in a compiled function ~0.2 k (issue 14, session 14).
_REMEMBERED: Final = 65_536
_MEMBER_IDS: Final[dict[str, str]] = {}
_VEIL_IDS: Final[dict[str, str]] = {}
_EMAILS: Final[dict[str, str]] = {}
_MOBILES: Final[dict[str, str]] = {}


def _remember(memo: dict[str, str], raw: str | None, clean: str) -> str:
    """`clean`, remembered as what `raw` cleans to (`raw` is text: None is refused)."""
    if raw is not None:
        if len(memo) >= _REMEMBERED:
            memo.clear()
        memo[raw] = clean
    return clean


def forget() -> None:
    """Empty the remembered identifiers (benchmarks start each round cold)."""
    for memo in (_MEMBER_IDS, _VEIL_IDS, _EMAILS, _MOBILES):
        memo.clear()


def is_placeholder(raw: str | None) -> bool:
    """True for a missing, blank or placeholder identifier."""
    s = raw.strip() if raw is not None else ""
    return not s or s.lower() in _PLACEHOLDER_KEYS


def _identifying(raw: str | None, what: str) -> str:
    """The trimmed identifier, or the G1 rejection naming what it was meant to be."""
    if raw is None or is_placeholder(raw):
        raise IdentifierRejected(
            "placeholder_identifier",
            f"{what} is blank or a placeholder such as null, undefined or guest",
        )
    return raw.strip()


def clean_member_id(raw: str | None) -> str:
    """The memberId, trimmed; case is kept, since sites' account ids may be case-sensitive."""
    if raw is not None and (known := _MEMBER_IDS.get(raw)) is not None:
        return known
    return _remember(_MEMBER_IDS, raw, _identifying(raw, "memberId"))


def clean_veil_id(raw: str | None) -> str:
    """The veilId (browser/app identifier), trimmed."""
    if raw is not None and (known := _VEIL_IDS.get(raw)) is not None:
        return known
    return _remember(_VEIL_IDS, raw, _identifying(raw, "veilId"))


def clean_email(raw: str | None) -> str:
    """The e-mail in its U9 matching form (trimmed, lower-case)."""
    if raw is not None and (known := _EMAILS.get(raw)) is not None:
        return known
    return _remember(_EMAILS, raw, _contact(normalize_email, _identifying(raw, "e-mail address")))


def clean_mobile(raw: str | None) -> str:
    """The mobile number in its U9 matching form (E.164)."""
    if raw is not None and (known := _MOBILES.get(raw)) is not None:
        return known
    return _remember(_MOBILES, raw, _contact(normalize_mobile, _identifying(raw, "mobile number")))


def _contact(normalize: Callable[[str], str], raw: str) -> str:
    try:
        return normalize(raw)
    except ValueRejected as err:
        raise IdentifierRejected("invalid_contact", err.reason) from None
