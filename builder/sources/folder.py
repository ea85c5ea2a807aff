"""`folder` source: local images with licence metadata beside them.

For collections a team licensed itself or received with the creators' consent. Images are
found by extension (jpg jpeg png webp gif tif tiff, any case) and offered in the order of
their relative POSIX path, so the same folder always gives the same candidates.

Metadata for `dir/photo.jpg` comes from, in this order (later wins for descriptive fields;
licence claims from both are all kept, so a disagreement reaches the licence gate as a
conflict instead of being silently resolved here):
  1. each row of `metadata.csv` or `metadata.jsonl` in `dir/` or any folder above it (top
     folder first, rows in order) whose `file_name` column is the image's path relative to
     that metadata file (the Hugging Face imagefolder convention);
  2. a sidecar `dir/photo.jpg.json`, or else `dir/photo.json` (then shared by every image
     named `photo.*`).
Sidecar keys: license / license_url / licence / rights (licence claims), creator / author /
artist, creator_url, title, caption / text / description, landing_url / source_url / url,
credit; every other key is kept in `extra`.

A file name that is not UTF-8 (Latin-1 bytes such as `caf\\xe9.jpg`) is still offered: its
source id and path are the name with those bytes escaped, so the ledger can record it, and
the fetch stage refuses it (`http_error`, asking to rename it) instead of the build stopping.
A folder this user cannot list or enter stops the build before it starts (UserError naming
it): skipping it would leave its images out without a word.

Hidden files and folders (".name") are skipped. Symbolic links are never followed out of the
folder: a linked folder is not descended, and a linked file or sidecar is used only when its
target lies inside the folder — a dataset folder must not become a way to publish
/etc/passwd or someone's home directory.

Resume state after each candidate: `{"after": <relative path>, "count": n}`; resuming
continues with the first image whose path sorts after `after`, so images added or removed
since do not shift what was already decided.
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import json
import logging
import os
import posixpath
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

from builder.config import resolve_path
from builder.errors import UserError
from builder.records import Candidate, Evidence
from builder.sources.base import GONE, PRESENT, UNREACHABLE, Item, Now, SourceContext
from builder.sources.columns import (
    TABLE_ALIASES,
    KeyGivenTwice,
    check_named_once,
    one_value_per_key,
    plan_columns,
    row_evidence,
    row_to_candidate,
)

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".tif", ".tiff"})
METADATA_FILES = ("metadata.csv", "metadata.jsonl")
# image path -> every metadata row naming it: (the metadata file, the row), in reading order
Metadata = dict[str, list[tuple[str, dict[str, Any]]]]

# In a sidecar, `url` is where the work is described, not a file to fetch: the file is here.
FOLDER_ALIASES: dict[str, tuple[str, ...]] = {
    **{k: v for k, v in TABLE_ALIASES.items() if k not in ("url", "id")},
    "landing_url": ("landing_url", "source_url", "url", "pageurl", "page_url",
                    "foreign_landing_url"),
}


@dataclass(frozen=True)
class Config:
    path: str
    recursive: bool = True
    license: str | None = None

    def check(self, *, file: Path | str, base: Path, where: str) -> Config:
        path = resolve_path(self.path, base=base, file=file, key=f"{where}.path", kind="dir")
        if self.license is not None and not self.license.strip():
            raise UserError(f"{file}: {where}.license is empty; give a licence URL or remove it.")
        return replace(self, path=str(path.absolute()))


class FolderSource:
    def __init__(self, name: str, config: Config, context: SourceContext) -> None:
        self.name = name
        self.config = config
        self.context = context
        path = Path(config.path)
        self.root = (path if path.is_absolute() else context.base_dir / path).resolve()

    def candidates(self, resume: dict[str, Any] | None) -> Iterator[Candidate]:
        images, metadata = self._scan()
        rels = [rel for rel, _ in images]
        after = (resume or {}).get("after")
        start = bisect.bisect_right(rels, after) if isinstance(after, str) else 0
        count = int((resume or {}).get("count", 0)) if isinstance(after, str) else 0
        for rel, path in images[start:]:
            count += 1
            yield self._candidate(rel, path, metadata.get(rel, []),
                                  resume={"after": rel, "count": count})

    # -- finding files -------------------------------------------------------

    def _inside(self, path: Path) -> bool:
        """True when `path` (after following any links) is a file inside the folder."""
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):  # dangling link or link loop
            return False
        return target.is_relative_to(self.root) and target.is_file()

    def preflight(self) -> None:
        """Walk the folder and read its metadata files (not the sidecars, read one per image
        during the build): a malformed metadata file, or a folder without a single image,
        is refused before the build starts. The walk is repeated by the build; it costs a
        directory listing, small next to fetching and hashing every image."""
        images, _ = self._scan()
        if not images:
            below = " (recursive = false: its subfolders were not searched)" \
                if not self.config.recursive else ""
            raise UserError(
                f"{self.root}: holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})"
                f"{below}, so source {self.name!r} of {self.context.recipe_file} would yield "
                "nothing. Put the images there, fix the path, or remove the source."
            )

    def _scan(self) -> tuple[list[tuple[str, Path]], Metadata]:
        if not self.root.is_dir():
            raise UserError(
                f"{self.root}: image folder of source {self.name!r} is gone (named in "
                f"{self.context.recipe_file}). Restore it or fix the path."
            )
        images: list[tuple[str, Path]] = []
        metadata: Metadata = {}
        for dirpath, dirnames, filenames in os.walk(self.root, onerror=self._unreadable,
                                                    followlinks=False):
            here = Path(dirpath)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) \
                if self.config.recursive else []
            self._load_metadata(here, filenames, metadata)
            for filename in filenames:
                if filename.startswith(".") or Path(filename).suffix.lower() not in \
                        IMAGE_EXTENSIONS:
                    continue
                path = here / filename
                try:
                    mode = path.lstat().st_mode
                    if stat.S_ISLNK(mode):
                        if not self._inside(path):
                            log.warning("folder source %s: skipping %s: a link pointing "
                                        "outside %s", self.name, path, self.root)
                            continue
                        mode = path.stat().st_mode
                except FileNotFoundError:  # removed while we looked
                    continue
                except OSError as exc:  # a folder that lists its names but cannot be entered
                    self._unreadable(OSError(exc.errno, exc.strerror, str(here)))
                if not stat.S_ISREG(mode):  # a FIFO or device named x.jpg would hang the reader
                    continue
                images.append((path.relative_to(self.root).as_posix(), path))
        images.sort()
        return images, metadata

    def _unreadable(self, exc: OSError) -> NoReturn:
        """A folder the walk cannot read. os.walk would skip it in silence, and its images
        would be missing from the dataset without a ledger row; like an unreadable sidecar,
        it stops the build (before anything is written: preflight walks first)."""
        elsewhere = "" if Path(exc.filename) == self.root else f", or move it out of {self.root}"
        raise UserError(
            f"{exc.filename}: cannot read this folder ({exc.strerror or exc}), so the images "
            f"in it would be left out of source {self.name!r} of {self.context.recipe_file} "
            "without a word. Make it readable by the user running cleanset (e.g. chmod a+rx "
            f"on it){elsewhere}, then run the same command again."
        ) from None

    # -- metadata ------------------------------------------------------------

    def _load_metadata(self, here: Path, filenames: list[str], into: Metadata) -> None:
        present = [m for m in METADATA_FILES if m in filenames]
        if len(present) > 1:
            raise UserError(
                f"{here}: holds both metadata.csv and metadata.jsonl; keep one of them."
            )
        if not present:
            return
        file = here / present[0]
        if not self._inside(file):
            log.warning("folder source %s: ignoring %s: a link pointing outside %s",
                        self.name, file, self.root)
            return
        rel_dir = here.relative_to(self.root).as_posix()
        meta_rel = file.relative_to(self.root).as_posix()
        rows = _read_csv(file) if file.suffix == ".csv" else _read_jsonl(file)
        for line, row in rows:
            name = row.get("file_name")
            if not isinstance(name, str) or not name.strip():
                raise UserError(
                    f"{file}: line {line} has no file_name. Every row names its image, "
                    "relative to this metadata file, in a `file_name` column."
                )
            key = posixpath.normpath(posixpath.join(rel_dir, name.strip().replace("\\", "/")))
            # Every row naming the image is kept (a row appended again, one in a folder
            # above): the last alone would hide the others' licence claims from the gate.
            into.setdefault(key, []).append(
                (meta_rel, {k: v for k, v in row.items() if k != "file_name"}))

    def _sidecar(self, path: Path) -> tuple[Path, dict[str, Any]] | None:
        for side in (path.with_name(path.name + ".json"), path.with_suffix(".json")):
            if not side.exists() and not side.is_symlink():
                continue
            if not self._inside(side):
                log.warning("folder source %s: ignoring sidecar %s: a link pointing outside %s",
                            self.name, side, self.root)
                continue
            return side, _read_json_object(side)
        return None

    # -- candidate -----------------------------------------------------------

    def _candidate(self, rel: str, path: Path, meta: list[tuple[str, dict[str, Any]]],
                   resume: dict[str, Any]) -> Candidate:
        layers = list(meta)
        sidecar = self._sidecar(path)
        if sidecar is not None:
            layers.append((sidecar[0].relative_to(self.root).as_posix(), sidecar[1]))
        merged: dict[str, Any] = {}
        for _, values in layers:
            merged.update(values)
        plan = plan_columns(merged, {}, aliases=FOLDER_ALIASES, extra=None)
        evidence: list[Evidence] = []
        for _, values in layers:
            for claim in row_evidence(values, plan_columns(values, {}, aliases=FOLDER_ALIASES)):
                if claim not in evidence:
                    evidence.append(claim)
        found_in = [("metadata_from", shown_name(where))
                    for where in dict.fromkeys(where for where, _ in layers)]
        # `local_path` is the file as the OS names it; every name that is recorded (source
        # id, url, extra) is text: a non-UTF-8 name escaped, which the fetch stage refuses.
        shown = shown_name(rel)
        candidate = row_to_candidate(
            merged, plan, source=self.name, fallback_id=shown, fixed_license=None,
            resume=resume, url=shown, local_path=str(path), extra=found_in,
        )
        if self.config.license:
            evidence.append(Evidence(field="recipe:license", value=self.config.license))
        return replace(candidate, source_id=shown, evidence=tuple(evidence))


def shown_name(name: str) -> str:
    """`name` as text that can be recorded: itself when it is UTF-8; otherwise the bytes
    that are not UTF-8 (which Python holds as lone surrogates, and which neither SQLite nor
    JSON can store) written as `\\xNN`: `caf\\xe9.jpg`."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _read_json_object(file: Path) -> dict[str, Any]:
    try:
        value = json.loads(file.read_bytes().decode("utf-8"), object_pairs_hook=one_value_per_key)
    except KeyGivenTwice as exc:
        raise UserError(f"{file}: the sidecar {exc} Keep one of them.") from None
    except UnicodeDecodeError:
        raise UserError(f"{file}: is not UTF-8 text. Re-save the sidecar as UTF-8 JSON.") from None
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{file}: sidecar is not valid JSON ({exc.msg} at line {exc.lineno}, column "
            f"{exc.colno}). Fix it, e.g. {{\"license\": \"https://creativecommons.org/"
            "publicdomain/zero/1.0/\", \"creator\": \"...\"}."
        ) from None
    if not isinstance(value, dict):
        raise UserError(
            f"{file}: sidecar must be one JSON object, not a {type(value).__name__}."
        )
    return value


def _read_csv(file: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with file.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        try:
            names = [n.strip() for n in reader.fieldnames or ()]
            check_named_once(names, f"{file}: the header line")
            for row in reader:
                yield reader.line_num, {k.strip(): v for k, v in row.items() if k is not None}
        except (csv.Error, UnicodeDecodeError) as exc:
            raise UserError(
                f"{file}: line {reader.line_num}: malformed CSV ({exc}). Fix that line."
            ) from None


def _read_jsonl(file: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with file.open("rb") as fh:
        for line, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw, object_pairs_hook=one_value_per_key)
            except KeyGivenTwice as exc:
                raise UserError(f"{file}: line {line}: {exc} Keep one of them.") from None
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise UserError(
                    f"{file}: line {line}: not valid JSON ({exc}). Fix or delete that line."
                ) from None
            if not isinstance(value, dict):
                raise UserError(f"{file}: line {line}: must be a JSON object.")
            yield line, value


class FolderRecheck:
    """Each image still in the folder, with the bytes it had (sha256)."""

    batch = 64

    def __init__(self, name: str, config: Config, context: SourceContext) -> None:
        self.source = FolderSource(name, config, context)
        self._metadata: Metadata | None = None

    def ask(self, items: Sequence[Item]) -> dict[str, Now]:
        if self._metadata is None:  # the folder's metadata files, read once per recheck
            self._metadata = self.source._scan()[1]
        return {item.key: self._one(item) for item in items}

    def _one(self, item: Item) -> Now:
        rel = item.path or item.source_id
        path = self.source.root / rel
        if not (path.exists() or path.is_symlink()):
            return Now(GONE, f"{path} is gone")
        if not self.source._inside(path):
            return Now(GONE, f"{path} is no longer a file inside {self.source.root}")
        digest = hashlib.sha256()
        try:
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
        except OSError as exc:
            return Now(UNREACHABLE, f"{path} cannot be read: {exc.strerror or exc}")
        # The licence claims as the build reads them today (metadata file, sidecar, the
        # recipe's licence): a sidecar relicensed after the build is a licence change.
        assert self._metadata is not None
        try:
            claims = self.source._candidate(rel, path, self._metadata.get(rel, []), {}).evidence
        except UserError as exc:  # a sidecar broken since: nothing known about the licence
            return Now(UNREACHABLE, f"its metadata cannot be read: {exc}",
                       sha256=digest.hexdigest())
        except OSError as exc:  # one this user may no longer read: the same, not a stop
            # (it stopped the whole recheck, exit 1 on every run, no other sample checked)
            return Now(UNREACHABLE, f"its metadata cannot be read: {exc.filename or path}: "
                       f"{exc.strerror or exc}", sha256=digest.hexdigest())
        return Now(PRESENT, sha256=digest.hexdigest(), evidence=claims, record_is_whole=True)

    def close(self) -> None:
        pass


def rechecker(name: str, config: Config, context: SourceContext) -> FolderRecheck:
    return FolderRecheck(name, config, context)


SOURCE = FolderSource
