"""Per-host policy files (robots.txt, ai.txt, tdmrep.json): fetched once per host per build.

One that could not be read (the host down, busy, a 5xx) is asked again once UNSETTLED_S have
passed: kept for the whole build, a minute's outage at its start held every candidate of the
host back (robots_unreachable) for days, each losing one of its attempts.

Many worker threads reach the same host at once; a lock per (origin, file) makes the first
one fetch and parse while the others wait for its result, so a host is asked once. Only the
parsed result is kept, never the body; the exchanges that fetched it are kept too, and
cited on the tape of every candidate that relies on them, so each candidate's evidence
names the robots.txt that allowed it however many candidates shared the one request.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from builder.fetch import cite, recording
from builder.records import TRANSIENT_REASONS, Exchanges, Reason, Rejection

MAX_FILE_BYTES = 512 * 1024  # what is read of a policy file; the rest is ignored
# tdmrep.json is JSON: cut, it cannot be read at all, and a publisher's list of locations
# can be long. Read whole up to this much (one per host per build); past it, unreadable.
MAX_TDMREP_BYTES = 16 * 1024 * 1024
# How long a file that could not be read stands for its host before it is asked again: the
# fetcher's own retries cover a hiccup of seconds; this, an outage of minutes.
UNSETTLED_S = 60.0


@dataclass(frozen=True)
class Answer:
    """How a policy-file request ended: a status and body, or a transport problem."""

    url: str
    status: int | None
    text: str | None
    problem: str | None = None  # timeout / connection error / refused address
    failure: Reason | None = None  # the fetcher's reason for `problem`

    @property
    def found(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def settled(self) -> bool:
        """Whether the host said what it says: no network failure, busy answer or 5xx."""
        return self.problem is None and self.status is not None and self.status < 500 \
            and self.status not in BUSY_STATUSES

    def unread(self, name: str, transient: Reason, *, strict: bool = False) -> Rejection | None:
        """Why the file could not be read at all, as the candidate's rejection, or None.

        A network failure (records.py TRANSIENT_REASONS) is `transient`: it says nothing
        about the host's wishes and the next run asks again, as is a busy answer (408, 429,
        502, 503, 504). `strict` (robots.txt, RFC 9309 2.3.1.4) also holds any other transport
        failure and any 5xx. A private
        address refused by the SSRF guard stays address_refused: only the recipe changes that.
        """
        if self.failure == Reason.ADDRESS_REFUSED:
            said = (self.problem or "").removeprefix(f"{Reason.ADDRESS_REFUSED.value}: ")
            return Rejection(Reason.ADDRESS_REFUSED, f"{name} at {self.url}: {said}")
        if self.problem is not None or self.status is None:
            if strict or self.failure in TRANSIENT_REASONS:
                return Rejection(transient, f"{name}: unreachable ({self.problem}) at {self.url}")
            return None
        if strict and (self.status >= 500 or self.status == 429):
            return Rejection(transient, f"{name}: HTTP {self.status} at {self.url}")
        if self.status in BUSY_STATUSES:
            # "Try again later" (a rate limit, a gateway or the host overloaded), not "there
            # is no file": a reservation in it is unseen, so the next run asks again. Any
            # other 5xx is no file, as a host misconfigured to answer 500 for every unknown
            # path would otherwise keep all its images waiting for ever.
            return Rejection(transient, f"{name}: HTTP {self.status} at {self.url} (busy: "
                             "what it says is not known yet; asked again by the next run)")
        return None


# Answers that say "not now" rather than "no such file": Request Timeout (the server gave up
# waiting for our request: a 4xx, so it was read as no file and its refusal admitted), Too
# Many Requests, Bad Gateway, Service Unavailable, Gateway Timeout.
BUSY_STATUSES = frozenset({408, 429, 502, 503, 504})


def origin(url: str) -> str | None:
    """scheme://host[:port] of an http(s) URL, lower-cased; None for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default = 80 if scheme == "http" else 443
    return f"{scheme}://{host}" + (f":{port}" if port and port != default else "")


class HostFiles:
    """A thread-safe cache of parsed policy files, keyed by origin and file path."""

    def __init__(self, fetcher: Any) -> None:
        self._fetcher = fetcher
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        # key -> (parsed, exchanges, monotonic time it stops standing, or None: for good)
        self._parsed: dict[str, tuple[Any, Exchanges, float | None]] = {}
        self.requests = 0  # how many files were actually fetched (for tests and the summary)
        self.unsettled_s = float(os.environ.get("CLEANSET_HOST_FILE_RETRY_SECONDS",
                                                UNSETTLED_S))

    def get(self, base: str, path: str, parse: Callable[[Answer], Any]) -> Any:
        key = base + path
        with self._lock:
            found = self._standing(key)
            if found is None:
                lock = self._locks.setdefault(key, threading.Lock())
        if found is None:
            with lock:
                with self._lock:
                    found = self._standing(key)
                if found is None:
                    with recording() as taped:
                        answer = self.fetch(key)
                    found = (parse(answer), tuple(taped),
                             None if answer.settled else time.monotonic() + self.unsettled_s)
                    with self._lock:
                        self._parsed[key] = found
                        self._locks.pop(key, None)
        result, exchanges, _ = found
        cite(exchanges)
        return result

    def _standing(self, key: str) -> tuple[Any, Exchanges, float | None] | None:
        """The cached answer for `key` while it stands (caller holds the lock)."""
        found = self._parsed.get(key)
        if found is not None and found[2] is not None and time.monotonic() >= found[2]:
            return None
        return found

    def fetch(self, url: str) -> Answer:
        with self._lock:
            self.requests += 1
        kind = url.rsplit("/", 1)[-1]  # robots.txt, ai.txt, tdmrep.json
        # A longer file is read up to the cap (RFC 9309 2.5: parse at least 500 KiB), not
        # refused: refused as too_large, a robots.txt was robots_unreachable on every run
        # and an ai.txt no file at all, its Disallow admitted.
        cap = MAX_TDMREP_BYTES if kind == "tdmrep.json" else MAX_FILE_BYTES
        response = self._fetcher.get_text(url, max_bytes=cap, kind=kind, cut=True)
        if isinstance(response, Rejection):
            return Answer(url, None, None, f"{response.reason.value}: {response.detail}",
                          response.reason)
        text = response.text() if response.ok else None
        if text is not None and response.truncated:
            # The line the cap cut is dropped: "Allow: /private/x" cut to "Allow: /" would
            # allow everything.
            text = text[:max(text.rfind("\n"), text.rfind("\r")) + 1]
        return Answer(url, response.status, text)
