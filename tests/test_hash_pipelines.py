"""A dataset keeps the hash pipeline it was built with: builds, lookups and takedowns into it
hash as its first build did; new datasets get v4. Real builds through the CLI, real ledgers."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from builder.canonical import V2, V3, V4
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


def test_every_pipeline_is_kept_and_new_datasets_get_v4() -> None:
    assert HASH_PIPELINES == (V2, V3, V4)
    assert HASH_PIPELINE == V4
    assert [p.rsplit("-", 1)[-1] for p in HASH_PIPELINES] == ["v2", "v3", "v4"]


def test_a_new_dataset_is_hashed_with_v4_and_says_so_in_ledger_and_provenance(
        tmp_path: Path) -> None:
    work = variants(1)["original"]
    put(tmp_path / "pics", "work.jpg", work)
    out = tmp_path / "out"
    build(folder_recipe(tmp_path, ["pics"]), out)

    assert meta(out, "hash_pipeline") == V4
    pdq, quality, phash, named = sample_hashes(out)["work.jpg"]
    assert named == V4
    assert (pdq, quality, phash) == perceptual_hashes(work, pipeline=V4)
    assert pq.read_table(out / "manifest.parquet").to_pylist()[0]["hash_pipeline"] == V4


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


def test_a_v3_dataset_keeps_v3_for_later_builds_and_lookups_while_a_new_one_gets_v4(
        tmp_path: Path) -> None:
    work = variants(7)  # an image whose v3 and v4 hashes differ, as do its half-size copy's
    assert perceptual_hashes(work["original"], pipeline=V3) != perceptual_hashes(
        work["original"], pipeline=V4)
    put(tmp_path / "first", "work.jpg", work["original"])
    put(tmp_path / "second", "other.jpg", jpeg(photo(8)))
    v3_out = seeded_with(tmp_path / "v3", V3)
    build(folder_recipe(tmp_path, ["first"], name="first.toml"), v3_out)
    build(folder_recipe(tmp_path, ["second"], name="second.toml"), v3_out)

    assert meta(v3_out, "hash_pipeline") == V3
    hashed = sample_hashes(v3_out)
    assert {named for *_, named in hashed.values()} == {V3}
    assert hashed["work.jpg"][:3] == perceptual_hashes(work["original"], pipeline=V3)
    query = tmp_path / "half.jpg"
    query.write_bytes(work["half"])
    found = json.loads(run_cli("lookup", str(v3_out), str(query), check=True).stdout)
    expected = hamming(perceptual_hashes(work["half"], pipeline=V3)[0], hashed["work.jpg"][0])
    assert expected != hamming(perceptual_hashes(work["half"], pipeline=V4)[0],
                               hashed["work.jpg"][0])
    assert [m["distance"] for m in found["matches"] if m["found_as"] == "sample"] == [expected]

    new_out = tmp_path / "new"
    build(folder_recipe(tmp_path, ["first"], name="first.toml"), new_out)
    assert meta(new_out, "hash_pipeline") == V4
    assert sample_hashes(new_out)["work.jpg"] == (
        *perceptual_hashes(work["original"], pipeline=V4), V4)


def test_a_dataset_from_before_the_meta_is_read_as_its_provenance_says(tmp_path: Path) -> None:
    work = variants(4)["original"]
    put(tmp_path / "pics", "work.jpg", work)
    out = seeded_with(tmp_path / "out", V2)
    build(folder_recipe(tmp_path, ["pics"]), out)
    with sqlite3.connect(out / "ledger.sqlite") as db:
        db.execute("DELETE FROM meta WHERE key = 'hash_pipeline'")  # as before the meta
        assert dataset_hash_pipeline(db, out) == V2
        db.execute("DELETE FROM samples")
        assert dataset_hash_pipeline(db, out) == V4  # nothing hashed yet: a new dataset


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
