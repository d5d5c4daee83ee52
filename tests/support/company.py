"""A company's customer system for the lookup tests: a real HTTP server on loopback
(uvicorn, a free port) that answers as docs/lookups.md says a company does — plainly or
encrypted — and, on other paths, slowly, with errors, too much, or junk."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.api.server import serve

CUSTOMERS = {"m-1": {"rank": "gold", "city": "Osaka", "account": {"since": "2019-04-01"}}}


@dataclass
class Company:
    base_url: str = ""
    key: bytes | None = None  # the payload key the admin was shown, entered on the company's side
    calls: Counter[str] = field(default_factory=Counter)
    received: list[dict[str, Any]] = field(default_factory=list)  # the parameters, decrypted
    # `/slow` holds its answer until this is set (when the server stops) or 3 s pass:
    # longer than the tests' UNIFIER_LOOKUP_TIMEOUT of 1 s either way.
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"


def _answer_for(params: dict[str, Any]) -> dict[str, Any]:
    return CUSTOMERS.get(str(params.get("memberNo")), {})


def _seal(key: bytes, data: dict[str, Any]) -> dict[str, str]:
    nonce = b"\x01" * 12
    sealed = AESGCM(key).encrypt(nonce, orjson.dumps(data), None)
    return {"iv": base64.b64encode(nonce).decode(), "data": base64.b64encode(sealed).decode()}


def _app(company: Company) -> Starlette:
    async def plain(request: Request) -> Response:
        company.calls["plain"] += 1
        params = dict(request.query_params) if request.method == "GET" else orjson.loads(await request.body())
        company.received.append(params)
        return JSONResponse(_answer_for(params))

    async def encrypted(request: Request) -> Response:
        company.calls["encrypted"] += 1
        assert company.key is not None
        envelope = orjson.loads(await request.body())
        params = orjson.loads(AESGCM(company.key).decrypt(
            base64.b64decode(envelope["iv"]), base64.b64decode(envelope["data"]), None))
        company.received.append(params)
        return JSONResponse(_seal(company.key, _answer_for(params)))

    async def wrong_key(request: Request) -> Response:
        company.calls["wrong_key"] += 1
        return JSONResponse(_seal(b"\x02" * 32, {"rank": "gold"}))

    async def slow(request: Request) -> Response:
        company.calls["slow"] += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(company.released.wait(), timeout=3)
        return JSONResponse({"rank": "late"})

    async def failing(request: Request) -> Response:
        company.calls["failing"] += 1
        return JSONResponse({"error": "down"}, status_code=500)

    async def oversized(request: Request) -> Response:
        company.calls["oversized"] += 1
        return JSONResponse({"rank": "x" * 10_000})

    async def malformed(request: Request) -> Response:
        company.calls["malformed"] += 1
        return Response(b"{rank: gold", media_type="application/json")

    async def garbled(request: Request) -> Response:
        company.calls["garbled"] += 1
        return Response(b"not gzip at all", media_type="application/json", headers={"Content-Encoding": "gzip"})

    async def redirect(request: Request) -> Response:
        company.calls["redirect"] += 1
        return Response(status_code=302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})

    methods = ["GET", "POST"]
    return Starlette(routes=[
        Route("/plain", plain, methods=methods), Route("/encrypted", encrypted, methods=methods),
        Route("/wrong-key", wrong_key, methods=methods), Route("/slow", slow, methods=methods),
        Route("/failing", failing, methods=methods), Route("/oversized", oversized, methods=methods),
        Route("/malformed", malformed, methods=methods), Route("/redirect", redirect, methods=methods),
        Route("/garbled", garbled, methods=methods),
    ])


@asynccontextmanager
async def company_server() -> AsyncIterator[Company]:
    company = Company()
    stop = asyncio.Event()
    bound: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(_app(company), "127.0.0.1:0", stop, bound=bound))  # type: ignore[arg-type]
    await asyncio.wait([task, bound], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    company.base_url = f"http://{bound.result()}"
    try:
        yield company
    finally:
        company.released.set()
        stop.set()
        await task
