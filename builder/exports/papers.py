"""Regenerate every paper of an output directory from its ledger, atomically each.

The papers (manifest, candidates, SPDX, Croissant, dataset card, attribution list) are all
derived from the ledger, so they are rewritten whole after every build, resume and takedown
and can never drift from the shards. Each is written to a temporary name and renamed, so a
reader (or a crash) never sees half a paper.
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import json
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.errors import UserError
from builder.ledger import Ledger

if TYPE_CHECKING:
    from builder.recipe import DatasetConfig

PAPERS = ("manifest.parquet", "candidates.parquet", "spdx.json", "croissant.json", "README.md",
          "ATTRIBUTION.md", "attribution.csv")
# Ledger meta: {paper: sha256} of each paper as last written. The papers' own checks hold
# what they say to the ledger; this holds every byte, so an edited credit or a damaged
# candidates.parquet is found too (datasets written before it have none: those checks only).
WRITTEN_META = "papers_sha256"

# What the writers import lazily, by the distribution (a base dependency) that provides it.
WRITER_MODULES = {
    "spdx_tools.spdx.writer.json.json_writer": "spdx-tools",
    "spdx_tools.spdx.validation.document_validator": "spdx-tools",
    "yaml": "pyyaml",
}


def require_writers() -> None:
    """Raise a UserError naming the missing package if a paper could not be written.

    Called before a build or takedown changes anything, so an incomplete installation stops
    it at the start instead of after hours of shards, with the papers missing."""
    for module, dist in WRITER_MODULES.items():
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise UserError(
                f"cleanset's installation is incomplete: {exc}, from package {dist!r}, which "
                f"every build needs to write its papers. Install it (pip install {dist}) or "
                "reinstall cleanset with its dependencies (pip install . in its checkout), "
                "then run the same command again."
            ) from None


# The recipe's [dataset] keys the papers quote, kept in the ledger meta as `dataset_<key>`:
# a takedown or a verify years later regenerates the same papers without the recipe.
DATASET_META = ("description", "homepage", "contact", "citation")


def record_dataset_meta(ledger: Ledger, dataset: DatasetConfig) -> None:
    """Store the latest build's dataset description and contacts (empty when unset, so a key
    removed from the recipe disappears from the papers too)."""
    ledger.set_meta("dataset_name", dataset.name)
    for key in DATASET_META:
        ledger.set_meta(f"dataset_{key}", getattr(dataset, key) or "")


def write_papers(ledger: Ledger, out: Path) -> None:
    """Every paper of `out` from its ledger; the caller holds the directory's write lock."""
    require_writers()  # all or none: never a fresh manifest beside a stale spdx.json
    # Imported here, not at module level: the writers pull in spdx-tools and friends, which
    # a build only needs once, at the end.
    from builder.exports.attribution import write_attribution
    from builder.exports.card import write_card
    from builder.exports.croissant import write_croissant
    from builder.exports.spdx import write_spdx
    from builder.exports.tables import write_candidates, write_manifest

    write_manifest(ledger, out / "manifest.parquet")
    write_candidates(ledger, out / "candidates.parquet")
    facts = gather_facts(ledger)
    write_spdx(ledger, out / "spdx.json", facts)
    write_croissant(ledger, out, facts)
    write_attribution(ledger, out, facts)
    write_card(ledger, out / "README.md", facts)
    from builder.shards import file_sha256

    ledger.set_meta(WRITTEN_META, json.dumps({name: file_sha256(out / name) for name in PAPERS},
                                             sort_keys=True))
    if (out / "report.html").exists():
        # Written only on request (`cleanset report`); once there, every new version (a
        # build, a takedown) keeps it current: verify holds it to that.
        from builder.exports.report import write_report

        # Its reader opens the ledger file itself: with the log folded in, in place, not
        # through a private copy of the whole ledger in $TMPDIR (GBs at scale; with no room
        # there, every build stopped at its very end).
        ledger.checkpoint()
        write_report(out, lock_held=True)


def check_papers(out: Path, ledger: Ledger) -> list[str]:
    """Problems where a paper disagrees with the ledger (and so with the manifest and shards)."""
    from builder.exports.attribution import check_attribution
    from builder.exports.card import check_card
    from builder.exports.croissant import check_croissant
    from builder.exports.spdx import check_spdx
    from builder.exports.tables import check_candidates

    facts = gather_facts(ledger)
    samples = {r["key"]: (r["sha1"], r["sha256"]) for r in ledger.iter_samples()}
    problems: list[str] = []
    for check in (check_spdx, check_croissant, check_attribution, check_card, check_candidates):
        problems.extend(check(out, ledger, facts, samples))
    return problems + _check_as_written(out, ledger)


def not_text(name: str, exc: UnicodeDecodeError) -> str:
    """verify's line for a paper that a bad copy or an editor wrote over with bytes that are
    not UTF-8 text (the paper's own checks cannot read it)."""
    return f"{name}: not UTF-8 text (byte {exc.start} is 0x{exc.object[exc.start]:02x}): written over"


def _check_as_written(out: Path, ledger: Ledger) -> list[str]:
    """Each paper byte for byte as cleanset last wrote it (a missing one is its own check's)."""
    from builder.shards import file_sha256

    written = json.loads(ledger.get_meta(WRITTEN_META) or "{}")
    return [f"{name}: changed since cleanset wrote it (its sha256 is not the one the ledger "
            "recorded)" for name, sha256 in sorted(written.items())
            if (out / name).is_file() and file_sha256(out / name) != sha256]


@dataclass(frozen=True)
class Facts:
    """What every paper says about the dataset as a whole, read once from the ledger."""

    name: str
    version: str
    description: str
    samples: int
    total_bytes: int
    licenses: Counter[str]
    sources: Counter[str]
    reasons: dict[str, int]
    candidates: dict[str, int]
    policies: list[dict[str, Any]]
    optout_signals: list[str]
    shards: list[dict[str, Any]] = field(default_factory=list)
    updated: str | None = None  # when the last build finished
    homepage: str | None = None
    contact: str | None = None  # an email address or an http(s) URL
    citation: str | None = None
    # The earliest and latest `retrieved_at` of the samples kept (ISO 8601, UTC).
    collected: tuple[str, str] | None = None
    # The evidence archive's files (builder/evidence): name, size, sha256 (None while a
    # build may still append to it), records.
    evidence: list[dict[str, Any]] = field(default_factory=list)

    @property
    def contact_email(self) -> str | None:
        return self.contact if self.contact and "://" not in self.contact else None
    rechecked: Any = None  # the last finished recheck (builder.recheck_log.RecheckRow)


def gather_facts(ledger: Ledger) -> Facts:
    from builder.recheck_log import last_finished

    db = ledger.db
    licenses = Counter(dict(db.execute("SELECT license, COUNT(*) FROM samples GROUP BY license")))
    sources = Counter(dict(db.execute("SELECT source, COUNT(*) FROM samples GROUP BY source")))
    total_bytes = int(db.execute("SELECT COALESCE(SUM(bytes), 0) FROM samples").fetchone()[0])
    policies = []
    for b in ledger.builds():
        policy = json.loads(b.policy)
        if policy not in policies:
            policies.append(policy)
    shards = [{"shard": s.shard, "samples": s.samples, "size": s.size, "sha256": s.sha256}
              for s in ledger.shards() if s.complete]
    return Facts(
        name=ledger.get_meta("dataset_name") or "dataset",
        version=ledger.get_meta("dataset_version") or "0",
        description=ledger.get_meta("dataset_description") or "",
        samples=ledger.sample_count(), total_bytes=total_bytes, licenses=licenses,
        sources=sources, reasons=ledger.reason_counts(), candidates=ledger.candidate_counts(),
        policies=policies, optout_signals=_optout_signals(ledger), shards=shards,
        updated=max((b.finished_at for b in ledger.builds() if b.finished_at), default=None),
        homepage=ledger.get_meta("dataset_homepage") or None,
        contact=ledger.get_meta("dataset_contact") or None,
        citation=ledger.get_meta("dataset_citation") or None,
        collected=_collection_timeframe(ledger),
        rechecked=last_finished(db),
        evidence=_evidence_files(ledger),
    )


def _evidence_files(ledger: Ledger) -> list[dict[str, Any]]:
    from builder.evidence.archive import file_rows

    return file_rows(ledger.db)


def _collection_timeframe(ledger: Ledger) -> tuple[str, str] | None:
    """When the images kept were retrieved, first and last (ISO strings sort as times)."""
    first, last = ledger.db.execute(
        "SELECT MIN(json_extract(provenance, '$.retrieved_at')), "
        "MAX(json_extract(provenance, '$.retrieved_at')) FROM samples").fetchone()
    return (str(first), str(last)) if first and last else None


def _optout_signals(ledger: Ledger) -> list[str]:
    """Every do-not-train signal the build checked, as recorded in the samples' provenance
    (read by SQLite's JSON functions: no provenance parsed into Python objects)."""
    rows = ledger.db.execute(
        "SELECT DISTINCT json_extract(checked.value, '$.signal') FROM samples, "
        "json_each(samples.provenance, '$.optout.checked') AS checked")
    return sorted(str(signal) for (signal,) in rows if signal)


def semver(version: str) -> str:
    """Croissant and the card want MAJOR.MINOR.PATCH; the ledger counts whole versions."""
    return version if version.count(".") == 2 else f"{int(version or 0)}.0.0"


@contextmanager
def replacing(path: Path, *, own: bool = False) -> Iterator[Path]:
    """A temporary name to write `path` under; renamed over `path` when the block ends
    normally, removed on any error or Ctrl-C (the last whole paper stays), the rename
    included: a Ctrl-C landing as it was asked for left the temporary for good. `own`: a name
    of this process's (`NAME.PID.tmp`), for a file that commands holding only the shared lock
    may write at the same time (report.html): with one name, one renamed the other's
    half-written file into place and the other's rename failed."""
    if own:
        _remove_dead_processes_temporaries(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp" if own else f"{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # gone already when the rename was made
        raise


def _remove_dead_processes_temporaries(path: Path) -> None:
    """`NAME.PID.tmp` files of processes that no longer run (a `kill -9` mid-write): with a
    name of each process's own, no later write would ever replace them."""
    for tmp in path.parent.glob(f"{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 1:-len(".tmp")]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):  # a read-only place: it stays, as before
                tmp.unlink()
        except OSError:
            continue  # alive, another user's


def atomic_write(path: Path, data: str | bytes, *, own: bool = False) -> None:
    with replacing(path, own=own) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
