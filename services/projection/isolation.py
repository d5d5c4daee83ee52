"""No record can stop the service: a batch that fails is split until the record at
fault is found, and that record is dead-lettered (docs/decisions.md, "Hostile input").

The principle: a failure while applying a record is the record's fault unless it is an
outage (the database or broker unreachable), which the caller waits out. Most bad
records never get here: the door (contracts/inbound.py) and the core (a rejected fact,
`internal_error` for an exception) dead-letter them inside a normal batch. What is left
are failures only the store sees (PostgreSQL refusing a value, an index entry too
large, a conflict that never clears). Then the batch is halved, each half applied on
its own, and so on down to the one record whose batch of one still fails: it is
dead-lettered with its offset in one transaction, and the rest of the batch is applied.

Halving gives the same state as applying the records one by one (a batch applies
exactly what its records would one after another), so the live service and a rebuild,
whose batches are cut elsewhere, dead-letter the same records.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import asyncpg
import orjson

from services.store.pool import DATABASE_UNAVAILABLE

from .batch import BatchResult
from .records import Record

log = logging.getLogger("unifier.projection")

Attempt = Callable[[list[Record]], Awaitable[BatchResult]]
DeadLetterOne = Callable[[Record, str, str], Awaitable[BatchResult]]


# PostgreSQL errors about the server's state, not the data: waited out like an outage
# (dead-lettering every record of a full disk would lose the stream). The statements
# are parameterised, so a missing table or privilege is the deployment's fault too.
SERVER_TROUBLE: tuple[type[BaseException], ...] = (
    asyncpg.InsufficientResourcesError,  # disk full, out of memory, too many connections
    asyncpg.PostgresSystemError,  # I/O errors
    asyncpg.InternalServerError,  # data or index corrupted
    asyncpg.ReadOnlySQLTransactionError,  # a failover left the pool on a standby
    asyncpg.SyntaxOrAccessError,  # privileges revoked, a table dropped
    asyncpg.ObjectNotInPrerequisiteStateError,  # a lock not available and the like
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidCatalogNameError,
)
NOT_THE_RECORD: tuple[type[BaseException], ...] = (*DATABASE_UNAVAILABLE, *SERVER_TROUBLE)
"""Failures waited out with backoff (live) or ending the command (replay), never
blamed on a record."""

RETRIED: tuple[type[BaseException], ...] = (asyncpg.TransactionRollbackError,)
"""Deadlocks and serialisation failures: retried with fresh state, as conflicts are."""


class ConflictPersisted(Exception):
    """A batch kept meeting another instance's writes (G3) after every retry."""


# What PostgreSQL or the encoders refuse because of the data itself.
_UNSTORABLE: tuple[type[BaseException], ...] = (
    asyncpg.DataError,  # invalid text, numbers out of range, bad JSON text
    asyncpg.ProgramLimitExceededError,  # e.g. an index entry larger than a page allows
    asyncpg.IntegrityConstraintViolationError,
    orjson.JSONEncodeError,
    UnicodeError,
    RecursionError,
)


def fault(err: BaseException) -> tuple[str, str]:
    """The dead-letter code and reason for a record whose batch of one failed with
    `err`: the exception's type and first line, never a stack trace."""
    text = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}".rstrip(": ")
    if isinstance(err, ConflictPersisted):
        return "conflict", text
    if isinstance(err, _UNSTORABLE):
        return "unstorable", text
    return "internal_error", text


async def apply_isolating(
    attempt: Attempt, records: list[Record], dead_letter: DeadLetterOne,
    *, passthrough: tuple[type[BaseException], ...],
) -> BatchResult:
    """`attempt(records)`, or when it fails with anything but `passthrough` (outages,
    a stop), each half on its own, down to the records at fault, which are dead-lettered."""
    try:
        return await attempt(records)
    except passthrough:
        raise
    except Exception as err:
        if len(records) == 1:
            code, reason = fault(err)
            r = records[0]
            log.error("record %s/%d@%d dead-lettered (%s): %s", r.topic, r.partition, r.offset, code, reason,
                      exc_info=err if code == "internal_error" else None)
            return await dead_letter(r, code, reason)
        log.warning("batch of %d records failed (%s: %s); applying it in halves to find the record at fault",
                    len(records), type(err).__name__, str(err)[:200])
    mid = len(records) // 2
    first = await apply_isolating(attempt, records[:mid], dead_letter, passthrough=passthrough)
    second = await apply_isolating(attempt, records[mid:], dead_letter, passthrough=passthrough)
    return combined(first, second)


def combined(a: BatchResult, b: BatchResult) -> BatchResult:
    offsets = dict(a.next_offsets)
    for k, v in b.next_offsets.items():
        offsets[k] = max(offsets.get(k, 0), v)
    return BatchResult(
        applied=a.applied + b.applied, skipped=a.skipped + b.skipped,
        dead_letters=a.dead_letters + b.dead_letters, published=a.published + b.published,
        next_offsets=offsets,
    )
