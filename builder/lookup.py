"""`cleanset lookup DIR PATH...`: is this work - or any work of this portfolio - in the dataset?

Each PATH is an image file or a folder of images (searched recursively, hidden files
skipped). Every image is hashed as the build hashes (sha256, canonical PDQ + pHash) and
looked up in the dataset's near-duplicate index, built from the ledger - never by scanning
shards - in one batched search. It prints one JSON line per image:

    {"query": PATH, "matches": [{"key", "distance", "exact", "license", "source_url",
                                 "landing_url", "creator", "found_as", ...}, ...]}

`found_as` is "sample" for the sample in the shards, "duplicate" for a copy of it the build
refused as a duplicate but recorded (another source, mirror or licence under which the same
work was found); `distance` is the PDQ distance from the query (0 and `exact` for the same
bytes). A work no longer in the dataset is answered too: `taken_down` (the dataset's
denylist holds its sha256, or a PDQ within the distance a build's denylist refuses at: which
takedown, when, why) and `refused` (a candidate whose image a build downloaded, these very
bytes, and refused: why, when, from where); each only when there is one. An image that
cannot be read, decoded or is too large to decode gets its line with an `error` and no near
matches (a file over DECODE_MAX_BYTES is hashed in chunks, for exact
copies only). Exit status 0 (also when nothing matched); 2 for a missing DIR or PATH, or a
folder under PATH that cannot be opened (its images would be missing without a word).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder import clusters
from builder.dedup import (
    IMAGE_SUFFIXES,
    Hashes,
    Match,
    dataset_hash_pipeline,
    image_files,
    load_index,
)
from builder.errors import UserError
from builder.ledger import reading, require_dataset
from builder.media import hamming, perceptual_hashes
from builder.optout.config import OptoutConfig
from builder.optout.denylist import Denylist, Entry
from builder.recipe import DedupConfig
from builder.records import TRANSIENT_REASONS
from builder.takedown_journal import DENYLIST, LOG, read_jsonl
from builder.urls import on_site, site_host, site_pattern


@dataclass(frozen=True)
class Query:
    path: Path
    sha256: str | None  # None: the file could not be read
    hashes: Hashes | None
    error: str | None = None


def lookup(out: Path, paths: list[Path], config: DedupConfig | None = None
           ) -> list[dict[str, Any]]:
    """The JSON-able result per query image, in the order given (folders sorted)."""
    require_dataset(out)  # a directory in the ledger's place is named by `reading`
    files = _query_files(paths)
    with reading(out, "lookup") as ledger:
        db = ledger.db
        pipeline = dataset_hash_pipeline(db, out)  # queries hash as the dataset was hashed
        config = config or _dedup_config(db)
        queries = [query_of(path, pipeline) for path in files]
        index = load_index(db.execute("SELECT key, pdq, pdq_quality, phash FROM samples"),
                           config)
        near = index.search_many([q.hashes or Hashes(None, None, None) for q in queries])
        removals = Removals.of(out, db)
        refused = _refused(db, {q.sha256 for q in queries if q.sha256})
        lines = []
        for query, matches in zip(queries, near, strict=True):
            line = _result(db, query, matches)
            if gone := removals.find(query):
                line["taken_down"] = gone
            if query.sha256 in refused:
                line["refused"] = refused[query.sha256]
            lines.append(line)
        return lines


def _meta(db: sqlite3.Connection, key: str) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def _dedup_config(db: sqlite3.Connection) -> DedupConfig:
    """The rule of the latest build's recipe when it is recorded, else the defaults."""
    raw = _meta(db, "dedup_rule")
    return DedupConfig(**json.loads(raw)) if raw else DedupConfig()


def _query_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if not path.exists():
            raise UserError(f"{path}: no such file or folder. Give image files or folders.")
        if not path.is_dir() and not path.is_file():
            raise UserError(f"{path}: is neither a file nor a folder (a device or a pipe). "
                            "Give image files or folders.")
        found = image_files(path)
        if not found:
            # An empty answer would read as "none of my images is in the dataset".
            raise UserError(f"{path}: a folder holding no image files (looked for "
                            f"{', '.join(sorted(IMAGE_SUFFIXES))}, outside hidden folders); "
                            "nothing was looked up.")
        files.extend(found)
    return files


# The largest query decoded for near matches. The build refuses more than max_bytes per
# image (50 MB by default): ten times that still finds the original of a sample a source
# served smaller. A larger file is hashed in chunks, for exact copies only, so a mistaken
# multi-gigabyte path costs no memory.
DECODE_MAX_BYTES = 512 << 20
_CHUNK = 1 << 20


def query_of(path: Path, pipeline: str) -> Query:
    """The query for one image; a file that cannot be read or decoded is an answer line
    with an `error`, so the rest of a portfolio is still looked up."""
    if not path.is_file():  # a broken link, or a pipe that would wait for ever
        what = "a broken link" if path.is_symlink() and not path.exists() else \
            "not a file (a pipe or a device)"
        return Query(path, None, None, error=f"not_a_file: {what}; nothing was looked up for it")
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > DECODE_MAX_BYTES:
                digest = hashlib.sha256()
                while chunk := f.read(_CHUNK):
                    digest.update(chunk)
                return Query(path, digest.hexdigest(), None, error=(
                    f"too_large: {size} bytes, more than the {DECODE_MAX_BYTES} lookup "
                    "decodes; only an exact copy could be found"))
            data = f.read()
    except OSError as exc:
        return Query(path, None, None, error=f"unreadable: {exc.strerror or exc}; nothing "
                                             "was looked up for it")
    sha = hashlib.sha256(data).hexdigest()
    try:
        pdq, quality, phash = perceptual_hashes(data, pipeline=pipeline)
    except ValueError as exc:
        return Query(path, sha, None, error=str(exc))
    return Query(path, sha, Hashes(pdq, quality, phash))


def _result(db: sqlite3.Connection, query: Query, near: list[Match]) -> dict[str, Any]:
    found: dict[str, int | None] = {m.key: m.pdq_distance for m in near}
    if query.sha256 is not None:
        for (key,) in db.execute("SELECT key FROM samples WHERE sha256 = ?", (query.sha256,)):
            found[key] = 0
        # A copy refused as a duplicate still tells us which sample holds the work.
        for dup in clusters.by_sha256(db, query.sha256):
            found.setdefault(dup.winner, None)
    matches: list[dict[str, Any]] = []
    rows = _samples(db, list(found))
    copies = clusters.duplicates_of(db, found)
    for key in sorted(found, key=lambda k: (found[k] if found[k] is not None else 999, k)):
        row = rows.get(key)
        if row is None:
            continue
        matches.append(_match(key, query, row["sha256"], row["pdq"], row, "sample"))
        for dup in copies.get(key, []):
            matches.append(_match(key, query, dup.sha256, dup.pdq, {
                "license": dup.license, "file_url": dup.file_url,
                "landing_url": dup.landing_url, "creator": dup.creator,
                "source": dup.source}, "duplicate"))
    line: dict[str, Any] = {"query": str(query.path), "matches": matches}
    if query.error:
        line["error"] = query.error
    return line


@dataclass(frozen=True)
class Removals:
    """The dataset's own denylist (what its takedowns removed), by which a build refuses a
    work again: a lookup for a work taken down once answered only "no match"."""

    denylist: Denylist
    takedowns: dict[str, str]  # a takedown's time -> its id (takedowns.jsonl)
    max_distance: int  # the PDQ distance a build's denylist refuses at

    @classmethod
    def of(cls, out: Path, db: sqlite3.Connection) -> Removals:
        denylist, unread = Denylist(), []
        denylist.load(out / DENYLIST, required=False, unread=unread)
        for problem in unread:  # the rest is still answered; verify names it as a problem
            print(f"cleanset: note: {problem} A work it names is not answered as "
                  "taken down.", file=sys.stderr)
        takedowns = {entry["when"]: entry["id"] for entry in read_jsonl(out / LOG)
                     if isinstance(entry, dict) and isinstance(entry.get("when"), str)
                     and isinstance(entry.get("id"), str)}
        return cls(denylist, takedowns, _denylist_distance(db))

    def find(self, query: Query) -> list[dict[str, Any]]:
        hit: tuple[Entry, int] | None = None
        if query.sha256 and (entry := self.denylist.by_sha256(query.sha256)):
            hit = (entry, 0)
        elif query.hashes and query.hashes.pdq:
            hit = self.denylist.by_pdq(query.hashes.pdq, self.max_distance)
        if hit is None:
            return []
        entry, distance = hit
        return [{"takedown": self.takedowns.get(entry.added_at or ""), "when": entry.added_at,
                 "reason": entry.reason, "exact": entry.kind == "sha256",
                 "distance": distance}]


def _denylist_distance(db: sqlite3.Connection) -> int:
    """`[optout] pdq_max_distance` of the latest build's recorded recipe, else the default."""
    from builder.ledger import latest_recipe_table

    optout = latest_recipe_table(db).get("optout")
    value = optout.get("pdq_max_distance") if isinstance(optout, dict) else None
    return value if isinstance(value, int) and 0 <= value <= 256 else \
        OptoutConfig.pdq_max_distance


def _refused(db: sqlite3.Connection, sha256s: set[str]) -> dict[str, list[dict[str, Any]]]:
    """Candidates refused after their image was downloaded, by the sha256 of the bytes
    received (the evidence archive's image records), other than as a copy of a sample
    (those are `matches`, found_as "duplicate")."""
    from builder.evidence.archive import has_schema

    found: dict[str, list[dict[str, Any]]] = {}
    if not sha256s or not has_schema(db):  # a dataset built before the archive existed
        return found
    wanted = sorted(sha256s)
    for start in range(0, len(wanted), 500):
        chunk = wanted[start:start + 500]
        marks = ", ".join("?" for _ in chunk)
        for sha, build, candidate, source, url, reason, detail, decided in db.execute(
                "SELECT DISTINCT r.payload_sha256, c.build, c.candidate_id, c.source, c.url, "
                "c.reason, c.detail, c.decided_at FROM evidence_records AS r "
                "JOIN evidence_links AS l ON l.record_id = r.record_id AND l.role = 'image' "
                "JOIN candidates AS c ON c.build = l.build AND c.seq = l.seq "
                f"WHERE r.kind = 'image' AND r.payload_sha256 IN ({marks}) "
                "AND c.status = 'rejected' AND c.reason NOT LIKE 'duplicate%' "
                "ORDER BY c.build, c.seq", chunk):
            found.setdefault(sha, []).append({
                "candidate": candidate, "build": build, "source": source, "url": url,
                "reason": reason, "detail": detail, "decided_at": decided})
    return found


def _match(key: str, query: Query, sha256: str, pdq: str | None, row: Any,
           found_as: str) -> dict[str, Any]:
    exact = sha256 == query.sha256
    distance = 0 if exact else (
        hamming(pdq, query.hashes.pdq) if pdq and query.hashes and query.hashes.pdq else None)
    return {
        "key": key, "distance": distance, "exact": exact, "license": row["license"],
        "source_url": row["file_url"], "landing_url": row["landing_url"],
        "creator": row["creator"], "source": row["source"], "found_as": found_as,
    }


def _samples(db: sqlite3.Connection, keys: list[str]) -> dict[str, sqlite3.Row]:
    db.row_factory = sqlite3.Row
    out: dict[str, sqlite3.Row] = {}
    for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        marks = ", ".join("?" for _ in chunk)
        for row in db.execute("SELECT key, sha256, pdq, license, file_url, landing_url, creator,"
                              f" source FROM samples WHERE key IN ({marks})", chunk):
            out[row["key"]] = row
    db.row_factory = None
    return out



TRANSIENT = frozenset(str(reason) for reason in TRANSIENT_REASONS)


def lookup_sites(out: Path, hosts: list[str]) -> list[dict[str, Any]]:
    """Every candidate any build considered from each host (its image URL, or a sample's
    landing page, on the host or a subdomain), what became of it: the answer for works a
    build refused before it downloaded them (a robots.txt, a licence), which have no bytes
    to look up."""
    require_dataset(out)
    log = [entry for entry in read_jsonl(out / LOG) if isinstance(entry, dict)]
    with reading(out, "lookup") as ledger:
        denylist = Removals.of(out, ledger.db).denylist
        return [{"site": host, "denylisted": _site_denied(denylist, host),
                 "candidates": _on_site(ledger.db, host, _taken_from(log, host))}
                for host in hosts]


def _site_denied(denylist: Denylist, host: str) -> dict[str, Any] | None:
    """The dataset's denylist entry that refuses `host`'s images in later builds (a
    `takedown --site` of it or of a parent domain), or None."""
    entry = denylist.by_host(host)
    if entry is None:
        return None
    return {"site": entry.value, "since": entry.added_at, "reason": entry.reason}


def _taken_from(log: list[dict[str, Any]], host: str) -> set[str]:
    """Keys a takedown removed as on `host` (`--site`, or `--url` of a page or file there):
    a sample linked to the site by its landing page alone is gone from the ledger's samples,
    its candidate row holding only the file's URL."""
    keys = set()
    for entry in log:
        for match in entry.get("matched") or []:
            if not isinstance(match, dict) or not isinstance(match.get("key"), str):
                continue
            for why in match.get("why") or []:
                kind, _, value = str(why).partition("=")
                if (kind == "site" and value == host) or (kind == "url" and on_site(value, host)):
                    keys.add(match["key"])
    return keys


_REDIRECT_TO = re.compile(r"\(redirect to (\S+)\)")  # a refusal's detail at a redirect
_CANDIDATE_COLUMNS = ("build", "seq", "candidate_id", "source", "url", "status", "reason",
                      "detail", "key", "license", "decided_at")


def _on_site(db: sqlite3.Connection, host: str, taken: set[str]) -> list[dict[str, Any]]:
    from builder.evidence.archive import served_from  # warcio: only a site's lookup needs it

    pattern = site_pattern(host)
    columns = ", ".join(_CANDIDATE_COLUMNS)
    rows = {(r[0], r[1]): r for r in db.execute(
        f"SELECT {columns} FROM candidates WHERE url LIKE ? ESCAPE '\\'", (pattern,))
        if on_site(r[4], host)}
    # A sample's landing page on the site, its file elsewhere (a CDN).
    for *row, page in db.execute(
            f"SELECT {', '.join('c.' + c for c in _CANDIDATE_COLUMNS)}, s.landing_url "
            "FROM candidates AS c JOIN samples AS s ON s.build = c.build AND s.seq = c.seq "
            "WHERE s.landing_url LIKE ? ESCAPE '\\'", (pattern,)):
        if on_site(page, host):
            rows.setdefault((row[0], row[1]), tuple(row))
    for key in sorted(taken):
        for row in db.execute(f"SELECT {columns} FROM candidates WHERE key = ? AND "
                              "status = 'removed'", (key,)):
            rows.setdefault((row[0], row[1]), row)
    # Its bytes served from the site (a short link or another host redirecting there), or
    # refused at a redirect to it: the row keeps the URL asked, the archive and the detail
    # where it led.
    for build, seq, served in served_from(db, pattern):
        if on_site(served, host):
            for row in db.execute(f"SELECT {columns} FROM candidates WHERE build = ? AND "
                                  "seq = ?", (build, seq)):
                rows.setdefault((row[0], row[1]), row)
    for row in db.execute(f"SELECT {columns} FROM candidates WHERE status = 'rejected' AND "
                          "instr(detail, '(redirect to ') > 0 AND detail LIKE ? ESCAPE '\\'",
                          (pattern,)):
        if any(on_site(url, host) for url in _REDIRECT_TO.findall(str(row[7]))):
            rows.setdefault((row[0], row[1]), row)
    # Refused as on a denylisted site (on `host`), by its landing page: a refused
    # candidate's row keeps only the image's URL, but its detail names the site.
    for row in db.execute(f"SELECT {columns} FROM candidates WHERE reason = 'denylisted' "
                          "AND substr(detail, 1, 5) = 'site '"):
        site = str(row[7]).split(" ", 2)[1]
        with contextlib.suppress(ValueError):  # a recipe's entry as written (WWW., case)
            site = site_host(site)
        if site == host or site.endswith("." + host):
            rows.setdefault((row[0], row[1]), row)
    return [_candidate(rows[at]) for at in sorted(rows)]


def _candidate(row: tuple[Any, ...]) -> dict[str, Any]:
    build, _, candidate, source, url, status, reason, detail, key, licence, decided = row
    if status == "accepted":
        found_as = "sample"
    elif status == "removed":
        found_as = "taken_down"
    elif (reason or "").startswith("duplicate"):
        found_as = "duplicate"
    elif reason in TRANSIENT:  # never decided: the next build asks again
        found_as = "unreachable"
    else:
        found_as = "refused"
    return {"candidate": candidate, "build": build, "source": source, "url": url,
            "found_as": found_as, "key": key, "license": licence, "reason": reason,
            "detail": detail, "decided_at": decided}
