"""Garbage-collector settings for the processes that apply facts (`unifier run`,
`unifier replay` and its workers), and for the API's (`unifier api`: in-process reads
spent 5 % of their CPU collecting, docs/decisions.md "HTTP API: reads measured").

CPython's cyclic collector runs a young collection every 700 container allocations and
an older one every ten of those; every batch allocates hundreds of thousands (records,
parsed models, user copies, rows) and keeps many alive until the batch commits, so they
get walked again and again. Measured in process on the projection's batch path (60,000
mixed facts, `apply_batch` against PostgreSQL): the default thresholds spent 2.45 s of
10.1 s CPU collecting (24 %), 2,399 collections; with the thresholds below 0.71 s, 60
collections, and 146 instead of 169 µs of CPU per fact. What a batch builds is nearly
free of reference cycles (reference counting frees it), so collecting less often costs
little memory. Objects alive at start-up (imported modules, their tables) are frozen:
they live as long as the process and need never be walked.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

THRESHOLDS = (20_000, 10, 10)


def tune() -> None:
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


_pauses = 0


@contextmanager
def paused() -> Iterator[None]:
    """No cyclic collection while a batch is applied (services/projection/batch.py), or
    while a rebuild builds its resident users (services/replay/rebuild.py).

    A batch keeps nearly everything it allocates alive until it commits (records,
    decoded messages, the users it creates, rows to write), so each young collection
    during it walks tens of thousands of live objects for nothing; an import, which
    creates a resident user per row, paid ~13 µs a row for it (docs/decisions.md,
    "Imports: one row mark, the collector paused"). Paused, what dies with the batch is
    freed by reference counting and never walked; what survives is walked by the next
    collection after it. Cyclic garbage made meanwhile (by any task of the process)
    waits one batch. Nested or overlapping batches keep it paused until the last ends;
    a collector someone else disabled stays disabled."""
    global _pauses
    if _pauses == 0 and not gc.isenabled():
        yield
        return
    _pauses += 1
    gc.disable()
    try:
        yield
    finally:
        _pauses -= 1
        if _pauses == 0:
            gc.enable()


# How many committed batches the survivors are frozen for before they are handed back to
# the collector (settle): the cyclic garbage among them waits at most this long.
THAW_EVERY = 1_000
_settled = 0


def settle() -> None:
    """After a batch committed: what is alive now (the resident users, the batch in
    flight) is moved out of the collector's generations (`gc.freeze`, O(1)), so the next
    collections walk only what is allocated after it. Without it, the survivors of each
    batch were walked again by every older collection: in a paced live run (5,000/s)
    the service spent ~4 % of its time collecting, with single young collections of
    50-190 ms, each a pause every fact in flight waited out. What is frozen and dies by
    reference counting is freed as usual; only cycles among it would wait, so every
    THAW_EVERY batches everything is handed back (`gc.unfreeze`) and walked by one full
    collection: the pause today's older collections took several times a minute, taken
    once every THAW_EVERY batches."""
    global _settled
    _settled += 1
    if _settled >= THAW_EVERY:
        _settled = 0
        gc.unfreeze()
        gc.collect()
    gc.freeze()
