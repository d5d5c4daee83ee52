"""Issue 5: `unifier dead-letters list|retry` (docs/contract.md, "identity.dead-letter")."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
import pytest

from contracts.outbound import DeadLetter
from contracts.topics import Topics
from services.domain.channel import member_hash
from services.platform.config import Settings
from services.store.queries import find_user
from tests.integration.test_replay import applied_offsets, cli
from tests.support.infra import wait_for
from tests.support.service import Publisher, read_topic, running_service

pytestmark = pytest.mark.integration

CH = "ch_dl"
T0 = 1_767_225_600_000



def login(n: int, secret: str) -> dict[str, Any]:
    member = f"mem-{n}"
    return {
        "eventId": f"login-{n}", "type": "login", "channelId": CH, "occurredAt": T0 + n * 60_000,
        "veilId": f"veil-{n}", "memberId": member, "memberHash": member_hash(secret, member),
    }


async def letters(settings: Settings) -> list[dict[str, Any]]:
    return [v for _, v in await read_topic(settings, Topics(settings.topic_prefix).dead_letter) if v is not None]


async def listed(settings: Settings, *args: str) -> list[dict[str, Any]]:
    code, out, err = await cli(settings, "dead-letters", "list", *args)
    assert code == 0, err
    return [orjson.loads(line) for line in out.splitlines()]


async def test_list_filters_by_code_and_retry_republishes_idempotently(settings: Settings, pool: asyncpg.Pool) -> None:
    """Logins signed with a secret the channel does not have yet are dead-lettered; once
    the channel has that secret, a retry applies them; a second retry changes nothing."""
    await pool.execute("INSERT INTO channels (channel_id, member_hash_secret) VALUES ($1, 'old')", CH)
    async with running_service(settings), Publisher(settings) as pub:
        await pub.sdk(*(login(n, "new") for n in range(5)))
        await pub.send(pub.topics.sdk_events, [b"{oops", b"[1]", b"\xff\xfe"], key=CH)
        await wait_for(lambda: _count(settings, 8), message="8 dead letters")

        everything = await listed(settings)
        hashes = await listed(settings, "--code", "invalid_member_hash")
        assert len(everything) == 8 and len(hashes) == 5
        assert len(await listed(settings, "--code", "bad_json")) == 3
        assert len(await listed(settings, "--limit", "2")) == 2
        for letter in everything:
            DeadLetter.model_validate({k: v for k, v in letter.items() if k != "deadLetter"})
            assert set(letter["deadLetter"]) == {"partition", "offset"}
        assert {orjson.loads(h["value"])["eventId"] for h in hashes} == {f"login-{n}" for n in range(5)}
        assert all(h["key"] == CH and h["sourceTopic"] == pub.topics.sdk_events for h in hashes)

        code, _, err = await cli(settings, "channel", "configure", CH, "--member-hash-secret", "new")
        assert code == 0, err
        code, out, err = await cli(settings, "dead-letters", "retry", "--code", "invalid_member_hash")
        assert code == 0 and orjson.loads(out) == {"retried": 5, "alreadyRetried": 0, "skipped": 0}, err
        await wait_for(lambda: _members(pool, 5), message="the retried logins applied")
        applied = await pool.fetchval("SELECT count(*) FROM applied_events")
        reached = await applied_offsets(pool)

        code, out, err = await cli(settings, "dead-letters", "retry", "--code", "invalid_member_hash")
        assert code == 0 and orjson.loads(out) == {"retried": 0, "alreadyRetried": 5, "skipped": 0}, err

    assert await pool.fetchval("SELECT count(*) FROM applied_events") == applied  # nothing twice
    assert await applied_offsets(pool) == reached  # the second retry published nothing
    assert len(await letters(settings)) == 8  # and nothing dead-lettered again


async def test_retrying_a_record_that_stays_bad_three_times_never_doubles_the_letters(settings: Settings) -> None:
    """Issue 11: three retries of one bad record gave 8 dead letters (every run re-published
    every letter, copies included). Each letter is retried at most once: one new letter
    per attempt, 4 in all."""
    async with running_service(settings), Publisher(settings) as pub:
        await pub.send(pub.topics.sdk_events, [b"{still bad"], key=CH)
        await wait_for(lambda: _count(settings, 1), message="the first dead letter")
        for attempt in (1, 2, 3):
            code, out, err = await cli(settings, "dead-letters", "retry")
            assert code == 0 and orjson.loads(out)["retried"] == 1, (attempt, out, err)
            await wait_for(lambda n=attempt + 1: _count(settings, n), message=f"the letter of retry {attempt}")  # type: ignore[misc]

        code, out, err = await cli(settings, "dead-letters", "retry", "--code", "invalid_member_hash")
        assert code == 0 and orjson.loads(out)["retried"] == 0, err

    found = await letters(settings)
    assert len(found) == 4
    assert all(letter["value"] == "{still bad" and letter["error"]["code"] == "bad_json" for letter in found)


async def test_retry_since_takes_only_letters_that_failed_at_or_after_that_time(settings: Settings) -> None:
    """`--since` filters by the letter's failedAt (epoch ms or ISO-8601), `--code` by its code."""
    async with running_service(settings), Publisher(settings) as pub:
        await pub.send(pub.topics.sdk_events, [b"{old"], key=CH)
        await wait_for(lambda: _count(settings, 1), message="the old letter")
        mark = max(letter["failedAt"] for letter in await letters(settings)) + 1
        await _after_ms(mark)
        await pub.send(pub.topics.sdk_events, [b"{new"], key=CH)
        await wait_for(lambda: _count(settings, 2), message="the new letter")

        assert [v["value"] for v in await listed(settings, "--since", str(mark))] == ["{new"]
        code, out, err = await cli(settings, "dead-letters", "retry", "--since", str(mark), "--code", "unknown_type")
        assert code == 0 and orjson.loads(out)["retried"] == 0, err
        code, out, err = await cli(settings, "dead-letters", "retry", "--since", str(mark))
        assert code == 0 and orjson.loads(out) == {"retried": 1, "alreadyRetried": 0, "skipped": 0}, err
        await wait_for(lambda: _count(settings, 3), message="the retried letter failed again")

    assert sorted(v["value"] for v in await letters(settings)) == ["{new", "{new", "{old"]


async def _after_ms(mark: int) -> None:
    """Wait until the wall clock has passed `mark` (failedAt is stamped from it)."""
    import time

    await wait_for(lambda: time.time() * 1000 > mark, timeout=5, message="the clock passed the mark")


async def _count(settings: Settings, n: int) -> bool:
    return len(await letters(settings)) >= n


async def _members(pool: asyncpg.Pool, n: int) -> bool:
    found = [await find_user(pool, CH, "member", f"mem-{i}") for i in range(n)]
    return all(u is not None and u.get("type") == "member" for u in found)


async def test_list_on_a_prefix_without_dead_letters_prints_nothing(settings: Settings) -> None:
    code, out, err = await cli(settings, "dead-letters", "list")
    assert code == 0 and out == "", err
