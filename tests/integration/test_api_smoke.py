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


async def test_api_on_a_taken_port_raises_instead_of_exiting_the_process(settings: Settings) -> None:
    """uvicorn answers a taken port with sys.exit: `unifier run` (and a test process)
    must get an error it can report, not a SystemExit through its event loop."""
    import asyncio
    import socket

    from services.api.app import create_app
    from services.api.server import ApiStartError, serve

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ApiStartError, match=str(port)):
            await asyncio.wait_for(serve(create_app(settings), f"127.0.0.1:{port}", asyncio.Event()), 60)
