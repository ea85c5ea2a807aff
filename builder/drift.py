"""What changed about a sample since it was built: one outcome per sample, and whether a
build today would refuse it.

    recorded sample + what its source says now + what its host says now  ->  Verdict

Outcomes, most serious first (a sample gets the first that applies; the detail names the
others too):

    deleted          the source says the item is gone, or its URL answers 404/410   refuses
    license_changed  the claims now decide differently under the build's policy     refuses when
                     (re-decided exactly as the licence gate would)                  no longer admitted
    optout           robots.txt / ai.txt / tdmrep.json (or a HEAD's headers) refuse  refuses
    content_changed  another SHA-1 or sha256, other validators or length, or a      never refuses
                     page (HTML, text) where the image was; a redirect is named
    unreachable      timeout, 5xx, DNS: nothing is known; not drift                 never refuses
    unchanged

`unreachable` never refuses: a network hiccup must not become an artist's opt-out or a
takedown. `content_changed` alone does not refuse either: the dataset holds the bytes that
were checked and licensed; the source merely offers a newer file now.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any

from builder.licensing import Policy, decide, load_catalogue, read_claims
from builder.optout.config import OptoutConfig
from builder.optout.consent import HostSignal
from builder.optout.denylist import Denylist
from builder.optout.headers import (
    check_tdm_header,
    check_usage_headers,
    check_x_robots_tag,
    tdm_header,
)
from builder.records import Evidence, Rejection
from builder.sources.base import GONE, UNREACHABLE, Item, Now

EMBEDDED_PREFIX = "xmp:"  # evidence the build read from the image itself (builder.optout)


class Outcome(StrEnum):
    UNCHANGED = "unchanged"
    LICENSE_CHANGED = "license_changed"
    DELETED = "deleted"
    CONTENT_CHANGED = "content_changed"
    OPTOUT = "optout"
    UNREACHABLE = "unreachable"


# Drift: the source or host changed something (unreachable is not drift: nothing is known).
DRIFT = frozenset({Outcome.LICENSE_CHANGED, Outcome.DELETED, Outcome.CONTENT_CHANGED,
                   Outcome.OPTOUT})


@dataclass(frozen=True)
class Recorded:
    """A sample as the ledger holds it."""

    item: Item
    source: str
    build: int
    license: str  # the SPDX id it was admitted under
    evidence: tuple[Evidence, ...]  # everything that licence was decided from
    creator: str | None = None  # as its attribution credits it
    pdq: str | None = None
    # Where the build's image bytes came from, when a redirect took it off the file URL (the
    # evidence archive's image record): an API source's recheck asks the API, not the URL.
    served_from: str | None = None


@dataclass(frozen=True)
class Verdict:
    key: str
    source: str
    outcome: Outcome
    refuse: bool  # a build today would refuse it
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "source": self.source, "outcome": self.outcome.value,
                "refuse": self.refuse, "detail": self.detail}


@dataclass(frozen=True)
class _Finding:
    outcome: Outcome
    refuse: bool
    detail: str

    @property
    def rank(self) -> int:
        """Refusals first (deleted, licence, opt-out), then the rest in the same order."""
        order = (Outcome.DELETED, Outcome.LICENSE_CHANGED, Outcome.OPTOUT,
                 Outcome.CONTENT_CHANGED, Outcome.UNREACHABLE)
        return (0 if self.refuse else len(order)) + order.index(self.outcome)


def judge(recorded: Recorded, now: Now, host: list[HostSignal], *, policy: Policy,
          optout: OptoutConfig, denylist: Denylist | None = None) -> Verdict:
    findings = _source_findings(recorded, now, policy)
    findings += _header_findings(recorded.item, now, optout)
    findings += _host_findings(host, now)
    findings += _denylist_findings(recorded, now, denylist, optout)
    key, source = recorded.item.key, recorded.source
    if not findings:
        return Verdict(key, source, Outcome.UNCHANGED, False, "")
    findings.sort(key=lambda f: f.rank)
    first, *others = findings
    detail = first.detail
    if others:
        detail += "; also " + "; ".join(f"{f.outcome.value}: {f.detail}" for f in others)
    return Verdict(key, source, first.outcome, any(f.refuse for f in findings), detail)


# -- what the source says -----------------------------------------------------------------
def _source_findings(recorded: Recorded, now: Now, policy: Policy) -> list[_Finding]:
    if now.state == GONE:
        return [_Finding(Outcome.DELETED, True, now.detail)]
    if now.state == UNREACHABLE:
        return [_Finding(Outcome.UNREACHABLE, False, now.detail)]
    found = []
    licence = _licence_finding(recorded, now.evidence, policy, whole=now.record_is_whole)
    if licence is not None:
        found.append(licence)
    content = _content_change(recorded.item, now)
    if content:
        found.append(_Finding(Outcome.CONTENT_CHANGED, False, content))
    return found


def _licence_finding(recorded: Recorded, evidence: tuple[Evidence, ...] | None,
                     policy: Policy, *, whole: bool) -> _Finding | None:
    """Re-decided as the build would: today's claims, plus what the image itself stated
    (embedded evidence may only confirm a licence, so it still takes part)."""
    if evidence is None:
        return None
    silent = [] if whole else _licence_fields_silent(recorded.evidence, evidence)
    if silent:
        # An API that answers without the fields it was asked for (a partial answer, a
        # field renamed) or with them blank says nothing of the licence: read as "no
        # licence", every sample was once license_changed, refused, and `--apply` took the
        # source down.
        return _Finding(Outcome.UNREACHABLE, False,
                        f"today's record of it gives no value for any of the licence fields "
                        f"the build read ({', '.join(silent)}): nothing is known of its "
                        f"licence")
    embedded = tuple(e for e in recorded.evidence if e.field.startswith(EMBEDDED_PREFIX))
    decision = decide(evidence + embedded, policy)
    claims = _claims_change(recorded.evidence, evidence)
    if isinstance(decision, Rejection):
        return _Finding(Outcome.LICENSE_CHANGED, True,
                        f"licence {recorded.license} -> refused ({decision.reason.value}: "
                        f"{decision.detail}){claims}")
    if decision.spdx != recorded.license:
        return _Finding(Outcome.LICENSE_CHANGED, False,
                        f"licence {recorded.license} -> {decision.spdx}, still admitted by "
                        f"policy {policy.name}{claims}")
    return None


def _licence_fields_silent(old: tuple[Evidence, ...], new: tuple[Evidence, ...]) -> list[str]:
    """The licence fields the build read, when today's record gives none of them a value:
    each left out or blank (`is_public_domain: ""`). A field with another value ("false", a
    licence the catalogue does not know) is a change, not this."""
    catalogue = load_catalogue()
    read = sorted({e.field for e in old if not e.field.startswith(EMBEDDED_PREFIX)
                   and not catalogue.field_spec(e.field).informational})
    stated = {e.field.lower() for e in new if e.value.strip()}
    return read if read and not any(field.lower() in stated for field in read) else []


def _claims_change(old: tuple[Evidence, ...], new: tuple[Evidence, ...]) -> str:
    """'; claims F 'a' -> 'b', ...' for the licence claims whose values differ."""
    before = {c.field: c.value for c in read_claims(old)}
    after = {c.field: c.value for c in read_claims(new)}
    changed = [f"{field} {before.get(field)!r} -> {after.get(field)!r}"
               for field in dict.fromkeys([*before, *after])
               if not field.startswith(EMBEDDED_PREFIX) and before.get(field) != after.get(field)]
    return f"; claims {', '.join(changed)}" if changed else ""


def _content_change(item: Item, now: Now) -> str:
    changes = []
    if now.sha1 and now.sha1.lower() != item.sha1:
        changes.append(f"the source states SHA-1 {now.sha1.lower()} (was {item.sha1}): "
                       "a new upload")
    if now.sha256 and now.sha256 != item.sha256:
        changes.append(f"the file's sha256 is now {now.sha256} (was {item.sha256})")
    if now.sha1 is None and now.file_url and item.file_url and now.file_url != item.file_url:
        changes.append(f"the source now offers {now.file_url} (was {item.file_url})")
    if now.etag and item.etag and _etag(now.etag) != _etag(item.etag):
        changes.append(f"ETag {item.etag} -> {now.etag}")
    if now.last_modified and item.last_modified and \
            _when(now.last_modified) != _when(item.last_modified):
        changes.append(f"Last-Modified {item.last_modified} -> {now.last_modified}")
    if now.length is not None and now.length != item.bytes and not _encoded(now.headers):
        changes.append(f"Content-Length {item.bytes} -> {now.length}")
    page = _page_type(now.headers)
    if page:
        changes.append(f"it now answers Content-Type {page}, a page, not an image")
    # A redirect alone is no change (the build may have followed the same one to a CDN);
    # beside a change it says where the file went, e.g. a login page.
    if changes and now.served_from:
        changes.append(f"the URL now redirects to {now.served_from}")
    return ", ".join(changes)


def _page_type(headers: tuple[tuple[str, str], ...]) -> str | None:
    """A Content-Type no image is served as (HTML, text, JSON): the URL answers a page now.
    application/octet-stream and the like are left alone: hosts serve images as those."""
    value = next((v for k, v in headers if k == "content-type"), "")
    mime = value.split(";")[0].strip().lower()
    if mime.startswith("text/") or mime in ("application/xhtml+xml", "application/json"):
        return mime
    return None


def _etag(value: str) -> str:
    # A proxy or a compressing server may weaken a tag (W/"x"); the file is the same.
    return value.strip().removeprefix("W/")


def _when(value: str) -> Any:
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return value.strip()


def _encoded(headers: tuple[tuple[str, str], ...]) -> bool:
    """A Content-Length of an encoded (compressed) body says nothing about the file's size."""
    return any(k == "content-encoding" and v.strip().lower() not in ("", "identity")
               for k, v in headers)


# -- what the denylists say -----------------------------------------------------------------
def _denylist_findings(recorded: Recorded, now: Now, denylist: Denylist | None,
                       optout: OptoutConfig) -> list[_Finding]:
    """The recipe's denylist (an opt-out registry's export, refreshed since the build) and
    the dataset's, read as a build's gate reads them (where the file URL redirects today,
    and where the build's bytes came from, too): a work listed since is refused."""
    if not denylist:
        return []
    item = recorded.item
    said = denylist.refusal(urls=(item.file_url, item.landing_url, now.served_from,
                                  recorded.served_from),
                            creator=recorded.creator,
                            sha256=item.sha256, pdq=recorded.pdq,
                            max_distance=optout.pdq_max_distance)
    return [] if said is None else [_Finding(Outcome.OPTOUT, True, f"denylist: {said}")]


# -- what the hosts say ---------------------------------------------------------------------
def _header_findings(item: Item, now: Now, optout: OptoutConfig) -> list[_Finding]:
    """A HEAD's X-Robots-Tag, Content-Usage / Content-Signal and tdm-reservation headers,
    read as the build reads the image response's."""
    if not now.headers or not item.file_url:
        return []
    trail: list[tuple[str, str]] = []
    url = item.file_url
    refusals: list[Rejection | None] = []
    if optout.x_robots_tag:
        refusals.append(check_x_robots_tag(now.headers, token=optout.product_token.lower(),
                                           noindex=optout.noindex_is_optout, url=url,
                                           trail=trail))
    if optout.content_usage:
        refusals.append(check_usage_headers(now.headers, url=url, trail=trail))
    if optout.tdmrep:
        refusals.append(check_tdm_header(tdm_header(now.headers), url=url, trail=trail))
    return [_Finding(Outcome.OPTOUT, True, r.detail) for r in refusals if r is not None]


def _host_findings(signals: list[HostSignal], now: Now) -> list[_Finding]:
    found = []
    header = tdm_header(now.headers).tdm_reservation if now.headers else None
    for signal in signals:
        if signal.transient:
            found.append(_Finding(Outcome.UNREACHABLE, False, f"{signal.signal}: {signal.said}"))
        elif signal.refused:
            if signal.signal == "tdmrep.json" and header is not None:
                continue  # a tdm-reservation header overrides the file, as in a build
            found.append(_Finding(Outcome.OPTOUT, True, f"{signal.signal}: {signal.said}"))
    return found
