"""The opt-out gate: every machine-readable "do not train" signal, checked and recorded.

Three stages, each where its signals can first be decided:

    before_fetch   denylist (URL, creator), robots.txt, ai.txt, tdmrep.json, landing page
    after_fetch    X-Robots-Tag, Content-Usage / Content-Signal, tdm-reservation header
    after_check    denylist (sha256, PDQ), embedded XMP, C2PA, embedded licence evidence

Each returns the record with its opt-out trail extended by one (signal, result) pair per
signal checked, or a Rejection whose detail names the signal, its value and where it was
found. Per-host files are fetched once per build (`HostFiles`). Counts for the build
summary are kept here, under a lock, because the stages run in worker threads.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from builder.optout import c2pa as c2pa_mod
from builder.optout.config import OptoutConfig
from builder.optout.denylist import Denylist
from builder.optout.embedded import AI_SOURCE_TYPES, scan
from builder.optout.headers import (
    check_tdm_header,
    check_usage_headers,
    check_x_robots_tag,
    tdm_header,
)
from builder.optout.hostfiles import HostFiles, origin
from builder.optout.landing import SIGNAL as LANDING
from builder.optout.landing import read_landing_page
from builder.optout.robots import parse_ai_txt, parse_robots
from builder.optout.tdmrep import RESERVED, WELL_KNOWN, parse_tdmrep
from builder.records import Checked, Evidence, Fetched, Licensed, Reason, Rejection
from builder.takedown_journal import DENYLIST

__all__ = ["OptoutConfig", "OptoutGate", "load_optout"]

LOCAL = "n/a: local file"
Trail = list[tuple[str, str]]


def load_optout(table: Any, *, file: Path, base: Path) -> tuple[OptoutConfig, Denylist]:
    """Validate `[optout]` and read its denylist: every mistake is a UserError (exit 2)."""
    from builder.config import from_table, resolve_path

    config = from_table(OptoutConfig, table, file=file, where="optout")
    denylist = Denylist()
    if config.denylist is not None:
        path = resolve_path(config.denylist, base=base, file=file, key="optout.denylist",
                            kind="file")
        denylist.load(path, required=True)
    return config, denylist


class OptoutGate:
    def __init__(self, config: OptoutConfig, *, fetcher: Any, denylist: Denylist,
                 policy: Any, c2pa_available: bool | None = None) -> None:
        self.config = config
        self.token = config.product_token.lower()
        self.denylist = denylist
        self.policy = policy
        self.files = HostFiles(fetcher)
        self.fetcher = fetcher
        self.c2pa = c2pa_mod.available() if c2pa_available is None else c2pa_available
        self._lock = threading.Lock()
        self.checked: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.unread: Counter[str] = Counter()  # signals that could not be read: no verdict

    @classmethod
    def from_recipe(cls, recipe: Any, *, fetcher: Any, out: Path, policy: Any) -> OptoutGate:
        config, denylist = load_optout(recipe.extra.get("optout", {}), file=recipe.file,
                                       base=recipe.base_dir)
        denylist.load(Path(out) / DENYLIST, required=False)  # takedowns into DIR
        return cls(config, fetcher=fetcher, denylist=denylist, policy=policy)

    # -- the three stages ---------------------------------------------------------------
    def before_fetch(self, licensed: Licensed) -> Licensed | Rejection:
        trail: Trail = []
        result = self._before_fetch(licensed, trail)
        return self._finish(result, trail, lambda t: replace(licensed, optout=licensed.optout + t))

    def after_fetch(self, fetched: Fetched) -> Fetched | Rejection:
        trail: Trail = []
        result = self._after_fetch(fetched, trail)
        return self._finish(result, trail, lambda t: replace(fetched, optout=fetched.optout + t))

    def after_check(self, checked: Checked) -> Checked | Rejection:
        trail: Trail = []
        result = self._after_check(checked, trail)
        if isinstance(result, Checked):
            checked = result
        return self._finish(result, trail, lambda t: replace(checked, optout=checked.optout + t))

    # -- before the download ------------------------------------------------------------
    def _before_fetch(self, licensed: Licensed, trail: Trail) -> tuple[str, Rejection] | None:
        cand = licensed.candidate
        hit = self.denylist.by_url(cand.url, cand.landing_url)
        if hit is not None:
            return "denylist", _denied(hit, f"URL {hit.value}")
        hit = self.denylist.by_creator(cand.creator)
        if hit is not None:
            return "denylist", _denied(hit, f"creator {cand.creator!r}")
        hit = self.denylist.by_site(cand.url, cand.landing_url)
        if hit is not None:
            return "denylist", _denied(hit, f"site {hit.value}")
        trail.append(("denylist", f"not listed ({len(self.denylist)} entries)"))
        base = origin(cand.url) if cand.local_path is None else None
        if base is None:
            for signal in self._host_signals():
                trail.append((signal, LOCAL))
            return None
        refusal = self._host_files(cand.url, base, trail)
        if refusal is not None:
            return refusal
        if self.config.landing_page:
            return self._landing_page(cand.landing_url, trail)
        return None

    def _host_files(self, url: str, base: str, trail: Trail, note: str = ""
                    ) -> tuple[str, Rejection] | None:
        """robots.txt, ai.txt and tdmrep.json of `url`'s host (`base`) for `url`; `note`
        follows what each said (a redirect's target: which URL it was)."""
        for name, enabled, parse, path in (
            ("robots.txt", self.config.robots_txt, parse_robots, "/robots.txt"),
            ("ai.txt", self.config.ai_txt, parse_ai_txt, "/ai.txt"),
        ):
            if not enabled:
                trail.append((name, "off in the recipe"))
                continue
            rules = self.files.get(base, path, parse)
            allowed, said = rules.verdict(url, self.token)
            if not allowed:
                return name, _noted(rules.unread, note) or Rejection(
                    Reason.OPTOUT_ROBOTS_TXT, f"{name}: {said}{note}")
            trail.append((name, said + note))
        if self.config.tdmrep:
            tdm = self.files.get(base, WELL_KNOWN, parse_tdmrep)
            if tdm.unread is not None:
                return "tdmrep.json", _noted(tdm.unread, note)
            trail.append(("tdmrep.json", tdm.verdict(url) + note))
        else:
            trail.append(("tdmrep.json", "off in the recipe"))
        return None

    # -- a redirect, before it is followed ----------------------------------------------
    def redirect_guard(self) -> RedirectGuard:
        """For one image's download: what `Fetcher.fetch` asks before each redirect."""
        return RedirectGuard(self)

    def at_redirect(self, source: str, target: str, trail: Trail
                     ) -> tuple[str, Rejection] | None:
        """The signals read before a download, for the URL a redirect leads to: its host
        may be another (a short link, a CDN in front of an artist's site) with its own
        robots.txt, and its path may be one the same host's robots.txt disallows."""
        hit = self.denylist.by_url(target)
        if hit is not None:
            return "denylist", _denied(hit, f"URL {hit.value} (a redirect from {source})")
        hit = self.denylist.by_site(target)
        if hit is not None:
            return "denylist", _denied(hit, f"site {hit.value} (a redirect from {source})")
        base = origin(target)
        if base is None:  # not http(s): the fetcher refuses it itself
            return None
        return self._host_files(target, base, trail, f" (redirect to {target})")

    def _host_signals(self) -> list[str]:
        return ["robots.txt", "ai.txt", "tdmrep.json"] + (
            [LANDING] if self.config.landing_page else [])

    def _landing_page(self, url: str | None, trail: Trail) -> tuple[str, Rejection] | None:
        if not url or origin(url) is None:
            trail.append((LANDING, "no landing page"))
            return None
        page = read_landing_page(self.fetcher, url, self.token)
        if page.refusal is not None:
            return LANDING, page.refusal
        trail.append((LANDING, page.said))
        return None

    # -- once the headers are known -----------------------------------------------------
    def _after_fetch(self, fetched: Fetched, trail: Trail) -> tuple[str, Rejection] | None:
        cand = fetched.licensed.candidate
        if cand.local_path is not None:
            for signal in ("x-robots-tag", "content-usage", "tdm-reservation"):
                trail.append((signal, LOCAL))
            return None
        headers = fetched.http.headers
        if self.config.x_robots_tag:
            refusal = check_x_robots_tag(headers, token=self.token, url=cand.url, trail=trail,
                                         noindex=self.config.noindex_is_optout)
            if refusal is not None:
                return "x-robots-tag", refusal
        else:
            trail.append(("x-robots-tag", "off in the recipe"))
        if self.config.content_usage:
            refusal = check_usage_headers(headers, url=cand.url, trail=trail)
            if refusal is not None:
                signal = "content-usage" if "Content-Usage" in refusal.detail else "content-signal"
                return signal, refusal
        if self.config.tdmrep:
            return self._tdm(fetched, trail)
        return None

    def _tdm(self, fetched: Fetched, trail: Trail) -> tuple[str, Rejection] | None:
        """The header decides when present; otherwise the tdmrep.json rule recorded before."""
        url = fetched.licensed.candidate.url
        signals = tdm_header(fetched.http.headers)
        refusal = check_tdm_header(signals, url=url, trail=trail)
        if refusal is not None:
            return "tdm-reservation", refusal
        # The candidate's host's file, or that of a host a redirect led to: either reserves.
        file_said = next((r for s, r in fetched.optout
                          if s == "tdmrep.json" and r.startswith(RESERVED)), "")
        if not file_said.startswith(RESERVED):
            return None
        if signals.tdm_reservation is not None:
            trail.append(("tdmrep.json", f"overridden by tdm-reservation: "
                                         f"{signals.tdm_reservation} header"))
            return None
        detail = f"tdmrep.json: tdm-reservation 1 by {file_said[len(RESERVED) + 2:]} for {url}"
        return "tdmrep.json", Rejection(Reason.OPTOUT_TDMREP, detail)

    # -- once the bytes are known -------------------------------------------------------
    def _after_check(self, checked: Checked, trail: Trail) -> Any:
        image = checked.image
        hit = self.denylist.by_sha256(image.sha256)
        if hit is not None:
            return "denylist", _denied(hit, f"sha256 {image.sha256}")
        near = self.denylist.by_pdq(image.pdq, self.config.pdq_max_distance)
        if near is not None:
            return "denylist", _denied(near[0], f"PDQ within {near[1]} bits of {near[0].value}")
        trail.append(("denylist-content", "not listed"))
        evidence: list[Evidence] = []
        if self.config.embedded:
            refusal = self._embedded(checked, trail, evidence)
            if refusal is not None:
                return refusal
        else:
            trail.append(("xmp", "off in the recipe"))
        refusal = self._c2pa(checked, trail)
        if refusal is not None:
            return refusal
        if evidence:
            return self._relicense(checked, evidence, trail)
        return checked

    def _embedded(self, checked: Checked, trail: Trail,
                  evidence: list[Evidence]) -> tuple[str, Rejection] | None:
        facts = scan(checked.fetched.data)
        where = ", ".join(facts.where) or "no XMP"
        for problem in facts.problems:
            trail.append(("xmp", problem))
        prohibited = facts.prohibited
        if prohibited is not None:
            return "plus:DataMining", Rejection(
                Reason.OPTOUT_EMBEDDED, f"plus:DataMining {prohibited!r} in {where}")
        ai = facts.ai_generated
        if ai is not None and self.config.reject_ai_generated:
            return "DigitalSourceType", Rejection(
                Reason.AI_GENERATED, f"Iptc4xmpExt:DigitalSourceType {ai!r} in {where}")
        trail.append(("plus:DataMining", ", ".join(facts.data_mining) or f"absent ({where})"))
        trail.append(("DigitalSourceType", ", ".join(facts.source_types) or "absent"))
        evidence.extend(Evidence(f, v) for f, v in dict.fromkeys(facts.licenses))
        return None

    def _c2pa(self, checked: Checked, trail: Trail) -> tuple[str, Rejection] | None:
        if not self.config.c2pa:
            trail.append(("c2pa", "off in the recipe"))
            return None
        data = checked.fetched.data
        if not self.c2pa:
            # Without the library a store's refusal is still found in its bytes: missing
            # the extra must not admit what the image plainly says.
            found = c2pa_mod.has_marker(data) and c2pa_mod.text_refusals(
                data, "a manifest store; c2pa-python is not installed")
            if found:
                return "c2pa", Rejection(Reason.OPTOUT_EMBEDDED,
                                         f"C2PA {found[0]} embedded in the image")
            trail.append(("c2pa", f"not checked: c2pa-python missing ({c2pa_mod.INSTALL_HINT})"))
            return None
        if not c2pa_mod.has_marker(data):
            trail.append(("c2pa", "absent"))
            return None
        facts = c2pa_mod.read(data, checked.image.mime)
        if facts.refusals:
            return "c2pa", Rejection(Reason.OPTOUT_EMBEDDED,
                                     f"C2PA {facts.refusals[0]} embedded in the image")
        ai = next((s for s in facts.source_types
                   if s.rstrip("/").rsplit("/", 1)[-1].lower() in AI_SOURCE_TYPES), None)
        if ai is not None and self.config.reject_ai_generated:
            return "c2pa", Rejection(Reason.AI_GENERATED,
                                     f"C2PA c2pa.actions digitalSourceType {ai!r} in the image")
        said = facts.problem or f"{facts.manifests} manifest(s), no training restriction"
        trail.append(("c2pa", said))
        return None

    def _relicense(self, checked: Checked, embedded: list[Evidence], trail: Trail) -> Any:
        """Embedded licence statements may only confirm the decision or reject: never loosen."""
        from builder.licensing import decide, normalise

        licensed = checked.fetched.licensed
        readable = [e for e in embedded if normalise(e.value) is not None]
        for e in embedded:
            if e not in readable:
                trail.append(("xmp-license", f"not a licence: {e.field}={e.value!r}"))
        if not readable:
            return checked
        shown = ", ".join(f"{e.field}={e.value!r}" for e in readable)
        decision = decide(licensed.candidate.evidence + tuple(readable), self.policy)
        if isinstance(decision, Rejection) or decision.spdx != licensed.license.spdx:
            why = decision.detail if isinstance(decision, Rejection) else decision.spdx
            return "xmp-license", Rejection(
                Reason.LICENSE_CONFLICT,
                f"embedded {shown} disagrees with the source's licence "
                f"{licensed.license.spdx}: {why}")
        trail.append(("xmp-license", f"agrees: {shown} -> {decision.spdx}"))
        fetched = replace(checked.fetched, licensed=replace(licensed, license=decision))
        return replace(checked, fetched=fetched)

    # -- bookkeeping --------------------------------------------------------------------
    def _finish(self, result: Any, trail: Trail, extend: Any) -> Any:
        self.count(result, trail)
        if isinstance(result, tuple):
            return result[1]
        return extend(tuple(trail))

    def count(self, result: Any, trail: Trail) -> None:
        with self._lock:
            for signal, said in trail:
                if not said.startswith(("n/a", "off in", "not checked")):
                    self.checked[signal] += 1
            if isinstance(result, tuple) and _is_verdict(result[1]):
                self.checked[result[0]] += 1
                self.rejected[result[0]] += 1
            elif isinstance(result, tuple):
                self.unread[result[0]] += 1

    def summary_lines(self) -> list[str]:
        with self._lock:
            checked, rejected, unread = dict(self.checked), dict(self.rejected), dict(self.unread)
        lines = []
        for signal in sorted(checked.keys() | unread.keys()):
            line = (f"  opt-out {signal}: checked {checked.get(signal, 0)}, "
                    f"rejected {rejected.get(signal, 0)}")
            if signal in unread:
                line += f", could not be read {unread[signal]} (not opt-outs)"
            lines.append(line)
        if self.config.c2pa and not self.c2pa:
            lines.append(f"  C2PA: not checked ({c2pa_mod.INSTALL_HINT})")
        elif not self.config.c2pa:
            lines.append("  C2PA: not checked (off in the recipe)")
        return lines


class RedirectGuard:
    """One image download's redirects, each target checked as the candidate's own URL was
    before the download (denylist, robots.txt, ai.txt, tdmrep.json), before it is asked;
    what they said joins the candidate's trail (`trail`), a refusal is the candidate's."""

    def __init__(self, gate: OptoutGate) -> None:
        self._gate = gate
        self.trail: Trail = []

    def __call__(self, source: str, target: str) -> Rejection | None:
        said: Trail = []
        result = self._gate.at_redirect(source, target, said)
        self._gate.count(result, said)
        self.trail += said
        return None if result is None else result[1]


def _noted(rejection: Rejection | None, note: str) -> Rejection | None:
    """`rejection` with `note` (which redirect's target it was about) after its detail."""
    if rejection is None or not note:
        return rejection
    return replace(rejection, detail=rejection.detail + note)


def _is_verdict(rejection: Rejection) -> bool:
    """A refusal the signal itself made, as opposed to the signal not being readable."""
    return not rejection.transient and rejection.reason != Reason.ADDRESS_REFUSED


def _denied(entry: Any, what: str) -> Rejection:
    return Rejection(Reason.DENYLISTED, entry.refusal(what))
