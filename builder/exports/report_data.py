"""What report.html says, read from the ledger with a few aggregate queries.

Everything here is SQL over the ledger (JSON functions for what only the provenance holds), a
handful of passes over the samples and candidates tables, so a 1,000,000-sample dataset's
report takes seconds, not a Python loop over a million provenance records.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.licensing import license_info

EXAMPLES_PER_REASON = 5
TOP_CLUSTERS = 10
TOP_HOSTS = 20

# Refusal groups, in the order the report shows them. A reason not listed lands in "other".
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("licence", ("license_missing", "license_unrecognized", "license_not_allowed",
                 "license_conflict")),
    ("opt-out", ("optout_robots_txt", "optout_tdmrep", "optout_x_robots_tag",
                 "optout_embedded", "denylisted", "ai_generated")),
    ("fetch", ("http_error", "timeout", "too_large", "robots_unreachable", "address_refused")),
    ("image", ("not_image", "corrupt_image", "decompression_bomb", "too_small")),
    ("dedup", ("duplicate_exact", "duplicate_near", "eval_overlap")),
    ("policy caps", ("creator_cap",)),
)
# Host-level signals: a refusal's detail starts with the signal's name ("robots.txt: ...").
HOST_SIGNALS = ("robots.txt", "ai.txt", "tdmrep.json")

# The host of an http(s) URL, in SQL: what lies between "://" and the next "/".
_REST = "substr({col}, instr({col}, '://') + 3)"
_HOST = ("CASE WHEN instr({col}, '://') = 0 THEN NULL "
         f"WHEN instr({_REST}, '/') > 0 THEN substr({_REST}, 1, instr({_REST}, '/') - 1) "
         f"ELSE {_REST} END")


def host_sql(column: str) -> str:
    return _HOST.replace("{col}", column)


def transient_reasons() -> frozenset[str]:
    """Reasons a later run retries (network trouble, not a decision)."""
    from builder import records

    found = getattr(records, "TRANSIENT_REASONS", None)
    if found is not None:
        return frozenset(str(r) for r in found)
    return frozenset({"http_error", "timeout", "robots_unreachable"})


@dataclass
class Build:
    build: int
    started_at: str
    finished_at: str | None
    tool_version: str
    recipe_sha256: str
    recipe_path: str
    policy: dict[str, Any]


@dataclass
class ReportData:
    name: str
    version: str
    description: str
    out: str
    builds: list[Build]
    samples: int
    total_bytes: int
    retrieved_first: str | None
    retrieved_last: str | None
    licenses_by_source: dict[tuple[str, str], int]
    evidence_claims: Counter[int]  # number of licence claims behind a sample -> samples
    restricted: int  # samples with non-copyright restrictions (Commons `Restrictions`)
    restriction_examples: list[tuple[str, str]]
    reasons: dict[str, int]
    examples: dict[str, list[tuple[str, str]]]  # reason -> (url, detail)
    candidates: dict[str, int]
    signals: list[str]
    hosts_checked: int
    refused_by_signal: Counter[str]
    refusing_hosts: list[tuple[str, str, int]]  # (host, signal, candidates refused)
    creators: Counter[str]
    max_per_creator: int | None
    exact_duplicates: int
    near_duplicates: int
    clusters: list[dict[str, Any]]
    versions: list[dict[str, Any]]
    takedowns: list[dict[str, Any]]
    formats: Counter[str]
    longest_sides: Counter[str]
    licence_facts: dict[str, Any] = field(default_factory=dict)  # spdx -> LicenseInfo

    @property
    def licenses(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for (lic, _), n in self.licenses_by_source.items():
            counts[lic] += n
        return counts

    @property
    def sources(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for (_, src), n in self.licenses_by_source.items():
            counts[src] += n
        return counts

    @property
    def policy(self) -> dict[str, Any]:
        return self.builds[-1].policy if self.builds else {}


def gather(db: sqlite3.Connection, out: Path) -> ReportData:
    meta = dict(db.execute("SELECT key, value FROM meta"))
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    licenses_by_source = {(lic, src): n for lic, src, n in db.execute(
        "SELECT license, source, COUNT(*) FROM samples GROUP BY license, source")}
    data = ReportData(
        name=meta.get("dataset_name", "dataset"), version=meta.get("dataset_version", "0"),
        description=meta.get("dataset_description", ""), out=str(out),
        builds=_builds(db), samples=0, total_bytes=0, retrieved_first=None,
        retrieved_last=None, licenses_by_source=licenses_by_source,
        evidence_claims=Counter(), restricted=0, restriction_examples=[],
        reasons=dict(db.execute("SELECT reason, COUNT(*) FROM candidates WHERE status = "
                                "'rejected' GROUP BY reason")),
        examples=_examples(db),
        candidates=dict(db.execute("SELECT status, COUNT(*) FROM candidates GROUP BY status")),
        signals=_signals(db), hosts_checked=_hosts_checked(db),
        refused_by_signal=_refused_by_signal(db), refusing_hosts=_refusing_hosts(db),
        creators=Counter(dict(db.execute(
            "SELECT COALESCE(creator, '(unknown)'), COUNT(*) FROM samples GROUP BY 1"))),
        max_per_creator=int(meta["max_per_creator"]) if meta.get("max_per_creator") else None,
        exact_duplicates=0, near_duplicates=0, clusters=[],
        versions=_versions(db) if "versions" in tables else [],
        takedowns=_takedowns(out),
        formats=Counter(dict(db.execute("SELECT mime, COUNT(*) FROM samples GROUP BY 1"))),
        longest_sides=_size_buckets(db),
    )
    _sample_pass(db, data)
    if "duplicates" in tables:
        _duplicates(db, data)
    data.licence_facts = {lic: license_info(lic) for lic in data.licenses}
    return data


def _builds(db: sqlite3.Connection) -> list[Build]:
    return [Build(b, started, finished, tool, sha, path, json.loads(policy))
            for b, started, finished, tool, sha, path, policy in db.execute(
                "SELECT build, started_at, finished_at, tool_version, recipe_sha256, "
                "recipe_path, policy FROM builds ORDER BY build")]


def _sample_pass(db: sqlite3.Connection, data: ReportData) -> None:
    """One pass over the samples' provenance: sizes, claims behind each licence, retrieval
    dates and Commons restrictions."""
    for claims, n, size, first, last, restricted in db.execute(
            "SELECT json_array_length(provenance, '$.license.evidence'), COUNT(*), "
            "SUM(bytes), MIN(json_extract(provenance, '$.retrieved_at')), "
            "MAX(json_extract(provenance, '$.retrieved_at')), "
            "SUM(instr(provenance, '\"wikimedia:Restrictions\"') > 0) "
            "FROM samples GROUP BY 1"):
        data.samples += n
        data.total_bytes += size or 0
        data.evidence_claims[int(claims or 0)] += n
        data.restricted += restricted or 0
        if first is not None:
            data.retrieved_first = min(filter(None, (data.retrieved_first, first)))
            data.retrieved_last = max(filter(None, (data.retrieved_last, last)))
    if data.restricted:
        data.restriction_examples = [
            (key, str(value)) for key, value in db.execute(
                "SELECT s.key, json_extract(e.value, '$.value') FROM samples AS s, "
                "json_each(s.provenance, '$.extra') AS e "
                "WHERE instr(s.provenance, '\"wikimedia:Restrictions\"') > 0 "
                "AND json_extract(e.value, '$.name') = 'wikimedia:Restrictions' "
                "ORDER BY s.key LIMIT 5")]


def _examples(db: sqlite3.Connection) -> dict[str, list[tuple[str, str]]]:
    examples: dict[str, list[tuple[str, str]]] = {}
    for reason, url, detail in db.execute(
            "SELECT reason, url, detail FROM (SELECT reason, url, detail, ROW_NUMBER() OVER "
            "(PARTITION BY reason ORDER BY build, seq) AS n FROM candidates "
            "WHERE status = 'rejected') WHERE n <= ?", (EXAMPLES_PER_REASON,)):
        examples.setdefault(reason, []).append((url, detail or ""))
    return examples


def _signals(db: sqlite3.Connection) -> list[str]:
    """The signals checked: every source of every build checks the same ones, so one sample
    of each (build, source) says which."""
    return sorted({s for (s,) in db.execute(
        "SELECT DISTINCT json_extract(c.value, '$.signal') FROM "
        "(SELECT MIN(key) AS key FROM samples GROUP BY build, source) AS one "
        "JOIN samples USING (key), json_each(samples.provenance, '$.optout.checked') AS c")
        if s})


def _hosts_checked(db: sqlite3.Connection) -> int:
    """Hosts whose robots.txt, ai.txt and TDMRep were asked: every web host a candidate came
    from that got past the licence gate (local files have none)."""
    row = db.execute(
        f"SELECT COUNT(DISTINCT {host_sql('url')}) FROM candidates WHERE url LIKE 'http%' "
        "AND (reason IS NULL OR reason NOT LIKE 'license%')").fetchone()
    return int(row[0] or 0)


def _refused_by_signal(db: sqlite3.Connection) -> Counter[str]:
    counts: Counter[str] = Counter()
    for reason, signal, n in db.execute(
            "SELECT reason, CASE WHEN instr(detail, ':') > 0 THEN substr(detail, 1, "
            "instr(detail, ':') - 1) ELSE '' END AS signal, COUNT(*) FROM candidates "
            "WHERE status = 'rejected' AND (reason LIKE 'optout%' OR reason IN "
            "('denylisted', 'ai_generated')) GROUP BY 1, 2"):
        counts[signal if signal in HOST_SIGNALS else reason] += n
    return counts


def _refusing_hosts(db: sqlite3.Connection) -> list[tuple[str, str, int]]:
    names = ", ".join(f"'{s}'" for s in HOST_SIGNALS)
    return [(host, signal, n) for host, signal, n in db.execute(
        f"SELECT {host_sql('url')} AS host, substr(detail, 1, instr(detail, ':') - 1) AS "
        "signal, COUNT(*) FROM candidates WHERE status = 'rejected' AND reason IN "
        f"('optout_robots_txt', 'optout_tdmrep') AND signal IN ({names}) "
        f"GROUP BY 1, 2 ORDER BY 3 DESC, 1 LIMIT {TOP_HOSTS}")]


def _duplicates(db: sqlite3.Connection, data: ReportData) -> None:
    for exact, n in db.execute("SELECT exact, COUNT(*) FROM duplicates GROUP BY exact"):
        if exact:
            data.exact_duplicates = n
        else:
            data.near_duplicates = n
    for winner, n, licences, sources in db.execute(
            "SELECT winner, COUNT(*), GROUP_CONCAT(DISTINCT license), "
            "GROUP_CONCAT(DISTINCT source) FROM duplicates GROUP BY winner "
            "ORDER BY 2 DESC, winner LIMIT ?", (TOP_CLUSTERS,)):
        sample = db.execute("SELECT license, source, COALESCE(title, landing_url, file_url, '') "
                            "FROM samples WHERE key = ?", (winner,)).fetchone()
        kept_lic, kept_src, title = sample if sample else ("(removed)", "", "")
        data.clusters.append({
            "key": winner, "copies": n, "title": title,
            "licences": sorted({kept_lic, *(licences or "").split(",")} - {""}),
            "sources": sorted({kept_src, *(sources or "").split(",")} - {""}),
        })


def _versions(db: sqlite3.Connection) -> list[dict[str, Any]]:
    return [{"version": v, "created_at": at, "kind": kind, "added": added, "removed": removed,
             "note": note or ""}
            for v, at, kind, added, removed, note in db.execute(
                "SELECT version, created_at, kind, added, removed, note FROM versions "
                "ORDER BY version")]


def _takedowns(out: Path) -> list[dict[str, Any]]:
    path = out / "takedowns.jsonl"
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue  # a torn last line of an interrupted takedown; verify reports it
    return entries


def _size_buckets(db: sqlite3.Connection) -> Counter[str]:
    edges = (256, 512, 1024, 2048, 4096)
    case = " ".join(f"WHEN MAX(width, height) < {e} THEN '< {e}'" for e in edges)
    counts = Counter(dict(db.execute(
        f"SELECT CASE {case} ELSE '≥ {edges[-1]}' END, COUNT(*) FROM samples GROUP BY 1")))
    order = [f"< {e}" for e in edges] + [f"≥ {edges[-1]}"]
    return Counter({b: counts[b] for b in order if counts.get(b)})
