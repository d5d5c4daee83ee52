"""Contract tests of the command endpoints (docs/contract.md, "HTTP API", Commands):
202 + Location, `?wait=` outcomes, Idempotency-Key, the command status, and the key's
name as the command's `actor` — through the real broker and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from contracts.topics import Topics
from tests.support.api import LiveApi, module_api_fixture, new_channel  # noqa: F401 - the fixture module_api
from tests.support.infra import wait_for
from tests.support.service import Publisher, read_topic

pytestmark = pytest.mark.integration


async def _client(api: LiveApi, scope: str = "admin", name: str | None = None) -> httpx.AsyncClient:
    return api.client(await api.key(scope, name=name))


async def test_command_answers_202_with_event_id_and_location_then_status_applied(module_api: LiveApi) -> None:
    ch = new_channel()
    async with await _client(module_api, "write") as http:
        r = await http.put(f"/v1/channels/{ch}/members/m1", json={"profile": {"email": "a@example.com"}})
        assert r.status_code == 202
        event_id = r.json()["eventId"]
        assert r.headers["location"] == f"/v1/channels/{ch}/commands/{event_id}"

        async def applied() -> bool:
            status = (await http.get(r.headers["location"])).json()
            return status == {"state": "applied"}

        await wait_for(applied, timeout=30)


async def test_wait_answers_200_with_the_user_for_each_user_command(module_api: LiveApi) -> None:
    ch = new_channel()
    async with await _client(module_api) as http:
        member = (await http.put(f"/v1/channels/{ch}/members/m1?wait=10",
                                 json={"profile": {"email": "m@example.com"}, "name": "Mo"})).json()
        assert (member.get("type"), member.get("memberId"), member.get("name")) == ("member", "m1", "Mo"), member
        assert member["unification"] == {"candidates": [], "pendingInto": None} and member["grades"] == []

        lead = await http.post(f"/v1/channels/{ch}/leads?wait=10", json={"profile": {"email": "l@example.com"}})
        assert lead.status_code == 200 and lead.json()["type"] == "lead"
        lead_id = lead.json()["id"]

        patched = await http.patch(f"/v1/channels/{ch}/users/{lead_id}?wait=10",
                                   json={"name": "Lee", "tags": ["vip"], "profile": {"city": "Osaka"}, "unsubscribeEmail": True})
        assert patched.status_code == 200
        assert (patched.json()["name"], patched.json()["tags"], patched.json()["profile"]["city"]) == ("Lee", ["vip"], "Osaka")
        assert patched.json()["unsubscribeEmail"] is True

        blocked = await http.post(f"/v1/channels/{ch}/users/{lead_id}/block?wait=10")
        assert blocked.status_code == 200 and blocked.json()["blocked"] is True
        unblocked = await http.post(f"/v1/channels/{ch}/users/{lead_id}/unblock?wait=10")
        assert unblocked.status_code == 200 and unblocked.json()["blocked"] is False

        delivered = await http.post(f"/v1/channels/{ch}/deliveries?wait=10", json={"userId": lead_id, "campaignId": "cmp_1"})
        assert delivered.status_code == 200 and delivered.json()["deliveredCampaigns"] == ["cmp_1"]


async def test_b2_b3_deletes_applied_answer_state_applied_and_the_user_is_gone(module_api: LiveApi) -> None:
    ch = new_channel()
    async with await _client(module_api) as http:
        user = (await http.put(f"/v1/channels/{ch}/members/m1?wait=10", json={"profile": {}})).json()
        gone = await http.delete(f"/v1/channels/{ch}/members/m1?wait=10")
        assert gone.status_code == 200 and gone.json() == {"eventId": gone.json()["eventId"], "state": "applied"}
        assert (await http.get(f"/v1/channels/{ch}/users/{user['id']}")).status_code == 404

        lead = (await http.post(f"/v1/channels/{ch}/leads?wait=10", json={"profile": {"mobileNumber": "+81 90-1234-5678"}})).json()
        assert "id" in lead, lead
        deleted = await http.delete(f"/v1/channels/{ch}/users/{lead['id']}?wait=10")
        assert deleted.status_code == 200 and deleted.json()["state"] == "applied"
        assert (await http.get(f"/v1/channels/{ch}/users/{lead['id']}")).status_code == 404


async def test_rejected_command_answers_422_with_the_dead_letter_code_and_status_says_rejected(module_api: LiveApi) -> None:
    ch = new_channel()
    async with await _client(module_api, "write") as http:
        r = await http.post(f"/v1/channels/{ch}/users/u_nobody/block?wait=10")
        assert r.status_code == 422
        assert r.headers["content-type"] == "application/problem+json"
        body = r.json()
        assert body["status"] == 422 and body["error"]["code"] == "unknown_user"
        status = (await http.get(r.headers["location"])).json()
        assert status["state"] == "rejected" and status["error"]["code"] == "unknown_user"
        assert "u_nobody" in status["error"]["message"]


async def test_command_status_of_an_unknown_event_id_is_pending(module_api: LiveApi) -> None:
    async with await _client(module_api, "read") as http:
        r = await http.get(f"/v1/channels/{new_channel()}/commands/never-sent")
        assert r.status_code == 200 and r.json() == {"state": "pending"}


async def test_idempotency_key_becomes_the_event_id_and_a_retry_is_applied_once(module_api: LiveApi) -> None:
    ch = new_channel()
    async with await _client(module_api, "write") as http:
        headers = {"Idempotency-Key": "retry-1"}
        first = await http.put(f"/v1/channels/{ch}/members/m1?wait=10", json={"name": "First"}, headers=headers)
        assert first.status_code == 200 and first.headers["location"].endswith("/commands/retry-1")
        # The retry carries another body, as a buggy client might: it is the same fact, ignored.
        again = await http.put(f"/v1/channels/{ch}/members/m1", json={"name": "Second"}, headers=headers)
        assert again.status_code == 202 and again.json() == {"eventId": "retry-1"}
        marker = await http.put(f"/v1/channels/{ch}/members/m2?wait=10", json={})  # applied after the retry
        assert marker.status_code == 200
        user = (await http.get(f"/v1/channels/{ch}/users", params={"memberId": "m1"})).json()["items"][0]
        assert user["name"] == "First"


async def test_422_names_every_bad_field_and_publishes_nothing(module_api: LiveApi) -> None:
    ch = new_channel()
    async with await _client(module_api, "write") as http:
        r = await http.put(f"/v1/channels/{ch}/members/m1", json={"profile": {".bad": 1}, "name": 3, "colour": "x"})
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
        fields = {e["field"] for e in r.json()["errors"]}
        assert {"body.name", "body.colour"} <= fields and any(f.startswith("body.profile") for f in fields)
        lead = await http.post(f"/v1/channels/{ch}/leads", json={"profile": {"city": "Kyoto"}})
        assert lead.status_code == 422 and "email" in lead.json()["detail"]
        wait = await http.put(f"/v1/channels/{ch}/members/m1?wait=31", json={})
        assert wait.status_code == 422 and wait.json()["errors"][0]["field"] == "query.wait"
        assert "Traceback" not in r.text + lead.text + wait.text


async def test_d2_grades_defined_assigned_shown_on_the_user_and_unassigned(module_api: LiveApi) -> None:
    ch = new_channel()
    async with await _client(module_api, "write") as http:
        defined = await http.put(f"/v1/channels/{ch}/grades/gold?wait=10", json={"colour": "#FFCC00"})
        assert defined.status_code == 200 and defined.json()["state"] == "applied"
        member = (await http.put(f"/v1/channels/{ch}/members/m1?wait=10", json={"profile": {"email": "g@example.com"}})).json()
        assigned = await http.post(f"/v1/channels/{ch}/grades/gold/holders?wait=10", json={"email": "G@example.com"})
        assert assigned.status_code == 200
        shown = (await http.get(f"/v1/channels/{ch}/users/{member['id']}")).json()
        assert shown["grades"] == [{"name": "gold", "colour": "#ffcc00"}]
        listed = (await http.get(f"/v1/channels/{ch}/users", params={"grade": "gold"})).json()["items"]
        assert [u["id"] for u in listed] == [member["id"]] and listed[0]["grades"][0]["name"] == "gold"
        removed = await http.delete(f"/v1/channels/{ch}/grades/gold/holders/email/g@example.com?wait=10")
        assert removed.status_code == 200
        assert (await http.get(f"/v1/channels/{ch}/users/{member['id']}")).json()["grades"] == []
        assert (await http.delete(f"/v1/channels/{ch}/grades/gold?wait=10")).status_code == 200
        unknown = await http.post(f"/v1/channels/{ch}/grades/gold/holders?wait=10", json={"memberId": "m1"})
        assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "unknown_grade"
        two = await http.post(f"/v1/channels/{ch}/grades/gold/holders", json={"memberId": "m1", "email": "a@b.jp"})
        assert two.status_code == 422


async def test_i16_the_keys_name_is_the_commands_actor(module_api: LiveApi) -> None:
    ch = new_channel()
    async with await _client(module_api, "write", name=f"staff-{ch}") as http:
        r = await http.put(f"/v1/channels/{ch}/members/m1?wait=10", json={})
        assert r.status_code == 200
    event_id = r.headers["location"].rsplit("/", 1)[1]
    commands = await read_topic(module_api.settings, Topics(module_api.settings.topic_prefix).commands)
    sent: list[dict[str, Any]] = [v for _, v in commands if v and v.get("eventId") == event_id]
    assert [c["actor"] for c in sent] == [f"staff-{ch}"]
    assert [k for k, v in commands if v and v.get("eventId") == event_id] == [ch]  # keyed by channel


async def test_command_status_outlives_the_event_id_window_and_is_kept_90_days_of_command_time(module_api: LiveApi) -> None:
    """Contract "HTTP API", command status: an applied command older than the eventId
    window (7 days, C-idempotency) still reads `applied`, a rejected one `rejected` with
    its reason; 90 days of the channel's command time later both are forgotten
    (`pending`), so `command_outcomes` keeps a window, not the history."""
    ch, day, t0 = new_channel(), 24 * 60 * 60 * 1000, 1_746_316_800_000  # in the past: event time is not capped

    def command(event_id: str, at: int, **fields: Any) -> dict[str, Any]:
        return {"eventId": event_id, "channelId": ch, "occurredAt": at, "actor": "test", **fields}

    async with await _client(module_api, "read") as http, Publisher(module_api.settings) as pub:
        async def state(event_id: str) -> dict[str, Any]:
            return (await http.get(f"/v1/channels/{ch}/commands/{event_id}")).json()  # type: ignore[no-any-return]

        async def applied(event_id: str) -> bool:
            return (await state(event_id))["state"] == "applied"

        await pub.command(command("old-applied", t0, type="member.upsert", memberId="m1", profile={}),
                          command("old-rejected", t0, type="user.block", userId="u_nobody"))
        await wait_for(lambda: applied("old-applied"), timeout=30)
        await pub.command(command("week-later", t0 + 8 * day, type="member.upsert", memberId="m2", profile={}))
        await wait_for(lambda: applied("week-later"), timeout=30)
        forgotten = await module_api.pool.fetchval(
            "SELECT count(*) FROM applied_events WHERE channel_id = $1 AND event_id = 'old-applied'", ch)
        assert forgotten == 0  # the eventId window no longer knows it ...
        assert await state("old-applied") == {"state": "applied"}  # ... the command status does
        rejected = await state("old-rejected")
        assert rejected["state"] == "rejected" and rejected["error"]["code"] == "unknown_user"

        await pub.command(command("season-later", t0 + 91 * day, type="member.upsert", memberId="m3", profile={}))
        await wait_for(lambda: applied("season-later"), timeout=30)
        assert await state("old-applied") == {"state": "pending"}
        assert await state("old-rejected") == {"state": "pending"}
        assert await state("week-later") == {"state": "applied"}
        kept = await module_api.pool.fetch("SELECT event_id FROM command_outcomes WHERE channel_id = $1 ORDER BY 1", ch)
        assert [r[0] for r in kept] == ["season-later", "week-later"]


async def test_an_event_id_that_is_not_a_command_has_no_command_status(module_api: LiveApi) -> None:
    """Contract "HTTP API", command status: it is read from the commands' outcomes alone,
    so an SDK event applied under an eventId reads `pending`, like an eventId never seen
    (the eventId window is not asked for single eventIds: docs/decisions.md, "Issue 14,
    session 12")."""
    ch = new_channel()
    async with await _client(module_api, "read") as http, Publisher(module_api.settings) as pub:
        await pub.sdk({"eventId": "sdk-boot", "type": "boot", "channelId": ch, "occurredAt": 1_746_316_800_000,
                       "veilId": "v1", "platform": "web"})

        async def remembered() -> bool:  # applied, and within the eventId window ...
            return bool(await module_api.pool.fetchval(
                "SELECT count(*) FROM applied_events WHERE channel_id = $1 AND event_id = 'sdk-boot'", ch))

        await wait_for(remembered, timeout=30)
        status = (await http.get(f"/v1/channels/{ch}/commands/sdk-boot")).json()
        assert status == {"state": "pending"}  # ... yet no command


async def test_wait_is_answered_for_a_retry_of_an_applied_command(module_api: LiveApi) -> None:
    """Idempotency (contract, Commands): a retried request with `?wait=` is skipped by the
    projection as a repeat, and its waiter still hears "applied" (200 with the user)."""
    ch = new_channel()
    async with await _client(module_api, "write") as http:
        headers = {"Idempotency-Key": "retry-wait"}
        first = await http.put(f"/v1/channels/{ch}/members/m1?wait=10", json={"name": "First"}, headers=headers)
        assert first.status_code == 200
        again = await http.put(f"/v1/channels/{ch}/members/m1?wait=10", json={"name": "Second"}, headers=headers)
        assert again.status_code == 200 and again.json()["name"] == "First"
