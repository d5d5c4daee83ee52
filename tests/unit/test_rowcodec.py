"""The batch's rows as binary COPY payloads (services/store/rowcodec.py, _rowcodec.c;
issue 14, session 17): the C encoder writes byte for byte what its Python reference
writes, and refuses what it refuses, with the same exception's type."""

from __future__ import annotations

import importlib.util
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services import compiled_core
from services.store import rowcodec
from services.store.rowcodec import encode_py

Encoder = Callable[[list[tuple[Any, ...]], str], bytes]


def _native() -> Encoder:
    """The C encoder: the process's own when it runs compiled, else the build's (the
    interpreted pass loads it by its path, so both passes test it); skipped without a
    build of these sources."""
    if rowcodec.NATIVE:
        return rowcodec.encode
    if compiled_core._mismatch(compiled_core.core_dir()) is not None:
        pytest.skip("no compiled core of these sources (`make core`)")
    found = sorted((compiled_core.core_dir() / "services" / "store").glob("_rowcodec.*.so"))
    assert found, "the build holds no _rowcodec extension"
    spec = importlib.util.spec_from_file_location("services.store._rowcodec", found[0])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.encode  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def native() -> Encoder:
    return _native()


_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "t": st.text(),
    "q": st.integers(-(2**63), 2**63 - 1),
    "b": st.booleans(),
    "B": st.binary(),
    "J": st.binary(),
    "a": st.lists(st.text(), max_size=5).flatmap(lambda xs: st.sampled_from([xs, tuple(xs)])),
}


@st.composite
def _table(draw: st.DrawFn) -> tuple[list[tuple[Any, ...]], str]:
    types = draw(st.text(alphabet=rowcodec.CODES, min_size=1, max_size=8))
    row = st.tuples(*[st.none() | _VALUES[c] for c in types])
    return draw(st.lists(row, max_size=6)), types


@settings(max_examples=1500, deadline=None)
@given(_table())
def test_the_c_encoder_writes_the_python_references_payload(native: Encoder, table: tuple[list[tuple[Any, ...]], str]) -> None:
    """issue 14, session 17: every column type, NULLs, empty and non-ASCII text, the
    int8 bounds, empty arrays: the same bytes from both."""
    rows, types = table
    assert native(rows, types) == encode_py(rows, types)


def test_the_payload_is_postgresqls_binary_copy_format() -> None:
    """The format as PostgreSQL's documentation of COPY gives it, written out by hand:
    signature, flags, extension length, each row's field count and fields, trailer."""
    payload = encode_py([("é", 1, True, b"{}", b"[]", ["x"]), (None, -1, False, None, None, [])], "tqbBJa")
    one = (b"\x00\x06" + b"\x00\x00\x00\x02\xc3\xa9" + b"\x00\x00\x00\x08" + struct.pack(">q", 1)
           + b"\x00\x00\x00\x01\x01" + b"\x00\x00\x00\x02{}" + b"\x00\x00\x00\x03\x01[]"
           + struct.pack(">iiiiiii", 4 * 5 + 4 + 1, 1, 0, 25, 1, 1, 1) + b"x")
    two = (b"\x00\x06" + b"\xff\xff\xff\xff" + b"\x00\x00\x00\x08" + struct.pack(">q", -1)
           + b"\x00\x00\x00\x01\x00" + b"\xff\xff\xff\xff" * 2 + struct.pack(">iiii", 12, 0, 0, 25))
    assert payload == b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8 + one + two + b"\xff\xff"
    assert encode_py([], "t") == b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8 + b"\xff\xff"


@pytest.mark.parametrize(("rows", "types", "error"), [
    ([("a",)], "q", TypeError),  # a value of another column's type
    ([(True,)], "q", TypeError),  # a bool is no int8 here
    ([(2**63,)], "q", OverflowError),
    ([(-(2**63) - 1,)], "q", OverflowError),
    ([(1,)], "b", TypeError),
    ([("{}",)], "J", TypeError),  # JSON goes as its bytes
    ([(bytearray(b"x"),)], "B", TypeError),
    ([("\ud800",)], "t", UnicodeEncodeError),  # a lone surrogate has no UTF-8
    ([(["a", None],)], "a", TypeError),  # no NULL element
    ([({"a"},)], "a", TypeError),
    ([(1,)], "x", ValueError),  # an unknown code
    ([(1,)], "", ValueError),
    ([("a", "b")], "t", TypeError),  # a row of another width
    ([["a"]], "t", TypeError),  # a row that is no tuple
    ((("a",),), "t", TypeError),  # rows that are no list
])
def test_both_encoders_refuse_what_they_cannot_encode(native: Encoder, rows: Any, types: str, error: type[Exception]) -> None:
    """Bounds and types checked, never a truncated or wrapped value: the batch fails as
    a statement would have."""
    for encode in (native, encode_py):
        with pytest.raises(error):
            encode(rows, types)


def test_a_field_past_int32_is_refused_before_anything_is_written(native: Encoder) -> None:
    """A field's length is an int32: a longer one raises OverflowError, it does not wrap.
    2**31-1 bytes of JSON are one byte too many as jsonb (its version byte first); the C
    checks before it copies anything (the reference is not run: it would copy 2 GiB)."""
    try:
        huge = b"x" * (2**31 - 1)
    except MemoryError:
        pytest.skip("no 2 GiB to spare")
    try:
        with pytest.raises(OverflowError):
            native([(huge,)], "J")
    finally:
        del huge
