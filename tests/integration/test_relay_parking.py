"""Issue 11 item 1: the relay parks a message the broker refuses and goes on with the rest
(kept in `outbox_parked`, counted, listed and retried with `unifier outbox parked`).

tansu, the embedded broker, accepts records of any size (measured: 120 MB), so the
through-the-broker test sets the relay's limit (UNIFIER_MAX_MESSAGE_BYTES) small, as an
operator sets it to a managed broker's `message.max.bytes`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka.errors import MessageSizeTooLargeError
from prometheus_client import REGISTRY

from contracts.topics import Topics
from services.platform.config import Settings
from services.relay.relay import Relay
from tests.integration.test_replay import cli
from tests.support.infra import wait_for
from tests.support.service import Publisher, read_topic, running_service

pytestmark = pytest.mark.integration

CH = "ch_park"
T0 = 1_767_225_600_000
LIMIT = 2048


def member_boot(n: int, bio: str = "") -> dict[str, Any]:
    event: dict[str, Any] = {
        "eventId": f"boot-{n}", "type": "boot", "channelId": CH, "occurredAt": T0 + n * 60_000,
        "veilId": f"veil-{n}", "platform": "web", "memberId": f"mem-{n}",
    }
    if bio:
        event["profile"] = {"bio": bio}
    return event


def _parked_total(topic: str) -> float:
    return REGISTRY.get_sample_value("unifier_outbox_parked_total", {"topic": topic, "code": "message_too_large"}) or 0.0


async def _published(settings: Settings, topic: str) -> list[tuple[str | None, Any]]:
    return [(k, v) for k, v in await read_topic(settings, topic) if v is not None]


async def test_messages_larger_than_the_limit_are_parked_and_the_rest_goes_on(settings: Settings, pool: asyncpg.Pool) -> None:
    """A user-changed and a dead letter too large for the broker no longer stop the relay:
    both are parked, the member booted after them is published, the CLI lists them and a
    retry publishes them once the limit allows."""
    small = settings.replace(max_message_bytes=LIMIT)
    topics = Topics(settings.topic_prefix)
    before = (_parked_total(topics.user_changed), _parked_total(topics.dead_letter))
    async with running_service(small), Publisher(small) as pub:
        await pub.sdk(member_boot(1, bio="b" * 3000))  # its user-changed is > 2 KB
        await pub.send(pub.topics.sdk_events, [b"{" + b"x" * 3000], key=CH)  # its dead letter too
        await pub.sdk(member_boot(2))  # small: published although the two before are stuck

        async def member_2_published() -> bool:
            return any(v["user"] and v["user"]["memberId"] == "mem-2" for _, v in await _published(small, topics.user_changed))

        await wait_for(member_2_published, message="the member after the refused messages published")
        await wait_for(lambda: _count(pool, 2), message="two messages parked")
        assert (_parked_total(topics.user_changed), _parked_total(topics.dead_letter)) == (before[0] + 1, before[1] + 1)
        assert await pool.fetchval("SELECT count(*) FROM outbox") == 0  # nothing stuck behind them

        code, out, err = await cli(small, "outbox", "parked", "list")
        assert code == 0, err
        listed = [orjson.loads(line) for line in out.splitlines()]
        assert sorted(p["topic"] for p in listed) == sorted([topics.user_changed, topics.dead_letter])
        assert all(p["code"] == "message_too_large" and p["bytes"] > LIMIT and "value" not in p for p in listed)
        assert all(str(LIMIT) in p["reason"] for p in listed)

        # Retried while the limit is still too small: parked again, under a new id.
        code, out, err = await cli(small, "outbox", "parked", "retry")
        assert code == 0 and orjson.loads(out) == {"retried": 2}, err
        await wait_for(lambda: _parked_ids_above(pool, max(p["id"] for p in listed), 2), message="parked again")

    # The operator raises the limit to the broker's and retries: both are published.
    async with running_service(settings):
        code, out, err = await cli(settings, "outbox", "parked", "retry")
        assert code == 0 and orjson.loads(out) == {"retried": 2}, err

        async def member_1_published() -> bool:
            return any(v["user"] and v["user"]["memberId"] == "mem-1" for _, v in await _published(settings, topics.user_changed))

        await wait_for(member_1_published, message="the parked user-changed published on retry")
        letters = await _published(settings, topics.dead_letter)
        assert [v["error"]["code"] for _, v in letters] == ["bad_json"]
    assert await pool.fetchval("SELECT count(*) FROM outbox_parked") == 0


async def _count(pool: asyncpg.Pool, n: int) -> bool:
    return bool(await pool.fetchval("SELECT count(*) FROM outbox_parked") == n)


async def _parked_ids_above(pool: asyncpg.Pool, old: int, n: int) -> bool:
    return bool(await pool.fetchval("SELECT count(*) FROM outbox_parked WHERE id > $1", old) == n)


class _Batch:
    """A record batch, appended to as the relay does: through its builder
    (`_builder.append(offset, timestamp, key, value, headers)`, aiokafka's C builder) or
    `append` (one message alone)."""

    def __init__(self) -> None:
        self.values: list[bytes] = []
        self._builder = self

    def append(self, *args: Any, **kwargs: Any) -> object:
        self.values.append(kwargs["value"] if kwargs else args[3])
        return object()


class _RefusingBroker:
    """A producer whose broker refuses (MessageSizeTooLargeError) every batch holding a
    record that contains b"POISON", as Kafka does when one record of a batch exceeds its
    limit. Simulated: tansu refuses nothing."""

    def __init__(self) -> None:
        self.published: list[bytes] = []

    def create_batch(self) -> _Batch:
        return _Batch()

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if any(b"POISON" in v for v in batch.values):
            future.set_exception(MessageSizeTooLargeError())
        else:
            self.published.extend(batch.values)
            future.set_result(None)
        return future


async def test_a_batch_the_broker_refuses_is_resent_record_by_record_and_only_the_culprit_parked(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 11 item 1: a broker error about a record (not an outage) parks that record
    alone; the other records of its batch are published. The log line names the fact's
    ids, never the message."""
    poison = orjson.dumps({"eventId": "uc-3", "causationId": "ev-3", "channelId": CH, "user": {"name": "POISON"}})
    await pool.executemany(
        "INSERT INTO outbox (topic, key, value) VALUES ($1, $2, $3)",
        [("t.user-changed", f"{CH}:u{i}", poison if i == 3 else f"ok-{i}".encode()) for i in range(6)],
    )
    relay = Relay(pool, "unused:9092", "test-relay")
    broker = _RefusingBroker()
    relay.producer = broker  # type: ignore[assignment]

    async with pool.acquire() as conn:
        assert await relay.publish_once(conn) == 6

    assert sorted(broker.published) == sorted(f"ok-{i}".encode() for i in range(6) if i != 3)
    parked = await pool.fetch("SELECT key, code, reason FROM outbox_parked")
    assert [(r["key"], r["code"]) for r in parked] == [(f"{CH}:u3", "message_size_too_large")]
    assert "MessageSizeTooLargeError" in parked[0]["reason"]
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
    (line,) = [r for r in caplog.records if r.name == "unifier.relay" and "parked" in r.getMessage()]
    assert (line.eventId, line.causationId, line.channelId) == ("uc-3", "ev-3", CH)  # type: ignore[attr-defined]
    assert "POISON" not in line.getMessage()
