"""Rows as a PostgreSQL binary COPY payload, built without asyncpg's per-value encoding
(issue 14, session 17): the live batch's users, identities, activities and eventIds are
sent by `repository.copy_rows` as one buffer.

`encode(rows, types)` is the C extension `_rowcodec` (services/store/_rowcodec.c, built
by `make core` with the compiled core, services/compiled_core.py `EXTENSIONS`) when the
process runs the compiled core, else `encode_py`, the reference it is tested against
(tests/unit/test_rowcodec.py): byte for byte the same payload, the same exceptions'
types.

`types` has one code a column, a value of None being NULL in any of them:
  t text (str, as UTF-8)      q int8 (int, not bool)     b boolean (bool)
  B bytes as they are (json's binary form is its text; bytea)
  J jsonb (bytes of JSON text; sent after jsonb's version byte 1)
  a text[] (a list or tuple of str: one dimension, no NULL element)
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = SIGNATURE + b"\x00\x00\x00\x00\x00\x00\x00\x00"  # no flags, no header extension
TRAILER = b"\xff\xff"
TEXT_OID = 25
FIELD_MAX = 2**31 - 1
CODES = "tqbBJa"

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_INT8 = struct.Struct(">iq")  # length 8, then the value
_NULL = _I32.pack(-1)
_TRUE, _FALSE = b"\x00\x00\x00\x01\x01", b"\x00\x00\x00\x01\x00"


def _length(n: int) -> bytes:
    if n > FIELD_MAX:
        raise OverflowError("a COPY field is limited to 2**31-1 bytes")
    return _I32.pack(n)


def _utf8(v: Any, what: str) -> bytes:
    if not isinstance(v, str):
        raise TypeError(f"{what}: expected str, got {type(v).__name__}")
    return v.encode()  # UnicodeEncodeError (a ValueError) on a lone surrogate, as the C's


def _field(code: str, v: Any) -> bytes:
    if v is None:
        return _NULL
    if code == "t":
        data = _utf8(v, "text column")
        return _length(len(data)) + data
    if code == "q":
        if not isinstance(v, int) or isinstance(v, bool):
            raise TypeError(f"int8 column: expected int, got {type(v).__name__}")
        try:
            return _INT8.pack(8, v)
        except struct.error:
            raise OverflowError("int too big to convert") from None
    if code == "b":
        if not isinstance(v, bool):
            raise TypeError(f"boolean column: expected bool, got {type(v).__name__}")
        return _TRUE if v else _FALSE
    if code in "BJ":
        if not isinstance(v, bytes):
            raise TypeError(f"{'jsonb' if code == 'J' else 'bytes'} column: expected bytes, got {type(v).__name__}")
        return _length(len(v) + 1) + b"\x01" + v if code == "J" else _length(len(v)) + v
    if code == "a":
        if not isinstance(v, (list, tuple)):
            raise TypeError(f"text[] column: expected list or tuple, got {type(v).__name__}")
        items = [_utf8(x, "text[] element") for x in v]
        if not items:
            return _length(12) + _I32.pack(0) + _I32.pack(0) + _I32.pack(TEXT_OID)
        body = b"".join(_I32.pack(len(x)) + x for x in items)
        return (_length(20 + len(body)) + _I32.pack(1) + _I32.pack(0) + _I32.pack(TEXT_OID)
                + _I32.pack(len(items)) + _I32.pack(1) + body)
    raise ValueError(f"unknown column type {code}")


def encode_py(rows: Sequence[tuple[Any, ...]], types: str) -> bytes:
    """`rows` (tuples of len(types) values) as a binary COPY payload: the header, each
    row's field count and fields (length, bytes; -1 for NULL), the trailer."""
    if not isinstance(rows, list):
        raise TypeError("rows: expected a list")
    if not 1 <= len(types) <= 32767 or any(c not in CODES for c in types):
        raise ValueError(f"types: one code of {CODES!r} a column, 1 to 32767 columns")
    count = _I16.pack(len(types))
    out = [HEADER]
    for r, row in enumerate(rows):
        if not isinstance(row, tuple) or len(row) != len(types):
            raise TypeError(f"row {r}: expected a tuple of {len(types)} values")
        out.append(count)
        out.extend(_field(code, v) for code, v in zip(types, row, strict=True))
    out.append(TRAILER)
    return b"".join(out)


def _native() -> Callable[[list[tuple[Any, ...]], str], bytes] | None:
    """The C encoder when this process runs the compiled core (services.store's path
    then leads to its build first) and the build has it; else None."""
    try:
        from services.store._rowcodec import encode as native  # type: ignore[import-not-found]
    except ImportError:
        return None
    return native  # type: ignore[no-any-return]


_C = _native()
NATIVE = _C is not None
encode: Callable[[list[tuple[Any, ...]], str], bytes] = _C if _C is not None else encode_py
