"""What the API sources (wikimedia, met, aic, cleveland) share: a polite JSON client and
HTML-to-text.

Each API source talks through its own `Fetcher`, built from the recipe's `[fetch]` with the
API's documented request rate as the per-host spacing, so the image downloads of the build
(another Fetcher) never eat into the API's budget and the API is never asked faster than it
allows. Requests are issued in series: a source runs in one thread.

An API page that cannot be had after retries stops the build with a `SourceError` (exit 1,
see sources/_failures: the cause, the source, the URL once). Stopping is right: a page we
cannot read holds candidates we cannot account for, and everything decided so far is
committed, so the same command resumes at that page once the API answers again. A request
the API refuses (4xx) is the recipe's to fix (exit 2).
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import replace
from html import unescape
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlencode, urljoin

import urllib3

from builder.config import check_http_url
from builder.errors import UserError
from builder.fetch import (
    Fetcher,
    FetchError,
    Response,
    backoff_delay,
    failure_cause,
    parse_retry_after,
)
from builder.recipe import FetchConfig
from builder.records import Rejection, recordable_json
from builder.sources._failures import SourceError, api_failed, api_refused, is_refusal
from builder.sources._keys import NOT_FOUND

log = logging.getLogger(__name__)

# A 500 is not retried by the Fetcher (it may be a permanent bug); an API page is worth a
# few more tries, spaced by the Fetcher's backoff.
RETRY_PAGE_STATUSES = frozenset({500, 502, 503, 504})
_CONTACT_RE = re.compile(r"\(([^)]*(@|https?://|mailto:)[^)]*)\)")
_LIBRARY_RE = re.compile(r"\)\s*\S+/\S+")

__all__ = ["SourceError"]  # re-exported: sources and tests import it from here


def check_api(value: str, *, file: object, where: str) -> str:
    return check_http_url(value, file=str(file), key=f"{where}.api")


def check_api_source(api: str, *, limit: int | None, rps: float | None, file: object,
                     where: str, max_rps: float | None = None, rps_reason: str = "") -> None:
    """The keys every API source shares: `api` a URL, `limit` positive, `rps` positive and
    within the API's documented rate when it has one."""
    check_api(api, file=file, where=where)
    if rps is not None:
        if max_rps is None and rps <= 0:
            raise UserError(f"{file}: {where}.rps must be positive.")
        if max_rps is not None and not 0 < rps <= max_rps:
            raise UserError(f"{file}: {where}.rps must be above 0 and at most {max_rps:g} "
                            f"({rps_reason}).")
    if limit is not None and limit < 1:
        raise UserError(f"{file}: {where}.limit must be at least 1 (or absent).")


def api_fetcher(fetch: FetchConfig, *, rps: float | None,
                hand_back: frozenset[int] = frozenset()) -> Fetcher:
    """A Fetcher for one API: one connection, at most `rps` requests per second (the
    stricter of the API's own limit and the recipe's `per_host_rps`), and a User-Agent
    that also names the HTTP library, as Wikimedia's policy asks. Statuses in `hand_back`
    come back at once for the source to handle (see Fetcher)."""
    limits = [r for r in (rps, fetch.per_host_rps) if r is not None]
    config = replace(
        fetch,
        per_host_connections=1,
        per_host_rps=min(limits) if limits else None,
        user_agent=with_library(fetch.user_agent),
    )
    return Fetcher(config, hand_back=hand_back)


def with_library(user_agent: str) -> str:
    """`name/version (contact)` -> `name/version (contact) urllib3/x.y`, unless a library
    is already named after the contact."""
    if _LIBRARY_RE.search(user_agent):
        return user_agent
    return f"{user_agent.strip()} urllib3/{urllib3.__version__}"


def has_contact(user_agent: str) -> bool:
    """True when the User-Agent carries a contact (e-mail or URL) in parentheses."""
    return _CONTACT_RE.search(user_agent) is not None


class JsonClient:
    """GET JSON pages from one API with retries; `SourceError` once they are exhausted."""

    def __init__(self, source: str, fetch: FetchConfig, *, rps: float | None,
                 headers: dict[str, str] | None = None,
                 hand_back: frozenset[int] = frozenset(), recipe: object = "the recipe") -> None:
        self.source = source
        self.recipe = recipe
        self.config = fetch
        # Answers with these statuses are returned as they are (parsed JSON or None, and
        # the response), for a source that waits out rate limits itself; headerless only.
        if hand_back and headers:
            raise ValueError("hand_back works on the header-less get_text path only")
        self.hand_back = hand_back
        self.fetcher = api_fetcher(fetch, rps=rps, hand_back=hand_back)
        self.headers = dict(headers or {})

    def close(self) -> None:
        self.fetcher.close()

    def get(self, url: str, params: dict[str, str] | None = None, *,
            allow_404: bool = False) -> Any:
        """The parsed JSON of `url?params`; NOT_FOUND for a 404 when `allow_404` (None is
        an answer of JSON `null`, which says nothing of the record)."""
        response = self.get_response(url, params, allow_404=allow_404)
        return NOT_FOUND if response is None else response[0]

    def get_response(self, url: str, params: dict[str, str] | None = None, *,
                     allow_404: bool = False) -> tuple[Any, Response | None] | None:
        """(parsed JSON, the HTTP response when known) or None for an allowed 404."""
        full = with_params(url, params)
        problem = ""
        for attempt in range(self.config.retries + 1):
            if attempt:
                time.sleep(backoff_delay(attempt - 1, self.config.backoff_s))
            fetch = self._via_get_json if self.headers else self._via_get_text
            kind, value = fetch(full)
            if kind == "ok":  # its text made recordable: it may be recorded, or sent back
                return value if value is None else (recordable_json(value[0]), value[1])
            if kind == "404" and allow_404:
                return None
            if kind in ("404", "refused"):
                raise api_refused(self.source, value or "HTTP 404", full, recipe=self.recipe)
            problem = value
            if kind == "final":
                break
            log.info("%s: retrying %s after %s", self.source, full, value)
        raise api_failed(self.source, problem, full)

    def _via_get_text(self, full: str) -> tuple[str, Any]:
        result = self.fetcher.get_text(full, max_bytes=self.config.max_bytes, kind="api")
        if isinstance(result, Rejection):
            return "final", failure_cause(result.detail, full)
        if result.status in self.hand_back:
            try:
                return "ok", (json.loads(result.data), result)
            except ValueError:
                return "ok", (None, result)  # a plain-text rate-limit page says enough
        return self._judge(result.status, f"HTTP {result.status}",
                           lambda: (json.loads(result.data), result))

    def _via_get_json(self, full: str) -> tuple[str, Any]:
        # Only get_json takes extra headers; it raises with the status when there is one.
        try:
            return "ok", (self.fetcher.get_json(full, headers=self.headers), None)
        except FetchError as exc:
            if exc.status is None:
                return "retry", exc.cause
            return self._judge(exc.status, exc.cause, lambda: None)

    @staticmethod
    def _judge(status: int, cause: str, parse: Any) -> tuple[str, Any]:
        """("ok", parsed) / ("404"|"refused"|"retry"|"final", cause) for a final status."""
        if status == 404:
            return "404", cause
        if is_refusal(status):
            return "refused", cause
        if status in RETRY_PAGE_STATUSES or status == 429:
            return "retry", cause
        if not 200 <= status < 300:
            return "final", cause
        try:
            return "ok", parse()
        except ValueError as exc:
            return "retry", f"malformed JSON ({exc})"


def retry_after_s(response: Response | None, default: float) -> float:
    if response is None:
        return default
    wait = parse_retry_after(response.header("retry-after"))
    return default if wait is None else wait


def with_params(url: str, params: dict[str, str] | None) -> str:
    if not params:
        return url
    return f"{url}{'&' if '?' in url else '?'}{urlencode(list(params.items()))}"


def api_root(api: str) -> str:
    return api.rstrip("/")


# --- HTML to text -----------------------------------------------------------------------


class _Text(HTMLParser):
    BLOCK = frozenset({"br", "p", "div", "li", "tr", "td", "th"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.links: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self.hidden += 1
        if tag in self.BLOCK:
            self.parts.append(" ")
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.links.append(href)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self.hidden:
            self.hidden -= 1
        if tag in self.BLOCK:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def html_text(value: Any) -> str | None:
    """Visible text of an HTML fragment, whitespace collapsed; None when empty."""
    if value is None:
        return None
    parser = _Text()
    parser.feed(str(value))
    parser.close()
    text = " ".join(unescape("".join(parser.parts)).split())
    return text or None


def first_link(value: Any, *, base: str | None = None) -> str | None:
    """The first link's target in an HTML fragment, made absolute (https for `//host`)."""
    if not value:
        return None
    parser = _Text()
    parser.feed(str(value))
    parser.close()
    for href in parser.links:
        href = href.strip()
        if href.startswith("//"):
            return "https:" + href
        if href.startswith(("http://", "https://")):
            return href
        if base and not href.startswith(("#", "javascript:", "mailto:")):
            return urljoin(base, href)
    return None


def text_or_none(value: Any) -> str | None:
    """A plain API string, stripped; None for missing or empty values."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None
