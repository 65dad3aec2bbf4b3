"""Where a provider's output may be downloaded from: scheme, host allow-list, resolved addresses.

A finished task's output URL comes from the provider's answer, or from a webhook
delivery; either way the worker fetches it and stores what it gets as the user's
video. So every URL, and every redirect hop, must be

* https, to a host on the provider's allow-list (`*.fal.media` matches any subdomain
  of fal.media, `fal.media` only itself), on port 443;
* resolved (the event loop's getaddrinfo) to addresses that are all global: no
  loopback, private, link-local, shared, reserved or multicast address; the request
  then connects to the address checked, with the host name kept for TLS (SNI and the
  certificate's name) and the Host header, so a second lookup cannot swap it;

except the development hosts an operator names (`host:port`, the simulator's), which
may be http and on any address. Anything else raises OutputUrlRefused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import httpx

from vidanim.settings import Settings

HTTPS_PORT = 443

Resolver = Callable[[str, int], Awaitable[list[str]]]


class OutputUrlRefused(Exception):
    """An output URL (or a redirect hop) the rules refuse; `str()` says which rule."""


class OutputLookupFailed(Exception):
    """The output host did not resolve: perhaps the DNS, perhaps for a while."""


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, by the event loop's getaddrinfo."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def address_allowed(address: str) -> bool:
    """Whether an address is one the internet routes to (not ours, not a neighbour's)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def host_matches(host: str, pattern: str) -> bool:
    """`*.example.com` matches any subdomain of example.com; any other pattern only itself."""
    host, pattern = host.lower().rstrip("."), pattern.lower()
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


@dataclass(frozen=True)
class Hop:
    """One checked request: the URL to send, and the headers and extensions that keep its name."""

    url: httpx.URL
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OutputHosts:
    """One provider's rules; `check` turns a URL into a request safe to send, or refuses it."""

    patterns: Sequence[str]
    dev_hosts: Sequence[str] = ()
    resolver: Resolver = resolve

    async def check(self, url: str | httpx.URL) -> Hop:
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError):
            raise OutputUrlRefused("the output URL is not a URL") from None
        host = parsed.host
        if parsed.scheme not in ("http", "https") or not host:
            raise OutputUrlRefused(f"the output URL's scheme {parsed.scheme or '(none)'} is not https")
        port = parsed.port or (HTTPS_PORT if parsed.scheme == "https" else 80)
        if f"{host}:{port}".lower() in self.dev_hosts:
            return Hop(parsed)  # the operator's development host (the simulator): as named
        if parsed.scheme != "https":
            raise OutputUrlRefused(f"the output URL is {parsed.scheme}, not https")
        if port != HTTPS_PORT:
            raise OutputUrlRefused(f"the output URL names port {port}; only 443 is allowed")
        if not any(host_matches(host, p) for p in self.patterns):
            raise OutputUrlRefused(f"the output host {host} is not on the provider's allow-list")
        try:
            addresses = await self.resolver(host, port)
        except OSError as exc:
            raise OutputLookupFailed(f"the output host {host} did not resolve ({exc})") from exc
        if not addresses:
            raise OutputLookupFailed(f"the output host {host} resolved to no address")
        refused = [a for a in addresses if not address_allowed(a)]
        if refused:
            raise OutputUrlRefused(f"the output host {host} resolves to a non-public address ({refused[0]})")
        # connect to what was checked; TLS and the server still see the name
        return Hop(parsed.copy_with(host=addresses[0]), {"Host": host}, {"sni_hostname": host})


def output_hosts(settings: Settings, provider: str) -> OutputHosts:
    """One provider's rules from the settings (VIDANIM_{FAL,RUNWAY}_OUTPUT_HOSTS, VIDANIM_OUTPUT_DEV_HOSTS)."""
    return OutputHosts(tuple(settings.output_hosts(provider)), tuple(settings.output_dev_host_list()))
