"""How every source says its API failed: one error type per kind of failure, one message shape.

The cause comes first ("cannot resolve host", "HTTP 503 (after 4 attempts)"), then the
source, then the URL once, on a line of its own so it can be copied whole (API URLs run to
hundreds of characters), then what to do.

- `api_failed` (exit 1): the network or the API's operator failed us (no connection, DNS,
  timeouts, 5xx, an unreachable hub, an answer that is not what the API documents). The
  recipe is fine; everything decided so far is committed, so the same command resumes at
  the page it stopped in once the API answers again.
- `api_refused` (exit 2): the API refused the request (a 4xx other than 408/429), which
  only the recipe, its key or its User-Agent can fix.
"""

from __future__ import annotations

from pathlib import Path

from builder.errors import UserError

RESUME = ("Everything decided so far is kept; run the same command again to resume once the "
          "API answers.")
# 4xx statuses that say "not now" rather than "not this request".
TRANSIENT_CLIENT_STATUSES = frozenset({408, 429})


class SourceError(UserError):
    """An API kept failing: the build stops, keeps what it committed, and can be resumed."""

    exit_code = 1


def is_refusal(status: int | None) -> bool:
    """A final HTTP status that no retry fixes: the request itself is wrong."""
    return status is not None and 400 <= status < 500 and status not in TRANSIENT_CLIENT_STATUSES


def api_failed(source: str, cause: str, url: str) -> SourceError:
    """The error for an API that failed after retries (exit 1)."""
    return SourceError(f"{_cause(cause)}; source {source!r} stopped at\n  {url}\n{RESUME}")


def api_refused(source: str, cause: str, url: str, *, recipe: Path | str,
                key_env: str | None = None) -> UserError:
    """The error for a request the API refused (exit 2), naming what to check."""
    fix = f"Check the settings of source {source!r} in {recipe}"
    if key_env:
        fix += f" and the API key in the environment variable {key_env}"
    return UserError(f"{_cause(cause)}: the API refused the request of source {source!r} "
                     f"at\n  {url}\n{fix}.")


def _cause(cause: str) -> str:
    return cause.strip().rstrip(".") or "no details"
