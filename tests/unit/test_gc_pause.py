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
