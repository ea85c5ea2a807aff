"""A takedown's files, read without the takedown machinery: whether one was interrupted
(its journal), its log and the denylist it keeps.

`verify`, `report`, `lookup` and every reading command ask this; importing builder.takedown
for it cost each of them ~0.2 s (FAISS, OpenCV, the fetcher).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

JOURNAL = ".takedown.json"
LOG = "takedowns.jsonl"
DENYLIST = "denylist.jsonl"


def pending_takedown(out: Path) -> str | None:
    """The id of the interrupted takedown whose journal is in `out`, if any; reads only.

    `verify` reports it (and changes nothing); `cleanset takedown DIR` finishes it.
    """
    path = out / JOURNAL
    if not path.exists():
        return None
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["id"])
    except (ValueError, KeyError, TypeError):
        return f"(unreadable {JOURNAL})"


def pending_takedown_record(out: Path) -> dict[str, object]:
    """What the interrupted takedown in `out` was removing, as its `takedowns.jsonl` line
    will say (when, reason, keys...), or {} when its journal holds no such record."""
    try:
        log = json.loads((out / JOURNAL).read_text(encoding="utf-8")).get("log")
    except (OSError, ValueError, AttributeError):
        return {}
    return log if isinstance(log, dict) else {}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The file's complete lines; a torn last line (a killed writer) is skipped, not fatal."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows
