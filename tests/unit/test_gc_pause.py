"""The cyclic collector is paused while a batch is applied (issue 14 item 5: an import
paid ~13 µs a row for young collections walking what its batch keeps alive until commit)."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from services.platform import gc_tuning
from services.projection import batch


@pytest.fixture(autouse=True)
def _collector_enabled() -> Any:
    was = gc.isenabled()
    gc.enable()
    yield
    if was:  # as it was before the test, whatever the test left
        gc.enable()
    else:
        gc.disable()


def test_paused_disables_the_collector_and_restores_it_after_nested_and_failed_batches() -> None:
    with gc_tuning.paused():
        assert not gc.isenabled()
        with gc_tuning.paused():  # an overlapping batch (isolation, a second projection task)
            assert not gc.isenabled()
        assert not gc.isenabled()  # still inside the outer one
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_tuning.paused():
        raise RuntimeError("the batch failed")
    assert gc.isenabled()


def test_paused_leaves_a_collector_someone_else_disabled_disabled() -> None:
    gc.disable()
    with gc_tuning.paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_apply_batch_runs_with_the_collector_paused(monkeypatch: pytest.MonkeyPatch) -> None:
    during: list[bool] = []

    async def fake(*_args: Any) -> batch.BatchResult:
        during.append(gc.isenabled())
        return batch.BatchResult()

    monkeypatch.setattr(batch, "_apply_batch", fake)
    asyncio.run(batch.apply_batch(None, None, []))  # type: ignore[arg-type]
    assert during == [False] and gc.isenabled()


class _Cycle:
    """Garbage only the cyclic collector can free: it refers to itself."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def _thawed() -> Any:
    """settle() freezes the process's objects: give them back after the test."""
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("_thawed")
def test_settle_takes_the_survivors_of_a_batch_out_of_the_collectors_walks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 14 (latency): after a committed batch what is alive is frozen, so the next
    young collections walk only what is allocated after it."""
    monkeypatch.setattr(gc_tuning, "_settled", 0)
    survivors = [[i] for i in range(1000)]  # tracked containers alive at the commit
    before = gc.get_freeze_count()
    gc_tuning.settle()
    assert gc.get_freeze_count() >= before + len(survivors)
    assert not any(o is survivors[0] for o in gc.get_objects())  # in no generation a collection walks


@pytest.mark.usefixtures("_thawed")
def test_settle_hands_the_frozen_back_every_thaw_every_batches_and_frees_their_cycles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 14 (latency): cycles that were alive when frozen and died since are freed at
    the next thaw, at most THAW_EVERY batches later, by one full collection."""
    monkeypatch.setattr(gc_tuning, "THAW_EVERY", 3)
    monkeypatch.setattr(gc_tuning, "_settled", 0)
    cycle = _Cycle()
    gc_tuning.settle()  # batch 1: the cycle is alive, so frozen
    del cycle
    gc.collect()
    assert any(type(o) is _Cycle for o in gc.get_objects()) is False  # frozen objects are not listed…
    assert gc.get_freeze_count() > 0
    gc.unfreeze()
    assert any(type(o) is _Cycle for o in gc.get_objects())  # …but the dead cycle is still there
    gc.freeze()
    gc_tuning.settle()  # batch 2: still frozen
    gc_tuning.settle()  # batch 3: thawed and collected, then the living frozen again
    gc.unfreeze()
    assert not any(type(o) is _Cycle for o in gc.get_objects())
