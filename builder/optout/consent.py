"""Host-level consent today, for `cleanset recheck`: robots.txt (our product token, then
`*`), ai.txt and `/.well-known/tdmrep.json`, each fetched once per host, and with
`[optout] landing_page = true` each sample's landing page (builder.optout.landing), read
once per chunk of samples.

Each file is read as a build reads it (builder/optout/hostfiles.py `Answer.unread`), with one
difference: a build reads a robots.txt it cannot get (5xx, 429, timeout, DNS) as "disallow
everything" (RFC 9309 2.3.1.4) and admits nothing from that host until it answers. A recheck
reports the same failure as *transient*: a network hiccup must never be recorded as an
artist's opt-out, and the next recheck asks again. ai.txt and tdmrep.json are transient when
no answer came (a network failure) or the host answered busy (408, 429, 502, 503, 504), as in a
build; one answering another 5xx is no file, as in a build, which admits from that host: a
recheck that called it unreachable exited 4 on every run for a host whose build admitted. Only a file that was read and refuses us is a refusal; its detail
names the file, the rule and its line.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from builder.fetch import recording
from builder.optout.config import OptoutConfig
from builder.optout.hostfiles import BUSY_STATUSES, Answer, HostFiles, origin
from builder.optout.landing import SIGNAL as LANDING
from builder.optout.landing import LandingPage, read_landing_page
from builder.optout.robots import RobotsFile, group_lines, parse_ai_txt, parse_robots
from builder.optout.tdmrep import RESERVED, WELL_KNOWN, location_pattern, parse_tdmrep
from builder.records import TRANSIENT_REASONS, Exchange, Reason

HOST_FILE_PATHS = ("/robots.txt", "/ai.txt", WELL_KNOWN)  # what is read of every host
TRANSIENT_STATUS = 429  # "too many requests" after retries: ask again later, not a refusal


@dataclass(frozen=True)
class HostSignal:
    """What one host file says today about one URL."""

    signal: str  # robots.txt | ai.txt | tdmrep.json | landing-page
    refused: bool
    transient: bool  # could not be read (5xx, 429, timeout, DNS): nothing is known
    said: str


@dataclass(frozen=True)
class _HostFile:
    parsed: Any  # RobotsFile | TdmFile; None when transient
    text: str | None  # robots.txt / ai.txt body, to name the refusing line
    transient: str | None
    exchanges: tuple[Exchange, ...] = ()  # the answers it was read from, for the archive


class HostConsent:
    """The consent files of every host asked about, read once each and kept parsed."""

    def __init__(self, fetcher: Any, config: OptoutConfig, *, workers: int) -> None:
        self.config = config
        self.token = config.product_token.lower()
        self.files = HostFiles(fetcher)
        self.workers = workers
        self._hosts: dict[str, dict[str, _HostFile]] = {}
        self._pages: dict[str, tuple[LandingPage, tuple[Exchange, ...]]] = {}
        self._fetcher = fetcher
        self._page_requests = 0
        self._lock = threading.Lock()

    @property
    def requests(self) -> int:
        """Host files asked for (robots.txt, ai.txt, tdmrep.json)."""
        return self.files.requests

    @property
    def pages_read(self) -> int:
        """Landing pages asked for."""
        return self._page_requests

    def warm(self, urls: Iterable[str], pages: Iterable[str | None] = ()) -> None:
        """Read the files of every host among `urls` not read yet, many hosts at once, and
        (with `landing_page`) the landing pages `pages`: the pages kept are these only (a
        recheck's chunk at a time), each read once."""
        new = sorted({o for u in urls if (o := origin(u)) is not None} - set(self._hosts))
        wanted = {p for p in pages if self._wants(p)}
        self._pages = {p: found for p, found in self._pages.items() if p in wanted}
        unread = sorted(wanted - set(self._pages))
        if not new and not unread:
            return
        pool = ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(new) + len(unread))),
                                  thread_name_prefix="recheck-host")
        try:
            hosts = pool.map(self._read_host, new)
            read = pool.map(self._read_page, unread)
            for base, files in zip(new, hosts, strict=True):
                self._hosts[base] = files
            self._pages.update(zip(unread, read, strict=True))
        finally:
            # Every answer is in once the loop ends; after Ctrl-C, not waiting for a host
            # that does not answer (it held the command up to its timeout).
            pool.shutdown(wait=False, cancel_futures=True)

    def exchanges(self, url: str, page: str | None = None) -> list[Exchange]:
        """The answers the host files for `url` (and its landing page) were read from
        (after `signals`)."""
        base = origin(url)
        files = self._hosts.get(base, {}) if base is not None else {}
        found = [ex for file in files.values() for ex in file.exchanges]
        if page in self._pages:
            found += self._pages[page][1]
        return found

    def signals(self, url: str, page: str | None = None) -> list[HostSignal]:
        """Every enabled host signal for `url` (an http(s) file URL), in build order; its
        landing page `page` last, with `landing_page` (read by `warm` when not yet)."""
        base = origin(url)
        if base is None:
            return []
        if base not in self._hosts or (self._wants(page) and page not in self._pages):
            self.warm([url], [page, *self._pages])
        out = self._host_signals(url, self._hosts[base])
        if page is not None and self._wants(page):
            landing, _ = self._pages[page]
            out.append(HostSignal(LANDING, landing.refusal is not None and not
                                  landing.unreachable, landing.unreachable, landing.said))
        return out

    def _wants(self, page: str | None) -> bool:
        return self.config.landing_page and page is not None and origin(page) is not None

    def _host_signals(self, url: str, files: dict[str, _HostFile]) -> list[HostSignal]:
        out = []
        for name, file in files.items():
            if file.transient is not None:
                out.append(HostSignal(name, False, True, file.transient))
            elif name == "tdmrep.json":
                said = file.parsed.verdict(url)
                out.append(HostSignal(name, said.startswith(RESERVED), False, said))
            else:
                out.append(self._robots_signal(name, file, url))
        return out

    # -- reading ------------------------------------------------------------------------
    def _read_host(self, base: str) -> dict[str, _HostFile]:
        wanted = [(name, path, parse) for (name, parse, on), path in zip((
            ("robots.txt", parse_robots, self.config.robots_txt),
            ("ai.txt", parse_ai_txt, self.config.ai_txt),
            ("tdmrep.json", parse_tdmrep, self.config.tdmrep)), HOST_FILE_PATHS, strict=True)
            if on]
        files = {}
        for name, path, parse in wanted:
            with recording() as taped:
                answer = self.files.fetch(base + path)
            problem = _transient(answer, strict=name == "robots.txt")
            if problem is not None:
                files[name] = _HostFile(None, None, problem, tuple(taped))
            else:
                text = answer.text if name != "tdmrep.json" else None
                files[name] = _HostFile(parse(answer), text, None, tuple(taped))
        return files

    def _read_page(self, url: str) -> tuple[LandingPage, tuple[Exchange, ...]]:
        with recording() as taped:
            page = read_landing_page(self._fetcher, url, self.token)
        with self._lock:
            self._page_requests += 1
        return page, tuple(taped)

    def _robots_signal(self, name: str, file: _HostFile, url: str) -> HostSignal:
        rules: RobotsFile = file.parsed
        allowed, said = rules.verdict(url, self.token)
        if not allowed and said.startswith("Disallow") and file.text:
            group = self.token if self.token in rules.agents else "*"
            line = disallow_line(file.text, group, url)
            if line is not None:
                said = f"{said} (line {line[0]}: {line[1]!r})"
        return HostSignal(name, not allowed, False, said)


def _transient(answer: Answer, *, strict: bool) -> str | None:
    """Why the file says nothing today, or None when it is read (or is no file) as a build
    reads it. `strict`: robots.txt, unread on any failure, 5xx or 429; any file answering
    busy (hostfiles.BUSY_STATUSES)."""
    if answer.problem is not None or answer.status is None:
        if strict or answer.failure in TRANSIENT_REASONS or answer.failure is Reason.ADDRESS_REFUSED:
            return f"unreachable ({answer.problem}) at {answer.url}"
        return None
    if strict and (answer.status >= 500 or answer.status == TRANSIENT_STATUS) or \
            answer.status in BUSY_STATUSES:
        return f"HTTP {answer.status} at {answer.url}"
    return None


def disallow_line(text: str, group: str, url: str) -> tuple[int, str] | None:
    """The line of the rule that disallows `url` for user-agent `group` ('*' or our
    token): among the group's Allow/Disallow rules matching the path, the longest wins and
    Allow wins a tie (RFC 9309 2.2.2). None when no Disallow line decides it."""
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    best: tuple[int, bool, int, str] | None = None
    for number, raw, kind, pattern in _group_rules(text, group):
        if pattern and location_pattern(pattern).match(path):
            candidate = (len(pattern), kind == "allow", number, raw.strip())
            if best is None or candidate[:2] > best[:2]:
                best = candidate
    if best is None or best[1]:
        return None
    return best[2], best[3]


def _group_rules(text: str, group: str) -> list[tuple[int, str, str, str]]:
    """(line number, line, allow|disallow, pattern) of every rule in groups naming `group`."""
    return [(number, raw, key, value) for number, raw, agents, key, value in group_lines(text)
            if key in ("allow", "disallow") and group in agents]

