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


async def test_api_workers_answer_on_one_address_and_stop_together(settings: Settings) -> None:
    """`unifier api --workers N` (docs/operations.md, "Running the API"): N processes
    answer on one address; SIGTERM stops them all (exit 0); a worker that dies stops the
    others and the supervisor exits 1, for the process manager to restart the whole
    rather than leave an API at half its capacity that looks healthy; a supervisor
    killed outright takes its workers with it."""
    import asyncio
    import signal

    import httpx
    import psutil

    from services.platform.embedded import free_port
    from tests.support.imports import start_unifier
    from tests.support.infra import wait_for

    for ending in ("sigterm", "worker dies", "supervisor killed"):
        port = free_port()
        proc = await start_unifier(settings, "api", "--workers", "2", UNIFIER_HTTP_ADDR=f"127.0.0.1:{port}")
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:

                async def answering() -> bool:
                    try:
                        return (await http.get("/v1/channels/ch1/users/u1")).status_code == 401
                    except httpx.TransportError:
                        return False

                await wait_for(answering, timeout=90)
            workers = [p for p in psutil.Process(proc.pid).children() if "services.api.workers" in p.cmdline()]
            assert len(workers) == 2
            if ending == "sigterm":
                proc.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(proc.wait(), 60) == 0
            elif ending == "worker dies":
                workers[0].kill()
                assert await asyncio.wait_for(proc.wait(), 60) == 1
            else:  # no orphan keeps serving (and holding the port)
                proc.kill()
                await proc.wait()
                psutil.wait_procs(workers, timeout=30)
            assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
