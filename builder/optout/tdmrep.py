"""W3C TDM Reservation Protocol: `/.well-known/tdmrep.json` and the landing page's meta tags.

The file is a JSON array of rules `{"location": pattern, "tdm-reservation": 0|1,
"tdm-policy": url}`; patterns are robots-style (`*` any run of characters, `$` end of
path) and the first rule whose pattern matches the resource's path wins. A `tdm-reservation`
response header overrides the file, so the file's verdict is only recorded before the
download and decided once the headers are known.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

from builder.optout.hostfiles import Answer
from builder.records import Reason, Rejection, recordable_json

WELL_KNOWN = "/.well-known/tdmrep.json"
RESERVED = "reserved"  # trail results that begin with this word carry a reservation


@dataclass(frozen=True)
class Rule:
    location: str
    reservation: int
    policy: str | None
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class TdmFile:
    """A parsed tdmrep.json (`rules`), or why there is none (`note`)."""

    url: str
    rules: tuple[Rule, ...]
    note: str
    # Kept from us by the network (a 5xx answer is "absent", as before): a reservation we
    # cannot see is not "no reservation", so the candidate waits for the next run.
    unread: Rejection | None = None

    def verdict(self, url: str) -> str:
        """The trail result for `url`: 'reserved: ...', 'not reserved: ...', or a note."""
        if not self.rules:
            return self.note
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        for rule in self.rules:
            if rule.pattern.match(path):
                where = f"location {rule.location!r} in {self.url}"
                policy = f", tdm-policy {rule.policy}" if rule.policy else ""
                if rule.reservation == 1:
                    return f"{RESERVED}: {where}{policy}"
                return f"not reserved: {where}"
        return f"no rule matches in {self.url}"


def location_pattern(location: str) -> re.Pattern[str]:
    """robots-style: a path prefix, `*` for any characters, a final `$` anchors the end."""
    anchored = location.endswith("$")
    body = location[:-1] if anchored else location
    if not body.startswith(("/", "*")):
        body = "/" + body
    regex = ".*".join(re.escape(piece) for piece in body.split("*"))
    return re.compile(regex + ("$" if anchored else ""))


def parse_tdmrep(answer: Answer) -> TdmFile:
    unread = answer.unread("tdmrep.json", Reason.TDMREP_UNREACHABLE)
    if unread is not None:
        return TdmFile(answer.url, (), unread.detail, unread)
    if not answer.found:
        why = answer.problem or f"HTTP {answer.status}"
        return TdmFile(answer.url, (), f"absent ({why})")
    text = answer.text or ""
    try:
        data: Any = recordable_json(json.loads(text))
    except ValueError as exc:
        try:  # a trailing comma, the commonest slip in a hand-written file
            data = recordable_json(json.loads(_TRAILING_COMMA.sub(r"\1", text)))
        except ValueError:
            return _unparseable(answer.url, text, exc)
    if isinstance(data, dict) and "location" in data:
        data = [data]  # one rule written without its array: its reservation still stands
    if not isinstance(data, list):
        return TdmFile(answer.url, (), f"unreadable (not a JSON array) at {answer.url}")
    rules = []
    for item in data:
        if not isinstance(item, dict):
            continue
        # Member names as a site wrote them (`TDM-Reservation`): the first matching rule
        # wins, so one misread as "0" hid the reservation of a later one.
        item = {str(k).strip().lower(): v for k, v in item.items()}
        location = item.get("location")
        if not isinstance(location, str) or "tdm-reservation" not in item:
            continue  # a rule that states no reservation decides nothing, never "0"
        try:
            reservation = int(item["tdm-reservation"])
        except (TypeError, ValueError):
            continue
        policy = item.get("tdm-policy")
        rules.append(Rule(location, reservation, policy if isinstance(policy, str) else None,
                          location_pattern(_path_of(location))))
    return TdmFile(answer.url, tuple(rules), f"no rules in {answer.url}")


_TRAILING_COMMA = re.compile(r",\s*([\]}])")
_RESERVES = re.compile(r"""["']?tdm-reservation["']?\s*:\s*["']?1\b""", re.IGNORECASE)


def _unparseable(url: str, text: str, exc: ValueError) -> TdmFile:
    """A file that is not JSON cannot say where it reserves, but it may plainly say that it
    does: then it is read as reserving every path (unparseable, it admitted them all)."""
    why = f"unreadable ({type(exc).__name__}) at {url}"
    if not _RESERVES.search(text):
        return TdmFile(url, (), why)
    where = "/ (the file is not valid JSON; its text says tdm-reservation 1)"
    return TdmFile(url, (Rule(where, 1, None, location_pattern("/")),), why)


def _path_of(location: str) -> str:
    """A location written as a whole URL (`https://host/img/*`; the file only speaks for its
    own origin) matches as its path: read as a path, it matched nothing."""
    if not location.lower().startswith(("http://", "https://")):
        return location
    parts = urlsplit(location)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


class _MetaReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.meta: dict[str, list[str]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "meta":
            return
        values = {k.lower(): (v or "") for k, v in attrs}
        name = values.get("name", "").strip().lower()
        if name:
            self.meta.setdefault(name, []).append(values.get("content", "").strip())


def landing_meta(html: str) -> dict[str, list[str]]:
    """Every `<meta name=... content=...>` of a page: each name (lower-cased) with all its
    contents in page order. A page may carry a name twice (an SEO plugin's `robots`, then
    an AI opt-out plugin's `noai`): read as the first only, the opt-out was admitted."""
    reader = _MetaReader()
    try:
        reader.feed(html)
        reader.close()
    except AssertionError:  # html.parser's reaction to some malformed markup
        pass
    return reader.meta
