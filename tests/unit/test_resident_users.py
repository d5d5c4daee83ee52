"""The bookkeeping of the projection's resident users (services/projection/resident.py),
without a database: what the store is asked for, eviction, and what makes the copy
untrustworthy (G3). The end-to-end proofs are in tests/integration/test_resident_live.py."""

from __future__ import annotations

import pytest

from services.domain.ids import member_user_id, veil_user_id
from services.domain.user import User
from services.projection.resident import Departed, ResidentUsers, Stale

CH = "ch1"


def _user(n: int, **kw: object) -> User:
    fields: dict[str, object] = {"veils": {f"v{n}": 0}, **kw}
    return User(id=f"u{n}", channel_id=CH, type="anonymous", created_at=0, updated_at=0, **fields)  # type: ignore[arg-type]


def _veil(n: int) -> tuple[str, str, str]:
    return (CH, "veil", f"v{n}")


def test_g3_ids_and_keys_asked_once_are_answered_from_memory() -> None:
    """Flow 5: a key whose holders were loaded is complete, an id not found is absent:
    neither is asked for again."""
    r = ResidentUsers(10)
    r.begin({CH: 1})
    ids, keys = r.missing(["u1", "u9"], [_veil(1), _veil(9)])
    assert (ids, keys) == (["u1", "u9"], [_veil(1), _veil(9)])
    r.loaded(ids, keys, [(1, _user(1))])
    assert r.missing(["u1", "u9"], [_veil(1), _veil(9)]) == ([], [])
    assert [u.id for u in r.reached(["u1"], [_veil(9)])] == ["u1"]


def test_g3_evicting_a_user_makes_its_keys_ask_the_store_again() -> None:
    """The budget: least recently used first; its keys are no longer complete."""
    r = ResidentUsers(2)
    r.begin({CH: 1})
    for n in (1, 2, 3):
        r.loaded([f"u{n}"], [_veil(n)], [(1, _user(n))])
    r.reached(["u1"], [])  # u1 used again: u2 is now the least recent
    r.committed({})
    assert len(r) == 2
    assert r.directory.get("u2") is None
    assert r.missing(["u1", "u2", "u3"], [_veil(1), _veil(2), _veil(3)]) == (["u2"], [_veil(2)])


def test_g3_a_row_at_another_revision_than_memory_is_a_conflict() -> None:
    r = ResidentUsers(10)
    r.begin({CH: 1})
    r.loaded(["u1"], [], [(1, _user(1))])
    with pytest.raises(Stale):
        r.loaded(["u1"], [_veil(1)], [(2, _user(1))])


def test_g3_a_new_holder_of_a_complete_key_is_a_conflict() -> None:
    """Someone else gave a key we hold as complete to a user we never saw."""
    r = ResidentUsers(10)
    r.begin({CH: 1})
    r.loaded([], [_veil(1)], [(1, _user(1))])
    intruder = _user(2, veils={"v1": 0})
    with pytest.raises(Stale):
        r.loaded(["u2"], [], [(1, intruder)])


def test_g3_another_writers_stamp_drops_everything_and_our_own_keeps_it() -> None:
    r = ResidentUsers(10)
    r.begin({CH: 1})
    r.loaded(["u1"], [_veil(1)], [(1, _user(1))])
    r.committed({CH: 7})  # our batch stamped the channel
    r.begin({CH: 7})
    assert r.drops == 0 and len(r) == 1
    r.begin({CH: 8})  # not ours
    assert r.drops == 1 and len(r) == 0
    assert r.missing(["u1"], [_veil(1)]) == (["u1"], [_veil(1)])


def test_g3_committed_users_move_to_the_next_revision() -> None:
    """After a commit the held copy is the row the batch wrote: rev + 1 (new users: 1)."""
    r = ResidentUsers(10)
    d = r.begin({CH: 1})
    r.loaded(["u1"], [], [(4, _user(1))])
    d.put(_user(1, sessions_count=1))
    d.put(_user(2))
    r.committed({CH: 2})
    assert r.revs == {"u1": 5, "u2": 1}
    assert not d.changed


def test_g3_forgotten_users_leave_memory_and_their_keys_ask_the_store_again() -> None:
    """Issue 14 item 5: the users an import wrote are not kept after its batch
    (`forget`); what is forgotten is asked from the store again, the rest stays."""
    r = ResidentUsers(10)
    r.begin({CH: 1})
    for n in (1, 2):
        r.loaded([f"u{n}"], [_veil(n)], [(1, _user(n))])
    r.committed({})
    r.forget(["u1", "u-never-held"])
    assert r.directory.get("u1") is None and len(r) == 1
    assert r.missing(["u1", "u2"], [_veil(1), _veil(2)]) == (["u1"], [_veil(1)])


def test_an_imports_new_users_do_not_push_other_users_out_of_a_full_budget() -> None:
    """Issue 14 session 10 (decision "imported users not kept", G3): the users an import
    batch created are let go with its commit (`committed(…, forget=…)`) before the budget
    is enforced, so a full budget keeps the users it held (committed first and forgotten
    after, as before, all three were evicted); the new users are asked from the store
    again, by id and by key (they exist now: not known absent)."""
    r = ResidentUsers(3)
    r.begin({CH: 1})
    for n in (1, 2, 3):
        r.loaded([f"u{n}"], [_veil(n)], [(1, _user(n))])
    r.committed({CH: 1})
    r.begin({CH: 1})  # our own stamp: nothing dropped
    new = [f"u{n}" for n in (7, 8, 9)]
    assert r.missing(new, [_veil(n) for n in (7, 8, 9)]) == (new, [_veil(n) for n in (7, 8, 9)])
    r.loaded(new, [_veil(n) for n in (7, 8, 9)], [])  # asked, not found: absent, keys complete
    for n in (7, 8, 9):
        r.directory.put(_user(n))  # the batch creates them
    r.committed({CH: 1}, forget=new)
    assert sorted(u.id for u in r.directory.users()) == ["u1", "u2", "u3"]
    assert r.revs == {"u1": 1, "u2": 1, "u3": 1}
    assert r.missing(new, [_veil(7)]) == (new, [_veil(7)])


# -- fresh channels (issue 14, session 23) --------------------------------------------------


def _member_user(member: str, **kw: object) -> User:
    """A user created by a member import row: its id derives from channel and member id."""
    return User(id=member_user_id(CH, member), channel_id=CH, type="member", member_id=member,  # type: ignore[arg-type]
                created_at=0, updated_at=0, **kw)


def _member(member: str) -> tuple[str, str, str]:
    return (CH, "member", member)


def test_g3_departed_never_forgets_an_item_it_was_given_across_its_growth() -> None:
    """A Bloom filter may name an item never added (a store lookup for nothing) but must
    never miss one added: a miss would make a stored user's key look absent (G3)."""
    departed = Departed()
    items: list[object] = [f"u_{n:032x}" for n in range(150_000)] + [(CH, "member", f"M{n}") for n in range(150_000)]
    for item in items:
        departed.add(item)
    assert departed.count == len(items) and len(departed.filters) >= 3  # it grew
    assert all(item in departed for item in items)
    others = [(CH, "member", f"X{n}") for n in range(20_000)]
    assert sum(item in departed for item in others) < len(others) * 0.05  # few false positives


def test_g3_a_fresh_channels_new_keys_and_their_ids_are_not_asked_of_the_store() -> None:
    """A channel the store holds no user of (no fence row): a member or veil key no user
    here holds, and the id it derives, are known absent; other kinds of the channel
    (e-mail) too; ids not derived from its keys (a command's userId) and other channels'
    keys are still asked."""
    r = ResidentUsers(10)
    r.begin({})
    r.seen_empty([CH])
    mid = member_user_id(CH, "m1")
    vid = veil_user_id(CH, "v1")
    email = (CH, "email", "a@example.com")
    other = ("ch-other", "member", "m1")
    assert r.missing([mid, vid, "u-named"], [_member("m1"), _veil(1), email, other]) == (["u-named"], [other])


def test_g3_a_fresh_channels_user_that_left_memory_is_asked_of_the_store_again() -> None:
    """A user of a fresh channel that was written and then let go (an import's, or
    evicted): the store holds it, so its id and keys are asked again; a user still here
    answers for itself."""
    r = ResidentUsers(10)
    r.begin({CH: 1})
    r.seen_empty([CH])
    gone, kept = _member_user("m1", fields={}), _member_user("m2")
    for u in (gone, kept):
        r.directory.put(u)
    r.committed({CH: 2}, forget=[gone.id])
    asked = r.missing([gone.id, kept.id], [_member("m1"), _member("m2"), _member("m3")])
    assert asked == ([gone.id], [_member("m1")])


def test_g3_dropping_the_copy_forgets_which_channels_were_fresh() -> None:
    """Another writer's stamp (or a failed batch) drops everything: the channel is no
    longer known to hold only our users, so its keys are asked again."""
    r = ResidentUsers(10)
    r.begin({CH: 1})
    r.seen_empty([CH])
    assert r.missing([], [_member("m1")]) == ([], [])
    r.begin({CH: 9})  # not our stamp
    assert r.drops == 1
    assert r.missing([member_user_id(CH, "m1")], [_member("m1")]) == ([member_user_id(CH, "m1")], [_member("m1")])
