"""Regenerate every paper of an output directory from its ledger, atomically each."""

from __future__ import annotations

from pathlib import Path

from builder.exports.tables import write_candidates, write_manifest
from builder.ledger import Ledger


def write_papers(ledger: Ledger, out: Path) -> None:
    write_manifest(ledger, out / "manifest.parquet")
    write_candidates(ledger, out / "candidates.parquet")
