"""Directory.put re-indexes only the keys that moved (issue 14): after any sequence of
puts (and undoing forgets, settles, evictions), every lookup answers as a directory
built from scratch from the users it holds, and each user's identities are its own."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from services.domain.directory import Directory, identities
from services.domain.user import EMAIL, MOBILE, User, Value

CHANNELS = ["ch_a", "ch_b"]
UIDS = ["u1", "u2", "u3", "u4"]
VEILS = ["v1", "v2", "v3", "v4", "v5"]
MEMBERS = ["m1", "m2"]
EMAILS = ["a@x.example", "b@x.example"]
MOBILES = ["+819000000001", "+819000000002"]


def _channel(uid: str) -> str:
    # A user's channel never changes (T1); two channels so buckets of the same key in
    # another channel are held apart.
    return CHANNELS[int(uid[1:]) % 2]


@st.composite
def states(draw: st.DrawFn) -> User:
    """A state of one of a few users, over small key domains so keys collide, move,
    change qualification, and users die (merged, deleted: no keys, U8, B2)."""
    uid = draw(st.sampled_from(UIDS))
    fields: dict[str, Value] = {}
    for key, domain in ((EMAIL, EMAILS), (MOBILE, MOBILES)):
        if draw(st.booleans()):
            fields[key] = Value(draw(st.one_of(st.none(), st.sampled_from(domain))), draw(st.booleans()), False, 0)
    gone = draw(st.sampled_from(["alive", "alive", "alive", "merged", "deleted"]))
    return User(
        id=uid, channel_id=_channel(uid), type="member", created_at=0, updated_at=0,
        member_id=draw(st.one_of(st.none(), st.sampled_from(MEMBERS))),
        pending_into=draw(st.one_of(st.none(), st.sampled_from(UIDS))),
        fields=fields,
        veils={v: 0 for v in draw(st.lists(st.sampled_from(VEILS), max_size=4, unique=True))},
        deleted=gone == "deleted", merged_into="u1" if gone == "merged" else None,
    )


steps = st.one_of(
    st.tuples(st.just("put"), states()),
    # Only the veils of a held user move (a login merging a visitor adds its veils):
    # Directory.put's own path for that.
    st.tuples(st.just("veils"), st.tuples(st.sampled_from(UIDS), st.lists(st.sampled_from(VEILS), max_size=4, unique=True))),
    st.tuples(st.just("forget"), st.sampled_from(UIDS)),
    st.tuples(st.just("evict"), st.sampled_from(UIDS)),
    st.tuples(st.just("settle"), st.none()),
)


def _lookups(d: Directory) -> dict[tuple[str, ...], object]:
    """Every answer the directory gives over the whole key universe."""
    out: dict[tuple[str, ...], object] = {}
    for ch in CHANNELS:
        for veil in VEILS:
            out[(ch, "veil", veil)] = (u.id if (u := d.by_veil(ch, veil)) else None, d.holders(ch, "veil", veil))
        for member in MEMBERS:
            out[(ch, "member", member)] = (u.id if (u := d.by_member(ch, member)) else None, d.holders(ch, "member", member))
        for uid in UIDS:
            out[(ch, "pending", uid)] = [u.id for u in d.pending_for(ch, uid)]
        for kind, domain in (("email", EMAILS), ("mobile", MOBILES)):
            for value in domain:
                out[(ch, kind, value)] = (
                    [u.id for u in d.by_contact(ch, kind, value)],
                    [u.id for u in d.by_contact(ch, kind, value, qualified_only=True)],
                    d.holders(ch, kind, value),
                )
    return out


@settings(max_examples=1_000, deadline=None)
@given(st.lists(steps, max_size=30))
def test_put_reindexes_only_what_moved_and_lookups_equal_a_fresh_directory(ops: list[tuple[str, object]]) -> None:
    d = Directory()
    for op, arg in ops:
        if op == "put":
            assert isinstance(arg, User)
            d.put(arg.copy())  # a new state (as Work.put hands over)
        elif op == "veils":
            assert isinstance(arg, tuple)
            uid, veils = arg
            found = d.get(uid)
            if found is not None:
                moved = found.copy()
                moved.veils = {v: 1 for v in veils}
                d.put(moved)
        elif op == "forget":
            assert isinstance(arg, str)
            if d.get(arg) is not None:
                d.forget(arg)
        elif op == "evict":
            assert isinstance(arg, str)
            if d.get(arg) is not None:
                d.evict(arg)
        else:
            d.settle()
        held = [u for u in d.users()]
        fresh = Directory(u.copy() for u in held)
        assert _lookups(d) == _lookups(fresh)
        # The nested index holds the very keys a fresh directory's does (issue 14, session 17).
        assert {k: v for k, v in d.index().items() if v} == {k: v for k, v in fresh.index().items() if v}
        for user in held:
            # What later puts diff against, and what the batch writes as the user's
            # identity rows (batch.write_effects, pipeline: identities_of, not identities).
            assert d.identities_of(user.id) == identities(user)
        # The identity rows a batch writes, from the index, are those derived from each
        # user; a state the directory does not hold (a copy, here without its veils and
        # contacts) is derived from itself, not read from the index.
        changed = list(d.changed.values())
        copies = [u.copy() for u in changed]
        for c in copies:
            c.veils, c.fields = {}, {}
        for users in (changed, copies):
            assert d.moved_identities(users) == [
                (u, old, new) for u in users if (new := identities(u)) != (old := d.loaded_identities(u.id))]


class _Untouchable(set[str]):
    """A bucket that fails the test when anything is taken out or put in."""

    def discard(self, _item: object) -> None:
        raise AssertionError("a key that did not move was re-indexed")

    def add(self, _item: str) -> None:
        raise AssertionError("a key that did not move was re-indexed")


def test_put_moves_only_the_new_veil_of_a_member() -> None:
    """A login merging a visitor adds one veil to a member: the buckets of its other
    keys are not touched (the whole user was re-indexed before issue 14), and the new
    veil finds it."""
    d = Directory()
    member = User(id="u1", channel_id="ch_a", type="member", created_at=0, updated_at=0, member_id="m1",
                  fields={EMAIL: Value("a@x.example", True, True, 0)}, veils={"v1": 0, "v2": 0})
    d.put(member)
    kept = [("veil", "v1"), ("veil", "v2"), ("member", "m1"), ("email", "a@x.example")]
    for kind, value in kept:
        d._by_key["ch_a"][kind][value] = _Untouchable({"u1"})
    grown = member.copy()
    grown.veils["v3"] = 1
    d.put(grown)
    assert d.by_veil("ch_a", "v3") is grown and d.by_member("ch_a", "m1") is grown
    assert all(d.by_veil("ch_a", v) is grown for v in ("v1", "v2"))


def test_issue14_the_index_is_keyed_channel_kind_value_and_its_flat_view_is_the_old_keys() -> None:
    """Issue 14, session 17: the index is nested (channel → kind → value → ids), one
    channel's keys never find another's users (T1), and `index()` lists exactly the
    `(channel, kind, value)` buckets the tuple-keyed index held."""
    d = Directory()
    a = User(id="u1", channel_id="ch_a", type="member", created_at=0, updated_at=0, member_id="m1",
             fields={EMAIL: Value("a@x.example", False, False, 0)}, veils={"v1": 0})
    b = User(id="u2", channel_id="ch_b", type="member", created_at=0, updated_at=0, member_id="m1", veils={"v1": 0})
    d.put(a)
    d.put(b)
    assert d.by_veil("ch_a", "v1") is a and d.by_veil("ch_b", "v1") is b and d.by_veil("ch_c", "v1") is None
    assert d.by_member("ch_b", "m1") is b and d.by_contact("ch_b", "email", "a@x.example") == []
    assert d.by_contact("ch_a", "email", "a@x.example") == [a]
    assert d.by_contact("ch_a", "email", "a@x.example", qualified_only=True) == []
    assert d.index() == {("ch_a", "veil", "v1"): {"u1"}, ("ch_a", "member", "m1"): {"u1"},
                         ("ch_a", "email", "a@x.example"): {"u1"},
                         ("ch_b", "veil", "v1"): {"u2"}, ("ch_b", "member", "m1"): {"u2"}}
    assert d.holding(("ch_a", "email", "a@x.example")) == {"u1"} and d.holding(("ch_a", "email", "b@x.example")) == ()
    assert d.identities_of("u2") == {("veil", "v1", True), ("member", "m1", True)} and d.identities_of("u9") is None
    d.evict("u2")  # evict drops the buckets it empties; put and forget leave them
    assert ("ch_b", "veil", "v1") not in d.index() and d.by_veil("ch_b", "v1") is None


def test_issue14_an_evicted_user_leaves_nothing_and_comes_back_as_new() -> None:
    """Issue 14, session 19: `evict` drops a user's one entry (signature and identities
    together) with the user, so a later `put` of that id indexes it afresh (a stale
    signature kept would take the path for held users and find the old keys), and a new
    user's identities are all moved ones (loaded: None)."""
    d = Directory()
    member = User(id="u1", channel_id="ch_a", type="member", created_at=0, updated_at=0, member_id="m1",
                  fields={EMAIL: Value("a@x.example", True, True, 0)})
    d.put(member)
    assert d.moved_identities([member]) == [(member, None, identities(member))]
    d.settle()
    assert d.loaded_identities("u1") == identities(member)
    d.evict("u1")
    assert d.get("u1") is None and d.identities_of("u1") is None and d.loaded_identities("u1") is None
    assert d.index() == {} and d.changed == {}
    again = member.copy()
    again.member_id = "m2"
    d.put(again)
    assert d.by_member("ch_a", "m2") is again and d.by_member("ch_a", "m1") is None
    assert d.identities_of("u1") == identities(again) and d.changed == {"u1": again}
    assert d.moved_identities([again]) == [(again, None, identities(again))]
