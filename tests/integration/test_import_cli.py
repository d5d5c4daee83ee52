"""Issue 4 end to end: `unifier import` publishing to a real Kafka-protocol broker, the
running service applying the rows into PostgreSQL, and what the command reports."""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from contracts.topics import Topics
from services.platform.config import Settings
from services.store import import_log
from services.store.queries import find_user
from tests.support.imports import unifier, write_csv
from tests.support.infra import wait_for
from tests.support.service import Publisher, read_topic, running_service

pytestmark = pytest.mark.integration

CH = "ch_import"
T0 = 1_767_225_600_000



def ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)


MAPS = (
    "--map", "会員ID=memberId", "--map", "年齢=profile.age:number", "--map", "誕生日=profile.birthday:date",
    "--map", "来店日時=profile.visitedAt:datetime", "--map", "vip=profile.vip:boolean",
    "--map", "好きなもの=profile.likes:list", "--map", "点数=profile.scores:listOfNumber",
    "--map", "メモ=profile.memo:string",
)
HEADER = "会員ID,name,email,mobileNumber,unsubscribeEmail,unsubscribeTexting,年齢,誕生日,来店日時,vip,好きなもの,点数,tags,メモ\n"
# Every kind of bad value, one per row, after two good rows; the first one has a line
# break inside a quoted cell, which must not shift the numbers of the rows after it.
ROWS = (
    'm-001,山田 太郎,taro@example.jp,+81 090-1234-5678,false,false,30,1990-05-04,2025-05-04T09:00:00+09:00,yes,"[""お茶"",""本""]",[1.5],"[""基本/段階1""]","二行の\nメモ"\n'
    "m-002,佐藤 花子,hanako@example.jp,,false,true,31,,,no,,,,\n"
    "m-003,A,,09012345678,false,false,,,,,,,,\n"                       # 4: phone without country code
    'm-004,B,,,false,false,"1,200",,,,,,,\n'                            # 5: thousands separator
    "m-005,C,,,false,false,,2025/05/04,,,,,,\n"                         # 6: date with slashes
    "m-006,D,,,false,false,,,yesterday,,,,,\n"                          # 7: not a datetime
    "m-007,E,,,false,false,,,,maybe,,,,\n"                              # 8: not a boolean
    "m-008,F,,,false,false,,,,,a,,,\n"                                  # 9: list not JSON
    'm-009,G,,,false,false,,,,,,"[""1""]",,\n'                          # 10: numbers as text
    'm-010,H,,,false,false,,,,,,,"[""a b""]",\n'                        # 11: tag with a space
    "m-011,I,taro.example.jp,,false,false,,,,,,,,\n"                    # 12: e-mail without @
    "undefined,J,,,false,false,,,,,,,,\n"                               # 13: placeholder memberId (G1)
    "m-013,K,,,,false,,,,,,,,\n"                                        # 14: new member, unsubscribe blank (I7)
    "m-014,L,,,false,false,,,,,,,,,surplus\n"                           # 15: more cells than columns
    "m-015,M,,,false,false,x,2025.05.04,,,,,,\n"                        # 16: two bad cells at once
)
EXPECTED_FAILURES = {
    4: ["profile.mobileNumber"], 5: ["profile.age"], 6: ["profile.birthday"], 7: ["profile.visitedAt"],
    8: ["profile.vip"], 9: ["profile.likes"], 10: ["profile.scores"], 11: ["tags"], 12: ["profile.email"],
    13: ["memberId"], 14: ["unsubscribeEmail"], 15: [], 16: ["profile.age", "profile.birthday"],
}


def read_failures(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


async def test_i9_i15_every_bad_value_fails_its_row_and_the_failures_csv_can_be_fixed_and_imported(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """A BOM, Japanese text, a quoted line break, every kind of bad value (I9), a missing
    unsubscribe flag (I7), a placeholder memberId (G1): the good rows are applied, the
    bad ones are reported by row number with the column and the reason (I15), and the
    failures file, fixed, imports as it is."""
    members = write_csv(tmp_path / "会員.csv", HEADER + ROWS, bom=True)
    out = tmp_path / "failures.csv"
    # Progress is printed once an import has taken 2 s: the default group session (10 s)
    # makes the projection's join on tansu take 5 s, so this import waits that long.
    async with running_service(settings.replace(kafka_session_timeout_ms=10_000)):
        ran = await unifier(settings, "import", str(members), "--channel", CH, "--mode", "member", *MAPS,
                            "--tag", "spring", "--failures", str(out), "--actor", "staff-7")
        assert ran.code == 0, ran.err
        first = ran.json()
        assert first == {"importId": first["importId"], "created": 2, "updated": 0, "failed": 13}
        assert "rows read" in ran.err  # progress on stderr (the consumer group takes a while to join)

        raw = out.read_bytes()
        assert raw.startswith(b"\xef\xbb\xbf")  # Excel reads Japanese correctly with the BOM
        failures = read_failures(raw.decode("utf-8-sig"))
        assert list(failures[0]) == [
            "rowNumber", "errorColumns", "errorReason", "memberId", "name", "profile.email", "profile.mobileNumber",
            "unsubscribeEmail", "unsubscribeTexting", "profile.age", "profile.birthday", "profile.visitedAt",
            "profile.vip", "profile.likes", "profile.scores", "tags", "profile.memo",
        ]
        got = {int(f["rowNumber"]): [c for c in f["errorColumns"].split(",") if c] for f in failures}
        assert got == EXPECTED_FAILURES
        by_row = {int(f["rowNumber"]): f for f in failures}
        assert by_row[4]["profile.mobileNumber"] == "09012345678" and "country code" in by_row[4]["errorReason"]
        assert by_row[5]["profile.age"] == "1,200" and "thousands" in by_row[5]["errorReason"]
        assert 'profile.birthday (column "誕生日")' in by_row[6]["errorReason"]
        assert "15 cells but the header names 14 columns" in by_row[15]["errorReason"]

        taro = await find_user(pool, CH, "member", "m-001")
        assert taro is not None
        assert taro["name"] == "山田 太郎" and taro["userImportTags"] == ["spring"]
        assert taro["profile"] == {
            "email": "taro@example.jp", "mobileNumber": "+819012345678", "age": 30, "birthday": ms("1990-05-04"),
            "visitedAt": ms("2025-05-04T00:00:00"), "vip": True, "likes": ["お茶", "本"], "scores": [1.5],
            "memo": "二行の\nメモ",
        }
        assert taro["tags"] == ["基本/段階1"] and taro["qualified"] == ["email", "mobileNumber"]
        hanako = await find_user(pool, CH, "member", "m-002")
        assert hanako is not None and hanako["unsubscribeTexting"] is True and hanako["profile"]["vip"] is False
        types = await pool.fetchval("SELECT imported_types FROM channels WHERE channel_id = $1", CH)
        assert types["profile.age"] == "number" and types["profile.likes"] == "list"  # I5: declared

        fixed = tmp_path / "fixed.csv"
        with fixed.open("w", encoding="utf-8-sig", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(failures[0]))
            writer.writeheader()
            for row in failures:
                good = {k: "" for k in ("profile.mobileNumber", "profile.visitedAt", "profile.likes", "profile.scores", "tags", "profile.email")}
                writer.writerow({**row, **good, "memberId": row["memberId"].replace("undefined", "m-012"),
                                 "profile.age": "40", "profile.birthday": "2000-01-01", "profile.vip": "no",
                                 "unsubscribeEmail": "false"})
        again = await unifier(settings, "import", str(fixed), "--channel", CH, "--mode", "member", "--actor", "staff-8")
        assert again.code == 0, again.err
        assert again.json()["created"] == 13 and again.json()["failed"] == 0  # the header maps by itself

    log = await unifier(settings, "import", "log", CH)
    assert log.code == 0, log.err
    entries = log.lines()
    assert [e["importId"] for e in entries] == [again.json()["importId"], first["importId"]]
    oldest = entries[1]
    assert (oldest["actor"], oldest["fileName"], oldest["mode"], oldest["status"]) == ("staff-7", "会員.csv", "member", "completed")
    assert (oldest["rows"], oldest["created"], oldest["updated"], oldest["failed"]) == (15, 2, 0, 13)
    assert oldest["failuresAvailableUntil"] == oldest["finishedAt"] + 30 * 86_400_000
    rewritten = await unifier(settings, "import", "failures", CH, first["importId"])
    assert rewritten.code == 0, rewritten.err
    assert read_failures(rewritten.out) == failures
    missing = await unifier(settings, "import", "failures", CH, "imp_nope")
    assert missing.code == 1


async def test_i13_i5_i12_refusals_exit_2_and_publish_nothing(settings: Settings, pool: asyncpg.Pool, tmp_path: Path) -> None:
    """Refused before anything is published: a system key (I5), a new key without its
    type, a file that is not UTF-8 or over 100 MB (I13), another import running (I12)."""
    good = write_csv(tmp_path / "ok.csv", "memberId,unsubscribeEmail,unsubscribeTexting\nm-1,false,false\n")
    cases: list[tuple[list[str], str]] = [
        ([str(write_csv(tmp_path / "sys.csv", "memberId,lastSeenAt\nm-1,0\n"))], "system key"),
        ([str(write_csv(tmp_path / "new.csv", "memberId,age\nm-1,3\n"))], "new profile key"),
        ([str(good), "--map", "nothere=name"], "names no column"),
        ([str(good), "--mode", "lead"], "needs --key"),
    ]
    sjis = tmp_path / "sjis.csv"
    sjis.write_bytes(b"memberId,name\nm-1," + "山田".encode("shift_jis") + b"\n")
    cases.append(([str(sjis)], "not UTF-8"))
    big = tmp_path / "big.csv"
    with big.open("wb") as f:
        f.write(b"memberId\n")
        f.truncate(100 * 1024 * 1024 + 1)
    cases.append(([str(big)], "up to 100 MB"))
    for args, reason in cases:
        mode = [] if "--mode" in args else ["--mode", "member"]
        ran = await unifier(settings, "import", *args, "--channel", CH, *mode)
        assert ran.code == 2, (args, ran.err)
        assert reason in ran.err, ran.err

    async with pool.acquire() as conn:
        taken, _ = await import_log.acquire_lock(conn, CH, "imp_other", "someone-else", "staff-2", "imp_other:finished:1", 60_000)
    assert taken
    ran = await unifier(settings, "import", str(good), "--channel", CH, "--mode", "member")
    assert ran.code == 2 and "another import is running" in ran.err and "imp_other by staff-2" in ran.err

    assert await pool.fetchval("SELECT count(*) FROM imports") == 0
    assert await pool.fetchval("SELECT count(*) FROM users") == 0
    assert await read_topic(settings, Topics(settings.topic_prefix).import_rows) == []


async def test_i12_a_second_import_waits_for_the_first_and_exit_3_when_not_applied_in_time(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """With no service running the rows cannot be applied: exit 3, and the import stays
    'running' (its lock held) until the service applies it; a second import in that
    channel is refused meanwhile and runs after."""
    first = write_csv(tmp_path / "a.csv", "memberId,unsubscribeEmail,unsubscribeTexting\nm-1,false,false\nm-2,true,true\n")
    second = write_csv(tmp_path / "b.csv", "memberId,name\nm-1,Updated\n")
    late = await unifier(settings, "import", str(first), "--channel", CH, "--mode", "member", "--timeout", "2")
    assert late.code == 3, late.err
    assert late.json() == {"importId": late.json()["importId"], "created": 0, "updated": 0, "failed": 0}
    refused = await unifier(settings, "import", str(second), "--channel", CH, "--mode", "member")
    assert refused.code == 2 and late.json()["importId"] in refused.err

    other_channel = await unifier(settings, "import", str(second), "--channel", "ch_other", "--mode", "member", "--timeout", "1")
    assert other_channel.code == 3  # the lock is per channel (T1): not refused

    async def done() -> bool:
        record = await import_log.import_record(pool, CH, late.json()["importId"])
        return record is not None and record["status"] == "completed"

    async with running_service(settings):
        await wait_for(done, timeout=60, message="the first import applied")
        assert await import_log.lock_holder(pool, CH) is None  # released by its import.finished
        ran = await unifier(settings, "import", str(second), "--channel", CH, "--mode", "member")
        assert ran.code == 0, ran.err
        assert ran.json()["updated"] == 1
    m1 = await find_user(pool, CH, "member", "m-1")
    assert m1 is not None and m1["name"] == "Updated"


async def test_i17_new_users_beyond_the_mu_limit_are_masked_and_published_without_personal_data(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    configured = await unifier(settings, "channel", "configure", CH, "--mu-limit", "2")
    assert configured.code == 0, configured.err
    rows = "".join(f"m-{i},Name {i},n{i}@example.jp,false,false\n" for i in range(4))
    members = write_csv(tmp_path / "m.csv", "memberId,name,email,unsubscribeEmail,unsubscribeTexting\n" + rows)
    async with running_service(settings):
        ran = await unifier(settings, "import", str(members), "--channel", CH, "--mode", "member")
        assert ran.code == 0 and ran.json()["created"] == 4
        again = await unifier(settings, "import", str(write_csv(tmp_path / "u.csv", "memberId,name\n" + "".join(f"m-{i},New {i}\n" for i in range(4)))),
                               "--channel", CH, "--mode", "member")
        assert again.json()["updated"] == 4

        async def changes() -> list[Any] | None:
            got = [v for _k, v in await read_topic(settings, Topics(settings.topic_prefix).user_changed) if v]
            return got if len(got) >= 6 else None

        # 4 created; the 2 visible members' updates. A masked member's update changes
        # nothing anyone can see, so nothing is published for it.
        published = await wait_for(changes, timeout=30, message="user-changed for 4 created and 2 updated")
    assert await pool.fetchval("SELECT count(*) FROM users WHERE masked") == 2  # which two is not promised
    for msg in published:
        user = msg["user"]
        if user["masked"]:
            assert msg["change"] == "created"
            assert user["profile"] is None and user["name"] is None and user["memberId"] is None
        else:
            assert user["name"] is not None and user["profile"]["email"] is not None
    assert sorted(m["change"] for m in published) == ["created"] * 4 + ["updated"] * 2
    hidden = await pool.fetch("SELECT state::json AS state FROM users WHERE masked")
    assert len(hidden) == 2  # I17: the update applied, and the users stayed masked
    assert all(r["state"]["fields"]["name"][0].startswith("New ") for r in hidden)


async def test_i2_i3_u5_imports_unify_never_booted_leads_at_once_and_booted_ones_at_the_members_login(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """A lead import creates never-booted leads; a booted lead gets a qualified e-mail
    from staff; a member import with those e-mails merges the first at once and the
    second when the member next logs in (U5 timing)."""
    def ev(event_id: str, type_: str, at: int, **fields: Any) -> dict[str, Any]:
        return {"eventId": event_id, "type": type_, "channelId": CH, "occurredAt": at, **fields}

    leads = write_csv(tmp_path / "leads.csv", "email,name,unsubscribeEmail,unsubscribeTexting\nnew@example.jp,Lead,false,false\n")
    members = write_csv(tmp_path / "members.csv", "memberId,email,unsubscribeEmail,unsubscribeTexting\nm-new,new@example.jp,false,false\nm-booted,booted@example.jp,false,false\n")
    async with running_service(settings), Publisher(settings) as pub:
        await pub.sdk(ev("b1", "boot", T0, veilId="veil-1", platform="web"))
        await wait_for(lambda: find_user(pool, CH, "veil", "veil-1"), message="the visitor")
        visitor = await find_user(pool, CH, "veil", "veil-1")
        assert visitor is not None
        await pub.command(ev("p1", "profile.update", T0 + 1, actor="staff", userId=visitor["id"], profile={"email": "booted@example.jp"}))
        await wait_for(lambda: find_user(pool, CH, "email", "booted@example.jp"), message="the booted lead")

        ran = await unifier(settings, "import", str(leads), "--channel", CH, "--mode", "lead", "--key", "email")
        assert ran.code == 0 and ran.json()["created"] == 1, ran.err
        lead = await find_user(pool, CH, "email", "new@example.jp")
        assert lead is not None and lead["type"] == "lead"

        ran = await unifier(settings, "import", str(members), "--channel", CH, "--mode", "member")
        assert ran.code == 0 and ran.json()["created"] == 2, ran.err
        m_new = await find_user(pool, CH, "member", "m-new")
        m_booted = await find_user(pool, CH, "member", "m-booted")
        assert m_new is not None and m_booted is not None
        assert await find_user(pool, CH, "id", lead["id"]) == {"id": lead["id"], "mergedInto": m_new["id"]}
        assert m_new["name"] == "Lead"  # the lead's data moved to the member (U4)
        waiting = await find_user(pool, CH, "id", visitor["id"])
        assert waiting is not None and waiting["unification"]["pendingInto"] == m_booted["id"]

        # After the import in event time: the broker's clock bounds it (now).
        await pub.sdk(ev("l1", "login", int(time.time() * 1000) + 60_000, veilId="veil-9", memberId="m-booted"))

        async def merged() -> bool:
            return (await find_user(pool, CH, "id", visitor["id"])) == {"id": visitor["id"], "mergedInto": m_booted["id"]}

        await wait_for(merged, timeout=30, message="the booted lead merged at the member's login")
