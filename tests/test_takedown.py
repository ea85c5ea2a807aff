"""Takedown: remove works from a built dataset through the real CLI, keep them out, version it."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image
from pytest_httpserver import HTTPServer

from builder.shards import read_shard_members
from builder.takedown import _rewrite_shard
from tests.conftest import make_image, run_cli, write_jsonl, write_recipe

CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"
N = 12  # 4 shards of 3
CREATORS = ["Ada", "Ada", "Grace", "Linus"]


def image(i: int) -> bytes:
    return make_image(100 + i, (120, 90))


def serve_site_files(httpserver: HTTPServer) -> None:
    """The host allows everything: robots.txt says so, and it has no tdmrep.json or ai.txt."""
    httpserver.expect_request("/robots.txt").respond_with_data("User-agent: *\nAllow: /\n",
                                                               content_type="text/plain")
    for path in ("/.well-known/tdmrep.json", "/ai.txt"):
        httpserver.expect_request(path).respond_with_data("not here", status=404)


def rows_for(httpserver: HTTPServer, prefix: str = "") -> list[dict]:
    serve_site_files(httpserver)
    rows = []
    for i in range(N):
        path = f"/{prefix}{i}.jpg"
        httpserver.expect_request(path).respond_with_data(image(i), content_type="image/jpeg")
        rows.append({"id": f"{prefix}img{i}", "url": httpserver.url_for(path), "license": CC0,
                     "creator": CREATORS[i % len(CREATORS)],
                     "landing_url": f"https://example.org/works/{prefix}{i}"})
    return rows


def recipe_for(tmp_path: Path, table: Path, name: str = "takedown-test",
               dataset: str | None = None) -> Path:
    """Recipe `name`.toml of dataset `dataset` (by default `name`) over `table`."""
    return write_recipe(tmp_path / f"{name}.toml", f"""
[dataset]
name = "{dataset or name}"
samples_per_shard = 3
[policy]
use = "commercial"
[[sources]]
kind = "table"
path = "{table.name}"
[fetch]
allow_private_addresses = true
retries = 0
workers = 2
""")


@pytest.fixture
def dataset(httpserver: HTTPServer, tmp_path: Path) -> dict:
    rows = rows_for(httpserver)
    table = write_jsonl(tmp_path / "urls.jsonl", rows)
    recipe = recipe_for(tmp_path, table)
    out = tmp_path / "out"
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    keys = [r["key"] for r in pq.read_table(out / "manifest.parquet").to_pylist()]
    assert len(keys) == N
    return {"out": out, "rows": rows, "keys": keys, "recipe": recipe, "tmp": tmp_path}


def shard_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "shards").iterdir())}


def manifest_keys(out: Path) -> list[str]:
    return [r["key"] for r in pq.read_table(out / "manifest.parquet").to_pylist()]


def takedown(out: Path, *args: str, check: bool = True):  # type: ignore[no-untyped-def]
    return run_cli("takedown", str(out), *args, check=check)


def verify_ok(out: Path) -> None:
    proc = run_cli("verify", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def all_files(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and p.name != ".lock"}


def dry_run_keys(out: Path, *selectors: str) -> set[str]:
    proc = takedown(out, *selectors, "--dry-run", check=False)
    assert proc.returncode in (0, 1), proc.stderr  # 1: nothing matched
    return {line.split()[2] for line in proc.stdout.splitlines()
            if line.startswith("would remove ")}


# -- selectors --------------------------------------------------------------------------------
def test_each_selector_names_exactly_the_samples_it_describes(dataset: dict,
                                                              tmp_path: Path) -> None:
    out, rows, keys = dataset["out"], dataset["rows"], dataset["keys"]
    assert dry_run_keys(out, "--key", keys[4]) == {keys[4]}
    assert dry_run_keys(out, "--url", rows[5]["url"]) == {keys[5]}
    assert dry_run_keys(out, "--url", rows[6]["landing_url"]) == {keys[6]}
    sha = hashlib.sha256(image(7)).hexdigest()
    assert dry_run_keys(out, "--sha256", sha.upper()) == {keys[7]}
    ada = {keys[i] for i in range(N) if CREATORS[i % 4] == "Ada"}
    assert dry_run_keys(out, "--creator", "ada") == ada
    exact = tmp_path / "exact.jpg"
    exact.write_bytes(image(8))
    assert dry_run_keys(out, "--image", str(exact)) == {keys[8]}
    # the same picture, resized and re-encoded: a near match, not an exact one
    near = tmp_path / "near.jpg"
    Image.open(io.BytesIO(image(9))).resize((240, 180)).save(near, "JPEG", quality=70)
    proc = takedown(out, "--image", str(near), "--dry-run")
    assert f"would remove {keys[9]}" in proc.stdout and "(near: pdq" in proc.stdout
    assert dry_run_keys(out, "--image", str(near)) == {keys[9]}
    combined = dry_run_keys(out, "--key", keys[0], "--url", rows[10]["url"], "--key", keys[1])
    assert combined == {keys[0], keys[1], keys[10]}


def test_a_flat_image_is_matched_only_exactly_because_its_pdq_quality_is_low(
        dataset: dict, tmp_path: Path) -> None:
    flat = tmp_path / "flat.png"
    Image.new("RGB", (120, 90), (200, 200, 200)).save(flat)
    assert dry_run_keys(dataset["out"], "--image", str(flat)) == set()


def test_dry_run_lists_what_would_go_and_changes_nothing(dataset: dict) -> None:
    out, keys = dataset["out"], dataset["keys"]
    before = all_files(out)
    proc = takedown(out, "--key", keys[2], "--dry-run")
    assert f"would remove {keys[2]} (000000.tar): key={keys[2]}" in proc.stdout
    assert "nothing changed" in proc.stdout
    assert all_files(out) == before


def test_takedown_without_a_reason_is_refused(dataset: dict) -> None:
    proc = takedown(dataset["out"], "--key", dataset["keys"][0], check=False)
    assert proc.returncode == 2 and "--reason" in proc.stderr


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_an_image_that_is_a_named_pipe_is_refused_not_read_for_ever(
        dataset: dict, tmp_path: Path, dry_run: list[str]) -> None:
    """`--image` of a FIFO (or /dev/stdin) waited for ever for the pipe to end, holding the
    directory's lock, and the same command run again after Ctrl-C waited again."""
    import os
    import subprocess
    import sys

    from tests.conftest import cli_env

    out = dataset["out"]
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    before = all_files(out)
    proc = subprocess.run([sys.executable, "-m", "builder", "takedown", str(out), "--image",
                           str(fifo), "--reason", "x", *dry_run], capture_output=True,
                          text=True, env=cli_env(), timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"--image {fifo}: is not a file (a device or a pipe)" in proc.stderr
    assert all_files(out) == before


def test_a_selector_matching_nothing_changes_nothing_and_says_so(dataset: dict) -> None:
    out = dataset["out"]
    before = all_files(out)
    proc = takedown(out, "--key", "9999999999", "--reason", "x", check=False)
    assert proc.returncode == 1 and "nothing changed" in proc.stdout
    assert all_files(out) == before


# -- the takedown itself ----------------------------------------------------------------------
def test_takedown_rewrites_only_the_shard_holding_the_work_and_records_it_everywhere(
        dataset: dict) -> None:
    out, keys, rows = dataset["out"], dataset["keys"], dataset["rows"]
    before = shard_files(out)
    victim = keys[4]  # shard 000001.tar
    proc = takedown(out, "--key", victim, "--reason", "creator request #17")
    assert f"removed {victim}" in proc.stdout and "dataset version 2" in proc.stdout
    after = shard_files(out)
    assert set(after) == set(before)
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"000001.tar"}
    names = [n for n, _ in read_shard_members(out / "shards" / "000001.tar")]
    assert not any(n.startswith(victim + ".") for n in names)
    samples = list(wds.WebDataset(sorted(str(p) for p in (out / "shards").glob("*.tar")),
                                  shardshuffle=False))
    assert [s["__key__"] for s in samples] == [k for k in keys if k != victim]
    assert manifest_keys(out) == [k for k in keys if k != victim]
    cands = {c["key"]: c for c in pq.read_table(out / "candidates.parquet").to_pylist()}
    assert cands[victim]["status"] == "removed"
    assert "creator request #17" in cands[victim]["detail"]
    assert len(cands) == N
    db = sqlite3.connect(out / "ledger.sqlite")
    shard_row = db.execute("SELECT samples, size, sha256 FROM shards WHERE shard = 1").fetchone()
    assert shard_row == (2, len(after["000001.tar"]),
                         hashlib.sha256(after["000001.tar"]).hexdigest())
    assert db.execute("SELECT value FROM meta WHERE key = 'dataset_version'").fetchone() == ("2",)
    log = [json.loads(line) for line in (out / "takedowns.jsonl").read_text().splitlines()]
    assert len(log) == 1
    assert log[0]["keys"] == [victim] and log[0]["reason"] == "creator request #17"
    assert log[0]["version"] == 2 and log[0]["selectors"]["key"] == [victim] and log[0]["when"]
    deny = [json.loads(line) for line in (out / "denylist.jsonl").read_text().splitlines()]
    kinds = {(d["kind"], d["value"]) for d in deny}
    assert ("url", rows[4]["url"]) in kinds
    assert ("sha256", hashlib.sha256(image(4)).hexdigest()) in kinds
    assert any(k == "pdq" and len(v) == 64 for k, v in kinds)
    assert all(set(d) == {"kind", "value", "reason", "added_at"} for d in deny)
    assert not (out / ".takedown.json").exists()
    assert not list((out / "shards").glob("*.takedown"))
    verify_ok(out)


def test_takedowns_append_to_the_log_and_bump_the_version_each_time(dataset: dict) -> None:
    out, keys = dataset["out"], dataset["keys"]
    takedown(out, "--key", keys[0], "--reason", "first")
    takedown(out, "--creator", "Grace", "--reason", "second")
    log = [json.loads(line) for line in (out / "takedowns.jsonl").read_text().splitlines()]
    assert [entry["version"] for entry in log] == [2, 3]
    assert log[1]["keys"] == [keys[i] for i in range(N) if CREATORS[i % 4] == "Grace"]
    deny = [json.loads(line) for line in (out / "denylist.jsonl").read_text().splitlines()]
    assert {"kind": "creator", "value": "Grace", "reason": "second"}.items() <= {
        **next(d for d in deny if d["kind"] == "creator")}.items()
    verify_ok(out)


def test_a_shard_left_empty_is_deleted_and_logged(dataset: dict, tmp_path: Path) -> None:
    out, keys = dataset["out"], dataset["keys"]
    before = shard_files(out)
    takedown(out, "--key", keys[0], "--key", keys[1], "--key", keys[2], "--reason", "all")
    after = shard_files(out)
    assert set(after) == set(before) - {"000000.tar"}
    assert all(after[name] == before[name] for name in after)
    db = sqlite3.connect(out / "ledger.sqlite")
    assert db.execute("SELECT COUNT(*) FROM shards WHERE shard = 0").fetchone() == (0,)
    log = json.loads((out / "takedowns.jsonl").read_text())
    assert log["shards_deleted"] == ["000000.tar"] and log["shards_rewritten"] == []
    verify_ok(out)
    # the first shard gone, Hugging Face datasets still loads the rest (an empty tar breaks it)
    datasets = pytest.importorskip("datasets")
    files = sorted(str(p) for p in (out / "shards").glob("*.tar"))
    ds = datasets.load_dataset("webdataset", data_files={"train": files}, split="train",
                               cache_dir=str(tmp_path / "hf-cache"))
    assert sorted(ds["__key__"]) == keys[3:]


def test_rewriting_a_shard_with_nothing_removed_gives_the_same_bytes(dataset: dict) -> None:
    shards = dataset["out"] / "shards"
    for path in sorted(shards.glob("*.tar")):
        spec = {"file": path.name, "tmp": path.name + ".check", "remove": []}
        result = _rewrite_shard(shards, spec)
        assert (shards / spec["tmp"]).read_bytes() == path.read_bytes(), path.name
        assert result["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        (shards / spec["tmp"]).unlink()


# -- versions and diff ------------------------------------------------------------------------
def test_diff_lists_removed_keys_between_versions_and_between_directories(
        dataset: dict, tmp_path: Path) -> None:
    import shutil

    out, keys = dataset["out"], dataset["keys"]
    copy = tmp_path / "published-v1"
    shutil.copytree(out, copy)
    takedown(out, "--key", keys[3], "--key", keys[7], "--reason", "request")
    proc = run_cli("diff", str(out), "--from", "1", "--to", "2", check=True)
    assert proc.stdout.splitlines() == [
        f"diff {out}@1 -> {out}@2: 2 removed, 0 added", f"- {keys[3]}", f"- {keys[7]}"]
    as_json = json.loads(run_cli("diff", str(out), "--json", check=True).stdout)
    assert as_json["removed"] == [keys[3], keys[7]] and as_json["added"] == []
    everything = json.loads(run_cli("diff", str(out), "--from", "0", "--to", "2", "--json",
                                    check=True).stdout)
    assert everything["added"] == [k for k in keys if k not in (keys[3], keys[7])]
    dirs_run = run_cli("diff", str(copy), str(out), "--json", check=True)
    dirs = json.loads(dirs_run.stdout)
    assert dirs["removed"] == [keys[3], keys[7]] and dirs["added"] == [] == dirs["changed"]
    assert "different datasets" not in dirs_run.stderr  # one dataset, two versions
    bad = run_cli("diff", str(out), "--from", "1", "--to", "9")
    assert bad.returncode == 2 and "version 9 does not exist" in bad.stderr
    a_file = run_cli("diff", str(out / "manifest.parquet"), str(out))
    assert a_file.returncode == 2 and "is a file inside the dataset in" in a_file.stderr


def test_diff_of_two_different_datasets_says_their_keys_are_not_one_numbering(
        dataset: dict) -> None:
    """Two datasets built apart both number their keys from 0: `diff` listed every common
    key as `changed`, as if one dataset's samples had been swapped for others."""
    tmp = dataset["tmp"]
    table = tmp / "urls.jsonl"
    rows = [json.loads(line) for line in table.read_text().splitlines()]
    other = write_jsonl(tmp / "reversed.jsonl", rows[::-1])
    other_out = tmp / "other-out"
    run_cli("build", str(recipe_for(tmp, other, name="another-set")), "--out", str(other_out),
            "--no-progress", check=True)
    for args in ([], ["--json"]):
        proc = run_cli("diff", str(dataset["out"]), str(other_out), *args, check=True)
        assert ("note: these are two different datasets ('takedown-test' and 'another-set'); "
                "each numbers its keys on its own") in proc.stderr
        assert "note" not in proc.stdout  # --json's reader gets the JSON alone
    assert json.loads(proc.stdout)["changed"] == dataset["keys"]  # still compared by key
    # The same again under the same name: the note came only from the names, and was missing.
    same_name = tmp / "same-name-out"
    run_cli("build", str(recipe_for(tmp, other, name="takedown-test")), "--out",
            str(same_name), "--no-progress", check=True)
    proc = run_cli("diff", str(dataset["out"]), str(same_name), check=True)
    assert ("hold different images, which no two copies of one dataset do: these look like two "
            "different datasets that share the name 'takedown-test'") in proc.stderr



def _second_build_killed(dataset: dict, httpserver: HTTPServer, *, refused_after: int | None = None
                         ) -> tuple[list[str], list[str]]:
    """A second recipe built into the dataset and killed with its first six decisions
    committed; the build command to resume it, and the keys it had committed."""
    import signal

    tmp, out = dataset["tmp"], dataset["out"]
    rows = []
    for i in range(N):  # other works than the first build's
        httpserver.expect_request(f"/more{i}.jpg").respond_with_data(
            image(N + i), content_type="image/jpeg")
        refused = refused_after is not None and i >= refused_after  # a licence refused
        rows.append({"id": f"more{i}", "url": httpserver.url_for(f"/more{i}.jpg"),
                     "license": "https://creativecommons.org/licenses/by-nc/4.0/" if refused
                     else CC0})
    recipe = recipe_for(tmp, write_jsonl(tmp / "more.jsonl", rows), name="more",
                        dataset="takedown-test")
    args = ["build", str(recipe), "--out", str(out), "--no-progress"]
    killed = run_cli(*args, env={"CLEANSET_COMMIT_EVERY": "2", "CLEANSET_CRASH_AT": "decide:8"})
    assert killed.returncode == -signal.SIGKILL
    with sqlite3.connect(out / "ledger.sqlite") as db:
        committed = [k for (k,) in db.execute(
            "SELECT key FROM candidates WHERE build = 2 AND key IS NOT NULL ORDER BY key")]
    assert len(committed) == 6
    return args, committed


def test_a_build_stopped_half_way_adds_nothing_to_the_version_before_it_even_after_a_takedown(
        dataset: dict, httpserver: HTTPServer) -> None:
    """The keys an unfinished second build had committed were counted as the previous
    version's: `diff` listed them as added by build 1, and a takedown in between wrote that
    down for good, so a copy synced at version 1 asking `diff --from 1` never heard of them.
    They are the next version's: no version until the build finishes or a takedown writes
    the papers with them."""
    out, keys = dataset["out"], dataset["keys"]
    args, committed = _second_build_killed(dataset, httpserver)
    v1 = json.loads(run_cli("diff", str(out), "--json", check=True).stdout)
    assert v1["added"] == keys and v1["removed"] == []  # 0 -> 1: build 1's keys alone

    takedown(out, "--key", keys[0], "--reason", "request")
    run_cli(*args, env={"CLEANSET_COMMIT_EVERY": "2"}, check=True)
    verify_ok(out)
    with sqlite3.connect(out / "ledger.sqlite") as db:
        build2 = [k for (k,) in db.execute(
            "SELECT key FROM candidates WHERE build = 2 AND key IS NOT NULL ORDER BY key")]
        current = int(db.execute("SELECT value FROM meta WHERE key = 'dataset_version'")
                      .fetchone()[0])
    assert len(build2) == N and set(committed) <= set(build2)
    assert json.loads(run_cli("diff", str(out), "--from", "0", "--to", "1", "--json",
                              check=True).stdout)["added"] == keys
    since_v1 = json.loads(run_cli("diff", str(out), "--from", "1", "--to", str(current),
                                  "--json", check=True).stdout)
    assert since_v1["added"] == build2 and since_v1["removed"] == [keys[0]]
    assert sorted(since_v1["added"] + keys[1:]) == manifest_keys(out)


def test_a_resumed_build_that_admits_nothing_more_still_makes_a_version_of_what_it_added(
        dataset: dict, httpserver: HTTPServer) -> None:
    """Its run before the kill admitted six images; the resumed run refused the rest, and
    the version stayed 1: the card called the grown dataset version 1 and `diff` put the six
    in build 1's version."""
    out, keys = dataset["out"], dataset["keys"]
    args, committed = _second_build_killed(dataset, httpserver, refused_after=6)
    run_cli(*args, env={"CLEANSET_COMMIT_EVERY": "2"}, check=True)
    verify_ok(out)
    assert json.loads(run_cli("diff", str(out), "--from", "0", "--to", "1", "--json",
                              check=True).stdout)["added"] == keys
    latest = json.loads(run_cli("diff", str(out), "--json", check=True).stdout)
    assert latest["added"] == committed and latest["removed"] == []
    assert "version 2" in (out / "README.md").read_text(encoding="utf-8").lower()


# -- tracking parameters ------------------------------------------------------------------------
UTM = "utm_source=commons.wikimedia.org&utm_campaign=imageinfo&utm_content=original"


@pytest.fixture
def tracked(httpserver: HTTPServer, tmp_path: Path) -> dict:
    """Even rows fetched with Commons' tracking parameters, odd rows without (served alike)."""
    rows = rows_for(httpserver)
    bare = [r["url"] for r in rows]
    for i, row in enumerate(rows):
        row["url"] = f"{row['url']}?{UTM}" if i % 2 == 0 else row["url"]
    recipe = recipe_for(tmp_path, write_jsonl(tmp_path / "urls.jsonl", rows))
    out = tmp_path / "out"
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    return {"out": out, "rows": rows, "bare": bare, "keys": manifest_keys(out)}


def test_takedown_by_the_bare_url_removes_the_sample_fetched_with_tracking_parameters(
        tracked: dict) -> None:
    out, rows, bare, keys = tracked["out"], tracked["rows"], tracked["bare"], tracked["keys"]
    manifest = {r["key"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    assert manifest[keys[4]]["file_url"] == rows[4]["url"]  # provenance keeps it as given
    proc = takedown(out, "--url", bare[4], "--reason", "rights holder request")
    assert f"removed {keys[4]}" in proc.stdout and "1 sample(s) removed" in proc.stdout
    assert keys[4] not in manifest_keys(out)
    deny = [json.loads(line) for line in (out / "denylist.jsonl").read_text().splitlines()]
    assert [d["value"] for d in deny if d["kind"] == "url"] == [rows[4]["url"]]
    again = takedown(out, "--url", bare[4], "--reason", "again", check=False)
    assert again.returncode == 1 and f"url={bare[4]}: already removed" in again.stdout
    verify_ok(out)


def test_takedown_by_a_url_with_tracking_parameters_removes_the_sample_fetched_bare(
        tracked: dict) -> None:
    out, rows, keys = tracked["out"], tracked["rows"], tracked["keys"]
    with_utm = f"{rows[5]['url']}?{UTM}"
    assert dry_run_keys(out, "--url", with_utm) == {keys[5]}
    takedown(out, "--url", with_utm, "--reason", "rights holder request")
    assert keys[5] not in manifest_keys(out) and len(manifest_keys(out)) == N - 1
    again = takedown(out, "--url", with_utm, "--reason", "again", check=False)
    assert again.returncode == 1 and f"url={with_utm}: already removed" in again.stdout


# -- permanence ---------------------------------------------------------------------------------
def test_a_taken_down_work_and_its_near_copy_are_not_readmitted_from_another_url(
        dataset: dict, httpserver: HTTPServer) -> None:
    out, keys, tmp = dataset["out"], dataset["keys"], dataset["tmp"]
    takedown(out, "--key", keys[2], "--reason", "rights holder request")
    httpserver.expect_request("/mirror/copy.jpg").respond_with_data(
        image(2), content_type="image/jpeg")
    near = io.BytesIO()
    Image.open(io.BytesIO(image(2))).resize((240, 180)).save(near, "JPEG", quality=70)
    httpserver.expect_request("/mirror/near.jpg").respond_with_data(
        near.getvalue(), content_type="image/jpeg")
    rows = [{"id": "mirror-copy", "url": httpserver.url_for("/mirror/copy.jpg"),
             "license": CC0, "creator": "Someone else"},
            {"id": "mirror-near", "url": httpserver.url_for("/mirror/near.jpg"),
             "license": CC0, "creator": "Someone else"}]
    table = write_jsonl(tmp / "mirror.jsonl", rows)
    recipe = recipe_for(tmp, table, name="mirror", dataset="takedown-test")
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    cands = pq.read_table(out / "candidates.parquet").to_pylist()
    mirror = next(c for c in cands if c["candidate_id"].endswith("mirror-copy"))
    assert mirror["status"] == "rejected" and mirror["reason"] == "denylisted"
    resized = next(c for c in cands if c["candidate_id"].endswith("mirror-near"))
    assert resized["status"] == "rejected" and resized["reason"] == "denylisted"
    assert hashlib.sha256(image(2)).hexdigest() not in {
        r["sha256"] for r in pq.read_table(out / "manifest.parquet").to_pylist()}


def test_a_work_taken_down_by_its_landing_page_is_known_as_removed_and_kept_out_by_it(
        dataset: dict, httpserver: HTTPServer) -> None:
    """`--url` of a work's page (the artist's link): asked again, the takedown said "nothing
    matches" (the page is in no candidate row), and only the file's URL was denylisted, so
    the work met again at that page under another file URL was admitted."""
    out, rows, keys, tmp = dataset["out"], dataset["rows"], dataset["keys"], dataset["tmp"]
    page = rows[6]["landing_url"]
    takedown(out, "--url", page, "--reason", "artist request #3")
    assert keys[6] not in manifest_keys(out)

    again = takedown(out, "--url", page, "--reason", "again", check=False)
    assert again.returncode == 1, again.stdout + again.stderr
    assert f"url={page}: already removed on " in again.stdout
    assert "by takedown-v2 (reason: artist request #3)" in again.stdout

    httpserver.expect_request("/cdn/large-6.jpg").respond_with_data(
        image(60), content_type="image/jpeg")  # another rendition: not even a near copy
    table = write_jsonl(tmp / "cdn.jsonl", [{
        "id": "cdn-6", "url": httpserver.url_for("/cdn/large-6.jpg"), "license": CC0,
        "creator": "Ada", "landing_url": page}])
    run_cli("build", str(recipe_for(tmp, table, name="cdn", dataset="takedown-test")),
            "--out", str(out), "--no-progress", check=True)
    cdn = next(c for c in pq.read_table(out / "candidates.parquet").to_pylist()
               if c["candidate_id"].endswith("cdn-6"))
    assert cdn["status"] == "rejected" and cdn["reason"] == "denylisted", cdn
    verify_ok(out)


def test_site_selector_takes_down_every_sample_from_a_site_and_denylists_each_work(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    """`--site HOST`: an artist asking for everything taken from their site, whether the
    files came from it (an image URL on the host) or it is their works' page (the landing
    URL, the files on a CDN), subdomains included."""
    rows = rows_for(httpserver)
    for i in (1, 5):
        rows[i]["landing_url"] = f"https://www.artist.example/p/{i}"
    rows[7]["url"] = rows[7]["url"].replace("localhost", "127.0.0.1")  # its own host
    recipe = recipe_for(tmp_path, write_jsonl(tmp_path / "urls.jsonl", rows))
    out = tmp_path / "out"
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    keys = [r["key"] for r in pq.read_table(out / "manifest.parquet").to_pylist()]
    before = shard_files(out)
    dry = run_cli("takedown", str(out), "--site", "artist.example", "--reason", "r",
                  "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert [line.split()[2] for line in dry.stdout.splitlines()
            if line.startswith("would remove ")] == [keys[1], keys[5]], dry.stdout
    assert "site=artist.example: would be denylisted" in dry.stdout
    assert shard_files(out) == before
    done = run_cli("takedown", str(out), "--site", "https://ARTIST.example/about",
                   "--site", "127.0.0.1", "--reason", "the artist's request")
    assert done.returncode == 0, done.stderr
    left = {r["key"] for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    assert left == set(keys) - {keys[1], keys[5], keys[7]}
    assert run_cli("verify", str(out)).returncode == 0
    denied = [json.loads(line) for line in (out / "denylist.jsonl").read_text().splitlines()]
    assert {"url", "sha256"} <= {e["kind"] for e in denied}
    assert rows[7]["url"] in {e["value"] for e in denied if e["kind"] == "url"}
    log = json.loads((out / "takedowns.jsonl").read_text().splitlines()[-1])
    assert log["selectors"]["site"] == ["artist.example", "127.0.0.1"]
    assert log["tool_version"] == run_cli("--version", check=True).stdout.split()[1]
    again = run_cli("takedown", str(out), "--site", "artist.example", "--reason", "r")
    assert again.returncode == 1 and "site=artist.example: already removed" in again.stdout
    # Linked to the site by their pages alone, the works are still answered for it.
    looked = json.loads(run_cli("lookup", str(out), "--site", "artist.example",
                                check=True).stdout)
    assert [(c["key"], c["found_as"]) for c in looked["candidates"]] == \
        [(keys[1], "taken_down"), (keys[5], "taken_down")]
    bad = run_cli("takedown", str(out), "--site", "no such host", "--reason", "r")
    assert bad.returncode == 2 and "'no such host' is not a host name" in bad.stderr


def test_a_site_taken_down_stays_down_for_later_builds_even_before_any_build_took_from_it(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    """An artist asking that nothing of their site be taken: `--site` denylists the site
    itself, so a later build refuses its new images too (before downloading them), its
    subdomains' and those whose page is on it; asked before anything was taken from it, the
    site is denylisted all the same and the dataset is left as it is."""
    rows = rows_for(httpserver)
    rows[3]["url"] = rows[3]["url"].replace("localhost", "127.0.0.1")
    recipe = recipe_for(tmp_path, write_jsonl(tmp_path / "urls.jsonl", rows))
    out = tmp_path / "out"
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    keys = manifest_keys(out)
    files = all_files(out)

    first = takedown(out, "--site", "https://www.portfolio.example/about", "--reason",
                     "the artist's request", check=False)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "site=portfolio.example: denylisted" in first.stdout
    assert "none is in the dataset now" in first.stdout
    changed = {name for name, digest in all_files(out).items() if files.get(name) != digest}
    assert changed == {"denylist.jsonl"}  # no shard, ledger, log or paper touched
    assert [json.loads(line) for line in (out / "denylist.jsonl").read_text().splitlines()] \
        == [{"kind": "site", "value": "portfolio.example", "reason": "the artist's request",
             "added_at": json.loads((out / "denylist.jsonl").read_text())["added_at"]}]
    again = takedown(out, "--site", "portfolio.example", "--reason", "r", check=False)
    assert again.returncode == 1
    assert "site=portfolio.example: already denylisted on " in again.stdout
    assert "(reason: the artist's request)" in again.stdout

    removed = takedown(out, "--site", "127.0.0.1", "--reason", "another artist")
    assert manifest_keys(out) == [k for k in keys if k != keys[3]]
    assert "site=127.0.0.1: denylisted" in removed.stdout
    verify_ok(out)

    # A later build: new works on both sites, by image URL, subdomain or page.
    for name in ("new-a", "new-b", "new-c", "new-d"):
        httpserver.expect_request(f"/{name}.jpg").respond_with_data(
            make_image(hash(name) % 1000 + 500, (110, 80)), content_type="image/jpeg")
    later = [
        {"id": "on-denied-ip", "url": httpserver.url_for("/new-a.jpg").replace(
            "localhost", "127.0.0.1"), "license": CC0},
        {"id": "page-on-subdomain", "url": httpserver.url_for("/new-b.jpg"), "license": CC0,
         "landing_url": "https://shop.portfolio.example/prints/1"},
        {"id": "page-elsewhere", "url": httpserver.url_for("/new-c.jpg"), "license": CC0,
         "landing_url": "https://notportfolio.example/prints/1"},
        {"id": "plain", "url": httpserver.url_for("/new-d.jpg"), "license": CC0},
    ]
    recipe2 = recipe_for(tmp_path, write_jsonl(tmp_path / "later.jsonl", later), name="later",
                          dataset="takedown-test")
    run_cli("build", str(recipe2), "--out", str(out), "--no-progress", check=True)
    cands = {c["candidate_id"].rsplit(":", 1)[-1]: c
             for c in pq.read_table(out / "candidates.parquet").to_pylist()}
    assert cands["on-denied-ip"]["reason"] == "denylisted"
    assert cands["on-denied-ip"]["detail"].startswith("site 127.0.0.1 is on the denylist at ")
    assert "(another artist)" in cands["on-denied-ip"]["detail"]
    assert cands["page-on-subdomain"]["reason"] == "denylisted"
    assert cands["page-on-subdomain"]["detail"].startswith("site portfolio.example ")
    assert cands["page-elsewhere"]["status"] == "accepted"
    assert cands["plain"]["status"] == "accepted"
    assert not any(request.path == "/new-a.jpg" for request, _ in httpserver.log)
    verify_ok(out)

    looked = json.loads(run_cli("lookup", str(out), "--site", "portfolio.example",
                                check=True).stdout)
    assert looked["denylisted"]["site"] == "portfolio.example"
    assert looked["denylisted"]["reason"] == "the artist's request"
    assert [(c["found_as"], c["reason"]) for c in looked["candidates"]] == \
        [("refused", "denylisted")]
    shop = json.loads(run_cli("lookup", str(out), "--site", "shop.portfolio.example",
                              check=True).stdout)
    assert shop["denylisted"]["site"] == "portfolio.example"  # the parent domain's entry
    elsewhere = json.loads(run_cli("lookup", str(out), "--site", "example.org",
                                   check=True).stdout)
    assert elsewhere["denylisted"] is None
    # The report a licensing lead signs off from shows what is kept out, asked for early,
    # and stays current when a site is denylisted later (no new version, no papers).
    run_cli("report", str(out), check=True)
    report = (out / "report.html").read_text()
    kept = report[report.index("Kept out of every later build"):]
    assert "<td>site</td><td>portfolio.example</td>" in kept
    assert "the artist&#x27;s request" in kept or "the artist's request" in kept
    takedown(out, "--site", "late.example", "--reason", "asked later")
    assert "<td>site</td><td>late.example</td>" in (out / "report.html").read_text()
    verify_ok(out)


def test_a_site_s_works_reached_through_a_redirect_are_found_and_taken_down_with_it(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    """A short link (the table's URL) redirecting to the artist's host: the sample's file URL
    is the short link's, its bytes the artist's. `lookup --site` and `takedown --site` of the
    artist's host found nothing of it, nor of a work a build refused at such a redirect."""
    serve_site_files(httpserver)
    artist = HTTPServer(host="127.0.0.1", port=0)
    artist.no_handler_status_code = 404
    artist.start()
    try:
        artist.expect_request("/robots.txt").respond_with_data(
            "User-agent: *\nDisallow: /private/\n", content_type="text/plain")
        artist.expect_request("/art/a.jpg").respond_with_data(image(1), content_type="image/jpeg")
        artist.expect_request("/private/b.jpg").respond_with_data(image(2),
                                                                 content_type="image/jpeg")
        for name, path in (("a", "/art/a.jpg"), ("b", "/private/b.jpg")):
            httpserver.expect_request(f"/s/{name}").respond_with_data(
                "", status=302, headers={"Location": artist.url_for(path)})
        httpserver.expect_request("/own.jpg").respond_with_data(image(3),
                                                                content_type="image/jpeg")
        rows = [{"id": "a", "url": httpserver.url_for("/s/a"), "license": CC0},
                {"id": "b", "url": httpserver.url_for("/s/b"), "license": CC0},
                {"id": "own", "url": httpserver.url_for("/own.jpg"), "license": CC0}]
        recipe = recipe_for(tmp_path, write_jsonl(tmp_path / "urls.jsonl", rows))
        out = tmp_path / "out"
        run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
        manifest = {r["source_id"]: r["key"] for r in
                    pq.read_table(out / "manifest.parquet").to_pylist()}
        assert set(manifest) == {"a", "own"}

        looked = json.loads(run_cli("lookup", str(out), "--site", "127.0.0.1",
                                    check=True).stdout)
        found = {c["candidate"].rsplit(":", 1)[-1]: (c["found_as"], c["reason"])
                 for c in looked["candidates"]}
        assert found == {"a": ("sample", None), "b": ("refused", "optout_robots_txt")}
        done = takedown(out, "--site", "127.0.0.1", "--reason", "the artist's request")
        assert f"removed {manifest['a']}" in done.stdout
        assert manifest_keys(out) == [manifest["own"]]
        verify_ok(out)
    finally:
        artist.clear()
        artist.stop()
