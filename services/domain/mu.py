"""The MU limit (C5, I17): new leads and members beyond a channel's limit are masked,
whatever created them — an SDK chat or contact, a login, the API, staff or an import.

The projection attaches a `MuBudget` to the settings of every channel with a limit: how
many visible MU the channel had when the batch (or a rebuild's chunk) began. After each
applied fact the core adds what that fact changed and masks the users it made MU while
the channel is over its limit, so the count is exact in apply order and a rebuild masks
the same users as the live service did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .user import User

if TYPE_CHECKING:  # core imports this module
    from .core import Work


def mu_visible(user: User | None) -> bool:
    """C5/I17: a lead or member that counts against the MU limit (blocked users do not;
    masked ones are already beyond it)."""
    return user is not None and user.type != "anonymous" and user.alive and not user.blocked and not user.masked


@dataclass(slots=True)
class MuBudget:
    """A channel's MU limit and its visible MU count, kept current fact by fact."""

    limit: int
    visible: int

    def has_room(self) -> bool:
        return self.visible < self.limit


def account(w: Work, budget: MuBudget) -> None:
    """After a fact: count what it changed; while the channel is over its limit, mask the
    users this fact made MU (new, or anonymous before), in the order it touched them.
    Users that were MU already are never masked by it (I17: an update never masks or
    unmasks), nor an unblocked user (B1 lets staff take it back)."""
    from .core import Snapshot  # core imports this module

    fresh: list[User] = []
    for user_id, before in w.before.items():
        after = w.directory.get(user_id)
        now = mu_visible(after)
        if isinstance(before, Snapshot):  # changed in place: what it was is in the snapshot
            was, was_new = before.mu_visible(), before.type == "anonymous"
        else:
            was, was_new = mu_visible(before), before is None or before.type == "anonymous"
        budget.visible += now - was
        if now and after is not None and was_new:
            fresh.append(after)
    for user in fresh:
        if budget.visible <= budget.limit:
            return
        masked = user.copy()
        masked.masked = True
        w.put(masked)
        budget.visible -= 1
