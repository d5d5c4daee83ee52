"""Which value wins (U3, P3, C4).

Two decisions, one per situation, both total orders so the outcome never depends on
the order facts arrived in:

- an update of one user: qualified beats unqualified (a visitor's typing never
  overwrites what staff, an import or the site set — C4), then the later event time;
- a merge of two users (U3): qualified > unqualified, member data > lead/anonymous
  data, a value > no value, then the most recently set.

Write-once keys (P3) keep the earliest value in both situations.
Ties are broken on the value's canonical text so that the result is still
deterministic when two facts carry the same time.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from .user import Value

WRITE_ONCE: Final = frozenset(
    {
        "profile.referrer",
        "profile.utmSource",
        "profile.utmMedium",
        "profile.utmCampaign",
        "profile.utmContent",
        "profile.utmTerm",
    }
)


def _canon(v: Any) -> bytes:
    return orjson.dumps(v, option=orjson.OPT_SORT_KEYS)


def _once_rank(val: Value) -> tuple[bool, int, bytes, bool, bool]:
    """P3: smaller wins — a value before a clear, then the earliest; provenance last,
    so that two facts setting the same value at the same time still have one winner."""
    return (val.v is None, val.t, _canon(val.v), not val.q, not val.m)


def update_wins(key: str, new: Value, old: Value | None) -> bool:
    """Does `new` replace `old` on the same user?"""
    if old is None:
        return True
    if key in WRITE_ONCE:
        return _once_rank(new) < _once_rank(old)
    # (new.q, new.t, _canon(new.v), new.m) > (old.q, old.t, _canon(old.v), old.m), the
    # canonical texts made only when qualification and time tie (rarely: they cost two
    # orjson calls, and every profile value of every fact is decided here).
    if new.q != old.q:
        return new.q > old.q
    if new.t != old.t:
        return new.t > old.t
    return (_canon(new.v), new.m) > (_canon(old.v), old.m)


def _merge_rank(val: Value) -> tuple[bool, bool, bool, int, bytes]:
    return (val.q, val.m, val.v is not None, val.t, _canon(val.v))


def merge_winner(key: str, a: Value | None, b: Value | None) -> Value | None:
    """The value a merged user keeps for `key` when one side had `a`, the other `b`.

    Symmetric in a and b: merging A into M then B into M equals B then A (U3).
    """
    if a is None or b is None:
        return a if b is None else b
    if key in WRITE_ONCE:
        return a if _once_rank(a) <= _once_rank(b) else b
    # _merge_rank(a) >= _merge_rank(b), the canonical texts made only on a tie of the rest.
    ra, rb = (a.q, a.m, a.v is not None, a.t), (b.q, b.m, b.v is not None, b.t)
    if ra != rb:
        return a if ra > rb else b
    return a if _canon(a.v) >= _canon(b.v) else b
