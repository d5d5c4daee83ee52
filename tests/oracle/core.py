"""The pure core: apply one inbound fact to the users it touches.

`apply(directory, fact, settings)` runs the fact's handler (a plain function listed in
HANDLERS), then turns every touched user's before → after into `user-changed`
publications. No I/O, no clock, no randomness: the event time and every id come from
the fact, so replaying the same facts rebuilds the same state.
A rejected fact changes nothing: the directory is restored and the reason returned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from services.domain.values import Rejected
from tests.oracle import mu
from tests.oracle.channel import ChannelSettings
from tests.oracle.directory import Directory
from tests.oracle.limits import check_user_size
from tests.oracle.publication import Publication, publish
from tests.oracle.unification import MergeRecord
from tests.oracle.user import User

if TYPE_CHECKING:  # grades registers its handlers here, so it imports this module
    from tests.oracle.grades import GradeChange
    from tests.oracle.lookups import LookupChange


@dataclass(frozen=True, slots=True)
class Fact:
    """An inbound message with its event time: `occurredAt` bounded by the broker
    timestamp (a producer's clock cannot date a fact in the future of the log)."""

    msg: Any  # a contracts.inbound model
    at: int

    @property
    def channel_id(self) -> str:
        return self.msg.channelId

    @property
    def event_id(self) -> str:
        return self.msg.eventId


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


@dataclass(slots=True)
class Outcome:
    rejection: Rejected | None = None
    publications: list[Publication] = field(default_factory=list)
    merges: list[MergeRecord] = field(default_factory=list)
    activities: list[Activity] = field(default_factory=list)
    # An applied fact whose merges were withheld (G2): the projection dead-letters a copy
    # of the fact with this reason, so SREs and staff see why nothing merged.
    notices: list[Rejected] = field(default_factory=list)
    # Deleted users (B2): their chat messages stay, without the author's personal data.
    erased: list[str] = field(default_factory=list)
    # Changes of the channel's grades (D2), in order, for the store to write.
    grades: list[GradeChange] = field(default_factory=list)
    # Lookup definitions and answers (seed 004 §2), in order, for the store to write.
    lookups: list[LookupChange] = field(default_factory=list)


class Work:
    """What a handler gets: the directory, the fact, the channel settings, and the
    outcome it fills. Remembers each touched user's state before this fact."""

    def __init__(self, directory: Directory, fact: Fact, settings: ChannelSettings) -> None:
        self.directory = directory
        self.fact = fact
        self.settings = settings
        self.outcome = Outcome()
        self.before: dict[str, User | None] = {}
        # Users this fact adds to `directory.changed` (undone on rollback). Tracked in
        # `put` rather than by copying `changed` here, which made a batch quadratic.
        self._newly_changed: list[str] = []

    @property
    def at(self) -> int:
        return self.fact.at

    @property
    def channel_id(self) -> str:
        return self.fact.channel_id

    def put(self, user: User) -> None:
        if user.id not in self.before:
            self.before[user.id] = self.directory.get(user.id)
            if user.id not in self.directory.changed:
                self._newly_changed.append(user.id)
        self.directory.put(user)

    def made(self, user: User) -> bool:
        """Whether `user` is a working copy this fact put and the directory still holds:
        nobody else has it (states from before the fact are never changed in place), so
        the handler may go on changing it without copying. last_login_at and the like
        only: the directory does not re-index it."""
        return user.id in self.before and self.before[user.id] is not user and self.directory.get(user.id) is user

    def rollback(self) -> None:
        for user_id, old in self.before.items():
            if old is None:
                self.directory.forget(user_id)
            else:
                self.directory.put(old)
        for user_id in self._newly_changed:
            self.directory.changed.pop(user_id, None)


Handler = Callable[[Work], None]
HANDLERS: dict[str, Handler] = {}


def handles(*types: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for t in types:
            HANDLERS[t] = fn
        return fn

    return register


def apply(directory: Directory, fact: Fact, settings: ChannelSettings, *, messages: bool = True) -> Outcome:
    """`messages=False`: the state moves exactly the same, no `user-changed` message is
    built (a rebuild's: they were published when the facts first happened)."""
    work = Work(directory, fact, settings)
    handler = HANDLERS.get(fact.msg.type)
    if handler is None:
        work.outcome.rejection = Rejected("unknown_type", f"no handler for type {fact.msg.type!r}")
        return work.outcome
    budget = settings.mu_budget
    counted = budget.visible if budget is not None else 0
    try:
        handler(work)
        for user_id, before in work.before.items():
            check_user_size(before, directory.get(user_id))
        if budget is not None:
            mu.account(work, budget)  # I17, whatever the fact
        for user_id, before in work.before.items():
            after = directory.get(user_id)
            assert after is not None
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
from tests.oracle import commands, grades, imports, lookups, sdk  # noqa: E402,F401
