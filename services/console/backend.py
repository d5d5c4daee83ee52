"""What the console needs from the rest of the service: the HTTP API's own auth, read
and command functions (docs/design.md, "The HTTP API and the console": one code path
per action, two presentations). The API's app factory builds a `Backend` from them and
hands it to the console; the console never writes state itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from services.domain.user import User

SCOPES = ("read", "write", "admin")


@dataclass(frozen=True, slots=True)
class StaffKey:
    """An API key as the console sees it: never the key itself."""

    id: str
    name: str
    scope: str  # read | write | admin
    channel: str | None  # None: every channel

    def allows(self, needed: str) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(needed)

    @property
    def admin(self) -> bool:
        return self.scope == "admin"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a command: applied (with the user when there is one), rejected
    (with the dead letter's code and reason), or still pending when the wait ran out."""

    state: str  # applied | rejected | pending
    event_id: str
    user: dict[str, Any] | None = None
    code: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Page:
    items: list[dict[str, Any]]
    next: str | None = None


@dataclass(frozen=True, slots=True)
class ImportStart:
    import_id: str | None = None
    refused: str | None = None  # why, when the import was refused (I12, I13, mapping)


@dataclass(frozen=True, slots=True)
class DeadLetterPage:
    """The dead-letter screen: how many letters of each code the topic holds (all of
    them, however many), the newest `limit` letters of the chosen code, newest first,
    each with `retried` (already re-published once), and how many match in all."""

    counts: dict[str, int]
    letters: list[dict[str, Any]]
    matching: int


@dataclass(frozen=True, slots=True)
class Filters:
    """The customer list's search (issue 13, item 1)."""

    q: str | None = None
    type: str | None = None  # lead | member | anonymous; None: leads and members
    tag: str | None = None
    grade: str | None = None
    blocked: bool = False  # B1: blocked customers are listed only among the blocked
    masked: bool | None = None
    seen_after: int | None = None
    seen_before: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


class Backend(Protocol):
    # auth
    async def authenticate(self, raw_key: str) -> StaffKey | None: ...
    async def key(self, key_id: str) -> StaffKey | None: ...

    # reads
    async def channels(self) -> list[str]: ...
    async def user(self, channel: str, user_id: str) -> dict[str, Any] | None: ...
    async def state(self, channel: str, user_id: str) -> User | None: ...
    async def search(self, channel: str, filters: Filters, limit: int, cursor: str | None) -> Page: ...
    async def mu_count(self, channel: str) -> int: ...
    async def activities(self, channel: str, user_id: str, limit: int, cursor: str | None) -> Page: ...
    async def merges(self, channel: str, user_id: str) -> list[dict[str, Any]]: ...
    async def unifications(self, channel: str, state: str) -> list[dict[str, Any]]: ...
    async def grades(self, channel: str) -> list[dict[str, Any]]: ...
    async def settings(self, channel: str) -> dict[str, Any]: ...

    # commands (every change is a fact on identity.commands)
    async def command(self, channel: str, body: dict[str, Any], actor: str, wait_s: float) -> Outcome: ...

    # channel settings (admin; configuration, not user state)
    async def configure(self, channel: str, changes: dict[str, Any]) -> dict[str, Any]: ...

    # imports (the importer shared with `unifier import`)
    async def start_import(
        self, channel: str, path: Path, mode: str, key: str | None, maps: list[str], blank: str,
        tag: str | None, actor: str,
    ) -> ImportStart: ...
    async def import_progress(self, channel: str, import_id: str) -> dict[str, Any] | None: ...
    async def imports(self, channel: str) -> list[dict[str, Any]]: ...
    async def import_failures_csv(self, channel: str, import_id: str) -> bytes | None: ...
    async def declared_types(self, channel: str) -> dict[str, str]: ...

    # dead letters (SREs)
    async def dead_letters(self, code: str | None, limit: int) -> DeadLetterPage: ...
    async def retry_dead_letters(self, code: str | None, where: tuple[int, int] | None) -> dict[str, int]: ...
