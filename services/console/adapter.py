"""The console's `Backend` on the API's own parts: its pool, its command bus, its key
store and its read functions (services/store/queries.py), so a page and an API call
doing the same thing go through the same code (docs/design.md)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

import asyncpg
from fastapi import FastAPI

from services.domain.hygiene import clean_member_id, clean_veil_id
from services.domain.user import User
from services.domain.values import Rejected
from services.store import api_keys, import_log, queries, staff
from services.store.queries import BadCursor, UserFilter

from .backend import DeadLetterPage, Filters, ImportStart, Outcome, Page, StaffKey

log = logging.getLogger("unifier.console")


class ApiBackend:
    """Reads `app.state.pool` and `app.state.bus` when called: the API's lifespan makes
    them after the console is mounted."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    @property
    def pool(self) -> asyncpg.Pool:
        return self.app.state.pool  # type: ignore[no-any-return]

    # -- auth -------------------------------------------------------------------------
    async def authenticate(self, raw_key: str) -> StaffKey | None:
        key = raw_key.strip()
        principal = await api_keys.authenticate(self.pool, key)
        key_id = api_keys.key_id_of(key)
        if principal is None or key_id is None:
            return None
        return StaffKey(key_id, principal.name, principal.scope, principal.channel)

    async def key(self, key_id: str) -> StaffKey | None:
        principal = await api_keys.principal_by_id(self.pool, key_id)
        return None if principal is None else StaffKey(key_id, principal.name, principal.scope, principal.channel)

    # -- reads ------------------------------------------------------------------------
    async def channels(self) -> list[str]:
        return await staff.channel_ids(self.pool)

    async def user(self, channel: str, user_id: str) -> dict[str, Any] | None:
        return await queries.find_user(self.pool, channel, "id", user_id)

    async def state(self, channel: str, user_id: str) -> User | None:
        return await staff.user_state(self.pool, channel, user_id)

    async def search(self, channel: str, filters: Filters, limit: int, cursor: str | None) -> Page:
        try:
            member = filters.extra.get("memberId")
            veil = filters.extra.get("veilId")
            f = UserFilter(
                member_id=clean_member_id(member) if member else None,
                veil_id=clean_veil_id(veil) if veil else None,
                q=filters.q,
                # None: the contact list (leads and members, C1); "any": every class
                type=filters.type if filters.type in ("anonymous", "lead", "member") else None,
                tag=filters.tag, grade=filters.grade,
                blocked=None if filters.extra else filters.blocked,
                masked=filters.masked, seen_after=filters.seen_after, seen_before=filters.seen_before,
                contact_list=filters.type is None and not filters.extra,
            )
        except Rejected:
            return Page([])  # not a usable identifier: nothing can match it
        try:
            items, nxt = await queries.search_users(self.pool, channel, f, limit=limit, cursor=cursor)
        except BadCursor:
            items, nxt = await queries.search_users(self.pool, channel, f, limit=limit, cursor=None)
        return Page(items, nxt)  # each item with its grades (D2), read in the page's statement

    async def mu_count(self, channel: str) -> int:
        return await staff.mu_count(self.pool, channel)

    async def activities(self, channel: str, user_id: str, limit: int, cursor: str | None) -> Page:
        try:
            items, nxt = await queries.activities(self.pool, channel, user_id, limit=limit, cursor=cursor)
        except BadCursor:
            return Page([])
        return Page(items, nxt)

    async def merges(self, channel: str, user_id: str) -> list[dict[str, Any]]:
        return await queries.merges_into(self.pool, channel, user_id)

    async def unifications(self, channel: str, state: str) -> list[dict[str, Any]]:
        """The review queue (U5, U6): each source with its candidate or waiting target.
        An approved source waiting for its member's login is listed as pending only, so
        nobody approves it twice."""
        items, _next = await queries.review_queue(self.pool, channel, state, limit=100, cursor=None)
        if state == "candidate" and items:
            waiting, _ = await queries.review_queue(self.pool, channel, "pending", limit=100, cursor=None)
            pending = {i["source"]["id"] for i in waiting}
            items = [i for i in items if i["source"]["id"] not in pending]
        return [
            {"source": i["source"], "targets": i["targets"], "target": (i["targets"] or [None])[0], "since": i.get("pendingSince")}
            for i in items
        ]

    async def grades(self, channel: str) -> list[dict[str, Any]]:
        return await staff.grade_list(self.pool, channel)

    async def settings(self, channel: str) -> dict[str, Any]:
        return await queries.channel_settings(self.pool, channel)

    async def declared_types(self, channel: str) -> dict[str, str]:
        found = await queries.channel_settings(self.pool, channel)
        return dict(found.get("fields") or {})

    # -- commands ---------------------------------------------------------------------
    async def command(self, channel: str, body: dict[str, Any], actor: str, wait_s: float) -> Outcome:
        from services.api.commands import CommandInvalid

        bus = self.app.state.bus
        try:
            event_id = await bus.submit(channel, body, actor=actor)
        except CommandInvalid as err:
            return Outcome("rejected", "", code="invalid_fields", reason=err.message)
        outcome = await bus.wait(channel, event_id, wait_s)
        if outcome.state == "applied":
            subject = body.get("userId") or body.get("sourceUserId")
            user = await self.user(channel, subject) if isinstance(subject, str) else None
            if body["type"] == "lead.create":  # the lead made, or the one that held the contact
                user = await _lead_with(self.pool, channel, body.get("profile") or {})
            return Outcome("applied", event_id, user=user)
        if outcome.state == "rejected":
            return Outcome("rejected", event_id, code=outcome.code, reason=outcome.message)
        return Outcome("pending", event_id)

    async def configure(self, channel: str, changes: dict[str, Any]) -> dict[str, Any]:
        from services.store.channels import KEEP, configure_channel

        await configure_channel(
            self.pool, channel, fields=changes.get("fields") or {},
            member_hash_secret=changes["memberHashSecret"] if "memberHashSecret" in changes else KEEP,
            mu_limit=changes["muLimit"] if "muLimit" in changes else KEEP,
        )
        return await self.settings(channel)

    # -- imports ----------------------------------------------------------------------
    # The importer the CLI and `POST …/imports` share: start_import checks the file and
    # the mapping and takes the channel's lock (every refusal said at once), complete()
    # publishes and waits in the background, tracked in `app.state.imports` like the
    # API's own, so stopping the API marks it abandoned on the log.
    async def start_import(
        self, channel: str, path: Path, mode: str, key: str | None, maps: list[str], blank: str,
        tag: str | None, actor: str,
    ) -> ImportStart:
        from services.importer.run import ImportRefused, ImportRequest, start_import

        req = ImportRequest(path=path, channel=channel, mode=mode, key=key, maps=tuple(maps), blank=blank, tag=tag, actor=actor)
        settings = self.app.state.settings
        try:
            started = await start_import(settings, req, self.pool, settings.kafka_bootstrap)
        except ImportRefused as err:  # ImportBusy included (I12)
            return ImportStart(refused=str(err))
        task = asyncio.create_task(_complete(started, path), name=f"console import {started.import_id}")
        running: set[asyncio.Task[None]] = self.app.state.imports
        running.add(task)
        task.add_done_callback(running.discard)
        return ImportStart(import_id=started.import_id)

    async def import_progress(self, channel: str, import_id: str) -> dict[str, Any] | None:
        return await import_log.progress(self.pool, channel, import_id)

    async def imports(self, channel: str) -> list[dict[str, Any]]:
        now = int(time.time() * 1000)
        entries = [import_log.log_entry(r, now) for r in await import_log.list_imports(self.pool, channel)]
        for e in entries:  # the log's status in the words of the progress page
            e["state"] = {"completed": "finished", "abandoned": "abandoned"}.get(e["status"], "running")
        return entries

    async def import_failures_csv(self, channel: str, import_id: str) -> bytes | None:
        """The failed rows as the CLI and the API write them (I15), None once gone."""
        from services.importer.failures import write_failures

        record = await import_log.import_record(self.pool, channel, import_id)
        if record is None:
            return None
        finished = record["finished_at"]
        if finished is not None and finished + import_log.FAILURES_KEPT_MS <= int(time.time() * 1000):
            return None
        out = io.StringIO()
        await write_failures(self.pool, channel, import_id, [c["key"] for c in record["columns"]], out)
        return ("\ufeff" + out.getvalue()).encode()  # a BOM, as the CLI's file has, for Excel

    # -- dead letters -----------------------------------------------------------------
    async def dead_letters(self, code: str | None, limit: int) -> DeadLetterPage:
        from contracts.topics import Topics
        from services.runtime.deadletters import dead_letters

        settings = self.app.state.settings
        topics = Topics(settings.topic_prefix)
        counts: Counter[str] = Counter()
        newest: deque[dict[str, Any]] = deque(maxlen=limit)
        async for letter in dead_letters(settings.kafka_bootstrap, topics, None, quiet_s=0.3):
            letter_code = (letter.get("error") or {}).get("code") or "?"
            counts[letter_code] += 1
            if code is None or letter_code == code:
                newest.append(letter)
        shown = sorted(newest, key=lambda x: x.get("failedAt") or 0, reverse=True)
        retried = {
            (r["partition"], r["offset"])
            for r in await self.pool.fetch(
                'SELECT partition, "offset" FROM dead_letter_retries WHERE topic = $1 AND (partition, "offset") IN '
                '(SELECT * FROM unnest($2::int[], $3::bigint[]))',
                topics.dead_letter, [x["deadLetter"]["partition"] for x in shown], [x["deadLetter"]["offset"] for x in shown],
            )
        }
        for x in shown:
            x["retried"] = (x["deadLetter"]["partition"], x["deadLetter"]["offset"]) in retried
        return DeadLetterPage(dict(sorted(counts.items())), shown, counts[code] if code else sum(counts.values()))

    async def retry_dead_letters(self, code: str | None, where: tuple[int, int] | None) -> dict[str, int]:
        from contracts.topics import Topics
        from services.runtime.deadletters import retry

        settings = self.app.state.settings
        return await retry(
            self.pool, settings.kafka_bootstrap, Topics(settings.topic_prefix), code, where=where,
            idempotence=settings.kafka_idempotence,
        )


async def _lead_with(pool: asyncpg.Pool, channel: str, profile: dict[str, Any]) -> dict[str, Any] | None:
    from services.domain.hygiene import clean_email, clean_mobile

    for kind, key, clean in (("email", "email", clean_email), ("mobile", "mobileNumber", clean_mobile)):
        if isinstance(profile.get(key), str):
            try:
                return await queries.find_user(pool, channel, kind, clean(profile[key]))
            except Rejected:
                return None
    return None


async def _complete(started: Any, draft: Path) -> None:
    """Publish and wait as the API's upload does; the draft goes."""
    from services.importer.run import complete_and_log

    try:
        await complete_and_log(started)
    finally:
        with contextlib.suppress(OSError):
            await asyncio.to_thread(draft.unlink, True)
