"""Issue 11, the pure parts: the door's limits (docs/contract.md, "Limits"), the core
turning an exception into `internal_error`, the per-user size limit, H1 with non-ASCII
hashes, storable dead letters, and the halving that isolates a record the store refuses
(docs/decisions.md, "Hostile input")."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import asyncpg
import orjson
import pytest

from contracts.inbound import MAX_DEPTH, MAX_MESSAGE_BYTES, MAX_VALUE, InboundError, parse_inbound
from contracts.topics import InboundKind, Topics
from services.domain import core
from services.domain.channel import ChannelSettings, check_member_hash, member_hash
from services.domain.core import Fact
from services.domain.directory import Directory
from services.domain.limits import MAX_USER_CHARS, user_chars
from services.domain.values import Rejected
from services.projection.batch import BatchResult, Parsed, run_facts, storable_text
from services.projection.isolation import ConflictPersisted, apply_isolating, fault
from services.projection.records import Record
from services.projection.window import AppliedWindow
from tests.unit.domain_support import CH, T0, fact, snapshot

ENV = {"eventId": "e1", "channelId": "ch_1", "occurredAt": T0}


def refused(body: dict[str, Any] | bytes, kind: InboundKind = "sdk-events") -> InboundError:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(InboundError) as caught:
        parse_inbound(kind, raw)
    return caught.value


def boot(**fields: Any) -> dict[str, Any]:
    return {**ENV, "type": "boot", "veilId": "v", "platform": "web", **fields}


# -- the door --------------------------------------------------------------------------


def test_limits_a_message_over_64_kib_is_too_large_before_it_is_parsed() -> None:
    raw = orjson.dumps(boot(name="x" * MAX_MESSAGE_BYTES))
    err = refused(raw)
    assert err.code == "too_large" and str(len(raw)) in err.message


@pytest.mark.parametrize("where", [
    {"veilId": "a\x00b"},
    {"name": "\x00"},
    {"profile": {"k\x00": 1}},
    {"profile": {"k": ["ok", "no\x00"]}},
    {"device": {"os": "\x00"}},
])
def test_limits_u0000_anywhere_in_an_sdk_event_is_bad_text(where: dict[str, Any]) -> None:
    err = refused(boot(memberId="m", **where))
    assert err.code == "bad_text" and "U+0000" in err.message


def test_limits_u0000_in_a_command_and_in_track_property_keys_deep_down_is_bad_text() -> None:
    cmd = {**ENV, "type": "member.upsert", "actor": "api", "memberId": "m", "profile": {"nick": "a\x00"}}
    assert refused(cmd, "commands").code == "bad_text"
    track = {**ENV, "type": "track", "veilId": "v", "name": "n", "properties": {"a": [{"b\x00": 1}]}}
    err = refused(track)
    assert err.code == "bad_text" and err.message.startswith("properties.a[0]:")


def test_limits_an_escaped_backslash_before_u0000_text_is_not_u0000() -> None:
    raw = orjson.dumps(boot(name="\\u0000"))  # the six characters \u0000, which PostgreSQL stores fine
    assert parse_inbound("sdk-events", raw).name == "\\u0000"


@pytest.mark.parametrize("escape", [b"\\ud800", b"\\udfff", b"\\ud800x"])
def test_limits_a_lone_surrogate_is_bad_text_not_bad_json(escape: bytes) -> None:
    raw = b'{"eventId":"e","type":"boot","channelId":"c","occurredAt":1,"veilId":"' + escape + b'","platform":"web"}'
    assert refused(raw).code == "bad_text"


def test_limits_bytes_that_are_not_utf8_stay_bad_json() -> None:
    assert refused(b'{"veilId":"\xff"}').code == "bad_json"


def test_limits_nesting_is_bounded_at_ten_levels_so_track_properties_hold_eight() -> None:
    def track(levels: int) -> dict[str, Any]:
        value: Any = 1
        for _ in range(levels):
            value = {"a": value}
        return {**ENV, "type": "track", "veilId": "v", "name": "n", "properties": value}

    assert parse_inbound("sdk-events", orjson.dumps(track(MAX_DEPTH - 1))).properties  # 8 inside properties
    err = refused(track(MAX_DEPTH))
    assert err.code == "too_deep" and "10 levels" in err.message
    deep = b'{"eventId":"e","type":"track","channelId":"c","occurredAt":1,"veilId":"v","name":"n","properties":'
    assert refused(deep + b"[" * 600 + b"]" * 600 + b"}").code == "too_deep"  # orjson parses 1,024; we stop at 10


@pytest.mark.parametrize(("field", "value", "path"), [
    ("veilId", "v" * 129, "veilId"),
    ("memberId", "m" * 129, "memberId"),
    ("memberHash", "h" * 129, "memberHash"),
    ("name", "n" * 257, "name"),
    ("language", "l" * 257, "language"),
    ("profile", {"k" * 129: 1}, "profile"),
    ("profile", {"bio": "b" * (MAX_VALUE + 1)}, "profile.bio"),
    ("profile", {"tags": ["t", "b" * (MAX_VALUE + 1)]}, "profile.tags"),
])
def test_limits_identifiers_labels_and_profile_values_have_lengths(field: str, value: Any, path: str) -> None:
    err = refused(boot(memberId="m", **{field: value}) if field != "memberId" else boot(memberId=value))
    assert err.code == "invalid_fields" and err.message.startswith(path), err.message


def test_limits_a_value_at_the_limit_is_accepted() -> None:
    msg = parse_inbound("sdk-events", orjson.dumps(boot(veilId="v" * 128, profile={"bio": "b" * MAX_VALUE})))
    assert msg.veilId == "v" * 128


def test_limits_chat_text_contact_and_track_properties_have_sizes() -> None:
    chat = {**ENV, "type": "chat", "veilId": "v", "chatId": "c", "medium": "web"}
    assert refused({**chat, "message": {"messageId": "m", "text": "t" * 16_385}}).message.startswith("message.text")
    assert parse_inbound("sdk-events", orjson.dumps({**chat, "message": {"messageId": "m", "text": "t" * 16_384}}))
    assert refused({**ENV, "type": "contact", "veilId": "v", "email": "e" * 255}).message.startswith("email")
    track = {**ENV, "type": "track", "veilId": "v", "name": "n", "properties": {"a": "x" * 17_000}}
    err = refused(track)
    assert err.code == "invalid_fields" and "limit is 16384" in err.message


def test_limits_an_import_cell_with_u0000_or_too_long_fails_the_row_not_the_message() -> None:
    """I15: the row fails with the reason like any bad cell; U+0000 becomes U+FFFD in the
    copy kept for the failures file (PostgreSQL cannot store it)."""
    row = {**ENV, "type": "import.row", "importId": "imp_1", "rowNumber": 2,
           "cells": {"profile.email": "a\x00@b.jp", "name": "n" * (MAX_VALUE + 1), "profile.x": "fine"}}
    msg = parse_inbound("import-rows", orjson.dumps(row))
    assert msg.cells["profile.email"] == "a\ufffd@b.jp" and msg.cells["profile.x"] == "fine"
    assert msg.rowError == (
        f"profile.email: holds U+0000, which cannot be stored; name: {MAX_VALUE + 1} characters; the limit is {MAX_VALUE}"
    )
    assert parse_inbound("import-rows", orjson.dumps({**row, "cells": {"a": "b"}})).rowError is None


# -- H1 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("given", ["é", "ｆｆ" * 32, "\u3000", "😀"])
def test_h1_a_non_ascii_member_hash_is_a_wrong_hash(given: str) -> None:
    settings = ChannelSettings("ch", member_hash_secret="s")
    with pytest.raises(Rejected) as caught:
        check_member_hash(settings, "m1", given)
    assert caught.value.code == "invalid_member_hash"
    check_member_hash(settings, "m1", member_hash("s", "m1").upper())  # the right one still passes


# -- the core ---------------------------------------------------------------------------


def test_core_an_exception_in_a_handler_is_internal_error_and_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug met by one fact: the fact is dead-lettered `internal_error` with the
    exception's type, the directory is as before, and the next fact applies."""
    d = Directory()
    core.apply(d, fact("boot", T0, veilId="v1", platform="web"), ChannelSettings(CH))
    before = snapshot(d)
    real = core.HANDLERS["boot"]

    def broken(w: core.Work) -> None:
        real(w)  # changes the user, then fails: the change must be undone
        raise KeyError("oops")

    monkeypatch.setitem(core.HANDLERS, "boot", broken)
    monkeypatch.delitem(core.PLAIN, "boot")  # the handler's undo, not the plain path's
    outcome = core.apply(d, fact("boot", T0 + 60_000, veilId="v1", platform="web", name="X"), ChannelSettings(CH))
    assert outcome.rejection is not None and outcome.rejection.code == "internal_error"
    assert outcome.rejection.reason == "KeyError: 'oops'" and not outcome.publications
    assert snapshot(d) == before
    monkeypatch.setitem(core.HANDLERS, "boot", real)
    assert core.apply(d, fact("boot", T0 + 120_000, veilId="v2", platform="web"), ChannelSettings(CH)).rejection is None


def test_core_a_bug_met_while_a_plain_path_decides_is_the_handlers_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 14 item 2: a plain path (core.PLAIN) that raises anything while deciding
    hands the fact to its handler, which meets the bug in turn: `internal_error`, and
    nothing of the fact stays; the batch goes on."""
    d = Directory()
    core.apply(d, fact("boot", T0, veilId="v1", platform="web"), ChannelSettings(CH))
    before = snapshot(d)

    def plain_bug(*_args: object) -> None:
        raise KeyError("oops")

    def broken(w: core.Work) -> None:
        raise KeyError("oops")

    monkeypatch.setitem(core.PLAIN, "boot", plain_bug)
    monkeypatch.setitem(core.HANDLERS, "boot", broken)
    outcome = core.apply(d, fact("boot", T0 + 60_000, veilId="v1", platform="web"), ChannelSettings(CH))
    assert outcome.rejection is not None and outcome.rejection.reason == "KeyError: 'oops'"
    assert snapshot(d) == before


def test_run_facts_dead_letters_an_internal_error_with_the_type_and_no_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(w: core.Work) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setitem(core.HANDLERS, "track", broken)
    monkeypatch.delitem(core.PLAIN, "track")
    topics = Topics("t.")
    f = fact("track", T0, veilId="v", name="n")
    record = Record(topics.sdk_events, 0, 7, T0, b"ch", b"{}")
    result = BatchResult()
    fx = run_facts(Directory(), [Parsed(record, fact=f)], {CH: ChannelSettings(CH)}, AppliedWindow(), topics, result,
                   outbox=True, failed_at=1)
    [(topic, key, value)] = fx.messages
    letter = orjson.loads(value or b"")
    assert topic == topics.dead_letter and key == "ch" and result.dead_letters == {"internal_error": 1}
    assert letter["error"] == {"code": "internal_error", "message": "RecursionError: maximum recursion depth exceeded"}


def test_user_too_large_a_fact_growing_a_user_past_the_limit_is_refused() -> None:
    """Limits: a user's data is bounded (so user-changed fits the broker); the fact that
    would pass the limit is refused whole, what came before stays."""
    d = Directory()
    settings = ChannelSettings(CH)
    n = 0
    while True:
        n += 1
        big = {f"k{n}_{i}": "x" * 4000 for i in range(10)}
        outcome = core.apply(d, fact("boot", T0 + n, veilId="v", platform="web", memberId="m", profile=big), settings)
        if outcome.rejection is not None:
            break
        assert n < 10
    assert outcome.rejection.code == "user_too_large"
    [user] = [u for u in d.users() if u.alive]
    assert user_chars(user) <= MAX_USER_CHARS and f"profile.k{n}_0" not in user.fields
    # A fact that does not grow it is still applied.
    assert core.apply(d, fact("boot", T0 + 99, veilId="v", platform="web", memberId="m"), settings).rejection is None


# -- dead letters and isolation ---------------------------------------------------------


def test_dead_letter_text_escapes_what_postgresql_cannot_store() -> None:
    assert storable_text(b"ch_1") == "ch_1"
    assert storable_text("é".encode()) == "é"
    assert storable_text(b"ch\x00\xfe") == "ch\\x00\\xfe"


def _records(n: int) -> list[Record]:
    return [Record("t", 0, i, T0 + i, b"k", b"{}") for i in range(n)]


def test_isolation_halves_a_failing_batch_down_to_the_record_at_fault() -> None:
    """decisions, "Hostile input": the rest of the batch is applied in order, the bad
    record dead-lettered with its code, in O(log n) attempts per bad record."""
    applied: list[int] = []
    attempts: list[int] = []
    letters: list[tuple[int, str, str]] = []

    async def attempt(records: list[Record]) -> BatchResult:
        attempts.append(len(records))
        offsets = [r.offset for r in records]
        if 5 in offsets:
            raise asyncpg.DataError("invalid byte sequence for encoding \"UTF8\": 0x00")
        if 9 in offsets:
            raise ConflictPersisted("still conflicting")
        applied.extend(offsets)
        return BatchResult(applied=len(records), next_offsets={("t", 0): offsets[-1] + 1})

    async def dead_letter(r: Record, code: str, reason: str) -> BatchResult:
        letters.append((r.offset, code, reason))
        return BatchResult(next_offsets={("t", 0): r.offset + 1}, dead_letters=Counter({code: 1}))

    result = asyncio.run(apply_isolating(attempt, _records(16), dead_letter, passthrough=(OSError,)))
    assert applied == [i for i in range(16) if i not in (5, 9)]
    assert [(o, c) for o, c, _ in letters] == [(5, "unstorable"), (9, "conflict")]
    assert result.applied == 14 and result.next_offsets == {("t", 0): 16}
    assert len(attempts) <= 2 * 2 * 4 + 1


def test_isolation_lets_an_outage_through() -> None:
    async def attempt(records: list[Record]) -> BatchResult:
        raise ConnectionRefusedError("down")

    async def dead_letter(r: Record, code: str, reason: str) -> BatchResult:
        raise AssertionError("an outage is never the record's fault")

    with pytest.raises(ConnectionRefusedError):
        asyncio.run(apply_isolating(attempt, _records(4), dead_letter, passthrough=(OSError,)))


def test_fault_codes_name_the_exception_never_a_trace() -> None:
    assert fault(asyncpg.ProgramLimitExceededError("index row size 3000 exceeds maximum 2704\nDETAIL: x")) == (
        "unstorable", "ProgramLimitExceededError: index row size 3000 exceeds maximum 2704",
    )
    assert fault(ZeroDivisionError("division by zero"))[0] == "internal_error"
    assert fault(ConflictPersisted("x"))[0] == "conflict"
    assert fault(RuntimeError())[1] == "RuntimeError"


def test_fact_helper_is_unchanged() -> None:  # guards the shared helper this file leans on
    assert isinstance(fact("boot", T0, veilId="v", platform="web"), Fact)


def test_dead_letter_of_a_huge_record_fits_the_broker() -> None:
    """A record far over the door's limit (the broker allows up to 1 MiB, a junk byte
    escapes to four characters) still makes a letter well under the broker's limit."""
    topics = Topics("t.")
    record = Record(topics.sdk_events, 0, 1, T0, b"\xff" * 5000, b"\xfe" * 900_000)
    fx = run_facts(Directory(), [Parsed(record, error=("too_large", "the message is 900000 bytes"))], {}, AppliedWindow(),
                   topics, BatchResult(), outbox=True, failed_at=1)
    [(_, key, value)] = fx.messages
    letter = orjson.loads(value or b"")
    assert key == letter["key"] == "\\xff" * 1024 and letter["value"] == "\\xfe" * MAX_MESSAGE_BYTES
    assert len(value or b"") < 512 * 1024


def test_isolation_never_blames_a_record_for_the_server_s_trouble() -> None:
    """A full disk or a failover to a read-only standby is waited out like an outage:
    dead-lettering every record meanwhile would lose the stream."""
    from services.projection.isolation import NOT_THE_RECORD

    for err in (asyncpg.DiskFullError("disk full"), asyncpg.ReadOnlySQLTransactionError("read-only"),
                asyncpg.InsufficientPrivilegeError("denied"), asyncpg.UndefinedTableError("gone")):
        assert isinstance(err, NOT_THE_RECORD)
    for err in (asyncpg.DataError("x"), asyncpg.CheckViolationError("x"), ValueError("x")):
        assert not isinstance(err, NOT_THE_RECORD)
