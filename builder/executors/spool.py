"""Image bytes handed from a worker process to the build process through a file, not a pipe.

A batch's outcomes travel back pickled through a pipe; with the images in them, the build
process spent ~250 us per 172 KB image receiving them (64 KiB reads, a copy per read, one
more to assemble the message and one to unpickle), and the worker as much sending. Instead
the worker writes a batch's images into one spool file (one writev) and sends the outcomes
without them; the build process maps the file, unlinks it at once (the mapping keeps the
bytes) and hands the pipeline zero-copy views of it: ~60 us per image, writing it into the
shard included (scripts/bench, docs/performance-round2.md).

The spool directory is private to one executor (a fresh temporary directory, removed when
the executor closes); a worker that cannot write there (disk full, a read-only temp
directory) sends the bytes through the pipe as before.
"""

from __future__ import annotations

import mmap
import os
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from builder.records import Checked
from builder.shards import writev_all


@dataclass(frozen=True)
class Spooled:
    """Where an outcome's image bytes are in its batch's spool file."""

    offset: int
    size: int

    def __len__(self) -> int:
        return self.size


@dataclass(frozen=True)
class SpooledBatch:
    """A batch's outcomes, their image bytes replaced by Spooled places in `path`."""

    outcomes: list[Any]
    path: str


def spool_images(outcomes: list[Any], spool_dir: str | None) -> list[Any] | SpooledBatch:
    """In a worker: the outcomes with their image bytes moved into one spool file, or as
    they were when there is nothing to move or the file cannot be written."""
    carrying = [i for i, o in enumerate(outcomes)
                if isinstance(o, Checked) and isinstance(o.fetched.data, bytes)
                and o.fetched.data]
    if spool_dir is None or not carrying:
        return outcomes
    path = os.path.join(spool_dir, f"{uuid.uuid4().hex}.images")
    images = [outcomes[i].fetched.data for i in carrying]
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            writev_all(fd, images)
        finally:
            os.close(fd)
    except OSError:
        Path(path).unlink(missing_ok=True)
        return outcomes
    moved = list(outcomes)
    offset = 0
    for i, data in zip(carrying, images, strict=True):
        checked = outcomes[i]
        moved[i] = replace(checked, fetched=replace(checked.fetched,
                                                    data=Spooled(offset, len(data))))
        offset += len(data)
    return SpooledBatch(moved, path)


def receive(result: list[Any] | SpooledBatch) -> list[Any]:
    """In the build process: a batch's outcomes with their image bytes back, as read-only
    views of the spool file (mapped, then unlinked: nothing is left behind once the views
    are gone)."""
    if not isinstance(result, SpooledBatch):
        return result
    try:
        with open(result.path, "rb") as file:
            mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{result.path}: the images a worker process left there for the build process "
            "vanished from the temporary directory before they were read (a cleaner of "
            "temporary files?)") from None
    finally:
        Path(result.path).unlink(missing_ok=True)
    view = memoryview(mapped)
    outcomes = list(result.outcomes)
    for i, outcome in enumerate(outcomes):
        if isinstance(outcome, Checked) and isinstance(outcome.fetched.data, Spooled):
            place = outcome.fetched.data
            outcomes[i] = replace(outcome, fetched=replace(
                outcome.fetched, data=view[place.offset:place.offset + place.size]))
    return outcomes

