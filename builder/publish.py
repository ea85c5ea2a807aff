"""Output to an fsspec URL (`s3://`, `gs://`, `file://`, `memory://`...): stage, then publish.

The ledger is SQLite and shards are appended and fsynced, so a build always runs into a local
directory, the *stage*; publishing then makes the URL a copy of it:

1. every file a reader or a later build needs (shards, papers, ledger, takedown log, denylist,
   report...) is hashed, with a cache keyed by size, mtime and inode, so an unchanged
   1,000-shard stage is not re-read;
2. files that the remote's marker already lists with the same size and sha256 (and that are
   still there with that size) are skipped, and so are those the stage noted an interrupted
   run of this publish uploaded whole; the others are uploaded, shards first, then the
   papers, the ledger last. Each appears whole: uploaded under a temporary name and renamed,
   or, on an object store (where an upload appears whole or not at all, and there is no
   cheap rename), under its own name;
3. `_cleanset_published.json`, listing every file with its size and sha256, is written last:
   the files it lists are a consistent dataset;
4. only then are the remote shards the new marker no longer lists (a takedown removed them),
   and leftovers of interrupted uploads, deleted.

A build into a URL whose stage holds no ledger first pulls the published dataset (each file
checked against the marker), so any machine can resume or extend a dataset from its URL alone.
The stage remembers which marker it last published or pulled; if someone else has published
to the URL since, it refuses rather than overwrite their dataset with an older lineage.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import secrets
import sys
import threading
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from tqdm import tqdm

from builder import clock
from builder.display import unescaped
from builder.errors import UserError
from builder.faults import stop_point
from builder.identity import tool_version
from builder.lock import OutputLock
from builder.output_dir import LEDGER, PUBLISHED_MARKER, STAGE_STATE, check_output_dir
from builder.shards import file_sha256

log = logging.getLogger("cleanset.publish")

MARKER = PUBLISHED_MARKER
MARKER_FORMAT = 1
STATE = STAGE_STATE  # in the stage: hash cache, the markers it knows, its lock
UPLOAD_TEMP = ".cleanset-upload-"  # remote temporary names: NAME.cleanset-upload-RANDOM
UPLOAD_WORKERS = 8

_SHARD_RE = re.compile(r"^shards/\d{6,}\.tar$")  # seven digits from shard 1,000,000
# Uploads on these appear whole or not at all, and a rename is a full server-side copy.
_OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oci",
                            "ocilake", "oss", "tos", "tosfs"})
_READ_ONLY = frozenset({"http", "https", "data", "github", "gist", "git", "reference", "zip",
                        "tar", "libarchive"})
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}


class PublishError(UserError):
    """The remote could not be read or written; the staged build is kept."""

    exit_code = 1


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str


@dataclass(frozen=True)
class Remote:
    """A dataset's place on an fsspec filesystem."""

    url: str
    fs: Any  # fsspec.AbstractFileSystem (untyped upstream)
    root: str
    object_store: bool

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}"


@dataclass
class PublishSummary:
    url: str
    uploaded: list[str] = field(default_factory=list)
    uploaded_bytes: int = 0
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    marker_written: bool = False
    resumed: int = 0  # uploaded whole by an interrupted publish of the same files

    def lines(self) -> list[str]:
        lines = self._lines()
        if self.resumed:
            were = "was" if self.resumed == 1 else "were"
            lines[0] += (f" ({self.resumed} more {were} uploaded by the interrupted publish "
                         "before it, and not again)")
        return lines

    def _lines(self) -> list[str]:
        if not self.marker_written and not self.removed:
            lines = [f"published to {self.url}: up to date ({self.unchanged} files unchanged)"]
        else:
            lines = [f"published to {self.url}: {len(self.uploaded)} files uploaded "
                     f"({self.uploaded_bytes / 1e6:.1f} MB), {self.unchanged} unchanged, "
                     f"{len(self.removed)} removed; {MARKER} lists the current set"]
        if _protocols(self.url)[-1] == "memory":
            # fsspec's memory filesystem lives in this process: a user who typed memory://
            # must not leave believing the dataset was published somewhere.
            lines.append("  memory:// holds files only inside this process: what was "
                         "published there is gone when cleanset exits. The stage keeps the "
                         "dataset; publish to file:///ABSOLUTE/PATH or object storage to keep "
                         "a copy at a URL.")
        return lines


# -- URLs and stages -------------------------------------------------------------------------
def _protocols(url: str) -> list[str]:
    return [part.split("://", 1)[0].lower() for part in url.split("::")]


def protocol_problem(url: str, *, writing: bool = True) -> str | None:
    """Why `url` cannot be used (unknown protocol, read-only), or None. No network."""
    known = set(fsspec.available_protocols())
    for proto in _protocols(url):
        if proto not in known:
            return (f"unknown protocol {proto!r}. Use a local directory or a URL fsspec knows "
                    "(file://, s3://, gs://, az://, memory://, ...)")
    target = _protocols(url)[-1]
    if writing and target in _READ_ONLY:
        return f"{target}:// is read-only; a dataset can be verified there but not built there"
    return None


def _local_url_problem(url: str) -> str | None:
    """file:// (and local://) URLs name an absolute path: fsspec reads `file://` alone as the
    current directory and `file://rel/x`, `file://localhost/x`, `file://~/x` below it, so
    the same URL would be another place from another directory."""
    if _protocols(url)[-1] not in ("file", "local"):
        return None
    path = url.split("::")[-1].split("://", 1)[1]
    if not path.startswith("/") or not path.strip("/"):
        return ("a file:// URL names an absolute path after its two slashes, e.g. "
                "file:///srv/datasets/my-dataset (or give the directory as a plain path)")
    return None


def default_stage(url: str) -> Path:
    """A stable local directory per URL: $XDG_CACHE_HOME/cleanset/stage/<sha256(url)[:16]>."""
    cache = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(cache) if os.path.isabs(cache) else Path.home() / ".cache"
    digest = hashlib.sha256(url.rstrip("/").encode("utf-8")).hexdigest()[:16]
    return base / "cleanset" / "stage" / digest


def open_remote(url: str, *, where: str, writing: bool = True) -> Remote:
    """The filesystem for `url`. Bad or unusable URLs are a UserError (exit 2) naming `where`."""
    problem = protocol_problem(url, writing=writing) or _local_url_problem(url)
    if problem:
        raise UserError(f"{where} {url}: {problem}.")
    try:
        fs, root = fsspec.core.url_to_fs(url)
    except ImportError as exc:
        extra = _EXTRAS.get(_protocols(url)[-1])
        hint = (f'pip install "cleanset[{extra}]"' if extra
                else "install the fsspec backend it names")
        raise UserError(f"{where} {url}: this protocol needs a package that is not installed "
                        f"({exc}). Install it: {hint}.") from None
    except Exception as exc:  # noqa: BLE001 - backends raise anything on bad options
        raise UserError(f"{where} {url}: not a usable URL: {_describe(exc)}.") from None
    root = str(root).rstrip("/")
    if not root.strip("/"):
        raise UserError(f"{where} {url}: names no directory; give a path inside it, "
                        "e.g. s3://bucket/my-dataset.")
    protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    return Remote(url=url, fs=fs, root=root,
                  object_store=any(p in _OBJECT_STORES for p in protocols))


def stage_lock(stage: Path) -> OutputLock:
    """Held around pull, build and publish: one process per stage (the build locks it too)."""
    (stage / STATE).mkdir(parents=True, exist_ok=True)
    return OutputLock(stage, file=f"{STATE}/lock")


@contextmanager
def staged(url: str, stage: Path | None, *, where: str, nothing: str, writing: bool = True,
           say: Callable[[str], None] = print) -> Iterator[tuple[Remote, Path]]:
    """The remote for `url` and its stage (`stage`, or the one derived from the URL), held
    locked and brought up to date with the URL (pulled when empty) for the caller's work;
    `nothing` says in errors what was therefore not done."""
    remote = open_remote(url, where=where, writing=writing)
    key = "--stage" if stage is not None else f"--stage (the default for {url})"
    stage = stage or default_stage(url)
    check_output_dir(stage, key=key)  # before its lock: a refused stage gets nothing written
    check_apart(remote, stage)  # so too a stage that is the URL (its lock was left behind)
    try:
        lock = stage_lock(stage)
    except OSError as exc:
        raise UserError(f"--stage {stage}: cannot be used: {exc.strerror or exc}. Choose another "
                        "directory with --stage.") from None
    with lock:
        pulled = prepare_stage(stage, remote, nothing=nothing)
        if pulled is not None:
            say(pulled.line(url, stage))
        _remember(stage, "url", url.encode("utf-8"))  # for a takedown given the stage alone
        stop_point("staged")
        yield remote, stage


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or "no details"
    return f"{type(exc).__name__}: {text}"


def _kept(stage: Path, what: str = "build") -> str:
    return (f" The {what} in {stage} is kept; run the same command again to publish it (files "
            "already uploaded are skipped).")


def _remote_call(remote: Remote, doing: str, then: str, call: Callable[[], Any]) -> Any:
    """Run one remote operation; any failure becomes a PublishError naming the URL, what was
    being done and (`then`) what state that leaves and what to do."""
    try:
        return call()
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - fsspec backends raise anything (botocore, aiohttp...)
        log.debug("remote %s failed", doing, exc_info=True)
        raise PublishError(f"{remote.url}: {doing} failed: {_describe(exc)}.{then}") from None


# -- the marker ------------------------------------------------------------------------------
def read_marker(remote: Remote) -> bytes | None:
    remote.fs.invalidate_cache(remote.root)
    try:
        return bytes(remote.fs.cat_file(remote.path(MARKER)))
    except FileNotFoundError:
        return None


def parse_marker(data: bytes, url: str) -> dict[str, FileEntry]:
    try:
        doc = json.loads(data)
        if doc.get("cleanset_published") != MARKER_FORMAT:
            raise ValueError(f"format {doc.get('cleanset_published')!r}, expected {MARKER_FORMAT}")
        return {str(rel): FileEntry(int(e["size"]), str(e["sha256"]))
                for rel, e in doc["files"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PublishError(f"{url}/{MARKER}: not a cleanset publish marker ({exc}). Remove it "
                           "only if this location holds no cleanset dataset.") from None


def marker_bytes(files: dict[str, FileEntry]) -> bytes:
    doc = {
        "cleanset_published": MARKER_FORMAT,
        "tool_version": tool_version(),
        "published_at": clock.wall_iso(),
        "files": {rel: {"size": e.size, "sha256": e.sha256} for rel, e in sorted(files.items())},
    }
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode("utf-8")


def _known_markers(stage: Path) -> set[bytes]:
    return {p.read_bytes() for p in (stage / STATE / "published.json",
                                     stage / STATE / "pending.json") if p.exists()}


def _remember(stage: Path, name: str, data: bytes | None) -> None:
    path = stage / STATE / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if data is None:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def published_to(stage: Path) -> str | None:
    """The URL this stage was last used for (pulled, built, published), when it says."""
    for name in ("url", "publishing.json"):  # "url" since it is kept; stages before, the other
        try:
            return (stage / STATE / name).read_text(encoding="utf-8") or None
        except (OSError, UnicodeDecodeError):
            continue
    return None


def check_lineage(stage: Path, remote: Remote, current: bytes | None, then: str) -> None:
    """Refuse when the remote holds a dataset this stage did not publish or pull."""
    if current is None or current in _known_markers(stage):
        return
    raise PublishError(
        f"{remote.url}: holds a dataset published from elsewhere (its {MARKER} is not one this "
        f"stage, {stage}, published or pulled), which publishing this stage would replace.{then}"
        " To continue that dataset, run the same command again with --stage pointing to an "
        "empty directory (the URL's dataset is pulled into it first); to replace it, remove it "
        "from the URL first.")


# -- the stage -------------------------------------------------------------------------------
def staged_files(stage: Path) -> list[str]:
    """Every file of the stage a reader or a later build needs, relative, '/'-separated."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(stage):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(stage)
        for name in filenames:
            rel = (rel_dir / name).as_posix()
            if _publishable(rel):
                out.append(rel)
    return sorted(out)


def _publishable(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    if name.startswith(".") or UPLOAD_TEMP in name:
        return False  # locks, probes, journals, downloads in progress
    if rel.startswith("shards/"):
        return bool(_SHARD_RE.match(rel))  # not takedown temporaries
    if name.startswith(LEDGER + "-"):
        return False  # SQLite's -wal/-shm/-journal: checkpointed into the ledger first
    return not name.endswith(".tmp")  # a paper being replaced


def _checkpoint_ledger(stage: Path) -> None:
    """Fold the ledger's write-ahead log into ledger.sqlite, so the one file is the ledger."""
    import sqlite3

    try:
        db = sqlite3.connect(stage / LEDGER, timeout=30)
        try:
            busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise PublishError(f"{stage / LEDGER}: cannot be read for publishing: {exc}.") from None
    if busy:
        raise PublishError(f"{stage / LEDGER}: another process is writing it; publish when it "
                           "has finished (run the same command again).")


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def hash_stage(stage: Path, rels: list[str]) -> dict[str, FileEntry]:
    """Size and sha256 of each file; unchanged files (size, mtime, inode) come from the cache."""
    cache_path = stage / STATE / "hashes.json"
    try:
        cache = json.loads(cache_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    fresh: dict[str, list[Any]] = {}
    out: dict[str, FileEntry] = {}
    for rel in rels:
        key = _stat_key(stage / rel)
        hit = cache.get(rel)
        sha = hit[3] if isinstance(hit, list) and hit[:3] == key else file_sha256(stage / rel)
        fresh[rel] = [*key, sha]
        out[rel] = FileEntry(key[0], sha)
    _remember(stage, "hashes.json", json.dumps(fresh).encode("utf-8"))
    return out


def _order(rel: str) -> tuple[int, str]:
    """Shards and the evidence archive first (the papers refer to them, and provenance to
    the archive), the ledger last (it records everything)."""
    return (0 if rel.startswith(("shards/", "evidence/")) else 2 if rel == LEDGER else 1, rel)


# -- publish ---------------------------------------------------------------------------------
def list_remote(remote: Remote) -> dict[str, int]:
    """Relative path -> size of every file under the remote root."""
    try:
        found = remote.fs.find(remote.root, detail=True)
    except FileNotFoundError:
        return {}
    prefix = remote.root + "/"
    return {str(p)[len(prefix):]: int(info.get("size") or 0)
            for p, info in found.items() if str(p).startswith(prefix)}


def _ours(rel: str) -> bool:
    """Remote files only cleanset writes: safe to delete when no marker lists them."""
    return bool(_SHARD_RE.match(rel)) or UPLOAD_TEMP in rel.rsplit("/", 1)[-1]


def publish(stage: Path, remote: Remote, *, progress: bool = False, what: str = "build"
            ) -> PublishSummary:
    """Make `remote` a copy of `stage`, uploading only what changed; the marker last.
    `what` the stage holds unpublished ("build", "takedown"), for the messages."""
    if not (stage / LEDGER).exists():
        raise UserError(f"{stage}: no {LEDGER}; there is no build here to publish.")
    with OutputLock(stage):  # no takedown rewrites the stage while it is being copied
        return _publish_locked(stage, remote, progress, what)


def _publish_locked(stage: Path, remote: Remote, progress: bool, what: str
                    ) -> PublishSummary:
    _checkpoint_ledger(stage)
    kept = _kept(stage, what)
    files = hash_stage(stage, staged_files(stage))
    listing = _remote_call(remote, "listing", kept, lambda: list_remote(remote))
    current = _remote_call(remote, f"reading {MARKER}", kept, lambda: read_marker(remote))
    unpublished = (f" The {what} in {stage} is kept there, unpublished: {remote.url} does not "
                   "have it.")
    check_lineage(stage, remote, current, unpublished)
    if current is None:
        _check_no_strangers(stage, remote, listing, unpublished)
    _check_stage_shards(stage, files)
    previous = parse_marker(current, remote.url) if current is not None else {}

    changed = sorted((rel for rel, e in files.items()
                      if previous.get(rel) != e or listing.get(rel) != e.size), key=_order)
    stale = sorted((set(previous) | {rel for rel in listing if _ours(rel)}) - set(files))
    summary = PublishSummary(url=remote.url, unchanged=len(files) - len(changed))
    journal = _Uploaded(stage, remote.url, current)
    # Uploaded whole by an earlier run of this publish that stopped before its marker (Ctrl-C,
    # a failed upload), and still there at that size: not sent again.
    done = [rel for rel in changed
            if journal.before.get(rel) == files[rel] and listing.get(rel) == files[rel].size]
    changed = [rel for rel in changed if rel not in done]
    summary.resumed = len(done)
    if changed or previous != files:
        _remember(stage, "publishing.json", remote.url.encode("utf-8"))
        journal.start()
        bar = tqdm(total=sum(files[r].size for r in changed), unit="B", unit_scale=True,
                   desc="publish", disable=not progress,
                   file=unescaped(sys.stderr))
        with bar:
            # Each group completes before the next starts: shards, papers, ledger.
            for group in (0, 1, 2):
                batch = [rel for rel in changed if _order(rel)[0] == group]
                _upload_all(remote, stage, batch, files, bar, kept, journal)
        summary.uploaded = changed
        summary.uploaded_bytes = sum(files[r].size for r in changed)
        new_marker = marker_bytes(files)
        # Another stage publishing to this URL meanwhile (there is no lock at a URL): the
        # marker it wrote is not replaced with ours; this narrows the race to a moment.
        now = _remote_call(remote, f"reading {MARKER}", kept, lambda: read_marker(remote))
        if now != current:
            raise PublishError(
                f"{remote.url}: another stage published there while this one was uploading "
                f"(its {MARKER} changed); this publish stops short of its marker.{kept} "
                "Publishing from two stages to one URL at once is not supported: let one "
                "finish, then build with a stage pulled from the URL.")
        _remember(stage, "pending.json", new_marker)
        _remote_call(remote, f"writing {MARKER}", kept,
                     lambda: _put_bytes(remote, MARKER, new_marker))
        written = _remote_call(remote, f"reading {MARKER}", kept,
                               lambda: read_marker(remote))
        if written != new_marker:
            raise PublishError(
                f"{remote.url}: another stage wrote its {MARKER} at the same moment as this "
                "one, and its marker is the one there now: this publish did not take. "
                f"`cleanset verify {remote.url}` says whether the files match that marker. "
                "Publishing from two stages to one URL at once is not supported.")
        _remember(stage, "published.json", new_marker)
        _remember(stage, "pending.json", None)
        _remember(stage, _Uploaded.NAME, None)
        summary.marker_written = True
    for rel in stale:  # only now: the marker no longer lists them
        _remote_call(remote, f"removing {rel}", kept,
                     lambda rel=rel: remote.fs.rm_file(remote.path(rel)))
        summary.removed.append(rel)
    log.info("published %s: %d uploaded, %d unchanged, %d removed", remote.url,
             len(summary.uploaded), summary.unchanged, len(summary.removed))
    return summary


def _check_no_strangers(stage: Path, remote: Remote, listing: dict[str, int], then: str) -> None:
    """No marker: the files at the URL are someone's, unless this stage began publishing
    there (a first publish stopped before its marker), and publishing would replace or
    delete them (a README.md, shards/000000.tar of another WebDataset...)."""
    began = stage / STATE / "publishing.json"
    if not listing or (began.exists() and began.read_bytes() == remote.url.encode("utf-8")):
        return
    shown = ", ".join(sorted(listing)[:5]) + (f" and {len(listing) - 5} more"
                                              if len(listing) > 5 else "")
    raise PublishError(
        f"{remote.url}: holds files ({shown}) but no {MARKER}, so no cleanset dataset is "
        f"published there, and publishing would overwrite or delete them.{then} Publish to an "
        "empty location, or move those files away first.")


def _recorded_shards(stage: Path) -> dict[str, str]:
    """shards/NNNNNN.tar -> the sha256 the stage's ledger recorded when it was written."""
    import sqlite3

    from builder.shards import shard_name

    try:
        db = sqlite3.connect(f"file:{stage / LEDGER}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT shard, sha256 FROM shards WHERE complete = 1 AND "
                              "sha256 IS NOT NULL").fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        # Unreadable here (a write-ahead log only a writer may open): the build that follows
        # opens it properly and says what is wrong; nothing is pulled or held against it.
        return {}
    return {f"shards/{shard_name(number)}": sha for number, sha in rows}


def _check_stage_shards(stage: Path, files: dict[str, FileEntry]) -> None:
    """A stage shard changed since the build wrote it (damaged on disk, edited) must not
    replace the good published copy."""
    recorded = _recorded_shards(stage)
    for rel, entry in sorted(files.items()):
        if not _SHARD_RE.match(rel):
            continue
        want = recorded.get(rel)
        if want is not None and want != entry.sha256:
            raise PublishError(
                f"{stage / rel}: its sha256 {entry.sha256[:16]}… is not the {want[:16]}… the "
                "ledger recorded when it was written: the stage's copy was changed or damaged, "
                "and publishing it would replace a good copy. Nothing was published. Delete "
                "it from the stage and run the same command again: it is pulled back from the "
                "URL.")


class _Uploaded:
    """The stage's note of each file a publish has uploaded whole, one JSON line each, for
    the URL and the marker it found there: a publish stopped before its marker (Ctrl-C, a
    failed upload) is run again without sending those files again. Gone once the marker is
    written; void when the URL's marker is another by then."""

    NAME = "uploaded.jsonl"

    def __init__(self, stage: Path, url: str, current: bytes | None) -> None:
        self.stage = stage
        self.path = stage / STATE / self.NAME
        self.head = json.dumps({"url": url, "marker": hashlib.sha256(current or b"")
                                .hexdigest()}, sort_keys=True)
        self.before: dict[str, FileEntry] = {}
        self._lock = threading.Lock()
        try:
            head, *lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, ValueError):
            return
        if head != self.head:
            return
        for line in lines:
            try:
                rel, size, sha = json.loads(line)
                self.before[str(rel)] = FileEntry(int(size), str(sha))
            except (ValueError, TypeError):
                break  # a line cut short by a kill: everything before it stands

    def start(self) -> None:
        """Keep the note of an earlier run of this same publish, else start a new one."""
        if self.before:
            return
        _remember(self.stage, self.NAME, (self.head + "\n").encode("utf-8"))

    def add(self, rel: str, entry: FileEntry) -> None:
        line = json.dumps([rel, entry.size, entry.sha256]) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as note:
            note.write(line)


def _upload_all(remote: Remote, stage: Path, rels: list[str], files: dict[str, FileEntry],
                bar: Any, kept: str, journal: _Uploaded) -> None:
    if not rels:
        return

    def one(rel: str) -> None:
        _remote_call(remote, f"uploading {rel}", kept,
                     lambda: _upload(remote, stage / rel, rel, files[rel]))
        journal.add(rel, files[rel])
        bar.update(files[rel].size)

    pool = ThreadPoolExecutor(max_workers=min(UPLOAD_WORKERS, len(rels)))
    try:
        for future in [pool.submit(one, rel) for rel in rels]:
            future.result()
    except KeyboardInterrupt:
        # Ctrl-C stops at once: the queued uploads are not started, and those running are
        # not waited for (a remote temporary they leave is removed by the next publish).
        # Left to the pool, every queued file of the group was uploaded first.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()


def _upload(remote: Remote, local: Path, rel: str, entry: FileEntry) -> None:
    final = remote.path(rel)
    if remote.object_store:
        remote.fs.put_file(str(local), final)
    else:
        remote.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
        tmp = f"{final}{UPLOAD_TEMP}{secrets.token_hex(4)}"
        remote.fs.put_file(str(local), tmp)
        remote.fs.mv(tmp, final)
    size = remote.fs.size(final)
    if size != entry.size:
        raise OSError(f"uploaded {entry.size} bytes but the remote copy has {size}")


def _put_bytes(remote: Remote, rel: str, data: bytes) -> None:
    final = remote.path(rel)
    if remote.object_store:
        remote.fs.pipe_file(final, data)
        return
    remote.fs.makedirs(remote.root, exist_ok=True)
    tmp = f"{final}{UPLOAD_TEMP}{secrets.token_hex(4)}"
    remote.fs.pipe_file(tmp, data)
    remote.fs.mv(tmp, final)


# -- pull and download -----------------------------------------------------------------------
@dataclass(frozen=True)
class Pulled:
    files: int
    bytes: int
    kept: int = 0  # already in the stage, whole, from a pull that was stopped

    def line(self, url: str, stage: Path) -> str:
        kept = (f", {self.kept} of them already there from the pull that was stopped, not "
                "downloaded again" if self.kept else "")
        return (f"pulled the published dataset from {url}: {self.files} files "
                f"({self.bytes / 1e6:.1f} MB) into {stage}{kept}")


def prepare_stage(stage: Path, remote: Remote, *, nothing: str = "Nothing was built"
                  ) -> Pulled | None:
    """Before a build (or a takedown): check the remote is reachable and ours; pull it into an
    empty stage. `nothing` says, in errors, what was therefore not done."""
    check_apart(remote, stage)
    with OutputLock(stage):
        return _prepare_locked(stage, remote, nothing)


def check_apart(remote: Remote, stage: Path) -> None:
    """Refuse a local URL that is its stage, or inside or around it."""
    if not isinstance(remote.fs, LocalFileSystem):
        return
    target, here = Path(remote.root).resolve(), stage.resolve()
    if target == here:
        raise UserError(f"{remote.url}: is the stage itself; build into it with a plain "
                        "--out path, or publish to another location. Nothing was written.")
    if target.is_relative_to(here) or here.is_relative_to(target):
        raise UserError(f"{remote.url}: is {'inside' if target.is_relative_to(here) else 'around'} "
                        f"its stage {stage}: each publish would copy the one into the other. "
                        "Give the URL and --stage places apart. Nothing was written.")


def _prepare_locked(stage: Path, remote: Remote, nothing: str) -> Pulled | None:
    retry = (f" {nothing}; check the URL, the credentials and the network, then run the same "
             "command again.")
    current = _remote_call(remote, f"reading {MARKER}", retry, lambda: read_marker(remote))
    if (stage / LEDGER).exists():
        check_lineage(stage, remote, current, f" {nothing}.")
        if current is not None:
            return _pull_lost_shards(stage, remote, parse_marker(current, remote.url), retry)
        _check_no_strangers(stage, remote, _remote_call(remote, "listing", retry,
                                                        lambda: list_remote(remote)),
                            f" {nothing}.")
        return None
    if current is None:
        listing = _remote_call(remote, "listing", retry, lambda: list_remote(remote))
        if LEDGER in listing:
            raise PublishError(
                f"{remote.url}: holds {LEDGER} but no {MARKER}: a publish did not finish. Run "
                "again the command that was publishing (the build, or a takedown of this URL) "
                "with the same stage (by default the one derived from the URL) to finish it. "
                "Nothing was changed there.")
        _check_no_strangers(stage, remote, listing, f" {nothing}.")
        return None
    files = parse_marker(current, remote.url)
    cache: dict[str, list[Any]] = {}
    kept = 0
    # Known before the ledger is in place: a pull stopped just after it (Ctrl-C) was refused
    # by the same command as "a dataset published from elsewhere".
    _remember(stage, "published.json", current)
    for rel in sorted(files, key=_order):  # the ledger last: no ledger = not pulled yet
        if _pulled_before(stage / rel, files[rel]):  # by a pull stopped half-way
            cache[rel] = [*_stat_key(stage / rel), files[rel].sha256]
            kept += 1
            continue
        got = _remote_call(remote, f"downloading {rel}", retry,
                           lambda rel=rel: download(remote, rel, stage / rel))
        if got != files[rel]:
            (stage / rel).unlink(missing_ok=True)
            raise PublishError(
                f"{remote.url}: {rel} is {got.size} bytes with sha256 {got.sha256[:16]}… but "
                f"{MARKER} lists {files[rel].size} bytes, {files[rel].sha256[:16]}…: the "
                f"published copy is damaged (`cleanset verify {remote.url}` lists what). "
                f"{nothing}.")
        cache[rel] = [*_stat_key(stage / rel), got.sha256]
    _remember(stage, "hashes.json", json.dumps(cache).encode("utf-8"))
    return Pulled(files=len(files), bytes=sum(e.size for e in files.values()), kept=kept)


def _pulled_before(local: Path, entry: FileEntry) -> bool:
    """Whether the stage already holds this file as the marker lists it (downloaded whole by
    a pull that was stopped): read here, not downloaded again."""
    try:
        return local.stat().st_size == entry.size and file_sha256(local) == entry.sha256
    except OSError:
        return False


def _pull_lost_shards(stage: Path, remote: Remote, published: dict[str, FileEntry],
                      retry: str) -> Pulled | None:
    """Stage shards deleted since (by hand, a cleaner of caches) that the URL still holds as
    published: downloaded again, each checked against the marker."""
    recorded = _recorded_shards(stage)  # a copy of another version (before a takedown) is
    lost = sorted(rel for rel, entry in published.items()  # no copy of this one's shard
                  if _SHARD_RE.match(rel) and not (stage / rel).exists()
                  and recorded.get(rel) == entry.sha256)
    for rel in lost:
        got = _remote_call(remote, f"downloading {rel}", retry,
                           lambda rel=rel: download(remote, rel, stage / rel))
        if got != published[rel]:
            (stage / rel).unlink(missing_ok=True)
            raise PublishError(f"{remote.url}: {rel} differs from {MARKER}: the published copy "
                               f"is damaged too (`cleanset verify {remote.url}` lists what).")
    if not lost:
        return None
    return Pulled(files=len(lost), bytes=sum(published[r].size for r in lost))


def download(remote: Remote, rel: str, dest: Path) -> FileEntry:
    """Stream one remote file to `dest` (via a hidden temporary name); its size and sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}{UPLOAD_TEMP}download")
    digest = hashlib.sha256()
    size = 0
    try:
        with remote.fs.open(remote.path(rel), "rb") as src, tmp.open("wb") as dst:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                digest.update(chunk)
                dst.write(chunk)
                size += len(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return FileEntry(size, digest.hexdigest())


def unlisted_shards(remote: Remote) -> list[str]:
    """Problems for shards at the URL its marker does not list (a takedown or publish stopped
    before removing them): a reader globbing shards/ there reads them all the same."""
    current = read_marker(remote)
    if current is None:
        return []
    listed = parse_marker(current, remote.url)
    return [f"{rel}: at {remote.url} but not listed in {MARKER}: whatever reads shards/ there "
            "reads it too. Run the last build or takedown of this URL again (with its stage) "
            "to remove it" for rel in sorted(list_remote(remote))
            if _SHARD_RE.match(rel) and rel not in listed]


def download_published(remote: Remote, into: Path, only: Collection[str] | None = None,
                       *, optional: Collection[str] = ()) -> list[str]:
    """Download every file the marker lists (or those of `only`, and those of `optional` the
    marker lists) into `into`; problems where a copy differs from the marker or is missing."""
    current = _remote_call(remote, f"reading {MARKER}", "", lambda: read_marker(remote))
    if current is None:
        raise UserError(f"{remote.url}: no {MARKER} here, so no dataset is published there; is "
                        "this a published cleanset dataset? (A publish writes it last; if one "
                        "was interrupted, run its build again.)")
    listed = parse_marker(current, remote.url)
    problems = [f"{rel}: not listed in {MARKER}" for rel in sorted(set(only or ()) - set(listed))]
    for rel, entry in sorted(listed.items()):
        if only is not None and rel not in only and rel not in optional:
            continue
        try:
            got = download(remote, rel, into / rel)
        except FileNotFoundError:
            problems.append(f"{rel}: listed in {MARKER} but missing at {remote.url}")
            continue
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise PublishError(f"{remote.url}: downloading {rel} failed: "
                                   f"{_describe(exc)}.") from None
            # Our side: read as the URL's ("downloading ... failed"), it sent users there.
            need = sum(e.size for r, e in listed.items()
                       if only is None or r in only or r in optional)
            raise UserError(
                f"{remote.url}: downloading {rel} into the temporary directory {into.parent} "
                f"failed: {exc.strerror or exc}. The files read from the URL need "
                f"{need / 1e6:.1f} MB there: free some, or set TMPDIR to a directory with "
                "room, then run the same command again. Nothing was changed.") from None
        except Exception as exc:  # noqa: BLE001 - a backend failure is fatal, said plainly
            raise PublishError(f"{remote.url}: downloading {rel} failed: {_describe(exc)}.") \
                from None
        if got != entry:
            problems.append(f"{rel}: the remote copy ({got.size} bytes, sha256 "
                            f"{got.sha256[:16]}…) differs from {MARKER} ({entry.size} bytes, "
                            f"{entry.sha256[:16]}…)")
    return problems
