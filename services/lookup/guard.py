"""Which addresses a lookup may reach (docs/lookups.md, "Safety").

A definition's URL is the only thing ever called for it (no redirects are followed),
and the address actually connected to must be public: private, loopback, link-local,
shared, reserved and multicast ranges are refused unless the operator lists them in
UNIFIER_LOOKUP_ALLOW_NETWORKS. The check runs in the HTTP client's network backend on
the resolved address it then connects to, so a name that resolves to a public address
when checked and to 127.0.0.1 when connecting (DNS rebinding) cannot slip through;
TLS still verifies the certificate against the URL's host name.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import httpcore

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressRefused(ConnectionError):
    """The host resolves to an address lookups may not reach."""


def parse_networks(text: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in text.split(",") if p.strip())


class AddressPolicy:
    def __init__(self, allowed: Iterable[Network] = ()) -> None:
        self.allowed = tuple(allowed)

    def permits(self, address: IPAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if any(address in net for net in self.allowed if net.version == address.version):
            return True
        return address.is_global and not address.is_multicast

    def check(self, host: str, address: IPAddress) -> None:
        if not self.permits(address):
            raise AddressRefused(
                f"{host} resolves to {address}, which is not a public address; an operator may allow its"
                " network in UNIFIER_LOOKUP_ALLOW_NETWORKS"
            )


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's anyio backend, connecting only to addresses the policy permits."""

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(  # httpcore's interface, hence `timeout`
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,  # noqa: ASYNC109
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as err:  # gaierror, or a name IDNA cannot encode
            raise httpcore.ConnectError(f"cannot resolve {host}: {type(err).__name__}") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos))
        for address in addresses:  # every address the name has must be permitted, not just one
            self.policy.check(host, address)
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as err:
                last = err
        raise last or httpcore.ConnectError(f"{host} has no address")

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None,  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        raise AddressRefused("lookups never connect to a Unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
