"""Date and datetime values (I9), as epoch milliseconds in UTC.

Dates and datetimes are stored as epoch milliseconds so that filters compare numbers and
a date means the same instant in every time zone (UTC midnight). The accepted shapes are
matched by one precompiled pattern each and converted with integer arithmetic: these run
on every cell of large imports, and `datetime.fromisoformat` also accepts shapes the guide
rules out (week dates, `20250504`, hour-only times).
"""

import re
from datetime import date

from .rejections import ValueRejected

MS_PER_DAY = 86_400_000
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
# The range a `datetime` can represent, years 1 to 9999: anything outside is a typo.
MIN_EPOCH_MS = (date(1, 1, 1).toordinal() - _EPOCH_ORDINAL) * MS_PER_DAY
MAX_EPOCH_MS = (date(9999, 12, 31).toordinal() - _EPOCH_ORDINAL + 1) * MS_PER_DAY - 1

_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})", re.ASCII)
_DATETIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?"
    r"(?:[Zz]|([+-])(\d{2})(?::?(\d{2}))?)?)?",
    re.ASCII,
)
_EPOCH_MS = re.compile(r"-?\d+", re.ASCII)

DATE_REASON = "date must be YYYY-MM-DD, e.g. 2025-04-01"
DATETIME_REASON = (
    "datetime must be ISO 8601 such as 2025-05-04T09:00:00+09:00 or 2025-05-04T00:00:00Z,"
    " or epoch milliseconds such as 1746316800000"
)


def _days_since_epoch(year: str, month: str, day: str) -> int:
    try:
        return date(int(year), int(month), int(day)).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        raise ValueRejected("no such calendar date; check the month and day") from None


def parse_date(raw: str) -> int:
    """`YYYY-MM-DD` → epoch ms at UTC midnight; `YYYY/MM/DD` and `YYYY.MM.DD` are refused
    because the guide warns they look right but break filters."""
    m = _DATE.fullmatch(raw.strip())
    if m is None:
        raise ValueRejected(DATE_REASON)
    return _days_since_epoch(*m.groups()) * MS_PER_DAY


def parse_datetime(raw: str) -> int:
    """ISO 8601 (offset, `Z`, or none meaning UTC) or epoch milliseconds → epoch ms.

    Fractions of a millisecond are floored, the same as `timedelta // milliseconds`.
    A bare date is UTC midnight, as in the guide's table of date/datetime inputs.
    """
    s = raw.strip()
    if _EPOCH_MS.fullmatch(s):
        return checked_epoch_ms(int(s) if len(s) <= 16 else MAX_EPOCH_MS + 1)  # no huge int()
    m = _DATETIME.fullmatch(s)
    if m is None:
        raise ValueRejected(DATETIME_REASON)
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = m.groups()
    days = _days_since_epoch(year, month, day)
    h, mi, sec = int(hour or 0), int(minute or 0), int(second or 0)
    if h > 23 or mi > 59 or sec > 59:
        raise ValueRejected("no such time of day; hours go to 23, minutes and seconds to 59")
    ms = days * MS_PER_DAY + ((h * 60 + mi) * 60 + sec) * 1000
    if fraction:
        ms += int(fraction[:3].ljust(3, "0"))
    if sign:
        oh, om = int(off_h), int(off_m or 0)
        if oh > 23 or om > 59:
            raise ValueRejected("no such UTC offset; use e.g. +09:00 or Z")
        offset_ms = (oh * 60 + om) * 60_000
        ms += -offset_ms if sign == "+" else offset_ms
    return ms


def checked_epoch_ms(value: object) -> int:
    """An integer epoch-ms value (SDK JSON or a cell of digits) within years 1 to 9999."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueRejected("value must be ISO 8601 text or integer epoch milliseconds")
    if not MIN_EPOCH_MS <= value <= MAX_EPOCH_MS:
        raise ValueRejected("epoch milliseconds must be between years 1 and 9999")
    return value
