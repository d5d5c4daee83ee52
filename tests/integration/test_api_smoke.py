"""Smoke: the API answers through the real broker and PostgreSQL."""

from __future__ import annotations

import pytest

from services.platform.config import Settings
from tests.support.api import live_api

pytestmark = pytest.mark.integration


async def test_api_member_upsert_applied_and_read(settings: Settings) -> None:
    async with live_api(settings) as api:
        key = await api.key("write", name="alice")
        async with api.client(key) as http:
            r = await http.put("/v1/channels/ch1/members/m1?wait=10", json={"profile": {"email": "A@b.jp"}, "name": "Alice"})
            print(r.status_code, r.text)
            assert r.status_code == 200
            user = r.json()
            r2 = await http.get(f"/v1/channels/ch1/users/{user['id']}")
            assert r2.status_code == 200 and r2.json()["memberId"] == "m1"
            r3 = await http.get("/v1/channels/ch1/users", params={"email": "a@b.jp"})
            print(r3.text)
            assert [u["id"] for u in r3.json()["items"]] == [user["id"]]
