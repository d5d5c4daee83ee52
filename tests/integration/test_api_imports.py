"""CSV imports over HTTP (docs/contract.md, "HTTP API", Imports; I12-I17): the same
importer as `unifier import` — upload, progress until every row is applied, the failed
rows as CSV, the import log with the key's name as actor, and the CLI's refusals as 409
or 422 with nothing published."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

from services.store import import_log
from tests.support.api import LiveApi, module_api_fixture, new_channel  # noqa: F401 - the fixture module_api
from tests.support.infra import wait_for

pytestmark = pytest.mark.integration

MEMBERS = (
    "memberId,name,email,unsubscribeEmail,unsubscribeTexting\n"
    "m-1,Aki,aki@example.com,false,false\n"
    "m-2,Bo,not-an-email,false,false\n"
    "m-3,Chie,chie@example.com,true,false\n"
)


def _upload(text: str | bytes, name: str = "members.csv", **fields: Any) -> dict[str, Any]:
    data = text.encode() if isinstance(text, str) else text
    return {"files": {"file": (name, data, "text/csv")}, "data": fields}


async def test_i15_upload_progress_failures_csv_and_import_log(module_api: LiveApi) -> None:
    ch = new_channel()
    async with module_api.client(await module_api.key("write", name=f"importer-{ch}")) as http:
        r = await http.post(f"/v1/channels/{ch}/imports", **_upload(MEMBERS, mode="member"))
        assert r.status_code == 202, r.text
        import_id = r.json()["importId"]
        assert r.headers["location"] == f"/v1/channels/{ch}/imports/{import_id}"

        async def finished() -> Any:
            body = (await http.get(r.headers["location"])).json()
            return body if body["state"] == "finished" else None

        progress = await wait_for(finished, timeout=60)
        assert progress == {"importId": import_id, "state": "finished", "rows": 3, "applied": 3,
                            "created": 2, "updated": 0, "failed": 1}
        failures = await http.get(f"/v1/channels/{ch}/imports/{import_id}/failures.csv")
        assert failures.status_code == 200 and failures.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(failures.content.decode("utf-8-sig"))))
        assert [(row["rowNumber"], row["errorColumns"], row["memberId"]) for row in rows] == [("3", "profile.email", "m-2")]
        log = (await http.get(f"/v1/channels/{ch}/imports")).json()["items"]
        assert [(e["importId"], e["status"], e["actor"], e["fileName"]) for e in log] == [
            (import_id, "completed", f"importer-{ch}", "members.csv")]
        users = (await http.get(f"/v1/channels/{ch}/users", params={"memberId": "m-1"})).json()["items"]
        assert users[0]["name"] == "Aki"
        assert (await http.get(f"/v1/channels/{ch}/imports/imp_unknown")).status_code == 404


async def test_i13_i5_refusals_are_422_naming_the_problem_and_publish_nothing(module_api: LiveApi) -> None:
    ch = new_channel()
    async with module_api.client(await module_api.key("write")) as http:
        for upload, expected in (
            (_upload("memberId,lastSeenAt\nm-1,0\n", mode="member"), "system key"),  # I5
            (_upload(b"memberId,name\nm-1," + "山田".encode("shift_jis"), mode="member"), "not UTF-8"),
            (_upload("", mode="member"), "empty"),
            (_upload(MEMBERS, mode="member", map="nothere=name"), "nothere"),
            (_upload(MEMBERS, mode="guest"), "mode"),
            (_upload(MEMBERS), "mode"),
        ):
            r = await http.post(f"/v1/channels/{ch}/imports", **upload)
            assert r.status_code == 422, (expected, r.text)
            assert expected in r.json()["detail"], (expected, r.json()["detail"])
        no_file = await http.post(f"/v1/channels/{ch}/imports", data={"mode": "member"}, files={"other": ("x", b"y")})
        assert no_file.status_code == 422 and {"body.file", "body.other"} <= {e["field"] for e in no_file.json()["errors"]}
        assert (await http.get(f"/v1/channels/{ch}/imports")).json()["items"] == []


async def test_i15_progress_read_as_the_import_finishes_is_never_a_404(module_api: LiveApi) -> None:
    """A small import can be applied whole, and its lock released, between the two reads
    of `progress` (seen under load: GET right after the 202 answered 404). The import is
    finished here between them, and progress still finds it."""
    ch, import_id = new_channel(), "imp_race"

    class FinishedBetweenReads:
        """The connection, with the import finished right after progress's first read."""

        def __init__(self, conn: Any) -> None:
            self.conn, self.reads = conn, 0

        async def fetchrow(self, *args: Any) -> Any:
            row = await self.conn.fetchrow(*args)
            self.reads += 1
            if self.reads == 1:
                await self.conn.execute(
                    """INSERT INTO imports (channel_id, import_id, mode, key, blank, actor, file_name, columns,
                                            started_at, last_actor, last_started_at, status, rows, created)
                       VALUES ($1, $2, 'member', 'memberId', 'keep', 'staff', 'm.csv', '[]', 0, 'staff', 0,
                               'completed', 1, 1)""", ch, import_id)
                await self.conn.execute("DELETE FROM import_locks WHERE channel_id = $1", ch)
            return row

    async with module_api.pool.acquire() as conn:
        taken, _ = await import_log.acquire_lock(conn, ch, import_id, "here", "staff", f"{import_id}:finished", 60_000)
        assert taken
        racing = FinishedBetweenReads(conn)
        got = await import_log.progress(racing, ch, import_id)  # type: ignore[arg-type]
    assert racing.reads == 2
    assert got is not None and got["state"] == "finished" and got["created"] == 1


async def test_i12_another_import_running_in_the_channel_is_409(module_api: LiveApi) -> None:
    ch = new_channel()
    async with module_api.pool.acquire() as conn:  # an importer elsewhere holds the channel's lock
        taken, _ = await import_log.acquire_lock(conn, ch, "imp_other", "elsewhere", "someone", "imp_other:finished", 60_000)
    assert taken
    async with module_api.client(await module_api.key("write")) as http:
        r = await http.post(f"/v1/channels/{ch}/imports", **_upload(MEMBERS, mode="member"))
        assert r.status_code == 409 and "imp_other" in r.json()["detail"]
