"""Apply one batch of inbound records in one PostgreSQL transaction (DESIGN: Flow 2).

Validate each record (bad → dead letter), skip what the inbox says was applied, load
every user the batch may touch in one query, run the pure core fact by fact, then
write users, identities, activities, merges, the outbox, the applied eventIds and the
partition offsets together. A crash anywhere loses nothing and applies nothing twice;
a concurrent instance is fenced by the inbox row lock and the users' revisions.
"""

from __future__ import annotations

import logging
import time

import asyncpg
import orjson

from contracts.topics import Topics
from services.domain.core import Fact
from services.domain.directory import Directory
from services.domain.user import User
from services.platform.gc_tuning import paused as gc_paused
from services.store import import_log
from services.store import lookups as lookup_store
from services.store import outcomes as command_outcomes
from services.store import repository as repo

# The facts' synchronous part (parsing, keys, the core's loop) is facts.py, compiled with
# the domain; its names are imported from here too (pipeline.py, the rebuild, tests).
from .facts import (
    BatchResult,
    Effects,
    Parsed,
    _dead_letter,
    _keys_of,  # noqa: F401  (re-exported: tests and bench read it from here)
    add_keys,
    grade_channels,
    parse_records,
    run_facts,
    storable_text,
)
from .records import Record, clocks_after, ends_after
from .resident import ResidentUsers
from .window import WINDOW_MS, AppliedWindow, event_pairs

__all__ = [
    "BatchResult", "Effects", "Parsed", "apply_batch", "dead_letter_record", "parse_records", "run_facts",
    "storable_text", "write_effects", "write_rest", "write_rest_unfinished",
]

_MAX_LOAD_ROUNDS = 3

log = logging.getLogger("unifier.projection")


async def apply_batch(
    pool: asyncpg.Pool, topics: Topics, records: list[Record], *, now_ms: int | None = None, outbox: bool = True,
    resident: ResidentUsers | None = None,
) -> BatchResult:
    """Apply `records` (canonically ordered) exactly once. Raises repo.Conflict when a
    concurrent instance got in the way; the caller retries (G3).

    `outbox=False` (a replay's rebuild, whose outbox is discarded: everything in it was
    published when it happened) writes no outbox rows: the state is the same, the
    messages are neither serialised nor stored.

    `resident`: users kept from earlier batches of this instance (resident.py); only
    what it lacks is loaded. Dropped whole if the batch does not commit."""
    try:
        with gc_paused():  # what the batch allocates lives until it commits: not worth walking
            return await _apply_batch(pool, topics, records, now_ms, outbox, resident)
    except BaseException:
        if resident is not None:
            resident.drop()  # it may hold changes that were not committed
        raise


async def _apply_batch(
    pool: asyncpg.Pool, topics: Topics, records: list[Record], now_ms: int | None, outbox: bool,
    resident: ResidentUsers | None,
) -> BatchResult:
    parsed = parse_records(topics, records)
    failed_at = now_ms if now_ms is not None else int(time.time() * 1000)  # only stamps dead letters
    async with pool.acquire() as conn, conn.transaction():
        partitions = sorted({(r.topic, r.partition) for r in records})
        stored = await repo.lock_offsets(conn, partitions)
        fresh = [p for p in parsed if p.record.offset >= stored[(p.record.topic, p.record.partition)]]
        result = BatchResult(skipped=len(parsed) - len(fresh))

        facts = [p.fact for p in fresh if p.fact is not None]
        channels = {f.channel_id for f in facts}
        # The channel fence: batches writing the same channel take turns from here on.
        tokens, own = await repo.lock_channels_held(conn, channels)
        # Every channel's clock, not only those with a remembered eventId: a fact applied
        # in this batch must not stand in for its channel's clock (window.py).
        window = AppliedWindow(*await repo.applied_window(conn, event_pairs(facts), channels))
        settings = await repo.load_channels(conn, channels)
        if resident is None:
            directory, revs = await _load(conn, facts)
        else:
            # A row this transaction inserted: the channel had none, so no users
            # (schema.sql, channel_writers): a fresh channel (resident.py).
            directory, revs = await _load_resident(conn, facts, resident, tokens, [c for c, t in tokens.items() if t == own])
        await load_grades(conn, directory, facts)
        # CSV import (I12-I17): definitions, MU budgets; written back below.
        imports = await import_log.prepare(conn, facts, settings, directory)

        effects = run_facts(directory, fresh, settings, window, topics, result, outbox=outbox, failed_at=failed_at)
        imported = _written_by_imports(facts, directory) if resident is not None and imports is not None else []
        await write_effects(conn, directory, revs, effects, window.stored)
        if outbox:  # live only: a rebuild's chats were looked up when they happened
            await lookup_store.enqueue_chats(conn, effects.activities)
        if imports is not None:
            await import_log.save(conn, imports)
        result.next_offsets = {k: max(v, stored[k]) for k, v in ends_after(records).items()}
        stamped = await repo.save_positions(
            conn, result.next_offsets, clocks_after(records), {u.channel_id for u in directory.changed.values()},
        )
    if resident is not None:
        resident.committed(stamped, forget=imported)
    return result


def _written_by_imports(facts: list[Fact], directory: Directory) -> list[str]:
    """The users this batch changed in channels it has only import facts of: written by
    an import's rows, not kept resident after the commit (ResidentUsers.forget). A
    channel with any other fact in the batch keeps its users."""
    others = {f.channel_id for f in facts if not f.type.startswith("import.")}
    return [user_id for user_id, user in directory.changed.items() if user.channel_id not in others]


async def dead_letter_record(
    pool: asyncpg.Pool, topics: Topics, record: Record, code: str, reason: str,
    *, now_ms: int | None = None, outbox: bool = True,
) -> BatchResult:
    """Dead-letter one record that cannot be applied (isolation.py) and store its offset,
    in one transaction, fenced by the inbox like a batch: consumption goes on after it."""
    failed_at = now_ms if now_ms is not None else int(time.time() * 1000)
    partition = (record.topic, record.partition)
    result = BatchResult()
    async with pool.acquire() as conn, conn.transaction():
        stored = (await repo.lock_offsets(conn, [partition]))[partition]
        if record.offset < stored:
            result.skipped = 1  # another instance got past it meanwhile
        else:
            if outbox:
                await repo.save_outbox(conn, [_dead_letter(topics, record, code, reason, failed_at)])
            result.dead_letters[code] += 1
            await _command_refused(conn, topics, record, code, reason, announce=outbox)
        result.next_offsets = {partition: max(record.offset + 1, stored)}
        await repo.save_positions(conn, result.next_offsets, clocks_after([record]))
    return result


async def _command_refused(
    conn: asyncpg.Connection, topics: Topics, record: Record, code: str, reason: str, *, announce: bool,
) -> None:
    """A command isolated and dead-lettered (`unstorable`, `conflict`, …) is refused as
    any other: its outcome is stored and its waiters told at commit, instead of waiting
    out `?wait=` as `pending`. Only a record that names its channel and eventId has a
    command status to give."""
    if record.topic != topics.commands:
        return
    try:
        body = orjson.loads(record.value or b"")
    except orjson.JSONDecodeError:
        return
    if not isinstance(body, dict):
        return
    channel_id, event_id, at = body.get("channelId"), body.get("eventId"), body.get("occurredAt")
    if not isinstance(channel_id, str) or not isinstance(event_id, str):
        return
    if not isinstance(at, int) or isinstance(at, bool) or (record.timestamp > 0 and at > record.timestamp):
        at = record.timestamp  # as _parse bounds event time by the log
    await command_outcomes.save(conn, [(channel_id, event_id, at, code, reason)])
    await command_outcomes.forget_and_announce(conn, [channel_id], [(channel_id, event_id, False)] if announce else [])


async def write_effects(
    conn: asyncpg.Connection, directory: Directory, revs: dict[str, int], fx: Effects,
    stored_applied: frozenset[tuple[str, str]] = frozenset(),
) -> None:
    """Write the changed users (fenced on `revs`), their identities where they changed,
    and the rest of `fx`. `stored_applied`: the eventIds the store remembered when the
    batch began (AppliedWindow.stored)."""
    changed = list(directory.changed.values())
    await repo.save_users(conn, changed, revs)
    await repo.save_identities(conn, directory.moved_identities(changed))
    await write_rest(conn, fx, stored_applied)


async def write_rest(conn: asyncpg.Connection, fx: Effects, stored_applied: frozenset[tuple[str, str]]) -> None:
    """`write_effects` after the users and their identities."""
    await write_rest_unfinished(conn, fx, stored_applied)
    await repo.raise_clocks(conn, fx.applied, WINDOW_MS)
    await repo.save_outbox(conn, fx.messages)


async def write_rest_unfinished(conn: asyncpg.Connection, fx: Effects, stored_applied: frozenset[tuple[str, str]]) -> None:
    """`write_rest` but its clocks and outbox, which the pipelined batch writes with its
    offsets and chats in one statement (repository.finish_batch; pipeline.py writes the
    users and identities before, from arguments built before the next batch changed the
    same users in place)."""
    await repo.save_activities(conn, fx.activities)
    await repo.save_merges(conn, fx.merges)
    await repo.erase_personal_data(conn, fx.erased)
    await repo.save_grade_changes(conn, fx.grades)
    await lookup_store.save_changes(conn, fx.lookups)
    await lookup_store.erase(conn, fx.erased)
    await repo.save_applied(conn, fx.applied, stored_applied)
    await save_command_outcomes(conn, fx)


async def save_command_outcomes(conn: asyncpg.Connection, fx: Effects, *, announce: bool = True) -> None:
    """The commands' outcomes (services/store/outcomes.py), the old ones of their
    channels forgotten, and, at commit, a NOTIFY for the API's waiters."""
    await command_outcomes.save(conn, fx.outcomes)
    decided = [(o[0], o[1], o[3] is None) for o in fx.outcomes] + [(c, e, True) for c, e in fx.repeats]
    await command_outcomes.forget_and_announce(conn, [o[0] for o in fx.outcomes], decided if announce else [])


async def load_grades(conn: asyncpg.Connection, directory: Directory, facts: list[Fact]) -> None:
    """The grade definitions of the channels whose grade commands are in `facts` (D2)."""
    defined = directory.grades.defined
    channels = {ch for ch in grade_channels(facts) if ch not in defined}
    for channel_id, grades in (await repo.load_grades(conn, channels)).items():
        directory.grades.load(channel_id, grades)


async def _load_resident(
    conn: asyncpg.Connection, facts: list[Fact], resident: ResidentUsers, tokens: dict[str, int],
    empty: list[str],
) -> tuple[Directory, dict[str, int]]:
    """`_load` over the resident users: the same rounds, asking the store only for ids
    and keys the resident state cannot answer. `empty`: channels the store holds no
    user of (their fence rows are this transaction's)."""
    resident.begin(tokens)
    resident.seen_empty(empty)
    ids: set[str] = set()
    keys: set[repo.Key] = set()
    add_keys(facts, ids, keys)
    for _ in range(_MAX_LOAD_ROUNDS):
        if not ids and not keys:
            break
        want_ids, want_keys = resident.missing(ids, keys)
        if want_ids or want_keys:
            resident.loaded(want_ids, want_keys, await repo.load_users(conn, want_ids, want_keys))
        reached = resident.reached(ids, keys)
        ids = {u.merged_into for u in reached if u.merged_into}
        keys = {(u.channel_id, "pending", u.id) for u in reached if u.type == "member"}
    return resident.directory, resident.revs


async def _load(conn: asyncpg.Connection, facts: list[Fact]) -> tuple[Directory, dict[str, int]]:
    """Load the users the facts name, then what those users lead to: the survivor of a
    merged id (U8) and the sources waiting for a loaded member's login (U5)."""
    ids: set[str] = set()
    keys: set[repo.Key] = set()
    add_keys(facts, ids, keys)
    revs: dict[str, int] = {}
    users: dict[str, User] = {}
    asked_ids: set[str] = set()
    asked_keys: set[repo.Key] = set()
    for _ in range(_MAX_LOAD_ROUNDS):
        ids -= asked_ids
        keys -= asked_keys
        if not ids and not keys:
            break
        asked_ids |= ids
        asked_keys |= keys
        # Not sorted: the store's answer is a set (one SELECT), whatever the order asked.
        for rev, user in await repo.load_users(conn, list(ids), list(keys)):
            revs[user.id] = rev
            users[user.id] = user
        ids = {u.merged_into for u in users.values() if u.merged_into and u.merged_into not in users}
        keys = {(u.channel_id, "pending", u.id) for u in users.values() if u.type == "member"}
    return Directory(users.values()), revs
