"""Dataset versions: which keys each version added and removed, so users can sync their copies.

The ledger meta `dataset_version` is the current version (an integer; every change to the
dataset's content bumps it). Here each version gets a row (`versions`) and each key the
version that added it and, after a takedown, the version that removed it (`version_keys`).
Keys are never reused (the pipeline's `next_key` only grows), so "present at version v" is
"added at or before v and not removed at or before v".

Builds record their keys via `record_build_version` (called by the pipeline when it bumps the
version; also called lazily before every takedown, which attributes keys no version claims
yet to the current version — exact as long as it runs after every build). `diff` reads only:
it counts unclaimed keys the same way without recording them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from builder import clock
from builder.errors import UserError
from builder.exports.tables import manifest_dataset_name, read_columns
from builder.ledger import Ledger, reading, require_dataset
from builder.lock import ReadLock

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS versions (
        version     INTEGER PRIMARY KEY,
        created_at  TEXT NOT NULL,
        kind        TEXT NOT NULL CHECK (kind IN ('build', 'takedown')),
        added       INTEGER NOT NULL DEFAULT 0,
        removed     INTEGER NOT NULL DEFAULT 0,
        note        TEXT                  -- takedown id and reason, or the build number
    )""",
    """CREATE TABLE IF NOT EXISTS version_keys (
        key      TEXT NOT NULL,
        version  INTEGER NOT NULL,
        change   TEXT NOT NULL CHECK (change IN ('added', 'removed')),
        PRIMARY KEY (key, change)
    )""",
    "CREATE INDEX IF NOT EXISTS version_keys_version ON version_keys(version)",
)


def ensure_schema(ledger: Ledger) -> None:
    # Plain execute (not executescript): executescript would commit an open transaction.
    for statement in _SCHEMA:
        ledger.db.execute(statement)


def current_version(ledger: Ledger) -> int:
    return int(ledger.get_meta("dataset_version") or 0)


def record_build_version(ledger: Ledger, note: str | None = None) -> int:
    """Attribute every key no version claims yet to the version that claims them (kind
    `build`), which becomes the dataset's version if it was not yet: a takedown of a dataset
    whose build stopped half-way writes papers holding that build's keys so far, and its
    own version comes after theirs.

    Runs inside the caller's transaction when there is one. Returns how many keys it recorded.
    """
    ensure_schema(ledger)
    keys = unclaimed_keys(ledger)
    if not keys:
        return 0
    version = claiming_version(ledger)
    if version > current_version(ledger):
        ledger.set_meta("dataset_version", str(version))
    ledger.db.executemany("INSERT INTO version_keys(key, version, change) VALUES (?, ?, 'added')",
                          [(key, version) for key in keys])
    ledger.db.execute(
        "INSERT INTO versions(version, created_at, kind, added, note) VALUES (?, ?, 'build', ?, ?)"
        " ON CONFLICT(version) DO UPDATE SET added = added + excluded.added",
        (version, clock.wall_iso(), len(keys), note),
    )
    return len(keys)


def unclaimed_keys(ledger: Ledger) -> list[str]:
    """Keys the dataset has held that no version claims yet (in key order)."""
    claimed = (" AND key NOT IN (SELECT key FROM version_keys WHERE change = 'added')"
               if _has_version_tables(ledger) else "")
    return [r[0] for r in ledger.db.execute(
        "SELECT DISTINCT key FROM candidates WHERE key IS NOT NULL"
        " AND status IN ('accepted', 'removed')" + claimed + " ORDER BY key")]


def build_has_unclaimed_keys(ledger: Ledger, build: int) -> bool:
    """Whether `build` gave the dataset a key no version claims yet: one key at a time
    through version_keys' primary key, not a list of every key (a build's end asks it)."""
    claimed = (" AND NOT EXISTS (SELECT 1 FROM version_keys v WHERE v.key = c.key"
               " AND v.change = 'added')" if _has_version_tables(ledger) else "")
    return ledger.db.execute(
        "SELECT 1 FROM candidates c WHERE c.build = ? AND c.key IS NOT NULL"
        " AND c.status IN ('accepted', 'removed')" + claimed + " LIMIT 1",
        (build,)).fetchone() is not None


def claiming_version(ledger: Ledger) -> int:
    """The version that unclaimed keys belong to: the current one while no version row
    records it (1 before any bump; a build bumps the version before it records its keys),
    else the next one. Keys unclaimed beside a recorded version are a later build's, stopped
    half-way: they were counted as that version's, so `diff --from` it left them out for
    good once a takedown had recorded them so."""
    current = current_version(ledger)
    if current >= 1 and _has_version_tables(ledger) and ledger.db.execute(
            "SELECT 1 FROM versions WHERE version = ?", (current,)).fetchone() is not None:
        return current + 1
    return max(current, 1)


def _has_version_tables(ledger: Ledger) -> bool:
    return ledger.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table'"
                             " AND name = 'version_keys'").fetchone() is not None


def record_takedown_version(ledger: Ledger, version: int, keys: Iterable[str], note: str) -> None:
    keys = sorted(keys)
    ledger.db.executemany(
        "INSERT OR IGNORE INTO version_keys(key, version, change) VALUES (?, ?, 'removed')",
        [(k, version) for k in keys])
    ledger.db.execute(
        "INSERT INTO versions(version, created_at, kind, removed, note)"
        " VALUES (?, ?, 'takedown', ?, ?)",
        (version, clock.wall_iso(), len(keys), note),
    )


def has_version(ledger: Ledger, version: int) -> bool:
    ensure_schema(ledger)
    return ledger.db.execute("SELECT 1 FROM versions WHERE version = ?",
                             (version,)).fetchone() is not None


def keys_at(ledger: Ledger, version: int) -> set[str]:
    """Keys present in the dataset at `version`.

    Reads only (a read-only copy is enough): keys no version claims yet count as added at
    the version `record_build_version` would give them.
    """
    added: set[str] = set()
    removed: set[str] = set()
    if _has_version_tables(ledger):
        added = {r[0] for r in ledger.db.execute(
            "SELECT key FROM version_keys WHERE change = 'added' AND version <= ?", (version,))}
        removed = {r[0] for r in ledger.db.execute(
            "SELECT key FROM version_keys WHERE change = 'removed' AND version <= ?",
            (version,))}
    if claiming_version(ledger) <= version:
        added.update(unclaimed_keys(ledger))
    return added - removed


@dataclass
class Diff:
    old: str
    new: str
    removed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # same key, other bytes (two directories)
    notes: list[str] = field(default_factory=list)  # for stderr: what to bear in mind

    def to_json(self) -> dict[str, object]:
        return {"old": self.old, "new": self.new, "removed": self.removed, "added": self.added,
                "changed": self.changed}

    def lines(self) -> list[str]:
        out = [f"diff {self.old} -> {self.new}: {len(self.removed)} removed, "
               f"{len(self.added)} added" + (f", {len(self.changed)} changed"
                                             if self.changed else "")]
        out += [f"- {k}" for k in self.removed]
        out += [f"+ {k}" for k in self.added]
        out += [f"~ {k}" for k in self.changed]
        return out


def diff_versions(out: Path, old: int, new: int) -> Diff:
    require_dataset(out)
    with reading(out, "diff") as ledger:
        latest = current_version(ledger)
        for v in (new, old):  # --to N alone asks N-1 too: name the N the user gave first
            if not 0 <= v <= latest:
                raise UserError(f"{out}: has versions 0..{latest}; version {v} does not exist. "
                                "Pick --from/--to in that range.")
        before, after = keys_at(ledger, old), keys_at(ledger, new)
    return Diff(old=f"{out}@{old}", new=f"{out}@{new}", removed=sorted(before - after),
                added=sorted(after - before))


def diff_directories(old: Path, new: Path) -> Diff:
    """Compare two published copies by their manifests (no ledger needed)."""
    (a, a_name), (b, b_name) = _manifest_keys(old), _manifest_keys(new)
    changed = sorted(k for k in a.keys() & b.keys() if a[k] != b[k])
    notes = []
    if a_name is not None and b_name is not None and a_name != b_name:
        notes.append(f"note: these are two different datasets ({a_name!r} and {b_name!r}); "
                     "each numbers its keys on its own, so a key in both need not be the "
                     "same work, and 'changed' compares them by key only")
    elif changed:
        # One dataset never gives a key another image (takedowns remove, keys are never
        # reused): two builds that share a name only, each numbering its keys from 0.
        notes.append(f"note: {len(changed)} key(s) in both hold different images, which no "
                     "two copies of one dataset do: these look like two different datasets "
                     f"that share the name {a_name!r}, so a key in both need not be the same "
                     "work")
    return Diff(old=str(old), new=str(new), removed=sorted(a.keys() - b.keys()),
                added=sorted(b.keys() - a.keys()), changed=changed, notes=notes)


def version_of(out: Path) -> int | None:
    if not (out / "ledger.sqlite").exists():
        return None
    with reading(out, "diff") as ledger:
        return current_version(ledger)


def _manifest_keys(out: Path) -> tuple[dict[str, str], str | None]:
    """sha256 by key, and the dataset's name (None in a manifest that predates it)."""
    path = out / "manifest.parquet"
    if not out.is_dir():
        require_dataset(out)  # names what was given instead
    with ReadLock(out, "diff"):  # a build still writing it has no final manifest yet
        if not path.exists():
            if (out / "ledger.sqlite").is_file():
                raise UserError(f"{out}: has a ledger but no manifest.parquet: its build has "
                                "not finished (run the same `cleanset build` again to finish "
                                f"it), or the manifest was removed (`cleanset verify {out}` "
                                "says which).")
            raise UserError(f"{out}: no manifest.parquet here; is this a cleanset output "
                            "directory?")
        try:
            table = read_columns(path, ["key", "sha256"])
        except (pa.ArrowException, OSError) as exc:
            # Truncated by a bad copy, written over, or some other table: nothing to compare.
            why = str(exc).splitlines()[0]  # a missing column's error lists the schema
            raise UserError(f"{path}: cannot be read as a cleanset manifest ({why}); nothing "
                            f"was compared. `cleanset verify {out}` checks the directory; its "
                            "build, run again, writes the manifest anew.") from None
    keys = dict(zip(table.column("key").to_pylist(), table.column("sha256").to_pylist(),
                    strict=True))
    return keys, manifest_dataset_name(table.schema)


def dumps_diff(d: Diff) -> str:
    return json.dumps(d.to_json(), sort_keys=True)
