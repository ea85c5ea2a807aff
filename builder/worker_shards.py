"""Shards written by Ray workers: the driver plans each shard, a worker writes it, the driver
commits it (`[executor] write_shards = "workers"`, or `--write-shards workers`).

The driver decides in source order as always, but keeps only each accepted sample's metadata
and a reference to its bytes, which stay in the Ray object store where the stage task put
them. When a shard's worth is decided, a worker writes the whole shard under a temporary name
on the (shared) output filesystem and returns its size and sha256; the driver renames it and
records it complete. So the driver never touches image bytes.

Decisions keep committing every `commit_every` as usual, including samples whose shard is not
written yet. Their bytes die with the driver's Ray objects, so when a shard opens its rewind
point is recorded with it (the first sample's seq, the source cursor before it, the next key);
a resumed build first rewinds the ledger to the rewind point of the first shard never written
and decides from there again, identically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder import clusters
from builder.ledger import BuildRow, Ledger
from builder.records import Detached
from builder.shards import fsync_dir, shard_name

UNWRITTEN = "unwritten_shard:"  # meta key prefix: a shard planned and not yet written


@dataclass
class ShardPlan:
    number: int
    # (key, ext, bytes where they are, sha256, provenance JSON, caption)
    samples: list[tuple[str, str, Detached, str, bytes, bytes]] = field(default_factory=list)


def record_rewind_point(ledger: Ledger, number: int, *, build: int, seq: int, next_key: int,
                        source_index: int, source_resume: dict[str, Any] | None) -> None:
    ledger.set_meta(f"{UNWRITTEN}{number}", json.dumps(
        {"build": build, "seq": seq, "next_key": next_key, "source_index": source_index,
         "source_resume": source_resume}, sort_keys=True))


def shard_written(ledger: Ledger, number: int) -> None:
    ledger.db.execute("DELETE FROM meta WHERE key = ?", (f"{UNWRITTEN}{number}",))


def rewind_unwritten(ledger: Ledger, row: BuildRow, shards_dir: Path) -> bool:
    """Undo every decision from the first shard never written on; True if anything was."""
    db = ledger.db
    points = {int(key[len(UNWRITTEN):]): json.loads(value) for key, value in db.execute(
        "SELECT key, value FROM meta WHERE key LIKE ?", (UNWRITTEN + "%",))}
    if not points:
        return False
    first = min(points)
    point = points[first]
    build, seq = point["build"], point["seq"]
    if build != row.build:  # cannot happen: a build finishes only with every shard written
        raise RuntimeError(f"unwritten shard {first} belongs to build {build}, not {row.build}")
    clusters.ensure_schema(db)
    ledger.begin()
    db.execute("DELETE FROM candidates WHERE build = ? AND seq >= ?", (build, seq))
    db.execute("DELETE FROM samples WHERE build = ? AND seq >= ?", (build, seq))
    db.execute("DELETE FROM duplicates WHERE build = ? AND seq >= ?", (build, seq))
    doomed = [n for (n,) in db.execute("SELECT shard FROM shards WHERE shard >= ?", (first,))]
    db.execute("DELETE FROM shards WHERE shard >= ?", (first,))
    db.execute("DELETE FROM meta WHERE key LIKE ?", (UNWRITTEN + "%",))
    ledger.advance(build, next_seq=seq, source_index=point["source_index"],
                   source_resume=point["source_resume"])
    ledger.set_meta("next_key", str(point["next_key"]))
    ledger.set_meta("next_shard", str(first))  # never published: the numbers are reused
    ledger.commit()
    for number in doomed:
        # The shard and the temporaries a build gives it (.tmp, a worker's .TOKEN.tmp):
        # a glob of the name deleted a user's `000031.tar.bak` with them.
        for path in shards_dir.glob(f"{shard_name(number)}*"):
            if path.name == shard_name(number) or path.name.endswith(".tmp"):
                path.unlink()
    fsync_dir(shards_dir)
    return True
