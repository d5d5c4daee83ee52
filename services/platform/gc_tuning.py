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

THRESHOLDS = (20_000, 10, 10)


def tune() -> None:
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
