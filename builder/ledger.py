"""The ledger: SQLite working state of an output directory, one row per candidate ever considered.

It is the auditor's record (why each candidate is in or out) and the build's memory (where a
resumed build continues, which shard is open, which hashes are already admitted). Writes are
batched into one transaction per pipeline window; the pipeline commits only after the shard
bytes those rows describe are durable.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.errors import UserError

SCHEMA_VERSION = "1"
LEDGER_FILE = "ledger.sqlite"
# Meta: the text of the recipe each build started from, so an unfinished build's recipe
# can be told apart from an edit of it, got back after one, and rechecked from.
RECIPE_TEXT_META = "recipe_text:{build}"


def latest_recipe_table(db: sqlite3.Connection) -> dict[str, Any]:
    """The recipe the latest build recorded (RECIPE_TEXT_META), parsed; {} when it recorded
    none (a ledger of an earlier cleanset) or it does not parse."""
    import tomllib

    row = db.execute("SELECT value FROM meta WHERE key = (SELECT 'recipe_text:' || MAX(build) "
                     "FROM builds)").fetchone()
    try:
        table = tomllib.loads(row[0]) if row and row[0] else {}
    except tomllib.TOMLDecodeError:
        return {}
    return table if isinstance(table, dict) else {}
# SQLite's logs beside the ledger that may hold committed rows not yet in the file itself.
_LOGS = ("-wal", "-journal")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS builds (
    build          INTEGER PRIMARY KEY,
    recipe_sha256  TEXT NOT NULL,
    recipe_path    TEXT NOT NULL,
    dataset_name   TEXT NOT NULL,
    policy         TEXT NOT NULL,      -- JSON of the policy as decided
    tool_version   TEXT NOT NULL,
    started_at     TEXT NOT NULL,
    finished_at    TEXT,
    exhausted      INTEGER NOT NULL DEFAULT 0,   -- every source was read to its end
    next_seq       INTEGER NOT NULL DEFAULT 0,   -- candidates decided so far in this build
    source_index   INTEGER NOT NULL DEFAULT 0,   -- which [[sources]] entry the next candidate comes from
    source_resume  TEXT                          -- that source's resume state (JSON), null = from the start
);
CREATE TABLE IF NOT EXISTS candidates (
    build         INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    candidate_id  TEXT NOT NULL,
    source        TEXT NOT NULL,
    url           TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('accepted', 'rejected', 'removed')),
    reason        TEXT,
    detail        TEXT,
    key           TEXT,
    license       TEXT,
    decided_at    TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 1,   -- runs that tried it (transient failures retry)
    retry_with    TEXT,   -- the Candidate as JSON while its outcome is transient, else null
    earlier       TEXT,   -- JSON list of earlier attempts' outcomes, oldest first
    PRIMARY KEY (build, seq)
);
CREATE INDEX IF NOT EXISTS candidates_key ON candidates(key);
CREATE TABLE IF NOT EXISTS samples (
    key          TEXT PRIMARY KEY,
    shard        INTEGER NOT NULL,
    build        INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    sha256       TEXT NOT NULL,
    sha1         TEXT NOT NULL,
    pdq          TEXT,
    pdq_quality  INTEGER,
    phash        TEXT,
    license      TEXT NOT NULL,
    license_url  TEXT,
    source       TEXT NOT NULL,
    source_id    TEXT NOT NULL,
    file_url     TEXT,
    landing_url  TEXT,
    creator      TEXT,
    title        TEXT,
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    mime         TEXT NOT NULL,
    ext          TEXT NOT NULL,
    bytes        INTEGER NOT NULL,
    provenance   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_sha256 ON samples(sha256);
CREATE INDEX IF NOT EXISTS samples_shard ON samples(shard);
CREATE TABLE IF NOT EXISTS shards (
    shard      INTEGER PRIMARY KEY,
    build      INTEGER NOT NULL,
    samples    INTEGER NOT NULL DEFAULT 0,
    data_end   INTEGER NOT NULL DEFAULT 0,   -- byte offset after the last committed member
    complete   INTEGER NOT NULL DEFAULT 0,
    size       INTEGER,
    sha256     TEXT
);
-- Every cleanset that ran a build: the one that started it (also builds.tool_version), then
-- each other one that went on with it (a resume, a retry pass) after an upgrade.
CREATE TABLE IF NOT EXISTS build_tools (
    build         INTEGER NOT NULL,
    tool_version  TEXT NOT NULL,
    first_ran_at  TEXT NOT NULL,
    PRIMARY KEY (build, tool_version)
);
"""


@dataclass(frozen=True)
class BuildRow:
    build: int
    recipe_sha256: str
    recipe_path: str
    dataset_name: str
    policy: str
    tool_version: str
    started_at: str
    finished_at: str | None
    exhausted: bool
    next_seq: int
    source_index: int
    source_resume: dict[str, Any] | None


@dataclass(frozen=True)
class RetryRow:
    """A candidate whose last outcome was transient, as the ledger holds it."""

    build: int
    seq: int
    attempts: int
    candidate_json: str
    reason: str
    detail: str | None
    decided_at: str
    earlier: str | None  # JSON list of the outcomes before the last one


@dataclass(frozen=True)
class ShardRow:
    shard: int
    build: int
    samples: int
    data_end: int
    complete: bool
    size: int | None
    sha256: str | None


class Ledger:
    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        """`readonly`: for commands that only read (see `reading`); nothing is written to,
        or created next to, the ledger, and any write raises."""
        self.path = path
        self.readonly = readonly
        self._scratch: Path | None = None  # a read-only open's private copy (see below)
        if readonly:
            self._db, self._scratch = _connect_readonly(path)
        else:
            self._db = _connect_for_writing(path)
        self._in_tx = False
        # Rows are buffered and written with executemany when anything reads or commits:
        # one statement per decision would cost more than the decision itself.
        self._pending_candidates: list[tuple[Any, ...]] = []
        self._pending_samples: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        self._pending_sha: dict[str, str] = {}
        self._sha_prefixes: set[int] | None = None

    @property
    def db(self) -> sqlite3.Connection:
        """The connection, with every buffered row written: for callers that query directly."""
        self.flush()
        return self._db

    def flush(self) -> None:
        if self._pending_candidates:
            self._db.executemany(
                "INSERT INTO candidates(build, seq, candidate_id, source, url, status, reason,"
                " detail, key, license, decided_at, attempts, retry_with)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                self._pending_candidates)
            self._pending_candidates = []
        for cols, rows in self._pending_samples.items():
            marks = ", ".join("?" for _ in cols)
            self._db.executemany(f"INSERT INTO samples({', '.join(cols)}) VALUES ({marks})",
                                 rows)
        self._pending_samples = {}
        self._pending_sha = {}

    def close(self) -> None:
        if self._in_tx:
            self.rollback()
        self._db.close()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def another_reader(self) -> sqlite3.Connection:
        """One more read-only connection to what this read-only ledger reads (its private copy
        when it made one), for a caller that queries in parallel threads."""
        assert self.readonly, "another_reader is for ledgers opened read-only"
        if self._scratch is not None:
            db = sqlite3.connect(str(self._scratch / self.path.name), check_same_thread=False)
        else:
            db = sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro&immutable=1",
                                 uri=True, check_same_thread=False)
        db.execute("PRAGMA query_only=1")
        return db

    # -- transactions -------------------------------------------------------------------
    def begin(self) -> None:
        if not self._in_tx:
            self._db.execute("BEGIN IMMEDIATE")
            self._in_tx = True

    def commit(self) -> None:
        self.flush()
        if self._in_tx:
            self._db.execute("COMMIT")
            self._in_tx = False

    def rollback(self) -> None:
        self._pending_candidates = []
        self._pending_samples = {}
        self._pending_sha = {}
        self._sha_prefixes = None  # may hold rolled-back hashes; rebuilt on demand
        if self._in_tx:
            self._db.execute("ROLLBACK")
            self._in_tx = False

    def checkpoint(self) -> None:
        """Commit, and fold the write-ahead log into the ledger file (when no other
        connection holds an older snapshot: the caller holds the directory's write lock)."""
        self.commit()
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    # -- meta ---------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def delete_meta(self, key: str) -> None:
        self._db.execute("DELETE FROM meta WHERE key = ?", (key,))

    # -- builds -------------------------------------------------------------------------
    def latest_build(self) -> BuildRow | None:
        row = self._db.execute("SELECT * FROM builds ORDER BY build DESC LIMIT 1").fetchone()
        return _build_row(row) if row else None

    def builds(self) -> list[BuildRow]:
        return [_build_row(r) for r in self._db.execute("SELECT * FROM builds ORDER BY build")]

    def build(self, build: int) -> BuildRow | None:
        row = self._db.execute("SELECT * FROM builds WHERE build = ?", (build,)).fetchone()
        return _build_row(row) if row else None

    def start_build(self, *, recipe_sha256: str, recipe_path: str, dataset_name: str,
                    policy: dict[str, Any], tool_version: str, started_at: str) -> BuildRow:
        self.begin()
        cur = self._db.execute(
            "INSERT INTO builds(recipe_sha256, recipe_path, dataset_name, policy, tool_version,"
            " started_at) VALUES (?, ?, ?, ?, ?, ?)",
            (recipe_sha256, recipe_path, dataset_name, json.dumps(policy, sort_keys=True),
             tool_version, started_at),
        )
        self._db.execute("INSERT INTO build_tools VALUES (?, ?, ?)",
                         (cur.lastrowid, tool_version, started_at))
        self.commit()
        build = self.build(int(cur.lastrowid or 0))
        assert build is not None
        return build

    def tools(self, build: BuildRow) -> list[str]:
        return build_tools(self._db, build.build, build.tool_version)

    def note_tool(self, build: BuildRow, version: str, at: str) -> None:
        """`version` goes on with `build`; a build older than build_tools is noted as
        started by the cleanset its row names."""
        self.begin()
        self._db.executemany("INSERT OR IGNORE INTO build_tools VALUES (?, ?, ?)",
                             [(build.build, build.tool_version, build.started_at),
                              (build.build, version, at)])
        self.commit()

    def advance(self, build: int, *, next_seq: int, source_index: int,
                source_resume: dict[str, Any] | None) -> None:
        # Keys in the source's own order: a source that turns its state back into a query
        # (MediaWiki's `continue`) then asks byte for byte what it asked before the stop,
        # and the evidence archive records the same request.
        self._db.execute(
            "UPDATE builds SET next_seq = ?, source_index = ?, source_resume = ? WHERE build = ?",
            (next_seq, source_index,
             None if source_resume is None else json.dumps(source_resume), build),
        )

    def finish_build(self, build: int, *, finished_at: str, exhausted: bool) -> None:
        self._db.execute(
            "UPDATE builds SET finished_at = ?, exhausted = ? WHERE build = ?",
            (finished_at, int(exhausted), build),
        )

    def reopen_build(self, build: int) -> None:
        self._db.execute("UPDATE builds SET finished_at = NULL WHERE build = ?", (build,))

    # -- candidates ---------------------------------------------------------------------
    def record_candidate(self, *, build: int, seq: int, candidate_id: str, source: str, url: str,
                         status: str, reason: str | None, detail: str | None, key: str | None,
                         license: str | None, decided_at: str,
                         retry_with: str | None = None) -> None:
        self._pending_candidates.append(
            (build, seq, candidate_id, source, url, status, reason, detail, key, license,
             decided_at, 1, retry_with))

    # -- candidates to try again (transient failures of earlier runs) ------------------
    def retryable(self, build: int, *, after_seq: int, max_attempts: int,
                  reasons: Iterable[str], limit: int = 256) -> list[RetryRow]:
        """The next `limit` rows of `build` after `after_seq` whose last outcome was one of
        the transient `reasons` and that have attempts left, in seq order. Read a page at a
        time: the caller updates these rows while it works through them."""
        reasons = sorted(reasons)
        marks = ", ".join("?" for _ in reasons)
        rows = self.db.execute(
            "SELECT build, seq, attempts, retry_with, reason, detail, decided_at, earlier"
            " FROM candidates WHERE build = ? AND seq > ? AND retry_with IS NOT NULL"
            f" AND status = 'rejected' AND attempts < ? AND reason IN ({marks})"
            " ORDER BY seq LIMIT ?", (build, after_seq, max_attempts, *reasons, limit))
        return [RetryRow(*row) for row in rows]

    def has_retryable(self, build: int, *, max_attempts: int, reasons: Iterable[str]) -> bool:
        return bool(self.retryable(build, after_seq=-1, max_attempts=max_attempts,
                                   reasons=reasons, limit=1))

    def record_retry(self, row: RetryRow, *, status: str, reason: str | None,
                     detail: str | None, key: str | None, license: str | None,
                     decided_at: str, retry_with: str | None) -> None:
        """Replace a retried candidate's outcome in its own row (one row per candidate),
        keeping the outcome it replaces in `earlier`."""
        earlier = json.loads(row.earlier) if row.earlier else []
        earlier.append({"attempt": row.attempts, "reason": row.reason, "detail": row.detail,
                        "decided_at": row.decided_at})
        self.flush()
        self._db.execute(
            "UPDATE candidates SET status = ?, reason = ?, detail = ?, key = ?, license = ?,"
            " decided_at = ?, attempts = ?, retry_with = ?, earlier = ?"
            " WHERE build = ? AND seq = ?",
            (status, reason, detail, key, license, decided_at, row.attempts + 1, retry_with,
             json.dumps(earlier, ensure_ascii=False), row.build, row.seq))

    def candidate_counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT status, COUNT(*) FROM candidates GROUP BY status"))

    def reason_counts(self, build: int | None = None) -> dict[str, int]:
        sql = "SELECT reason, COUNT(*) FROM candidates WHERE status = 'rejected'"
        args: tuple[Any, ...] = ()
        if build is not None:
            sql += " AND build = ?"
            args = (build,)
        return dict(self.db.execute(sql + " GROUP BY reason ORDER BY reason", args))

    def iter_candidates(self) -> Iterator[sqlite3.Row]:
        cur = self.db.cursor()
        cur.row_factory = sqlite3.Row
        yield from rows_of(cur.execute("SELECT * FROM candidates ORDER BY build, seq"))

    # -- samples ------------------------------------------------------------------------
    def add_sample(self, row: dict[str, Any]) -> None:
        self._pending_samples.setdefault(tuple(row), []).append(tuple(row.values()))
        sha = str(row["sha256"])
        self._pending_sha.setdefault(sha, str(row["key"]))
        if self._sha_prefixes is not None:
            self._sha_prefixes.add(int(sha[:16], 16))

    def key_for_sha256(self, sha256: str, *, prefixes: bool = True) -> str | None:
        """The first sample with these bytes. A set of 64-bit prefixes of every sample's
        sha256 answers "no" (the common case) without touching SQLite; `prefixes=False`
        skips it, for a caller that keeps that set elsewhere (Ray actors)."""
        pending = self._pending_sha.get(sha256)
        if pending is not None:
            return pending
        if not prefixes:
            row = self._db.execute(
                "SELECT key FROM samples WHERE sha256 = ? ORDER BY key LIMIT 1", (sha256,)
            ).fetchone()
            return row[0] if row else None
        if self._sha_prefixes is None:
            self._sha_prefixes = {int(sha[:16], 16) for sha in self.sample_sha256s()}
        if int(sha256[:16], 16) not in self._sha_prefixes:
            return None
        row = self._db.execute(
            "SELECT key FROM samples WHERE sha256 = ? ORDER BY key LIMIT 1", (sha256,)
        ).fetchone()
        return row[0] if row else None

    def sample_candidate_id(self, key: str) -> str | None:
        """The candidate id (`source:source_id`) sample `key` was admitted as."""
        row = self.db.execute("SELECT source, source_id FROM samples WHERE key = ?",
                              (key,)).fetchone()
        return f"{row[0]}:{row[1]}" if row else None

    def sample_sha256s(self) -> Iterator[str]:
        """The sha256 of every sample (buffered ones included), in no particular order."""
        for (sha,) in self.db.execute("SELECT sha256 FROM samples"):
            yield sha

    def sample_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM samples").fetchone()[0])

    def iter_samples(self, where: str = "", args: Iterable[Any] = ()) -> Iterator[sqlite3.Row]:
        cur = self.db.cursor()
        cur.row_factory = sqlite3.Row
        yield from rows_of(cur.execute(f"SELECT * FROM samples {where} ORDER BY key", tuple(args)))

    # -- shards -------------------------------------------------------------------------
    def open_shard(self) -> ShardRow | None:
        row = self._db.execute(
            "SELECT * FROM shards WHERE complete = 0 ORDER BY shard DESC LIMIT 1"
        ).fetchone()
        return _shard_row(row) if row else None

    def last_shard(self) -> ShardRow | None:
        row = self._db.execute("SELECT * FROM shards ORDER BY shard DESC LIMIT 1").fetchone()
        return _shard_row(row) if row else None

    def shards(self) -> list[ShardRow]:
        return [_shard_row(r) for r in self._db.execute("SELECT * FROM shards ORDER BY shard")]

    def upsert_shard(self, *, shard: int, build: int, samples: int, data_end: int,
                     complete: bool, size: int | None = None, sha256: str | None = None) -> None:
        self._db.execute(
            "INSERT INTO shards(shard, build, samples, data_end, complete, size, sha256)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(shard) DO UPDATE SET"
            " samples = excluded.samples, data_end = excluded.data_end,"
            " complete = excluded.complete, size = excluded.size, sha256 = excluded.sha256",
            (shard, build, samples, data_end, int(complete), size, sha256),
        )


def _connect_for_writing(path: Path) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per window.
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    # One transaction: a command checking the directory meanwhile (a build started at the
    # same moment, `output_dir.ledger_kind`) sees no tables or all of them; created one by
    # one, a ledger holding `meta` alone was taken for someone else's database.
    db.executescript(f"BEGIN IMMEDIATE;\n{SCHEMA}\nCOMMIT;")
    _add_missing_columns(db)
    db.execute(
        "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,)
    )
    return db


def require_dataset(out: Path, *, hint: str = "") -> None:
    """Refuse (UserError, exit 2) what is not a dataset's output directory, naming what was
    given: a file or folder inside one (its ledger.sqlite, manifest.parquet, shards/: the
    command wants the directory itself, which the message gives), a file elsewhere, a path
    that does not exist, a directory without a ledger. `hint`: the command's own last words
    (e.g. that a URL it was published to will do)."""
    tail = f" {hint}" if hint else ""
    if out.is_dir() and (out / LEDGER_FILE).exists():
        return
    holder = next((parent for parent in out.parents if (parent / LEDGER_FILE).is_file()), None)
    if out.exists() and holder is not None:
        what = "a file" if not out.is_dir() else "a folder"
        raise UserError(f"{out}: is {what} inside the dataset in {holder}; give that directory "
                        f"instead: {holder}")
    if out.is_dir():
        raise UserError(f"{out}: has no {LEDGER_FILE}; is this a cleanset output directory? "
                        f"Give the output directory of a build.{tail}")
    what = "is a file, not a directory" if out.exists() else "no such directory"
    raise UserError(f"{out}: {what}. Give the output directory of a build.{tail}")


@contextmanager
def reading(out: Path, command: str) -> Iterator[Ledger]:
    """The ledger of output directory `out`, read-only, under the directory's read lock: no
    cleanset writer can start while it is open, and one already running stops `command`
    with a message naming it (exit 1) instead of a "database is locked" traceback."""
    from builder.lock import ReadLock

    with ReadLock(out, command):
        ledger = Ledger(out / LEDGER_FILE, readonly=True)
        try:
            yield ledger
        finally:
            ledger.close()


def _connect_readonly(path: Path) -> tuple[sqlite3.Connection, Path | None]:
    """A connection that writes nothing, not even SQLite's -shm index beside the ledger
    (which `mode=ro` creates, and which a read-only directory or user cannot), and the
    private directory to delete on close, if one was needed.

    `immutable=1` reads the file as it stands, without locks or side files; the caller holds
    the directory's read lock, so no cleanset writer changes it meanwhile. A non-empty -wal
    left by a build that crashed holds committed rows that an immutable open would silently
    miss: then ledger and log are copied to a private directory and the copy is opened there,
    where SQLite can replay the log as a writer would.
    """
    _check_readable(path)
    logs = [path.with_name(path.name + s) for s in _LOGS]
    if not any(log.is_file() and log.stat().st_size > 0 for log in logs):
        db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro&immutable=1", uri=True,
                             isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA query_only=1")
        _check_tables(db, path)
        return db, None
    scratch = _private_copy(path, logs)
    try:
        db = sqlite3.connect(str(scratch / path.name), isolation_level=None,
                             check_same_thread=False)
        db.execute("PRAGMA query_only=1")
        _check_tables(db, path)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return db, scratch


def _private_copy(path: Path, logs: list[Path]) -> Path:
    """The ledger and its logs copied into a new temporary directory. A copy that fails
    for want of room there is the temporary directory's fault, not the ledger's: read as
    the ledger's, it said "cannot be read (No space left on device). Restore it from a good
    copy", and an older copy put back would lose what the stopped build had committed."""
    try:
        scratch = Path(tempfile.mkdtemp(prefix="cleanset-ledger-"))
    except OSError as exc:  # none of the temporary directories can be written
        raise _no_room_for_copy(path, logs, exc) from None
    try:
        for source in [path, *logs]:
            if source.is_file():
                shutil.copyfile(source, scratch / source.name)
    except OSError as exc:
        shutil.rmtree(scratch, ignore_errors=True)
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise  # the ledger's own side (unreadable): the command names it
        raise _no_room_for_copy(path, logs, exc) from None
    return scratch


def _no_room_for_copy(path: Path, logs: list[Path], exc: OSError) -> UserError:
    need = sum(f.stat().st_size for f in [path, *logs] if f.is_file())
    try:
        where = tempfile.gettempdir()
    except OSError:  # no usable one at all: Python tried TMPDIR, /tmp, /var/tmp, /usr/tmp
        where = os.environ.get("TMPDIR") or "/tmp"
    error = UserError(
        f"{path}: its write-ahead log holds committed rows (a build running, or stopped before "
        "it finished), which reading it replays in a private copy of the ledger in the "
        f"temporary directory ({where}); that copy could not be made ({exc.strerror or exc}). "
        f"The ledger is whole: free {need / 1e6:.1f} MB there or set TMPDIR to a directory "
        "with room, then run the same command again.")
    error.exit_code = 1  # not the user's input: the machine's room (a build ends on it too)
    return error


# Every ledger a build ever created holds these (the writer creates them as it opens one).
LEDGER_TABLES = ("meta", "builds", "candidates", "samples", "shards")


def _check_tables(db: sqlite3.Connection, path: Path) -> None:
    """SQLite reads a file truncated to 0 bytes as an empty database: without this, a reader
    answered from its missing tables ("built before cleanset kept an evidence archive", "the
    ledger records no build") instead of saying the ledger is gone."""
    have = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    missing = [t for t in LEDGER_TABLES if t not in have]
    if missing:
        db.close()
        raise sqlite3.DatabaseError(
            f"{path.stat().st_size} bytes without the ledger's tables ({', '.join(missing)} "
            "missing): truncated or written over")


def check_not_emptied(path: Path) -> None:
    """Refuse a ledger of 0 bytes before writing to it: SQLite opens such a file as a new,
    empty database, so a takedown or recheck on a copy a bad transfer truncated wrote a fresh
    ledger over the loss and answered from it ("nothing matches")."""
    if path.is_file() and path.stat().st_size == 0:
        raise UserError(f"{path}: 0 bytes: the ledger was truncated or written over. Restore "
                        f"{path.name} from a good copy of the dataset. Nothing was changed.")


def _check_readable(path: Path) -> None:
    try:
        with path.open("rb"):
            pass
    except FileNotFoundError:
        raise UserError(f"{path.parent}: has no {path.name}; is this a cleanset output "
                        "directory?") from None
    except PermissionError:
        raise UserError(f"{path}: this user may not read it. Ask for read access to the "
                        "output directory, or audit a copy you can read.") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not the ledger (a damaged copy?). Restore "
                        f"{path.name} from a good copy of the dataset.") from None


# Columns added after a ledger format was first released: (table, column, declaration).
LATER_COLUMNS = (
    ("candidates", "attempts", "INTEGER NOT NULL DEFAULT 1"),
    ("candidates", "retry_with", "TEXT"),
    ("candidates", "earlier", "TEXT"),
)


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Bring a ledger written by an older cleanset up to this schema, in place (every row
    an older build decided counts as one attempt, with nothing to retry)."""
    add_columns(db, LATER_COLUMNS)
    # Only transient rows carry retry_with: a small partial index finds them in any ledger.
    db.execute("CREATE INDEX IF NOT EXISTS candidates_retry ON candidates(build, seq)"
               " WHERE retry_with IS NOT NULL")


def add_columns(db: sqlite3.Connection, later: Iterable[tuple[str, str, str]]) -> None:
    """Add each (table, column, declaration) a table lacks: a writable open's migration of a
    ledger an older cleanset wrote (the recheck tables' too, builder/recheck_log.py)."""
    for table, column, declaration in later:
        present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")


def build_tools(db: sqlite3.Connection, build: int, started_by: str) -> list[str]:
    """Every cleanset that ran `build`, in order, the one that started it (`started_by`,
    its row's tool_version) first; a ledger older than build_tools knows only that one."""
    has = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = "
                     "'build_tools'").fetchone()
    ran = [version for (version,) in db.execute(
        "SELECT tool_version FROM build_tools WHERE build = ? ORDER BY first_ran_at, rowid",
        (build,))] if has else []
    return [started_by, *(v for v in ran if v != started_by)]


def _build_row(row: tuple[Any, ...]) -> BuildRow:
    (build, sha, path, name, policy, version, started, finished, exhausted, next_seq, src_index,
     src_resume) = row
    return BuildRow(
        build=build, recipe_sha256=sha, recipe_path=path, dataset_name=name, policy=policy,
        tool_version=version, started_at=started, finished_at=finished, exhausted=bool(exhausted),
        next_seq=next_seq, source_index=src_index,
        source_resume=json.loads(src_resume) if src_resume else None,
    )


def _shard_row(row: tuple[Any, ...]) -> ShardRow:
    shard, build, samples, data_end, complete, size, sha = row
    return ShardRow(shard=shard, build=build, samples=samples, data_end=data_end,
                    complete=bool(complete), size=size, sha256=sha)


def rows_of(cursor: sqlite3.Cursor) -> Iterator[Any]:
    """A cursor's rows, for a generator to hand on. Not `yield from cursor`: a generator
    dropped half-way (Ctrl-C while the papers are written) then closes the cursor, after
    the ledger itself was closed, and Python prints that error as "Exception ignored"."""
    for row in cursor:  # noqa: UP028 - the point of this function
        yield row
