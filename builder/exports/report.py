"""`report.html`: one self-contained page about an output directory, with inline SVG charts.

No scripts, fonts or images from elsewhere: it opens offline in any browser and can be
attached to an email. Licence mix, sources, rejection reasons, images per creator (the top
N and the concentration curve), image sizes and formats.
"""

from __future__ import annotations

import errno
import html
from collections import Counter
from pathlib import Path

from builder.errors import UserError
from builder.exports.papers import Facts, atomic_write, gather_facts
from builder.ledger import Ledger, reading

TOP_CREATORS = 20
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { border-bottom: 4px solid #1f77b4; padding-bottom: .3em; }
section { margin: 2em 0; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
td.n { text-align: right; }
.cards { display: flex; gap: 1em; flex-wrap: wrap; }
.card { background: #eef4fa; border-left: 6px solid #1f77b4; padding: .8em 1.2em; }
.card b { display: block; font-size: 1.6em; }
"""


def write_report(out: Path, dest: Path | None = None) -> Path:
    """Write the report of output directory `out` to `dest` (a file, or a directory to hold
    report.html; default `out`/report.html) and return its path. `out` is only read."""
    ledger_path = out / "ledger.sqlite"
    if not ledger_path.exists():
        raise UserError(f"{out}: no ledger.sqlite here; is this a cleanset output directory? "
                        "Run `cleanset build` first.")
    path = _destination(out, dest)
    with reading(out, "report") as ledger:
        page = report_html(ledger, gather_facts(ledger))
    try:
        atomic_write(path, page)
    except OSError as exc:
        if not isinstance(exc, PermissionError) and exc.errno != errno.EROFS:
            raise
        fix = ("write it elsewhere with --out FILE, e.g. "
               f"`cleanset report {out} --out report.html`" if dest is None
               else "choose a FILE in a directory you can write")
        raise UserError(f"{path}: cannot be written ({exc.strerror}); {fix}.") from None
    return path


def _destination(out: Path, dest: Path | None) -> Path:
    if dest is None:
        return out / "report.html"
    if dest.is_dir():
        return dest / "report.html"
    if not dest.parent.is_dir():
        raise UserError(f"--out {dest}: the directory {dest.parent} does not exist; create it "
                        "or give a FILE in an existing directory.")
    return dest


def report_html(ledger: Ledger, facts: Facts) -> str:
    creators = Counter(dict(ledger.db.execute(
        "SELECT COALESCE(creator, '(unknown)'), COUNT(*) FROM samples GROUP BY 1")))
    formats = Counter(dict(ledger.db.execute("SELECT mime, COUNT(*) FROM samples GROUP BY 1")))
    sizes = _size_buckets([r[0] for r in ledger.db.execute(
        "SELECT MAX(width, height) FROM samples")])
    rejected = sum(facts.reasons.values())
    sections = [
        _cards(facts, rejected, len(creators)),
        _section("Licence mix", _bars(facts.licenses.most_common())),
        _section("Sources", _bars(facts.sources.most_common())),
        _section("Rejection reasons", _bars(sorted(facts.reasons.items(), key=lambda kv: -kv[1]))
                 if facts.reasons else "<p>Nothing was refused.</p>"),
        _section(f"Images per creator (top {min(TOP_CREATORS, len(creators))} of "
                 f"{len(creators)})",
                 _bars(creators.most_common(TOP_CREATORS))),
        _section("Creator concentration",
                 "<p>Share of all images held by the top k creators (a straight diagonal "
                 "would mean every creator contributed equally).</p>"
                 + _curve(sorted(creators.values(), reverse=True))),
        _section("Image sizes (longest side, px)", _bars(sizes)),
        _section("Formats", _bars(formats.most_common())),
        _rechecks(ledger),
    ]
    title = html.escape(f"{facts.name} — version {facts.version}")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{title}</title><style>{CSS}</style></head><body>"
            f"<h1>{title}</h1>" + "".join(sections) + "</body></html>\n")


def _cards(facts: Facts, rejected: int, creators: int) -> str:
    items = [("images", facts.samples), ("MB", f"{facts.total_bytes / 1e6:.1f}"),
             ("shards", len(facts.shards)), ("licences", len(facts.licenses)),
             ("creators", creators), ("candidates refused", rejected)]
    return '<section class="cards">' + "".join(
        f'<div class="card"><b>{html.escape(str(v))}</b>{html.escape(k)}</div>'
        for k, v in items) + "</section>"


def _rechecks(ledger: Ledger) -> str:
    """Every finished `cleanset recheck`: when, how many samples, what had drifted."""
    from builder.drift import Outcome
    from builder.recheck import describe_scope
    from builder.recheck_log import finished_rechecks

    rows = finished_rechecks(ledger.db)
    if not rows:
        return _section("Rechecks", "<p>Never rechecked against its sources "
                                    "(<code>cleanset recheck DIR</code>).</p>")
    last = rows[-1]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in (
        "recheck", "finished", "version", "scope", "samples", *(o.value for o in Outcome),
        "refused", "taken down in"))
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            r.recheck, r.finished_at, r.version, describe_scope(r.scope), r.total,
            *(r.counts.get(o.value, 0) for o in Outcome), r.refused, r.applied or "")) + "</tr>"
        for r in reversed(rows))
    summary = (f"<p>Last rechecked {html.escape(str(last.finished_at))}: {last.drifted} "
               f"drifted, {last.refused} would have been refused.</p>")
    return _section("Rechecks", f"{summary}<table><tr>{head}</tr>{body}</table>")


def _section(title: str, body: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>{body}</section>"


def _bars(items: list[tuple[str, int]], width: int = 900) -> str:
    """A horizontal bar chart as inline SVG, with the numbers also in a table for copying."""
    if not items:
        return "<p>None.</p>"
    label_w, row_h, bar_w = 320, 26, width - 320 - 80
    top = max(n for _, n in items) or 1
    total = sum(n for _, n in items) or 1
    rows = []
    for i, (label, n) in enumerate(items):
        y = i * row_h
        w = max(1, round(bar_w * n / top))
        rows.append(
            f'<text x="{label_w - 8}" y="{y + 17}" text-anchor="end" font-size="13">'
            f"{html.escape(_short(str(label)))}</text>"
            f'<rect x="{label_w}" y="{y + 4}" width="{w}" height="{row_h - 8}" '
            f'fill="{PALETTE[i % len(PALETTE)]}"><title>{html.escape(str(label))}: {n}</title>'
            f"</rect>"
            f'<text x="{label_w + w + 6}" y="{y + 17}" font-size="13">{n} '
            f"({100 * n / total:.1f}%)</text>")
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
           f'height="{len(items) * row_h}" role="img">{"".join(rows)}</svg>')
    table = "<table><tr><th>Value</th><th>Count</th></tr>" + "".join(
        f'<tr><td>{html.escape(str(label))}</td><td class="n">{n}</td></tr>'
        for label, n in items) + "</table>"
    return svg + f"<details><summary>numbers</summary>{table}</details>"


def _curve(counts: list[int], width: int = 600, height: int = 320) -> str:
    """Cumulative share of images against the number of creators, largest first."""
    if not counts:
        return "<p>None.</p>"
    pad, total = 40, sum(counts)
    inner_w, inner_h = width - 2 * pad, height - 2 * pad
    points, running = [(pad, height - pad)], 0
    for k, n in enumerate(counts, start=1):
        running += n
        points.append((pad + inner_w * k / len(counts), height - pad - inner_h * running / total))
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    top1 = 100 * counts[0] / total
    top10 = 100 * sum(counts[:10]) / total
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'role="img"><rect x="{pad}" y="{pad}" width="{inner_w}" height="{inner_h}" '
            'fill="#f7f7f7" stroke="#999"/>'
            f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{pad}" stroke="#bbb" '
            'stroke-dasharray="4 4"/>'
            f'<polyline points="{path}" fill="none" stroke="#d62728" stroke-width="3"/>'
            f'<text x="{pad}" y="{height - 12}" font-size="12">creators, most images first '
            f"({len(counts)})</text>"
            f'<text x="{pad}" y="{pad - 10}" font-size="12">cumulative share of images</text>'
            f"</svg><p>The top creator holds {top1:.1f}% of the images; the top 10 hold "
            f"{top10:.1f}%.</p>")


def _size_buckets(longest: list[int]) -> list[tuple[str, int]]:
    edges = (256, 512, 1024, 2048, 4096)
    counts = Counter()
    for side in longest:
        bucket = next((f"< {e}" for e in edges if side < e), f"≥ {edges[-1]}")
        counts[bucket] += 1
    order = [f"< {e}" for e in edges] + [f"≥ {edges[-1]}"]
    return [(b, counts[b]) for b in order if counts[b]]


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
