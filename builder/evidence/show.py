"""`cleanset evidence DIR KEY|URL`: the archived responses that decided a sample or candidate.

The candidate is found in the ledger (by sample key, candidate id `source:id`, or the URL it
was fetched from or described at), its records by the ledger's links, and each record is
read at its offset: nothing else in the archive is read. For a sample a recheck took down,
or one still in that the last recheck judged, the recheck's finding comes first, with the
answers it found a change in, or, found unchanged, the host files it read. `show` makes this once, as data (`CandidateEvidence`); `show_text.py`
and `show_json.py` render it.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from builder.drift import Outcome
from builder.errors import UserError
from builder.evidence.archive import has_schema
from builder.evidence.recheck_archive import namespace, records_of
from builder.evidence.shown import Link, Shown, read
from builder.identity import describe_tools
from builder.ledger import reading, require_dataset
from builder.optout.consent import HOST_FILE_PATHS
from builder.optout.hostfiles import origin
from builder.recheck_log import has_rechecks, last_finished, last_judging, recheck_row
from builder.urls import match_key, match_literal

UNCHANGED = Outcome.UNCHANGED.value  # whose rows a finished recheck drops

_KEY = re.compile(r"[0-9]{10,}")


@dataclass(frozen=True)
class Found:
    build: int
    seq: int
    candidate_id: str
    url: str
    status: str
    reason: str | None
    detail: str | None
    key: str | None
    sha256: str | None  # of the sample's image, when it was admitted


@dataclass(frozen=True)
class Finding:
    """What a recheck found of a sample: the one a takedown followed (a removed sample), or
    the last finished recheck's (a sample still in; `unchanged` with the host files it read,
    anything else with the answers it found it in)."""

    recheck: int
    outcome: str
    refuse: bool  # a build today would refuse it
    detail: str | None
    checked_at: str | None
    applied_by: str | None  # the takedown that followed it, for a removed sample
    archived: bool  # whether the answers it found it in are archived (older rechecks: not)
    tool_version: str | None = None  # the cleanset that started the recheck (older: None)
    resumed_by: tuple[str, ...] = ()  # the other cleansets that went on with it, in order
    # False: an earlier recheck's, the last one having covered part of the dataset without it
    latest: bool = True

    @property
    def ran_by(self) -> str | None:
        return describe_tools(self.tool_version, self.resumed_by)


@dataclass(frozen=True)
class CandidateEvidence:
    found: Found
    finding: Finding | None
    # Whether the build that decided it kept an evidence archive: one made by a cleanset
    # before the archive existed has none, and its decision is the ledger's record alone.
    build_archived: bool
    # The recheck's records ("recheck N"), then the build's, in the order relied on; read
    # one at a time as iterated, so a damaged record stops the output where it is.
    records: Iterator[Shown]


def show(out: Path, wanted: str) -> Iterator[CandidateEvidence]:
    """Every candidate matching `wanted`, in build and source order (UserError, exit 2, when
    none does, or when a record cannot be read at all)."""
    require_dataset(out)  # a directory in the ledger's place is named by `reading`
    with reading(out, "evidence") as ledger:
        db = ledger.db
        archived = _archived_builds(db)
        found = _find(db, wanted)
        if not found and wanted.strip() != wanted:
            # A key pasted from a spreadsheet or a terminal with a space or newline around
            # it was "no candidate with key ...": an auditor read that the work was never in.
            found = _find(db, wanted.strip())
        if not found:
            raise UserError(f"{out}: no candidate with key, id or URL {wanted!r}. Give a "
                            "sample key (e.g. 0000000042, see manifest.parquet), a candidate "
                            "id (source:id, see candidates.parquet) or the image or landing "
                            "page URL.")
        for cand in found:
            finding = _finding(db, cand)
            rechecked = _recheck_links(db, finding, cand) if finding else []
            if finding is not None:
                finding = replace(finding, archived=bool(rechecked))
            kept = cand.build in archived
            links = [*rechecked, *(_build_links(db, cand) if kept else [])]
            yield CandidateEvidence(cand, finding, kept, (read(out, link) for link in links))


def _archived_builds(db: sqlite3.Connection) -> set[int]:
    """The builds that kept an evidence archive (each opens a file as it starts). A dataset
    built by a cleanset before the archive existed has no such table, or (once a later
    takedown, recheck or build made it) no file of its early builds: their candidates'
    decisions are still in the ledger, with nothing archived behind them."""
    if not has_schema(db):
        return set()
    return {build for (build,) in db.execute(
        "SELECT DISTINCT build FROM evidence_files WHERE build > 0")}


def _find(db: sqlite3.Connection, wanted: str) -> list[Found]:
    select = ("SELECT c.build, c.seq, c.candidate_id, c.url, c.status, c.reason, c.detail, "
              "c.key, (SELECT sha256 FROM samples s WHERE s.key = c.key) FROM candidates c ")
    order = " ORDER BY c.build, c.seq"
    if _KEY.fullmatch(wanted):
        rows = db.execute(select + "WHERE c.key = ?" + order, (wanted,)).fetchall()
    else:
        rows = db.execute(select + "WHERE c.candidate_id = ? OR c.url = ?" + order,
                          (wanted, wanted)).fetchall()
        if not rows:  # a landing page: samples and duplicates record it, candidates do not
            rows = db.execute(select + "WHERE c.key IN (SELECT key FROM samples WHERE "
                              "landing_url = ? OR file_url = ?)" + order,
                              (wanted, wanted)).fetchall()
        if not rows and "://" in wanted:
            # Typed otherwise than recorded (HTTP://, a host in capitals, utm_ parameters, a
            # default port): compared as takedown and the denylists compare URLs.
            want = match_key(wanted)
            rows = [row for row in db.execute(select + "WHERE instr(c.url, ?) > 0" + order,
                                              (match_literal(wanted),))
                    if match_key(row[3] or "") == want]
    return [Found(*row) for row in rows]


def _build_links(db: sqlite3.Connection, cand: Found) -> list[Link]:
    rows = db.execute(
        "SELECT l.role, r.kind, r.file, r.offset, r.record_id, r.build FROM evidence_links l "
        "JOIN evidence_records r ON r.record_id = l.record_id "
        "WHERE l.build = ? AND l.seq = ? ORDER BY l.position", (cand.build, cand.seq)).fetchall()
    return [Link(role, kind, file, offset, record_id, build,
                 cand.sha256 if role == "image" else None)
            for role, kind, file, offset, record_id, build in rows]


def _recheck_links(db: sqlite3.Connection, finding: Finding, cand: Found) -> list[Link]:
    recheck = finding.recheck
    rows = (_host_files_read(db, recheck, cand.key) if finding.outcome == UNCHANGED
            else records_of(db, recheck, cand.key or ""))
    return [Link(f"recheck {recheck}", kind, file, offset, record_id, namespace(recheck))
            for record_id, file, offset, kind in rows]


def _host_files_read(db: sqlite3.Connection, recheck: int, key: str | None
                     ) -> list[tuple[str, str, int, str]]:
    """(record_id, file, offset, kind) of the host files recheck `recheck` read for the
    sample's file URL (archived once per host, linked to no sample)."""
    row = db.execute("SELECT file_url FROM samples WHERE key = ?", (key,)).fetchone()
    base = origin(row[0]) if row and row[0] else None
    if base is None or not has_schema(db):  # a recheck before the archive existed
        return []
    targets = [base + path for path in HOST_FILE_PATHS]
    marks = ",".join("?" for _ in targets)
    return db.execute(
        f"SELECT record_id, file, offset, kind FROM evidence_records WHERE build = ? AND "
        f"target_uri IN ({marks}) ORDER BY target_uri", (namespace(recheck), *targets)
    ).fetchall()


def _finding(db: sqlite3.Connection, cand: Found) -> Finding | None:
    """`archived` is set by the caller, from the records it finds."""
    if cand.key is None or not has_rechecks(db):
        return None
    if cand.status == "removed":
        return _took_down(db, cand)
    if cand.status == "accepted":
        return _last_finding(db, cand.key)
    return None


def _took_down(db: sqlite3.Connection, cand: Found) -> Finding | None:
    """For a sample a `recheck --apply` took down: what the recheck found (its answers are
    archived since recheck_archive.py; an older recheck's are not). Without it the build's
    records, which admitted it, read as if nothing had ever refused it."""
    takedown = (cand.detail or "").partition(":")[0]
    row = db.execute(
        "SELECT r.recheck, rr.outcome, rr.detail, rr.checked_at FROM rechecks r JOIN "
        "recheck_results rr ON rr.recheck = r.recheck WHERE r.applied = ? AND rr.key = ? "
        "AND rr.refuse = 1", (takedown, cand.key)).fetchone()
    if row is None:
        return None
    recheck, outcome, detail, checked_at = row
    ran = recheck_row(db, recheck)
    return Finding(recheck, outcome, True, detail, checked_at, takedown, archived=False,
                   tool_version=ran.tool_version if ran else None,
                   resumed_by=ran.resumed_by if ran else ())


def _last_finding(db: sqlite3.Connection, key: str) -> Finding | None:
    """For a sample still in the dataset: what the last recheck that asked about it found
    (the last finished one, unless it covered part of the dataset without it: then an
    earlier one's word stands, and the report lists its refusal as open). Only the last
    finished recheck's once counted, and a sample a full recheck found opted out showed no
    finding at all after a `--sample` recheck that skipped it."""
    last = last_judging(db, key)
    if last is None:
        return None
    final = last_finished(db)
    latest = final is not None and last.recheck == final.recheck
    row = db.execute("SELECT outcome, refuse, detail, checked_at FROM recheck_results "
                     "WHERE recheck = ? AND key = ?", (last.recheck, key)).fetchone()
    if row is not None:
        outcome, refuse, detail, checked_at = row
        return Finding(last.recheck, outcome, bool(refuse), detail, checked_at, None,
                       archived=False, tool_version=last.tool_version,
                       resumed_by=last.resumed_by, latest=latest)
    # A finished recheck drops its `unchanged` rows: judged and not listed is unchanged.
    return Finding(last.recheck, UNCHANGED, False, "the same licence, file and consent as "
                   "when it was admitted", last.finished_at, None, archived=False,
                   tool_version=last.tool_version, resumed_by=last.resumed_by, latest=latest)
