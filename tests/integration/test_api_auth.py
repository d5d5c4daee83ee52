"""Auth of the HTTP API (docs/contract.md, "HTTP API", Auth): 401 without a key, with an
unknown, malformed or revoked key; 403 for a scope or channel the key does not allow;
keys created, listed and revoked with `unifier api-key`, printed once, stored hashed."""

from __future__ import annotations

import hashlib

import pytest

from services.api.auth import CACHE_S
from tests.support.api import LiveApi, module_api_fixture, new_channel  # noqa: F401 - the fixture module_api
from tests.support.imports import unifier
from tests.support.infra import wait_for

pytestmark = pytest.mark.integration


async def test_no_key_or_unknown_or_malformed_key_is_401_with_a_challenge(module_api: LiveApi) -> None:
    ch = new_channel()
    real = await module_api.key("admin")
    forged = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")  # right id, wrong secret
    for key in (None, "not-a-key", "uk_00000000_" + "x" * 43, forged):
        async with module_api.client(key) as http:
            r = await http.get(f"/v1/channels/{ch}/users")
        assert r.status_code == 401, key
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["www-authenticate"] == "Bearer"
    async with module_api.client() as http:
        basic = await http.get(f"/v1/channels/{ch}/users", headers={"Authorization": f"Basic {real}"})
        assert basic.status_code == 401


async def test_scope_read_lt_write_lt_admin_else_403(module_api: LiveApi) -> None:
    ch = new_channel()
    read, write = await module_api.key("read"), await module_api.key("write")
    async with module_api.client(read) as http:
        assert (await http.get(f"/v1/channels/{ch}/users")).status_code == 200
        r = await http.put(f"/v1/channels/{ch}/members/m1", json={})
        assert r.status_code == 403 and "'write'" in r.json()["detail"]
    async with module_api.client(write) as http:
        assert (await http.put(f"/v1/channels/{ch}/members/m1", json={})).status_code == 202
        assert (await http.delete(f"/v1/channels/{ch}/members/m1")).status_code == 403  # deletes: admin
        assert (await http.delete(f"/v1/channels/{ch}/users/u_x")).status_code == 403
        assert (await http.get(f"/v1/channels/{ch}/settings")).status_code == 403  # settings: admin
        assert (await http.patch(f"/v1/channels/{ch}/settings", json={"muLimit": 1})).status_code == 403


async def test_a_channel_key_works_in_its_channel_only(module_api: LiveApi) -> None:
    mine, other = new_channel(), new_channel()
    key = await module_api.key("write", channel=mine)
    async with module_api.client(key) as http:
        assert (await http.get(f"/v1/channels/{mine}/users")).status_code == 200
        r = await http.get(f"/v1/channels/{other}/users")
        assert r.status_code == 403 and mine in r.json()["detail"]
        assert (await http.put(f"/v1/channels/{other}/members/m1", json={})).status_code == 403


async def test_api_key_cli_prints_the_key_once_stores_its_hash_and_revokes_it(module_api: LiveApi) -> None:
    ch = new_channel()
    settings = module_api.settings
    created = await unifier(settings, "api-key", "create", "--scope", "read", "--channel", ch, "--name", f"desk-{ch}")
    assert created.code == 0, created.err
    record = created.json()
    key = record["key"]
    assert (record["name"], record["scope"], record["channel"]) == (f"desk-{ch}", "read", ch)
    stored = await module_api.pool.fetchrow("SELECT * FROM api_keys WHERE key_id = $1", record["keyId"])
    assert bytes(stored["key_sha256"]) == hashlib.sha256(key.encode()).digest()
    assert key not in str(dict(stored))  # only the hash is kept
    listed = await unifier(settings, "api-key", "list")
    assert key not in listed.out and record["keyId"] in listed.out
    async with module_api.client(key) as http:
        assert (await http.get(f"/v1/channels/{ch}/users")).status_code == 200
        duplicate = await unifier(settings, "api-key", "create", "--scope", "read", "--name", f"desk-{ch}")
        assert duplicate.code == 2 and "already named" in duplicate.err
        revoked = await unifier(settings, "api-key", "revoke", f"desk-{ch}")
        assert revoked.code == 0 and revoked.json()["revokedAt"] is not None

        async def refused() -> bool:  # within auth.CACHE_S (2 s)
            r = await http.get(f"/v1/channels/{ch}/users")
            return r.status_code == 401 and r.json()["detail"] == "unknown or revoked API key"

        await wait_for(refused, timeout=CACHE_S + 5)
    missing = await unifier(settings, "api-key", "revoke", f"desk-{ch}")
    assert missing.code == 1
