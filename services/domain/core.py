"""The pure core: apply one inbound fact to the users it touches.

`apply(directory, fact, settings)` runs the fact's handler (a plain function listed in
HANDLERS), then turns every touched user's before → after into `user-changed`
publications. No I/O, no clock, no randomness: the event time and every id come from
the fact, so replaying the same facts rebuilds the same state.
A rejected fact changes nothing: the directory is restored and the reason returned.

Handlers change users in place (`Work.edit`) behind an undo log, the `Snapshot` of what
each user was before the fact; a handler may still replace a user by a new state
(`Work.put` of a copy, a merge's result, a husk). docs/design.md, "The lean core".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any, Final

from . import limits, mu
from .channel import ChannelSettings
from .directory import Directory
from .limits import check_user_size, user_chars
from .publication import Publication, publish
from .unification import MergeRecord
from .user import FIELD_NAMES, Platform, User, bare_user
from .values import Rejected

if TYPE_CHECKING:  # grades registers its handlers here, so it imports this module
    from .grades import GradeChange
    from .lookups import LookupChange


@dataclass(frozen=True, slots=True)
class Fact:
    """An inbound message with its event time: `occurredAt` bounded by the broker
    timestamp (a producer's clock cannot date a fact in the future of the log)."""

    msg: Any  # a contracts.inbound model, or the fast decoder's struct of it (contracts/decode.py)
    at: int
    # The envelope's fields, read from `msg` once: the message is `Any` to mypyc, so each
    # read of it is a generic attribute lookup (~160 instructions), and the projection's
    # loop, the keys and the core read these three ~8 times a fact (issue 14, session 12).
    type: str = field(init=False, repr=False, compare=False)
    channel_id: str = field(init=False, repr=False, compare=False)
    event_id: str = field(init=False, repr=False, compare=False)

    # Written out, not generated: mypyc compiles the methods a class spells, while the
    # dataclass-generated __init__ runs interpreted (~0.5 µs against ~0.05 µs compiled;
    # docs/decisions.md, "Issue 14, session 10: the compiled core's hot spots").
    def __init__(self, msg: Any, at: int) -> None:
        object.__setattr__(self, "msg", msg)  # frozen: the dataclass's own way to set a field
        object.__setattr__(self, "at", at)
        object.__setattr__(self, "type", msg.type)
        object.__setattr__(self, "channel_id", msg.channelId)
        object.__setattr__(self, "event_id", msg.eventId)


@dataclass(frozen=True, slots=True)
class Activity:
    """A chat message or behaviour event, stored apart from the user and re-pointed to
    the survivor on merge (U4)."""

    channel_id: str
    user_id: str
    kind: str  # "chat" | "event"
    event_id: str
    at: int
    body: dict[str, Any]

    # Written out so mypyc compiles it (see Fact.__init__).
    def __init__(self, channel_id: str, user_id: str, kind: str, event_id: str, at: int, body: dict[str, Any]) -> None:
        object.__setattr__(self, "channel_id", channel_id)
        object.__setattr__(self, "user_id", user_id)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "event_id", event_id)
        object.__setattr__(self, "at", at)
        object.__setattr__(self, "body", body)


@dataclass(slots=True, init=False)
class Outcome:
    rejection: Rejected | None
    publications: list[Publication]
    merges: list[MergeRecord]
    activities: list[Activity]
    # An applied fact whose merges were withheld (G2): the projection dead-letters a copy
    # of the fact with this reason, so SREs and staff see why nothing merged.
    notices: list[Rejected]
    # Deleted users (B2): their chat messages stay, without the author's personal data.
    erased: list[str]
    # Changes of the channel's grades (D2), in order, for the store to write.
    grades: list[GradeChange]
    # Lookup definitions and answers (seed 004 §2), in order, for the store to write.
    lookups: list[LookupChange]

    def __init__(
        self, rejection: Rejected | None = None, *, publications: list[Publication] | None = None,
        activities: list[Activity] | None = None,
    ) -> None:
        # Written out (every fact builds one): the dataclass's default factories cost
        # ~0.6 µs more, as much as a third of a plain visit's own work.
        self.rejection = rejection
        self.publications = [] if publications is None else publications
        self.activities = [] if activities is None else activities
        self.merges, self.notices, self.erased, self.grades, self.lookups = [], [], [], [], []


_STATE = attrgetter(*FIELD_NAMES)  # every attribute of a user, in field order, in one call
_AT = {name: i for i, name in enumerate(FIELD_NAMES)}
_TYPE, _VERSION, _DELETED, _MERGED_INTO = _AT["type"], _AT["version"], _AT["deleted"], _AT["merged_into"]
_BLOCKED, _MASKED = _AT["blocked"], _AT["masked"]
# The attributes `user_view` shows, but for the quiet ones (publication._QUIET) and the
# containers compared separately (fields, the platforms): equal before and after means
# the fact made no visible change (publication._diff compares the same attributes).
_SHOWN_NAMES = (
    "type", "masked", "member_id", "tags", "import_tags", "unsubscribe_email", "unsubscribe_texting", "blocked",
    "language", "city", "country", "sessions_count", "created_at", "delivered", "merged_user_ids", "id", "channel_id",
)
# What the size of a user (limits.user_chars) is counted from, but for the containers
# compared separately (fields, veils' keys, the platforms' devices).
_SIZED_NAMES = ("tags", "import_tags", "delivered", "merged_user_ids", "offered", "mobile_veils", "member_id",
                "language", "city", "country")
# Each read from a user (attrgetter) and from a snapshot's state (itemgetter), in C.
_SHOWN, _SHOWN_WAS = attrgetter(*_SHOWN_NAMES), itemgetter(*(_AT[n] for n in _SHOWN_NAMES))
_SIZED, _SIZED_WAS = attrgetter(*_SIZED_NAMES), itemgetter(*(_AT[n] for n in _SIZED_NAMES))


class Snapshot:
    """The undo log of one user a fact changes in place: what it was before the fact.

    Taken once, at the fact's first `Work.edit` of the user: every attribute (one
    attrgetter call), and copies of the only containers handlers change in place — the
    profile fields, the veils, and each platform's counters and device. Lists are never
    changed in place (handlers assign a new list; user.py says so), so holding the old
    list is holding the old value. ~1 µs, against ~3–4 µs for copying the whole user,
    and it allocates four dicts instead of a dozen containers.

    It answers what the end of a fact asks without rebuilding the old user: did anything
    visible change (no message if not), did anything the size counts change (no size
    check if not), did the user count as MU (I17). The old user itself is built only
    when a message or the size check needs it (`before()`), and `restore()` puts every
    attribute back when the fact is rejected."""

    __slots__ = ("user", "state", "fields", "veils", "web", "mobile", "_before")

    def __init__(self, user: User) -> None:
        self.user = user
        self.state: tuple[Any, ...] = _STATE(user)
        self.fields = dict(user.fields)
        self.veils = dict(user.veils)
        self.web = (user.web, user.web.sessions_count, user.web.last_seen_at, dict(user.web.device))
        self.mobile = (user.mobile, user.mobile.sessions_count, user.mobile.last_seen_at, dict(user.mobile.device))
        self._before: User | None = None

    def restore(self) -> User:
        """Put every attribute of the user back as it was before the fact; the user."""
        user = self.user
        for name, value in zip(FIELD_NAMES, self.state, strict=True):
            setattr(user, name, value)
        user.fields, user.veils = dict(self.fields), dict(self.veils)
        for platform, sessions, seen, device in (self.web, self.mobile):
            platform.sessions_count, platform.last_seen_at, platform.device = sessions, seen, dict(device)
        return user

    def before(self) -> User:
        """The user as it was before the fact, as a User (built once, on demand)."""
        if self._before is None:
            old = bare_user()
            for name, value in zip(FIELD_NAMES, self.state, strict=True):
                setattr(old, name, value)
            old.fields, old.veils = self.fields, self.veils
            old.web = Platform(self.web[1], self.web[2], self.web[3])
            old.mobile = Platform(self.mobile[1], self.mobile[2], self.mobile[3])
            self._before = old
        return self._before

    @property
    def type(self) -> str:
        return self.state[_TYPE]  # type: ignore[no-any-return]

    @property
    def version(self) -> int:
        return self.state[_VERSION]  # type: ignore[no-any-return]

    def mu_visible(self) -> bool:
        """mu.mu_visible of the user before the fact."""
        s = self.state
        return s[_TYPE] != "anonymous" and not s[_DELETED] and s[_MERGED_INTO] is None and not s[_BLOCKED] and not s[_MASKED]

    def looks_the_same(self, after: User) -> bool:
        """Nothing `user_view` shows moved but the quiet keys (publication._diff empty)."""
        if after.fields != self.fields or _SHOWN(after) != _SHOWN_WAS(self.state):
            return False
        web, mobile = after.web, after.mobile
        return (
            web.sessions_count == self.web[1] and web.device == self.web[3]
            and mobile.sessions_count == self.mobile[1] and mobile.device == self.mobile[3]
        )

    def same_size(self, after: User) -> bool:
        """Nothing limits.user_chars counts moved: the size is the old one."""
        return (
            after.fields == self.fields and after.veils.keys() == self.veils.keys()
            and _SIZED(after) == _SIZED_WAS(self.state)
            and after.web.device == self.web[3] and after.mobile.device == self.mobile[3]
        )


class Work:
    """What a handler gets: the directory, the fact, the channel settings, and the
    outcome it fills. Remembers each touched user's state before this fact: None (the
    fact created it), the stored User it replaced (`put` of a new state), or the
    Snapshot of a user it changed in place (`edit`)."""

    def __init__(self, directory: Directory, fact: Fact, settings: ChannelSettings) -> None:
        self.directory = directory
        self.fact = fact
        self.settings = settings
        self.outcome = Outcome()
        self.before: dict[str, User | Snapshot | None] = {}
        # Users this fact adds to `directory.changed` (undone on rollback). Tracked in
        # `put` rather than by copying `changed` here, which made a batch quadratic.
        self._newly_changed: list[str] = []

    @property
    def at(self) -> int:
        return self.fact.at

    @property
    def channel_id(self) -> str:
        return self.fact.channel_id

    def edit(self, user: User) -> User:
        """`user`, to be changed in place by this fact (and then `put`). The first edit of
        a user in a fact takes its Snapshot, so a rejection restores it and the end of
        the fact sees what it was. A state the directory no longer holds (the handler
        kept an older one) is copied instead, as every change was before the lean core."""
        if self.directory.get(user.id) is not user:
            return user.copy()
        if user.id not in self.before:
            self.before[user.id] = Snapshot(user)
            if user.id not in self.directory.changed:
                self._newly_changed.append(user.id)
        return user

    def put(self, user: User) -> None:
        if user.id not in self.before:
            self.before[user.id] = self.directory.get(user.id)
            if user.id not in self.directory.changed:
                self._newly_changed.append(user.id)
        self.directory.put(user)

    def made(self, user: User) -> bool:
        """Whether `user` may go on being changed in place by this fact: the directory
        holds it and its state before the fact is remembered (a Snapshot, a replaced
        User, or None for a user this fact created). last_login_at and the like only:
        the directory does not re-index it."""
        return user.id in self.before and self.before[user.id] is not user and self.directory.get(user.id) is user

    def before_user(self, user_id: str) -> User | None:
        """The user as it was before this fact (None: the fact created it)."""
        old = self.before[user_id]
        return old.before() if isinstance(old, Snapshot) else old

    def rollback(self) -> None:
        for user_id, old in self.before.items():
            if old is None:
                self.directory.forget(user_id)
            elif isinstance(old, Snapshot):
                self.directory.put(old.restore())  # back in, re-indexed if its keys had moved
            else:
                self.directory.put(old)
        for user_id in self._newly_changed:
            self.directory.changed.pop(user_id, None)


Handler = Callable[[Work], None]
HANDLERS: Final[dict[str, Handler]] = {}

# A plain path for the commonest facts (sdk.plain_visit, …): it applies a fact whose
# effect it can tell in advance — decided first, then a few assignments, no undo log,
# no copy, no diff — and returns its Outcome, or returns None *before changing
# anything* when the fact is not that plain (the handler then applies it as any other
# fact). Whatever it raises, it raises while deciding (a refusal, or a bug): the handler
# then meets it again and refuses the fact, undoing what it did. Same outcome and state
# as the handler, byte for byte (tests/unit/test_core_differential.py).
PlainHandler = Callable[[Directory, Fact, ChannelSettings, bool], "Outcome | None"]
PLAIN: Final[dict[str, PlainHandler]] = {}


def handles(*types: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for t in types:
            HANDLERS[t] = fn
        return fn

    return register


def handles_plainly(*types: str) -> Callable[[PlainHandler], PlainHandler]:
    def register(fn: PlainHandler) -> PlainHandler:
        for t in types:
            PLAIN[t] = fn
        return fn

    return register


def apply(directory: Directory, fact: Fact, settings: ChannelSettings, *, messages: bool = True) -> Outcome:
    """`messages=False`: the state moves exactly the same, no `user-changed` message is
    built (a rebuild's: they were published when the facts first happened)."""
    plain = PLAIN.get(fact.type)
    if plain is not None:
        try:
            done = plain(directory, fact, settings, messages)
        except Exception:  # raised while deciding, before any change
            done = None  # the handler meets it again: refused with its reason, or internal_error
        if done is not None:
            return done
    work = Work(directory, fact, settings)
    handler = HANDLERS.get(fact.type)
    if handler is None:
        work.outcome.rejection = Rejected("unknown_type", f"no handler for type {fact.type!r}")
        return work.outcome
    budget = settings.mu_budget
    counted = budget.visible if budget is not None else 0
    try:
        handler(work)
        for user_id, before in work.before.items():
            after = directory.get(user_id)
            if isinstance(before, Snapshot):
                if after is None or (after is before.user and before.same_size(after)):
                    continue  # what the size counts did not move: the check would pass
                if user_chars(after) <= limits.MAX_USER_CHARS:
                    continue  # within the limit: the old size is not needed
                before = before.before()
            check_user_size(before, after)
        if budget is not None:
            mu.account(work, budget)  # I17, whatever the fact
        for user_id, before in work.before.items():
            after = directory.get(user_id)
            assert after is not None
            if isinstance(before, Snapshot):
                if after.merged_into is None and not after.deleted:
                    if after.type == "anonymous" or (before.version > 0 and before.looks_the_same(after)):
                        continue  # publish(): nothing for anonymous users (C1), nor for quiet changes
                # Never published before: publish() reads nothing else of the old user
                # (a first message is `created`, built from `after` alone).
                before = before.before() if before.version > 0 else None
            published, pubs = publish(before, after, fact.event_id, fact.at, messages=messages)
            if published is not after:  # publish moves the version of a working copy in place
                directory.put(published)
            work.outcome.publications.extend(pubs)
    except Rejected as rejected:
        work.rollback()
        if budget is not None:
            budget.visible = counted
        return Outcome(rejection=rejected)
    except Exception as err:
        # A bug met by this fact (an assertion, a rule's exception escaping): the fact
        # is the one that cannot be applied, so it is dead-lettered and nothing of it
        # stays; the same happens in a rebuild. The letter names the exception's type,
        # never a stack trace; the projection logs the trace (`__cause__`).
        work.rollback()
        if budget is not None:
            budget.visible = counted
        internal = Rejected("internal_error", f"{type(err).__name__}: {str(err)[:200]}")
        internal.__cause__ = err
        return Outcome(rejection=internal)
    return work.outcome


# Register the handlers (import for their side effect on HANDLERS).
from . import commands, grades, imports, lookups, sdk  # noqa: E402,F401
