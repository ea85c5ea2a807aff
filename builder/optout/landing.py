"""A candidate's landing page as a "do not train" signal (`[optout] landing_page = true`):
`<meta name="tdm-reservation" content="1">` (TDMRep's HTML form) or `<meta name="robots">`
(or named for our product token) naming `noai` / `noimageai`.

Read the same way by a build (builder.optout, before the download) and by a recheck
(builder.optout.consent): a page the network kept from us (timeout, reset, cut short) is
unreachable, never "no reservation", since the page may carry one, as is one answering
"busy" (408, 429, 502, 503, 504); a page answering another 4xx or 5xx, or refused by the fetcher
for another reason, has no meta and says nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from builder.optout.hostfiles import BUSY_STATUSES
from builder.optout.tdmrep import landing_meta
from builder.records import Reason, Rejection

SIGNAL = "landing-page"
MAX_PAGE_BYTES = 2_000_000
REFUSING_ROBOTS = ("noai", "noimageai")


@dataclass(frozen=True)
class LandingPage:
    """What one landing page says: `refusal` (an opt-out, or TDMREP_UNREACHABLE when the
    network kept the page from us) or, when it is None, `said` for the trail."""

    said: str
    refusal: Rejection | None = None

    @property
    def unreachable(self) -> bool:
        return self.refusal is not None and self.refusal.reason is Reason.TDMREP_UNREACHABLE


def read_landing_page(fetcher: Any, url: str, token: str = "") -> LandingPage:
    """Fetch `url` (an http(s) page) and read its meta tags: `robots`, and `token` (our
    product token: `<meta name="cleanset" content="noai">`, as `googlebot` is Google's)."""
    # A longer page is read up to the cap (its meta tags are in its <head>), not refused:
    # refused as too large, it was "unavailable", its noai or reservation admitted.
    response = fetcher.get_text(url, max_bytes=MAX_PAGE_BYTES, kind=SIGNAL, cut=True)
    if isinstance(response, Rejection) and response.transient or \
            not isinstance(response, Rejection) and response.status in BUSY_STATUSES:
        why = (f"{response.reason.value}: {response.detail}"
               if isinstance(response, Rejection) else f"HTTP {response.status}, busy")
        detail = f"unreachable ({why}) at {url}"
        return LandingPage(detail, Rejection(Reason.TDMREP_UNREACHABLE,
                                             f"landing page: {detail}"))
    if isinstance(response, Rejection) or not response.ok:
        why = response.detail if isinstance(response, Rejection) else f"HTTP {response.status}"
        return LandingPage(f"unavailable ({why})")
    meta = landing_meta(response.text())
    reservations = meta.get("tdm-reservation", [])
    reservation = "1" if "1" in reservations else next(iter(reservations), None)
    if reservation == "1":
        policy = next(iter(meta.get("tdm-policy", [])), None)
        extra = f", tdm-policy {policy}" if policy else ""
        said = f'<meta name="tdm-reservation" content="1"> on the landing page {url}{extra}'
        return LandingPage(said, Rejection(Reason.OPTOUT_TDMREP, said))
    names = ["robots"] + ([token.lower()] if token and token.lower() != "robots" else [])
    for name in names:
        for robots in meta.get(name, []):  # every one counts, as a search engine reads them
            robots = robots.lower()
            hit = next((d for d in REFUSING_ROBOTS if d in _words(robots)), None)
            if hit is not None:
                said = (f'<meta name="{name}" content="{robots}"> ({hit}) on the landing '
                        f"page {url}")
                return LandingPage(said, Rejection(Reason.OPTOUT_X_ROBOTS_TAG, said))
    return LandingPage(f"tdm-reservation {reservation or 'absent'}")


def _words(text: str) -> set[str]:
    """The directives of a robots meta tag: separated by commas, semicolons or spaces, as
    X-Robots-Tag values are read (builder.optout.headers)."""
    return {w for w in re.split(r"[\s,;]+", text) if w}
