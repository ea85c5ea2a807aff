"""`ATTRIBUTION.md` and `attribution.csv`: every credit the dataset owes.

One line per sample whose licence requires attribution (title, creator, source link,
licence link), grouped by licence. Works that need no credit (CC0, public domain) are
counted but not listed, so the list stays the one a publisher must print.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from builder.display import md_link
from builder.exports.papers import atomic_write, not_text
from builder.ledger import Ledger
from builder.licensing.credit import plain_text

if TYPE_CHECKING:
    from builder.exports.papers import Facts

CSV_COLUMNS = ("key", "license", "license_url", "title", "creator", "creator_url",
               "source_url", "credit", "source_credit")
_KEY_IN_LINE = re.compile(r"`([0-9a-z_-]+)`\s*$")


@dataclass(frozen=True)
class Credit:
    key: str
    license: str
    license_name: str
    license_url: str | None
    title: str | None
    creator: str | None
    creator_url: str | None
    source_url: str | None
    credit: str
    # The credit the source itself gives (a licensor's requested attribution, a museum's
    # credit line): kept in provenance, and owed here too, not only the line made from it.
    source_credit: str | None = None


def credits_owed(ledger: Ledger) -> list[Credit]:
    """The samples whose licence asks for attribution, in key order."""
    out = []
    for row in ledger.iter_samples():
        prov = json.loads(row["provenance"])
        lic = prov.get("license") or {}
        if not _requires_attribution(row["license"], lic.get("attribution_required")):
            continue
        attr = prov.get("attribution") or {}
        source = prov.get("source") or {}
        out.append(Credit(
            key=row["key"], license=row["license"], license_name=lic.get("name") or row["license"],
            license_url=lic.get("url") or row["license_url"],
            title=attr.get("title") or row["title"], creator=attr.get("creator") or row["creator"],
            creator_url=attr.get("creator_url"),
            source_url=source.get("landing_url") or source.get("file_url"),
            credit=attr.get("text") or "",
            source_credit=source_credit(attr),
        ))
    return out


def source_credit(attr: dict[str, object]) -> str | None:
    """The source's own credit line, unless it only repeats the creator's name."""
    credit = attr.get("credit")
    if not isinstance(credit, str) or not credit.strip():
        return None
    creator = attr.get("creator")
    if isinstance(creator, str) and credit.strip().casefold() == creator.strip().casefold():
        return None
    return " ".join(credit.split())


def _requires_attribution(license_id: str, recorded: bool | None) -> bool:
    if recorded is not None:
        return bool(recorded)
    from builder.licensing import license_info

    info = license_info(license_id)
    return info is None or info.attribution_required  # unknown: credit it, to be safe


def write_attribution(ledger: Ledger, out: Path, facts: Facts) -> int:
    credits = credits_owed(ledger)
    atomic_write(out / "ATTRIBUTION.md", attribution_markdown(credits, facts))
    atomic_write(out / "attribution.csv", attribution_csv(credits))
    return len(credits)


def attribution_markdown(credits: list[Credit], facts: Facts) -> str:
    groups: dict[str, list[Credit]] = defaultdict(list)
    for c in credits:
        groups[c.license].append(c)
    lines = [
        f"# Attribution — {facts.name} (version {facts.version})", "",
        f"{len(credits)} of {facts.samples} samples are under licences that require "
        "attribution; each is credited below, grouped by licence. The others are public "
        "domain or dedicated to it and need no credit. The same list is in "
        "`attribution.csv`; each line ends with the sample's key in the shards.", "",
    ]
    for license_id in sorted(groups):
        group = groups[license_id]
        first = group[0]
        heading = md_link(first.license_name, first.license_url)
        lines += [f"## {heading} (`{license_id}`) — {len(group)} work(s)", ""]
        lines += [f"- {_md_line(c)} `{c.key}`" for c in group]
        lines.append("")
    return "\n".join(lines)


def _md_line(c: Credit) -> str:
    # Titles, names and URLs are the sources' text: md_link renders each as that text, and
    # links only http(s) URLs (a `javascript:` creator_url is shown, never followed).
    work = md_link(c.title or "Untitled", c.source_url)
    # A name of invisible characters alone (U+200B) was credited as an invisible "by ".
    creator = md_link(c.creator, c.creator_url) if plain_text(c.creator) else "unknown creator"
    line = f"{work} by {creator}, {md_link(c.license_name, c.license_url)}."
    if c.source_credit:
        line += f" Credit given by the source: {md_link(c.source_credit, None)}."
    return line


def attribution_csv(credits: list[Credit]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for c in credits:
        writer.writerow([csv_cell(v or "") for v in (
            c.key, c.license, c.license_url, c.title, c.creator, c.creator_url, c.source_url,
            c.credit, c.source_credit)])
    return buf.getvalue()


# A spreadsheet evaluates a cell starting with one of these as a formula (OWASP, "CSV
# Injection"): =HYPERLINK(...) in a creator's name would run when the CSV is opened. Keys,
# licence ids and http(s) URLs never start with one, so they stay exact.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(text: str) -> str:
    """`text` as attribution.csv holds it: after a single quote when it starts like a formula,
    or with a quote (so a reader removes exactly one leading quote to get the text back)."""
    return f"'{text}" if text.startswith((*FORMULA_START, "'")) else text


def listed_keys(markdown: str) -> set[str]:
    """The sample keys ATTRIBUTION.md credits (each line ends with one in backticks)."""
    keys = set()
    for line in markdown.splitlines():
        match = _KEY_IN_LINE.search(line) if line.startswith("- ") else None
        if match:
            keys.add(match.group(1))
    return keys


def check_attribution(out: Path, ledger: Ledger, facts: Facts,
                      samples: dict[str, tuple[str, str]]) -> list[str]:
    path = out / "ATTRIBUTION.md"
    if not path.exists():
        return ["ATTRIBUTION.md is missing"]
    owed = {c.key for c in credits_owed(ledger)}
    try:
        listed = listed_keys(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        problems = [not_text("ATTRIBUTION.md", exc)]
    else:
        problems = [f"ATTRIBUTION.md: no credit for {k}" for k in sorted(owed - listed)]
        problems += [f"ATTRIBUTION.md: credits {k}, which is not in the dataset"
                     for k in sorted(listed - set(samples))]
    csv_path = out / "attribution.csv"
    if not csv_path.exists():
        problems.append("attribution.csv is missing")
        return problems
    try:
        with csv_path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = reader.fieldnames or []
    except UnicodeDecodeError as exc:
        return [*problems, not_text("attribution.csv", exc)]
    except csv.Error as exc:  # a field past csv's size limit
        return [*problems, f"attribution.csv: not a CSV table ({exc}): written over"]
    if "key" not in columns and (rows or owed):
        return [*problems, "attribution.csv: no key column: written over"]
    csv_keys = {r["key"] for r in rows}
    if csv_keys != owed:
        problems.append(f"attribution.csv lists {len(csv_keys)} credit(s); "
                        f"{len(owed)} are owed")
    return problems
