"""What `unifier import` publishes, byte for byte, is what it published before issue 14
session 20 cut its CPU per row (docs/decisions.md, "Issue 14, session 20: the importer's
CPU per row"): the same file through services/importer and through its copy in
tests/oracle/importer.py gives the same refusal and wording (I13, issue 11), the same
records with their row numbers and lines (I15), and the same `import.rows` records
(contract "identity.import-rows": rows in row order, chunks cut at the same rows, the
same bytes), added to the same record batches, shipped at the same points — paced or not.
"""

from __future__ import annotations

import asyncio
import csv
import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tests.oracle.importer as before
from services.importer import csvfile
from services.importer import run as importer_run
from services.importer.mapping import Plan, plan
from services.importer.producer import ImportProducer
from services.importer.run import CHUNK_ROWS, Import, ImportRequest

CH, IMP, NOW = "ch_out", "imp_out", 1_767_225_600_000
HEADER = ["memberId", "name", "errorReason", "email", "memo", "skipme", "unsubscribeEmail", "unsubscribeTexting"]
MAPS = ("memo=profile.memo:string", "skipme=")


class Captured(ImportProducer):
    """The real producer's `add` (aiokafka's record batches, 512 KiB each), never
    started: every call is recorded, nothing is sent."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1:9", "t.import-rows", CH)
        self._batch = self.producer.create_batch()
        self.calls: list[Any] = []

    def add(self, value: bytes, rows: int = 1) -> bool:
        added = super().add(value, rows)
        self.calls.append(("add", value, rows, added))
        return added

    async def ship(self) -> None:
        batch, self._batch = self._batch, self.producer.create_batch()
        self.calls.append(("ship", batch.record_count()))

    async def flush(self) -> None:
        self.calls.append(("flush",))
        await self.ship()


def _import(path: Path, mapping: Plan, width: int, allowed: int | None, maps: tuple[str, ...]) -> Import:
    settings: Any = SimpleNamespace(import_lead_s=0.0 if allowed is None else 0.4, import_stall_after_rows=0)
    req = ImportRequest(path, CH, "member", maps=maps, actor="test")
    run = Import(settings, req, None, "127.0.0.1:9", mapping, None, width, None)  # type: ignore[arg-type]
    run.import_id = IMP
    if allowed is not None:  # paced: each wait lets `allowed` more rows through
        run.allowed = allowed

        async def room(producer: ImportProducer) -> None:
            producer.calls.append(("wait", run.read))  # type: ignore[attr-defined]
            run.allowed += allowed

        run._wait_for_room = room  # type: ignore[method-assign]
    return run


async def _published(path: Path, publish: Any, allowed: int | None, maps: tuple[str, ...] = MAPS) -> tuple[list[Any], int]:
    headers = csvfile.header(path)
    mapping = plan(headers, maps, "member", None, {})
    producer = Captured()
    rows = await publish(_import(path, mapping, len(headers), allowed, maps), producer)
    await producer.stop()
    return producer.calls, rows


def _facts(fn: Any, path: Path) -> Any:
    """(size, sha256) of the file, or the words that refuse it."""
    try:
        facts = fn(path)
    except (csvfile.FileRefused, before.FileRefused) as err:
        return ("refused", str(err))
    return ("ok", facts.size, facts.sha256)


def _outcome(fn: Any, *args: Any) -> Any:
    try:
        return ("ok", fn(*args))
    except (csvfile.FileRefused, before.FileRefused) as err:
        return ("refused", str(err))


async def assert_as_before(
    path: Path, monkeypatch: pytest.MonkeyPatch, paced: tuple[int | None, ...] = (None,),
    header: list[str] = HEADER, maps: tuple[str, ...] = MAPS,
) -> None:
    monkeypatch.setattr(importer_run, "_now_ms", lambda: NOW)
    monkeypatch.setattr(before, "_now_ms", lambda: NOW)
    now, then = _facts(csvfile.inspect, path), _facts(before.inspect, path)
    assert now == then
    if now[0] == "refused":
        return
    read = _outcome(csvfile.header, path)
    assert read == _outcome(before.header, path)
    assert list(csvfile.records_with_lines(path)) == list(before.records_with_lines(path))
    assert list(csvfile.records(path)) == list(before.records(path))
    if read != ("ok", header):
        return
    for allowed in paced:
        now_published = await _published(path, Import._publish_rows, allowed, maps)
        assert now_published == await _published(path, before._publish_rows, allowed, maps)


def _varied(path: Path) -> Path:
    """Odd cells of every kind the importer treats apart, in one file."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(HEADER)
    rows: list[list[str]] = [
        ["m1", "山田 太郎", "", "taro@example.jp", "plain", "x", "false", "false"],
        ["m2", 'say "hi", twice', "", "a@example.jp", "two\nlines", "", "true", "false"],  # quoted, doubled, a break
        ["m3", "'=SUM(A1)", "", "'+81 90", "'-2", "'@x", "false", "true"],  # neutralised formulas come back
        ["m4", "back\\slash", "", "tab\there", "ctl\x01\x1f\x7f", "", "false", "false"],  # escaped in JSON
        ["m5", "😀 e\u0301 \u2028 \ufeff", "", "", "", "", "", ""],  # astral, combining, separators, a BOM mid-file
        ["", "", "", "", "", "", "", ""],  # a record of empty cells: skipped, counted
        ["m6", "short"],  # fewer cells than columns
        ["m7", "many", "", "", "", "", "false", "false", "", "  "],  # more cells, the extra blank
        ["m8", "many", "", "", "", "", "false", "false", "extra"],  # more cells, one not blank: rowError
        ["m9", "x" * 70_000, "", "", "", "", "false", "false"],  # too large for one message: rowError
        ["m10", "swallowed\n" + "m,x\n" * 1_000, "", "", "", "", "false", "false"],  # a cell longer than any may be
    ]
    # Rows that fit one message each: they cut chunks by bytes, and fill a record batch.
    rows += [[f"b{i}", "x" * 60_000, "", "", "", "", "false", "false"] for i in range(12)]
    for row in rows:
        w.writerow(row)
    out.write("\n")  # an empty line: skipped, counted
    out.write('m15,"quoted, and ""odd""",,,,,false,false\r\n')  # CRLF
    out.write("m16,lone cr,,,,,false,false\r")  # a lone CR ends a line too
    out.write('m17,in"side,,,,,false,false\n')  # a quote inside an unquoted cell is a character
    for i in range(CHUNK_ROWS * 2 + 37):  # chunks cut by rows
        out.write(f"n{i},名前{i},,u{i}@example.jp,memo {i},,{'true' if i % 3 else 'false'},false\n")
    out.write("m18,no newline at the end,,,,,false,false")
    path.write_text(out.getvalue(), encoding="utf-8")
    return path


async def test_i15_contract_import_rows_a_varied_file_is_published_byte_for_byte_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = _varied(tmp_path / "varied.csv")
    calls, rows = await _published(path, Import._publish_rows, None)
    added = [(c[2], c[3]) for c in calls if c[0] == "add"]
    assert rows > CHUNK_ROWS * 2 and (CHUNK_ROWS, True) in added  # a chunk cut by rows
    assert any(n < CHUNK_ROWS for n, _ in added[:-1])  # one cut by bytes
    assert any(not ok for _, ok in added)  # a full record batch shipped
    await assert_as_before(path, monkeypatch, paced=(None, 1, 7, 500))


async def test_i15_a_file_with_a_bom_and_no_quote_is_published_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bom.csv"
    lines = [",".join(HEADER)] + [f"m{i},名前 {i},,u{i}@example.jp,{'' if i % 5 else ' '},,false,true" for i in range(1_200)]
    path.write_bytes("\ufeff".encode() + "\r\n".join(lines).encode() + b"\r\n\r\n,,,\r\n")
    await assert_as_before(path, monkeypatch, paced=(None, 300))


@pytest.mark.parametrize(("header", "maps"), [
    (["memberId", "メモ%", 'quo"te', "back\\slash", "unsubscribeEmail"],
     ("メモ%=メモ%:string", 'quo"te=quo"te:string', "back\\slash=back\\slash%d:string")),
    (["memberId"], ()),  # one mapped column
    (["x", "memberId", "y"], ("x=", "y=")),  # the mapped column between skipped ones
])
async def test_i5_keys_of_any_spelling_are_published_as_before(
    header: list[str], maps: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Keys with a percent sign, a quote, a backslash, non-ASCII: the row's JSON escapes
    them as before."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(header)
    for i in range(40):
        w.writerow([f"v{i}%d%s\\{j}" if i % 3 else f"m{i}" for j in range(max(1, len(header) + i % 3 - 1))])
    path = tmp_path / "keys.csv"
    path.write_text(out.getvalue(), encoding="utf-8")
    assert (await _published(path, Import._publish_rows, None, maps))[1] == 40
    await assert_as_before(path, monkeypatch, paced=(None, 6), header=header, maps=maps)


@pytest.mark.parametrize("text", [
    'memberId,name\nm-1,Taro\nm-2,"Hanako\nm-3,Jiro\n',  # never closed (I13)
    'memberId,name\nm-1,Taro\nm-2,"Ha"nako\n',  # text after a closing quote
    'memberId,name\nm-1,"a"\r\nm-2,"b"x\r\n',
    'memberId,name\nm-1,"a\rb"c\n',
    "memberId,name\nm-1,\x00\n",  # NUL
    'memberId,name\nm-1,"open',
    'memberId,name\nm-1,"two\nlines"\nm-2,"x"y\n',  # lines counted across a quoted line break
    'memberId,name\nm-1,"two\r\nlines"\r\nm-2,"open\r\nm-3,x\r\n',
    '"member\nId",name\nm-1,"two\nlines"\n\nm-2,"x""\n\n"y\n',
    "",  # empty
    "\n\n",  # no header
])
async def test_i13_a_refused_file_is_refused_with_the_same_words(text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text, encoding="utf-8", newline="")
    await assert_as_before(path, monkeypatch)


@pytest.mark.parametrize("text", [
    '"member\nId",name\nm-1,"a\n\nb"\n"m-2",x\n',  # a header over two lines, a cell over three
    'memberId,name\r\n"m-1","x"\r\nm-2,y\r\n"m-3"',
])
async def test_i15_records_over_several_lines_keep_their_numbers_and_lines(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "lines.csv"
    path.write_text(text, encoding="utf-8", newline="")
    assert list(csvfile.records_with_lines(path))
    await assert_as_before(path, monkeypatch)


async def test_i13_a_file_that_is_not_utf8_is_refused_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "sjis.csv"
    path.write_bytes(b'memberId,name\nm1,"ok"\nm2,' + "山田".encode("shift_jis") + b"\n")
    await assert_as_before(path, monkeypatch)


def _big(tail: bytes, at: int = 0) -> bytes:
    """A file of more than two read chunks whose bytes from `at` (default: after them) are `tail`."""
    body = b"memberId,name\n" + b"m1,\xe5\xb1\xb1\xe7\x94\xb0 x\n" * (2 * csvfile._CHUNK // 17 + 5)
    at = at or len(body)
    return body[:at] + tail + body[at + len(tail):]


@pytest.mark.parametrize("data", [
    _big(b"m2,\x00\n"),  # NUL after the first chunks
    _big(b"m2,\xff\n"),  # a bad byte after them
    _big(b"m2,\xe5\xb1"),  # a sequence cut by the end of the file
    _big(b"\xe5\xb1,", at=csvfile._CHUNK - 1),  # a bad sequence across two chunks
    _big(b""),  # valid: published as before
    _big(b'"a",b\n'),
])
async def test_i13_a_large_file_is_refused_naming_the_same_line_or_published_as_before(data: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.csv"
    path.write_bytes(data)
    await assert_as_before(path, monkeypatch)


# Raw text, not written by a CSV writer: valid and invalid quoting, every kind of line end.
_PIECES = st.sampled_from(["a", "m1", "山田", " ", ",", ",", '"', '"', '""', ',"', '",', "\n", "\n", "\r\n", "\r", "\t",
                           "\\", "'", "'=", "x\x01", "😀", "\u2028", "false"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.lists(_PIECES, max_size=60), ending=st.sampled_from(["", "\n", "\r\n", "\r"]))
def test_i13_i15_any_text_is_read_and_published_as_before(
    body: list[str], ending: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "any.csv"
    path.write_text(",".join(HEADER) + "\n" + "".join(body) + ending, encoding="utf-8", newline="")
    asyncio.run(assert_as_before(path, monkeypatch, paced=(None, 2)))
