"""`report.html`: the licensing lead's page about an output directory.

One self-contained HTML file (no scripts, fonts or images from elsewhere: it opens offline in
any browser, prints, and can be attached to an email) answering a licensing review's questions
in order: what to sign (version, manifest sha256, date) and what is still open before signing
(report_open.py); what this is and under which policy; what it obliges (credit, share-alike,
restrictions); which licences from which sources, resting on what evidence; what was refused
and why (decisions apart from transient failures); whose consent signals were checked; how
concentrated it is; what duplicates were removed; its history of versions and takedowns.

Charts are HTML tables with proportional bars — labels wrap instead of being clipped, numbers
sit in their own column — and colours encode one thing only, the licence's kind, in the
Okabe-Ito palette (distinguishable with the common colour-vision deficiencies). The data comes
from builder/exports/report_data.py.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

from builder.display import visible
from builder.errors import UserError
from builder.exports.papers import atomic_write
from builder.exports.report_data import (
    GROUPS,
    NO_CREATOR,
    ReportData,
    gather,
    named_creators,
    transient_reasons,
)
from builder.identity import describe_tools, tool_version
from builder.ledger import Ledger, reading, require_dataset
from builder.output_dir import check_no_link_loop

TOP_CREATORS = 20
# The dataset version the page describes, so `verify` can tell a page left from an older
# version (before a takedown or a resumed build) from a current one.
VERSION_META = "cleanset-version"
_VERSION_TAG = re.compile(rf'<meta name="{VERSION_META}" content="([^"]*)">')
# Pages written before the tag existed still name their version in the title.
_TITLE_VERSION = re.compile(r"<title>.* — version ([^<\s]+)</title>")
# Okabe & Ito (2008): (kind of licence, colour). Neutral bars (counts that encode nothing
# else) use NEUTRAL.
KINDS = (
    ("public domain / CC0", "#009E73"),
    ("attribution (CC BY and alike)", "#0072B2"),
    ("share-alike (CC BY-SA and alike)", "#E69F00"),
    ("NonCommercial / NoDerivatives", "#D55E00"),
    ("permissive, no attribution", "#56B4E9"),
    ("not in the catalogue", "#999999"),
)
NEUTRAL = "#5b6b7a"
TRANSIENT_COLOUR = "#CC79A7"
NUMBER = ' class="n"'  # a right-aligned cell that never wraps
CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222;
       padding: 0 1em; line-height: 1.4; }
h1 { border-bottom: 4px solid #0072B2; padding-bottom: .3em; overflow-wrap: anywhere; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
section { margin: 1.5em 0; }
table { border-collapse: collapse; margin: .8em 0; max-width: 100%; }
td, th { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top;
         overflow-wrap: anywhere; }
th { background: #f3f5f7; }
td.n, th.n { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
table.chart { width: 100%; }
table.chart td.label { width: 34%; }
table.chart td.barcell { width: 46%; }
.bar { background: #eef1f4; height: 1em; }
.bar span { display: block; height: 100%; }
.swatch { display: inline-block; width: .9em; height: .9em; margin-right: .4em;
          vertical-align: -.1em; border: 1px solid #0003; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2em 1.2em; }
dl.facts dt { font-weight: 600; }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
.cards { display: flex; gap: 1em; flex-wrap: wrap; }
.card { background: #eef4fa; border-left: 6px solid #0072B2; padding: .6em 1em;
        min-width: 12em; max-width: 24em; }
.card b { display: block; font-size: 1.5em; }
.note { color: #555; }
.open { background: #fdf0e6; border-left: 6px solid #D55E00; padding: .6em 1em; }
.clear { background: #e6f5ef; border-left: 6px solid #009E73; padding: .6em 1em; }
.open li { margin: .3em 0; }
code { overflow-wrap: anywhere; }
div.scroll { overflow-x: auto; }
table.wide { font-size: .9em; }
table.wide td, table.wide th { overflow-wrap: normal; padding: .25em .4em; }
@media print {
  body { max-width: none; margin: 0; font-size: 10pt; }
  section, table { break-inside: avoid; }
  details { display: block; }
  div.scroll { overflow: visible; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""


def write_report(out: Path, dest: Path | None = None, *, lock_held: bool = False) -> Path:
    """Write the report of output directory `out` to `dest` (a file, or a directory to hold
    report.html; default `out`/report.html) and return its path. `out` is only read.
    `lock_held`: the caller (a takedown) already holds the directory's write lock, which a
    reader's lock would wait for."""
    require_dataset(out, hint="Run `cleanset build` first.")
    ledger_path = out / "ledger.sqlite"
    path = _destination(out, dest)
    if lock_held:
        ledger = Ledger(ledger_path, readonly=True)
        try:
            # The takedown holding the lock is the one whose journal is there: the page
            # is part of finishing it, not a sign that it is unfinished.
            data = gather(ledger.another_reader, out.resolve(), writer_finishing=True)
            _write(path, report_html(data), out, dest)
        finally:
            ledger.close()
    else:
        # Written before the shared lock is let go: a takedown or build that got the
        # directory in between would write its report first and have this older page
        # replace it.
        with reading(out, "report") as ledger:
            page = report_html(gather(ledger.another_reader, out.resolve()))
            _write(path, page, out, dest)
    return path


def _write(path: Path, page: str, out: Path, dest: Path | None) -> None:
    try:
        # A temporary name of its own: two reports may run at once (both only read)
        atomic_write(path, page, own=True)
    except OSError as exc:  # read-only, /proc, a full disk: the dataset itself is untouched
        fix = ("write it elsewhere with --out FILE, e.g. "
               f"`cleanset report {out} --out report.html`" if dest is None
               else "choose a FILE in a directory you can write")
        raise UserError(f"{path}: cannot be written ({exc.strerror}); {fix}.") from None


def _destination(out: Path, dest: Path | None) -> Path:
    if dest is None:
        return _replaceable(out / "report.html", "")
    check_no_link_loop(dest, "--out")
    path = dest / "report.html" if dest.is_dir() else dest
    if not path.parent.is_dir():
        what = "is not a directory" if path.parent.exists() else "does not exist"
        raise UserError(f"--out {dest}: {path.parent} {what}; give a FILE in an existing "
                        "directory.")
    inside = path.resolve().is_relative_to(out.resolve())
    if inside and path.resolve() != (out / "report.html").resolve():
        # Only the report's own place: anything else there is the dataset's (a page among
        # the shards would also be read by a `shards/*` glob).
        raise UserError(f"--out {dest}: is inside the dataset {out}, where only report.html "
                        f"belongs; drop --out to write {out / 'report.html'}, or give a "
                        "FILE outside it.")
    other = _dataset_holding(path.resolve().parent)
    if other is not None and other != out.resolve():
        # Another dataset's report.html would be taken for its own (and verify would
        # hold that dataset to a report of this one).
        raise UserError(f"--out {dest}: is inside another cleanset output directory "
                        f"({other}), where only its own report belongs; give a FILE outside "
                        "any output directory, or run `cleanset report` on that one.")
    return _replaceable(path, f"--out {dest}: ")


def _dataset_holding(directory: Path) -> Path | None:
    """The cleanset output directory `directory` is, or lies in (it holds ledger.sqlite)."""
    for candidate in (directory, *directory.parents):
        if (candidate / "ledger.sqlite").is_file():
            return candidate
    return None


def _replaceable(path: Path, named: str) -> Path:
    """`path`, unless it holds something other than a report this tool wrote: `--out` aimed
    at a user's own page (or any other file) must not replace it."""
    if not path.exists() and not path.is_symlink():
        return path
    if path.is_file() and shown_version(path) is not None:
        return path
    raise UserError(f"{named}{path} exists and is not a cleanset report, so it is left as it "
                    "is. Give --out a new FILE, e.g. report.html in a directory of your own.")


def report_html(data: ReportData) -> str:
    title = f"{data.name} — version {data.version}"
    sections = [_signoff(data), _header(data), _obligations(data), _licences(data), _refusals(data),
                _consent(data), _concentration(data), _duplicates(data), _history(data),
                _rechecks(data), _images(data)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta name="{VERSION_META}" content="{_e(data.version)}">'
            f'<meta name="generator" content="cleanset {_e(tool_version())}">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{_e(title)}</h1>" + "".join(sections) + "</body></html>\n")



def shown_version(path: Path) -> str | None:
    """The dataset version a report.html describes, or None when it does not say."""
    with path.open(encoding="utf-8", errors="replace") as f:
        head = f.read(4096)  # both tags are in <head>, before the charts
    match = _VERSION_TAG.search(head) or _TITLE_VERSION.search(head)
    return html.unescape(match.group(1)) if match else None


# -- sections -------------------------------------------------------------------------------
def _signoff(data: ReportData) -> str:
    """What a licensing lead signs (name, version, the manifest's sha256, the date) and what is
    still open, first on the page: a sign-off must not rest on a section further down."""
    from builder.exports.report_open import open_items

    manifest = next((p for p in data.papers if p.name == "manifest.parquet"), None)
    sha = (f"<code>{_e(manifest.actual)}</code>" if manifest and manifest.actual
           else "missing")
    rows = [("Dataset", f"{_e(data.name)}, version {_e(data.version)}"),
            ("manifest.parquet sha256", sha),
            ("Report written", f"{_e(data.generated_at)} by cleanset {_e(tool_version())}")]
    papers = "".join(
        f"<tr><td><code>{_e(p.name)}</code></td><td><code>{_e(p.actual or 'missing')}</code>"
        f"</td><td>{_paper_state(p)}</td></tr>" for p in data.papers)
    items = open_items(data)
    if items:
        status = (f'<div class="open"><b>{len(items)} open before sign-off</b><ol>'
                  + "".join(f"<li>{item}</li>" for item in items) + "</ol></div>")
    else:
        status = ('<div class="clear"><b>Nothing open found by this page.</b> It does not '
                  "re-hash the images: sign when <code>cleanset verify "
                  f"{_e(data.out)}</code> also exits 0.</div>")
    return ('<section id="signoff"><h2>Sign-off</h2><dl class="facts">'
            + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>" + status
            + "<details><summary>every paper's sha256</summary><table><tr><th>paper</th>"
            f"<th>sha256</th><th>as cleanset wrote it</th></tr>{papers}</table></details>"
            "</section>")


def _paper_state(paper: Any) -> str:
    if paper.actual is None:
        return "missing"
    if paper.recorded is None:
        return "not recorded (written by an older cleanset)"
    return "yes" if paper.actual == paper.recorded else "<b>no: changed since</b>"


def _header(data: ReportData) -> str:
    policy = data.policy
    admits = [*(f"the {f} family" for f in policy.get("families", [])),
              *(f"<code>{_e(i)}</code>" for i in policy.get("ids", []))]
    excluded = [f"<code>{_e(i)}</code>" for i in policy.get("exclude", [])]
    builds = "<br>".join(
        f"build {b.build}: {_e(b.started_at)} → {_e(b.finished_at or 'unfinished')} "
        f"({_e(describe_tools(b.tool_version, b.resumed_by))}, recipe "
        f"<code title=\"{_e(b.recipe_path)}\">"
        f"{_e(b.recipe_sha256[:16])}</code>)" for b in data.builds) or "none"
    timeframe = (f"{_e(data.retrieved_first)} → {_e(data.retrieved_last)}"
                 if data.retrieved_first else "no samples")
    rows = [
        ("Dataset", f"{_e(data.name)}, version {_e(data.version)}"),
        ("Builds", builds),
        ("Retrieved", timeframe),
        ("Policy", f"<b>{_e(policy.get('name', '?'))}</b>: {_e(policy.get('description', ''))}"
                   + (f"<br>admits {', '.join(admits)}" if admits else "")
                   + (f"; never {', '.join(excluded)}" if excluded else "")
                   + (f"; jurisdiction {_e(policy['jurisdiction'])}"
                      if policy.get("jurisdiction") else "")),
        ("Output", f"<code>{_e(data.out)}</code>"),
        ("Rechecked", _last_recheck(data)),
        ("Checked", "the files against this record: run <code>cleanset verify "
                    f"{_e(data.out)}</code> (exit 0 when every shard, paper and ledger row "
                    "agree)"),
    ]
    if data.description:
        rows.insert(1, ("About", _e(data.description)))
    cards = [("images", f"{data.samples:,}"), ("MB", f"{data.total_bytes / 1e6:,.1f}"),
             ("licences", f"{len(data.licenses):,}"), ("sources", f"{len(data.sources):,}"),
             ("creators", f"{named_creators(data.creators):,}"),
             ("candidates refused", f"{sum(data.reasons.values()):,}")]
    return ('<section id="summary"><dl class="facts">'
            + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"
            + '<div class="cards">' + "".join(
                f'<div class="card"><b>{v}</b>{_e(k)}</div>' for k, v in cards)
            + "</div></section>")


def _obligations(data: ReportData) -> str:
    def ids(pred: Any) -> list[str]:
        return sorted(lic for lic, info in data.licence_facts.items() if info and pred(info))

    def count(lics: list[str]) -> int:
        return sum(data.licenses[lic] for lic in lics)

    attribution = ids(lambda i: i.attribution_required)
    share_alike = ids(lambda i: i.share_alike)
    scoped = ids(lambda i: i.jurisdiction)
    # Named even at 0: "none under NonCommercial or NoDerivatives terms" is what a
    # commercial sign-off needs to read, not infer from a row that is absent.
    restricted_use = ids(lambda i: not i.commercial or not i.derivatives)
    unknown = sorted(lic for lic, info in data.licence_facts.items() if info is None)
    items = [
        ("require attribution", count(attribution), _codes(attribution),
         'credit lines for each in <a href="ATTRIBUTION.md">ATTRIBUTION.md</a>'),
        # A credit owed with no creator to name reads "by unknown creator" in ATTRIBUTION.md.
        ("require attribution but name no creator",
         sum(data.no_creator[lic] for lic in attribution),
         _codes([lic for lic in attribution if data.no_creator[lic]]),
         "their credit line says \u201cby unknown creator\u201d: find the author at the "
         "source (<code>landing_url</code>) before publishing credits"),
        ("are share-alike", count(share_alike), _codes(share_alike),
         "adaptations must carry the same licence"),
        ("are NonCommercial or NoDerivatives", count(restricted_use), _codes(restricted_use),
         "no commercial use (NC) or no adapted versions (ND); policy "
         f"<b>{_e(data.policy.get('name', '?'))}</b>"
         + (" admits neither" if not _policy_admits_nc_nd(data.policy) else
            " admits them: not for commercial training")),
        ("carry non-copyright restrictions", data.restricted,
         "; ".join(f"{_e(k)}: {_e(v)}" for k, v in data.restriction_examples[:3]),
         "e.g. personality rights or trademarks (Commons <code>Restrictions</code>)"),
        ("are public domain only in some jurisdictions", count(scoped), _codes(scoped),
         "admitted only because the policy names that jurisdiction"),
    ]
    if unknown:
        items.append(("have licences not in this cleanset's catalogue", count(unknown),
                      _codes(unknown), "the catalogue may have changed since the build"))
    rows = "".join(f'<tr><td class="n">{n:,}</td><td>{_e(what)}</td><td>{which or "—"}</td>'
                   f"<td>{note}</td></tr>" for what, n, which, note in items)
    return _section("obligations", "Obligations",
                    f"<p>Of {data.samples:,} images:</p><table><tr><th class=\"n\">images</th>"
                    "<th>that</th><th>licences / examples</th><th>what it means</th></tr>"
                    f"{rows}</table>")


def _policy_admits_nc_nd(policy: dict[str, Any]) -> bool:
    """Whether any catalogue entry with NC or ND terms passes `policy`."""
    from builder.licensing import Policy, load_catalogue, why_not

    if not policy:
        return False
    rules = Policy.from_json(policy)
    return any(why_not(info, rules) is None for info in load_catalogue().entries.values()
               if not info.commercial or not info.derivatives)


def _licences(data: ReportData) -> str:
    sources = [s for s, _ in data.sources.most_common()]
    licences = [lic for lic, _ in data.licenses.most_common()]
    total = data.samples or 1
    head = ("<tr><th>licence</th>" + "".join(f'<th class="n">{_e(s)}</th>' for s in sources)
            + '<th class="n">all</th><th class="n">share</th></tr>')
    body = "".join(
        f"<tr><td>{_swatch(data, lic)}<code>{_e(lic)}</code></td>"
        + "".join(f'<td class="n">{data.licenses_by_source.get((lic, s), 0):,}</td>'
                  for s in sources)
        + f'<td class="n">{data.licenses[lic]:,}</td>'
        f'<td class="n">{100 * data.licenses[lic] / total:.1f}%</td></tr>' for lic in licences)
    foot = ('<tr><th>all</th>' + "".join(f'<th class="n">{data.sources[s]:,}</th>'
                                         for s in sources)
            + f'<th class="n">{data.samples:,}</th><th class="n">100%</th></tr>')
    one = data.evidence_claims.get(1, 0)
    several = sum(n for claims, n in data.evidence_claims.items() if claims > 1)
    conflicts = data.reasons.get("license_conflict", 0)
    evidence = (f"<p>Licence evidence: {one:,} images rest on one licence claim, {several:,} on "
                f"several claims that agree; {conflicts:,} candidates were refused because their "
                "claims disagreed (<code>license_conflict</code>). Each image's claims are in "
                "its <code>.json</code> (<code>license.evidence</code>).</p>")
    chart = _chart([(lic, n, _colour(data, lic)) for lic, n in data.licenses.most_common()],
                   total, label_code=True)
    return _section("licences", "Licences × sources",
                    f"<table>{head}{body}{foot}</table>{_legend(data)}{chart}{evidence}")


def _refusals(data: ReportData) -> str:
    transient = transient_reasons()
    decided = {r: n for r, n in data.reasons.items() if r not in transient}
    retried = {r: n for r, n in data.reasons.items() if r in transient}
    grouped: dict[str, list[str]] = {}
    for reason in decided:
        group = next((g for g, members in GROUPS if reason in members), "other")
        grouped.setdefault(group, []).append(reason)
    order = [g for g, _ in GROUPS] + ["other"]
    parts = [f"<p>{sum(data.candidates.values()):,} candidates considered: "
             + ", ".join(f"{n:,} {_e(s)}" for s, n in sorted(data.candidates.items()))
             + ". Every one has a row in <code>candidates.parquet</code> with its reason and "
             "detail.</p>"
             # The examples give URLs: how to go from one to its whole record.
             "<p>To look one up: <code>cleanset evidence "
             f"{_e(data.out)} URL</code> prints a candidate's decision and the source's "
             "answers it rests on (an image in the dataset by its KEY too); "
             f"<code>cleanset lookup {_e(data.out)} IMAGE</code> finds an image by its "
             "pixels; <code>cleanset takedown "
             f"{_e(data.out)} --creator NAME --dry-run</code> lists a creator's.</p>"]
    if not data.reasons:
        parts.append("<p>Nothing was refused.</p>")
    for group in order:
        reasons = sorted(grouped.get(group, []), key=lambda r: -decided[r])
        if reasons:
            parts.append(f"<h3>{_e(group)} ({sum(decided[r] for r in reasons):,})</h3>"
                         + _reason_table(data, reasons, decided))
    if retried:
        parts.append("<h3>transient: not decisions, retried by the next run "
                     f"({sum(retried.values()):,})</h3>"
                     "<p class=\"note\">Network failures (timeouts, unreachable hosts or "
                     "robots.txt, server errors), and do-not-train checks that failed "
                     "unexpectedly (<code>optout_unchecked</code>: not admitted). They are not "
                     "opt-outs: running the same build command again retries them.</p>"
                     + _reason_table(data, sorted(retried, key=lambda r: -retried[r]), retried,
                                     colour=TRANSIENT_COLOUR))
    return _section("refusals", "Refusals", "".join(parts))


def _reason_table(data: ReportData, reasons: list[str], counts: dict[str, int],
                  colour: str = NEUTRAL) -> str:
    total = sum(data.candidates.values()) or 1
    rows = []
    for reason in reasons:
        examples = data.examples.get(reason, [])
        listed = "".join(f"<li><code>{_e(url)}</code> — {_e(detail)}</li>"
                         for url, detail in examples)
        more = counts[reason] - len(examples)
        tail = (f"<p class=\"note\">…and {more:,} more in <code>candidates.parquet</code> "
                f"(<code>reason == \"{_e(reason)}\"</code>).</p>" if more > 0 else "")
        rows.append(f"<tr><td><code>{_e(reason)}</code></td>{_bar_cells(counts[reason], total, colour)}"
                    f"<td><details><summary>examples</summary><ul>{listed}</ul>{tail}"
                    "</details></td></tr>")
    return ('<table class="chart"><tr><th>reason</th><th>of all candidates</th>'
            '<th class="n">candidates</th><th class="n">share</th><th>examples</th></tr>'
            + "".join(rows) + "</table>")


def _consent(data: ReportData) -> str:
    signals = sorted(set(data.signals) | set(data.refused_by_signal))
    rows = "".join(f"<tr><td><code>{_e(s)}</code></td><td class=\"n\">"
                   f"{data.refused_by_signal.get(s, 0):,}</td></tr>" for s in signals)
    hosts = "".join(f"<tr><td><code>{_e(h)}</code></td><td><code>{_e(s)}</code></td>"
                    f'<td class="n">{n:,}</td></tr>' for h, s, n in data.refusing_hosts)
    gone, still_in, lifted = data.recheck_optouts
    found = gone + still_in
    host_part = (f"<table><tr><th>host</th><th>signal</th><th class=\"n\">candidates refused"
                 f"</th></tr>{hosts}</table>" if hosts else
                 "<p>No host's robots.txt, ai.txt or TDMRep refused us"
                 + (" while the images were built" if found or lifted else "") + ".</p>")
    if found:
        # The counts above are the builds'; an opt-out found later is a recheck's finding.
        host_part += (f"<p>Since they were built, rechecks found <b>{found:,} images</b> that a "
                      f"do-not-train signal now refuses: {gone:,} taken down, "
                      f"{still_in:,} still in the dataset (see Rechecks)."
                      + (f" {lifted:,} more that one refused were found no longer refused by "
                         "a later recheck." if lifted else "") + "</p>")
    elif lifted:
        host_part += (f"<p>Since they were built, rechecks found <b>{lifted:,} images</b> that "
                      "a do-not-train signal refused; a later recheck found none of them "
                      "refused any more (see Rechecks).</p>")
    return _section("consent", "Consent (do-not-train signals)",
                    f"<p>{data.hosts_checked:,} web hosts had their robots.txt, ai.txt and "
                    "<code>/.well-known/tdmrep.json</code> read; every image response's headers "
                    "and every image's embedded metadata were checked. Per signal, the "
                    "candidates it refused:</p>"
                    f"<table><tr><th>signal</th><th class=\"n\">candidates refused</th></tr>"
                    f"{rows}</table><h3>Hosts that refused us</h3>{host_part}")


def _concentration(data: ReportData) -> str:
    cap = (f"at most {data.max_per_creator:,} images per creator (<code>[dataset] "
           "max_per_creator</code>)" if data.max_per_creator else "no per-creator cap")
    capped = data.reasons.get("creator_cap", 0)
    # The images naming no creator are not one creator: ranked among them they made the
    # heading read "Top 5 of 4 creators" and could be "the top creator" of the curve. They
    # are a row of their own below the ranking, and the shares stay of all images.
    named = [(c, n) for c, n in data.creators.most_common() if c != NO_CREATOR]
    anonymous = data.creators.get(NO_CREATOR, 0)
    counts = [n for _, n in named]
    total = data.samples or 1
    shown = min(TOP_CREATORS, len(named))
    rows = [(c, n, NEUTRAL) for c, n in named[:TOP_CREATORS]]
    if anonymous:
        rows.append((NO_CREATOR, anonymous, NEUTRAL))
    return _section(
        "concentration", "Concentration",
        f"<p>Cap in force: {cap}; {capped:,} candidates refused by it.</p>"
        + (f"<h3>Top {shown} of {named_creators(data.creators):,} creators"
           + (f" (and {anonymous:,} images that name none)" if anonymous else "")
           if named else f"<h3>No image names its creator ({anonymous:,} images)") + "</h3>"
        + _chart(rows, total)
        + "<h3>Sources</h3>"
        + _chart([(s, n, NEUTRAL) for s, n in data.sources.most_common()], total)
        + "<h3>Cumulative share</h3>"
        "<p>Share of all images held by the top k creators (the diagonal would mean every "
        "creator contributed equally).</p>" + _curve(counts, total))


def _duplicates(data: ReportData) -> str:
    overlap = data.reasons.get("eval_overlap", 0)
    rows = "".join(
        f"<tr><td><code>{_e(c['key'])}</code></td><td>{_e(_short(c['title'], 80))}</td>"
        f"<td class=\"n\">{c['copies']:,}</td><td>{_codes(c['licences'])}</td>"
        f"<td>{', '.join(_e(s) for s in c['sources'])}</td></tr>" for c in data.clusters)
    table = ("<table><tr><th>kept</th><th>work</th><th class=\"n\">copies refused</th>"
             f"<th>licences found</th><th>sources</th></tr>{rows}</table>" if rows else
             "<p>No duplicate was found.</p>")
    # A later build reads every source again: what the dataset holds comes back refused as
    # a duplicate of itself, and so does each copy already counted. Those are no copies.
    refused = sum(data.reasons.get(r, 0) for r in ("duplicate_exact", "duplicate_near"))
    again = refused - data.exact_duplicates - data.near_duplicates
    reread = (f" The other {again:,} <code>duplicate_exact</code> / <code>duplicate_near</code> "
              "refusals are items the dataset already holds, or copies counted here already, "
              "read again by a later build: no further copies." if again > 0 else "")
    return _section("duplicates", "Duplicates",
                    f"<p>{data.exact_duplicates:,} exact copies (same bytes) and "
                    f"{data.near_duplicates:,} near duplicates (PDQ / pHash) were refused; "
                    f"{overlap:,} candidates overlapped an evaluation set "
                    "(<code>eval_overlap</code>). The first copy in source order is kept; the "
                    "others are recorded as evidence of the same work under other licences "
                    "or sources (<code>manifest.parquet</code>: <code>also_found_as</code>)."
                    f"{reread}</p><h3>Largest clusters</h3>{table}")


def _history(data: ReportData) -> str:
    running = 0
    rows = []
    for v in data.versions:
        running += v["added"] - v["removed"]
        rows.append(f"<tr><td class=\"n\">{v['version']}</td><td>{_e(v['created_at'])}</td>"
                    f"<td>{_e(v['kind'])}</td><td class=\"n\">{v['added']:,}</td>"
                    f"<td class=\"n\">{v['removed']:,}</td><td class=\"n\">{running:,}</td>"
                    f"<td>{_e(v['note'])}</td></tr>")
    versions = ("<table><tr><th class=\"n\">version</th><th>date</th><th>kind</th>"
                "<th class=\"n\">added</th><th class=\"n\">removed</th><th class=\"n\">images"
                "</th><th>note</th></tr>" + "".join(rows) + "</table>") if rows else \
        "<p>No version recorded yet.</p>"
    # Named by id: the versions' notes, the rechecks' "taken down in" and `cleanset
    # evidence` all call a takedown by it, and this table was the one place that did not.
    takedowns = "".join(
        f"<tr><td>{_e(t.get('id', '—'))}</td><td>{_e(t.get('when', ''))}</td>"
        f"<td>{_selectors(t.get('selectors', {}))}</td>"
        f"<td>{_e(t.get('reason', ''))}</td><td class=\"n\">{len(t.get('keys', [])):,}</td>"
        f"<td>{_e(_first(t.get('shards_rewritten', [])) or '—')}</td>"
        f"<td>{_e(_first(t.get('shards_deleted', [])) or '—')}</td></tr>"
        for t in data.takedowns)
    takedown_part = ("<table><tr><th>takedown</th><th>date</th><th>selectors</th>"
                     "<th>reason</th>"
                     "<th class=\"n\">images</th><th>shards rewritten</th><th>shards deleted"
                     f"</th></tr>{takedowns}</table>" if takedowns else "<p>No takedown.</p>")
    return _section("history", "History",
                    f"<h3>Versions</h3>{versions}<h3>Takedowns</h3>{takedown_part}"
                    "<p class=\"note\">Every takedown is also in <code>takedowns.jsonl</code>; "
                    "<code>cleanset diff DIR --from N --to M</code> lists the keys.</p>"
                    + _kept_out(data))


def _kept_out(data: ReportData) -> str:
    """The sites and creators a takedown keeps out of every later build: an artist who asked
    before anything was taken has no takedown row above, only this."""
    if not data.kept_out:
        return ""
    rows = "".join(f"<tr><td>{_e(e['kind'])}</td><td>{_e(e['value'])}</td>"
                   f"<td>{_e(e['added_at'] or '—')}</td><td>{_e(e['reason'])}</td></tr>"
                   for e in data.kept_out)
    return ("<h3>Kept out of every later build</h3><table><tr><th>kind</th><th>site or "
            f"creator</th><th>since</th><th>reason</th></tr>{rows}</table>"
            "<p class=\"note\">From <code>denylist.jsonl</code>, which also holds every removed "
            "work's URLs and hashes.</p>")


def _last_recheck(data: ReportData) -> str:
    if not data.rechecks:
        return ("never: <code>cleanset recheck DIR</code> asks every source again whether each "
                "image is still admitted")
    from builder.recheck_log import describe_scope

    last = data.rechecks[-1]
    # Which cleanset decided its verdicts, as the Builds line names a build's; left out for
    # a recheck by a cleanset before rechecks.tool_version (the Rechecks section says "not
    # recorded").
    by = f" by {_e(last.ran_by)}" if last.ran_by else ""
    # Unreachable is not drift, but it is not an all-clear either: "0 drifted, 0 would now be
    # refused" alone read as one for a recheck that could not reach a host. How many it
    # asked about, too: the same words once summed up a --sample of 2 images of thousands.
    unreachable = last.counts.get("unreachable", 0)
    return (f"{_e(last.when)} (recheck {last.recheck}{by}: {last.total:,} samples of version "
            f"{_e(last.version)}, {_e(describe_scope(last.scope))}): {last.drifted:,} drifted, "
            f"{last.refused:,} would now be refused"
            + (f" (taken down in {_e(last.applied)})" if last.applied else "")
            + (f", {unreachable:,} could not be checked (unreachable)" if unreachable else ""))


def _rechecks(data: ReportData) -> str:
    """Every finished `cleanset recheck`: when, how many samples, what had drifted, then
    which cleanset decided each."""
    from builder.drift import Outcome
    from builder.recheck_log import describe_scope

    if not data.rechecks:
        return _section("rechecks", "Rechecks", "<p>Never rechecked against its sources "
                                                "(<code>cleanset recheck DIR</code>).</p>")
    # Thirteen columns: headings wrap between words (outcomes spelt with spaces), numbers
    # and dates never wrap, and a window too narrow scrolls the table rather than breaking
    # "license_changed" or a date mid-word.
    head = "".join(f"<th>{_e(h.replace('_', ' '))}</th>" for h in (
        "recheck", "finished", "version", "scope", "samples", *(o.value for o in Outcome),
        "refused", "taken down in"))
    body = "".join(
        "<tr>" + f"<td{NUMBER}>{r.recheck}</td><td>{_date_cell(r.finished_at)}</td>"
        + "".join(f"<td{cls}>{_e(v)}</td>" for cls, v in (
            (NUMBER, r.version),
            ("", describe_scope(r.scope)), (NUMBER, r.total),
            *((NUMBER, r.counts.get(o.value, 0)) for o in Outcome), (NUMBER, r.refused),
            ("", r.applied or ""))) + "</tr>"
        for r in reversed(data.rechecks))
    return _section("rechecks", "Rechecks",
                    f"<p>Last rechecked {_last_recheck(data)}.</p>"
                    f'<div class="scroll"><table class="wide"><tr>{head}</tr>{body}</table>'
                    f"</div>{_recheck_tools(data.rechecks)}")


def _recheck_tools(rechecks: list[Any]) -> str:
    """Which cleanset decided each recheck, newest first as in the table, one sentence per
    cleanset (or cleansets, for a recheck resumed by another): "Rechecks 3, 2: cleanset A."
    Under the table, not a column of it: a fourteenth column of 22-character versions made
    the table wider than a 1280 px page and broke its dates."""
    by: dict[str, list[int]] = {}
    for row in reversed(rechecks):
        by.setdefault(row.ran_by or "not recorded (an older cleanset)",
                      []).append(row.recheck)
    said = " ".join(f"{'Rechecks' if len(numbers) > 1 else 'Recheck'} "
                    f"{', '.join(map(str, numbers))}: {_e(who)}."
                    for who, numbers in by.items())
    return f'<p class="note">{said}</p>'


def _date_cell(when: str | None) -> str:
    """A ledger date that may wrap between its day and its time, and nowhere else."""
    day, t, time_of_day = (when or "").partition("T")
    return _e(day) + (f"<wbr>{_e(t + time_of_day)}" if t else "")


def _images(data: ReportData) -> str:
    total = data.samples or 1
    return _section("images", "Image sizes and formats",
                    "<h3>Longest side (px)</h3>"
                    + _chart([(b, n, NEUTRAL) for b, n in data.longest_sides.items()], total)
                    + "<h3>Formats</h3>"
                    + _chart([(f, n, NEUTRAL) for f, n in data.formats.most_common()], total))


# -- pieces ---------------------------------------------------------------------------------
def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>{body}</section>'


def _chart(items: list[tuple[str, int, str]], total: int, *, label_code: bool = False) -> str:
    """Proportional bars as table rows: the label wraps, the numbers have their own columns."""
    if not items:
        return "<p>None.</p>"
    top = max(n for _, n, _ in items) or 1
    rows = []
    for label, n, colour in items:
        text = f"<code>{_e(label)}</code>" if label_code else _e(label)
        rows.append(f'<tr><td class="label">{text}</td>'
                    + _bar_cells(n, total, colour, top=top) + "</tr>")
    return ('<table class="chart"><tr><th>value</th><th></th><th class="n">images</th>'
            '<th class="n">share</th></tr>' + "".join(rows) + "</table>")


def _bar_cells(n: int, total: int, colour: str, *, top: int | None = None) -> str:
    width = 100 * n / (top or total or 1)
    return (f'<td class="barcell"><div class="bar"><span style="width:{width:.2f}%;'
            f'background:{colour}"></span></div></td><td class="n">{n:,}</td>'
            f'<td class="n">{100 * n / (total or 1):.1f}%</td>')


def _kind(info: Any) -> int:
    if info is None:
        return 5
    if info.family in ("public-domain", "no-known-copyright") or info.id == "CC0-1.0":
        return 0
    if not info.commercial or not info.derivatives:
        return 3
    if info.share_alike:
        return 2
    return 1 if info.attribution_required else 4


def _colour(data: ReportData, lic: str) -> str:
    return KINDS[_kind(data.licence_facts.get(lic))][1]


def _swatch(data: ReportData, lic: str) -> str:
    kind, colour = KINDS[_kind(data.licence_facts.get(lic))]
    return f'<span class="swatch" style="background:{colour}" title="{_e(kind)}"></span>'


def _legend(data: ReportData) -> str:
    present = sorted({_kind(data.licence_facts.get(lic)) for lic in data.licenses})
    return "<p>" + " &nbsp; ".join(
        f'<span class="swatch" style="background:{KINDS[k][1]}"></span>{_e(KINDS[k][0])}'
        for k in present) + "</p>"


def _curve(counts: list[int], total: int, width: int = 600, height: int = 320) -> str:
    """Cumulative share of all `total` images against the named creators, largest first (at
    most 500 points); images naming no creator are in no creator's share."""
    if not counts:
        return "<p>None.</p>"
    pad = 40
    inner_w, inner_h = width - 2 * pad, height - 2 * pad
    step = max(1, len(counts) // 500)
    points, running = [(pad, height - pad)], 0
    for k, n in enumerate(counts, start=1):
        running += n
        if k % step == 0 or k == len(counts):
            points.append((pad + inner_w * k / len(counts),
                           height - pad - inner_h * running / total))
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    top1 = 100 * counts[0] / total
    top = min(10, len(counts))
    topk = 100 * sum(counts[:top]) / total
    top_text = f"the top {top}" if top < len(counts) else f"all {len(counts):,}"
    unnamed = 100 * (total - sum(counts)) / total
    # Equal contribution ends where the named creators' share does, not at 100%.
    end_y = height - pad - inner_h * sum(counts) / total
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" role="img" style="max-width:100%;height:auto">'
            f'<rect x="{pad}" y="{pad}" width="{inner_w}" height="{inner_h}" fill="#f7f7f7" '
            'stroke="#999"/>'
            f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{end_y:.1f}" '
            'stroke="#bbb" '
            'stroke-dasharray="4 4"/>'
            f'<polyline points="{path}" fill="none" stroke="#0072B2" stroke-width="3"/>'
            f'<text x="{pad}" y="{height - 12}" font-size="12">creators, most images first '
            f"({len(counts):,})</text>"
            f'<text x="{pad}" y="{pad - 10}" font-size="12">cumulative share of images</text>'
            f"</svg><p>The top creator holds {top1:.1f}% of the images; {top_text} hold "
            f"{topk:.1f}%"
            + (f"; {unnamed:.1f}% name no creator" if total > sum(counts) else "") + ".</p>")


# Values shown per takedown cell: a recheck --apply names every key it removes, and a page
# listing 50,000 keys is no summary (takedowns.jsonl and `cleanset diff` have them all).
LISTED_PER_TAKEDOWN = 10


def _first(values: list[Any]) -> str:
    shown = ", ".join(map(str, values[:LISTED_PER_TAKEDOWN]))
    more = len(values) - LISTED_PER_TAKEDOWN
    return shown + (f" …and {more:,} more" if more > 0 else "")


def _selectors(selectors: dict[str, Any]) -> str:
    parts = [f"{_e(kind)} {_e(_first(values))}" for kind, values in selectors.items() if values]
    return "; ".join(parts) or "—"


def _codes(values: list[str]) -> str:
    return ", ".join(f"<code>{_e(v)}</code>" for v in values)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _e(value: Any) -> str:
    # Every string on the page goes through here, sources' text included: a control or
    # bidi-override character is shown as its escape, not rendered (visible).
    return html.escape(visible(str(value)))

