"""Shared by the API sources: keys from the environment, redaction, paging with resume.

API keys are read from an environment variable named in the recipe (never from the recipe
itself) and must never reach an output: not the ledger, not provenance `api_url`, not an
error message, not a log line. Sources send keys in a header where the API allows it; where
a key must ride in the query string (Europeana's `wskey`), every URL we keep is stripped of
it and `builder.fetch`'s log records and errors are redacted before anyone sees them.

`paged` turns "fetch page N" into Candidates whose `resume` says where to continue: the
page token (an offset, a cursor or a page number) plus how many of that page's candidates
were already handed out, so a resumed build re-requests only the page it stopped in.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from builder.errors import UserError
from builder.fetch import Fetcher, FetchError, backoff_delay
from builder.recipe import FetchConfig
from builder.records import Candidate, recordable_json
from builder.sources._failures import api_failed, api_refused, is_refusal

ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PAGE_ATTEMPTS = 3  # a page that failed for good in the fetcher is tried this often in all
REDACTED = "***"
# Query parameters that carry credentials in the APIs we speak; never kept in a URL.
SECRET_PARAMS = frozenset({"wskey", "api_key", "apikey", "key", "access_token", "token"})


def check_env_name(value: str | None, *, file: Path | str, key: str, required: bool) -> None:
    """Refuse a malformed variable name, or (when required) an unset variable, at load time."""
    if value is None:
        if required:
            raise UserError(f"{file}: {key} is missing; name the environment variable that "
                            "holds the API key, e.g. api_key_env = \"SI_API_KEY\".")
        return
    if not ENV_NAME_RE.match(value):
        raise UserError(
            f"{file}: {key} = {value!r} is not an environment variable name. Give the "
            "variable's name (letters, digits, '_'), not the key itself: keys never go in "
            "a recipe."
        )
    if required:
        env_key(value, file=file, key=key)


def env_key(name: str, *, file: Path | str, key: str, signup: str = "") -> str:
    """The secret in environment variable `name`; UserError naming the variable if unset."""
    value = os.environ.get(name, "").strip()
    if not value:
        hint = f"Get one at {signup} and run" if signup else "Run"
        raise UserError(
            f"{file}: {key} = {name!r}, but the environment variable {name} is not set. {hint} "
            f"`export {name}=<your key>` first (cleanset build and recheck read it)."
        )
    redact(value)
    return value


# --- redaction -----------------------------------------------------------------------------

_secrets: set[str] = set()
_lock = threading.Lock()


class _RedactFilter(logging.Filter):
    """Rewrites a log record so no registered secret survives formatting."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is logging's business, not ours
            return True
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_FILTER = _RedactFilter()


def redact(secret: str) -> None:
    """Register a secret: from now on it is scrubbed from fetch logs and our errors."""
    if len(secret) < 4:  # too short to replace safely inside ordinary text
        return
    with _lock:
        if secret in _secrets:
            return
        _secrets.add(secret)
        fetch_log = logging.getLogger("builder.fetch")
        if _FILTER not in fetch_log.filters:
            fetch_log.addFilter(_FILTER)


def registered() -> tuple[str, ...]:
    """Every secret registered in this process: what a worker process must scrub too (the
    executors hand them over with each batch of candidates)."""
    with _lock:
        return tuple(sorted(_secrets))


def register_all(secrets: Iterable[str]) -> None:
    for secret in secrets:
        redact(secret)


def scrub(text: str) -> str:
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def strip_secrets(url: str) -> str:
    """`url` without credential query parameters (for provenance `api_url`)."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if k.lower() not in SECRET_PARAMS]
    return scrub(urlunsplit(parts._replace(query=urlencode(kept))))


def with_query(url: str, params: Iterable[tuple[str, str]]) -> str:
    """`url` with `params` appended in order; repeated keys (Europeana's `qf`) allowed."""
    parts = urlsplit(url)
    extra = urlencode(list(params))
    query = f"{parts.query}&{extra}" if parts.query and extra else (parts.query or extra)
    return urlunsplit(parts._replace(query=query))


# --- fetching pages ------------------------------------------------------------------------

class _NotFound:
    def __repr__(self) -> str:
        return "NOT_FOUND"


# What `get_page` / `JsonClient.get` return for an allowed 404 (the API's "gone"). Not None:
# an HTTP 200 whose JSON is `null` once came back as None too, and a recheck read every
# such answer as "HTTP 404, deleted".
NOT_FOUND: Any = _NotFound()


def get_page(fetcher: Fetcher, config: FetchConfig, url: str, *, source: str, recipe: Path,
             headers: dict[str, str] | None = None, key_env: str | None = None,
             allow_404: bool = False) -> Any:
    """One API page as parsed JSON (NOT_FOUND for a 404 when `allow_404`: a record that is
    gone).
    `Fetcher.get_json` already retries 429/502-504 (with Retry-After) and malformed JSON; a page that still fails is tried again up to
    PAGE_ATTEMPTS in all (a 500 from a busy search cluster usually passes), except when the
    API refuses the request (4xx), which no retry fixes. The final error (sources/_failures)
    gives the cause, then the redacted URL once, and says the same command resumes here."""
    shown = scrub(url)
    cause = ""
    for attempt in range(PAGE_ATTEMPTS):
        try:
            return recordable_json(fetcher.get_json(url, headers=headers))
        except FetchError as exc:
            cause = scrub(exc.cause)
            if exc.status == 404 and allow_404:
                return NOT_FOUND
            if is_refusal(exc.status):
                raise api_refused(source, cause, shown, recipe=recipe,
                                  key_env=key_env if exc.status in (401, 403) else None) from None
            logging.getLogger(__name__).info("source %s: page failed (attempt %d): %s",
                                             source, attempt + 1, cause)
            if attempt + 1 < PAGE_ATTEMPTS:
                time.sleep(backoff_delay(attempt, config.backoff_s))
    raise api_failed(source, f"{cause} (page tried {PAGE_ATTEMPTS} times)", shown)


# --- paging with resume --------------------------------------------------------------------

# One page: the candidates it holds (without `resume`) and the next page's token or None.
Page = tuple[list[Candidate], Any]
K = TypeVar("K")
T = TypeVar("T")


def paged(first: Any, fetch: Callable[[Any], Page], resume: dict[str, Any] | None,
          *, limit: int | None = None, source: str = "") -> Iterator[Candidate]:
    """Candidates page by page from token `first` (or the resume state), each carrying
    `{"page": token, "skip": n, "count": total}`: re-fetch page `token`, skip its first `n`
    candidates. The last candidate of a page already points at the next page, so a build
    stopped on a page boundary never re-requests the finished page.

    A page with nothing in it that points at itself (an offset API whose count says more
    remain) is asked once more: an index's hiccup, taken as the end, silently cut the
    source short. Empty again, it is the end, logged as such (a server repeating a token
    with nothing in it would otherwise loop for ever)."""
    state = resume or {}
    if state.get("done"):
        return
    token = state.get("page", first)
    skip = int(state.get("skip", 0))
    count = int(state.get("count", 0))
    while token is not None:
        if limit is not None and count >= limit:
            return
        items, following = asked_again_if_empty(fetch, token, _points_at_itself)
        if not items and following == token:
            logging.getLogger(__name__).warning(
                "source %s: the page at %s was empty twice though the API counts more; "
                "taken as the end", source, token)
            return
        for index, cand in enumerate(items):
            if index < skip:
                continue
            if limit is not None and count >= limit:
                return
            count += 1
            last = index == len(items) - 1
            if last and following is not None:
                after = {"page": following, "skip": 0, "count": count}
            elif last:
                after = {"page": token, "skip": index + 1, "count": count, "done": True}
            else:
                after = {"page": token, "skip": index + 1, "count": count}
            yield replace(cand, resume=after)
        token, skip = following, 0


def asked_again_if_empty(ask: Callable[[K], T], token: K, empty: Callable[[T, K], bool]) -> T:
    """API page `token`, asked once more when `empty` says it holds nothing although the
    API's own count says more remain: an index's hiccup, taken as the end, silently cut the
    source short. The second answer stands, empty or not; the caller decides what an empty
    one means (the end, or a page to pass over)."""
    answer = ask(token)
    return ask(token) if empty(answer, token) else answer


def asking_again_if_empty(fetch: Callable[[Any], Page]) -> Callable[[Any], Page]:
    """`fetch` of a page-numbered API, each empty page that is not the last asked once more
    (then passed over: paged goes on to the next one)."""
    return partial(asked_again_if_empty, fetch, empty=_not_the_last)


def _points_at_itself(page: Page, token: Any) -> bool:
    return not page[0] and page[1] == token


def _not_the_last(page: Page, token: Any) -> bool:
    return not page[0] and page[1] is not None


def first_text(value: Any) -> str | None:
    """The first non-empty string of a JSON value that may be a string or a list of them."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, list):
        for item in value:
            if isinstance(item, str) and item.strip():
                return item.strip()
    return None


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
