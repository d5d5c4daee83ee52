"""External lookups (issue 15, seed 004 §2) end to end: `unifier run` (projection, relay,
API, lookup worker) on the real broker and PostgreSQL, calling a company's system that
is a real HTTP server on loopback (tests/support/company.py); loopback is allowed
explicitly (UNIFIER_LOOKUP_ALLOW_NETWORKS), as production would never do by default."""

from __future__ import annotations

import base64
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from services.lookup.worker import result_event_id
from services.replay.digest import state_digest
from services.store import lookups as lookup_store
from tests.integration.test_replay import replay
from tests.support.api import LiveApi, live_api, new_channel
from tests.support.company import Company, company_server
from tests.support.infra import Infra, drop_schema, isolated_settings, wait_for
from tests.support.service import Publisher

pytestmark = pytest.mark.integration

KEK = base64.b64encode(b"k" * 32).decode()
T0 = 1_746_316_800_000


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def company() -> AsyncIterator[Company]:
    async with company_server() as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(infra: Infra, tmp_path_factory: pytest.TempPathFactory, company: Company) -> AsyncIterator[LiveApi]:
    settings = isolated_settings(infra, tmp_path_factory.mktemp("lookups")).replace(
        lookup_allow_networks="127.0.0.0/8", lookup_kek=KEK, lookup_timeout=1.0, lookup_max_bytes=4096,
        lookup_rate=1000.0,
    )
    try:
        async with live_api(settings) as live:
            yield live
    finally:
        await drop_schema(infra.database_url, settings.db_schema)


def definition(url: str, **changes: Any) -> dict[str, Any]:
    return {
        "url": url, "method": "POST",
        "params": [{"label": "Member no.", "name": "memberNo", "required": True, "bind": "memberId", "maxLength": 16}],
        "results": [{"label": "Rank", "key": "rank"}, {"label": "City", "key": "city"},
                    {"label": "Since", "key": "account.since"}],
        "connections": [{"result": "rank", "profileKey": "rank"}, {"result": "city", "profileKey": "city"}],
        **changes,
    }


async def admin(api: LiveApi) -> httpx.AsyncClient:
    return api.client(await api.key("admin"))


async def define(http: httpx.AsyncClient, ch: str, name: str, body: dict[str, Any], **query: Any) -> httpx.Response:
    r = await http.put(f"/v1/channels/{ch}/lookups/{name}", json=body, params={"wait": 10, **query})
    assert r.status_code == 200, r.text
    return r


async def member(http: httpx.AsyncClient, ch: str, member_id: str, **profile: Any) -> str:
    r = await http.put(f"/v1/channels/{ch}/members/{member_id}", json={"profile": profile}, params={"wait": 10})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


async def provenance(api: LiveApi, user_id: str, key: str) -> list[Any]:
    """[value, qualified, member data] of a profile value as stored (docs/domain.md, U3)."""
    stored = await api.pool.fetchval("SELECT state::json->'fields'->$2 FROM users WHERE id = $1", user_id, key)
    return list(stored[:3])


async def test_lookup_definition_key_is_shown_once_and_only_stored_wrapped(api: LiveApi, company: Company) -> None:
    """Issue 15 item 1: an encrypted lookup gets a generated key, answered once; reads
    never show it; the stored definition holds it only wrapped under the KEK; a
    redefinition keeps it (no key answered) unless rotateKey."""
    ch = new_channel()
    async with await admin(api) as http:
        first = await define(http, ch, "CRM", definition(company.url("/encrypted"), encrypted=True))
        key = first.json()["key"]
        assert len(base64.b64decode(key)) == 32
        assert first.headers["cache-control"] == "no-store"
        stored = await lookup_store.definition(api.pool, ch, "CRM")
        assert stored is not None and stored["wrappedKey"] and key not in str(stored)
        listed = (await http.get(f"/v1/channels/{ch}/lookups")).json()["items"]
        assert [d["name"] for d in listed] == ["CRM"] and "wrappedKey" not in listed[0] and key not in str(listed)
        again = await define(http, ch, "CRM", definition(company.url("/encrypted"), encrypted=True))
        assert "key" not in again.json()
        assert (await lookup_store.definition(api.pool, ch, "CRM"))["wrappedKey"] == stored["wrappedKey"]  # type: ignore[index]
        rotated = await define(http, ch, "CRM", definition(company.url("/encrypted"), encrypted=True), rotateKey="true")
        assert rotated.json()["key"] != key


async def test_lookup_definition_refusals_are_422_naming_the_problem(api: LiveApi, company: Company) -> None:
    """Issue 15 item 1: a connection to an unknown result, to contact data, an encrypted
    GET or a non-http URL is refused before anything is published; only admins define."""
    ch = new_channel()
    async with await admin(api) as http:
        for body, words in (
            (definition(company.url("/plain"), connections=[{"result": "nope", "profileKey": "x"}]), "not the key of a result"),
            (definition(company.url("/plain"), connections=[{"result": "rank", "profileKey": "email"}]), "contact data"),
            (definition(company.url("/plain"), encrypted=True, method="GET"), "POST"),
            (definition("file:///etc/passwd"), "http:// or https://"),
        ):
            r = await http.put(f"/v1/channels/{ch}/lookups/CRM", json=body)
            assert r.status_code == 422 and words in r.json()["detail"], r.text
        assert await lookup_store.definition(api.pool, ch, "CRM") is None
    async with api.client(await api.key("write")) as http:
        assert (await http.put(f"/v1/channels/{ch}/lookups/CRM", json=definition(company.url("/plain")))).status_code == 403


async def test_lookup_on_demand_plain_get_and_encrypted_answers_the_result_fields(api: LiveApi, company: Company) -> None:
    """Issue 15 item 2: staff call a lookup for a customer; bound parameters come from the
    customer's fields; plain POST, plain GET and encrypted payloads all answer the result
    fields (a nested key too); nothing is stored on the customer."""
    ch = new_channel()
    async with await admin(api) as http:
        user_id = await member(http, ch, "m-1", email="taro@example.jp")
        await define(http, ch, "post", definition(company.url("/plain")))
        await define(http, ch, "get", definition(company.url("/plain"), method="GET"))
        key = (await define(http, ch, "sealed", definition(company.url("/encrypted"), encrypted=True))).json()["key"]
        company.key = base64.b64decode(key)
        expected = [{"label": "Rank", "key": "rank", "value": "gold"}, {"label": "City", "key": "city", "value": "Osaka"},
                    {"label": "Since", "key": "account.since", "value": "2019-04-01"}]
        for name in ("post", "get", "sealed"):
            r = await http.post(f"/v1/channels/{ch}/users/{user_id}/lookups/{name}")
            assert r.status_code == 200, r.text
            assert r.json() == {"name": name, "userId": user_id, "results": expected}
            assert company.received[-1] == {"memberNo": "m-1"}
        r = await http.post(f"/v1/channels/{ch}/users/{user_id}/lookups/post", json={"params": {"memberNo": "m-2"}})
        assert [x["value"] for x in r.json()["results"]] == [None, None, None]  # staff's value wins over the binding
        user = (await http.get(f"/v1/channels/{ch}/users/{user_id}")).json()
        assert "rank" not in user["profile"]
        assert (await http.get(f"/v1/channels/{ch}/users/{user_id}/lookups")).json() == {"items": []}


async def test_lookup_failures_each_answer_a_clear_problem_never_500(api: LiveApi, company: Company) -> None:
    """Issue 15 items 2 and 4: timeout 504, refused, HTTP error, oversized, malformed,
    redirect (not followed) and decryption failure 502, each with its `code`; bad
    parameters 422; unknown lookup or user 404."""
    ch = new_channel()
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    async with await admin(api) as http:
        user_id = await member(http, ch, "m-1")
        cases = {
            "slow": (company.url("/slow"), 504, "timeout"),
            "refused": (f"http://127.0.0.1:{closed}/x", 502, "refused"),
            "failing": (company.url("/failing"), 502, "http_status"),
            "oversized": (company.url("/oversized"), 502, "too_large"),
            "malformed": (company.url("/malformed"), 502, "bad_json"),
            "garbled": (company.url("/garbled"), 502, "bad_json"),  # a gzip body that is not gzip
            "no-such-host": ("http://no-such-host.invalid/x", 502, "refused"),
            "redirect": (company.url("/redirect"), 502, "redirect"),
            "wrong-key": (company.url("/wrong-key"), 502, "decryption_failed"),
        }
        for name, (url, status, code) in cases.items():
            await define(http, ch, name, definition(url, encrypted=name == "wrong-key"))
            r = await http.post(f"/v1/channels/{ch}/users/{user_id}/lookups/{name}")
            assert (r.status_code, r.json().get("code")) == (status, code), (name, r.text)
            assert r.headers["content-type"] == "application/problem+json" and r.json()["detail"]
        assert company.calls["redirect"] == 1  # the Location (a metadata address) was never called

        r = await http.post(f"/v1/channels/{ch}/users/{user_id}/lookups/failing", json={"params": {"memberNo": "x" * 17, "other": "1"}})
        assert r.status_code == 422 and {e["field"] for e in r.json()["errors"]} == {"params.memberNo", "params.other"}
        anonymous = new_channel()
        lead = (await http.post(f"/v1/channels/{anonymous}/leads", json={"profile": {"email": "a@b.jp"}}, params={"wait": 10})).json()["id"]
        await define(http, anonymous, "CRM", definition(company.url("/plain")))
        r = await http.post(f"/v1/channels/{anonymous}/users/{lead}/lookups/CRM")
        assert r.status_code == 422 and "Member no. is required" in r.json()["detail"]  # no memberId to bind
        assert (await http.post(f"/v1/channels/{ch}/users/{user_id}/lookups/nope")).json()["code"] == "unknown_lookup"
        assert (await http.post(f"/v1/channels/{ch}/users/u_nope/lookups/slow")).status_code == 404


async def test_lookup_circuit_breaker_opens_per_definition_after_repeated_failures(api: LiveApi, company: Company) -> None:
    """Issue 15 item 2: after 5 failures in a row the definition is not called for a
    while (503 `circuit_open`, Retry-After); another definition of the channel still is."""
    ch = new_channel()
    async with await admin(api) as http:
        user_id = await member(http, ch, "m-1")
        await define(http, ch, "down", definition(company.url("/failing")))
        await define(http, ch, "up", definition(company.url("/plain")))
        before = company.calls["failing"]
        codes = [(await http.post(f"/v1/channels/{ch}/users/{user_id}/lookups/down")).json()["code"] for _ in range(7)]
        assert codes == ["http_status"] * 5 + ["circuit_open"] * 2
        assert company.calls["failing"] - before == 5
        r = await http.post(f"/v1/channels/{ch}/users/{user_id}/lookups/down")
        assert r.status_code == 503 and int(r.headers["retry-after"]) > 0
        assert (await http.post(f"/v1/channels/{ch}/users/{user_id}/lookups/up")).status_code == 200


async def test_automatic_lookup_fills_only_empty_fields_unqualified_and_replay_rebuilds_it(api: LiveApi, company: Company) -> None:
    """Issue 15 item 3 (seed 004 §2-2): a chat from a linked medium calls the lookup in the
    background; the answer is recorded on the customer and fills the connected fields
    that were empty (rank), never one with a value (city), unqualified (C4) since the
    company does not vouch; a chat from an unlinked medium calls nothing; a rebuild from
    the log gives the same state and digest (the answer is a fact, not a call)."""
    ch = new_channel()
    async with await admin(api) as http, Publisher(api.settings) as pub:
        await define(http, ch, "CRM", definition(company.url("/plain"), media=["line"]))
        user_id = await member(http, ch, "m-1", city="Tokyo")
        env = {"channelId": ch, "occurredAt": T0}
        await pub.sdk({"eventId": f"{ch}-login", "type": "login", "veilId": "line:U1", "memberId": "m-1", **env})
        calls = company.calls["plain"]
        await pub.sdk({"eventId": f"{ch}-web", "type": "chat", "veilId": "line:U1", "chatId": "c0", "medium": "web", **env})
        await pub.sdk({"eventId": f"{ch}-chat", "type": "chat", "veilId": "line:U1", "chatId": "c1", "medium": "line", **env})

        async def recorded() -> list[dict[str, Any]] | None:
            items = (await http.get(f"/v1/channels/{ch}/users/{user_id}/lookups")).json()["items"]
            return items or None

        [record] = await wait_for(recorded, timeout=30)
        assert record["eventId"] == result_event_id(ch, f"{ch}-chat", "CRM")
        assert record["status"] == "ok" and record["causationId"] == f"{ch}-chat"
        assert record["values"] == {"rank": "gold", "city": "Osaka", "account.since": "2019-04-01"}
        assert (record["filled"], record["kept"]) == (["profile.rank"], ["profile.city"])
        user = (await http.get(f"/v1/channels/{ch}/users/{user_id}")).json()
        assert (user["profile"]["rank"], user["profile"]["city"]) == ("gold", "Tokyo")
        assert await provenance(api, user_id, "profile.rank") == ["gold", False, False]  # unqualified (C4)
        assert company.calls["plain"] - calls == 1  # the web chat called nothing
        assert await api.pool.fetchval("SELECT count(*) FROM lookup_queue WHERE channel_id = $1", ch) == 0

        # A worker killed after publishing and before clearing its row publishes the same
        # command again (same eventId): it is applied once.
        again = {"eventId": record["eventId"], "type": "lookup.result", "channelId": ch, "occurredAt": record["occurredAt"],
                 "actor": "system", "userId": user_id, "name": "CRM", "status": "ok", "fill": {"extra": "x"}}
        await pub.command(again, {**again, "eventId": f"{ch}-marker", "fill": {}})  # the marker: applied after it

        async def marker() -> bool:
            return bool(await api.pool.fetchval("SELECT count(*) FROM lookup_results WHERE event_id = $1", f"{ch}-marker"))

        await wait_for(marker)
        user = (await http.get(f"/v1/channels/{ch}/users/{user_id}")).json()
        assert "extra" not in user["profile"]
        assert len((await http.get(f"/v1/channels/{ch}/users/{user_id}/lookups")).json()["items"]) == 2  # the marker

    live = await state_digest(api.pool)
    rebuilt = await replay(api.settings, "--rebuild", "--drop-archive")
    assert rebuilt["digest"] == live
    async with await admin(api) as http:
        user = (await http.get(f"/v1/channels/{ch}/users/{user_id}")).json()
        assert user["profile"]["rank"] == "gold"
        assert len((await http.get(f"/v1/channels/{ch}/users/{user_id}/lookups")).json()["items"]) == 2
    assert company.calls["plain"] - calls == 1  # the rebuild called nobody


async def test_automatic_lookup_of_a_vouched_definition_fills_qualified_and_failures_are_recorded(api: LiveApi, company: Company) -> None:
    """Issue 15 item 3 (C4): a definition whose company vouches for its data fills
    qualified values; an automatic lookup that fails is recorded with its code and
    fills nothing."""
    ch = new_channel()
    async with await admin(api) as http, Publisher(api.settings) as pub:
        await define(http, ch, "CRM", definition(company.url("/plain"), media=["phone"], vouched=True))
        await define(http, ch, "Broken", definition(company.url("/malformed"), media=["phone"]))
        user_id = await member(http, ch, "m-1", email="hanako@example.jp")
        env = {"channelId": ch, "occurredAt": T0}
        await pub.sdk({"eventId": f"{ch}-login", "type": "login", "veilId": "v1", "memberId": "m-1", **env})
        await pub.sdk({"eventId": f"{ch}-call", "type": "chat", "veilId": "v1", "chatId": "c1", "medium": "phone", **env})

        async def both() -> dict[str, dict[str, Any]] | None:
            items = (await http.get(f"/v1/channels/{ch}/users/{user_id}/lookups")).json()["items"]
            return {i["name"]: i for i in items} if len(items) == 2 else None

        records = await wait_for(both, timeout=30)
        assert records["Broken"]["status"] == "failed" and records["Broken"]["error"]["code"] == "bad_json"
        assert records["Broken"]["filled"] == []
        user = (await http.get(f"/v1/channels/{ch}/users/{user_id}")).json()
        assert user["profile"]["rank"] == "gold"
        assert await provenance(api, user_id, "profile.rank") == ["gold", True, True]  # qualified member data

        r = await http.delete(f"/v1/channels/{ch}/users/{user_id}", params={"wait": 10})  # B2: the answers go too
        assert r.status_code == 200, r.text
        assert await api.pool.fetchval("SELECT count(*) FROM lookup_results WHERE user_id = $1", user_id) == 0


async def test_lookup_to_loopback_is_refused_unless_the_operator_allows_it(company: Company) -> None:
    """Issue 15 item 4: with no UNIFIER_LOOKUP_ALLOW_NETWORKS the loopback company server
    is never connected to (`forbidden_address`), also when named `localhost`; allowing
    127.0.0.0/8 lets it through."""
    from services.lookup.client import LookupFailed, Lookups
    from services.platform.config import Settings

    body = {"url": company.url("/plain"), "method": "POST", "encrypted": False, "params": [], "results": [],
            "connections": []}
    calls = company.calls["plain"]
    closed = Lookups(Settings.from_env({}))
    try:
        for url in (company.url("/plain"), company.url("/plain").replace("127.0.0.1", "localhost")):
            with pytest.raises(LookupFailed) as refused:
                await closed.call("ch", "CRM", {**body, "url": url}, {})
            assert refused.value.code == "forbidden_address"
    finally:
        await closed.aclose()
    assert company.calls["plain"] == calls
    allowed = Lookups(Settings.from_env({"UNIFIER_LOOKUP_ALLOW_NETWORKS": "127.0.0.0/8,::1/128"}))
    try:
        assert await allowed.call("ch", "CRM", body, {"memberNo": "m-1"}) == {
            "rank": "gold", "city": "Osaka", "account": {"since": "2019-04-01"}}
    finally:
        await allowed.aclose()


async def test_lookup_rate_limit_per_channel_answers_rate_limited(company: Company) -> None:
    """Issue 15 item 4: over UNIFIER_LOOKUP_RATE a channel's next call is refused at once
    (429 `rate_limited`, with when to retry); another channel is not held back."""
    from services.lookup.client import LookupFailed, Lookups
    from services.platform.config import Settings

    body = {"url": company.url("/plain"), "method": "POST", "encrypted": False, "params": [], "results": [],
            "connections": []}
    lookups = Lookups(Settings.from_env({"UNIFIER_LOOKUP_ALLOW_NETWORKS": "127.0.0.0/8", "UNIFIER_LOOKUP_RATE": "0.5"}))
    try:
        await lookups.call("busy", "CRM", body, {})  # the burst is one call at 0.5/s
        with pytest.raises(LookupFailed) as limited:
            await lookups.call("busy", "CRM", body, {})
        assert (limited.value.code, limited.value.status) == ("rate_limited", 429) and limited.value.retry_after
        await lookups.call("quiet", "CRM", body, {})
    finally:
        await lookups.aclose()
