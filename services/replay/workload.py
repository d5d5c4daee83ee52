"""A deterministic synthetic stream of mixed inbound facts, and a fast way to publish it.

For the rebuild benchmark (`bench/replay_bench.py`) and the fault and replay tests: the
same `seed` gives the same facts in the same order, so two runs (or a run and a
rebuild) of one stream must end in the same digest. The mix follows what SDK backends
and staff send: anonymous visits, behaviour events, typed contacts, chats, logins of
recurring members, API upserts and profile edits, deliveries, blocks; optionally
poison (bad JSON, unknown types, ill-typed fields, wrong member hashes).

Records carry `occurredAt` as their Kafka timestamp, as a producer stamping at send
time would (within the 30-minute sessions of S1 the difference does not matter).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from contracts.topics import Topics
from services.domain.channel import member_hash
from services.domain.ids import member_user_id
from services.platform.kafka import client_options

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
_MIN = 60_000

HASHED_CHANNEL_SECRET = "s3cret"
"""Channels whose index is a multiple of 5 require member hashes with this secret (H1)."""


@dataclass(frozen=True, slots=True)
class Fact:
    kind: str  # "sdk-events" | "commands" | "import-rows"
    key: str
    value: bytes
    timestamp: int


def channel_name(i: int) -> str:
    return f"ch_{i:03d}"


def hashed_channels(channels: int) -> list[str]:
    """The channels of `mixed_facts` that must be configured with HASHED_CHANNEL_SECRET."""
    return [channel_name(i) for i in range(channels) if i % 5 == 0]


def mixed_facts(n: int, **kwargs: Any) -> list[Fact]:
    """`mixed_rounds` as one stream (rounds one after another in event time)."""
    return [fact for round_ in mixed_rounds(n, **kwargs) for fact in round_]


def mixed_rounds(
    n: int, *, rounds: int = 1, channels: int = 24, seed: int = 1, poison_every: int = 0, prefix: str = "e"
) -> list[list[Fact]]:
    """Exactly `n` facts in `rounds` rounds, spread over `channels` channels, each round
    later in event time than the one before.

    Within a round no fact depends on a fact of another topic: commands only name
    members upserted in earlier rounds, and a member named by a command is not logged
    into by the SDK in the same round. Facts of different topics are interleaved
    differently live and in a replay (each topic is read at its own pace), so a stream
    published round by round, each round applied before the next, has one outcome
    whatever the interleaving: a run and a rebuild must end in the same digest. Every
    `poison_every`-th fact is replaced by poison when > 0.
    """
    rng = random.Random(seed)
    per_round = [n // rounds + (1 if r < n % rounds else 0) for r in range(rounds)]
    known: list[list[str]] = [[] for _ in range(channels)]  # members upserted in earlier rounds
    base = T0
    visitor = 0
    out: list[list[Fact]] = []
    for size in per_round:
        facts: list[Fact] = []
        clock = [base] * channels
        fresh: list[list[str]] = [[] for _ in range(channels)]
        # Members staff and the API act on this round; the SDK leaves them alone.
        commanded = [set(rng.sample(k, min(len(k), max(1, len(k) // 4)))) if k else set() for k in known]
        while len(facts) < size:
            i = visitor % channels
            ch = channel_name(i)
            loginable = [m for m in known[i] if m not in commanded[i]]
            for kind, event in _journey(
                rng, ch, visitor, clock[i], hashed=i % 5 == 0, prefix=prefix, loginable=loginable,
                commanded=sorted(commanded[i]), fresh=fresh[i],
            ):
                clock[i] = max(clock[i], event["occurredAt"])
                facts.append(Fact(kind, ch, orjson.dumps(event), event["occurredAt"]))
            visitor += 1
        del facts[size:]
        if poison_every > 0:
            start = sum(len(f) for f in out)
            for j in range(len(facts)):
                if (start + j + 1) % poison_every == 0:
                    facts[j] = _poison(rng, facts[j], start + j, prefix)
        for i in range(channels):
            known[i].extend(fresh[i])
        base = max(clock) + 24 * 60 * _MIN
        out.append(facts)
    return out


def _journey(
    rng: random.Random, ch: str, n: int, at: int, *, hashed: bool, prefix: str,
    loginable: list[str], commanded: list[str], fresh: list[str],
) -> Iterable[tuple[str, dict[str, Any]]]:
    """One visitor's facts, minutes apart: browse, maybe leave a contact or chat, maybe
    log in as a known member; and one act of staff or the API."""
    veil = f"veil-{n}"
    ev = 0

    def e(type_: str, **fields: Any) -> dict[str, Any]:
        nonlocal ev, at
        ev += 1
        at += rng.randrange(1, 4) * _MIN
        return {"eventId": f"{prefix}-{n}-{ev}", "type": type_, "channelId": ch, "occurredAt": at, **fields}

    platform = rng.choice(("web", "web", "mobile"))
    yield "sdk-events", e(
        "boot", veilId=veil, platform=platform, language=rng.choice(("ja", "en")), country="JP",
        device={"browser": rng.choice(("chrome", "safari")), "os": rng.choice(("mac", "ios", "windows"))},
    )
    for _ in range(rng.randrange(0, 3)):
        yield "sdk-events", e("track", veilId=veil, name="page_view", properties={"path": f"/p/{rng.randrange(50)}"})
    roll = rng.random()
    if roll < 0.35:
        yield "sdk-events", e("contact", veilId=veil, email=f"v{n}@example.jp")
    elif roll < 0.5:
        yield "sdk-events", e(
            "chat", veilId=veil, chatId=f"chat-{n}", medium="email",
            message={"messageId": f"msg-{n}", "text": "hello"}, contact={"email": f"c{n}@example.jp"},
        )
    if loginable and rng.random() < 0.4:
        member = rng.choice(loginable)
        login: dict[str, Any] = {"veilId": veil, "memberId": member, "name": f"Member {member}"}
        if hashed:
            login["memberHash"] = member_hash(HASHED_CHANNEL_SECRET, member)
        yield "sdk-events", e("login", **login)
    act = rng.random()
    if act < 0.3 or not commanded:
        member = f"mem-{n}"
        fresh.append(member)
        yield "commands", e(
            "member.upsert", actor="api", memberId=member,
            profile={"email": f"{member}@members.example", "plan": rng.choice(("gold", "free"))},
        )
        return
    uid = member_user_id(ch, rng.choice(commanded))
    if act < 0.6:
        yield "commands", e("profile.update", actor="staff-1", userId=uid, profile={"mobileNumber": f"+8190{10**7 + n % (9 * 10**7):08d}"})
    elif act < 0.95:
        yield "commands", e("marketing.delivered", actor="system", userId=uid, campaignId=f"cmp-{n % 7}")
    else:
        yield "commands", e("user.block" if rng.random() < 0.7 else "user.unblock", actor="staff-1", userId=uid)


def _poison(rng: random.Random, fact: Fact, j: int, prefix: str) -> Fact:
    kind = rng.randrange(4)
    ch = fact.key
    base = {"eventId": f"{prefix}-poison-{j}", "channelId": ch, "occurredAt": fact.timestamp}
    if kind == 0:
        value = b"{not json " + str(j).encode()
    elif kind == 1:
        value = orjson.dumps({**base, "type": "teleport", "veilId": "x"})
    elif kind == 2:
        value = orjson.dumps({**base, "type": "boot", "veilId": 42, "platform": "tv"})
    else:  # a login into a hashed channel with a wrong hash: invalid_member_hash
        ch = channel_name(0)
        value = orjson.dumps(
            {**base, "channelId": ch, "type": "login", "veilId": f"pv-{j}", "memberId": "m-x", "memberHash": "00"}
        )
    return Fact("sdk-events", ch, value, fact.timestamp)


async def publish(bootstrap: str, topics: Topics, facts: Iterable[Fact], *, partitions: int | None = None) -> int:
    """Publish `facts` in order, keyed by channel, with one record batch per partition at
    a time (aiokafka's per-message `send` costs ~30 µs; batches cost a fraction)."""
    producer = AIOKafkaProducer(**client_options(bootstrap), enable_idempotence=False, acks="all", linger_ms=5)
    await producer.start()
    try:
        names = {"sdk-events": topics.sdk_events, "commands": topics.commands, "import-rows": topics.import_rows}
        counts: dict[str, int] = {}
        for name in names.values():
            found = partitions or len(await producer.partitions_for(name))
            counts[name] = found
        part_of: dict[tuple[str, str], int] = {}
        batches: dict[tuple[str, int], Any] = {}
        pending = []
        sent = 0
        for fact in facts:
            topic = names[fact.kind]
            key = fact.key.encode()
            p = part_of.get((topic, fact.key))
            if p is None:  # the default partitioner's choice, computed once per key
                p = part_of[(topic, fact.key)] = (murmur2(key) & 0x7FFFFFFF) % counts[topic]
            batch = batches.get((topic, p))
            if batch is None:
                batch = batches[(topic, p)] = producer.create_batch()
            if batch.append(key=key, value=fact.value, timestamp=fact.timestamp) is None:
                pending.append(await producer.send_batch(batch, topic, partition=p))
                batch = batches[(topic, p)] = producer.create_batch()
                batch.append(key=key, value=fact.value, timestamp=fact.timestamp)
            sent += 1
        for (topic, p), batch in batches.items():
            if batch.record_count():
                pending.append(await producer.send_batch(batch, topic, partition=p))
        for fut in pending:
            await fut
        return sent
    finally:
        await producer.stop()
