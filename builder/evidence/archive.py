"""The build's evidence archive: `DIR/evidence/*.warc.gz`, written by the build process only.

Exchanges come back from wherever the stages ran with each candidate's outcome, and API
pages from the sources, which run here; the pipeline hands them over in source order as it
decides, so the archive's bytes do not depend on timing. It is durable like a shard: each
commit fsyncs the open file and then records, in the same ledger transaction as the
decisions that point into it, how many bytes are committed (`evidence_files.size`). A
resumed build truncates the open file to that size and deletes files the ledger never
heard of, then writes the same records again, so a crash leaves no duplicate and no gap.

Files roll over at `max_file_bytes` (default 1 GB) and are named by dataset, build and
sequence: `NAME-build0001-00000.warc.gz`. Each starts with a `warcinfo` record.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from builder import clock
from builder.errors import UserError
from builder.evidence import warc
from builder.evidence.warc import Pointer
from builder.identity import tool_version
from builder.records import Exchange
from builder.shards import file_sha256, fsync_dir

DIRNAME = "evidence"
MAX_FILE_BYTES = 1_000_000_000
KNOWN_EXCHANGES = 4096  # recently written exchanges remembered (host files cited by many)

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS evidence_files (
    name      TEXT PRIMARY KEY,          -- file name in DIR/evidence/
    build     INTEGER NOT NULL,
    number    INTEGER NOT NULL,          -- sequence within the build
    size      INTEGER NOT NULL,          -- bytes committed; a resumed build truncates to it
    complete  INTEGER NOT NULL DEFAULT 0,
    sha256    TEXT                       -- of the whole file, once complete
)""",
    """CREATE TABLE IF NOT EXISTS evidence_records (
    record_id      TEXT PRIMARY KEY,     -- WARC-Record-ID of the response (or revisit)
    build          INTEGER NOT NULL,
    file           TEXT NOT NULL,
    offset         INTEGER NOT NULL,     -- of its gzip member; its request follows
    kind           TEXT NOT NULL,        -- api, image, robots.txt, ai.txt, tdmrep.json, landing-page
    target_uri     TEXT NOT NULL,
    status         INTEGER NOT NULL,
    payload_sha256 TEXT NOT NULL         -- of the payload as received
)""",
    """CREATE TABLE IF NOT EXISTS evidence_links (
    build      INTEGER NOT NULL,
    seq        INTEGER NOT NULL,         -- the candidate (candidates.build, candidates.seq)
    position   INTEGER NOT NULL,         -- in the order the candidate relied on them
    role       TEXT NOT NULL,            -- api, signal, image
    record_id  TEXT NOT NULL,
    PRIMARY KEY (build, seq, position)
)""",
)


@dataclass(frozen=True)
class EvidenceConfig:
    """`[evidence]` in a recipe. The archive is always written; only its file size is set."""

    max_file_mb: float = MAX_FILE_BYTES / 1e6  # a new file once the open one is this large

    def __post_init__(self) -> None:
        if not self.max_file_mb > 0:
            raise ValueError(f"max_file_mb = {self.max_file_mb:g} must be positive (the size "
                             "at which a new evidence file is started, in MB; default 1000).")

    @property
    def max_file_bytes(self) -> int:
        return max(1, int(self.max_file_mb * 1e6))


def load_evidence_config(table: Any, *, file: Path) -> EvidenceConfig:
    from builder.config import from_table

    return from_table(EvidenceConfig, table, file=file, where="evidence")


def ensure_schema(db: sqlite3.Connection) -> None:
    for statement in SCHEMA:
        db.execute(statement)


def has_schema(db: sqlite3.Connection) -> bool:
    """False for an output directory built before the archive existed."""
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = "
                      "'evidence_files'").fetchone() is not None


def served_from(db: sqlite3.Connection, pattern: str) -> list[tuple[int, int, str]]:
    """(build, seq, URL) of each candidate whose image bytes came from a URL matching the
    LIKE `pattern` (ESCAPE '\\'): its image record's target, where the candidate URL's
    redirects ended (a short link's, a CDN's). Every candidate is scanned in key order, its
    link and record found by their primary keys."""
    if not has_schema(db):
        return []
    return db.execute(
        "SELECT c.build, c.seq, r.target_uri FROM candidates AS c CROSS JOIN evidence_links "
        "AS l ON l.build = c.build AND l.seq = c.seq AND l.role = 'image' CROSS JOIN "
        "evidence_records AS r ON r.record_id = l.record_id WHERE r.target_uri LIKE ? "
        "ESCAPE '\\'", (pattern,)).fetchall()


def record_targets(db: sqlite3.Connection, record_ids: Iterable[str]) -> dict[str, str]:
    """{record id: the URL it records an answer from} of these records (an image record's
    is where the candidate URL's redirects ended); none for a ledger without the archive."""
    wanted = sorted(set(record_ids))
    if not wanted or not has_schema(db):
        return {}
    found: dict[str, str] = {}
    for start in range(0, len(wanted), 500):  # SQLite's limit on host parameters
        part = wanted[start:start + 500]
        found.update(db.execute(
            "SELECT record_id, target_uri FROM evidence_records WHERE record_id IN "
            f"({','.join('?' * len(part))})", part).fetchall())
    return found


def file_rows(db: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every archive file of the builds and takedowns, in order: name, size, sha256 (None
    while a build may still append to it) and how many responses it holds. The papers list
    these; a recheck's files (build < 0, recheck_archive.py) are the ledger's alone, since a
    recheck rewrites no paper, and `verify` checks them with the rest."""
    if not has_schema(db):
        return []
    counts = dict(db.execute("SELECT file, COUNT(*) FROM evidence_records GROUP BY file"))
    return [{"name": name, "size": size, "sha256": sha if complete else None,
             "records": counts.get(f"{DIRNAME}/{name}", 0)}
            for name, size, complete, sha in db.execute(
                "SELECT name, size, complete, sha256 FROM evidence_files WHERE build >= 0 "
                "ORDER BY build, number")]


def role_of(kind: str) -> str:
    return kind if kind in ("api", "image") else "signal"


@dataclass(frozen=True)
class Evidence:
    """The records a candidate relied on, by role, for provenance and the manifest."""

    api: tuple[Pointer, ...] = ()
    signals: tuple[Pointer, ...] = ()
    image: Pointer | None = None  # the response that delivered the bytes (last hop)

    def to_json(self) -> dict[str, Any]:
        return {"api": [p.to_json() for p in self.api],
                "signals": [p.to_json() for p in self.signals],
                "image": self.image.to_json() if self.image else None}


NO_EVIDENCE = Evidence()


class EvidenceArchive:
    def __init__(self, out: Path, db: sqlite3.Connection, *, build: int, dataset: str,
                 max_file_bytes: int = MAX_FILE_BYTES) -> None:
        self.dir = out / DIRNAME
        self.db = db
        self.build = build
        self.dataset = dataset
        self.max_file_bytes = max_file_bytes
        self.file: IO[bytes] | None = None
        self.name = ""
        self.number = -1
        self.written: dict[str, Pointer] = {}  # since the last sync, not in the ledger yet
        self.rows: list[tuple[Any, ...]] = []
        self.links: list[tuple[Any, ...]] = []
        self.replaced: list[tuple[int, int]] = []  # (build, seq) whose earlier links go
        self.recent: OrderedDict[Exchange | str, Pointer] = OrderedDict()
        from builder.sources._keys import scrub

        self.scrub = scrub
        ensure_schema(db)

    # -- opening and resuming -----------------------------------------------------------
    def open(self) -> None:
        """Continue this build's open file at its committed size, or start the next one."""
        self.dir.mkdir(exist_ok=True)
        rows = self.db.execute("SELECT name, number, size, complete FROM evidence_files "
                               "WHERE build = ? ORDER BY number", (self.build,)).fetchall()
        self._delete_uncommitted({name for name, *_ in rows})
        if rows and not rows[-1][3]:
            name, number, size, _ = rows[-1]
            self._reopen(name, number, size)
        else:
            self._start(rows[-1][1] + 1 if rows else 0)

    def _delete_uncommitted(self, known: set[str]) -> None:
        pattern = re.compile(rf"-build{self.build:04d}-\d{{5}}\.warc\.gz$")
        for path in sorted(self.dir.iterdir()):
            if pattern.search(path.name) and path.name not in known:
                path.unlink()  # started after the last commit: its records come again
        fsync_dir(self.dir)

    def _reopen(self, name: str, number: int, size: int) -> None:
        path = self.dir / name
        on_disk = path.stat().st_size if path.exists() else -1
        if on_disk < size:
            raise UserError(
                f"{path}: the ledger says {size} bytes of evidence were committed here, but "
                f"the file {'is missing' if on_disk < 0 else f'has {on_disk}'}. Restore it "
                "from a copy of the output directory; the archive cannot be continued.")
        self.file = path.open("r+b")
        self.file.truncate(size)  # records written after the last commit come again
        self.file.seek(size)
        os.fsync(self.file.fileno())
        self.name, self.number = name, number

    def _start(self, number: int) -> None:
        self.name = f"{self.dataset}-build{self.build:04d}-{number:05d}.warc.gz"
        self.number = number
        self.file = (self.dir / self.name).open("w+b")
        warc.writer(self.file).write_record(warc.warcinfo(self.name, self._info(), clock.now_iso()))

    def _info(self) -> dict[str, str]:
        from importlib.metadata import version

        return {
            "software": f"cleanset/{tool_version()} (warcio/{version('warcio')})",
            "format": "WARC File Format 1.1",
            "conformsTo": "https://iipc.github.io/warc-specifications/specifications/"
                          "warc-format/warc-1.1/",
            "isPartOf": self.dataset,
            "description": f"Evidence archive of cleanset build {self.build}: every response "
                           "a source, a host signal or an image download gave while deciding "
                           "a candidate. Provenance `evidence` and the ledger point into it.",
            "cleanset-build": str(self.build),
            "cleanset-redaction": warc.REDACTION_NOTE,
            "cleanset-images": warc.IMAGE_NOTE,
            "cleanset-bodies": warc.DECODING_NOTE,
        }

    # -- writing ------------------------------------------------------------------------
    def keep(self, seq: int, exchanges: Iterable[Exchange | warc.Prepared], *,
             retry: bool = False) -> Evidence:
        """Write what is not archived yet, link candidate `seq` to all of them, in order.

        A `retry` (a candidate an earlier run of this build refused for a transient reason)
        is decided from the candidate the ledger kept, without asking its source again: its
        API responses are those its earlier attempt was linked to, carried over, and the
        earlier attempt's links are replaced whole. (Replacing them position by position
        dropped the API page, the licence's evidence, from the sample's provenance, and left
        the earlier attempt's failed image answer linked as a second image.)"""
        api: list[Pointer] = []
        signals: list[Pointer] = []
        image: Pointer | None = None
        carried: list[tuple[str, Pointer]] = []
        if retry:
            carried = [("api", Pointer(file, record_id, offset)) for record_id, file, offset
                       in self.db.execute(
                           "SELECT r.record_id, r.file, r.offset FROM evidence_links l JOIN "
                           "evidence_records r ON r.record_id = l.record_id WHERE l.build = ? "
                           "AND l.seq = ? AND l.role = 'api' ORDER BY l.position",
                           (self.build, seq))]
            self.replaced.append((self.build, seq))  # deleted with the next commit's rows
        steps = [*carried, *((role_of(ex.kind), ex) for ex in exchanges)]
        for position, (role, ex) in enumerate(steps):
            pointer = ex if isinstance(ex, Pointer) else self.pointer(ex)
            self.links.append((self.build, seq, position, role, pointer.record_id))
            if role == "api":
                api.append(pointer)
            elif role == "image":
                image = pointer
            else:
                signals.append(pointer)
        return Evidence(tuple(api), tuple(signals), image)

    def pointer(self, ex: Exchange | warc.Prepared) -> Pointer:
        """Where `ex` is archived, writing it first when it is not. An exchange the stages
        prepared (warc.Prepared) is placed as it is; a raw one (the sources' API pages,
        made in this process) is made into records here."""
        # A prepared exchange is known by its record id (what _archived goes by anyway):
        # hashing the dataclass hashed its records' bytes, new objects from every batch.
        seen: Exchange | str = ex.record_id if isinstance(ex, warc.Prepared) else ex
        known = self.recent.get(seen)
        if known is not None:
            self.recent.move_to_end(seen)
            return known
        if isinstance(ex, warc.Prepared):
            if ex.build != self.build:
                raise RuntimeError(f"evidence prepared for build {ex.build} reached build "
                                   f"{self.build}: the stage plan names the wrong build")
            prepared = ex
        else:
            prepared = warc.prepare(self.build, ex, self.scrub)
        pointer = self._archived(prepared.record_id) or self._write(prepared)
        self.recent[seen] = pointer
        if len(self.recent) > KNOWN_EXCHANGES:
            self.recent.popitem(last=False)
        return pointer

    def _archived(self, record_id: str) -> Pointer | None:
        pointer = self.written.get(record_id)
        if pointer is not None:
            return pointer
        row = self.db.execute("SELECT file, offset FROM evidence_records WHERE record_id = ?",
                              (record_id,)).fetchone()
        return None if row is None else Pointer(row[0], record_id, row[1])

    def _write(self, prepared: warc.Prepared) -> Pointer:
        assert self.file is not None
        if self.file.tell() >= self.max_file_bytes:
            self._roll()
        offset = self.file.tell()
        self.file.write(prepared.records)
        pointer = Pointer(f"{DIRNAME}/{self.name}", prepared.record_id, offset)
        self.written[prepared.record_id] = pointer
        self.rows.append((prepared.record_id, self.build, pointer.file, offset, prepared.kind,
                          prepared.target_uri, prepared.status, prepared.payload_sha256))
        return pointer

    def _roll(self) -> None:
        self._close_file()
        self._start(self.number + 1)

    # -- durability (called by the pipeline just before each ledger commit) ---------------
    def sync(self) -> None:
        """Make the written bytes durable, then record them (uncommitted) in the ledger."""
        assert self.file is not None
        self.file.flush()
        os.fsync(self.file.fileno())
        self._record_file(complete=False)
        self._flush_rows()

    def finish(self, *, complete: bool) -> None:
        """At the end of a run: sync; when the build is complete, seal the file too."""
        if complete:
            self._close_file()
        else:
            self.sync()

    def abandon(self) -> None:
        """Close without recording anything: the ledger rolls back to the last commit."""
        if self.file is not None:
            with contextlib.suppress(OSError):  # the disk that failed may fail the flush too
                self.file.close()
            self.file = None

    def _close_file(self) -> None:
        assert self.file is not None
        self.sync()
        self.file.close()
        self.file = None
        path = self.dir / self.name
        self.db.execute("UPDATE evidence_files SET complete = 1, sha256 = ? WHERE name = ?",
                        (file_sha256(path), self.name))
        fsync_dir(self.dir)

    def _record_file(self, *, complete: bool) -> None:
        assert self.file is not None
        self.db.execute(
            "INSERT INTO evidence_files(name, build, number, size, complete) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET size = excluded.size",
            (self.name, self.build, self.number, self.file.tell(), int(complete)))

    def _flush_rows(self) -> None:
        self.db.executemany("INSERT INTO evidence_records VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            self.rows)
        self.db.executemany("DELETE FROM evidence_links WHERE build = ? AND seq = ?",
                            self.replaced)
        self.db.executemany("INSERT OR REPLACE INTO evidence_links VALUES (?, ?, ?, ?, ?)",
                            self.links)
        self.rows, self.links, self.written, self.replaced = [], [], {}, []


# -- takedowns ------------------------------------------------------------------------------
def log_takedown(out: Path, db: sqlite3.Connection, log: dict[str, Any]) -> None:
    """Archive a takedown as a `metadata` record in its own file, `evidence/ID.warc.gz`.

    The evidence of the removed samples stays where it is (it is the record of what was
    once included); this record says when, why and what was removed, and names the records
    each removed sample was decided from. The file is written whole under a temporary name,
    fsynced and renamed, and its ledger row goes in the caller's transaction: a takedown
    re-run after a crash writes the same bytes again."""
    ensure_schema(db)
    folder = out / DIRNAME
    folder.mkdir(exist_ok=True)
    name = f"{log['id']}.warc.gz"
    body = json.dumps({**log, "evidence": _records_of(db, log["keys"])}, sort_keys=True,
                      indent=1).encode("utf-8")
    tmp = folder / f".{name}.tmp"
    with tmp.open("wb") as f:
        out_warc = warc.writer(f)
        out_warc.write_record(warc.warcinfo(name, {
            "software": f"cleanset/{tool_version()}", "format": "WARC File Format 1.1",
            "description": f"cleanset {log['id']}: the takedown's log entry (takedowns.jsonl) "
                           "and the evidence records of every sample it removed."},
            log["when"]))
        out_warc.write_record(warc.metadata(f"urn:cleanset:{log['id']}",
                                            warc.record_id("takedown", log["id"]), log["when"],
                                            body))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / name)
    fsync_dir(folder)
    path = folder / name
    db.execute("INSERT OR REPLACE INTO evidence_files(name, build, number, size, complete, "
               "sha256) VALUES (?, 0, ?, ?, 1, ?)",
               (name, int(log["version"]), path.stat().st_size, file_sha256(path)))


def _records_of(db: sqlite3.Connection, keys: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {key: [] for key in keys}
    for key, record_id in db.execute(
            "SELECT c.key, l.record_id FROM candidates c JOIN evidence_links l ON "
            f"l.build = c.build AND l.seq = c.seq WHERE c.key IN ({','.join('?' * len(keys))}) "
            "ORDER BY c.key, l.position", keys):
        found[key].append(record_id)
    return found
