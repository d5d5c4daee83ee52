"""Grades (D2): staff label customers with a name and a colour, keyed by e-mail, mobile
number or memberId.

A grade is held by *keys*, not by users: a customer shows every grade assigned to its
memberId or to a qualified contact it holds, so the grade survives merges (the survivor
holds the keys) and imports (they bring the keys) without any user being rewritten.
Which grades a user shows is therefore computed when it is read
(`services/store/queries.grades_of`); the core only keeps the channel's definitions
(to refuse an undefined grade) and hands each change to the store, in fact order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .core import Work, handles
from .hygiene import clean_email, clean_member_id, clean_mobile
from .values import Rejected

HolderKind = Literal["email", "mobileNumber", "memberId"]

# The matching form of each key kind, the same as identity lookups use (U9, G1).
CLEAN: dict[str, Callable[[str], str]] = {
    "email": clean_email,
    "mobileNumber": clean_mobile,
    "memberId": clean_member_id,
}


@dataclass(frozen=True, slots=True)
class GradeChange:
    """One change of a channel's grades, for the store to write in order.

    op: `define` (name, colour), `remove` (name, and every holder of it),
    `assign` / `unassign` (name, kind, value)."""

    channel_id: str
    op: Literal["define", "remove", "assign", "unassign"]
    name: str
    colour: str | None = None
    kind: str | None = None
    value: str | None = None


def _known(w: Work, name: str) -> dict[str, str]:
    grades = w.directory.grades.of(w.channel_id)
    if name not in grades:
        raise Rejected("unknown_grade", f"no grade {name!r} in channel {w.channel_id!r}; define it first (D2)")
    return grades


def _holder(kind: str, value: str) -> str:
    """The key in its matching form (U9): what an identity lookup would compare."""
    return CLEAN[kind](value)


@handles("grade.define")
def on_define(w: Work) -> None:
    """Define a grade, or give an existing one a new colour (a name is unique per channel)."""
    msg = w.fact.msg
    colour = msg.colour.lower()
    grades = w.directory.grades.of(w.channel_id)
    if grades.get(msg.name) == colour:
        return
    grades[msg.name] = colour
    w.outcome.grades += (GradeChange(w.channel_id, "define", msg.name, colour=colour),)


@handles("grade.remove")
def on_remove(w: Work) -> None:
    """Remove a grade everywhere: its definition and every holder."""
    msg = w.fact.msg
    grades = _known(w, msg.name)
    del grades[msg.name]
    w.outcome.grades += (GradeChange(w.channel_id, "remove", msg.name),)


@handles("grade.assign", "grade.unassign")
def on_assign(w: Work) -> None:
    """Give a key a grade, or take it away (a key without it: nothing to do). The value
    is kept in its matching form, so `Taro@Example.jp ` holds what `taro@example.jp` holds."""
    msg = w.fact.msg
    _known(w, msg.name)
    value = _holder(msg.kind, msg.value)
    op: Literal["assign", "unassign"] = "assign" if msg.type == "grade.assign" else "unassign"
    w.outcome.grades += (GradeChange(w.channel_id, op, msg.name, kind=msg.kind, value=value),)
