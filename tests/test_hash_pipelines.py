"""A dataset keeps the hash pipeline it was built with: builds, lookups and takedowns into it
hash as its first build did; new datasets get v3. Real builds through the CLI, real ledgers."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from builder.canonical import V2, V3
from builder.dedup import dataset_hash_pipeline
from builder.errors import UserError
from builder.ledger import Ledger
from builder.media import HASH_PIPELINE, HASH_PIPELINES, hamming, perceptual_hashes
from tests.conftest import run_cli
from tests.test_dedup import jpeg, photo, variants
from tests.test_dedup_build import build, folder_recipe, outcomes, put


def seeded_with(out: Path, pipeline: str) -> Path:
    """An output directory whose ledger says it was hashed with `pipeline` (as a dataset
    built by an earlier cleanset says), before any sample is in it."""
    out.mkdir()
    ledger = Ledger(out / "ledger.sqlite")
    ledger.set_meta("hash_pipeline", pipeline)
    ledger.close()
    return out


def sample_hashes(out: Path) -> dict[str, tuple[str, int, str, str]]:
    """source_id -> (pdq, quality, phash, provenance hash_pipeline) of every sample."""
    with sqlite3.connect(out / "ledger.sqlite") as db:
        rows = db.execute("SELECT source_id, pdq, pdq_quality, phash, provenance FROM samples")
        return {r[0]: (r[1], r[2], r[3], json.loads(r[4])["hash_pipeline"]) for r in rows}


def meta(out: Path, key: str) -> str | None:
    with sqlite3.connect(out / "ledger.sqlite") as db:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def test_both_pipelines_are_kept_and_new_datasets_get_v3() -> None:
    assert HASH_PIPELINES == (V2, V3)
    assert HASH_PIPELINE == V3 and V3.endswith("-v3") and V2.endswith("-v2")


def test_a_new_dataset_is_hashed_with_v3_and_says_so_in_ledger_and_provenance(
        tmp_path: Path) -> None:
    work = variants(1)["original"]
    put(tmp_path / "pics", "work.jpg", work)
    out = tmp_path / "out"
    build(folder_recipe(tmp_path, ["pics"]), out)

    assert meta(out, "hash_pipeline") == V3
    pdq, quality, phash, named = sample_hashes(out)["work.jpg"]
    assert named == V3
    assert (pdq, quality, phash) == perceptual_hashes(work, pipeline=V3)
    assert pq.read_table(out / "manifest.parquet").to_pylist()[0]["hash_pipeline"] == V3


def test_a_v2_dataset_is_extended_looked_up_and_taken_down_with_v2(tmp_path: Path) -> None:
    work, other = variants(3), jpeg(photo(5))
    out = seeded_with(tmp_path / "out", V2)
    put(tmp_path / "first", "work.jpg", work["original"])
    put(tmp_path / "first", "other.jpg", other)
    build(folder_recipe(tmp_path, ["first"], name="first.toml"), out)
    hashed = sample_hashes(out)["work.jpg"]
    assert hashed[:3] == perceptual_hashes(work["original"], pipeline=V2)
    assert hashed[:3] != perceptual_hashes(work["original"], pipeline=V3)
    assert hashed[3] == V2

    # A second recipe into the same directory: its near copy is measured against v2 hashes.
    put(tmp_path / "second", "q40.jpg", work["q40"])
    build(folder_recipe(tmp_path, ["second"], name="second.toml"), out)
    assert outcomes(out)["second:q40.jpg"]["reason"] == "duplicate_near"
    assert meta(out, "hash_pipeline") == V2
    assert {named for *_, named in sample_hashes(out).values()} == {V2}

    query = tmp_path / "half.jpg"
    query.write_bytes(work["half"])
    found = json.loads(run_cli("lookup", str(out), str(query), check=True).stdout)
    expected = hamming(perceptual_hashes(work["half"], pipeline=V2)[0], hashed[0])
    keys = {r["source_id"]: r["key"] for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    assert [(m["key"], m["distance"]) for m in found["matches"]
            if m["found_as"] == "sample"] == [(keys["work.jpg"], expected)]

    proc = run_cli("takedown", str(out), "--image", str(query), "--dry-run", check=True)
    assert keys["work.jpg"] in proc.stdout and keys["other.jpg"] not in proc.stdout


def test_a_dataset_from_before_the_meta_is_read_as_its_provenance_says(tmp_path: Path) -> None:
    work = variants(4)["original"]
    put(tmp_path / "pics", "work.jpg", work)
    out = seeded_with(tmp_path / "out", V2)
    build(folder_recipe(tmp_path, ["pics"]), out)
    with sqlite3.connect(out / "ledger.sqlite") as db:
        db.execute("DELETE FROM meta WHERE key = 'hash_pipeline'")  # as before the meta
        assert dataset_hash_pipeline(db, out) == V2
        db.execute("DELETE FROM samples")
        assert dataset_hash_pipeline(db, out) == V3  # nothing hashed yet: a new dataset


def test_a_pipeline_this_cleanset_does_not_have_is_refused_naming_the_directory(
        tmp_path: Path) -> None:
    put(tmp_path / "pics", "work.jpg", variants(6)["original"])
    out = seeded_with(tmp_path / "out", "canon512-lanczos-pdq-phash-v1")
    proc = run_cli("build", str(folder_recipe(tmp_path, ["pics"])), "--out", str(out),
                   "--no-progress")
    assert proc.returncode == 2
    assert str(out) in proc.stderr and "canon512-lanczos-pdq-phash-v1" in proc.stderr
    assert "Traceback" not in proc.stderr
    with sqlite3.connect(out / "ledger.sqlite") as db, pytest.raises(UserError, match="v1"):
        dataset_hash_pipeline(db, out)
