"""The egress fence: where an org's webhook and integration URLs may send to.

An org admin chooses those URLs, so without a fence the relay would POST wherever they point: the
cloud metadata address, the database, a loopback admin port. A URL is refused, at configuration
time and again when it is sent to (DNS can change in between), when its host is or resolves to an
address that is not globally routable (loopback, private, link-local and so the metadata address,
shared, reserved, unspecified) or is multicast, however the address is written (decimal, octal,
IPv4-mapped IPv6), unless the operator's allow list names it. In production only https is allowed,
again unless the allow list names the host. Redirects are never followed.
"""

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from services.settings import Settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class EgressRefused(ValueError):
    """An outbound URL the fence does not let through; the message says why, not where else."""


def _address(text: str) -> Address:
    address = ipaddress.ip_address(text.split("%", 1)[0])  # an IPv6 zone is not part of the address
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class Fence:
    networks: tuple[Network, ...] = ()  # allowed although not public (the operator's list)
    hosts: frozenset[str] = field(default_factory=frozenset)  # allowed by name
    https_only: bool = False

    @classmethod
    def allowing(cls, entries: Iterable[str], https_only: bool = False) -> "Fence":
        """From the operator's list: addresses and networks (`127.0.0.1`, `10.1.0.0/16`) or host names."""
        networks: list[Network] = []
        hosts: set[str] = set()
        for entry in (e.strip() for e in entries):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts), https_only)

    def permits(self, address: str) -> bool:
        ip = _address(address)
        if any(ip in network for network in self.networks):
            return True
        return ip.is_global and not ip.is_multicast

    def _named(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def check_url(self, url: str) -> str | None:
        """Refuse what is decided by the URL alone (scheme, a literal address); return the host
        name still to resolve, or None when there is nothing more to check."""
        try:
            parsed = URL(url)
        except (ValueError, TypeError):
            raise EgressRefused("not a valid URL") from None
        host = parsed.raw_host
        if parsed.scheme not in ("http", "https") or not host:
            raise EgressRefused("only http(s) URLs with a host are allowed")
        if self._named(host):
            return None
        literal = _literal(host)
        if literal is None and all(_NUMERIC.fullmatch(label) for label in host.split(".")):
            # 2130706433, 0177.0.0.1, 0x7f000001: resolvers read these as addresses
            raise EgressRefused("the URL's host is an address in a non-canonical form")
        if self.https_only and parsed.scheme != "https" and not (literal and self._in_networks(literal)):
            raise EgressRefused("only https URLs are allowed (or a host on the operator's egress allow list)")
        if literal is not None:
            if not self.permits(literal):
                raise EgressRefused(
                    "the URL's address is not public (loopback, private, link-local or reserved)"
                )
            return None
        return host

    def _in_networks(self, address: str) -> bool:
        ip = _address(address)
        return any(ip in network for network in self.networks)

    async def check(self, url: str) -> None:
        """At configuration time: the URL, and every address its host resolves to now."""
        host = self.check_url(url)
        if host is None:
            return
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError, ValueError):  # no such name, or not one a resolver takes
            raise EgressRefused(f"{host} does not resolve") from None
        if not infos or not all(self.permits(str(info[4][0])) for info in infos):
            raise EgressRefused(
                f"{host} resolves to an address that is not public (loopback, private, link-local)"
            )


_NUMERIC = re.compile(r"0x[0-9a-f]*|[0-9]+", re.IGNORECASE)


def _literal(host: str) -> str | None:
    """The host as an address, if it is one as written (`127.0.0.1`, `::ffff:127.0.0.1`)."""
    try:
        return str(ipaddress.ip_address(host.strip("[]").split("%", 1)[0]))
    except ValueError:
        return None


class FencedResolver(AbstractResolver):
    """Resolves as usual, then keeps only the addresses the fence permits: the connection is made
    to what was checked, so a DNS answer that changed since the configuration cannot slip by."""

    def __init__(self, fence: Fence) -> None:
        self.fence = fence
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if self.fence._named(host):
            return found
        allowed = [r for r in found if self.fence.permits(r["host"])]
        if not allowed:
            raise EgressRefused(f"{host} resolves to no public address")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def fenced_session(fence: Fence, **kwargs: Any) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=FencedResolver(fence)), **kwargs)


def fence_of(settings: Settings) -> Fence:
    """The operator's allow list (TICKETING_EGRESS_ALLOW); in production only https, unless the
    list names the host."""
    return Fence.allowing(settings.egress_allow, https_only=settings.environment == "prod")
