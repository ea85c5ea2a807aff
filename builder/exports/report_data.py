"""What report.html says, read from the ledger with a few aggregate queries.

Everything here is SQL over the ledger (JSON functions for what only the provenance holds), a
handful of passes over the samples and candidates tables, so a 1,000,000-sample dataset's
report takes seconds, not a Python loop over a million provenance records.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.ledger import build_tools
from builder.licensing import license_info
from builder.takedown_journal import DENYLIST, read_jsonl

EXAMPLES_PER_REASON = 5
TOP_CLUSTERS = 10
TOP_HOSTS = 20

# Refusal groups, in the order the report shows them. A reason not listed lands in "other".
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("licence", ("license_missing", "license_unrecognized", "license_not_allowed",
                 "license_conflict")),
    ("opt-out", ("optout_robots_txt", "optout_tdmrep", "optout_x_robots_tag",
                 "optout_embedded", "denylisted", "ai_generated")),
    ("fetch", ("http_error", "address_refused", "too_large")),
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
    from builder.records import TRANSIENT_REASONS

    return frozenset(str(r) for r in TRANSIENT_REASONS)


# The images that name no creator, as one bar of the creators chart.
NO_CREATOR = "(no creator named)"

@dataclass
class Build:
    build: int
    started_at: str
    finished_at: str | None
    tool_version: str
    recipe_sha256: str
    recipe_path: str
    policy: dict[str, Any]
    exhausted: bool = True  # every source read to its end (False: --limit, or interrupted)
    resumed_by: tuple[str, ...] = ()  # other cleansets that went on with it, in order


@dataclass(frozen=True)
class Paper:
    """A paper's sha256 as cleanset recorded it when it wrote it, and as the file is now."""

    name: str
    recorded: str | None
    actual: str | None  # None: the file is missing


@dataclass(frozen=True)
class RecheckFinding:
    """A sample still in the dataset that the last recheck would refuse or could not check."""

    key: str
    outcome: str
    refuse: bool
    detail: str
    recheck: int | None = None  # an earlier recheck's, the last one not having asked again


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
    licenses_by_source: Counter[tuple[str, str]]
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
    first_keys: dict[tuple[int, str], str] = field(default_factory=dict)  # (build, source)
    rechecks: list[Any] = field(default_factory=list)  # finished `cleanset recheck`s, oldest first
    # What is still open before a sign-off (report_open.py turns these into sentences).
    generated_at: str = ""
    pending_takedown: str | None = None  # the id in an interrupted takedown's journal
    pending_record: dict[str, Any] = field(default_factory=dict)  # its takedowns.jsonl line
    licences_by_build: Counter[tuple[int, str]] = field(default_factory=Counter)
    recipe_claim_only: int = 0  # samples whose only licence claim is the recipe's own
    no_creator: Counter[str] = field(default_factory=Counter)  # licence -> samples, no creator
    papers: list[Paper] = field(default_factory=list)
    # sites and creators the dataset's denylist keeps out of every later build (takedowns)
    kept_out: list[dict[str, str]] = field(default_factory=list)
    running_recheck: Any = None  # a recheck stopped before it judged every sample
    # Of the last recheck, samples still in the dataset: would be refused (True) or could
    # not be checked (False) -> how many; and the first few of each.
    recheck_counts: dict[bool, int] = field(default_factory=dict)
    recheck_open: list[RecheckFinding] = field(default_factory=list)
    added_since_recheck: int = 0  # samples later builds added after the last recheck
    # The last recheck was run with --apply and stopped before its takedown: the same
    # command takes its refusals down without asking again.
    apply_owed: bool = False
    recheck_max_age: int = 90  # days: `[recheck] max_age_days` of the latest build's recipe
    # Samples a recheck found a do-not-train signal refuses (any recheck): taken down since,
    # still in and still refused, and still in but found no longer refused by the last
    # recheck to ask about them. The Consent section's build-time counts miss them.
    recheck_optouts: tuple[int, int, int] = (0, 0, 0)
    # The same of the unfinished recheck, for what it has judged so far.
    running_counts: dict[bool, int] = field(default_factory=dict)
    running_open: list[RecheckFinding] = field(default_factory=list)
    # Samples still in the dataset that an earlier recheck would refuse and that no recheck
    # since asked about (the later ones covered part of the dataset): how many, the first few.
    earlier_refused: int = 0
    earlier_open: list[RecheckFinding] = field(default_factory=list)

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


def gather(connect: Callable[[], sqlite3.Connection], out: Path, *,
           writer_finishing: bool = False) -> ReportData:
    """Everything the report shows. `connect` opens a new connection to the ledger: the two
    scans of the samples table (the bulk of the work) run in parallel threads, each with its
    own connection (SQLite releases the GIL while it works). `writer_finishing`: the caller
    is the takedown (or build) that holds the directory and is writing its papers, so a
    takedown journal there is its own, finished right after, not an interrupted one."""
    db = connect()
    try:
        with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
            parts = _rowid_ranges(db, os.cpu_count() or 1)
            scans = [pool.submit(_scan_samples, connect, lo, hi) for lo, hi in parts]
            creators = pool.submit(_creators, connect)
            data = _gather_rest(db, out)
            if writer_finishing:
                data.pending_takedown = None
            for scan in scans:
                _merge_scan(data, scan.result())
            data.creators = creators.result()
        data.signals = _signals(db, data.first_keys)
        if data.restricted:
            data.restriction_examples = _restriction_examples(db)
        data.longest_sides = Counter({b: data.longest_sides[b] for b in SIZE_ORDER
                                      if data.longest_sides.get(b)})
    finally:
        db.close()
    data.licence_facts = {lic: license_info(lic) for lic in data.licenses}
    return data


def _gather_rest(db: sqlite3.Connection, out: Path) -> ReportData:
    meta = dict(db.execute("SELECT key, value FROM meta"))
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    data = ReportData(
        name=meta.get("dataset_name", "dataset"), version=meta.get("dataset_version", "0"),
        description=meta.get("dataset_description", ""), out=str(out),
        builds=_builds(db), samples=0, total_bytes=0, retrieved_first=None,
        retrieved_last=None, licenses_by_source=Counter(),
        evidence_claims=Counter(), restricted=0, restriction_examples=[],
        reasons=dict(db.execute("SELECT reason, COUNT(*) FROM candidates WHERE status = "
                                "'rejected' GROUP BY reason")),
        examples=_examples(db),
        candidates=dict(db.execute("SELECT status, COUNT(*) FROM candidates GROUP BY status")),
        signals=[], hosts_checked=_hosts_checked(db),
        refused_by_signal=_refused_by_signal(db), refusing_hosts=_refusing_hosts(db),
        creators=Counter(),
        max_per_creator=int(meta["max_per_creator"]) if meta.get("max_per_creator") else None,
        exact_duplicates=0, near_duplicates=0, clusters=[],
        versions=_versions(db) if "versions" in tables else [],
        takedowns=_takedowns(out), formats=Counter(), longest_sides=Counter(),
    )
    data.kept_out = _kept_out(out)
    if "duplicates" in tables:
        _duplicates(db, data)
    from builder.recheck_log import recheck_config

    data.recheck_max_age = recheck_config(db).max_age_days
    if "rechecks" in tables:
        from builder.recheck_log import apply_asked, finished_rechecks, unfinished

        data.rechecks = list(finished_rechecks(db))
        data.running_recheck = unfinished(db)
        if data.running_recheck is not None:
            # Its verdicts so far are committed chunk by chunk: a refusal it has already
            # found is as open as one a finished recheck found.
            data.running_counts, data.running_open = _recheck_open(
                db, data.running_recheck.recheck)
        data.recheck_optouts = _recheck_optouts(db)
        data.earlier_refused, data.earlier_open = _earlier_open(
            db, data.rechecks[-1] if data.rechecks else None, data.running_recheck)
        if data.rechecks:
            last = data.rechecks[-1]
            data.recheck_counts, data.recheck_open = _recheck_open(db, last.recheck)
            data.apply_owed = last.applied is None and apply_asked(db, last.recheck)
            if "versions" in tables:
                data.added_since_recheck = int(db.execute(
                    "SELECT COALESCE(SUM(added), 0) FROM versions WHERE kind = 'build' AND "
                    "version > ?", (last.version,)).fetchone()[0])
    from builder import clock
    from builder.takedown_journal import pending_takedown, pending_takedown_record

    data.generated_at = clock.now_iso()
    data.pending_takedown = pending_takedown(out)
    if data.pending_takedown:
        record = pending_takedown_record(out)
        data.pending_record = record if _is_takedown_record(record) else {}
    data.papers = _papers(out, meta)
    return data


FINDINGS_SHOWN = 10  # of each kind (would be refused, unreachable); the rest are counted


def _recheck_open(db: sqlite3.Connection, recheck: int
                  ) -> tuple[dict[bool, int], list[RecheckFinding]]:
    """The samples the recheck would refuse, and those it could not check, that are still
    in the dataset (a takedown since may have removed some): how many of each, and the
    first few by key."""
    open_rows = ("FROM recheck_results AS r JOIN samples AS s ON s.key = r.key "
                 "WHERE r.recheck = ? AND r.refuse = ? AND (r.refuse = 1 OR r.outcome = "
                 "'unreachable')")
    counts, shown = {}, []
    for refuse in (True, False):
        counts[refuse] = int(db.execute(f"SELECT COUNT(*) {open_rows}",
                                        (recheck, int(refuse))).fetchone()[0])
        shown += [RecheckFinding(key, outcome, refuse, detail) for key, outcome, detail in
                  db.execute(f"SELECT r.key, r.outcome, r.detail {open_rows} ORDER BY r.key "
                             "LIMIT ?", (recheck, int(refuse), FINDINGS_SHOWN))]
    return counts, shown


def _recheck_optouts(db: sqlite3.Connection) -> tuple[int, int, int]:
    """Images rechecks found a do-not-train signal refusing: (taken down, still in and still
    refused, still in and found no longer refused by the last recheck to ask about them).
    A host that relented by the next recheck was once counted as refusing "now"."""
    from builder.recheck_log import judging_rechecks, last_judging

    rechecks = judging_rechecks(db)
    gone = still = lifted = 0
    for key, kept in db.execute(
            "SELECT DISTINCT r.key, s.key IS NOT NULL FROM recheck_results AS r "
            "LEFT JOIN samples AS s ON s.key = r.key WHERE r.outcome = 'optout'"):
        if not kept:
            gone += 1
            continue
        judge = last_judging(db, key, rechecks)
        said = None if judge is None else db.execute(
            "SELECT outcome FROM recheck_results WHERE recheck = ? AND key = ?",
            (judge.recheck, key)).fetchone()
        # no recheck since has a word on it (an unfinished one found it), or the last could
        # not check it: the refusal stands
        if judge is None or (said is not None and said[0] in ("optout", "unreachable")):
            still += 1
        else:
            lifted += 1
    return gone, still, lifted


def _earlier_open(db: sqlite3.Connection, last: Any, running: Any
                  ) -> tuple[int, list[RecheckFinding]]:
    """Refusals of rechecks other than the last finished one (earlier ones, or ones abandoned
    for another's scope) of samples still in the dataset that no recheck since judged: a
    `--sample` or `--source` recheck after a full one once hid every refusal the full one
    found from the sign-off."""
    from builder.recheck_log import judged, judging_rechecks, last_judging

    rechecks = judging_rechecks(db)
    found: list[RecheckFinding] = []
    seen = None
    for recheck, key, outcome, detail in db.execute(
            "SELECT r.recheck, r.key, r.outcome, r.detail FROM recheck_results AS r "
            "JOIN samples AS s ON s.key = r.key JOIN rechecks AS c ON c.recheck = r.recheck "
            "WHERE r.refuse = 1 AND r.recheck != ? AND c.status IN ('finished', 'abandoned') "
            "ORDER BY r.key, r.recheck DESC", (last.recheck if last is not None else 0,)):
        if key == seen:
            continue  # the key's newest such refusal is the only one that may stand
        seen = key
        if running is not None and judged(db, running, key):
            continue  # the unfinished recheck has asked again: its own item says what it found
        judge = last_judging(db, key, rechecks)  # the newest that did: it has the word
        if judge is not None and judge.recheck == recheck:
            found.append(RecheckFinding(key, outcome, True, detail, recheck))
    return len(found), found[:FINDINGS_SHOWN]


def _papers(out: Path, meta: dict[str, str]) -> list[Paper]:
    """Every paper's sha256 now, beside the one the ledger recorded when cleanset wrote it:
    what a sign-off names, and a paper edited since is an open item (verify names it too)."""
    from builder.exports.papers import PAPERS, WRITTEN_META
    from builder.shards import file_sha256

    try:
        recorded = json.loads(meta.get(WRITTEN_META) or "{}")
    except ValueError:
        recorded = {}
    return [Paper(name, recorded.get(name),
                  file_sha256(out / name) if (out / name).is_file() else None)
            for name in PAPERS]


def _builds(db: sqlite3.Connection) -> list[Build]:
    return [Build(b, started, finished, tool, sha, path, json.loads(policy), bool(exhausted),
                  tuple(build_tools(db, b, tool)[1:]))
            for b, started, finished, tool, sha, path, policy, exhausted in db.execute(
                "SELECT build, started_at, finished_at, tool_version, recipe_sha256, "
                "recipe_path, policy, exhausted FROM builds ORDER BY build").fetchall()]


SIZE_EDGES = (256, 512, 1024, 2048, 4096)
SIZE_ORDER = tuple(f"< {e}" for e in SIZE_EDGES) + (f"≥ {SIZE_EDGES[-1]}",)
_BUCKET = ("CASE " + " ".join(f"WHEN MAX(width, height) < {e} THEN '< {e}'" for e in SIZE_EDGES)
           + f" ELSE '≥ {SIZE_EDGES[-1]}' END")
# One pass over the samples does every per-sample count. The provenance is parsed once per
# sample (a multi-path json_extract), the small result twice more.
_SCAN = f"""
SELECT build, license, source, mime, bucket, COUNT(*), SUM(bytes), MIN(key),
       MIN(json_extract(j, '$[0]')), MAX(json_extract(j, '$[0]')),
       SUM(json_array_length(j, '$[1]') = 1), SUM(json_array_length(j, '$[1]') > 1),
       SUM(restricted),
       SUM(json_array_length(j, '$[1]') = 1
           AND json_extract(j, '$[1][0].field') = 'recipe:license'),
       SUM(NULLIF(TRIM(creator), '') IS NULL)
FROM (SELECT build, license, source, mime, bytes, key, creator, {_BUCKET} AS bucket,
             json_extract(provenance, '$.retrieved_at', '$.license.evidence') AS j,
             instr(provenance, '"wikimedia:Restrictions"') > 0 AS restricted
      FROM samples WHERE rowid BETWEEN ? AND ?)
GROUP BY 1, 2, 3, 4, 5"""


def _rowid_ranges(db: sqlite3.Connection, parts: int) -> list[tuple[int, int]]:
    lo, hi = db.execute("SELECT MIN(rowid), MAX(rowid) FROM samples").fetchone()
    if lo is None:
        return []
    step = max(1, (hi - lo + parts) // parts)
    return [(start, min(start + step - 1, hi)) for start in range(lo, hi + 1, step)]


def _scan_samples(connect: Callable[[], sqlite3.Connection], lo: int, hi: int
                  ) -> list[tuple[Any, ...]]:
    db = connect()
    try:
        return list(db.execute(_SCAN, (lo, hi)))
    finally:
        db.close()


def named_creators(creators: Counter[str]) -> int:
    """How many creators the samples name (the images naming none are not one creator)."""
    return len(creators) - (NO_CREATOR in creators)


def _creators(connect: Callable[[], sqlite3.Connection]) -> Counter[str]:
    db = connect()
    try:
        return Counter(dict(db.execute(
            "SELECT COALESCE(NULLIF(TRIM(creator), ''), ?), COUNT(*) FROM samples GROUP BY 1",
            (NO_CREATOR,))))
    finally:
        db.close()


def _merge_scan(data: ReportData, rows: list[tuple[Any, ...]]) -> None:
    for (build, lic, source, mime, bucket, n, size, first_key, first, last, one, several,
         restricted, recipe_only, anonymous) in rows:
        data.samples += n
        data.no_creator[lic] += anonymous or 0
        data.licences_by_build[(build, lic)] += n
        data.recipe_claim_only += recipe_only or 0
        data.total_bytes += size or 0
        data.licenses_by_source[(lic, source)] += n
        data.formats[mime] += n
        data.longest_sides[bucket] += n
        data.evidence_claims[1] += one or 0
        data.evidence_claims[2] += several or 0
        data.evidence_claims[0] += n - (one or 0) - (several or 0)
        data.restricted += restricted or 0
        key = (build, source)
        data.first_keys[key] = min(first_key, data.first_keys.get(key, first_key))
        if first is not None:
            data.retrieved_first = min(filter(None, (data.retrieved_first, first)))
            data.retrieved_last = max(filter(None, (data.retrieved_last, last)))


def _restriction_examples(db: sqlite3.Connection) -> list[tuple[str, str]]:
    return [(key, str(value)) for key, value in db.execute(
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


def _signals(db: sqlite3.Connection, first_keys: dict[tuple[int, str], str]) -> list[str]:
    """The signals checked: every source of every build checks the same ones, so one sample
    of each (build, source) says which."""
    found: set[str] = set()
    for key in sorted(set(first_keys.values())):
        found.update(s for (s,) in db.execute(
            "SELECT json_extract(c.value, '$.signal') FROM samples, "
            "json_each(samples.provenance, '$.optout.checked') AS c WHERE samples.key = ?",
            (key,)) if s)
    return sorted(found)


def _hosts_checked(db: sqlite3.Connection) -> int:
    """Hosts whose robots.txt, ai.txt and TDMRep were asked: every web host a candidate came
    from that got past the licence gate (local files have none)."""
    row = db.execute(
        f"SELECT COUNT(DISTINCT {host_sql('url')}) FROM candidates WHERE url LIKE 'http%' "
        "AND (reason IS NULL OR reason NOT LIKE 'license%')").fetchone()
    return int(row[0] or 0)


# A refusal's signal, by how its detail begins (builder/optout/ words them so), named as the
# provenance's `optout.checked` names it: the consent table lists both on one row. It once
# keyed every refusal but the host files' by its reason code, so a page said
# "x-robots-tag: 0" beside "optout_x_robots_tag: 1" for one refusal.
SIGNAL_BY_DETAIL = (
    ("robots.txt:", "robots.txt"), ("ai.txt:", "ai.txt"), ("tdmrep.json:", "tdmrep.json"),
    ("tdm-reservation", "tdm-reservation"), ("X-Robots-Tag", "x-robots-tag"),
    ("Content-Usage", "content-usage"), ("Content-Signal", "content-signal"),
    ("<meta", "landing-page"), ("plus:DataMining", "plus:DataMining"),
    ("Iptc4xmpExt:DigitalSourceType", "DigitalSourceType"), ("C2PA", "c2pa"),
    ("URL ", "denylist"), ("creator ", "denylist"), ("site ", "denylist"),
    ("sha256 ", "denylist-content"), ("PDQ ", "denylist-content"),
)
_SIGNAL_SQL = ("CASE " + " ".join(
    f"WHEN substr(detail, 1, {len(prefix)}) = '{prefix}' THEN '{signal}'"
    for prefix, signal in SIGNAL_BY_DETAIL) + " ELSE reason END")


def _refused_by_signal(db: sqlite3.Connection) -> Counter[str]:
    return Counter(dict(db.execute(
        f"SELECT {_SIGNAL_SQL}, COUNT(*) FROM candidates WHERE status = 'rejected' AND "
        "(reason LIKE 'optout%' OR reason IN ('denylisted', 'ai_generated')) GROUP BY 1")))


# The URL whose host refused: a refusal at a redirect ends "(redirect to URL)" (the target's
# host files said no, not the host of the URL the candidate named).
_REFUSED_URL = ("CASE WHEN instr(detail, ' (redirect to ') > 0 THEN "
                "substr(detail, instr(detail, ' (redirect to ') + 14) ELSE url END")


def _refusing_hosts(db: sqlite3.Connection) -> list[tuple[str, str, int]]:
    names = ", ".join(f"'{s}'" for s in HOST_SIGNALS)
    return [(host, signal, n) for host, signal, n in db.execute(
        f"SELECT {host_sql(_REFUSED_URL)} AS host, substr(detail, 1, instr(detail, ':') - 1) AS "
        "signal, COUNT(*) FROM candidates WHERE status = 'rejected' AND reason IN "
        f"('optout_robots_txt', 'optout_tdmrep') AND signal IN ({names}) "
        f"GROUP BY 1, 2 ORDER BY 3 DESC, 1 LIMIT {TOP_HOSTS}")]


def _duplicates(db: sqlite3.Connection, data: ReportData) -> None:
    from builder.clusters import COPIES_FROM, copy_counts

    counts = copy_counts(db)
    data.exact_duplicates, data.near_duplicates = counts.get(True, 0), counts.get(False, 0)
    for winner, n, licences, sources in db.execute(
            "SELECT winner, COUNT(*), GROUP_CONCAT(DISTINCT license), "
            f"GROUP_CONCAT(DISTINCT source){COPIES_FROM} GROUP BY winner "
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


def _kept_out(out: Path) -> list[dict[str, str]]:
    """The denylist's site and creator entries (a work's URL or hash is one work; these keep
    whole sites and creators out), as written: verify names a line that is not one."""
    try:
        rows = read_jsonl(out / DENYLIST)
    except (OSError, UnicodeDecodeError):
        return []
    return [{name: str(row.get(name) or "") for name in ("kind", "value", "added_at", "reason")}
            for row in rows if isinstance(row, dict) and row.get("kind") in ("site", "creator")]


def _takedowns(out: Path) -> list[dict[str, Any]]:
    path = out / "takedowns.jsonl"
    if not path.is_file():
        return []
    entries = []
    for line in path.read_bytes().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:  # also bytes that are not UTF-8: a line written over
            continue  # a torn last line of an interrupted takedown; verify reports it
        if _is_takedown_record(entry):  # a line that is not one is not shown
            entries.append(entry)
    return entries


def _is_takedown_record(entry: Any) -> bool:
    """The fields the report shows, of the types a takedown writes them in (a line edited
    by hand into other types is skipped as written over; verify names the file)."""
    if not isinstance(entry, dict):
        return False
    texts = all(isinstance(entry.get(name, ""), str) for name in ("id", "when", "reason"))
    lists = all(isinstance(entry.get(name, []), list) and all(
        isinstance(item, str) for item in entry.get(name, []))
        for name in ("keys", "shards_rewritten", "shards_deleted"))
    selectors = entry.get("selectors", {})
    return texts and lists and isinstance(selectors, dict) and all(
        isinstance(values, list) for values in selectors.values())
