"""The users a batch of facts may touch, indexed the ways facts look users up.

The projection loads them from PostgreSQL before the core runs (one query per batch);
the core reads and replaces users here and never does I/O. `changed` tells the
projection which users to write back.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, KeysView
from typing import Final, cast

from .user import EMAIL, MOBILE, User, Value

Identity = tuple[str, str, bool]  # (kind, value, qualified); kind: veil | member | email | mobile | pending

# Shared empty sets (immutable): `frozenset()` allocates a new one on each call.
_NO_KEYS: Final[frozenset[Identity]] = frozenset()
_NO_VEILS: Final[frozenset[str]] = frozenset()


def identities(user: User) -> frozenset[Identity]:
    """The lookup keys of a live user. Merged and deleted users have none (U8, B2)."""
    if user.deleted or user.merged_into is not None:  # not `alive`
        return _NO_KEYS
    # Gathered in a list, hashed once by the frozenset (a set first hashed every key
    # twice), the contact keys read by name: every new user and every put that moves
    # what identities read comes here (issue 14, session 14).
    keys: list[Identity] = [("veil", v, True) for v in user.veils]
    if user.member_id is not None:
        keys.append(("member", user.member_id, True))
    if user.pending_into is not None:
        keys.append(("pending", user.pending_into, True))  # the saga finds waiting sources by target
    fields = user.fields
    email = fields.get(EMAIL)
    if email is not None and email.v is not None:
        keys.append(("email", email.v, email.q))
    mobile = fields.get(MOBILE)
    if mobile is not None and mobile.v is not None:
        keys.append(("mobile", mobile.v, mobile.q))
    return frozenset(keys)


# `_sigs` as the compiled core may read it without unpacking: a value typed `_Sig` is
# unpacked item by item (eight references taken and dropped) even to read one item.
_Held = dict[str, tuple[object, ...]]


# What `identities` reads of a user, cheap to compare, then its identities (the last
# item): when the rest is unchanged, so are the identities (a visit, a profile edit),
# and `put` need not rebuild and compare them. One entry a held user for both, one dict
# to write and to drop it from (issue 14, session 19).
_Sig = tuple[bool, "str | None", "str | None", "str | None", "Value | None", "Value | None", frozenset[str],
             frozenset[Identity]]


def _signature(user: User, keys: frozenset[Identity]) -> _Sig:
    """`user`'s signature, `keys` its identities."""
    f, veils = user.fields, user.veils
    # Most members (an import's every one) have no veils: no empty set built for them.
    return (user.deleted, user.merged_into, user.member_id, user.pending_into, f.get(EMAIL), f.get(MOBILE),
            frozenset(veils) if veils else _NO_VEILS, keys)


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
        # channel → kind → value → ids of the users found by that key. A lookup reads
        # three dicts by strings whose hashes are cached, where a `(channel, kind,
        # value)` key was a tuple built and hashed each time (issue 14, session 17).
        # `index()` is the flat view. A bucket left empty stays (evict drops its own).
        self._by_key: dict[str, dict[str, dict[str, set[str]]]] = {}
        self._sigs: dict[str, _Sig] = {}  # each held user's identities and what they come from
        self.changed: dict[str, User] = {}  # id -> latest state, in first-change order
        for user in users:
            self._index(user, identities(user))
        self._loaded = {user_id: sig[7] for user_id, sig in self._sigs.items()}

    def loaded_identities(self, user_id: str) -> frozenset[Identity] | None:
        """The identities a user had when loaded (None: created in this batch), so the
        store rewrites identity rows only for users whose keys changed."""
        return self._loaded.get(user_id)

    def identities_of(self, user_id: str) -> frozenset[Identity] | None:
        """`identities` of the user held as `user_id` (None: not held), as indexed: every
        `put` keeps them equal, so the writes need not derive them again."""
        sig = self._sigs.get(user_id)
        return None if sig is None else sig[7]

    def moved_identities(
        self, users: Iterable[User],
    ) -> list[tuple[User, frozenset[Identity] | None, frozenset[Identity]]]:
        """`(user, loaded, now)` for each of `users` (changed ones) whose identities are not
        those loaded (store.save_identities' rows), in the order given. `now` is what the
        index holds for a user held as that very state (each `put` keeps it equal to
        `identities(user)`), derived only for another state: ~600 instructions a changed
        user fewer (issue 14, session 17)."""
        held, sigs, loaded = self._users, cast(_Held, self._sigs), self._loaded
        out: list[tuple[User, frozenset[Identity] | None, frozenset[Identity]]] = []
        for user in users:
            user_id = user.id
            now = cast("frozenset[Identity]", sigs[user_id][7]) if held.get(user_id) is user else identities(user)
            old = loaded.get(user_id)
            if old is None or (now is not old and now != old):  # a new user's are all new (no set compared to None)
                out.append((user, old, now))
        return out

    def index(self) -> dict[tuple[str, str, str], set[str]]:
        """The index as `(channel, kind, value)` → ids, every bucket (empty ones too):
        for tests and tools, built on each call."""
        return {(channel_id, kind, value): ids
                for channel_id, kinds in self._by_key.items()
                for kind, values in kinds.items()
                for value, ids in values.items()}

    def settle(self) -> None:
        """Start a new batch on the same users (a directory kept across batches, as a
        rebuild keeps its channels' users): nothing has changed yet, and the current
        identities count as the loaded ones."""
        sigs = cast(_Held, self._sigs)
        for user_id in self.changed:
            sig = sigs.get(user_id)
            if sig is None:
                self._loaded.pop(user_id, None)
            else:
                self._loaded[user_id] = cast("frozenset[Identity]", sig[7])
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
        bucket = self._bucket(channel_id, kind, value)
        if not bucket:
            return []
        users = [self._users[i] for i in sorted(bucket)]
        if qualified_only:
            users = [u for u in users if (kind, value, True) in self._sigs[u.id][7]]
        return users

    def pending_for(self, channel_id: str, target_id: str) -> list[User]:
        """Sources whose approved unification waits for this member's login (U5)."""
        bucket = self._bucket(channel_id, "pending", target_id)
        if not bucket:
            return []
        return [self._users[i] for i in sorted(bucket)]

    def put(self, user: User) -> None:
        """Replace a user's state (or add a new user) and re-index the keys that moved."""
        user_id = user.id
        sig = self._sigs.get(user_id)
        if sig is None:  # not held (every held user has a signature, `_index`): a new user
            self._index(user, identities(user))
            self.changed[user_id] = user
            return
        veils = user.veils.keys()
        f = user.fields
        if (sig[0] == user.deleted and sig[1] == user.merged_into and sig[2] == user.member_id
                and sig[3] == user.pending_into and sig[4] == f.get(EMAIL) and sig[5] == f.get(MOBILE)):
            self._users[user_id] = user
            self.changed[user_id] = user
            if veils != sig[6]:  # only veils moved (a login merging a visitor adds its veils)
                self._move_veils(user, sig[6], veils)
            return
        old = sig[7]
        keys = identities(user)
        if keys == old:  # most changes (a visit, a profile edit) keep the lookup keys
            self._users[user_id] = user
            self._sigs[user_id] = _signature(user, old)
        else:
            # Only the keys that moved (issue 14). A bucket is named without the
            # qualification: a contact that only became qualified (or not) stays in it.
            # A bucket left empty stays, as it always did here (evict drops empty ones).
            kinds, channel_id = self._kinds(user.channel_id), user.channel_id
            for kind, value, q in old - keys:
                if (kind, value, not q) not in keys:
                    bucket = self._bucket(channel_id, kind, value)
                    if bucket is not None:
                        bucket.discard(user_id)
            for kind, value, _q in keys - old:
                _add(kinds, kind, value, user_id)
            self._users[user_id] = user
            self._sigs[user_id] = _signature(user, keys)
        self.changed[user_id] = user

    def _move_veils(self, user: User, was: frozenset[str], now: KeysView[str]) -> None:
        """Everything `identities` reads but the veils is as indexed: only veil keys
        move (none for a dead user, which has no keys and stays dead)."""
        user_id = user.id
        # A frozenset first: `frozenset - dict_keys` is computed by the keys view and is a
        # plain set, whatever typeshed says (the compiled core checks the difference).
        veils = frozenset(now)
        sig = self._sigs[user_id]
        ids = sig[7]
        if user.alive:
            gone, came = was - veils, veils - was
            kinds = self._kinds(user.channel_id)
            by_veil = kinds.get("veil")
            if by_veil is None:
                by_veil = kinds["veil"] = {}
            for veil in gone:
                bucket = by_veil.get(veil)
                if bucket is not None:
                    bucket.discard(user_id)
            for veil in came:
                bucket = by_veil.get(veil)
                if bucket is None:
                    by_veil[veil] = {user_id}
                else:
                    bucket.add(user_id)
            ids = (ids - {("veil", v, True) for v in gone}) | {("veil", v, True) for v in came}
        self._sigs[user_id] = (*sig[:6], veils, ids)  # type: ignore[assignment]

    def touched(self, user: User) -> None:
        """`user`, held here, was changed in place in nothing `identities` reads (a
        plain visit, sdk.plain_visit): it is to be written back, its keys stay."""
        self.changed[user.id] = user

    def forget(self, user_id: str) -> None:
        """Undo the creation of a user (a rejected fact leaves nothing behind)."""
        sig = self._sigs.pop(user_id, None)
        for kind, value, _q in _NO_KEYS if sig is None else sig[7]:
            bucket = self._bucket(self._users[user_id].channel_id, kind, value)
            if bucket is not None:
                bucket.discard(user_id)
        self._users.pop(user_id, None)
        self.changed.pop(user_id, None)

    def users(self) -> Iterable[User]:
        return self._users.values()

    # -- kept across batches (services/projection/resident.py) ---------------------------

    def admit(self, user: User) -> None:
        """Hold a user as loaded from the store: indexed, unchanged."""
        keys = identities(user)
        self._index(user, keys)
        self._loaded[user.id] = keys

    def evict(self, user_id: str) -> frozenset[Identity]:
        """Stop holding an unchanged user (a memory budget); the keys it was found by."""
        # `del` and `in`, not `dict.pop(key, default)`: a method call compiled (~380
        # instructions each), its default built before the call. A held user has its
        # signature (`_index`); `_loaded` and `changed` may lack it.
        users, sigs, loaded, changed = self._users, self._sigs, self._loaded, self.changed
        user = users[user_id]
        del users[user_id]
        keys = cast("frozenset[Identity]", cast(_Held, sigs)[user_id][7])
        del sigs[user_id]
        kinds = self._by_key.get(user.channel_id)
        if kinds is not None:
            for kind, value, _q in keys:
                values = kinds.get(kind)
                if values is not None:
                    bucket = values.get(value)
                    if bucket is not None:
                        bucket.discard(user_id)
                        if not bucket:
                            del values[value]
        if user_id in loaded:
            del loaded[user_id]
        if user_id in changed:
            del changed[user_id]
        return keys

    def holders(self, channel_id: str, kind: str, value: str) -> frozenset[str]:
        """Ids of the users held here that are found by the key (any qualification)."""
        bucket = self._bucket(channel_id, kind, value)
        return frozenset() if bucket is None else frozenset(bucket)

    def holding(self, key: tuple[str, str, str]) -> Collection[str]:
        """`holders` of a `(channel_id, kind, value)` key as it is held here, not copied:
        to be read at once, before the directory changes (resident.reached, per key
        of a batch)."""
        channel_id, kind, value = key
        bucket = self._bucket(channel_id, kind, value)
        return () if bucket is None else bucket

    def _index(self, user: User, keys: frozenset[Identity]) -> None:
        """Hold `user` and find it by `keys`, its identities."""
        user_id = user.id
        self._users[user_id] = user
        self._sigs[user_id] = _signature(user, keys)
        if keys:
            kinds = self._kinds(user.channel_id)
            for kind, value, _q in keys:
                _add(kinds, kind, value, user_id)

    def _kinds(self, channel_id: str) -> dict[str, dict[str, set[str]]]:
        """The channel's part of the index, made when first needed."""
        kinds = self._by_key.get(channel_id)
        if kinds is None:
            kinds = self._by_key[channel_id] = {}
        return kinds

    def _bucket(self, channel_id: str, kind: str, value: str) -> set[str] | None:
        """The ids found by the key, as held (None: never indexed)."""
        kinds = self._by_key.get(channel_id)
        if kinds is None:
            return None
        values = kinds.get(kind)
        if values is None:
            return None
        return values.get(value)

    def _one(self, channel_id: str, kind: str, value: str) -> User | None:
        ids = self._bucket(channel_id, kind, value)
        if not ids:
            return None
        # A veil or member id belongs to one live user; the store's unique index holds it.
        if len(ids) == 1:  # the usual case, without min(): a generic call compiled (~1.2 k instructions)
            for only in ids:
                return self._users[only]
        return self._users[min(ids)]


def _add(kinds: dict[str, dict[str, set[str]]], kind: str, value: str, user_id: str) -> None:
    """Find `user_id` by `(kind, value)` in a channel's part of the index."""
    values = kinds.get(kind)
    if values is None:
        kinds[kind] = {value: {user_id}}
        return
    bucket = values.get(value)
    if bucket is None:  # no empty set built for a key already held
        values[value] = {user_id}
    else:
        bucket.add(user_id)
