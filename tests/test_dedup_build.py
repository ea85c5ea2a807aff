"""Near duplicates, evaluation-set exclusion and the per-creator cap, through the real CLI."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from builder.media import HASH_PIPELINE
from tests.conftest import run_cli, write_recipe
from tests.test_dedup import jpeg, photo, variants

CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"
BY4 = "https://creativecommons.org/licenses/by/4.0/"
BYSA4 = "https://creativecommons.org/licenses/by-sa/4.0/"


def put(folder: Path, name: str, data: bytes, license: str = CC0,
        creator: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    meta = {"license": license, **({"creator": creator} if creator else {})}
    (folder / f"{name}.json").write_text(json.dumps(meta), encoding="utf-8")
    return path


def folder_recipe(tmp_path: Path, folders: list[str], extra: str = "",
                  name: str = "recipe.toml") -> Path:
    sources = "".join(f'\n[[sources]]\nkind = "folder"\nname = "{f}"\npath = "{f}"\n'
                      for f in folders)
    return write_recipe(tmp_path / name, f"""
[dataset]
name = "dedup-test"
samples_per_shard = 4
{extra}
[policy]
use = "commercial"
{sources}""")


def build(recipe: Path, out: Path) -> str:
    return run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True).stdout


def outcomes(out: Path) -> dict[str, dict]:
    rows = pq.read_table(out / "candidates.parquet").to_pylist()
    return {r["candidate_id"]: r for r in rows}


def test_near_copies_are_refused_as_duplicate_near_naming_the_first_as_winner(
        tmp_path: Path) -> None:
    found = variants(1)
    pics = tmp_path / "pics"
    put(pics, "a_original.jpg", found["original"])
    put(pics, "b_q40.jpg", found["q40"], BY4)
    put(pics, "c_half.jpg", found["half"], BYSA4)
    put(pics, "d_crop.jpg", found["crop"])
    put(pics, "e_copy.jpg", found["original"], BY4)
    put(pics, "f_other.jpg", jpeg(photo(2)))
    put(pics, "g_other.jpg", jpeg(photo(4)))
    out = tmp_path / "out"
    stdout = build(folder_recipe(tmp_path, ["pics"]), out)
    got = outcomes(out)
    winner = got["pics:a_original.jpg"]["key"]
    assert got["pics:a_original.jpg"]["status"] == "accepted"
    for name in ("b_q40.jpg", "c_half.jpg", "d_crop.jpg"):
        row = got[f"pics:{name}"]
        assert row["reason"] == "duplicate_near", (name, row["detail"])
        assert row["detail"].startswith(f"near {winner} pdq="), row["detail"]
        assert " phash=" in row["detail"]
    assert got["pics:e_copy.jpg"]["reason"] == "duplicate_exact"
    assert got["pics:f_other.jpg"]["status"] == got["pics:g_other.jpg"]["status"] == "accepted"
    assert "rejected duplicate_near: 3" in stdout
    assert "accepted from source pics: 3" in stdout

    manifest = {r["key"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    assert manifest[winner]["duplicates"] == 4
    also = manifest[winner]["also_found_as"]
    assert [(a["license"], a["exact"]) for a in also] == [
        ("CC-BY-4.0", False), ("CC-BY-SA-4.0", False), ("CC0-1.0", False), ("CC-BY-4.0", True)]
    assert manifest[winner]["hash_pipeline"] == HASH_PIPELINE
    assert all(r["duplicates"] == 0 for k, r in manifest.items() if k != winner)


def test_the_winner_is_the_first_in_source_order_even_when_it_is_the_edited_copy(
        tmp_path: Path) -> None:
    found = variants(2)
    put(tmp_path / "first", "z.jpg", found["half"])
    put(tmp_path / "second", "a.jpg", found["original"])
    out = tmp_path / "out"
    build(folder_recipe(tmp_path, ["first", "second"]), out)
    got = outcomes(out)
    assert got["first:z.jpg"]["status"] == "accepted"
    assert got["second:a.jpg"]["reason"] == "duplicate_near"
    assert got["second:a.jpg"]["detail"].startswith(f"near {got['first:z.jpg']['key']} ")


def test_duplicate_evidence_records_the_copys_source_licence_and_creator(tmp_path: Path) -> None:
    found = variants(4)
    put(tmp_path / "museum", "work.jpg", found["original"], BYSA4, creator="Ada")
    put(tmp_path / "mirror", "work-small.jpg", found["half"], CC0, creator="Ada L.")
    out = tmp_path / "out"
    build(folder_recipe(tmp_path, ["museum", "mirror"]), out)
    db = sqlite3.connect(out / "ledger.sqlite")
    rows = db.execute("SELECT winner, exact, pdq_distance, phash_distance, source, license,"
                      " creator, candidate_id FROM duplicates").fetchall()
    winner = outcomes(out)["museum:work.jpg"]["key"]
    assert len(rows) == 1
    assert rows[0][0] == winner and rows[0][1] == 0 and rows[0][2] <= 31
    assert rows[0][4:] == ("mirror", "CC0-1.0", "Ada L.", "mirror:work-small.jpg")


def test_candidates_copying_an_evaluation_image_are_refused_as_eval_overlap(
        tmp_path: Path) -> None:
    near_one, exact_one = variants(1), variants(2)
    put(tmp_path / "pics", "a.jpg", near_one["original"])
    put(tmp_path / "pics", "b.jpg", exact_one["original"])
    put(tmp_path / "pics", "c.jpg", jpeg(photo(4)))
    evalset = tmp_path / "eval"
    evalset.mkdir()
    (evalset / "held-out-1.jpg").write_bytes(near_one["crop"])
    (evalset / "held-out-2.jpg").write_bytes(exact_one["original"])
    (evalset / "labels.txt").write_text("not an image", encoding="utf-8")
    out = tmp_path / "out"
    stdout = build(folder_recipe(tmp_path, ["pics"], extra='\n[dedup]\nexclude = ["eval/"]\n'),
                   out)
    got = outcomes(out)
    assert got["pics:a.jpg"]["reason"] == "eval_overlap"
    assert got["pics:a.jpg"]["detail"].startswith("near evaluation image eval/held-out-1.jpg")
    assert got["pics:b.jpg"]["reason"] == "eval_overlap"
    assert got["pics:b.jpg"]["detail"] == "same sha256 as evaluation image eval/held-out-2.jpg"
    assert got["pics:c.jpg"]["status"] == "accepted"
    assert "rejected eval_overlap: 2" in stdout


def test_an_evaluation_image_that_cannot_be_read_stops_the_build_before_it_starts(
        tmp_path: Path) -> None:
    """A broken link in the evaluation folder was skipped in silence: the candidate copying
    the image it stood for was admitted, into the training set it had to stay out of."""
    held_out = variants(1)["original"]
    put(tmp_path / "pics", "a.jpg", held_out)
    evalset = tmp_path / "eval"
    evalset.mkdir()
    (evalset / "held-out.jpg").symlink_to(tmp_path / "on-a-drive-not-mounted.jpg")
    out = tmp_path / "out"
    proc = run_cli("build", str(folder_recipe(tmp_path, ["pics"],
                                              extra='\n[dedup]\nexclude = ["eval/"]\n')),
                   "--out", str(out), "--no-progress")
    assert proc.returncode == 2, proc.stderr
    assert (f"[dedup] exclude: {evalset / 'held-out.jpg'} is a broken link, so candidates "
            "copying it could not be refused") in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / "shards").exists() or not any((out / "shards").iterdir())


def test_max_per_creator_caps_each_creator_and_counts_earlier_builds(tmp_path: Path) -> None:
    pics = tmp_path / "pics"
    for i, creator in enumerate(["Alice", "Alice", "Bob", "Alice", None]):
        put(pics, f"{i}.jpg", jpeg(photo(10 + i)), creator=creator)
    out = tmp_path / "out"
    stdout = build(folder_recipe(tmp_path, ["pics"], extra="max_per_creator = 2\n"), out)
    got = outcomes(out)
    assert [got[f"pics:{i}.jpg"]["status"] for i in range(5)] == [
        "accepted", "accepted", "accepted", "rejected", "accepted"]
    assert got["pics:3.jpg"]["reason"] == "creator_cap"
    assert "Alice" in got["pics:3.jpg"]["detail"]
    assert "accepted from 2 creators; most: Alice 2, Bob 1" in stdout

    more = tmp_path / "more"
    put(more, "x.jpg", jpeg(photo(20)), creator="Bob")
    put(more, "y.jpg", jpeg(photo(21)), creator="Bob")
    build(folder_recipe(tmp_path, ["more"], extra="max_per_creator = 2\n", name="r2.toml"), out)
    got = outcomes(out)
    assert got["more:x.jpg"]["status"] == "accepted"
    assert got["more:y.jpg"]["reason"] == "creator_cap"


def test_a_second_build_into_the_same_dir_dedups_near_against_the_first(tmp_path: Path) -> None:
    found = variants(1)
    put(tmp_path / "one", "a.jpg", found["original"])
    out = tmp_path / "out"
    build(folder_recipe(tmp_path, ["one"]), out)
    first_key = outcomes(out)["one:a.jpg"]["key"]
    put(tmp_path / "two", "resized.jpg", found["half"])
    put(tmp_path / "two", "new.jpg", jpeg(photo(2)))
    build(folder_recipe(tmp_path, ["two"], name="r2.toml"), out)
    got = outcomes(out)
    assert got["two:resized.jpg"]["reason"] == "duplicate_near"
    assert got["two:resized.jpg"]["detail"].startswith(f"near {first_key} ")
    assert got["two:new.jpg"]["status"] == "accepted"


def test_near_dedup_can_be_switched_off(tmp_path: Path) -> None:
    found = variants(1)
    put(tmp_path / "pics", "a.jpg", found["original"])
    put(tmp_path / "pics", "b.jpg", found["half"])
    out = tmp_path / "out"
    build(folder_recipe(tmp_path, ["pics"], extra="\n[dedup]\nnear = false\n"), out)
    assert {r["status"] for r in outcomes(out).values()} == {"accepted"}


def test_flat_images_are_not_near_duplicates_of_each_other(tmp_path: Path) -> None:
    put(tmp_path / "pics", "a.jpg", jpeg(Image.new("RGB", (200, 200), (120, 120, 120))))
    put(tmp_path / "pics", "b.jpg", jpeg(Image.new("RGB", (200, 200), (121, 119, 120))))
    out = tmp_path / "out"
    build(folder_recipe(tmp_path, ["pics"]), out)
    assert {r["status"] for r in outcomes(out).values()} == {"accepted"}


def test_a_later_build_reading_the_same_items_again_records_no_copies_of_them(
        tmp_path: Path) -> None:
    """A new build reads every source again: each sample came back as an exact duplicate of
    itself, and each copy already recorded came back once more. Both were recorded as
    copies, so after two builds every sample of manifest.parquet was "also found as" itself
    (`duplicates` 1), and the report counted the whole dataset as exact copies."""
    pics = tmp_path / "pics"
    put(pics, "a.jpg", jpeg(photo(1)))
    put(pics, "b.jpg", jpeg(photo(2)))
    put(pics, "b_copy.jpg", jpeg(photo(2)), BY4)
    put(pics, "c.jpg", jpeg(photo(3)))
    out = tmp_path / "out"
    build(folder_recipe(tmp_path, ["pics"]), out)
    first = {r["source_id"]: (r["duplicates"], r["also_found_as"])
             for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    assert first["b.jpg"][0] == 1 and first["a.jpg"][0] == 0
    # Version 2: the same folder, the recipe changed.
    again = build(folder_recipe(tmp_path, ["pics"], "description = 'v2'", name="r2.toml"), out)

    assert "rejected duplicate_exact: 4 (3 of them already in the dataset: the same items, " \
        "read again)" in again
    got = outcomes(out)
    assert {got[f"pics:{n}.jpg"]["detail"].endswith("the same item, read again (not a copy)")
            for n in ("a", "b", "c")} == {True}
    second = {r["source_id"]: (r["duplicates"], r["also_found_as"])
              for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    assert second == first
    with sqlite3.connect(out / "ledger.sqlite") as db:
        assert db.execute("SELECT candidate_id FROM duplicates").fetchall() == [
            ("pics:b_copy.jpg",)]
        # A ledger recorded before this change holds such rows: they are read as no copies.
        db.execute("INSERT INTO duplicates SELECT 2, seq + 100, winner, exact, pdq_distance, "
                   "phash_distance, candidate_id, source, license, license_url, file_url, "
                   "landing_url, creator, sha256, pdq, pdq_quality, phash FROM duplicates")
        db.execute("INSERT INTO duplicates SELECT 2, 200, s.key, 1, 0, 0, s.source || ':' || "
                   "s.source_id, s.source, s.license, s.license_url, s.file_url, "
                   "s.landing_url, s.creator, s.sha256, s.pdq, s.pdq_quality, s.phash "
                   "FROM samples s WHERE s.source_id = 'a.jpg'")
    assert run_cli("report", str(out)).returncode == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "1 exact copies (same bytes)" in page
    assert "The other 4 <code>duplicate_exact</code>" in page
    lookup = run_cli("lookup", str(out), str(pics / "b.jpg"))
    assert lookup.returncode == 0, lookup.stderr
    found = [m["found_as"] for m in json.loads(lookup.stdout)["matches"]]
    assert sorted(found) == ["duplicate", "sample"], lookup.stdout  # b.jpg and b_copy.jpg
