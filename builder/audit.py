"""`cleanset verify`: re-read everything and check that shards, provenance, manifest, ledger
and policy all tell the same story. Each disagreement is one line naming what and where."""

from __future__ import annotations

import hashlib
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa

from builder.exports.tables import read_columns
from builder.ledger import Ledger, reading, require_dataset
from builder.recipe import is_url
from builder.shards import file_sha256, read_shard_members, shard_name, shard_number

LOST_SHARD = "in the ledger but the file is missing"


def verify(out: Path, shown_as: str | None = None) -> tuple[list[str], int]:
    """Return (problems, samples checked). Reads only: the directory is left as it was.

    `shown_as` names the dataset in the fixes suggested (the URL when `out` is a download).
    """
    require_dataset(out)
    # An interrupted takedown is reported, not finished here: an auditor's verify must not
    # change what it audits (and may run on a read-only copy).
    problems = _check_pending_takedown(out, shown_as or str(out))
    with reading(out, "verify") as ledger:
        found, checked = _verify(out, ledger)
        problems += found
        problems += _check_report(out, ledger, shown_as or str(out))
    problems += _check_denylist(out)
    return problems, checked


def _check_denylist(out: Path) -> list[str]:
    """The takedowns' denylist keeps the works they removed out of every later build, which
    stops on a line it cannot read: a damaged line is a problem now, not at the next build."""
    from builder.optout.denylist import Denylist
    from builder.takedown_journal import DENYLIST

    unread: list[str] = []
    Denylist().load(out / DENYLIST, required=False, unread=unread)
    return [f"{problem} The next build into this directory stops on it." for problem in unread]


def note_pending_takedown(out: Path) -> None:
    """For a command that only reads (lookup, evidence, report, diff, takedown --dry-run): say
    on stderr when an interrupted takedown leaves shards, ledger and papers at different
    versions, since what it answers may describe the version before that takedown."""
    for problem in _check_pending_takedown(out, str(out)):
        print(f"cleanset: note: {problem}; until then, what this command shows may describe "
              "the version before it", file=sys.stderr)


def note_unfinished_build(out: Path, command: str) -> None:
    """For a command that answers "is it in the dataset?" (lookup): say on stderr when the
    latest build has not finished, since a work it has not reached yet is not found either."""
    if not (out / "ledger.sqlite").is_file():
        return  # the command itself names what is missing
    with reading(out, command) as ledger:
        latest = ledger.latest_build()
    if latest is not None and latest.finished_at is None:
        print(f"cleanset: note: build {latest.build} into {out} has not finished; what it has "
              "not reached yet is not in the answer (run the same `cleanset build` to finish "
              "it)", file=sys.stderr)


def _check_pending_takedown(out: Path, name: str) -> list[str]:
    from builder.takedown_journal import JOURNAL, pending_takedown

    pending = pending_takedown(out)
    if pending is None:
        return []
    return [f"takedown {pending} was interrupted ({JOURNAL} is there): shards, ledger and "
            "papers may each show the old or the new version; run `cleanset takedown "
            f"{name}` to finish it"]


def _check_report(out: Path, ledger: Ledger, name: str) -> list[str]:
    """report.html is optional; when present it must describe the current version."""
    from builder.exports.report import shown_version

    path = out / "report.html"
    if not path.exists():
        return []
    current = ledger.get_meta("dataset_version") or "0"
    shown = shown_version(path)
    if shown == current:
        return []
    what = f"shows version {shown}" if shown else "does not say which version it shows"
    fix = (f"`cleanset report STAGE` in the stage {name} is published from, then publish"
           if is_url(name) else f"`cleanset report {name}`")
    return [f"report.html is stale: it {what}, the dataset is at version {current}; "
            f"regenerate it with {fix}"]


def _verify(out: Path, ledger: Ledger) -> tuple[list[str], int]:
    problems: list[str] = []
    samples = {r["key"]: dict(r) for r in ledger.iter_samples()}
    policies = {b.build: json.loads(b.policy) for b in ledger.builds()}
    unfinished = [b.build for b in ledger.builds() if b.finished_at is None]
    if unfinished:
        problems.append(f"build {unfinished[-1]} is unfinished; run `cleanset build` to resume it")

    # 1. every shard, every member, against its provenance and the ledger
    seen: dict[str, int] = {}
    shard_rows = {s.shard: s for s in ledger.shards()}
    shards_dir = out / "shards"
    files = sorted(p for p in shards_dir.glob("*.tar")) if shards_dir.exists() else []
    for path in files:
        number = shard_number(path.name)
        if number is None:  # no name a build gives: someone's file, which a build leaves
            problems.append(f"shards/{path.name}: not a shard of this dataset; whatever "
                            "reads shards/ reads it too")
            continue
        row = shard_rows.get(number)
        if row is None:
            problems.append(f"{path.name}: shard not in the ledger")
            continue
        if row.complete and row.sha256 and file_sha256(path) != row.sha256:
            problems.append(f"{path.name}: file sha256 differs from the one recorded when written")
        try:
            members = read_shard_members(path)
        except Exception as exc:  # noqa: BLE001 - a broken tar is a finding, not a crash
            problems.append(f"{path.name}: unreadable tar: {exc}")
            continue
        by_key: dict[str, dict[str, bytes]] = defaultdict(dict)
        for name, data in members:
            key, _, ext = name.partition(".")
            by_key[key][ext] = data
        for key, parts in by_key.items():
            seen[key] = number
            problems.extend(_check_sample(path.name, key, parts, samples.get(key), number,
                                          policies))
    if shards_dir.is_dir():
        # A loader reads shards/ by a glob (`shards/**/*.tar`, load_dataset's data_dir)
        problems.extend(f"shards/{p.name}: not a shard of this dataset; whatever reads "
                        "shards/ reads it too" for p in sorted(shards_dir.iterdir())
                        if p.is_dir() or not p.name.endswith((".tar", ".tmp")))
    for number, row in shard_rows.items():
        if row.complete and not (shards_dir / shard_name(number)).exists():
            problems.append(f"{shard_name(number)}: {LOST_SHARD}")
    for key in samples:
        if key not in seen:
            problems.append(f"{key}: in the ledger but in no shard")

    # 2. the manifest against the ledger
    problems.extend(_check_manifest(out / "manifest.parquet", samples))
    from builder.exports.papers import check_papers  # the papers (SPDX, Croissant, card...)

    problems.extend(check_papers(out, ledger))

    # 3. the ledger's own accounting: inputs == accepted + rejected (+ removed)
    problems.extend(_check_accounting(ledger, samples))

    # 4. the evidence archive: every record intact, every sample's pointers true
    from builder.evidence.check import check_evidence

    problems.extend(check_evidence(out, ledger))
    return problems, len(seen)


def _check_sample(shard: str, key: str, parts: dict[str, bytes], row: dict[str, Any] | None,
                  number: int, policies: dict[int, dict[str, Any]]) -> list[str]:
    where = f"{shard}:{key}"
    if row is None:
        return [f"{where}: sample not in the ledger"]
    out: list[str] = []
    if row["shard"] != number:
        out.append(f"{where}: ledger says shard {row['shard']}")
    if "json" not in parts:
        return out + [f"{where}: no provenance (.json) member"]
    try:
        prov = json.loads(parts["json"])
    except ValueError:
        return out + [f"{where}: provenance .json is not valid JSON"]
    if parts["json"] != row["provenance"].encode("utf-8"):
        out.append(f"{where}: provenance differs from the ledger's copy of it")
    out.extend(f"{where}: the ledger's {column} {value!r} differs from the provenance's "
               f"{stated!r}" for column, value, stated in _columns_unlike(row, prov))
    image = parts.get(row["ext"])
    if image is None:
        return out + [f"{where}: no image member .{row['ext']}"]
    digest = hashlib.sha256(image).hexdigest()
    if digest != prov.get("sha256"):
        out.append(f"{where}: image sha256 {digest[:16]}… differs from provenance "
                   f"{str(prov.get('sha256'))[:16]}…")
    if digest != row["sha256"]:
        out.append(f"{where}: image sha256 differs from the ledger/manifest")
    if len(image) != prov.get("bytes"):
        out.append(f"{where}: image is {len(image)} bytes, provenance says {prov.get('bytes')}")
    spdx = (prov.get("license") or {}).get("spdx")
    if spdx != row["license"]:
        out.append(f"{where}: provenance licence {spdx} differs from the ledger {row['license']}")
    policy = policies.get(row["build"], {})
    if not _admitted(spdx, policy):
        out.append(f"{where}: licence {spdx} is not admitted by policy "
                   f"{policy.get('name', '?')} recorded for build {row['build']}")
    return out


# The ledger's sample columns (what the papers, lookup and takedown read) and where the
# sample's provenance states each (builder/provenance.py); licence and sha256 have their own.
_PROVENANCE_PATHS = {
    "sha1": ("sha1",), "pdq": ("pdq",), "pdq_quality": ("pdq_quality",), "phash": ("phash",),
    "width": ("width",), "height": ("height",), "mime": ("mime",), "bytes": ("bytes",),
    "license_url": ("license", "url"), "source": ("source", "name"),
    "source_id": ("source", "id"), "file_url": ("source", "file_url"),
    "landing_url": ("source", "landing_url"), "creator": ("attribution", "creator"),
    "title": ("attribution", "title"),
}


def _columns_unlike(row: dict[str, Any], prov: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    unlike = []
    for column, path in _PROVENANCE_PATHS.items():
        stated: Any = prov
        for step in path:
            stated = stated.get(step) if isinstance(stated, dict) else None
        if row[column] != stated:
            unlike.append((column, row[column], stated))
    return unlike


def _admitted(spdx: str | None, policy: dict[str, Any]) -> bool:
    if not spdx:
        return False
    from builder.licensing import Policy, is_admitted

    return bool(is_admitted(spdx, Policy.from_json(policy)))


def _check_manifest(path: Path, samples: dict[str, dict[str, Any]]) -> list[str]:
    if not path.exists():
        return ["manifest.parquet is missing"]
    try:
        table = read_columns(path, ["key", "sha256", "license", "shard"])
    except (pa.ArrowException, OSError) as exc:  # truncated, written over: a finding
        return [f"manifest.parquet cannot be read ({str(exc).splitlines()[0]})"]
    keys = table.column("key").to_pylist()
    out: list[str] = []
    if len(keys) != len(set(keys)):
        out.append("manifest.parquet lists a key twice")
    rows = dict(zip(keys, zip(table.column("sha256").to_pylist(),
                              table.column("license").to_pylist(),
                              table.column("shard").to_pylist(), strict=True), strict=True))
    for key in sorted(set(samples) - set(rows)):
        out.append(f"{key}: in the ledger but not in manifest.parquet")
    for key in sorted(set(rows) - set(samples)):
        out.append(f"{key}: in manifest.parquet but not in the ledger")
    for key, (sha, lic, shard) in rows.items():
        s = samples.get(key)
        if s is None:
            continue
        if sha != s["sha256"] or lic != s["license"] or shard != f"shards/{shard_name(s['shard'])}":
            out.append(f"{key}: manifest.parquet row disagrees with the ledger")
    return out


def _check_accounting(ledger: Ledger, samples: dict[str, dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for b in ledger.builds():
        n = ledger.db.execute("SELECT COUNT(*) FROM candidates WHERE build = ?",
                              (b.build,)).fetchone()[0]
        if n != b.next_seq:
            out.append(f"build {b.build}: {b.next_seq} candidates considered but {n} ledger rows")
    accepted = {r[0] for r in ledger.db.execute(
        "SELECT key FROM candidates WHERE status = 'accepted'")}
    for key in sorted(accepted - set(samples)):
        out.append(f"{key}: accepted in the ledger but has no sample record")
    for key in sorted(set(samples) - accepted):
        out.append(f"{key}: sample without an accepted candidate row")
    for key, said, kept in ledger.db.execute(
            "SELECT c.key, c.license, s.license FROM candidates c JOIN samples s ON s.key = c.key "
            "WHERE c.status = 'accepted' AND c.license IS NOT s.license ORDER BY c.key"):
        out.append(f"{key}: its candidate row says licence {said}, its sample {kept}")
    bad = ledger.db.execute(
        "SELECT COUNT(*) FROM candidates WHERE status = 'rejected' AND reason IS NULL"
    ).fetchone()[0]
    if bad:
        out.append(f"{bad} rejected candidates have no reason")
    return out
