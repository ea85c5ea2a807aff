"""What a recheck relied on, archived: the answers behind every sample it did not find
unchanged (the API page, the HEAD, the robots.txt, ai.txt or tdmrep.json that refused),
and every host file it read, whatever it found (once per host: what a host consented to on
the day of the recheck, for the samples found unchanged too).

A recheck's verdicts live in the ledger (`recheck_results`); without this, a sample that
`recheck --apply` took down had only build day's records, which had admitted it, and
nothing to show what refused it. Each chunk of a recheck writes its new records to a file
of its own, `evidence/NAME-recheckNNNN-KEY.warc.gz` (KEY: the chunk's first sample),
whole under a temporary name, fsynced and renamed; the chunk's ledger transaction then
names the file, its records and which sample relied on which (`recheck_evidence`). A chunk
redone after a crash writes its file again; a file no commit names is deleted when the
recheck (re)starts. Records are namespaced by the recheck: `build` is -N for recheck N in
`evidence_files` and `evidence_records`, and a record's id is `warc.record_id(-N, target,
block)`, so `verify` and `cleanset evidence` hold them to their ids as a build's.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from builder import clock
from builder.evidence import warc
from builder.evidence.archive import DIRNAME, ensure_schema
from builder.faults import crash_point
from builder.identity import tool_version
from builder.records import Exchange
from builder.shards import file_sha256, fsync_dir

SCHEMA = """CREATE TABLE IF NOT EXISTS recheck_evidence (
    recheck    INTEGER NOT NULL,
    key        TEXT NOT NULL,            -- the sample judged
    position   INTEGER NOT NULL,         -- in the order the verdict relied on them
    record_id  TEXT NOT NULL,
    PRIMARY KEY (recheck, key, position)
)"""


def namespace(recheck: int) -> int:
    """The `build` a recheck's records are made and indexed under."""
    return -recheck


def has_schema(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = "
                      "'recheck_evidence'").fetchone() is not None


def records_of(db: sqlite3.Connection, recheck: int, key: str
               ) -> list[tuple[str, str, int, str]]:
    """(record_id, file, offset, kind) of what recheck `recheck` relied on for `key`."""
    if not has_schema(db):
        return []
    return db.execute(
        "SELECT r.record_id, r.file, r.offset, r.kind FROM recheck_evidence e JOIN "
        "evidence_records r ON r.record_id = e.record_id WHERE e.recheck = ? AND e.key = ? "
        "ORDER BY e.position", (recheck, key)).fetchall()


class RecheckArchive:
    def __init__(self, out: Path, db: sqlite3.Connection, *, recheck: int, dataset: str
                 ) -> None:
        from builder.sources._keys import scrub

        self.dir = out / DIRNAME
        self.db = db
        self.recheck = recheck
        self.dataset = dataset
        self.scrub = scrub
        ensure_schema(db)
        db.execute(SCHEMA)
        self._host_files_kept: set[Exchange] = set()
        self._delete_uncommitted()

    def _delete_uncommitted(self) -> None:
        if not self.dir.is_dir():
            return
        known = {name for (name,) in self.db.execute(
            "SELECT name FROM evidence_files WHERE build = ?", (namespace(self.recheck),))}
        mine = re.compile(rf"^\.?{re.escape(self.dataset)}-recheck{self.recheck:04d}-")
        for path in self.dir.iterdir():
            if mine.match(path.name) and path.name not in known:
                path.unlink()  # written before a crash that undid its commit: comes again
        fsync_dir(self.dir)

    def keep(self, first_key: str, relied: Iterable[tuple[str, list[Exchange]]],
             host_files: Iterable[Exchange] = ()) -> None:
        """Archive what each (key, answers) relied on, and `host_files` (every robots.txt,
        ai.txt and tdmrep.json the chunk's samples were judged by, linked to no sample);
        call inside the chunk's transaction."""
        ns = namespace(self.recheck)
        made: dict[Exchange, warc.Prepared] = {}  # a host's files, relied on by many samples
        new: dict[str, warc.Prepared] = {}
        links: list[tuple[int, str, int, str]] = []

        def prepare(ex: Exchange) -> warc.Prepared:
            prepared = made.get(ex)
            if prepared is None:
                prepared = made[ex] = warc.prepare(ns, ex, self.scrub)
                if self.db.execute("SELECT 1 FROM evidence_records WHERE record_id = ?",
                                   (prepared.record_id,)).fetchone() is None:
                    new.setdefault(prepared.record_id, prepared)
            return prepared

        for key, exchanges in relied:
            for position, ex in enumerate(exchanges):
                links.append((self.recheck, key, position, prepare(ex).record_id))
        for ex in host_files:
            # A host's files are read once per recheck and named by every chunk of its
            # samples: prepared (gzipped) the first time only.
            if ex not in self._host_files_kept:
                prepare(ex)
                self._host_files_kept.add(ex)
        if new:
            self._write(f"{self.dataset}-recheck{self.recheck:04d}-{first_key}.warc.gz",
                        int(first_key) if first_key.isdigit() else 0, list(new.values()))
        self.db.executemany("INSERT OR REPLACE INTO recheck_evidence VALUES (?, ?, ?, ?)",
                            links)

    def _write(self, name: str, number: int, records: list[warc.Prepared]) -> None:
        self.dir.mkdir(exist_ok=True)
        tmp = self.dir / f".{name}.tmp"
        rows = []
        with tmp.open("wb") as f:
            warc.writer(f).write_record(warc.warcinfo(name, self._info(), clock.now_iso()))
            for prepared in records:
                rows.append((prepared.record_id, namespace(self.recheck), f"{DIRNAME}/{name}",
                             f.tell(), prepared.kind, prepared.target_uri, prepared.status,
                             prepared.payload_sha256))
                f.write(prepared.records)
            f.flush()
            os.fsync(f.fileno())
        path = self.dir / name
        os.replace(tmp, path)
        fsync_dir(self.dir)
        crash_point("recheck_archived")  # a file no commit names yet: deleted at a restart
        self.db.execute("INSERT OR REPLACE INTO evidence_files(name, build, number, size, "
                        "complete, sha256) VALUES (?, ?, ?, ?, 1, ?)",
                        (name, namespace(self.recheck), number, path.stat().st_size,
                         file_sha256(path)))
        self.db.executemany("INSERT INTO evidence_records VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            rows)

    def _info(self) -> dict[str, str]:
        return {
            "software": f"cleanset/{tool_version()}",
            "format": "WARC File Format 1.1",
            "isPartOf": self.dataset,
            "description": f"Evidence of cleanset recheck {self.recheck}: the answers behind "
                           "each sample it did not find unchanged, and every host file it "
                           "read. The ledger's recheck_evidence table names which sample "
                           "relied on which.",
            "cleanset-recheck": str(self.recheck),
            "cleanset-redaction": warc.REDACTION_NOTE,
        }
