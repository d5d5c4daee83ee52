"""Issue 11: no record can stop, stall or trick the service (docs/decisions.md, "Hostile
input"; the limits and dead-letter codes: docs/contract.md, "Limits").

Each test publishes the hostile records of one row of the issue's table through the
real broker to the real service and PostgreSQL, then a sentinel boot: it passes only
when the service is still running, the hostile record is dead-lettered with the
expected code and a reason, and the sentinel (sent after it, same partition) is applied.
On the main before this work each of them stopped the process.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from contracts.topics import Topics
from services.platform.config import Settings
from services.projection import consumer
from services.replay import rebuild
from services.store.queries import find_user
from tests.integration.test_replay import cli, replay
from tests.support.imports import unifier, write_csv
from tests.support.infra import wait_for
from tests.support.service import Publisher, read_topic, running_service

pytestmark = pytest.mark.integration

CH = "ch_hostile"
T0 = 1_767_225_600_000


def fact(n: int, type_: str, **fields: Any) -> dict[str, Any]:
    return {"eventId": f"e-{type_}-{n}", "type": type_, "channelId": CH, "occurredAt": T0 + n * 1000, **fields}


def sentinel(n: int = 999) -> dict[str, Any]:
    return fact(n, "boot", veilId=f"sentinel-{n}", platform="web")


async def letters(settings: Settings) -> list[dict[str, Any]]:
    return [v for _, v in await read_topic(settings, Topics(settings.topic_prefix).dead_letter) if v is not None]


async def survive(
    settings: Settings, pool: asyncpg.Pool, hostile: list[dict[str, Any] | bytes], *,
    topic: str = "sdk_events", key: bytes | None = None, letters_expected: int | None = None,
) -> list[dict[str, Any]]:
    """Publish `hostile` then a sentinel boot; the service must apply the sentinel, keep
    running and dead-letter the hostile records. Returns the dead letters."""
    expected = len(hostile) if letters_expected is None else letters_expected
    async with running_service(settings) as service, Publisher(settings) as pub:
        target = getattr(pub.topics, topic)
        if key is None:
            await pub.send(target, hostile, key=CH)
        else:  # the raw producer: a key the Publisher would not send
            await asyncio.gather(*[await pub.producer.send(target, h if isinstance(h, bytes) else orjson.dumps(h), key=key)
                                   for h in hostile])
        await pub.sdk(sentinel())
        await wait_for(lambda: find_user(pool, CH, "veil", "sentinel-999"), timeout=60,
                       message="the sentinel sent after the hostile records applied")
        await wait_for(lambda: _outbox_empty(pool), message="every dead letter relayed")
        found = await wait_for(lambda: _at_least(settings, expected), timeout=30, message=f"{expected} dead letters") \
            if expected else await letters(settings)
        assert not service.done(), "the service stopped"
    return found


async def _at_least(settings: Settings, n: int) -> list[dict[str, Any]] | None:
    found = await letters(settings)
    return found if len(found) >= n else None


def codes(found: list[dict[str, Any]]) -> list[str]:
    return sorted(letter["error"]["code"] for letter in found)


async def test_h1_member_hash_with_non_ascii_text_is_a_wrong_hash_not_a_crash(settings: Settings, pool: asyncpg.Pool) -> None:
    """H1: `memberHash: "é"` on a channel with a secret made hmac.compare_digest raise
    TypeError and the process exit; it is a wrong hash like any other."""
    await pool.execute("INSERT INTO channels (channel_id, member_hash_secret) VALUES ($1, 's3cret')", CH)
    found = await survive(settings, pool, [
        fact(1, "boot", veilId="v1", platform="web", memberId="m1", memberHash="é"),
        fact(2, "login", veilId="v2", memberId="m2", memberHash="ｆｆ" * 32),
    ])
    assert codes(found) == ["invalid_member_hash", "invalid_member_hash"]
    assert await find_user(pool, CH, "member", "m1") is None


async def test_u0000_in_identifiers_contacts_chat_text_and_properties_is_refused_as_bad_text(
    settings: Settings, pool: asyncpg.Pool,
) -> None:
    """Limits: U+0000 (which PostgreSQL's text and jsonb cannot store) in a veilId, an
    e-mail, chat text, a track property key or value is refused at the door (`bad_text`,
    naming the field); before, PostgreSQL refused the batch and the process exited."""
    found = await survive(settings, pool, [
        fact(1, "boot", veilId="v\x00eil", platform="web"),
        fact(2, "contact", veilId="v2", email="taro\x00@example.jp"),
        fact(3, "chat", veilId="v3", chatId="c3", medium="web", message={"messageId": "m", "text": "hi\x00"}),
        fact(4, "track", veilId="v4", name="view", properties={"k\x00": 1}),
        fact(5, "track", veilId="v5", name="view", properties={"k": ["ok", {"deep": "x\x00"}]}),
    ])
    assert codes(found) == ["bad_text"] * 5
    reasons = sorted(letter["error"]["message"] for letter in found)
    assert any(r.startswith("veilId:") for r in reasons) and any(r.startswith("email:") for r in reasons)
    assert any(r.startswith("message.text:") for r in reasons)
    assert any(r.startswith('properties.k[1].deep:') for r in reasons), reasons
    for n in (2, 3, 4, 5):
        assert await find_user(pool, CH, "veil", f"v{n}") is None  # refused whole: nothing of it applied


async def test_u0000_in_a_command_is_refused_as_bad_text(settings: Settings, pool: asyncpg.Pool) -> None:
    """Limits: commands pass the same door as SDK events."""
    found = await survive(settings, pool, [
        fact(1, "member.upsert", memberId="m\x001", actor="api", profile={}),
        fact(2, "member.upsert", memberId="m2", actor="api", profile={"nick": "a\x00b"}),
    ], topic="commands")
    assert codes(found) == ["bad_text", "bad_text"]


async def test_track_properties_nested_600_deep_are_refused_as_too_deep(settings: Settings, pool: asyncpg.Pool) -> None:
    """Limits: a 4 KB message nesting track.properties ~600 deep made the JSON encoder
    recurse past its limit and the process exit; nesting is bounded at the door."""
    raw = (
        b'{"eventId":"deep","type":"track","channelId":"' + CH.encode() + b'","occurredAt":' + str(T0).encode()
        + b',"veilId":"v","name":"n","properties":' + b'{"a":' * 600 + b"1" + b"}" * 600 + b"}"
    )
    assert len(raw) < 5000
    [letter] = await survive(settings, pool, [raw])
    assert letter["error"]["code"] == "too_deep" and "nested deeper than 10 levels" in letter["error"]["message"]


async def test_oversized_messages_and_identifiers_are_refused_at_the_door(settings: Settings, pool: asyncpg.Pool) -> None:
    """Limits: a message over 64 KiB (`too_large`), a veilId over 128 characters and a
    profile value over 4,096 characters (`invalid_fields`) never reach the store."""
    found = await survive(settings, pool, [
        fact(1, "boot", veilId="v1", platform="web", name="x" * 70_000),
        fact(2, "boot", veilId="v" * 129, platform="web"),
        fact(3, "boot", veilId="v3", platform="web", memberId="m3", profile={"bio": "b" * 4097}),
    ])
    assert codes(found) == ["invalid_fields", "invalid_fields", "too_large"]


async def test_undecodable_record_with_u0000_in_its_key_is_dead_lettered_with_the_key_escaped(
    settings: Settings, pool: asyncpg.Pool,
) -> None:
    """An undecodable record whose Kafka key holds U+0000 and bytes that are not UTF-8:
    its dead letter could not be stored (text column) and the process exited. The key
    and value are kept with those bytes escaped as `\\xNN` (docs/contract.md)."""
    [letter] = await survive(settings, pool, [b"\xff\x00{oops"], key=b"ch\x00\xfe")
    assert letter["error"]["code"] == "bad_json"
    assert letter["key"] == "ch\\x00\\xfe"
    assert letter["value"] == "\\xff\\x00{oops"


async def test_a_fact_that_breaks_a_rule_inside_the_core_never_stops_the_service(
    settings: Settings, pool: asyncpg.Pool,
) -> None:
    """U1 + U6 (issue 11's table): lead L pending into member M (U5); L logs in as another
    member; M logs in. `MergeRefused` escaped the core and the process exited. Whatever
    the rule decides, the service goes on: the login is applied or dead-lettered, never
    a crash (an exception in the core becomes `internal_error`)."""
    async with running_service(settings) as service, Publisher(settings) as pub:
        await pub.sdk(
            fact(1, "boot", veilId="vl", platform="web"),
            fact(2, "contact", veilId="vl", email="lead@example.jp"),
        )
        await pub.command(fact(3, "member.upsert", memberId="M", actor="api", profile={"email": "lead@example.jp"}))
        lead = await wait_for(lambda: find_user(pool, CH, "veil", "vl"), message="the lead")
        member = await wait_for(lambda: find_user(pool, CH, "member", "M"), message="the member")
        await pub.command(fact(4, "unification.approve", sourceUserId=lead["id"], targetUserId=member["id"], actor="staff"))
        await wait_for(lambda: _pending(pool, lead["id"]), message="the lead pending into M")
        await pub.sdk(
            fact(5, "login", veilId="vl", memberId="OTHER"),
            fact(6, "login", veilId="vm", memberId="M"),
            sentinel(),
        )
        await wait_for(lambda: find_user(pool, CH, "veil", "sentinel-999"), timeout=60, message="the sentinel applied")
        assert not service.done(), "the service stopped"
    found = await letters(settings)
    assert set(codes(found)) <= {"internal_error"}
    for letter in found:  # the type of the exception, never a stack trace
        assert "Traceback" not in letter["error"]["message"] and "\n" not in letter["error"]["message"]


async def _pending(pool: asyncpg.Pool, user_id: str) -> bool:
    row = await pool.fetchval("SELECT state::json->>'pending_into' FROM users WHERE id = $1", user_id)
    return row is not None


async def test_a_record_the_store_refuses_is_isolated_and_dead_lettered_as_unstorable(
    settings: Settings, pool: asyncpg.Pool,
) -> None:
    """The principle (decisions, "Hostile input"): a failure while storing a batch is a
    record's fault unless it is an outage. Here PostgreSQL refuses one record's data (a
    constraint this test adds, standing for any refusal the door cannot foresee): the
    batch is halved down to that record, which is dead-lettered `unstorable`; the
    records around it in the same batch are applied; replay dead-letters it too and
    rebuilds the same state."""
    await pool.execute(
        "ALTER TABLE activities ADD CONSTRAINT test_refuses_poison CHECK (body::text NOT LIKE '%poison%')"
    )
    batch = [fact(n, "track", veilId=f"t{n}", name="poison" if n == 4 else "view") for n in range(1, 8)]
    [letter] = await survive(settings, pool, batch, letters_expected=1)
    assert letter["error"]["code"] == "unstorable" and "CheckViolationError" in letter["error"]["message"]
    assert orjson.loads(letter["value"])["eventId"] == "e-track-4"
    assert await pool.fetchval("SELECT count(*) FROM activities") == 6
    assert await pool.fetchval("SELECT count(*) FROM applied_events") == 7  # six tracks and the sentinel
    assert await find_user(pool, CH, "veil", "t4") is None and await find_user(pool, CH, "veil", "t5") is not None


async def test_a_conflict_that_never_clears_is_dead_lettered_as_conflict(
    settings: Settings, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """G3 conflicts are retried with fresh state; one that never clears (here a trigger
    refuses one veil's identity as taken, as a racing instance would) used to end the
    process after 20 attempts. It now ends as a `conflict` dead letter after the bounded
    retries, and the rest of the batch is applied."""
    monkeypatch.setattr(consumer, "_CONFLICT_RETRIES", 3)  # fewer attempts: the test stays fast
    await pool.execute(
        """CREATE FUNCTION test_taken() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
             IF NEW.value = 'cursed' THEN RAISE unique_violation USING MESSAGE = 'taken'; END IF;
             RETURN NEW;
           END $$"""
    )
    await pool.execute("CREATE TRIGGER test_taken BEFORE INSERT ON identities FOR EACH ROW EXECUTE FUNCTION test_taken()")
    found = await survive(settings, pool, [
        fact(1, "boot", veilId="fine-1", platform="web"),
        fact(2, "boot", veilId="cursed", platform="web"),
        fact(3, "boot", veilId="fine-3", platform="web"),
    ], letters_expected=1)
    assert codes(found) == ["conflict"]
    assert await find_user(pool, CH, "veil", "fine-3") is not None and await find_user(pool, CH, "veil", "cursed") is None


async def test_a_rebuild_dead_letters_what_live_dead_lettered_and_rebuilds_the_same_state(
    settings: Settings, pool: asyncpg.Pool,
) -> None:
    """Replay equals live with hostile records in the log: `unifier replay` used to die
    on the record that stopped the live service; now both refuse the same records and
    the rebuilt state has the live digest."""
    await pool.execute("INSERT INTO channels (channel_id, member_hash_secret) VALUES ($1, 's3cret')", CH)
    deep = {"a": 1}
    for _ in range(40):
        deep = {"a": deep}
    hostile: list[dict[str, Any] | bytes] = [
        fact(1, "boot", veilId="v1", platform="web", memberId="m1", memberHash="é"),
        fact(2, "boot", veilId="v\x00", platform="web"),
        fact(3, "track", veilId="v3", name="n", properties=deep),
        b"\xff{",
        fact(4, "contact", veilId="v4", email="ok@example.jp"),
        fact(5, "track", veilId="v4", name="fine", properties={"a": [1, {"b": None}]}),
    ]
    await survive(settings, pool, hostile, letters_expected=4)
    live = await pool.fetchval("SELECT count(*) FROM applied_events")
    code, out, _ = await cli(settings, "digest")
    assert code == 0
    result = await replay(settings, "--rebuild", "--drop-archive")  # no archive schema left behind
    assert result == {"events": len(hostile) + 1, "digest": orjson.loads(out)["digest"]}
    assert await pool.fetchval("SELECT count(*) FROM applied_events") == live


async def test_i15_an_import_cell_holding_u0000_fails_its_row_with_the_reason(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path,
) -> None:
    """Limits, import rows: `unifier import` refuses a file with NUL bytes (exit 2); an
    import row holding U+0000 that reaches the topic anyway (another producer) fails its
    row like any bad cell (I15): the failures name the column and show U+FFFD, the other
    rows are applied, the service goes on. Before, the memberId reached the identities
    table and PostgreSQL stopped the process."""
    nul = write_csv(tmp_path / "nul.csv", "memberId,name,unsubscribeEmail,unsubscribeTexting\nm-\x001,A,false,false\n")
    refused = await unifier(settings, "import", str(nul), "--channel", CH, "--mode", "member")
    assert refused.code == 2 and "NUL" in refused.err

    imp = "imp_hostile"
    columns = [{"column": c, "key": c, "type": None} for c in ("memberId", "name", "unsubscribeEmail", "unsubscribeTexting")]

    def row(n: int, member: str, name: str) -> dict[str, Any]:
        return fact(n, "import.row", importId=imp, rowNumber=n,
                    cells={"memberId": member, "name": name, "unsubscribeEmail": "false", "unsubscribeTexting": "false"})

    now = int(time.time() * 1000)  # the failures are kept 30 days after the import (I15)
    messages = [
        fact(1, "import.started", importId=imp, mode="member", key="memberId", blank="keep", tag=None,
             actor="staff", fileName="x.csv", columns=columns),
        row(2, "m-\x001", "A"), row(3, "m-2", "B\x00"), row(4, "m-3", "C"),
        fact(5, "import.finished", importId=imp, rows=3),
    ]
    found = await survive(settings, pool, [{**m, "occurredAt": now + i} for i, m in enumerate(messages)],
                          topic="import_rows", letters_expected=0)
    assert found == []
    assert await find_user(pool, CH, "member", "m-3") is not None
    failures = await unifier(settings, "import", "failures", CH, imp)
    assert failures.code == 0, failures.err
    rows = list(csv.DictReader(io.StringIO(failures.out)))
    assert [(f["rowNumber"], f["memberId"], f["name"]) for f in rows] == [("2", "m-\ufffd1", "A"), ("3", "m-2", "B\ufffd")]
    assert all("holds U+0000, which cannot be stored" in f["errorReason"] for f in rows)


async def _outbox_empty(pool: asyncpg.Pool) -> bool:
    return not await pool.fetchval("SELECT count(*) FROM outbox")


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_rebuild_isolates_a_record_the_store_refuses_as_live_does(
    settings: Settings, pool: asyncpg.Pool, workers: int,
) -> None:
    """Replay equals live for records only the store refuses: the resident rebuild (one
    process or sharded workers) writes in bulk and cannot tell the record apart, so it
    starts again batch by batch and isolates it as the live service does (one dead
    letter, the rest applied)."""
    await pool.execute(
        "ALTER TABLE activities ADD CONSTRAINT test_refuses_poison CHECK (body::text NOT LIKE '%poison%')"
    )
    async with Publisher(settings) as pub:
        await pub.sdk(*(fact(n, "track", veilId=f"t{n}", name="poison" if n == 3 else "view") for n in range(1, 7)))
    assert settings.kafka_bootstrap is not None
    tally = rebuild.Tally(out=None)
    await rebuild.build(pool, settings.kafka_bootstrap, Topics(settings.topic_prefix), batch=100, quiet_s=0.3, tally=tally,
                        workers=workers, database_url=settings.database_url, schema=settings.db_schema)
    assert (tally.events, tally.applied, tally.dead_letters) == (6, 5, 1)
    assert await pool.fetchval("SELECT count(*) FROM activities") == 5
    assert await find_user(pool, CH, "veil", "t3") is None and await find_user(pool, CH, "veil", "t4") is not None


async def test_a_fact_that_would_grow_a_user_past_the_limit_is_dead_lettered_user_too_large(
    settings: Settings, pool: asyncpg.Pool,
) -> None:
    """Limits: every message is small, but a user gathers without end. The fact that
    would take a member past 131,072 characters of data is refused (`user_too_large`),
    the member keeps what it had, and every `user-changed` stays far under the broker's
    1 MiB message limit."""
    upserts = [
        fact(n, "member.upsert", memberId="big", actor="api", profile={f"k{n}_{i}": "x" * 4000 for i in range(10)})
        for n in range(1, 5)
    ]
    upserts.append(fact(5, "member.upsert", memberId="big", actor="api", profile={"small": "y"}))
    found = await survive(settings, pool, upserts, topic="commands", letters_expected=1)
    assert [(orjson.loads(f["value"])["eventId"], f["error"]["code"]) for f in found] == [("e-member.upsert-4", "user_too_large")]
    member = await find_user(pool, CH, "member", "big")
    assert member is not None and "k3_9" in member["profile"] and "k4_0" not in member["profile"]
    assert member["profile"]["small"] == "y"  # a fact that fits still applies
    changes = await read_topic(settings, Topics(settings.topic_prefix).user_changed)
    sizes = [len(orjson.dumps(v)) for _, v in changes if v is not None]
    assert sizes and max(sizes) < 1024 * 1024 // 2
