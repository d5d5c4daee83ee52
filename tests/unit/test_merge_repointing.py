"""U4: a merged user's chats go to the survivor, also through a chain of merges that
one batch writes at once (the store re-points them in one statement)."""

from services.store.repository import survivor


def test_u4_chats_of_a_user_merged_twice_in_one_batch_go_to_the_last_survivor() -> None:
    into = {"a": "b", "b": "c", "x": "y"}
    assert [survivor(into, s) for s in ("a", "b", "x", "c", "z")] == ["c", "c", "y", "c", "z"]
