"""Issue 3 end to end: the guides' unification stories through the real broker and
PostgreSQL — candidates and their order, approval, the delayed-unification saga,
cancellation, the G2 blast radius and the help desk's chat attachment (D1)."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
import pytest

from contracts.topics import Topics
from services.domain.ids import veil_user_id
from services.platform.config import Settings
from services.store import import_log
from services.store.queries import find_user, review_candidates
from tests.support.infra import wait_for
from tests.support.service import Publisher, read_topic, running_service

pytestmark = pytest.mark.integration

CH = "ch_uni"
T0 = 1_746_316_800_000
HOUR = 3_600_000
DAY = 24 * HOUR
PHONE = "+819012345678"


def ev(event_id: str, type_: str, at: int, **fields: Any) -> dict[str, Any]:
    if "." in type_:
        fields.setdefault("actor", "staff-1")
    return {"eventId": event_id, "type": type_, "channelId": CH, "occurredAt": at, **fields}



async def applied(pool: asyncpg.Pool, n: int) -> bool:
    return (await pool.fetchval("SELECT coalesce(sum(next_offset), 0) FROM inbox_offsets")) >= n


async def test_u10_u5_line_chatter_given_a_phone_by_staff_and_approved_merges_at_once(settings: Settings, pool: asyncpg.Pool) -> None:
    async with running_service(settings), Publisher(settings) as pub:
        await pub.command(ev("m", "member.upsert", T0, memberId="mem-1", profile={"mobileNumber": PHONE}))
        await pub.sdk(ev("line", "chat", T0 + HOUR, veilId="line:U123", chatId="c1", medium="line", message={"messageId": "x", "text": "hi"}))
        await wait_for(lambda: applied(pool, 2))
        lead = await find_user(pool, CH, "veil", "line:U123")
        assert lead is not None and lead["type"] == "lead" and lead["unification"]["candidates"] == []  # U10
        await pub.command(ev("p", "profile.update", T0 + 2 * HOUR, userId=lead["id"], profile={"mobileNumber": "+81 090-1234-5678"}))
        await wait_for(lambda: applied(pool, 3))
        member = await find_user(pool, CH, "member", "mem-1")
        assert member is not None
        cand = await find_user(pool, CH, "id", lead["id"])
        assert cand is not None and cand["unification"]["candidates"] == [member["id"]]  # U5
        await pub.command(ev("a", "unification.approve", T0 + 3 * HOUR, sourceUserId=lead["id"], targetUserId=member["id"]))
        await wait_for(lambda: applied(pool, 4))
    assert await find_user(pool, CH, "id", lead["id"]) == {"id": lead["id"], "mergedInto": member["id"]}
    merged = await find_user(pool, CH, "veil", "line:U123")
    assert merged is not None and merged["id"] == member["id"]
    assert await pool.fetchval("SELECT user_id FROM activities WHERE event_id = 'line'") == member["id"]  # U4: the chat moved


async def test_u5_booted_lead_approved_merges_only_at_the_members_next_login(settings: Settings, pool: asyncpg.Pool) -> None:
    async with running_service(settings), Publisher(settings) as pub:
        await pub.command(ev("m", "member.upsert", T0, memberId="mem-1", profile={"email": "hana@example.jp"}))
        await pub.sdk(ev("b", "boot", T0 + HOUR, veilId="v-lead", platform="web"))
        await wait_for(lambda: applied(pool, 2))
        lead = await find_user(pool, CH, "veil", "v-lead")
        assert lead is not None
        await pub.command(ev("p", "profile.update", T0 + 2 * HOUR, userId=lead["id"], profile={"email": "Hana@Example.jp "}))
        await wait_for(lambda: applied(pool, 3))
        member = await find_user(pool, CH, "member", "mem-1")
        assert member is not None
        await pub.command(ev("a", "unification.approve", T0 + 3 * HOUR, sourceUserId=lead["id"], targetUserId=member["id"]))
        await wait_for(lambda: applied(pool, 4))
        waiting = await find_user(pool, CH, "id", lead["id"])
        assert waiting is not None and waiting["unification"]["pendingInto"] == member["id"]  # both readable
        await pub.sdk(ev("l", "boot", T0 + DAY, veilId="v-member", platform="web", memberId="mem-1"))
        await wait_for(lambda: applied(pool, 5))
    assert await find_user(pool, CH, "id", lead["id"]) == {"id": lead["id"], "mergedInto": member["id"]}
    record = await pool.fetchrow("SELECT target_id, causation_id FROM merges WHERE source_id = $1", lead["id"])
    assert tuple(record) == (member["id"], "l")  # G4: caused by the login


async def test_u6_pending_unification_cancelled_by_deleting_the_source(settings: Settings, pool: asyncpg.Pool) -> None:
    async with running_service(settings), Publisher(settings) as pub:
        await pub.command(ev("m", "member.upsert", T0, memberId="mem-1", profile={}))
        await pub.sdk(ev("b", "boot", T0 + HOUR, veilId="v-lead", platform="web"),
                      ev("c", "contact", T0 + HOUR, veilId="v-lead", email="x@example.jp"))
        await wait_for(lambda: applied(pool, 3))
        lead = await find_user(pool, CH, "veil", "v-lead")
        member = await find_user(pool, CH, "member", "mem-1")
        assert lead is not None and member is not None
        await pub.command(
            ev("a", "unification.approve", T0 + 2 * HOUR, sourceUserId=lead["id"], targetUserId=member["id"]),
            ev("d", "user.delete", T0 + 3 * HOUR, userId=lead["id"]),
        )
        await pub.sdk(ev("l", "login", T0 + DAY, veilId="v-member", memberId="mem-1"))
        await wait_for(lambda: applied(pool, 6))
    assert await find_user(pool, CH, "id", lead["id"]) is None  # deleted, not merged
    assert await pool.fetchval("SELECT count(*) FROM merges") == 0


def import_rows(
    import_id: str, at: int, mode: str, key: str, columns: dict[str, str], rows: list[dict[str, str]], tag: str | None = None
) -> list[dict[str, Any]]:
    """What `unifier import` publishes to `identity.import-rows` for one file:
    `import.started`, one `import.row` per data row (row 1 is the header), `import.finished`."""
    head = {"channelId": CH, "occurredAt": at, "importId": import_id}
    started = {
        "eventId": f"{import_id}:started", "type": "import.started", **head, "mode": mode, "key": key,
        "blank": "keep", "tag": tag, "actor": "staff-1", "fileName": f"{import_id}.csv",
        "columns": [{"column": column, "key": mapped} for column, mapped in columns.items()],
    }
    body = [
        {"eventId": f"{import_id}:{n}", "type": "import.row", **head, "rowNumber": n, "cells": cells}
        for n, cells in enumerate(rows, start=2)
    ]
    finished = {"eventId": f"{import_id}:finished", "type": "import.finished", **head, "rows": len(rows)}
    return [started, *body, finished]


async def user_changed(settings: Settings) -> dict[str, list[Any]]:
    """Every user-changed message so far, grouped by user id in log order (None: tombstone)."""
    by_user: dict[str, list[Any]] = {}
    for key, value in await read_topic(settings, Topics(settings.topic_prefix).user_changed):
        assert key is not None and key.startswith(f"{CH}:")
        by_user.setdefault(key.split(":", 1)[1], []).append(value)
    return by_user


async def test_u5_u3_u8_imported_lead_approved_into_a_member_merges_at_once(settings: Settings, pool: asyncpg.Pool) -> None:
    """Story: a lead imported from a CSV never booted; staff give it the member's mobile
    number, which lists the member as its candidate; staff approve. It is merged at
    once: the member gains the lead's e-mail, keeps its own name (member data wins), and
    downstream sees `merged` + tombstone for the lead and `updated` for the member."""
    async with running_service(settings), Publisher(settings) as pub:
        await pub.command(ev("m", "member.upsert", T0, memberId="mem-1", name="Hana Member", profile={"mobileNumber": PHONE}))
        await wait_for(lambda: applied(pool, 1))
        columns = {"email": "profile.email", "name": "name", "unsubscribeEmail": "unsubscribeEmail", "unsubscribeTexting": "unsubscribeTexting"}
        row = {"profile.email": "lead@example.jp", "name": "Lead Name", "unsubscribeEmail": "true", "unsubscribeTexting": "false"}
        await pub.send(pub.topics.import_rows, import_rows("imp_1", T0 + HOUR, "lead", "email", columns, [row], tag="fair"))
        await wait_for(lambda: applied(pool, 4))
        lead = await find_user(pool, CH, "email", "lead@example.jp")
        member = await find_user(pool, CH, "member", "mem-1")
        assert lead is not None and member is not None
        assert (lead["type"], lead["name"], lead["unification"]["candidates"]) == ("lead", "Lead Name", [])
        await pub.command(ev("p", "profile.update", T0 + 2 * HOUR, userId=lead["id"], profile={"mobileNumber": "+81 90-1234-5678"}))
        await wait_for(lambda: applied(pool, 5))
        cand = await find_user(pool, CH, "id", lead["id"])
        assert cand is not None and cand["unification"] == {"candidates": [member["id"]], "pendingInto": None}  # U5
        await pub.command(ev("a", "unification.approve", T0 + 3 * HOUR, sourceUserId=lead["id"], targetUserId=member["id"]))
        await wait_for(lambda: applied(pool, 6))
        changes = await wait_for(lambda: _published(settings, member["id"], lead["id"]), message="merged + tombstone, updated")

    assert await find_user(pool, CH, "id", lead["id"]) == {"id": lead["id"], "mergedInto": member["id"]}  # U8
    after = await find_user(pool, CH, "member", "mem-1")
    assert after is not None and after["id"] == member["id"]
    assert after["profile"] == {"email": "lead@example.jp", "mobileNumber": PHONE}  # U3: a value > no value
    assert after["qualified"] == ["email", "mobileNumber"]
    assert after["name"] == "Hana Member"  # U3: member data > lead data
    assert (after["unsubscribeEmail"], after["userImportTags"], after["mergedUserIds"]) == (True, ["fair"], [lead["id"]])
    assert await find_user(pool, CH, "email", "lead@example.jp") == after

    lead_msgs, member_msgs = changes[lead["id"]], changes[member["id"]]
    assert [m and m["change"] for m in lead_msgs] == ["created", "updated", "merged", None]  # merged, then a tombstone
    merged = lead_msgs[2]
    assert (merged["version"], merged["mergedInto"], merged["user"], merged["causationId"]) == (3, member["id"], None, "a")
    assert [m["change"] for m in member_msgs] == ["created", "updated"]
    updated = member_msgs[1]
    assert (updated["version"], updated["causationId"], updated["mergedInto"]) == (2, "a", None)
    assert updated["changedKeys"] == ["mergedUserIds", "profile.email", "qualified", "unsubscribeEmail", "userImportTags"]
    assert updated["user"]["mergedUserIds"] == [lead["id"]] and updated["user"]["profile"]["email"] == "lead@example.jp"
    record = await pool.fetchrow("SELECT target_id, causation_id, contested FROM merges WHERE source_id = $1", lead["id"])
    assert (record["target_id"], record["causation_id"]) == (member["id"], "a")
    assert record["contested"]["name"]["winner"] == "target"  # G4


async def _published(settings: Settings, member_id: str, lead_id: str) -> dict[str, list[Any]] | None:
    got = await user_changed(settings)
    done = len(got.get(lead_id, [])) >= 4 and len(got.get(member_id, [])) >= 2
    return got if done else None


async def test_u5_u7_u9_a_lead_given_a_shared_email_lists_the_members_most_recently_updated_first(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """Story: members share an e-mail. A visitor types it (unqualified: no candidate,
    U9); then staff enter it in another spelling (qualified, compared trimmed and
    case-insensitively): every member holding it becomes a candidate, the most recently
    updated first (U7) — neither creation nor id order."""
    async with running_service(settings), Publisher(settings) as pub:
        await pub.command(
            ev("m1", "member.upsert", T0, memberId="mem-1", profile={"email": "shared@example.jp"}),
            ev("m2", "member.upsert", T0 + HOUR, memberId="mem-2", profile={"email": "shared@example.jp"}),
            ev("m3", "member.upsert", T0 + 2 * HOUR, memberId="mem-3", profile={"email": "shared@example.jp"}),
            ev("m4", "member.upsert", T0 + 2 * HOUR, memberId="mem-4", profile={"email": "other@example.jp"}),
            ev("e2", "member.upsert", T0 + 3 * HOUR, memberId="mem-2", profile={}, name="Edited"),
        )
        await pub.sdk(ev("c", "contact", T0 + 4 * HOUR, veilId="v-lead", email="shared@example.jp"))
        await wait_for(lambda: applied(pool, 6))
        typed = await find_user(pool, CH, "veil", "v-lead")
        assert typed is not None and typed["type"] == "lead" and typed["qualified"] == []
        assert typed["unification"]["candidates"] == []  # U9: unqualified never unifies
        await pub.command(ev("p", "profile.update", T0 + 5 * HOUR, userId=typed["id"], profile={"email": "  Shared@EXAMPLE.jp "}))
        await wait_for(lambda: applied(pool, 7))
    m1, m2, m3 = [await find_user(pool, CH, "member", f"mem-{i}") for i in (1, 2, 3)]
    assert m1 is not None and m2 is not None and m3 is not None
    assert (m1["updatedAt"], m2["updatedAt"], m3["updatedAt"]) == (T0, T0 + 3 * HOUR, T0 + 2 * HOUR)
    lead = await find_user(pool, CH, "veil", "v-lead")
    assert lead is not None and lead["qualified"] == ["email"] and lead["profile"]["email"] == "shared@example.jp"
    assert lead["unification"] == {"candidates": [m2["id"], m3["id"], m1["id"]], "pendingInto": None}  # U7 order
    assert await pool.fetchval("SELECT count(*) FROM merges") == 0  # U5: staff approve; nothing merged yet


async def test_g2_a_contact_shared_by_more_than_50_leads_merges_none_and_says_so(settings: Settings, pool: asyncpg.Pool) -> None:
    """Story: 50 booted leads share one qualified e-mail, 51 share another. A member
    import row with the first e-mail unifies all 50 (pending their member's login, which
    merges them); the row with the second creates its member but merges none, and the
    failures file says why (G2 in an import, issue 16): the 51 list it as their candidate.
    The API updates that member, staff approve all 51, and the member's login merges none
    of them: a `blast_radius` notice is dead-lettered and the 51 stay pending for staff."""
    a_veils, b_veils = [f"va-{i}" for i in range(50)], [f"vb-{i}" for i in range(51)]
    visitors = [(v, "a@example.jp") for v in a_veils] + [(v, "b@example.jp") for v in b_veils]
    ids = {v: veil_user_id(CH, v) for v, _ in visitors}
    async with running_service(settings), Publisher(settings) as pub:
        await pub.sdk(*(ev(f"b-{v}", "boot", T0, veilId=v, platform="web") for v, _ in visitors))
        await wait_for(lambda: applied(pool, 101))
        await pub.command(*(ev(f"p-{v}", "profile.update", T0 + HOUR, userId=ids[v], profile={"email": e}) for v, e in visitors))
        await wait_for(lambda: applied(pool, 202))
        columns = {"memberId": "memberId", "email": "profile.email", "unsubscribeEmail": "unsubscribeEmail", "unsubscribeTexting": "unsubscribeTexting"}
        rows = [{"memberId": m, "profile.email": e, "unsubscribeEmail": "false", "unsubscribeTexting": "false"}
                for m, e in (("mem-a", "a@example.jp"), ("mem-b", "b@example.jp"))]
        await pub.send(pub.topics.import_rows, import_rows("imp_g2", T0 + 2 * HOUR, "member", "memberId", columns, rows))
        await wait_for(lambda: applied(pool, 206))
        record = await import_log.import_record(pool, CH, "imp_g2")
        assert record is not None and (record["created"], record["failed"]) == (2, 0)
        async with pool.acquire() as conn, conn.transaction():
            failures = [f async for f in import_log.failed_rows(conn, CH, "imp_g2")]
        assert [(n, list(cols)) for n, cols, _, _ in failures] == [(3, ["profile.email"])]
        assert "51 leads share this member's contact, more than 50" in failures[0][2]
        created_b = await find_user(pool, CH, "member", "mem-b")  # the row applied …
        assert created_b is not None and created_b["mergedUserIds"] == []  # … merging none
        b0 = await find_user(pool, CH, "id", ids["vb-0"])
        assert b0 is not None and b0["unification"] == {"candidates": [created_b["id"]], "pendingInto": None}

        await pub.command(ev("mb", "member.upsert", T0 + 3 * HOUR, memberId="mem-b", profile={"email": "b@example.jp"}))
        await wait_for(lambda: applied(pool, 207))
        mem_a, mem_b = await find_user(pool, CH, "member", "mem-a"), await find_user(pool, CH, "member", "mem-b")
        assert mem_a is not None and mem_b is not None
        await pub.command(*(ev(f"a-{v}", "unification.approve", T0 + 4 * HOUR, sourceUserId=ids[v], targetUserId=mem_b["id"]) for v in b_veils))
        await wait_for(lambda: applied(pool, 258))
        await pub.sdk(
            ev("la", "login", T0 + DAY, veilId="v-mem-a", memberId="mem-a"),
            ev("lb", "login", T0 + DAY, veilId="v-mem-b", memberId="mem-b"),
        )
        await wait_for(lambda: applied(pool, 260))
        letters = await wait_for(lambda: read_topic(settings, Topics(settings.topic_prefix).dead_letter), message="the G2 notice")

    assert await pool.fetchval("SELECT count(*) FROM merges WHERE target_id = $1 AND causation_id = 'la'", mem_a["id"]) == 50
    assert await pool.fetchval("SELECT count(*) FROM merges WHERE target_id = $1", mem_b["id"]) == 0
    assert [(k, v["error"]["code"], orjson.loads(v["value"])["eventId"]) for k, v in letters] == [(CH, "blast_radius", "lb")]
    assert "51 approved unifications wait for this member, more than 50" in letters[0][1]["error"]["message"]
    assert await find_user(pool, CH, "veil", "v-mem-b") == await find_user(pool, CH, "member", "mem-b")  # the login applied
    for v in b_veils:  # G2: still listed for staff, still pending
        left = await find_user(pool, CH, "id", ids[v])
        assert left is not None and left["unification"] == {"candidates": [mem_b["id"]], "pendingInto": mem_b["id"]}, v


async def test_d1_phone_and_email_chats_attach_to_the_customer_with_that_contact_else_a_new_lead(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """Story (help desk): a call from a known number attaches to the member with that
    number, a mail from a known address (any spelling) to the lead with that address; a
    mail from an unknown address is a new lead with a qualified e-mail; a web form
    carrying the lead's address attaches to that lead too (D1: "web form … same e-mail"),
    while one carrying an address only a visitor typed is a new lead of its own."""
    async with running_service(settings), Publisher(settings) as pub:
        await pub.command(
            ev("m", "member.upsert", T0, memberId="mem-1", profile={"mobileNumber": PHONE}),
            ev("l", "lead.create", T0 + HOUR, profile={"email": "ask@example.jp"}),
        )
        await wait_for(lambda: applied(pool, 2))
        member = await find_user(pool, CH, "member", "mem-1")
        lead = await find_user(pool, CH, "email", "ask@example.jp")
        assert member is not None and lead is not None and lead["type"] == "lead"

        def chat(event_id: str, veil: str, medium: str, **contact: str) -> dict[str, Any]:
            return ev(event_id, "chat", T0 + DAY, veilId=veil, chatId=f"chat-{event_id}", medium=medium, contact=contact,
                      message={"messageId": f"msg-{event_id}", "text": "hello"})

        await pub.sdk(
            chat("call", "tel-1", "phone", mobileNumber="+81 90-1234-5678"),
            chat("mail", "mail-1", "email", email=" Ask@Example.JP"),
            chat("new", "mail-2", "email", email="new@example.jp"),
            chat("web", "web-1", "web", email="ask@example.jp"),
            ev("typed", "contact", T0 + DAY, veilId="v-typist", email="typed@example.jp"),
            chat("web2", "web-2", "web", email="typed@example.jp"),
        )
        await wait_for(lambda: applied(pool, 8))
        changes = await wait_for(lambda: _created(settings, 5), message="five created users")

    owners = dict(await pool.fetch("SELECT event_id, user_id FROM activities"))
    assert owners["call"] == member["id"] and owners["mail"] == lead["id"] and owners["web"] == lead["id"]
    assert owners["new"] not in (member["id"], lead["id"], owners["web2"])
    # D1b: a help-desk match attaches the inquiry, never the sender's veil.
    assert await find_user(pool, CH, "veil", "tel-1") is None and await find_user(pool, CH, "veil", "mail-1") is None
    new = await find_user(pool, CH, "veil", "mail-2")
    assert new is not None and (new["type"], new["profile"], new["qualified"]) == ("lead", {"email": "new@example.jp"}, ["email"])
    assert await find_user(pool, CH, "veil", "web-1") is None  # D1b
    typist, web2 = await find_user(pool, CH, "veil", "v-typist"), await find_user(pool, CH, "veil", "web-2")
    assert typist is not None and web2 is not None and owners["web2"] == web2["id"] != typist["id"]
    assert (web2["type"], web2["profile"], web2["qualified"]) == ("lead", {"email": "typed@example.jp"}, [])
    assert sorted(changes) == sorted([member["id"], lead["id"], new["id"], typist["id"], web2["id"]])  # no other customer


async def _created(settings: Settings, n: int) -> list[str] | None:
    got = await user_changed(settings)
    created = [uid for uid, msgs in got.items() if any(m and m["change"] == "created" for m in msgs)]
    return created if len(created) >= n else None


async def test_u5_u7_candidates_are_current_as_read_and_a_stale_approval_is_refused(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """Story (issue 16): a lead shares an e-mail with three members. As staff read it,
    the list follows the members: one changes its e-mail, one is blocked, one deleted —
    each drops out at once, and an updated member moves to the front (U7). Approving the
    member that changed its e-mail is refused with `stale_candidate`; the review queue
    lists only what is current."""
    async with running_service(settings), Publisher(settings) as pub:
        await pub.command(
            ev("m1", "member.upsert", T0, memberId="mem-1", profile={"email": "s@example.jp"}),
            ev("m2", "member.upsert", T0 + HOUR, memberId="mem-2", profile={"email": "s@example.jp"}),
            ev("m3", "member.upsert", T0 + 2 * HOUR, memberId="mem-3", profile={"email": "s@example.jp"}),
            ev("m4", "member.upsert", T0 + 3 * HOUR, memberId="mem-4", profile={"email": "s@example.jp"}),
            ev("l", "lead.create", T0 + 4 * HOUR, profile={"email": "s@example.jp"}),
        )
        await wait_for(lambda: applied(pool, 5))
        m1, m2, m3, m4 = [await find_user(pool, CH, "member", f"mem-{i}") for i in (1, 2, 3, 4)]
        lead = await find_user(pool, CH, "id", await _lead_id(pool))
        assert m1 and m2 and m3 and m4 and lead is not None
        assert lead["unification"]["candidates"] == [m4["id"], m3["id"], m2["id"], m1["id"]]

        await pub.command(
            ev("e1", "member.upsert", T0 + 5 * HOUR, memberId="mem-1", profile={"email": "moved@example.jp"}),
            ev("k2", "user.block", T0 + 5 * HOUR, userId=m2["id"]),
            ev("d3", "member.delete", T0 + 5 * HOUR, memberId="mem-3"),
        )
        await wait_for(lambda: applied(pool, 8))
        now = await find_user(pool, CH, "id", lead["id"])
        assert now is not None and now["unification"]["candidates"] == [m4["id"]]
        assert await review_candidates(pool, CH) == [(lead["id"], [m4["id"]])]

        await pub.command(
            ev("a1", "unification.approve", T0 + 6 * HOUR, sourceUserId=lead["id"], targetUserId=m1["id"]),
            ev("u2", "user.unblock", T0 + 6 * HOUR, userId=m2["id"]),
        )
        await wait_for(lambda: applied(pool, 10))
        again = await find_user(pool, CH, "id", lead["id"])
        assert again is not None and again["unification"]["candidates"] == [m2["id"], m4["id"]]  # U7: m2 updated last
        letters = await wait_for(lambda: read_topic(settings, Topics(settings.topic_prefix).dead_letter), message="the refusal")
    assert [(v["error"]["code"], orjson.loads(v["value"])["eventId"]) for _k, v in letters] == [("stale_candidate", "a1")]
    assert await pool.fetchval("SELECT count(*) FROM merges") == 0


async def _lead_id(pool: asyncpg.Pool) -> str:
    return str(await pool.fetchval("SELECT id FROM users WHERE type = 'lead'"))
