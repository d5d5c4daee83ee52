"""External lookups (seed 004 §2, 顧客情報連動): the company's own customer system.

The core never calls anything. Definitions are facts (`lookup.define` / `lookup.remove`)
that the store keeps per channel; what a lookup brought back arrives as a fact too
(`lookup.result`, actor `system`, published by services/lookup/worker.py after the
call), so replay rebuilds the same state without the network.

Field connections (フィールド接続) fill only fields with no value yet: a value a
customer or staff already gave is never replaced by a remote system's answer, whatever
its provenance. The filled values are unqualified (C4: Unifier cannot tell whether the
remote data is right) unless the definition says the company vouches for it; the
lookup's name and the keys it filled are kept with the result (`lookup_results`), which
is the provenance staff see.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .core import Work, handles
from .profile import PREFIX, profile_values, set_values
from .user import User
from .values import Rejected


@dataclass(frozen=True, slots=True)
class LookupChange:
    """One change for the store, in fact order: `define` (definition), `remove`, or
    `result` (a lookup's answer recorded on user `user_id`)."""

    channel_id: str
    op: Literal["define", "remove", "result"]
    name: str
    definition: dict[str, Any] | None = None
    user_id: str | None = None
    event_id: str | None = None
    at: int = 0
    record: dict[str, Any] = field(default_factory=dict)


_DEFINITION_FIELDS = ("url", "method", "encrypted", "wrappedKey", "params", "results", "connections", "media", "vouched")


@handles("lookup.define")
def on_define(w: Work) -> None:
    msg = w.fact.msg
    definition = msg.model_dump(mode="json", include=set(_DEFINITION_FIELDS))
    w.outcome.lookups += (LookupChange(w.channel_id, "define", msg.name, definition=definition),)


@handles("lookup.remove")
def on_remove(w: Work) -> None:
    w.outcome.lookups += (LookupChange(w.channel_id, "remove", w.fact.msg.name),)


def _survivor(w: Work, user_id: str) -> User:
    """The answer belongs to the person: a user merged while the lookup ran is followed
    to its survivor (as marketing deliveries are, U4)."""
    user = w.directory.resolve(user_id)
    if user is None or user.deleted or user.channel_id != w.channel_id:
        raise Rejected("unknown_user", f"no user {user_id!r} in channel {w.channel_id!r}")
    return user


@handles("lookup.result")
def on_result(w: Work) -> None:
    """Record the answer; fill the connected fields that are empty. A value the channel's
    field type refuses (P2) is skipped and named in the record, the rest still fill."""
    msg = w.fact.msg
    user = _survivor(w, msg.userId)
    filled: list[str] = []
    kept: list[str] = []
    refused: dict[str, str] = {}
    values = {}
    if msg.status == "ok":
        member = msg.qualified and user.type == "member"
        for key, raw in sorted(msg.fill.items()):
            full = PREFIX + key
            if raw is None or user.value(full) is not None:
                kept.append(full)
                continue
            try:
                values.update(profile_values({key: raw}, w.settings, qualified=msg.qualified, member=member, at=w.at))
            except Rejected as err:
                refused[full] = err.reason
                continue
    if values:
        changed = user.copy()
        set_values(changed, values)  # U3 still decides: an explicit clear by staff stays
        filled = [k for k, v in values.items() if changed.fields.get(k) is v]
        kept += [k for k in values if k not in filled]
        if filled:
            w.put(changed)
    record: dict[str, Any] = {
        "name": msg.name, "status": msg.status, "values": msg.values, "filled": filled, "kept": kept,
        "causationId": msg.causationId,
    }
    if refused:
        record["refused"] = refused
    if msg.error is not None:
        record["error"] = msg.error.model_dump()
    w.outcome.lookups += (
        LookupChange(w.channel_id, "result", msg.name, user_id=user.id, event_id=w.fact.event_id, at=w.at, record=record),
    )
