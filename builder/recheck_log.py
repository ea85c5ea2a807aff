"""The ledger's record of rechecks: one row per recheck (date, scope, progress, outcomes)
and one per sample that drifted or could not be checked.

A recheck commits after every chunk of samples (their verdicts, how many are done, and the
last key done, in key order), so a recheck killed at any point resumes after the last chunk
it committed. While it runs it keeps every sample's verdict (for `--json` after a resume);
once finished, the `unchanged` rows are dropped (their count stays in `counts`): a weekly
recheck of a million samples must not add a million rows a week.

`rechecks.status`: running, finished, or abandoned (a recheck of another scope, or of an
earlier dataset version, started before it finished).

`rechecks.tool_version`: the cleanset that started the recheck (builder.identity), and
`resumed_by` every other one that went on with it, in order (a JSON list; null when none):
a recheck stopped, cleanset upgraded and the recheck resumed was decided by both, as a build
so resumed names both in `build_tools`. Both are null in the rows of a cleanset before them.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from builder import clock
from builder.drift import DRIFT, Outcome, Verdict
from builder.errors import UserError
from builder.identity import describe_tools

# A recheck older than this is old: sources revise rights and hosts add opt-outs all the
# time (docs/recheck.md suggests a weekly one; a quarter is generous). The report names a
# last recheck this old as open, and an unfinished one this old is started afresh rather
# than finished with verdicts that old. A recipe's `[recheck] max_age_days` sets it for its
# dataset (a team's own policy: monthly, weekly).
RECHECK_MAX_AGE_DAYS = 90


@dataclass(frozen=True)
class RecheckConfig:
    """A recipe's `[recheck]`: how old a recheck may be before its verdicts are stale."""

    max_age_days: int = RECHECK_MAX_AGE_DAYS

    def __post_init__(self) -> None:
        if self.max_age_days < 1:
            raise ValueError("max_age_days must be 1 or more (days).")


def load_recheck_config(table: Any, *, file: Path | str) -> RecheckConfig:
    from builder.config import from_table

    return from_table(RecheckConfig, table, file=file, where="recheck")


def recheck_config(db: sqlite3.Connection) -> RecheckConfig:
    """The `[recheck]` of the recipe the dataset's latest build recorded; the defaults when
    it has none, or when that recipe no longer reads (the report and a recheck must not
    stop on it: the build that recorded it accepted it)."""
    from builder.ledger import latest_recipe_table

    try:
        return load_recheck_config(latest_recipe_table(db).get("recheck", {}), file="recipe")
    except UserError:
        return RecheckConfig()


def days_between(earlier: str | None, later: str) -> int | None:
    """Whole days from one ledger date (`2026-12-07T04:00:00Z`) to another; None if either
    is not one."""
    try:
        a = datetime.strptime(earlier or "", "%Y-%m-%dT%H:%M:%SZ")
        b = datetime.strptime(later, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None
    return (b - a).days

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS rechecks (
        recheck      INTEGER PRIMARY KEY,
        started_at   TEXT NOT NULL,
        finished_at  TEXT,
        status       TEXT NOT NULL CHECK (status IN ('running', 'finished', 'abandoned')),
        scope        TEXT NOT NULL,            -- JSON: sources ([] = all), sample, seed
        version      INTEGER NOT NULL,         -- the dataset version rechecked
        total        INTEGER NOT NULL,         -- samples in scope
        done         INTEGER NOT NULL DEFAULT 0,
        last_key     TEXT,                     -- every sample in scope up to it is judged
        counts       TEXT NOT NULL DEFAULT '{}',  -- JSON: outcome -> samples
        refused      INTEGER NOT NULL DEFAULT 0,  -- samples a build today would refuse
        applied      TEXT,                     -- the takedown that removed them (--apply)
        tool_version TEXT,                     -- the cleanset that started it (null: older)
        resumed_by   TEXT                      -- JSON: the other cleansets that went on with it
    )""",
    """CREATE TABLE IF NOT EXISTS recheck_results (
        recheck     INTEGER NOT NULL,
        key         TEXT NOT NULL,
        source      TEXT NOT NULL,
        outcome     TEXT NOT NULL,
        refuse      INTEGER NOT NULL,
        detail      TEXT NOT NULL,
        checked_at  TEXT NOT NULL,
        PRIMARY KEY (recheck, key)
    )""",
    """CREATE TABLE IF NOT EXISTS recheck_sample (   -- the keys of a --sample recheck
        recheck  INTEGER NOT NULL,
        key      TEXT NOT NULL,
        PRIMARY KEY (recheck, key)
    )""",
    # A recheck run with --apply: the takedown of what it refuses is owed until `applied`
    # names it. A command stopped between the finished recheck and its takedown once asked
    # every source again when run again.
    """CREATE TABLE IF NOT EXISTS recheck_apply (
        recheck  INTEGER PRIMARY KEY,
        reason   TEXT NOT NULL
    )""",
)


# Columns added to the recheck tables after they were first released: (table, column,
# declaration), added by a writable open (RecheckLog), and read as null where missing.
LATER_COLUMNS = (
    ("rechecks", "tool_version", "TEXT"),
    ("rechecks", "resumed_by", "TEXT"),
)
_FIRST_COLUMNS = ("recheck, started_at, finished_at, status, scope, version, total, done, "
                  "last_key, counts, refused, applied")


def _select(db: sqlite3.Connection) -> str:
    """`SELECT <every column> FROM rechecks`, a column a ledger of an older cleanset lacks as
    null: a reader of a read-only copy cannot add it, and must not fail on it."""
    present = {row[1] for row in db.execute("PRAGMA table_info(rechecks)")}
    later = ", ".join(column if column in present else f"NULL AS {column}"
                      for _, column, _ in LATER_COLUMNS)
    return f"SELECT {_FIRST_COLUMNS}, {later} FROM rechecks"


@dataclass(frozen=True)
class RecheckRow:
    recheck: int
    started_at: str
    finished_at: str | None
    status: str
    scope: dict[str, Any]
    version: int
    total: int
    done: int
    last_key: str | None
    counts: Counter[str]
    refused: int
    applied: str | None
    tool_version: str | None = None  # the cleanset that started it; None: not recorded
    resumed_by: tuple[str, ...] = ()  # the other cleansets that went on with it, in order

    @property
    def drifted(self) -> int:
        return sum(n for outcome, n in self.counts.items() if outcome in DRIFT)

    @property
    def ran_by(self) -> str | None:
        return describe_tools(self.tool_version, self.resumed_by)

    @property
    def when(self) -> str:
        """When its verdicts were made: its finish, or from its start when it ran (or was
        resumed) over more than a day: the first verdicts are as old as its start."""
        if self.finished_at is None or (days_between(self.started_at, self.finished_at)
                                        or 0) < 1:
            return self.finished_at or self.started_at
        return f"{self.started_at} to {self.finished_at}"


def describe_scope(scope: dict[str, Any]) -> str:
    # Here, not in builder.recheck: the card names a recheck's scope, and importing the
    # recheck (its fetcher, sources and drift rules) for it cost every paper write ~0.3 s.
    sources = ", ".join(scope.get("sources") or []) or "every source"
    if scope.get("sample") is None:
        return sources
    return f"{sources}; a random sample, seed {scope['seed']}"


def has_rechecks(db: sqlite3.Connection) -> bool:
    """False for a ledger no recheck has touched (read-only readers must not create it)."""
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = "
                      "'rechecks'").fetchone() is not None


def apply_asked(db: sqlite3.Connection, recheck: int) -> bool:
    """Whether `recheck` was run with --apply (its takedown owed until `applied` names it).
    Read-only: a ledger no such recheck has touched has no table for it."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = "
                  "'recheck_apply'").fetchone() is None:
        return False
    return db.execute("SELECT 1 FROM recheck_apply WHERE recheck = ?",
                      (recheck,)).fetchone() is not None


def last_finished(db: sqlite3.Connection) -> RecheckRow | None:
    if not has_rechecks(db):
        return None
    row = db.execute(f"{_select(db)} WHERE status = 'finished' "
                     "ORDER BY recheck DESC LIMIT 1").fetchone()
    return _row(row) if row else None


def judged(db: sqlite3.Connection, row: RecheckRow, key: str) -> bool:
    """Whether recheck `row` judged sample `key`: in its scope, up to its last key."""
    sample = db.execute("SELECT source FROM samples WHERE key = ?", (key,)).fetchone()
    return sample is not None and _judged(db, row, key, sample[0])


def _judged(db: sqlite3.Connection, row: RecheckRow, key: str, source: str) -> bool:
    scope = row.scope
    if row.last_key is None or key > row.last_key or (
            scope.get("sources") and source not in scope["sources"]):
        return False
    return scope.get("sample") is None or db.execute(
        "SELECT 1 FROM recheck_sample WHERE recheck = ? AND key = ?",
        (row.recheck, key)).fetchone() is not None


def judging_rechecks(db: sqlite3.Connection) -> list[RecheckRow]:
    """The rechecks whose verdicts stand as of their date, newest first: finished, or
    abandoned for another's scope."""
    if not has_rechecks(db):
        return []
    return [_row(row) for row in db.execute(
        f"{_select(db)} WHERE status IN ('finished', 'abandoned') ORDER BY recheck DESC")]


def last_judging(db: sqlite3.Connection, key: str,
                 rechecks: list[RecheckRow] | None = None) -> RecheckRow | None:
    """The newest recheck that judged sample `key` (of `rechecks`, judging_rechecks read
    once by a caller asking about many keys). A later recheck of part of the dataset
    (`--sample`, `--source`) may not have asked about it: the last one that did has the
    word on it."""
    sample = db.execute("SELECT source FROM samples WHERE key = ?", (key,)).fetchone()
    if sample is None:
        return None
    return next((row for row in (judging_rechecks(db) if rechecks is None else rechecks)
                 if _judged(db, row, key, sample[0])), None)


def finished_rechecks(db: sqlite3.Connection) -> list[RecheckRow]:
    if not has_rechecks(db):
        return []
    return [_row(r) for r in db.execute(
        f"{_select(db)} WHERE status = 'finished' ORDER BY recheck")]


def unfinished(db: sqlite3.Connection) -> RecheckRow | None:
    """The latest recheck that stopped before judging every sample (read-only: the report)."""
    if not has_rechecks(db):
        return None
    row = db.execute(f"{_select(db)} WHERE status = 'running' "
                     "ORDER BY recheck DESC LIMIT 1").fetchone()
    return _row(row) if row else None


def recheck_row(db: sqlite3.Connection, recheck: int) -> RecheckRow | None:
    """Recheck `recheck`, read-only (evidence names the cleanset of the recheck a takedown
    followed)."""
    if not has_rechecks(db):
        return None
    row = db.execute(f"{_select(db)} WHERE recheck = ?", (recheck,)).fetchone()
    return _row(row) if row else None


class RecheckLog:
    """The recheck tables on one connection (the ledger's, or a scratch database when the
    output directory is read-only). Transactions are explicit: one per chunk."""

    def __init__(self, db: sqlite3.Connection) -> None:
        from builder.ledger import add_columns

        self.db = db
        for statement in _SCHEMA:
            db.execute(statement)
        # A ledger whose recheck tables an older cleanset made: brought up to this schema as
        # the ledger's own tables are (ledger._add_missing_columns), its old rows null.
        add_columns(db, LATER_COLUMNS)
        self._select = _select(db)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def running(self) -> RecheckRow | None:
        row = self.db.execute(f"{self._select} WHERE status = 'running' "
                              "ORDER BY recheck DESC LIMIT 1").fetchone()
        return _row(row) if row else None

    def latest(self) -> RecheckRow | None:
        row = self.db.execute(f"{self._select} ORDER BY recheck DESC LIMIT 1").fetchone()
        return _row(row) if row else None

    def ask_apply(self, recheck: int, reason: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO recheck_apply(recheck, reason) VALUES (?, ?)",
                        (recheck, reason))

    def get(self, recheck: int) -> RecheckRow:
        return _row(self.db.execute(f"{self._select} WHERE recheck = ?",
                                    (recheck,)).fetchone())

    def abandon(self, recheck: int) -> None:
        self.db.execute("UPDATE rechecks SET status = 'abandoned' WHERE recheck = ?", (recheck,))

    def start(self, scope: dict[str, Any], version: int, total: int,
              sample_keys: Iterable[str] = (), *, tool_version: str) -> int:
        cur = self.db.execute(
            "INSERT INTO rechecks(started_at, status, scope, version, total, tool_version) "
            "VALUES (?, 'running', ?, ?, ?, ?)",
            (clock.wall_iso(), json.dumps(scope, sort_keys=True), version, total,
             tool_version))
        recheck = int(cur.lastrowid or 0)
        self.db.executemany("INSERT OR IGNORE INTO recheck_sample(recheck, key) VALUES (?, ?)",
                            ((recheck, k) for k in sample_keys))
        return recheck

    def note_resumed_by(self, row: RecheckRow, tool_version: str) -> None:
        """`tool_version` goes on with recheck `row` (inside a transaction)."""
        self.db.execute("UPDATE rechecks SET resumed_by = ? WHERE recheck = ?",
                        (json.dumps([*row.resumed_by, tool_version]), row.recheck))

    def sample_keys(self, recheck: int, after: str | None, limit: int) -> list[str]:
        return [k for (k,) in self.db.execute(
            "SELECT key FROM recheck_sample WHERE recheck = ? AND key > ? ORDER BY key LIMIT ?",
            (recheck, after or "", limit))]

    def record(self, recheck: int, verdicts: list[Verdict], last_key: str) -> None:
        """The verdicts of one chunk and the progress they make (inside a transaction)."""
        now = clock.wall_iso()
        self.db.executemany(
            "INSERT OR REPLACE INTO recheck_results(recheck, key, source, outcome, refuse, "
            "detail, checked_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(recheck, v.key, v.source, v.outcome.value, int(v.refuse), v.detail, now)
             for v in verdicts])
        row = self.get(recheck)
        counts = row.counts + Counter(v.outcome.value for v in verdicts)
        self.db.execute(
            "UPDATE rechecks SET done = ?, last_key = ?, counts = ?, refused = ? "
            "WHERE recheck = ?",
            (row.done + len(verdicts), last_key, json.dumps(dict(sorted(counts.items()))),
             row.refused + sum(v.refuse for v in verdicts), recheck))

    def verdicts(self, recheck: int, *, refused_only: bool = False,
                 outcome: Outcome | None = None) -> Iterator[Verdict]:
        """Recorded verdicts in key order (the refused ones, or those of one outcome), read
        lazily (a million fit in no memory)."""
        where = " AND refuse = 1" if refused_only else ""
        args: tuple[Any, ...] = (recheck,)
        if outcome is not None:
            where += " AND outcome = ?"
            args += (outcome.value,)
        for key, source, kind, refuse, detail in self.db.execute(
                "SELECT key, source, outcome, refuse, detail FROM recheck_results "
                f"WHERE recheck = ?{where} ORDER BY key", args):
            yield Verdict(key, source, Outcome(kind), bool(refuse), detail)

    def finish(self, recheck: int) -> None:
        self.db.execute("UPDATE rechecks SET status = 'finished', finished_at = ? "
                        "WHERE recheck = ?", (clock.wall_iso(), recheck))
        self.db.execute("DELETE FROM recheck_results WHERE recheck = ? AND outcome = ?",
                        (recheck, Outcome.UNCHANGED.value))

    def mark_applied(self, recheck: int, takedown_id: str) -> None:
        self.db.execute("UPDATE rechecks SET applied = ? WHERE recheck = ?",
                        (takedown_id, recheck))


def _row(row: tuple[Any, ...]) -> RecheckRow:
    """A row as `_select` reads it."""
    (recheck, started, finished, status, scope, version, total, done, last_key, counts,
     refused, applied, tool_version, resumed_by) = row
    return RecheckRow(recheck=recheck, started_at=started, finished_at=finished, status=status,
                      scope=json.loads(scope), version=version, total=total, done=done,
                      last_key=last_key, counts=Counter(json.loads(counts or "{}")),
                      refused=refused, applied=applied, tool_version=tool_version,
                      resumed_by=tuple(json.loads(resumed_by or "[]")))
