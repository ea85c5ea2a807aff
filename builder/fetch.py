"""Polite, safe HTTP: the only module that talks to the network.

One `Fetcher` per build, shared by every worker thread. For each request it

- refuses anything but http/https, and any host that resolves to a private, loopback,
  link-local, multicast, reserved or unspecified address (IPv4 and IPv6, including
  IPv4-mapped, 6to4, Teredo and NAT64 forms). The check runs on the addresses a new
  connection actually dials, so DNS rebinding between a check and the connect is moot;
  redirects are followed by hand so every hop is checked again;
- holds at most `per_host_connections` requests per host at once, and spaces request
  starts per host by `1 / per_host_rps` seconds when that is set;
- retries 408/429/502/503/504 and dropped connections with exponential backoff, honouring
  `Retry-After` up to `max_retry_after_s` (a longer demand is a refusal, not a wait);
- streams bodies in chunks and stops at `max_bytes + 1`, so an oversized body is never
  held whole; a per-attempt wall deadline stops a server that drips bytes forever.

Failures are values: `fetch` and `get_text` return a `Rejection` with a detail a person can
act on; `get_json` raises `FetchError` because API sources have no candidate to reject yet.
The reason says whether trying again later can help: connection_error (refused, reset, DNS),
timeout and http_unavailable (5xx / 408 / 429 after retries) are transient (records.py
TRANSIENT_REASONS); http_error (4xx, bad URL, redirect loop, TLS), too_large and
address_refused (the SSRF guard, a recipe setting) are not.

Every response that counted (each redirect hop's last attempt) is also noted as an
`Exchange` on the calling thread's tape when one is running (`recording()`): that is how
the evidence archive (builder/evidence) learns, byte for byte, what each source answered.
"""

from __future__ import annotations

import codecs
import hashlib
import http.client
import ipaddress
import itertools
import json
import logging
import math
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import cached_property
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    DecodeError,
    HTTPError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util.connection import allowed_gai_family

from builder import clock
from builder.recipe import FetchConfig
from builder.records import CREDENTIAL_HEADERS, Exchange, Reason, Rejection

# Asked with (source, target) before a download's redirect is followed: a Rejection stops it.
BeforeRedirect = Callable[[str, str], Rejection | None]

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
MAX_REDIRECTS = 10
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})
# An error page is only read for its status; never pull a large one.
ERROR_BODY_CAP = 64 * 1024
# Each attempt (connect to last body byte) must finish within this many read timeouts:
# generous for a 50 MB image on a slow link, but a server dripping a byte per
# timeout_s can no longer hold a worker thread indefinitely.
DEADLINE_FACTOR = 6
# Backoff doubles per attempt but never exceeds this, whatever `retries` is.
MAX_BACKOFF_S = 60.0
JSON_ATTEMPTS = 2  # a truncated or garbled API page is retried once, then it is an error

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Byte order marks and the encoding each one names (WHATWG Encoding's BOM sniffing).
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
         (codecs.BOM_UTF16_BE, "utf-16-be"))
# Codecs Python knows that no server means by a charset (WHATWG Encoding has none of them):
# they raise on decoding (`charset=undefined`, sent by servers that format an unset
# variable) or turn plain ASCII into other text (punycode), so a robots.txt read through
# one was an error, every image of its host refused as `denylisted`, or its Disallow lost.
_NOT_WEB_CHARSETS = frozenset({"undefined", "idna", "punycode", "unicode-escape",
                               "raw-unicode-escape", "utf-7"})


class FetchError(Exception):
    """An API request failed for good (after retries): `reason` says how, `cause` what
    happened (without the URL), `status` the final HTTP status when there was one.

    The message is `cause: url`, the cause first and the URL once: an API URL can run to
    hundreds of characters, and a reader looks for what went wrong before where.
    """

    def __init__(self, reason: Reason, cause: str, *, url: str = "",
                 status: int | None = None) -> None:
        super().__init__(f"{cause}: {url}" if url else cause)
        self.reason = reason
        self.cause = cause
        self.url = url
        self.status = status


class BlockedAddressError(Exception):
    """A host resolved to an address the SSRF guard refuses (not an OSError on purpose:
    urllib3 must not wrap it as a connection error or retry it)."""


@dataclass(frozen=True)
class Response:
    url: str  # final URL after redirects
    status: int
    headers: tuple[tuple[str, str], ...]  # lower-cased names, in order received
    data: bytes
    retrieved_at: str  # UTC ISO-8601 with 'Z', second precision
    reason: str = ""  # the status line's reason phrase
    protocol: str = "HTTP/1.1"
    received: tuple[tuple[str, str], ...] = ()  # the headers with their names as sent
    truncated: bool = False  # an error page cut at ERROR_BODY_CAP, or a `cut` body at its cap

    @cached_property
    def sha256(self) -> str:
        """Of `data`: computed once, for the evidence archive and the image check both."""
        return hashlib.sha256(self.data).hexdigest()

    def header(self, name: str) -> str | None:
        """All values of a header joined by ', ' (RFC 9110 field combination), or None."""
        values = self.header_all(name)
        return ", ".join(values) if values else None

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def text(self) -> str:
        """The body as text, by its byte order mark, else the Content-Type charset (UTF-8
        when absent, unknown or not a web text encoding).

        A BOM names the encoding whatever the header says (WHATWG Encoding, "decode"), and
        is not part of the text: a robots.txt, ai.txt or tdmrep.json saved by an editor that
        writes one was read with U+FEFF before its first `User-agent` (the group lost) or
        its JSON (unreadable), and its refusal was admitted as no rules.
        """
        for bom, codec in _BOMS:
            if self.data.startswith(bom):
                return self.data[len(bom):].decode(codec, errors="replace")
        charset = "utf-8"
        for part in (self.header("content-type") or "").split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                charset = value.strip("\"' ")
        try:
            if codecs.lookup(charset).name not in _NOT_WEB_CHARSETS:
                return self.data.decode(charset, errors="replace")
        except (LookupError, UnicodeError):  # unknown, or not text (base64): as if absent
            pass
        return self.data.decode("utf-8", errors="replace")


# --- the evidence tape ------------------------------------------------------------------


class _Tape(threading.local):
    exchanges: list[Exchange] | None = None


_tape = _Tape()


@contextmanager
def recording() -> Iterator[list[Exchange]]:
    """Note every exchange this thread makes inside the block, in order, in the list it
    yields. A tape inside a tape takes over until it ends; nothing is passed to the outer
    one, so a caller that re-uses what it recorded (a cached robots.txt) says so with
    `cite`, every time."""
    outer = _tape.exchanges
    _tape.exchanges = taped = []
    try:
        yield taped
    finally:
        _tape.exchanges = outer


def cite(exchanges: Iterable[Exchange]) -> None:
    """Add exchanges made earlier (maybe by another thread) to this thread's tape: the
    current decision relies on them too."""
    if _tape.exchanges is not None:
        _tape.exchanges.extend(exchanges)


def _note(kind: str, sent: dict[str, str], response: Response, *, keep_body: bool,
          method: str = "GET") -> None:
    if _tape.exchanges is None:
        return
    parts = urlsplit(response.url)
    request = (("Host", _host_header(parts)), *(
        () if any(k.lower() == "accept-encoding" for k in sent) else
        (("Accept-Encoding", "identity"),)), *sent.items())
    _tape.exchanges.append(Exchange(
        kind=kind, url=response.url, request=request, protocol=response.protocol,
        status=response.status, reason=response.reason, headers=response.received,
        body=response.data if keep_body else None,
        payload_sha256=response.sha256,
        truncated=response.truncated, retrieved_at=clock.now_iso(), method=method))


def _host_header(parts: Any) -> str:
    """The Host header http.client sends: the port only when it is not the scheme's own."""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    default = 443 if parts.scheme == "https" else 80
    return host if parts.port in (None, default) else f"{host}:{parts.port}"


# --- the SSRF guard ---------------------------------------------------------------------

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def blocked_kind(ip: Address) -> str | None:
    """Why `ip` must not be dialled ('loopback', 'private', ...), or None when it is public."""
    if isinstance(ip, ipaddress.IPv6Address):
        # Addresses that carry an IPv4 address inside are judged by that address too.
        if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d is a.b.c.d on the wire
            return blocked_kind(ip.ipv4_mapped)
        embedded = ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and (kind := blocked_kind(embedded)):
            return kind
    for kind in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "site-local"
    if not ip.is_global:  # e.g. 100.64.0.0/10, carrier-grade NAT
        return "non-global"
    return None


def _refusal(host: str, ip: Address, kind: str) -> str:
    return (
        f"refused private address {ip} ({kind}) for host {host}; "
        "set [fetch] allow_private_addresses = true only for local test servers"
    )


class _Guard:
    def __init__(self, trusted_hosts: Iterable[str]) -> None:
        self.trusted = frozenset(h.lower().strip("[]") for h in trusted_hosts)

    def check_literal(self, host: str) -> str | None:
        """Refuse an IP-literal host before any connection is made."""
        if host in self.trusted:
            return None
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return None  # a name: checked when a connection resolves it
        kind = blocked_kind(ip)
        return _refusal(host, ip, kind) if kind else None

    def vet(self, host: str, infos: list[Any]) -> None:
        if host.lower().strip("[]") in self.trusted:
            return
        for info in infos:
            ip = ipaddress.ip_address(info[4][0].split("%")[0])
            if kind := blocked_kind(ip):
                raise BlockedAddressError(_refusal(host, ip, kind))


class _Deadline:
    """One attempt's wall deadline; `expired` is set by the watchdog thread."""

    def __init__(self, at: float) -> None:
        self.at = at
        self.expired = False


class _Current(threading.local):
    deadline: _Deadline | None = None


# Which deadline the worker thread's running attempt has, for the connection below.
_current = _Current()


def _hang_up(sock: socket.socket, deadline: _Deadline) -> None:
    deadline.expired = True
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked recv in the worker thread


class _Watchdog:
    """One thread per process that hangs up connections still in their header phase when
    their attempt's deadline passes.

    A `threading.Timer` per response did the same, but starting a thread for every
    response cost more CPU than parsing it (~15% of a worker's time in the throughput
    benchmark). Deadlines arrive in nearly increasing order, so the thread sleeps until the
    earliest one and is woken only when a new deadline comes before it.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._watched: dict[int, tuple[float, socket.socket, _Deadline]] = {}
        self._tokens = itertools.count()
        self._wake_at = math.inf
        self._thread: threading.Thread | None = None

    def watch(self, sock: socket.socket, deadline: _Deadline) -> int:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fetch-watchdog",
                                                daemon=True)
                self._thread.start()
            token = next(self._tokens)
            self._watched[token] = (deadline.at, sock, deadline)
            if deadline.at < self._wake_at:
                self._cond.notify()
            return token

    def unwatch(self, token: int) -> None:
        with self._cond:
            self._watched.pop(token, None)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for token in [t for t, (at, _, _) in self._watched.items() if at <= now]:
                    _, sock, deadline = self._watched.pop(token)
                    _hang_up(sock, deadline)
                self._wake_at = min((at for at, _, _ in self._watched.values()),
                                    default=math.inf)
                self._cond.wait(None if self._wake_at == math.inf else self._wake_at - now)


_watchdog = _Watchdog()


def _new_watchdog_after_fork() -> None:
    # A forked child has none of the parent's threads and must not share its lock state.
    global _watchdog
    _watchdog = _Watchdog()


os.register_at_fork(after_in_child=_new_watchdog_after_fork)


class _HeaderLines:
    """A response's stream while its status line and headers are read: notes a line the
    end of the stream cut (every header line, and the blank one after them, ends in LF)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.cut = False

    def readline(self, limit: int = -1) -> bytes:
        line = self.stream.readline(limit)
        if not line.endswith(b"\n"):
            self.cut = True
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


class _WholeHeadersResponse(http.client.HTTPResponse):
    """A response whose connection closed inside its headers is a failed connection.
    http.client takes the end of the stream for the end of the headers; with the
    Content-Length not yet seen, for an empty body too: a robots.txt cut there read as an
    empty file (no rules: the host's images admitted), an image as `not_image` for good."""

    def begin(self) -> None:
        if self.headers is not None:
            return
        stream, lines = self.fp, _HeaderLines(self.fp)
        self.fp = lines  # type: ignore[assignment]
        try:
            super().begin()
        finally:
            if self.fp is lines:
                self.fp = stream
        if lines.cut:
            raise http.client.RemoteDisconnected("the connection closed inside the "
                                                 "response's headers")


class _ConnectionMixin:
    """Our connection: vets addresses before dialling, and bounds the header phase.

    Resolving, vetting every address, then dialling only the vetted ones (no second
    lookup) makes DNS rebinding between the check and the connect impossible. Reading
    the status line and headers is bounded by the attempt's wall deadline too: a server
    dripping one header byte per read timeout would otherwise hold a thread for hours.
    """

    guard: _Guard | None
    host: str
    port: int
    timeout: Any
    response_class = _WholeHeadersResponse
    source_address: tuple[str, int] | None
    socket_options: Any
    sock: socket.socket | None

    def _new_conn(self) -> socket.socket:
        if self.guard is None:
            return super()._new_conn()  # type: ignore[misc]
        name = self.host.strip("[]").rstrip(".")
        try:
            infos = socket.getaddrinfo(name, self.port, allowed_gai_family(), socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc  # type: ignore[arg-type]
        self.guard.vet(self.host, infos)
        error: OSError | None = None
        for family, socktype, proto, _, address in infos:
            sock = socket.socket(family, socktype, proto)
            try:
                for option in self.socket_options or ():
                    sock.setsockopt(*option)
                if isinstance(self.timeout, int | float):
                    sock.settimeout(self.timeout)
                if self.source_address:
                    sock.bind(self.source_address)
                sock.connect(address)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        if isinstance(error, TimeoutError):
            raise ConnectTimeoutError(self, f"connect to {self.host} timed out ({self.timeout}s)")
        raise NewConnectionError(self, f"failed to connect to {self.host}: {error}")  # type: ignore[arg-type]

    def getresponse(self) -> Any:
        deadline = _current.deadline
        sock = self.sock
        if deadline is None or sock is None:
            return super().getresponse()  # type: ignore[misc]
        token = _watchdog.watch(sock, deadline)
        try:
            return super().getresponse()  # type: ignore[misc]
        finally:
            _watchdog.unwatch(token)


def _pool_classes(guard: _Guard | None) -> dict[str, type[HTTPConnectionPool]]:
    attrs = {"guard": guard}
    http = type("CleansetHTTPConnection", (_ConnectionMixin, HTTPConnection), attrs)
    https = type("CleansetHTTPSConnection", (_ConnectionMixin, HTTPSConnection), attrs)
    return {
        "http": type("CleansetHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
        "https": type("CleansetHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https}),
    }


# --- per-host politeness ------------------------------------------------------------------


class HostGate:
    """Per-host concurrency cap and start-to-start spacing, shared by all worker threads.

    Entries for hosts nobody is using are dropped, so a table of a million hosts does not
    keep a million semaphores alive. `clock` and `sleep` are injectable for tests.
    """

    def __init__(
        self,
        connections: int,
        rps: float | None,
        *,
        clock: Any = time.monotonic,
        sleep: Any = time.sleep,
    ) -> None:
        self._connections = connections
        self._interval = 1.0 / rps if rps else 0.0
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._slots: dict[str, list[Any]] = {}  # host -> [semaphore, users]
        self._next_start: dict[str, float] = {}

    @contextmanager
    def slot(self, host: str) -> Iterator[None]:
        with self._lock:
            entry = self._slots.setdefault(host, [threading.Semaphore(self._connections), 0])
            entry[1] += 1
        try:
            with entry[0]:
                self._pace(host)
                yield
        finally:
            with self._lock:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._slots[host]
                    if self._next_start.get(host, 0.0) <= self._clock():
                        self._next_start.pop(host, None)

    def _pace(self, host: str) -> None:
        if not self._interval:
            return
        with self._lock:
            now = self._clock()
            start = max(now, self._next_start.get(host, now))
            self._next_start[host] = start + self._interval
        if start > now:
            self._sleep(start - now)  # rate limiting: wait for this request's start slot


# --- retry timing ----------------------------------------------------------------------------


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def backoff_delay(attempt: int, base: float) -> float:
    """Exponential backoff with jitter: base * 2**attempt, scaled by [0.5, 1) so that
    many workers that failed together do not retry in lock-step."""
    delay = min(MAX_BACKOFF_S, base * (2**attempt))
    return delay * (0.5 + random.random() / 2)


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the fetcher ---------------------------------------------------------------------------------


class _Retryable(Exception):
    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.detail)
        self.rejection = rejection


class _Final(_Retryable):
    pass


def _fail(reason: Reason, detail: str, *, retry: bool = False) -> _Retryable:
    return (_Retryable if retry else _Final)(Rejection(reason, detail))


def _check_url(url: str) -> str | None:
    """Why `url` cannot be fetched at all, or None."""
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        return f"bad URL {url!r}: contains whitespace or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"bad URL {url!r}: {exc}"
    if parts.scheme.lower() not in ("http", "https"):
        return f"bad URL {url!r}: scheme {parts.scheme or '(none)'!r} is not http or https"
    if not parts.hostname:
        return f"bad URL {url!r}: no host"
    return None


class Fetcher:
    """Thread-safe HTTP client for a whole build; call `close()` when done.

    `trusted_hosts` names hosts (as written in URLs) exempt from the private-address
    guard, e.g. an internal mirror, while every other host stays guarded.
    """

    def __init__(self, config: FetchConfig, *, trusted_hosts: Iterable[str] = (),
                 hand_back: frozenset[int] = frozenset()) -> None:
        self._config = config
        # Statuses answered to the caller at once instead of retried here: a source that
        # waits out rate limits itself (and counts them) asks for 429 back.
        self._retry_statuses = RETRY_STATUSES - hand_back
        self._timeout = urllib3.Timeout(connect=config.timeout_s, read=config.timeout_s)
        self._deadline_s = config.timeout_s * DEADLINE_FACTOR
        self._guard = None if config.allow_private_addresses else _Guard(trusted_hosts)
        self._gate = HostGate(config.per_host_connections, config.per_host_rps)
        self._pool = urllib3.PoolManager(
            num_pools=max(32, 2 * config.workers),
            maxsize=config.per_host_connections,
            block=False,
            headers={"User-Agent": config.user_agent},
            retries=False,
            timeout=self._timeout,
        )
        self._pool.pool_classes_by_scheme = _pool_classes(self._guard)

    # public API -------------------------------------------------------------------------

    def fetch(self, url: str, *, max_bytes: int | None = None,
              before_redirect: BeforeRedirect | None = None) -> Response | Rejection:
        """Download an image. Any final status other than 2xx is an http_error Rejection.
        `before_redirect(source, target)`: asked before each redirect is followed; a
        Rejection it returns is the answer, and `target` is never asked."""
        cap = self._config.max_bytes if max_bytes is None else max_bytes
        result = self._request(url, cap, {}, kind="image", before_redirect=before_redirect)
        if isinstance(result, Response) and not result.ok:
            return Rejection(_status_reason(result.status), f"HTTP {result.status} from {result.url}")
        return result

    def get_text(self, url: str, *, max_bytes: int = 1_000_000,
                 kind: str = "text", cut: bool = False) -> Response | Rejection:
        """Fetch a small policy file (robots.txt, tdmrep.json, ai.txt), a landing page or
        an API page; `kind` names which, for the evidence archive.

        Unlike `fetch`, any final HTTP status comes back as a Response, because the
        status is the answer there (RFC 9309: 4xx means no rules, 5xx means disallow);
        callers check `.status` / `.ok`. Transport failures are still Rejections.
        `cut`: a body over `max_bytes` is kept up to it (`truncated`), not refused as
        too_large: RFC 9309 2.5 has a crawler parse the first 500 KiB of a longer file.
        """
        return self._request(url, max_bytes, {}, kind=kind, cut=cut)

    def head(self, url: str) -> Response | Rejection:
        """HEAD `url` (status, validators, length; no body), redirects followed, with the
        same guard, per-host limits and retries as a download. Any final status comes back
        as a Response: for `recheck`, a 404 is an answer, not a failure."""
        return self._request(url, 0, {}, kind="head", method="HEAD")

    def get_json(
        self,
        url: str,
        params: dict[str, str] | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """GET an API page and parse its JSON; raises FetchError on final failure.

        `params` are appended to any query the URL already has. Malformed JSON is retried
        once (a proxy can cut a page short) and then raised as http_error.
        """
        full = _with_params(url, params)
        sent = {"Accept": "application/json", "Accept-Encoding": "gzip, deflate"}
        sent.update(headers or {})
        problem = ""
        for attempt in range(JSON_ATTEMPTS):
            result = self._request(full, self._config.max_bytes, sent, kind="api")
            if isinstance(result, Rejection):
                raise FetchError(result.reason, failure_cause(result.detail, full), url=full)
            if not result.ok:
                raise FetchError(_status_reason(result.status), f"HTTP {result.status}", url=full,
                                 status=result.status)
            try:
                return json.loads(result.data)
            except ValueError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                log.info("malformed JSON from %s (attempt %d): %s", full, attempt + 1, problem)
                if attempt + 1 < JSON_ATTEMPTS:
                    time.sleep(backoff_delay(attempt, self._config.backoff_s))
        raise FetchError(
            Reason.HTTP_ERROR, f"malformed JSON after {JSON_ATTEMPTS} attempts ({problem})",
            url=full,
        )

    def close(self) -> None:
        self._pool.clear()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # redirects, retries, one attempt ----------------------------------------------------

    def _request(self, url: str, cap: int, headers: dict[str, str], *,
                 kind: str, method: str = "GET", cut: bool = False,
                 before_redirect: BeforeRedirect | None = None) -> Response | Rejection:
        """Follow redirects by hand so every hop passes the URL and address checks."""
        seen = {url}
        current = url
        home = _host(url)
        for _ in range(MAX_REDIRECTS + 1):
            if _host(current) != home:
                # An API key or token goes to the host it was meant for only: a redirect to
                # another host (a CDN, a login page, anyone's server) once received it too.
                headers = {k: v for k, v in headers.items()
                           if k.lower() not in CREDENTIAL_HEADERS}
            sent = {"User-Agent": self._config.user_agent, **headers}
            result = self._with_retries(current, cap, headers, method, cut=cut)
            if isinstance(result, Response):
                # An image's payload goes to the shard; its error pages are kept here.
                _note(kind, sent, result, keep_body=kind != "image" or not result.ok,
                      method=method)
            if not isinstance(result, Response) or result.status not in REDIRECT_STATUSES:
                return result
            location = next(iter(result.header_all("location")), None)  # first, if repeated
            if not location:
                return Rejection(
                    Reason.HTTP_ERROR, f"HTTP {result.status} without Location from {current}"
                )
            try:
                target = urljoin(current, location.strip())
            except ValueError as exc:  # "Invalid IPv6 URL": a bracketed host left open
                return Rejection(Reason.HTTP_ERROR, f"HTTP {result.status} redirect to a bad "
                                 f"Location {location!r} from {current}: {exc}")
            if target in seen:
                return Rejection(Reason.HTTP_ERROR, f"redirect loop: {current} -> {target}")
            if before_redirect is not None and (
                    refusal := before_redirect(current, target)) is not None:
                return refusal
            seen.add(target)
            current = target
        return Rejection(Reason.HTTP_ERROR, f"too many redirects (>{MAX_REDIRECTS}) from {url}")

    def _with_retries(self, url: str, cap: int, headers: dict[str, str],
                      method: str = "GET", *, cut: bool = False) -> Response | Rejection:
        problem = _check_url(url)
        host = (urlsplit(url).hostname or "") if problem is None else ""
        if problem is not None:
            return Rejection(Reason.HTTP_ERROR, problem)
        refusal = self._guard.check_literal(host) if self._guard is not None else None
        if refusal is not None:
            return Rejection(Reason.ADDRESS_REFUSED, refusal)
        config = self._config
        last: Response | Rejection = Rejection(Reason.HTTP_ERROR, f"no attempt made for {url}")
        for attempt in range(config.retries + 1):
            delay = backoff_delay(attempt, config.backoff_s)
            try:
                last = self._attempt(url, host, cap, headers, method, cut=cut)
            except _Final as exc:
                return exc.rejection
            except _Retryable as exc:
                last = exc.rejection
            else:
                if last.status not in self._retry_statuses:
                    return last
                wait = parse_retry_after(last.header("retry-after"))
                if wait is not None and wait > config.max_retry_after_s:
                    return Rejection(
                        Reason.HTTP_UNAVAILABLE,
                        f"HTTP {last.status} from {url} asks Retry-After {wait:.0f}s, more than "
                        f"max_retry_after_s = {config.max_retry_after_s:g}",
                    )
                delay = max(delay, wait or 0.0)
            if attempt < config.retries:
                log.debug("retrying %s in %.2fs after %s", url, delay, _describe(last))
                time.sleep(delay)  # backoff between attempts, not a test wait
        if isinstance(last, Rejection):
            detail = f"{last.detail} (after {config.retries + 1} attempts)"
            return Rejection(last.reason, detail)
        return last

    def _attempt(self, url: str, host: str, cap: int, headers: dict[str, str],
                 method: str = "GET", *, cut: bool = False) -> Response:
        with self._gate.slot(host):
            deadline = _Deadline(time.monotonic() + self._deadline_s)
            _current.deadline = deadline
            try:
                response = self._open(url, headers, method)
            except _Retryable:
                if deadline.expired:
                    raise _fail(Reason.TIMEOUT, self._late(url, "headers")) from None
                raise
            finally:
                _current.deadline = None
            if deadline.expired:  # cut off mid-headers: what arrived is not a response
                response.close()
                response.release_conn()
                raise _fail(Reason.TIMEOUT, self._late(url, "headers"))
            try:
                return self._read(response, url, cap, deadline.at, body=method != "HEAD",
                                  cut=cut)
            finally:
                response.release_conn()

    def _late(self, url: str, part: str) -> str:
        return f"{part} from {url} not complete within the {self._deadline_s:g}s deadline"

    def _open(self, url: str, headers: dict[str, str],
              method: str = "GET") -> urllib3.BaseHTTPResponse:
        try:
            return self._pool.request(
                method,
                url,
                headers={"User-Agent": self._config.user_agent, **headers},
                preload_content=False,
                redirect=False,
                retries=False,
                timeout=self._timeout,
            )
        except BlockedAddressError as exc:
            raise _fail(Reason.ADDRESS_REFUSED, str(exc)) from None
        # urllib3 derives NewConnectionError from ConnectTimeoutError: most specific first.
        except NameResolutionError:
            # Not retried here (a resolver answers at once); offline, the next run retries.
            raise _fail(Reason.CONNECTION_ERROR, f"cannot resolve host of {url}") from None
        except NewConnectionError as exc:
            detail = f"connection error for {url}: {_short(exc)}"
            raise _fail(Reason.CONNECTION_ERROR, detail, retry=True) from None
        except ConnectTimeoutError:
            raise _fail(Reason.TIMEOUT, f"connect timeout for {url}", retry=True) from None
        except ReadTimeoutError:
            raise _fail(
                Reason.TIMEOUT, f"no response within {self._config.timeout_s:g}s from {url}"
            ) from None
        except SSLError as exc:
            raise _fail(Reason.HTTP_ERROR, f"TLS error for {url}: {exc}") from None
        except ProtocolError as exc:
            raise _fail(
                Reason.CONNECTION_ERROR, f"connection error for {url}: {_short(exc)}", retry=True
            ) from None
        except (HTTPError, ValueError) as exc:  # LocationParseError and friends
            raise _fail(Reason.HTTP_ERROR, f"bad request for {url}: {_short(exc)}") from None

    def _read(
        self, response: urllib3.BaseHTTPResponse, url: str, cap: int, deadline: float,
        *, body: bool = True, cut: bool = False,
    ) -> Response:
        status = response.status
        headers = tuple((k.lower(), v) for k, v in response.headers.iteritems())
        if not body:  # HEAD: the headers are the answer; its Content-Length is no body
            # Kept as received too: a recheck archives its HEADs, and one archived without
            # them (ETag, X-Robots-Tag...) showed nothing of what its finding was read from.
            return Response(url=url, status=status, headers=headers, data=b"",
                            retrieved_at=_now_iso(), reason=response.reason or "",
                            protocol=_protocol(response.version),
                            received=tuple(response.headers.iteritems()))
        body_wanted = 200 <= status < 300
        limit = cap if body_wanted else ERROR_BODY_CAP
        length = response.headers.get("content-length", "")
        if body_wanted and not cut and length.strip().isdigit() and int(length) > cap:
            response.close()
            raise _fail(Reason.TOO_LARGE, f"Content-Length {int(length)} over the {cap}-byte cap")
        truncate = cut or not body_wanted
        data, cut_short = self._read_body(response, url, limit, deadline, truncate=truncate)
        return Response(url=url, status=status, headers=headers, data=data,
                        retrieved_at=_now_iso(), reason=response.reason or "",
                        protocol=_protocol(response.version),
                        received=tuple(response.headers.iteritems()),
                        truncated=cut_short)

    def _read_body(
        self,
        response: urllib3.BaseHTTPResponse,
        url: str,
        limit: int,
        deadline: float,
        *,
        truncate: bool,
    ) -> tuple[bytes, bool]:
        """The body and whether it was cut at `limit` (only with `truncate`): a body of
        exactly `limit` bytes is whole, which only the byte after it can tell."""
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                if time.monotonic() > deadline:
                    response.close()
                    raise _fail(Reason.TIMEOUT, self._late(url, "body"))
                # read1 returns what has arrived (at most the amount asked): it never
                # blocks to fill a chunk, and never reads past limit + 1.
                chunk = response.read1(min(CHUNK, limit + 1 - size))
                if not chunk:
                    return b"".join(chunks), False
                size += len(chunk)
                chunks.append(chunk)
                if size > limit:
                    response.close()
                    if truncate:
                        return b"".join(chunks)[:limit], True
                    chunks.clear()
                    raise _fail(
                        Reason.TOO_LARGE,
                        f"body from {url} over the {limit}-byte cap (stopped reading at {size})",
                    )
        except ReadTimeoutError:
            response.close()
            raise _fail(
                Reason.TIMEOUT, f"body from {url} stalled for {self._config.timeout_s:g}s"
            ) from None
        except ProtocolError as exc:  # reset or cut short: the network's doing
            response.close()
            raise _fail(
                Reason.CONNECTION_ERROR, f"body from {url} broken: {_short(exc)}", retry=True
            ) from None
        except (DecodeError, SSLError) as exc:
            response.close()
            raise _fail(
                Reason.HTTP_ERROR, f"body from {url} broken: {_short(exc)}", retry=True
            ) from None


def _host(url: str) -> str:
    """The host a credential is meant for: another port or an https upgrade of the same
    host keeps it, as urllib3's own redirects do."""
    return (urlsplit(url).hostname or "").lower()


def _status_reason(status: int) -> Reason:
    """A final non-2xx status: the server busy or broken (try again later) or a refusal.
    408 (Request Timeout) and 429 are 4xx that say "not now", not "not this request"."""
    return Reason.HTTP_UNAVAILABLE if status >= 500 or status in (408, 429) else Reason.HTTP_ERROR


def _protocol(version: int) -> str:
    """http.client's version number (11) as a status line spells it (HTTP/1.1)."""
    return {9: "HTTP/0.9", 10: "HTTP/1.0", 11: "HTTP/1.1", 20: "HTTP/2"}.get(version,
                                                                          "HTTP/1.1")


def _with_params(url: str, params: dict[str, str] | None) -> str:
    if not params:
        return url
    parts = urlsplit(url)
    extra = urlencode(list(params.items()))
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))


# urllib3 prefixes a connection failure with the connection object's repr.
_CONNECTION_REPR_RE = re.compile(r"\w+Connection\(host=[^)]*\): (Failed to establish a new "
                                 r"connection: )?")


def failure_cause(detail: str, url: str) -> str:
    """A rejection's detail as the cause of a failed request to `url`, without `url`: the
    error that reports it names the URL once, after the cause. Other URLs (a redirect's
    target) stay, they are part of what happened."""
    cause = detail
    for written in (repr(url), url):
        for joint in (" of ", " for ", " from ", " to ", " "):
            cause = cause.replace(f"{joint}{written}", "")
    return _CONNECTION_REPR_RE.sub("", cause.replace(url, "the URL")).strip()


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:197] + "..."


def _describe(result: Response | Rejection) -> str:
    if isinstance(result, Response):
        return f"HTTP {result.status}"
    return f"{result.reason}: {result.detail}"
