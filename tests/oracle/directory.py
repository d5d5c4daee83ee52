"""The users a batch of facts may touch, indexed the ways facts look users up.

The projection loads them from PostgreSQL before the core runs (one query per batch);
the core reads and replaces users here and never does I/O. `changed` tells the
projection which users to write back.
"""

from __future__ import annotations

from collections.abc import Iterable

from tests.oracle.user import CONTACT_KEYS, EMAIL, User

Identity = tuple[str, str, bool]  # (kind, value, qualified); kind: veil | member | email | mobile | pending


def identities(user: User) -> frozenset[Identity]:
    """The lookup keys of a live user. Merged and deleted users have none (U8, B2)."""
    if not user.alive:
        return frozenset()
    keys: set[Identity] = {("veil", v, True) for v in user.veils}
    if user.member_id is not None:
        keys.add(("member", user.member_id, True))
    if user.pending_into is not None:
        keys.add(("pending", user.pending_into, True))  # the saga finds waiting sources by target
    for key in CONTACT_KEYS:
        val = user.fields.get(key)
        if val is not None and val.v is not None:
            keys.add(("email" if key == EMAIL else "mobile", val.v, val.q))
    return frozenset(keys)


class GradeBook:
    """The grade definitions (D2, name → colour) of the channels whose grade commands a
    batch holds (a rebuild keeps every channel's for the whole log). Grades are held by
    keys, not users, so no user state carries them (services/domain/grades.py)."""

    def __init__(self) -> None:
        self.defined: dict[str, dict[str, str]] = {}

    def load(self, channel_id: str, grades: dict[str, str]) -> None:
        self.defined.setdefault(channel_id, dict(grades))

    def of(self, channel_id: str) -> dict[str, str]:
        return self.defined.setdefault(channel_id, {})


class Directory:
    """An in-memory, per-batch index of users (all channels of the batch)."""

    def __init__(self, users: Iterable[User] = ()) -> None:
        self.grades = GradeBook()
        self._users: dict[str, User] = {}
        self._by_key: dict[tuple[str, str, str], set[str]] = {}
        self._ids: dict[str, frozenset[Identity]] = {}
        self.changed: dict[str, User] = {}  # id -> latest state, in first-change order
        for user in users:
            self._index(user, identities(user))
        self._loaded = dict(self._ids)

    def index(self) -> dict[tuple[str, str, str], set[str]]:
        """The index by `(channel, kind, value)`: the new core's `Directory.index()`, read
        by the differential tests."""
        return self._by_key

    def loaded_identities(self, user_id: str) -> frozenset[Identity] | None:
        """The identities a user had when loaded (None: created in this batch), so the
        store rewrites identity rows only for users whose keys changed."""
        return self._loaded.get(user_id)

    def settle(self) -> None:
        """Start a new batch on the same users (a directory kept across batches, as a
        rebuild keeps its channels' users): nothing has changed yet, and the current
        identities count as the loaded ones."""
        for user_id in self.changed:
            ids = self._ids.get(user_id)
            if ids is None:
                self._loaded.pop(user_id, None)
            else:
                self._loaded[user_id] = ids
        self.changed.clear()

    def get(self, user_id: str) -> User | None:
        return self._users.get(user_id)

    def resolve(self, user_id: str) -> User | None:
        """U8: a merged id resolves to the user it was merged into."""
        user = self._users.get(user_id)
        seen = 0
        while user is not None and user.merged_into is not None and seen < 8:
            user, seen = self._users.get(user.merged_into), seen + 1
        return user

    def by_veil(self, channel_id: str, veil_id: str) -> User | None:
        return self._one(channel_id, "veil", veil_id)

    def by_member(self, channel_id: str, member_id: str) -> User | None:
        return self._one(channel_id, "member", member_id)

    def by_contact(self, channel_id: str, kind: str, value: str, qualified_only: bool = False) -> list[User]:
        """Users holding that e-mail/mobile, ordered by id for determinism."""
        ids = sorted(self._by_key.get((channel_id, kind, value), ()))
        users = [self._users[i] for i in ids]
        if qualified_only:
            users = [u for u in users if (kind, value, True) in self._ids[u.id]]
        return users

    def pending_for(self, channel_id: str, target_id: str) -> list[User]:
        """Sources whose approved unification waits for this member's login (U5)."""
        return [self._users[i] for i in sorted(self._by_key.get((channel_id, "pending", target_id), ()))]

    def put(self, user: User) -> None:
        """Replace a user's state (or add a new user) and re-index it."""
        old = self._ids.get(user.id)
        keys = identities(user)
        if keys == old:  # most changes (a visit, a profile edit) keep the lookup keys
            self._users[user.id] = user
        else:
            for kind, value, _q in old or ():
                bucket = self._by_key.get((user.channel_id, kind, value))
                if bucket is not None:
                    bucket.discard(user.id)
            self._index(user, keys)
        self.changed[user.id] = user

    def forget(self, user_id: str) -> None:
        """Undo the creation of a user (a rejected fact leaves nothing behind)."""
        for kind, value, _q in self._ids.pop(user_id, frozenset()):
            user = self._users[user_id]
            self._by_key.get((user.channel_id, kind, value), set()).discard(user_id)
        self._users.pop(user_id, None)
        self.changed.pop(user_id, None)

    def users(self) -> Iterable[User]:
        return self._users.values()

    # -- kept across batches (services/projection/resident.py) ---------------------------

    def admit(self, user: User) -> None:
        """Hold a user as loaded from the store: indexed, unchanged."""
        self._index(user, identities(user))
        self._loaded[user.id] = self._ids[user.id]

    def evict(self, user_id: str) -> frozenset[Identity]:
        """Stop holding an unchanged user (a memory budget); the keys it was found by."""
        user = self._users.pop(user_id)
        keys = self._ids.pop(user_id, frozenset())
        for kind, value, _q in keys:
            bucket = self._by_key.get((user.channel_id, kind, value))
            if bucket is not None:
                bucket.discard(user_id)
                if not bucket:
                    del self._by_key[(user.channel_id, kind, value)]
        self._loaded.pop(user_id, None)
        self.changed.pop(user_id, None)
        return keys

    def holders(self, channel_id: str, kind: str, value: str) -> frozenset[str]:
        """Ids of the users held here that are found by the key (any qualification)."""
        return frozenset(self._by_key.get((channel_id, kind, value), ()))

    def _index(self, user: User, keys: frozenset[Identity]) -> None:
        """Hold `user` and find it by `keys`, its identities."""
        self._users[user.id] = user
        self._ids[user.id] = keys
        for kind, value, _q in keys:
            self._by_key.setdefault((user.channel_id, kind, value), set()).add(user.id)

    def _one(self, channel_id: str, kind: str, value: str) -> User | None:
        ids = self._by_key.get((channel_id, kind, value))
        if not ids:
            return None
        # A veil or member id belongs to one live user; the store's unique index holds it.
        return self._users[min(ids)]
