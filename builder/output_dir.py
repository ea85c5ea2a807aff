"""Is this directory ours to write in? Decided before anything is created in it.

A build writes README.md (the dataset card), ledger.sqlite, Parquet and JSON papers and a
`shards/` folder into its output directory, replacing any files of those names. So cleanset
only ever builds into a directory that is new, empty, or already a cleanset output: `--out .`
in a clone must not replace the clone's README.md. Every place that creates an output (the
build's `--out` or `[dataset] output`, the local stage of a URL output) runs this guard
first, and when it refuses, nothing has been written or created.

A directory is a cleanset output when
- its ledger.sqlite is a SQLite database holding the ledger's tables; or
- it is the stage of a URL output (it holds `.cleanset-publish/`): a pull interrupted before
  its last file, the ledger, leaves papers and shards but no ledger yet; or
- it holds nothing but what a first build creates before its ledger has tables (`shards/`
  with at most shard temporaries, the lock, the write probe, a blank ledger and its SQLite
  companions), and perhaps a `denylist.jsonl` seeded by the user: a first build killed
  early must be resumable by the same command. A complete shard (`NNNNNN.tar`) is never
  such a leftover: a build's ledger has its tables before its first shard is renamed into
  place, so shards beside no ledger (or a blank one) are someone's data, e.g. the shards kept
  from an earlier dataset, which a build would overwrite.
"""

from __future__ import annotations

import enum
import errno
import os
import re
import sqlite3
import time
from pathlib import Path
from urllib.parse import quote

from builder.errors import UserError

LEDGER = "ledger.sqlite"
STAGE_STATE = ".cleanset-publish"  # a URL output's stage keeps its publishing state here
PUBLISHED_MARKER = "_cleanset_published.json"  # written last by a publish (builder/publish.py)
# The tables every cleanset ledger has had since its first commit (builder/ledger.py).
LEDGER_TABLES = frozenset({"meta", "builds", "candidates"})
# What a first build can leave before its ledger holds tables (its schema may still be in
# the write-ahead log when it is killed): nothing a user would have put there.
FIRST_BUILD_LEFTOVERS = frozenset({
    ".lock", ".write-probe", "shards", LEDGER, f"{LEDGER}-wal", f"{LEDGER}-shm",
    f"{LEDGER}-journal",
})
# A denylist carried over into a new output keeps taken-down works out of it; builds read it
# and takedowns only append to it, so a directory holding it may be built into.
SEEDED = frozenset({"denylist.jsonl"})
# Shard temporaries (`NNNNNN.tar.tmp`, a worker's `.tar.TOKEN.tmp`), not complete shards.
_SHARD_TEMPORARY_RE = re.compile(r"^\d{6,}\.tar(\.[A-Za-z0-9_-]+)?\.tmp$")
_SQLITE_MAGIC = b"SQLite format 3\x00"


class LedgerKind(enum.Enum):
    ABSENT = "absent"
    BLANK = "blank"  # created by a first build that stopped before its tables were on disk
    CLEANSET = "cleanset"
    FOREIGN = "foreign"  # some other file that happens to be called ledger.sqlite


def ledger_kind(path: Path) -> LedgerKind:
    """What `path` is, read without creating anything: SQLite opened `immutable` (no -shm
    appears next to someone else's database), or read-only when its -wal and -shm exist."""
    if not path.exists() and not path.is_symlink():
        return LedgerKind.ABSENT
    try:
        with path.open("rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except OSError:
        return LedgerKind.FOREIGN
    if not head:
        return LedgerKind.BLANK
    if head != _SQLITE_MAGIC:
        return LedgerKind.FOREIGN
    tables = _tables(path)
    if tables is None:
        return LedgerKind.FOREIGN
    if not tables:
        return LedgerKind.BLANK
    return LedgerKind.CLEANSET if tables >= LEDGER_TABLES else LedgerKind.FOREIGN


def _tables(path: Path) -> set[str] | None:
    """The ledger's table names; None when it cannot be read as SQLite. A read that fails is
    tried again for a moment: a build closing its ledger copies its log into the file, which
    an immutable reader then finds torn for a few milliseconds ("database disk image is
    malformed"), and a build started on the directory just then took it for someone else's
    database; a file that is not a readable database fails every time."""
    deadline = time.monotonic() + 1.0
    while True:
        tables = _table_names(path, "immutable=1")
        if not tables and all(Path(f"{path}-{end}").is_file() for end in ("wal", "shm")):
            # Not checkpointed yet (a build running or stopped): the tables are in the
            # write-ahead log, which only a normal reader sees. Its -wal and -shm exist, so
            # none is created.
            tables = _table_names(path, "mode=ro")
        if tables is not None or time.monotonic() > deadline:
            return tables
        time.sleep(0.01)


def _table_names(path: Path, mode: str) -> set[str] | None:
    uri = f"file:{quote(str(path.absolute()))}?{mode}"
    try:
        db = sqlite3.connect(uri, uri=True)
        try:
            rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    return {str(name) for (name,) in rows}


def is_cleanset_output(directory: Path) -> bool:
    """True when `directory` (an existing directory) is a cleanset output or a URL output's
    stage, possibly left by a build or pull that was stopped (see the module docstring)."""
    kind = ledger_kind(directory / LEDGER)
    if kind is LedgerKind.CLEANSET or (directory / STAGE_STATE).is_dir():
        return True
    return kind is not LedgerKind.FOREIGN and _only_cleanset_files(directory)


def _only_cleanset_files(directory: Path) -> bool:
    """Nothing but a stopped first build's leftovers and a seeded denylist: nothing there
    that a build would replace."""
    try:
        names = set(os.listdir(directory))
        if not names <= FIRST_BUILD_LEFTOVERS | SEEDED:
            return False
        shards = directory / "shards"
        if "shards" not in names:
            return True
        return shards.is_dir() and all(_SHARD_TEMPORARY_RE.match(n) for n in os.listdir(shards))
    except OSError:
        return False


def check_output_dir(out: Path, *, key: str) -> None:
    """Refuse (UserError, exit 2) an output cleanset must not create or write: a non-empty
    directory that is no cleanset output, a file, a path below a file, an unwritable place.
    `key` is how the user named it (`--out`, `--stage`, the recipe key), for the message.
    Creates nothing."""
    check_no_link_loop(out, key)
    if out.is_symlink() and not out.exists():
        raise UserError(f"{key} {out}: is a broken symbolic link (to {os.readlink(out)}). "
                        "Remove the link, or choose another directory.")
    _check_not_inside_an_output(out, key)
    if not out.exists():
        _check_creatable(out, key)
        return
    if not out.is_dir():
        raise UserError(f"{key} {out}: exists and is not a directory. Choose a new or empty "
                        "directory, or the output of an earlier cleanset build.")
    try:
        names = sorted(os.listdir(out))
    except OSError as exc:
        raise UserError(f"{key} {out}: cannot be read: {exc.strerror or exc}. Fix its "
                        "permissions, or choose another directory.") from None
    if names == ["lost+found"]:
        # A fresh disk's mount point: refused as "not empty", with no word of the way on.
        raise UserError(f"{key} {out}: holds a filesystem's lost+found (a disk's mount point), "
                        "which a build must not write beside. Build into a new directory on "
                        f"it, e.g. {key} {out / 'my-dataset'}. Nothing was written.")
    if names and not is_cleanset_output(out):
        raise UserError(_not_ours(out, names, key))
    if PUBLISHED_MARKER in names:
        raise UserError(
            f"{key} {out}: is the published copy of a dataset (it holds {PUBLISHED_MARKER}); "
            "a build into it as a plain directory would leave that copy and its marker "
            f"disagreeing, and the next publish would undo it. Build into its URL (file://"
            f"{out.resolve()}) or into another directory. Nothing was written.")


def check_no_link_loop(path: Path, key: str) -> None:
    """Refuse a path through a loop of symbolic links (`ln -s loop loop`, then `loop/x`):
    resolving it raised RuntimeError, a traceback, where a place is checked (Python 3.13
    resolves it without a word, and what follows finds nothing there)."""
    try:
        path.resolve()
    except RuntimeError:  # "Symlink loop from ..."
        raise UserError(f"{key} {path}: goes round a loop of symbolic links, so it names no "
                        "place. Fix or remove the link, or choose another path.") from None


def _not_ours(out: Path, names: list[str], key: str) -> str:
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    foreign = ledger_kind(out / LEDGER) is LedgerKind.FOREIGN
    why = (f"its {LEDGER} is not a cleanset ledger" if foreign
           else f"it holds no cleanset ledger ({LEDGER})")
    shards = _complete_shards(out)
    if shards:
        why += (f"; its shards/ holds {shards} shard file(s) no ledger here accounts for "
                "(a build would overwrite or delete them)")
    return (f"{key} {out}: is not empty ({shown}) and {why}, so it is not the output of a "
            f"cleanset build. cleanset writes README.md, {LEDGER}, Parquet and JSON files and "
            "shards/ into an output directory, replacing any files of those names. "
            "Build into a new or empty directory, or into the output of an earlier cleanset "
            "build. Nothing was written.")


def _check_not_inside_an_output(out: Path, key: str) -> None:
    """A dataset inside another's folder is read as part of it: its shards by a
    `shards/**/*.tar` glob or `load_dataset`, its files by every copy and publish of it."""
    for place in dict.fromkeys([*out.absolute().parents, *out.resolve().parents]):
        if ledger_kind(place / LEDGER) is LedgerKind.CLEANSET:
            raise UserError(f"{key} {out}: is inside the cleanset output {place}; a dataset "
                            "there would be read as part of that one (its shards/ by a glob, "
                            "its files by every copy). Build into a directory outside it. "
                            "Nothing was written.")


def check_still_alone(out: Path, *, key: str, was_new: bool) -> None:
    """`check_output_dir` again, for what another build started at the same moment did since:
    run once this build holds its lock and its ledger exists. Two builds, one into a directory
    inside the other's (new) one, each passed `check_output_dir` before the other had created
    anything, and both built: a dataset inside a dataset. Each has now made its mark (the
    outer one its ledger, the inner one its directory) before looking for the other's, so at
    least one of them is refused here. A ledger just created (blank, or its tables still in
    its write-ahead log) counts: it is a build starting. `was_new`: this build is the
    directory's first (its ledger records no build), which must find nothing there but what
    a first build makes."""
    for place in dict.fromkeys([*out.absolute().parents, *out.resolve().parents]):
        kind = ledger_kind(place / LEDGER)
        if kind is LedgerKind.BLANK:
            # Most likely a build starting there this moment; an empty ledger.sqlite left
            # by anything else blocked every build below it with no word of the file.
            raise UserError(f"{key} {out}: is inside {place}, whose {LEDGER} is blank: a "
                            "build starting there at the same time, or a leftover (an empty "
                            f"file: if no build is running there, remove {place / LEDGER}). "
                            "A dataset there would be read with this one. Build into a "
                            "directory outside it. Nothing was written.")
        if kind is LedgerKind.CLEANSET:
            raise UserError(f"{key} {out}: is inside the cleanset output {place}, which a "
                            "build started at the same time; a dataset there would be read "
                            "as part of that one. Build into a directory outside it. Nothing "
                            "was written.")
    if was_new:
        extra = sorted(set(os.listdir(out)) - FIRST_BUILD_LEFTOVERS - SEEDED - {STAGE_STATE})
        if extra:
            raise UserError(f"{key} {out}: {', '.join(extra[:5])} appeared in it while this "
                            "first build was starting (another build into a directory inside "
                            "it?); a dataset around another is read with it. Build into a new "
                            "or empty directory outside any other output. Nothing was written.")


def _complete_shards(out: Path) -> int:
    try:
        return sum(1 for n in os.listdir(out / "shards") if re.fullmatch(r"\d{6,}\.tar", n))
    except OSError:
        return 0


def _check_creatable(out: Path, key: str) -> None:
    """`out` does not exist: its nearest existing ancestor must be a directory we may write."""
    ancestor = next(p for p in out.absolute().parents if p.exists() or p.is_symlink())
    if not ancestor.is_dir():
        what = "a broken symbolic link" if ancestor.is_symlink() else "a file"
        raise UserError(f"{key} {out}: cannot be created: {ancestor} is {what}, not a "
                        "directory. Choose a path below a directory.")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        reason = errno.EROFS if _read_only(ancestor) else errno.EACCES
        raise UserError(f"{key} {out}: cannot be created in {ancestor}: "
                        f"{os.strerror(reason)}. Choose a directory you can write to, or fix "
                        "its permissions.")


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False
