"""URLs the client connects to: the API's base URL, and the result download URLs the API hands out.

One parser decides. ``requests`` connects where urllib3's :func:`~urllib3.util.parse_url`
says the host is, so every check here reads the URL with that same parser; and because
``urllib.parse.urlsplit`` (what most other code uses) reads some URLs differently, a URL the
two parsers disagree on is refused rather than guessed at. ``http://evil.example:1\\@127.0.0.1``
is the classic: ``urlsplit`` sees host ``127.0.0.1`` (with user ``evil.example:1\\``), urllib3
ends the host at the backslash and connects to ``evil.example``.

Rules for the base URL (``api_base_url``, ``SYNTHESIZE_API_BASE_URL``): printable ASCII only
(no whitespace, control characters or backslashes), no ``user:password@``, no query or
fragment, and ``https``, or ``http`` to a loopback host (the emulator), so that the token
never travels in clear text.

Rules for a download URL (:func:`check_download_url`): the same characters, ``https`` (plain
``http`` only to loopback, and only while the API itself is on loopback), and a host whose
every address is public: loopback, private, link-local, multicast, reserved and other
non-global addresses are refused (loopback allowed only with a loopback API). The host is
resolved here, and the address each connection actually reaches is checked again
(:func:`guarded_pool_classes`), so a name that resolves once to a public address and then to
an internal one (DNS rebinding) gets nowhere.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from synthbio_pipeline.errors import DownloadRefusedError, InsecureURLError

#: Whitespace, control characters (C0, DEL, C1) and the backslash: never in a URL we use.
_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f-\x9f\\]")
LOOPBACK_NAMES = frozenset({"localhost"})


@dataclass(frozen=True)
class ParsedURL:
    """A URL as urllib3 (and so the connection) reads it; ``host`` without IPv6 brackets."""

    scheme: str
    host: str
    port: int | None
    path: str


def is_loopback(host: str) -> bool:
    """``localhost``, or an address in 127.0.0.0/8 or ``::1`` (brackets allowed)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def redact_url(url: str) -> str:
    """A URL without its query string (signed URLs carry their signature there) or user info."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        return "(an unparsable URL)"


def _shown(url: str) -> str:
    """The URL as an error message shows it: redacted, control characters escaped, short."""
    text = redact_url(url) if not _FORBIDDEN.search(url) else url.split("?", 1)[0]
    text = text if len(text) <= 200 else text[:200] + "..."
    return repr(text)


def parse(url: str, what: str) -> ParsedURL:
    """Read ``url`` with urllib3's parser; refuse anything that two parsers could read two ways.

    ``what`` names the setting in the error message (``api_base_url``, ``download URL``).
    """
    if not isinstance(url, str):
        raise InsecureURLError(f"{what}: {url!r} is not a URL")
    bad = _FORBIDDEN.search(url)
    if bad:
        kind = "a backslash" if bad.group() == "\\" else "whitespace or a control character"
        raise InsecureURLError(
            f"{what} {_shown(url)} contains {kind} (at character {bad.start() + 1}); "
            "URL parsers disagree on where the host ends there, so it is refused"
        )
    if not url.isascii():
        raise InsecureURLError(f"{what} {_shown(url)} is not ASCII; write an internationalised host as xn--...")
    try:
        ours = parse_url(url)
        theirs = urlsplit(url)
        their_port = theirs.port
    except (LocationParseError, ValueError) as error:
        raise InsecureURLError(f"{what} {_shown(url)} is not a valid URL ({type(error).__name__})") from None
    if ours.auth is not None or theirs.username is not None or "@" in (theirs.netloc or ""):
        raise InsecureURLError(
            f"{what} {_shown(url)} carries a user name or password ('user@host'); the token goes in a "
            "header, never in the URL, and such URLs can hide the real host: remove the part before '@'"
        )
    scheme = (ours.scheme or "").lower()
    host = (ours.host or "").strip("[]").lower()
    if not ours.scheme or not host:
        raise InsecureURLError(f"{what} {_shown(url)} is not an http(s) URL with a host")
    if (scheme, host, ours.port) != ((theirs.scheme or "").lower(), (theirs.hostname or "").lower(), their_port):
        raise InsecureURLError(f"{what} {_shown(url)} is read differently by different URL parsers; refused")
    return ParsedURL(scheme, host, ours.port, ours.path or "")


def check_base_url(url: str, *, allowed_http_hosts: Iterable[str] = ()) -> str:
    """Refuse a base URL that could send the token in clear text, or to another host than it seems.

    ``https`` is accepted, and plain ``http`` to a loopback host (the emulator). Plain ``http``
    to another host only when that host is listed in ``allowed_http_hosts`` (host names or IP
    addresses, no scheme or port: a self-hosted model container on a trusted network); even
    then the token is not sent there unless the caller also says so (:func:`token_may_travel`).
    """
    what = "api_base_url"
    parsed = parse(url, what)
    parts = urlsplit(url)
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise InsecureURLError(f"{what} {_shown(url)} has a query or fragment; give scheme, host, port and path only")
    if parsed.scheme == "https":
        return url
    if parsed.scheme == "http" and is_loopback(parsed.host):
        return url
    if parsed.scheme == "http" and _host_key(parsed.host) in http_host_set(allowed_http_hosts):
        return url
    if parsed.scheme == "http":
        raise InsecureURLError(
            f"refusing base URL {_shown(url)} ({what}): plain http is only allowed to a loopback "
            "host (127.0.0.1, localhost, ::1), because the API token would travel unencrypted; use https, "
            f"or list {parsed.host!r} in allowed_http_hosts (a self-hosted container on a trusted network)"
        )
    raise InsecureURLError(f"{what} {_shown(url)} is not an http(s) URL")


def http_host_set(allowed_http_hosts: Iterable[str] | str | None) -> frozenset[str]:
    """The hosts of an ``allowed_http_hosts`` list, normalised; an entry that is not a bare host is refused."""
    if allowed_http_hosts is None:
        return frozenset()
    if isinstance(allowed_http_hosts, str):  # a lone string is one host, not a list of letters
        allowed_http_hosts = [allowed_http_hosts]
    hosts = set()
    for entry in allowed_http_hosts:
        host = _host_key(str(entry))
        if not host or not re.fullmatch(r"[a-z0-9._-]+|[0-9a-f:.]+", host):
            raise InsecureURLError(
                f"allowed_http_hosts: {entry!r} is not a host name or IP address (give the host alone, "
                "without scheme, port or path, e.g. 'gpu-box.lab.internal' or '10.0.0.5')"
            )
        hosts.add(host)
    return frozenset(hosts)


def _host_key(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def token_may_travel(url: str, *, send_token_over_http: bool = False) -> bool:
    """Whether the token may be sent to ``url``: over https, to loopback, or (plain http to an
    allowed host) only with ``send_token_over_http``."""
    parsed = parse(url, "api_base_url")
    if parsed.scheme == "https" or is_loopback(parsed.host):
        return True
    return bool(send_token_over_http)


# --- download URLs ---------------------------------------------------------------------------


def address_allowed(address: str, *, loopback_ok: bool) -> bool:
    """Whether a download may connect to this IP address: public ones (and loopback if allowed)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return loopback_ok
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (what urllib3 would try to connect to)."""
    infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    return sorted({info[4][0] for info in infos})


@dataclass(frozen=True)
class DownloadPolicy:
    """Where result downloads may go; derived from the API's base URL."""

    #: True when the API itself is on loopback (the emulator): its download URLs are too.
    loopback_ok: bool

    @classmethod
    def for_api(cls, base_url: str) -> DownloadPolicy:
        return cls(loopback_ok=is_loopback(parse(base_url, "api_base_url").host))


def check_download_url(url: str, policy: DownloadPolicy, *, resolver: Resolver | None = None) -> ParsedURL:
    """Refuse a download URL that is not https to a public host (see the module docstring).

    Raises :class:`DownloadRefusedError` (``limit`` ``"url"`` or ``"address"``).
    """
    what = "download URL"
    try:
        parsed = parse(url, what)
    except InsecureURLError as error:
        raise DownloadRefusedError(str(error), limit="url") from None
    loopback_host = is_loopback(parsed.host)
    if parsed.scheme == "http" and not (loopback_host and policy.loopback_ok):
        raise DownloadRefusedError(
            f"{what} {_shown(url)}: plain http is refused (only https downloads, except from a "
            "loopback emulator while the API is on loopback too)",
            limit="url",
        )
    if parsed.scheme not in ("http", "https"):
        raise DownloadRefusedError(f"{what} {_shown(url)}: only https URLs are downloaded", limit="url")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        addresses = (resolver or resolve)(parsed.host, port)
    except (OSError, UnicodeError) as error:
        raise DownloadRefusedError(
            f"{what} {_shown(url)}: its host does not resolve ({type(error).__name__})", limit="address"
        ) from None
    refused = [address for address in addresses if not address_allowed(address, loopback_ok=policy.loopback_ok)]
    if refused or not addresses:
        raise DownloadRefusedError(
            f"{what} {_shown(url)}: its host resolves to {', '.join(refused) or 'nothing'}, not a public "
            "address; downloads never go to loopback, private, link-local or other internal addresses "
            "(a compromised answer could otherwise make the job fetch internal URLs)",
            limit="address",
        )
    return parsed


def check_peer(sock: socket.socket, host: str, policy: DownloadPolicy) -> None:
    """Refuse a connection that reached a non-public address (checked right after connecting)."""
    try:
        address = sock.getpeername()[0]
    except OSError:
        return  # not connected: the request will fail by itself
    if not address_allowed(address, loopback_ok=policy.loopback_ok):
        sock.close()
        raise DownloadRefusedError(
            f"the download host {host!r} connected to {address}, not a public address; refused before "
            "anything was sent (did its name resolve differently a moment ago?)",
            limit="address",
        )


def guarded_pool_classes(policy: DownloadPolicy) -> dict[str, type]:
    """urllib3 connection pools whose connections check the address they reached before sending.

    Mounted on the download session (``poolmanager.pool_classes_by_scheme``): whatever a name
    resolves to when the connection is made, a non-public peer is refused.
    """

    class GuardedHTTPConnection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            check_peer(sock, self.host, policy)
            return sock

    class GuardedHTTPSConnection(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            check_peer(sock, self.host, policy)
            return sock

    class GuardedHTTPPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTPConnection

    class GuardedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

    return {"http": GuardedHTTPPool, "https": GuardedHTTPSPool}
