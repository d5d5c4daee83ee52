"""U4 in a resident build (services/replay/resident.py): chats and events not yet
written are re-pointed to their survivor before their COPY, as `save_merges` re-points
the written ones — one row version instead of a write and an update (issue 14 item 6)."""

from __future__ import annotations

from services.domain.core import Activity
from services.domain.unification import MergeRecord
from services.replay.resident import _repointed


def _act(user_id: str, event_id: str) -> Activity:
    return Activity("ch", user_id, "chat", event_id, 1, {"text": event_id})


def _merge(source: str, target: str) -> MergeRecord:
    return MergeRecord("ch", source, target, "cause", 1, ())


def test_u4_pending_chats_go_to_the_end_of_the_merge_chain_and_others_stay() -> None:
    acts = [_act("a", "e1"), _act("b", "e2"), _act("x", "e3"), _act("c", "e4")]
    out = _repointed(acts, [_merge("a", "b"), _merge("b", "c")])  # a into b, then b into c: a's chats go to c
    assert [(a.user_id, a.event_id) for a in out] == [("c", "e1"), ("c", "e2"), ("x", "e3"), ("c", "e4")]
    assert out[2] is acts[2] and out[0].body == acts[0].body and out[0].at == acts[0].at


def test_without_merges_the_pending_chats_are_written_as_they_are() -> None:
    acts = [_act("a", "e1")]
    assert _repointed(acts, []) is acts
