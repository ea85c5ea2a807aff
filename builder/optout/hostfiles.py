"""Per-host policy files (robots.txt, ai.txt, tdmrep.json): fetched once per host per build.

Many worker threads reach the same host at once; a lock per (origin, file) makes the first
one fetch and parse while the others wait for its result, so a host is asked once. Only the
parsed result is kept, never the body; the exchanges that fetched it are kept too, and
cited on the tape of every candidate that relies on them, so each candidate's evidence
names the robots.txt that allowed it however many candidates shared the one request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from builder.fetch import cite, recording
from builder.records import Exchanges, Rejection


@dataclass(frozen=True)
class Answer:
    """How a policy-file request ended: a status and body, or a transport problem."""

    url: str
    status: int | None
    text: str | None
    problem: str | None = None  # timeout / connection error / refused address

    @property
    def found(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


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
        self._parsed: dict[str, tuple[Any, Exchanges]] = {}
        self.requests = 0  # how many files were actually fetched (for tests and the summary)

    def get(self, base: str, path: str, parse: Callable[[Answer], Any]) -> Any:
        key = base + path
        with self._lock:
            found = self._parsed.get(key)
            if found is None:
                lock = self._locks.setdefault(key, threading.Lock())
        if found is None:
            with lock:
                with self._lock:
                    found = self._parsed.get(key)
                if found is None:
                    with recording() as taped:
                        answer = self.fetch(key)
                    found = (parse(answer), tuple(taped))
                    with self._lock:
                        self._parsed[key] = found
                        self._locks.pop(key, None)
        result, exchanges = found
        cite(exchanges)
        return result

    def fetch(self, url: str) -> Answer:
        with self._lock:
            self.requests += 1
        kind = url.rsplit("/", 1)[-1]  # robots.txt, ai.txt, tdmrep.json
        response = self._fetcher.get_text(url, max_bytes=512 * 1024, kind=kind)
        if isinstance(response, Rejection):
            return Answer(url, None, None, f"{response.reason.value}: {response.detail}")
        text = response.text() if response.ok else None
        return Answer(url, response.status, text)
