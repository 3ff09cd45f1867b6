"""Outbound requests to URLs that a caller chose: which origins may be contacted, and a GET
bounded by a total deadline, a byte cap and a cancel flag.

A CDS Hooks call names its own ``fhirServer`` and hands over a bearer token for it; a
searchset names its ``next`` page; a DocumentReference names an attachment URL.  Each of
these is a URL chosen by someone else, and a request there may carry the EHR's token.
:class:`OriginPolicy` decides whether such a URL may be contacted at all;
:func:`same_origin` decides whether a later URL (a ``next`` link, an attachment) may receive
the token that was given for the first; :func:`bounded_get` reads the answer without
letting a slow or huge one hold a worker past its deadline.

Origins are compared as (scheme, host, port) with the scheme's default port filled in, as
RFC 6454 defines an origin.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

_DEFAULT_PORT = {"http": 80, "https": 443}


def origin_of(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an http(s) URL, lower-cased; None when it has none."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower().rstrip(".")
    if scheme not in _DEFAULT_PORT or not host:
        return None
    return scheme, host, port if port is not None else _DEFAULT_PORT[scheme]


def same_origin(url: str, base: str) -> bool:
    """True when ``url`` has the scheme, host and port of ``base`` (both http(s))."""
    a, b = origin_of(url), origin_of(base)
    return a is not None and a == b


def _is_internal(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(
        ip.is_loopback
        or ip.is_link_local
        or ip.is_private
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
    )


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


@dataclass(frozen=True)
class OriginPolicy:
    """Which URLs a request with a caller's credentials may go to.

    Args:
        allowed: origins (``https://host[:port]``) that may be contacted; a URL on any
            other origin is refused.  Paths in these entries are ignored.
        allow_http: accept ``http://`` (a local demo only); otherwise https is required.
        internal_allowed: origins that may resolve to loopback, link-local, private or
            other non-public addresses; any other origin that resolves to one is refused.
        resolver: ``(host, port) -> addresses``; the system resolver by default.
    """

    allowed: tuple[str, ...] = ()
    allow_http: bool = False
    internal_allowed: tuple[str, ...] = ()
    resolver: Callable[[str, int], list[str]] = _resolve

    def refusal(self, url: str) -> str | None:
        """Why ``url`` may not be contacted, or None when it may.  Never raises."""
        origin = origin_of(url)
        if origin is None:
            return "not an http(s) URL with a host"
        scheme, host, port = origin
        if scheme != "https" and not self.allow_http:
            return "plain http is refused (https required)"
        if origin not in {origin_of(a) for a in self.allowed}:
            return f"origin {scheme}://{host}:{port} is not allowed for this caller"
        if origin in {origin_of(a) for a in self.internal_allowed}:
            return None
        try:
            addresses = self.resolver(host, port)
        except (OSError, UnicodeError):
            return f"host {host} does not resolve"
        if not addresses:
            return f"host {host} does not resolve"
        for address in addresses:
            try:
                internal = _is_internal(address)
            except ValueError:
                return f"host {host} resolves to an unreadable address"
            if internal:
                return f"host {host} resolves to an internal address ({address})"
        return None


class ResponseTooLarge(httpx.HTTPError):
    """The body grew past the byte cap; the connection was closed."""


class DeadlinePassed(httpx.TimeoutException):
    """The total deadline passed (or the caller gave up) before the body was complete."""


@dataclass
class BoundedResponse:
    """Status, headers and the whole body of a :func:`bounded_get`."""

    status_code: int
    headers: httpx.Headers
    content: bytes
    url: str


def bounded_get(
    client: httpx.Client,
    url: str,
    *,
    headers: Mapping[str, str],
    deadline: float,
    max_bytes: int,
    cancel: threading.Event | None = None,
) -> BoundedResponse:
    """GET ``url`` and read its body, all before ``deadline`` (a ``time.monotonic()`` value).

    Each network wait is bounded by the time left, the body is read in chunks and the
    connection is closed as soon as the deadline passes, ``cancel`` is set, or more than
    ``max_bytes`` arrive: a server that drips one byte at a time holds the thread no
    longer than the deadline plus one read.

    Raises:
        DeadlinePassed: deadline passed or cancelled.
        ResponseTooLarge: the body (or its Content-Length) exceeds ``max_bytes``.
        httpx.HTTPError: the request failed.
    """

    def left() -> float:
        if cancel is not None and cancel.is_set():
            raise DeadlinePassed("the caller gave up")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlinePassed("the deadline passed")
        return remaining

    timeout = left()
    with client.stream("GET", url, headers=dict(headers), timeout=timeout) as resp:
        declared = resp.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise ResponseTooLarge(f"Content-Length {declared} exceeds {max_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        for chunk in resp.iter_bytes():  # decoded: a compressed bomb is capped too
            size += len(chunk)
            if size > max_bytes:
                raise ResponseTooLarge(f"body exceeds {max_bytes} bytes")
            chunks.append(chunk)
            left()
        return BoundedResponse(resp.status_code, resp.headers, b"".join(chunks), str(resp.url))


def allowed_origins(entries: Iterable[str]) -> tuple[str, ...]:
    """Normalised ``scheme://host:port`` of each entry (entries without an origin dropped)."""
    out = []
    for entry in entries:
        o = origin_of(entry)
        if o is not None:
            out.append(f"{o[0]}://{o[1]}:{o[2]}")
    return tuple(out)
