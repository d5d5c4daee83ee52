"""One call of a company's lookup, and what it may end in (docs/lookups.md).

Every failure is a `LookupFailed` with a code and the HTTP status the API answers with;
nothing here raises anything else for a remote's behaviour. Parameter values, answers
and keys are never logged: only the channel, the lookup's name and the failure code.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx
import orjson
from prometheus_client import Counter, Histogram

from contracts.inbound import MAX_VALUE
from services.platform.config import Settings

from . import crypto
from .breaker import Breaker
from .guard import AddressPolicy, AddressRefused, GuardedBackend, parse_networks
from .rate import RateLimit

log = logging.getLogger("unifier.lookup")

CALLS = Counter("unifier_lookup_calls_total", "External lookup calls by outcome (ok or the failure code)", ["outcome"])
SECONDS = Histogram("unifier_lookup_seconds", "Duration of external lookup calls that reached the network",
                    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30))

BINDINGS = {"memberId": ("memberId",), "email": ("profile", "email"), "mobileNumber": ("profile", "mobileNumber"), "name": ("name",)}
"""Customer fields a parameter may be bound to, and where they are in the user's JSON."""


@dataclass(slots=True)
class LookupFailed(Exception):
    """code: timeout, refused, forbidden_address, redirect, http_status, too_large,
    bad_json, decryption_failed, key_unavailable, circuit_open, rate_limited."""

    code: str
    message: str
    status: int = 502
    retry_after: float | None = None

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class Lookups:
    """The lookups of one process: one HTTP client, the breakers and the rate limits."""

    def __init__(self, settings: Settings) -> None:
        self.timeout = settings.lookup_timeout
        self.max_bytes = settings.lookup_max_bytes
        self.kek = None if settings.lookup_kek is None else crypto.kek_of(settings.lookup_kek.get_secret_value())
        self.breaker = Breaker()
        self.rate = RateLimit(settings.lookup_rate)
        policy = AddressPolicy(parse_networks(settings.lookup_allow_networks))
        transport = httpx.AsyncHTTPTransport(retries=0)
        # httpx has no parameter for the network backend: its pool is replaced by one
        # that connects through the guard (httpx and httpcore are pinned).
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(), max_connections=50, keepalive_expiry=5.0,
            network_backend=GuardedBackend(policy),
        )
        self.http = httpx.AsyncClient(
            transport=transport, follow_redirects=False, trust_env=False,  # no proxy from the environment
            timeout=httpx.Timeout(self.timeout), headers={"User-Agent": "unifier-lookup/1", "Accept": "application/json"},
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- the key ---------------------------------------------------------------------

    def payload_key(self, channel_id: str, name: str, definition: dict[str, Any]) -> bytes | None:
        if not definition.get("encrypted"):
            return None
        if self.kek is None:
            raise LookupFailed("key_unavailable", "UNIFIER_LOOKUP_KEK is not configured, so encrypted lookups cannot run", 503)
        try:
            return crypto.unwrap(self.kek, definition["wrappedKey"], channel_id, name)
        except crypto.CryptoFailed as err:
            raise LookupFailed("key_unavailable", str(err), 503) from None

    # -- the call --------------------------------------------------------------------

    async def call(self, channel_id: str, name: str, definition: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
        """The company's answer (a JSON object) to `params`, or LookupFailed."""
        try:
            answer = await self._call(channel_id, name, definition, params)
        except LookupFailed as failure:
            CALLS.labels(failure.code).inc()
            log.warning("lookup %r of channel %s failed: %s", name, channel_id, failure.code)
            raise
        CALLS.labels("ok").inc()
        return answer

    async def _call(self, channel_id: str, name: str, definition: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
        wait = self.rate.take(channel_id)
        if wait > 0:
            raise LookupFailed("rate_limited", f"too many lookups in channel {channel_id!r}; retry in {wait:.1f} s", 429, wait)
        key = self.payload_key(channel_id, name, definition)
        breaker_key = (channel_id, name)
        if not self.breaker.allow(breaker_key):
            after = self.breaker.retry_after(breaker_key)
            raise LookupFailed("circuit_open", f"lookup {name!r} failed repeatedly; not called for {after:.0f} s", 503, after)
        try:
            with SECONDS.time():
                async with asyncio.timeout(self.timeout):  # the whole call, however slowly it drips
                    answer = await self._exchange(definition, params, key)
        except TimeoutError:
            failure = LookupFailed("timeout", f"no complete answer within {self.timeout:g} s", 504)
        except LookupFailed as err:
            failure = err
        else:
            self.breaker.success(breaker_key)
            return answer
        if failure.code != "forbidden_address":  # the remote's fault, not the configuration's
            self.breaker.failure(breaker_key)
        raise failure

    async def _exchange(self, definition: dict[str, Any], params: dict[str, str], key: bytes | None) -> dict[str, Any]:
        url, method = definition["url"], definition["method"]
        request_args: dict[str, Any] = {}
        if method == "GET":
            request_args["params"] = params
        elif key is not None:
            request_args["content"] = orjson.dumps(crypto.seal(key, orjson.dumps(params)))
        else:
            request_args["content"] = orjson.dumps(params)
        if method == "POST":
            request_args["headers"] = {"Content-Type": "application/json"}
        try:
            async with self.http.stream(method, url, **request_args) as response:
                if response.is_redirect:
                    raise LookupFailed("redirect", f"the company answered {response.status_code} (a redirect); redirects are not followed")
                if response.status_code != 200:
                    raise LookupFailed("http_status", f"the company answered HTTP {response.status_code}")
                body = await self._read(response)
        except AddressRefused as err:
            raise LookupFailed("forbidden_address", str(err)) from None
        except httpx.TimeoutException:
            raise TimeoutError from None
        except httpx.DecodingError:
            raise LookupFailed("bad_json", "the answer's content encoding could not be decoded") from None
        except (httpx.HTTPError, httpx.InvalidURL, ConnectionError, UnicodeError) as err:
            raise LookupFailed("refused", f"could not reach the company's system ({type(err).__name__})") from None
        return _answer(body, key)

    async def _read(self, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise LookupFailed("too_large", f"the answer is {declared} bytes; the limit is {self.max_bytes}")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > self.max_bytes:
                raise LookupFailed("too_large", f"the answer is over {self.max_bytes} bytes, the limit")
        return bytes(body)


def _answer(body: bytes, key: bytes | None) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise LookupFailed("bad_json", "the answer is not JSON") from None
    if key is not None:
        try:
            plain = crypto.open_sealed(key, data)
        except crypto.CryptoFailed as err:
            raise LookupFailed("decryption_failed", str(err)) from None
        try:
            data = orjson.loads(plain)
        except orjson.JSONDecodeError:
            raise LookupFailed("bad_json", "the decrypted answer is not JSON") from None
    if not isinstance(data, dict):
        raise LookupFailed("bad_json", "the answer is not a JSON object")
    return data


# -- parameters and results -----------------------------------------------------------


def customer_value(user: dict[str, Any], binding: str) -> str | None:
    node: Any = user
    for part in BINDINGS[binding]:
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, str) and node else None


def bound_params(definition: dict[str, Any], user: dict[str, Any]) -> dict[str, str] | None:
    """The parameters of an automatic lookup, or None when it cannot run for this user:
    every parameter must be bound to a customer field, and the customer must have a
    value for each required one."""
    out: dict[str, str] = {}
    for p in definition["params"]:
        if p["bind"] is None:
            return None
        value = customer_value(user, p["bind"])
        if value is None:
            if p["required"]:
                return None
            continue
        out[p["name"]] = value[: p["maxLength"]]
    return out


def check_params(definition: dict[str, Any], given: dict[str, str], user: dict[str, Any]) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Staff's parameters, bound ones defaulting to the customer's field: (params, errors)."""
    out: dict[str, str] = {}
    errors: list[dict[str, str]] = []
    known = {p["name"] for p in definition["params"]}
    for extra in sorted(set(given) - known):
        errors.append({"field": f"params.{extra}", "message": "not a parameter of this lookup"})
    for p in definition["params"]:
        value = given.get(p["name"])
        if value is None and p["bind"] is not None:
            value = customer_value(user, p["bind"])
        if value is None or value == "":
            if p["required"]:
                errors.append({"field": f"params.{p['name']}", "message": f"{p['label']} is required"})
            continue
        if len(value) > p["maxLength"]:
            errors.append({"field": f"params.{p['name']}", "message": f"at most {p['maxLength']} characters"})
            continue
        out[p["name"]] = value
    return out, errors


def result_values(definition: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    """result key → value found in the answer (`a.b` reads nested objects; absent: null),
    in a form a profile can hold."""
    out: dict[str, Any] = {}
    for r in definition["results"]:
        node: Any = answer
        for part in r["key"].split("."):
            node = node.get(part) if isinstance(node, dict) else None
        out[r["key"]] = _storable(node)
    return out


def _storable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value if not isinstance(value, int) or isinstance(value, bool) or abs(value) < 2**63 else str(value)
    if isinstance(value, str):
        return value[:MAX_VALUE]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v[:MAX_VALUE] for v in value][:100]
    if isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return value[:100]
    return orjson.dumps(value).decode()[:MAX_VALUE]  # an object: shown as its JSON text


def connected_fill(definition: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """profile key → value, for the field connections whose result came back."""
    return {c["profileKey"]: values[c["result"]] for c in definition["connections"] if values.get(c["result"]) is not None}
