"""Contract tests of the read endpoints (docs/contract.md, "HTTP API", Reads): a user by
id (404, 410 + Link for a merged id, U8), lookup by every identifier, search with `q`,
filters and keyset pagination, activities, merges (G4), the review queue (U5, U6) and
channel settings — through the real broker and PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from services.platform.config import Settings
from tests.support.api import LiveApi, module_api_fixture, new_channel  # noqa: F401 - the fixture module_api
from tests.support.infra import wait_for
from tests.support.service import Publisher

pytestmark = pytest.mark.integration


def _sdk(ch: str, n: int, type_: str, **fields: Any) -> dict[str, Any]:
    return {"eventId": f"{ch}-{type_}-{n}", "type": type_, "channelId": ch, "occurredAt": int(time.time() * 1000) + n, **fields}


async def _admin(api: LiveApi) -> httpx.AsyncClient:
    return api.client(await api.key("admin"))


async def _by(http: httpx.AsyncClient, ch: str, **params: str) -> list[dict[str, Any]]:
    r = await http.get(f"/v1/channels/{ch}/users", params=params)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


async def _approved_merge(http: httpx.AsyncClient, ch: str) -> tuple[str, str]:
    """A lead and a member sharing a qualified e-mail, the lead approved into it (U5: not
    booted, so merged at once). (lead id, member id)."""
    lead = (await http.post(f"/v1/channels/{ch}/leads?wait=10",
                            json={"profile": {"email": "same@example.com", "city": "Nara"}})).json()
    member = (await http.put(f"/v1/channels/{ch}/members/m1?wait=10",
                             json={"profile": {"email": "same@example.com", "city": "Kobe"}})).json()
    shown = (await http.get(f"/v1/channels/{ch}/users/{lead['id']}")).json()
    assert shown["unification"]["candidates"] == [member["id"]]
    queue = (await http.get(f"/v1/channels/{ch}/unifications", params={"state": "candidate"})).json()
    assert [(i["source"]["id"], [t["id"] for t in i["targets"]]) for i in queue["items"]] == [(lead["id"], [member["id"]])]
    merged = await http.post(f"/v1/channels/{ch}/unifications?wait=10",
                             json={"sourceUserId": lead["id"], "targetUserId": member["id"]})
    assert merged.status_code == 200 and merged.json()["id"] == member["id"]  # the source's survivor
    return lead["id"], member["id"]


async def test_get_user_404_for_unknown_and_problem_json(module_api: LiveApi) -> None:
    async with await _admin(module_api) as http:
        r = await http.get(f"/v1/channels/{new_channel()}/users/u_unknown")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
        assert set(r.json()) == {"type", "title", "status", "detail"}


async def test_u8_merged_id_answers_410_with_survivor_link_and_g4_merge_record(module_api: LiveApi) -> None:
    ch = new_channel()
    async with await _admin(module_api) as http:
        lead_id, member_id = await _approved_merge(http, ch)
        r = await http.get(f"/v1/channels/{ch}/users/{lead_id}")
        assert r.status_code == 410
        assert r.json()["id"] == lead_id and r.json()["mergedInto"] == member_id
        assert r.headers["link"] == f'</v1/channels/{ch}/users/{member_id}>; rel="canonical"'
        merges = (await http.get(f"/v1/channels/{ch}/users/{member_id}/merges")).json()["items"]
        assert [(m["sourceUserId"], m["targetUserId"]) for m in merges] == [(lead_id, member_id)]
        assert "profile.city" in merges[0]["contested"]  # Nara against Kobe, with its winner
        assert (await http.get(f"/v1/channels/{ch}/users/{lead_id}/merges")).status_code == 410
        assert (await _by(http, ch, email="same@example.com"))[0]["id"] == member_id


async def test_lookup_by_every_identifier(module_api: LiveApi) -> None:
    ch = new_channel()
    settings: Settings = module_api.settings
    async with await _admin(module_api) as http, Publisher(settings) as pub:
        member = (await http.put(f"/v1/channels/{ch}/members/M-7?wait=10",
                                 json={"profile": {"email": "Who@Example.com", "mobileNumber": "+81 90-1111-2222"}})).json()
        await pub.sdk(_sdk(ch, 1, "boot", veilId="veil-1", platform="web"))
        anonymous = await wait_for(lambda: _by(http, ch, veilId="veil-1"), timeout=30)
        assert [u["type"] for u in anonymous] == ["anonymous"]
        for params in ({"memberId": " M-7 "}, {"email": "who@example.com"}, {"email": " WHO@example.COM"},
                       {"mobileNumber": "+819011112222"}, {"mobileNumber": "+81 90-1111-2222"}):
            assert [u["id"] for u in await _by(http, ch, **params)] == [member["id"]], params
        assert await _by(http, ch, memberId="M-8") == []
        bad = await http.get(f"/v1/channels/{ch}/users", params={"email": "not an e-mail"})
        assert bad.status_code == 422


async def test_search_q_prefix_of_name_email_or_phone_and_filters(module_api: LiveApi) -> None:
    ch = new_channel()
    async with await _admin(module_api) as http:
        a = (await http.put(f"/v1/channels/{ch}/members/a?wait=10",
                            json={"name": "Sato Hanako", "profile": {"email": "hana@example.com"}})).json()
        b = (await http.put(f"/v1/channels/{ch}/members/b?wait=10",
                            json={"name": "Suzuki", "profile": {"mobileNumber": "+81 80-5555-0000"}})).json()
        c = (await http.post(f"/v1/channels/{ch}/leads?wait=10", json={"profile": {"email": "sato2@example.com"}})).json()
        await http.patch(f"/v1/channels/{ch}/users/{c['id']}?wait=10", json={"tags": ["vip"]})
        await http.post(f"/v1/channels/{ch}/users/{b['id']}/block?wait=10")

        def ids(items: list[dict[str, Any]]) -> set[str]:
            return {u["id"] for u in items}

        assert ids(await _by(http, ch, q="sato")) == {a["id"], c["id"]}  # name (any case) and e-mail
        assert ids(await _by(http, ch, q="SATO H")) == {a["id"]}
        assert ids(await _by(http, ch, q="hana@")) == {a["id"]}
        assert ids(await _by(http, ch, q="+81 80-55")) == {b["id"]}
        assert ids(await _by(http, ch, q="%")) == set()  # LIKE wildcards are text
        assert ids(await _by(http, ch, type="lead")) == {c["id"]}
        assert ids(await _by(http, ch, tag="vip")) == {c["id"]}
        assert ids(await _by(http, ch, blocked="true")) == {b["id"]}
        assert ids(await _by(http, ch, q="s", type="member", blocked="false")) == {a["id"]}
        blank = await http.get(f"/v1/channels/{ch}/users", params={"q": "  "})
        assert blank.status_code == 422


def member_id(ch: str, member: str) -> str:
    from services.domain.ids import member_user_id

    return member_user_id(ch, member)


async def test_search_q_broad_prefix_walk_answers_as_the_sparse_path(module_api: LiveApi, monkeypatch: pytest.MonkeyPatch) -> None:
    """A prefix (or tag) matching more than Q_SPARSE users is answered by walking the
    users in id order: the same users, the same order, the same pages."""
    from services.store import queries

    ch = new_channel()
    async with await _admin(module_api) as http:
        for i in range(4):
            await http.put(f"/v1/channels/{ch}/members/w{i}", json={"name": f"Wada {i}", "profile": {"email": f"w{i}@example.com"}})
        await http.put(f"/v1/channels/{ch}/members/x?wait=10", json={"name": "Xu", "profile": {"mobileNumber": "+81 90-7777-0000"}})
        await http.patch(f"/v1/channels/{ch}/users/{member_id(ch, 'w2')}?wait=10", json={"tags": ["vip"]})
        queries_ = [{"q": "wa"}, {"q": "w1@"}, {"q": "+81 90-77"}, {"q": "x"}, {"q": "w", "limit": "3"},
                    {"tag": "vip"}, {"tag": "vip", "q": "wada"}, {"tag": "none"}]
        sparse = [await _by(http, ch, **q) for q in queries_]
        monkeypatch.setattr(queries, "Q_SPARSE", 0)
        walked = [await _by(http, ch, **q) for q in queries_]
        assert [[u["id"] for u in page] for page in walked] == [[u["id"] for u in page] for page in sparse]
        assert [len(page) for page in sparse] == [4, 1, 1, 1, 3, 1, 1, 0]


async def test_keyset_pagination_is_stable_and_complete(module_api: LiveApi) -> None:
    ch = new_channel()
    async with await _admin(module_api) as http:
        for i in range(7):
            await http.put(f"/v1/channels/{ch}/members/m{i}", json={})
        await http.put(f"/v1/channels/{ch}/members/last?wait=10", json={})
        everyone = await _by(http, ch, limit="100")
        assert len(everyone) == 8
        pages: list[list[str]] = []
        cursor: str | None = None
        while True:
            params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
            body = (await http.get(f"/v1/channels/{ch}/users", params=params)).json()
            pages.append([u["id"] for u in body["items"]])
            cursor = body["next"]
            if cursor is None:
                break
        assert [len(p) for p in pages] == [3, 3, 2]
        assert [i for p in pages for i in p] == sorted(u["id"] for u in everyone)
        bad = await http.get(f"/v1/channels/{ch}/users", params={"cursor": "garbage"})
        assert bad.status_code == 422 and "cursor" in bad.json()["detail"]
        too_many = await http.get(f"/v1/channels/{ch}/users", params={"limit": "101"})
        assert too_many.status_code == 422


async def test_u4_activities_newest_first_and_paginated(module_api: LiveApi) -> None:
    ch = new_channel()
    async with await _admin(module_api) as http, Publisher(module_api.settings) as pub:
        await pub.sdk(_sdk(ch, 0, "boot", veilId="v", platform="web"))
        for n in range(1, 4):
            await pub.sdk(_sdk(ch, n, "chat", veilId="v", chatId="c1", medium="web",
                               message={"messageId": f"msg{n}", "text": f"hello {n}"}))
        user_id = (await wait_for(lambda: _by(http, ch, veilId="v"), timeout=30))[0]["id"]

        async def three() -> Any:
            body = (await http.get(f"/v1/channels/{ch}/users/{user_id}/activities", params={"limit": "2"})).json()
            return body if body["next"] is not None else None

        first = await wait_for(three, timeout=30)
        second = (await http.get(f"/v1/channels/{ch}/users/{user_id}/activities",
                                 params={"limit": "2", "cursor": first["next"]})).json()
        events = [a["eventId"] for a in first["items"] + second["items"]]
        assert events[:3] == [f"{ch}-chat-3", f"{ch}-chat-2", f"{ch}-chat-1"]
        assert second["next"] is None or len(events) == 4
        times = [a["occurredAt"] for a in first["items"] + second["items"]]
        assert times == sorted(times, reverse=True)


async def test_u5_u6_pending_queue_and_cancel(module_api: LiveApi) -> None:
    ch = new_channel()
    async with await _admin(module_api) as http, Publisher(module_api.settings) as pub:
        await pub.sdk(_sdk(ch, 1, "boot", veilId="vp", platform="web"))
        source = (await wait_for(lambda: _by(http, ch, veilId="vp"), timeout=30))[0]["id"]
        await http.patch(f"/v1/channels/{ch}/users/{source}?wait=10", json={"profile": {"email": "p@example.com"}})
        member = (await http.put(f"/v1/channels/{ch}/members/mp?wait=10", json={"profile": {"email": "p@example.com"}})).json()
        approved = await http.post(f"/v1/channels/{ch}/unifications?wait=10",
                                   json={"sourceUserId": source, "targetUserId": member["id"]})
        assert approved.status_code == 200 and approved.json()["unification"]["pendingInto"] == member["id"]
        pending = (await http.get(f"/v1/channels/{ch}/unifications", params={"state": "pending"})).json()["items"]
        assert [(i["source"]["id"], [t["id"] for t in i["targets"]]) for i in pending] == [(source, [member["id"]])]
        cancelled = await http.delete(f"/v1/channels/{ch}/unifications/{source}?wait=10")
        assert cancelled.status_code == 200 and cancelled.json()["unification"]["pendingInto"] is None
        assert (await http.get(f"/v1/channels/{ch}/unifications", params={"state": "pending"})).json()["items"] == []
        again = await http.delete(f"/v1/channels/{ch}/unifications/{source}?wait=10")
        assert again.status_code == 422 and again.json()["error"]["code"] == "not_pending"


async def test_h1_i17_p2_channel_settings_secret_write_only(module_api: LiveApi) -> None:
    ch = new_channel()
    async with await _admin(module_api) as http:
        assert (await http.get(f"/v1/channels/{ch}/settings")).json() == {
            "channelId": ch, "muLimit": None, "fields": {}, "memberHashSecretSet": False}
        r = await http.patch(f"/v1/channels/{ch}/settings",
                             json={"muLimit": 1000, "memberHashSecret": "s3cret", "fields": {"profile.age": "number"}})
        assert r.status_code == 200
        assert r.json() == {"channelId": ch, "muLimit": 1000, "fields": {"profile.age": "number"}, "memberHashSecretSet": True}
        assert "s3cret" not in r.text
        r = await http.patch(f"/v1/channels/{ch}/settings", json={"muLimit": None})
        assert r.json()["muLimit"] is None and r.json()["memberHashSecretSet"] is True
        bad = await http.patch(f"/v1/channels/{ch}/settings", json={"fields": {"age": "colour"}})
        assert bad.status_code == 422 and len(bad.json()["errors"]) == 2  # the key and the type


async def test_hot_reads_answer_byte_for_byte_as_the_routes_and_leave_every_refusal_to_them(module_api: LiveApi) -> None:
    """docs/contract.md "HTTP API" (Reads, Auth), D2, U8: a user by id and a lookup by
    e-mail are answered before routing (services/api/hot.py) with the same status,
    headers and bytes as the routes give (reached here through a parameter the routes
    ignore); what the hot path does not answer — 404, 410, 422, no key, a key of another
    channel — the routes do; and a revoked key is refused within auth.CACHE_S there too."""
    from services.api.auth import CACHE_S

    ch = new_channel()
    async with await _admin(module_api) as http:
        member = (await http.put(f"/v1/channels/{ch}/members/hot-1?wait=10",
                                 json={"profile": {"email": "hot@example.com"}, "name": "Hot"})).json()
        assert (await http.put(f"/v1/channels/{ch}/grades/gold?wait=10", json={"colour": "#ffcc00"})).status_code == 200
        held = await http.post(f"/v1/channels/{ch}/grades/gold/holders?wait=10", json={"email": "hot@example.com"})
        assert held.status_code == 200, held.text
        lead_id, _ = await _approved_merge(http, ch)

        def same(hot: httpx.Response, routed: httpx.Response) -> None:
            assert (hot.status_code, hot.content) == (routed.status_code, routed.content)
            assert {k: v for k, v in hot.headers.items() if k != "date"} == {
                k: v for k, v in routed.headers.items() if k != "date"}

        by_id = await http.get(f"/v1/channels/{ch}/users/{member['id']}")
        assert by_id.status_code == 200 and by_id.json()["grades"] == [{"name": "gold", "colour": "#ffcc00"}]
        same(by_id, await http.get(f"/v1/channels/{ch}/users/{member['id']}", params={"ignored": "1"}))
        lookup = await http.get(f"/v1/channels/{ch}/users", params={"email": "hot@example.com"})
        assert [u["id"] for u in lookup.json()["items"]] == [member["id"]]
        same(lookup, await http.get(f"/v1/channels/{ch}/users", params={"email": "hot@example.com", "limit": "50"}))
        same(await http.get(f"/v1/channels/{ch}/users", params={"email": "nobody@example.com"}),
             await http.get(f"/v1/channels/{ch}/users", params={"email": "nobody@example.com", "limit": "50"}))
        # Left to the routes: 404, 410 with its Link (U8), 422.
        assert (await http.get(f"/v1/channels/{ch}/users/u_nobody")).status_code == 404
        gone = await http.get(f"/v1/channels/{ch}/users/{lead_id}")
        assert gone.status_code == 410 and "canonical" in gone.headers["link"]
        assert (await http.get(f"/v1/channels/{ch}/users", params={"email": "not an e-mail"})).status_code == 422
    async with module_api.client() as anonymous:
        assert (await anonymous.get(f"/v1/channels/{ch}/users/{member['id']}")).status_code == 401
    elsewhere = await module_api.key("read", channel=new_channel())
    async with module_api.client(elsewhere) as http:
        assert (await http.get(f"/v1/channels/{ch}/users/{member['id']}")).status_code == 403
    reader = await module_api.key("read", channel=ch, name=f"hot-{ch}")
    async with module_api.client(reader) as http:
        assert (await http.get(f"/v1/channels/{ch}/users/{member['id']}")).status_code == 200
        await module_api.pool.execute("UPDATE api_keys SET revoked_at = now() WHERE name = $1", f"hot-{ch}")

        async def refused() -> bool:
            by_id = await http.get(f"/v1/channels/{ch}/users/{member['id']}")
            lookup = await http.get(f"/v1/channels/{ch}/users", params={"email": "hot@example.com"})
            return by_id.status_code == lookup.status_code == 401

        await wait_for(refused, timeout=CACHE_S + 5)
