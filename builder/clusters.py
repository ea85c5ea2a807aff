"""Duplicate evidence: every later copy of an admitted work, and where and under what licence.

The first admitted image stays in the shards; each later exact or near duplicate is refused
(`duplicate_exact` / `duplicate_near`) and recorded here with the winner's key, the
distances, and its own source, licence decision, URLs and creator. A BY-SA work also
published as CC0 elsewhere, or one work scraped from five mirrors, shows up in the manifest
(`duplicates`, `also_found_as`) and in `cleanset lookup`.

The table lives in the ledger's SQLite file and is written in the same transaction as the
candidate's ledger row, so a crash keeps both or neither.
"""

from __future__ import annotations

import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from builder.records import Checked

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS duplicates (
    build          INTEGER NOT NULL,
    seq            INTEGER NOT NULL,
    winner         TEXT NOT NULL,     -- key of the admitted sample it duplicates
    exact          INTEGER NOT NULL,  -- 1: same sha256; 0: near (perceptual)
    pdq_distance   INTEGER,
    phash_distance INTEGER,
    candidate_id   TEXT NOT NULL,
    source         TEXT NOT NULL,
    license        TEXT,              -- the licence gate's decision for this copy (SPDX)
    license_url    TEXT,
    file_url       TEXT,
    landing_url    TEXT,
    creator        TEXT,
    sha256         TEXT NOT NULL,
    pdq            TEXT,
    pdq_quality    INTEGER,
    phash          TEXT,
    PRIMARY KEY (build, seq)
)""",
    "CREATE INDEX IF NOT EXISTS duplicates_winner ON duplicates(winner)",
    "CREATE INDEX IF NOT EXISTS duplicates_sha256 ON duplicates(sha256)",
)


@dataclass(frozen=True)
class Duplicate:
    winner: str
    exact: bool
    pdq_distance: int | None
    phash_distance: int | None
    candidate_id: str
    source: str
    license: str | None
    license_url: str | None
    file_url: str | None
    landing_url: str | None
    creator: str | None
    sha256: str
    pdq: str | None
    pdq_quality: int | None
    phash: str | None


def ensure_schema(db: sqlite3.Connection) -> None:
    # One statement at a time: executescript would commit an open transaction first.
    for statement in SCHEMA:
        db.execute(statement)


def record(db: sqlite3.Connection, *, build: int, seq: int, winner: str, exact: bool,
           checked: Checked, pdq_distance: int | None = None,
           phash_distance: int | None = None) -> None:
    """Record `checked` as a later copy of sample `winner` (in the caller's transaction)."""
    cand = checked.fetched.licensed.candidate
    lic = checked.fetched.licensed.license
    img = checked.image
    file_url = cand.url if cand.local_path is None else None
    db.execute(
        "INSERT OR REPLACE INTO duplicates(build, seq, winner, exact, pdq_distance,"
        " phash_distance, candidate_id, source, license, license_url, file_url, landing_url,"
        " creator, sha256, pdq, pdq_quality, phash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (build, seq, winner, int(exact), 0 if exact else pdq_distance,
         0 if exact else phash_distance, cand.candidate_id, cand.source, lic.spdx, lic.url,
         file_url, cand.landing_url, cand.creator, img.sha256, img.pdq,
         img.pdq_quality, img.phash),
    )


def _has_table(db: sqlite3.Connection) -> bool:
    row = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'duplicates'").fetchone()
    return row is not None


_COLUMNS = ("winner, exact, pdq_distance, phash_distance, candidate_id, source, license,"
            " license_url, file_url, landing_url, creator, sha256, pdq, pdq_quality, phash")


# The rows that are copies: a later build reads every source again, so the item a sample is,
# and each copy of it already recorded, come back once per build. Neither is another copy:
# counted, every sample of a dataset built twice was "found again as" itself. (Builds since
# record neither; this also reads ledgers recorded before.)
COPIES_FROM = (" FROM duplicates d WHERE NOT EXISTS (SELECT 1 FROM samples s WHERE"
               " s.key = d.winner AND s.source || ':' || s.source_id = d.candidate_id)"
               " AND NOT EXISTS (SELECT 1 FROM duplicates e WHERE e.winner = d.winner AND"
               " e.candidate_id = d.candidate_id AND (e.build, e.seq) < (d.build, d.seq))")


def recorded(db: sqlite3.Connection, winner: str, candidate_id: str) -> bool:
    """Whether this candidate is recorded as a copy of `winner` already (an earlier build
    read it)."""
    return db.execute("SELECT 1 FROM duplicates WHERE winner = ? AND candidate_id = ? LIMIT 1",
                      (winner, candidate_id)).fetchone() is not None


def copy_counts(db: sqlite3.Connection) -> dict[bool, int]:
    """Copies recorded, by exact (True) or near (False)."""
    if not _has_table(db):
        return {}
    return {bool(exact): n for exact, n in db.execute(
        f"SELECT exact, COUNT(*){COPIES_FROM} GROUP BY exact")}


def _duplicate(row: tuple[Any, ...]) -> Duplicate:
    (winner, exact, pdq_d, ph_d, cid, source, lic, lic_url, file_url, landing, creator, sha,
     pdq, quality, phash) = row
    return Duplicate(winner=winner, exact=bool(exact), pdq_distance=pdq_d, phash_distance=ph_d,
                     candidate_id=cid, source=source, license=lic, license_url=lic_url,
                     file_url=file_url, landing_url=landing, creator=creator, sha256=sha,
                     pdq=pdq, pdq_quality=quality, phash=phash)


def duplicates_of(db: sqlite3.Connection, winners: Iterable[str]) -> dict[str, list[Duplicate]]:
    """Recorded copies per winner key, in the order they were found."""
    out: dict[str, list[Duplicate]] = defaultdict(list)
    wanted = sorted(set(winners))
    if not wanted or not _has_table(db):
        return out
    for start in range(0, len(wanted), 500):
        chunk = wanted[start:start + 500]
        marks = ", ".join("?" for _ in chunk)
        for row in db.execute(f"SELECT {_COLUMNS}{COPIES_FROM} AND winner IN ({marks})"
                              " ORDER BY build, seq", chunk):
            out[row[0]].append(_duplicate(row))
    return out


def all_duplicates(db: sqlite3.Connection) -> dict[str, list[Duplicate]]:
    """Every recorded copy grouped by winner (for the manifest)."""
    out: dict[str, list[Duplicate]] = defaultdict(list)
    if not _has_table(db):
        return out
    for row in db.execute(f"SELECT {_COLUMNS}{COPIES_FROM} ORDER BY build, seq"):
        out[row[0]].append(_duplicate(row))
    return out


def by_sha256(db: sqlite3.Connection, sha256: str) -> list[Duplicate]:
    if not _has_table(db):
        return []
    return [_duplicate(r) for r in db.execute(
        f"SELECT {_COLUMNS}{COPIES_FROM} AND sha256 = ? ORDER BY build, seq", (sha256,))]


def concentration(db: sqlite3.Connection) -> tuple[Counter[str], Counter[str]]:
    """(samples per source, samples per creator) of the dataset as it stands."""
    sources: Counter[str] = Counter(dict(db.execute(
        "SELECT source, COUNT(*) FROM samples GROUP BY source")))
    creators: Counter[str] = Counter(dict(db.execute(
        "SELECT creator, COUNT(*) FROM samples WHERE creator IS NOT NULL GROUP BY creator")))
    return sources, creators
