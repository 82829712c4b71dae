"""Fetching an ``image_url`` for ``vidrestore serve``, without letting a client reach inside.

Off unless the operator names hosts (``--fetch-host``). Then a URL is fetched only if its host is
on that list, and only from addresses that are public: loopback, private, link-local (cloud
metadata included), shared, reserved and multicast addresses are refused whatever the list says.
The check is made on the addresses the name resolves to, and the connection goes to the address
that was checked (no second lookup that a rebinding DNS server could answer differently); every
redirect is followed by hand and checked the same way. HTTPS keeps verifying the certificate
against the host name.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from vidrestore.errors import InputError

__all__ = ["FetchRefused", "fetch_url", "public_address"]

Resolver = Callable[[str, int], list[str]]

_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


class FetchRefused(InputError):
    """The URL may not be fetched (a host not allowed, an inside address, too large, a bad answer)."""


_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the well-known NAT64 prefix: the IPv4 address is the last 32 bits
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # local-use NAT64 (RFC 8215)


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries to a v4 host: mapped (``::ffff:a.b.c.d``), NAT64,
    6to4 (``2002::/16``) or IPv4-compatible (``::a.b.c.d``, deprecated but still routed by some)."""
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr in _NAT64 or addr in _NAT64_LOCAL:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if int(addr) >> 32 == 0 and int(addr) > 1:  # ::a.b.c.d (not :: or ::1)
        return ipaddress.IPv4Address(int(addr))
    return None


def public_address(ip: str) -> bool:
    """Whether ``ip`` is a public unicast address (never loopback, private, link-local, metadata...),
    looking through IPv6 forms that carry an IPv4 address to the address they reach."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and (inner := _embedded_ipv4(addr)) is not None:
        return public_address(str(inner))
    return addr.is_global and not addr.is_multicast and addr not in _METADATA


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchRefused(f"image_url: cannot resolve {host} ({exc.strerror})") from exc
    return sorted({str(info[4][0]) for info in infos})


def _allowed(host: str, allow: Sequence[str]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == a.lower() or (a.startswith(".") and host.endswith(a.lower())) for a in allow)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a checked address, with SNI and certificate checks against the host name."""

    def __init__(self, address: str, host: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


@dataclass
class _Answer:
    status: int
    location: str | None
    body: bytes


def _get(
    address: str, scheme: str, host: str, port: int, path: str, limit: int, timeout: float, total: float = 60.0
) -> _Answer:
    """One GET from ``address``: each read waits at most ``timeout`` seconds and the whole answer at most
    ``total`` (a server that trickles a byte at a time cannot hold a worker for long)."""
    deadline = time.monotonic() + total
    conn: http.client.HTTPConnection
    if scheme == "https":
        conn = _PinnedHTTPS(address, host, port, timeout)
    else:
        conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host, "User-Agent": "vidrestore-serve"})
        r = conn.getresponse()
        location = r.getheader("Location")
        body = bytearray()
        while r.status == 200 and len(body) <= limit and (chunk := r.read1(1 << 16)):
            body += chunk
            if time.monotonic() > deadline:
                raise FetchRefused(f"image_url: {host} took longer than {total:g} s to send it")
        return _Answer(r.status, location, bytes(body[: limit + 1]))
    except FetchRefused:
        raise  # already says why (the deadline); not a connection failure to wrap
    except (OSError, http.client.HTTPException) as exc:
        raise FetchRefused(f"image_url: fetching from {host} failed ({exc})") from exc
    finally:
        conn.close()


def fetch_url(
    url: str,
    allow: Sequence[str],
    limit: int,
    *,
    timeout: float = 15.0,
    redirects: int = 3,
    resolve: Resolver = _resolve,
    get: Callable[..., _Answer] = _get,
) -> bytes:
    """The body of ``url`` (at most ``limit`` bytes), or FetchRefused saying why not."""
    if not allow:
        raise FetchRefused("image_url: fetching other URLs is off on this server (use a data: URL or /v1/files)")
    for _ in range(redirects + 1):
        try:  # urlsplit and .port raise ValueError on a bad bracket or a port out of range
            parts = urlsplit(url)
            host, given_port = parts.hostname, parts.port
        except ValueError as exc:
            raise FetchRefused(f"image_url: not a URL that can be fetched ({exc})") from exc
        if parts.scheme not in ("http", "https") or not host:
            raise FetchRefused("image_url: only http and https URLs can be fetched")
        if not _allowed(host, allow):
            raise FetchRefused(f"image_url: {host} is not on this server's list of hosts to fetch from")
        port = given_port or (443 if parts.scheme == "https" else 80)
        try:
            literal = ipaddress.ip_address(host)
            addresses = [str(literal)]
        except ValueError:
            addresses = resolve(host, port)
        inside = [a for a in addresses if not public_address(a)]
        if inside or not addresses:
            raise FetchRefused(f"image_url: {host} resolves to an address this server never fetches from")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        answer = get(addresses[0], parts.scheme, host, port, path, limit, timeout)
        if answer.status in (301, 302, 303, 307, 308) and answer.location:
            url = urljoin(url, answer.location)
            continue
        if answer.status != 200:
            raise FetchRefused(f"image_url: {host} answered {answer.status}")
        if len(answer.body) > limit:
            raise FetchRefused(f"image_url: larger than this server's limit of {limit} bytes")
        return answer.body
    raise FetchRefused(f"image_url: more than {redirects} redirects")
