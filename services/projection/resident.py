"""Users kept in memory between batches, for the partitions this instance owns.

Without it every batch loads the users it may touch from PostgreSQL and parses their
state (~20 µs a fact), though the same instance wrote them one batch earlier: a
channel's facts all arrive on one partition (keyed by `channelId`), and one instance
owns that partition. With it, the batch asks PostgreSQL only for what is not here.

PostgreSQL stays the truth. Every batch still writes its changed users, offsets and
outbox in one transaction, fenced by each user's `rev`; what is here is a cache of
committed rows, exactly as they were committed:

- **Complete keys.** A lookup by identity key (veil, member id, e-mail, mobile, pending
  unification) can be answered here only if every holder of the key is here. A key
  becomes *complete* when the store was asked for it (its holders were loaded) and
  stays complete while this instance is the only writer of the channel (below): every
  later change to its holders happened here. Evicting a user makes its keys incomplete.
  Ids asked and not found are remembered as *absent* (a new visitor's id), until the
  user is created here.
- **The channel fence.** Each batch locks its channels' rows in `channel_writers`
  (`FOR UPDATE`, sorted) before it reads, and every batch that writes a channel's users
  stamps the row with its transaction id. If a channel's row names a transaction other
  than the last one of ours that wrote it — another instance wrote it (a rebalance, a
  producer keying one channel to two partitions), a replay switched the schema (its
  rebuilt rows name no instance) — everything here is dropped before the batch reads.
- **Dropped** on a rebalance (the consumer's assignment changes), when a batch fails for
  any reason (what it changed here was not committed), and when a loaded row disagrees
  with what is here (a `rev` that moved, a holder of a complete key that is not here:
  raised as a conflict, so the batch is retried on fresh state).
- **Fresh channels.** A channel the store held no user of when this instance first met
  it (no `channel_writers` row: schema.sql says why none means no users) has only users
  this instance wrote since, while the fence holds. Those still here answer for
  themselves; those that left (evicted, an import's let go) are remembered in
  `departed`, a Bloom filter of their ids and keys. So a key or a name-derived id of a
  fresh channel that no user here holds and `departed` does not name is known absent
  without asking the store: an import of new members into a new channel, a new
  channel's first visitors (docs/decisions.md, "Issue 14, session 23").
- **Bounded** by `budget` users (least recently used evicted after each batch; ~5 KB a
  user, docs/operations.md). A budget of 0 turns it off: every batch loads.

The state a batch reaches is the one it reaches when loading everything from the store
(tests/integration/test_resident_live.py compares digests; a rebuild, which keeps every
user, is the third witness).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Iterable
from typing import cast

from mypy_extensions import i64

from services.domain.directory import Directory, GradeBook, identities
from services.domain.ids import member_user_id, veil_user_id
from services.domain.user import User
from services.store import repository as repo

Key = repo.Key


class Stale(repo.Conflict):
    """A row in the store disagrees with the resident copy: someone else wrote it."""


DEPARTED_MAX = 8_000_000  # entries (~2 bytes each, doubled by the filters' growth): then fresh channels are forgotten
_FIRST_ROOM = 1 << 16  # entries of the first filter; each next one takes twice its predecessor's
_BYTES_PER_ENTRY = 2  # 16 bits, three set a entry: ~1 % false positives a filter (a store lookup each)
_BLOCK = 64  # bytes: an item's three bits lie in one block, one cache line


class Departed:
    """The ids and keys of fresh channels' users that left memory: a Bloom filter, so a
    million departed users cost a few megabytes, not their strings. It can say yes for
    an item never added (a store lookup that finds nothing, as without it) but never no
    for one added. Blocked: an item's bits lie in one 64-byte block, so a test of a
    filter larger than the caches costs one memory access, not three. Grows as a chain
    of filters, each twice the size of the last (an item is added to the newest; a
    lookup tries all): a filter cannot be resized without its items, which are not
    kept. Python's `hash`: the filter lives in one process."""

    def __init__(self) -> None:
        self.filters: list[bytearray] = []
        self.count = 0
        self._room = 0  # items the newest filter takes before the next is added

    def add(self, item: object) -> None:
        if self._room == 0:
            size = _FIRST_ROOM << len(self.filters)
            self.filters.append(bytearray(size * _BYTES_PER_ENTRY))
            self._room = size
        self._room -= 1
        self.count += 1
        bits = self.filters[-1]
        h: i64 = hash(item)
        base: i64 = ((h >> 27) % (len(bits) // _BLOCK)) * _BLOCK  # the block: the hash's high bits
        for i in range(3):
            p: i64 = (h >> (9 * i)) & 511  # a bit of the block's 512: 9 low bits each
            bits[base + (p >> 3)] |= 1 << (p & 7)

    def __contains__(self, item: object) -> bool:
        if not self.filters:
            return False
        h: i64 = hash(item)
        p: i64 = h & 511
        q: i64 = (h >> 9) & 511
        r: i64 = (h >> 18) & 511
        for bits in self.filters:
            base: i64 = ((h >> 27) % (len(bits) // _BLOCK)) * _BLOCK
            if (bits[base + (p >> 3)] & (1 << (p & 7)) and bits[base + (q >> 3)] & (1 << (q & 7))
                    and bits[base + (r >> 3)] & (1 << (r & 7))):
                return True
        return False


class ResidentUsers:
    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.directory = Directory()
        self.revs: dict[str, int] = {}
        self.complete: set[Key] = set()
        self.absent: set[str] = set()
        self.tokens: dict[str, int] = {}  # channel -> our last writer token seen/stamped
        self.fresh: set[str] = set()  # channels whose every stored user this instance wrote
        self.departed = Departed()  # fresh channels' users that left memory
        self._recent: OrderedDict[str, None] = OrderedDict()
        self.drops = 0  # how often everything was dropped (tests, logs)
        self.hits = 0  # lookups answered here (ids and keys), for the bench
        self.misses = 0

    # -- the batch's view ------------------------------------------------------------------

    def begin(self, tokens: dict[str, int]) -> Directory:
        """Start a batch on channels whose writer rows hold `tokens`: drop everything if
        one of them was written by someone else since we last looked."""
        for channel_id, token in tokens.items():
            known = self.tokens.get(channel_id)
            if known is not None and known != token:
                self.drop()
                break
        self.tokens.update(tokens)
        # Grade definitions are loaded per batch, as without residency (load_grades).
        self.directory.grades = GradeBook()
        return self.directory

    def missing(self, ids: Iterable[str], keys: Iterable[Key]) -> tuple[list[str], list[Key]]:
        """What the store must be asked for: ids neither here nor known absent, keys not
        complete. In the order given, not sorted: the store's answer is a set (one
        SELECT), and sorting an import batch's keys cost ~3 µs a row (issue 14, session 10)."""
        # `d.get(i)`, not a bound `get` kept aside: that is called as a Python object
        # (~280 instructions), the method itself directly.
        d, absent, complete = self.directory, self.absent, self.complete
        ids = list(ids)
        # Keys as plain tuples: a `Key` read from a list is unpacked by the compiled
        # core and packed into a new tuple again for the set test and for the append.
        asked: list[tuple[str, ...]] = list(keys)
        told = len(ids) + len(asked)
        if self.fresh:
            asked, known_absent = self._fresh(asked)
            want_ids = [i for i in ids if d.get(i) is None and i not in absent and i not in known_absent]
        else:
            want_ids = [i for i in ids if d.get(i) is None and i not in absent]
        want_keys = [k for k in asked if k not in complete]
        self.misses += len(want_ids) + len(want_keys)
        self.hits += told - len(want_ids) - len(want_keys)
        return want_ids, cast("list[Key]", want_keys)

    def _fresh(self, keys: list[tuple[str, ...]]) -> tuple[list[tuple[str, ...]], set[str]]:
        """The keys the store must still be asked for, and the ids known absent: of a
        fresh channel, a key `departed` does not name is held only by users here, and the
        id a member or veil key names (ids.py derives it from the channel and the key)
        is absent unless here or departed."""
        fresh, departed = self.fresh, self.departed
        left: list[tuple[str, ...]] = []
        known_absent: set[str] = set()
        for k in keys:
            channel_id = k[0]
            if channel_id not in fresh or k in departed:
                left.append(k)
                continue
            kind = k[1]
            if kind == "member":
                user_id = member_user_id(channel_id, k[2])
            elif kind == "veil":
                user_id = veil_user_id(channel_id, k[2])
            else:
                continue
            if user_id not in departed:
                known_absent.add(user_id)
        return left, known_absent

    def seen_empty(self, channel_ids: Iterable[str]) -> None:
        """The store held no user of these channels when this instance's batch read
        their `channel_writers` rows and found none (a batch whose transaction then finds
        another writer's row there is void: the fence drops everything, this too)."""
        self.fresh.update(channel_ids)

    def loaded(
        self, asked_ids: list[str], asked_keys: list[Key], rows: list[tuple[int, User]],
        uncommitted: Collection[str] = (),
    ) -> None:
        """Take what the store answered for `missing`'s question. `uncommitted`: users a
        batch still in flight changed (projection/pipeline.py): held here at the revision
        its commit gives them, so the store may show them one revision earlier."""
        d = self.directory
        for rev, user in rows:
            held = d.get(user.id)
            if held is not None:
                have = self.revs.get(user.id)
                if have != rev and not (have is not None and rev == have - 1 and user.id in uncommitted):
                    raise Stale(f"user {user.id} is at rev {rev} in the store, {have} here")
                continue
            for kind, value, _q in identities(user):
                if (user.channel_id, kind, value) in self.complete:
                    raise Stale(f"user {user.id} holds {kind} key that was complete here without it")
            d.admit(user)
            self.revs[user.id] = rev
            self.absent.discard(user.id)
            self._use(user.id)
        self.absent.update(i for i in asked_ids if d.get(i) is None)
        self.complete.update(asked_keys)

    def reached(self, ids: Iterable[str], keys: Iterable[Key]) -> list[User]:
        """The users `ids` and `keys` find here (after `loaded`), marked recently used."""
        d = self.directory
        found: dict[str, User] = {}
        for i in ids:
            if (u := d.get(i)) is not None:
                found[u.id] = u
        for key in keys:
            held = d.holding(key)
            if held:  # most keys of new users have no holder: no iterator made for them
                for i in held:
                    if (u := d.get(i)) is not None:
                        found[u.id] = u
        for i in found:
            self._use(i)
        return list(found.values())

    # -- after the batch -------------------------------------------------------------------

    def committed(self, tokens: dict[str, int], forget: Iterable[str] = ()) -> None:
        """The batch's transaction committed: its changed users are now the store's rows.
        `forget`: users it wrote that are not kept (an import's: see `forget`), let go
        before the budget is enforced: else an import batch of 5,000 new users, counted
        first, pushed 5,000 users of other channels out of a full budget."""
        self.forget(forget)
        self.advance()
        self.tokens.update(tokens)
        self._evict()

    def advance(self) -> list[str]:
        """The batch's changed users count at the revision its commit gives them, and the
        next batch starts from them (settled). A pipelined batch advances when it is
        prepared, before it commits (projection/pipeline.py): a failed commit drops
        everything. The users advanced."""
        d = self.directory
        advanced = []
        for user_id in d.changed:
            if d.get(user_id) is not None:  # not forgotten (a rejected fact's new user)
                self.revs[user_id] = self.revs.get(user_id, 0) + 1
                self._use(user_id)
                self.absent.discard(user_id)
                advanced.append(user_id)
        d.settle()
        return advanced

    def written(self, tokens: dict[str, int], pinned: Collection[str], forget: Collection[str] = ()) -> None:
        """A pipelined batch committed with these channel tokens; evict down to the
        budget, but not `pinned`: users a later batch changed that is not committed yet
        (evicted, they would be read back from the store as they were before it).
        `forget`: the users its import rows wrote, as `committed`'s, but for `pinned`."""
        if forget:
            keep = set(pinned)
            self.forget(u for u in forget if u not in keep)
        self.tokens.update(tokens)
        self._evict(pinned)

    def drop(self) -> None:
        """Forget everything (the next batches load from the store again)."""
        self.directory = Directory()
        self.revs.clear()
        self.complete.clear()
        self.absent.clear()
        self.tokens.clear()
        self.fresh.clear()
        self.departed = Departed()
        self._recent.clear()
        self.drops += 1

    def __len__(self) -> int:
        return len(self.revs)

    def _use(self, user_id: str) -> None:
        recent = self._recent
        if user_id in recent:
            recent.move_to_end(user_id)
        else:
            recent[user_id] = None

    def forget(self, user_ids: Iterable[str]) -> None:
        """Evict these users now, with or after `committed`: the users an import wrote, which
        its rows touch once. Kept, a million-row import would fill the budget (~5 KB a
        user), push out the users other channels' facts come back to, and have the
        collector walk them (docs/decisions.md, "Imports: one row mark, the collector
        paused, imported users not kept"). Also before `advance` (from `committed`): a
        user the batch created is then no longer known absent either."""
        recent, absent = self._recent, self.absent
        for user_id in user_ids:
            if user_id in recent:  # not `pop(user_id, None)`: a method call compiled
                del recent[user_id]
            absent.discard(user_id)
            self._evict_one(user_id)

    def _evict(self, pinned: Collection[str] = ()) -> None:
        kept: list[str] = []
        while self._recent and len(self._recent) + len(kept) > self.budget:
            user_id, _ = self._recent.popitem(last=False)
            if user_id in pinned:
                kept.append(user_id)
                continue
            self._evict_one(user_id)
        for user_id in kept:  # most recently used: the batch in flight just changed them
            self._recent[user_id] = None
        self._bound_negatives()

    def _evict_one(self, user_id: str) -> None:
        d = self.directory
        user = d.get(user_id)
        if user is None:
            return
        channel_id, complete, revs = user.channel_id, self.complete, self.revs
        # Of a fresh channel: the store holds it, so lookups of its id and keys must ask.
        departed = self.departed if channel_id in self.fresh else None
        if departed is not None:
            departed.add(user_id)
        for kind, value, _q in d.evict(user_id):
            key = (channel_id, kind, value)
            complete.discard(key)
            if departed is not None:
                departed.add(key)
        if user_id in revs:  # not `pop(user_id, None)`: a method call compiled
            del revs[user_id]

    def _bound_negatives(self) -> None:
        # Negative knowledge is cheap to lose and must not grow without bound.
        if len(self.absent) > self.budget:
            self.absent.clear()
        if len(self.complete) > 8 * max(self.budget, 1):
            self.complete.clear()
        if self.departed.count > DEPARTED_MAX:
            self.fresh.clear()
            self.departed = Departed()

