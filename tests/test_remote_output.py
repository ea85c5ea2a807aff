"""Output to an fsspec URL: build in a local stage, publish to the URL, verify from the URL.

`memory://` runs in this process (cleanset's own `main`, the real fsspec memory filesystem);
`file://` runs through the real CLI in a subprocess. No traffic leaves the machine.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
import webdataset as wds
from PIL import Image

from builder.cli import main
from tests.conftest import FIXED_EPOCH, make_image, run_cli, write_recipe

CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"
MARKER = "_cleanset_published.json"
STATE_FILES = {"ledger.sqlite", "candidates.parquet"}  # hold wall-clock bookkeeping
PAPERS = {"manifest.parquet", "candidates.parquet", "spdx.json", "croissant.json", "README.md",
          "ATTRIBUTION.md", "attribution.csv"}


# -- helpers -----------------------------------------------------------------------------------
def add_images(folder: Path, seeds: list[int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        (folder / f"img{seed:03d}.jpg").write_bytes(make_image(seed))
        (folder / f"img{seed:03d}.jpg.json").write_text(json.dumps(
            {"license": CC0, "creator": f"Creator {seed % 3}", "title": f"Picture {seed}"}),
            encoding="utf-8")


def recipe_for(tmp_path: Path, name: str, images: str, per_shard: int = 2) -> Path:
    return write_recipe(tmp_path / name, f"""
[dataset]
name = "remote-test"
samples_per_shard = {per_shard}
[policy]
use = "commercial"
[[sources]]
kind = "folder"
path = "{images}"
""")


def local_files(root: Path) -> dict[str, bytes]:
    """What a reader needs from a local output directory (not its lock)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """cleanset's `main` in this process (the memory filesystem lives here)."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def memory_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh place on the process-wide memory filesystem, emptied afterwards."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", FIXED_EPOCH)
    root = f"/bucket-{uuid.uuid4().hex[:8]}"
    yield f"memory://{root.lstrip('/')}/dataset"
    fs = fsspec.filesystem("memory")
    for path in [p for p in fs.store if p.startswith(root)]:
        del fs.store[path]
    fs.pseudo_dirs[:] = [d for d in fs.pseudo_dirs if not d.startswith(root)]


def memory_files(url: str) -> dict[str, object]:
    """Remote relative path -> the memory filesystem's file object (a new one per write)."""
    fs = fsspec.filesystem("memory")
    root = "/" + url.removeprefix("memory://")
    return {p[len(root) + 1:]: f for p, f in fs.store.items() if p.startswith(root + "/")}


def remote_bytes(url: str) -> dict[str, bytes]:
    fs, root = fsspec.core.url_to_fs(url)
    return {p[len(root) + 1:]: fs.cat_file(p) for p in fs.find(root)}


def marker(url: str) -> dict:
    fs, root = fsspec.core.url_to_fs(url)
    return json.loads(fs.cat_file(f"{root}/{MARKER}"))


def assert_marker_describes(url: str) -> dict[str, bytes]:
    files = remote_bytes(url)
    listed = marker(url)["files"]
    assert set(listed) == set(files) - {MARKER}
    for rel, entry in listed.items():
        assert entry == {"size": len(files[rel]), "sha256": hashlib.sha256(files[rel]).hexdigest()}
    return files


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    add_images(tmp_path / "images", list(range(5)))
    return recipe_for(tmp_path, "recipe.toml", "images")


# -- memory://, in process ---------------------------------------------------------------------
def test_a_memory_url_receives_exactly_the_files_of_a_local_build_and_a_marker_last(
        tmp_path: Path, corpus: Path, memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "build", str(corpus), "--out", str(tmp_path / "local"),
               "--no-progress")[0] == 0
    stage = tmp_path / "stage"
    code, out, err = cli(capsys, "build", str(corpus), "--out", memory_url, "--stage", str(stage),
                         "--no-progress")
    assert code == 0, err
    assert f"published to {memory_url}: 12 files uploaded" in out  # evidence/ too
    # the memory filesystem ends with the process: a user who typed memory:// is told so
    assert "gone when cleanset exits. The stage keeps the dataset" in " ".join(out.split())

    local = local_files(tmp_path / "local")
    remote = assert_marker_describes(memory_url)
    assert set(remote) == set(local) | {MARKER}
    assert {"shards/000000.tar", "shards/000001.tar", "shards/000002.tar", "ledger.sqlite"} \
        <= set(remote)
    for rel, data in local.items():
        expected = (stage / rel).read_bytes() if rel in STATE_FILES else data
        assert remote[rel] == expected, rel
    assert not [rel for rel in remote if "cleanset-upload" in rel]  # no temporary left


def test_shards_read_back_with_webdataset_straight_from_the_url(
        corpus: Path, tmp_path: Path, memory_url: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli(capsys, "build", str(corpus), "--out", memory_url, "--stage",
               str(tmp_path / "stage"), "--no-progress")[0] == 0
    # webdataset opens URLs through its gopen table; memory:// goes through fsspec.
    monkeypatch.setitem(wds.gopen_schemes, "memory",
                        lambda url, mode="rb", bufsize=8192, **kw: fsspec.open(url, mode).open())
    ds = wds.WebDataset(f"{memory_url}/shards/{{000000..000002}}.tar", shardshuffle=False)
    samples = list(ds)
    assert [s["__key__"] for s in samples] == [f"{i:010d}" for i in range(5)]
    for sample in samples:
        prov = json.loads(sample["json"])
        assert hashlib.sha256(sample["jpg"]).hexdigest() == prov["sha256"]
        assert prov["license"]["spdx"] == "CC0-1.0"
        assert Image.open(io.BytesIO(sample["jpg"])).size == (96, 64)


def test_publishing_an_unchanged_dataset_again_writes_nothing(
        corpus: Path, tmp_path: Path, memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ("build", str(corpus), "--out", memory_url, "--stage", str(tmp_path / "stage"),
            "--no-progress")
    assert cli(capsys, *args)[0] == 0
    before = memory_files(memory_url)
    code, out, _ = cli(capsys, *args)
    assert code == 0
    assert "already complete" in out
    assert f"published to {memory_url}: up to date (12 files unchanged)" in out
    after = memory_files(memory_url)
    assert after.keys() == before.keys()
    assert all(after[rel] is before[rel] for rel in before)  # not one file rewritten


def test_a_second_build_uploads_only_new_and_changed_files(
        corpus: Path, tmp_path: Path, memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    stage = tmp_path / "stage"
    assert cli(capsys, "build", str(corpus), "--out", memory_url, "--stage", str(stage),
               "--no-progress")[0] == 0
    before = memory_files(memory_url)
    add_images(tmp_path / "more", [1, 20, 21, 22])  # one duplicate, three new
    more = recipe_for(tmp_path, "more.toml", "more")
    code, out, err = cli(capsys, "build", str(more), "--out", memory_url, "--stage", str(stage),
                         "--no-progress")
    assert code == 0, err
    after = memory_files(memory_url)
    rewritten = {rel for rel in after if rel not in before or after[rel] is not before[rel]}
    # A new build starts new shards: 000003 (2 samples) and 000004 (1); the old three stay.
    assert {rel for rel in rewritten if rel.startswith("shards/")} == {"shards/000003.tar",
                                                                       "shards/000004.tar"}
    # ...and its own evidence file; the first build's archive is not uploaded again.
    assert rewritten - {"shards/000003.tar", "shards/000004.tar"} <= \
        PAPERS | {"ledger.sqlite", MARKER, "evidence/remote-test-build0002-00000.warc.gz"}
    assert {"ledger.sqlite", MARKER, "manifest.parquet"} <= rewritten
    assert f"{len(rewritten) - 1} files uploaded" in out  # the marker is not counted as a file
    assert_marker_describes(memory_url)
    assert cli(capsys, "verify", memory_url)[0] == 0


def test_verify_a_url_passes_and_catches_one_flipped_byte_in_a_remote_shard(
        corpus: Path, tmp_path: Path, memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "build", str(corpus), "--out", memory_url, "--stage",
               str(tmp_path / "stage"), "--no-progress")[0] == 0
    code, out, _ = cli(capsys, "verify", memory_url)
    assert code == 0, out
    assert f"verify: OK: 5 samples in {memory_url}" in out

    fs, root = fsspec.core.url_to_fs(memory_url)
    shard = f"{root}/shards/000001.tar"
    data = bytearray(fs.cat_file(shard))
    data[1536] ^= 0x01  # inside the first member's image bytes
    fs.pipe_file(shard, bytes(data))
    code, out, _ = cli(capsys, "verify", memory_url)
    assert code == 1
    assert f"PROBLEM shards/000001.tar: the remote copy ({len(data)} bytes" in out
    assert "differs from _cleanset_published.json" in out
    assert "PROBLEM 000001.tar: file sha256 differs from the one recorded when written" in out
    assert f"problem(s) in {memory_url}" in out
    assert (tmp_path / "stage" / "shards" / "000001.tar").exists()  # the stage is untouched
    assert "remove the damaged one there and run again the command that published it" in out
    fs.rm_file(shard)  # as it says: the same build uploads it again
    assert cli(capsys, "build", str(corpus), "--out", memory_url, "--stage",
               str(tmp_path / "stage"), "--no-progress")[0] == 0
    assert cli(capsys, "verify", memory_url)[0] == 0


def test_an_unfinished_build_resumes_from_a_fresh_stage_using_the_published_ledger(
        corpus: Path, tmp_path: Path, memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    for limit in (["--limit", "3"], []):  # the same two commands into a local directory
        assert cli(capsys, "build", str(corpus), "--out", str(tmp_path / "local"), *limit,
                   "--no-progress")[0] == 0
    code, out, err = cli(capsys, "build", str(corpus), "--out", memory_url, "--stage",
                         str(tmp_path / "first"), "--limit", "3", "--no-progress")
    assert code == 0, err
    assert "stopped at --limit 3" in out
    # Published as it stands, the partial last shard too: a consistent dataset of 3 samples.
    assert {"shards/000000.tar", "shards/000001.tar", "ledger.sqlite"} \
        <= set(marker(memory_url)["files"])
    assert "verify: OK: 3 samples" in cli(capsys, "verify", memory_url)[1]
    partial = memory_files(memory_url)["shards/000001.tar"]

    fresh = tmp_path / "second"
    code, out, err = cli(capsys, "build", str(corpus), "--out", memory_url, "--stage", str(fresh),
                         "--no-progress")
    assert code == 0, err
    assert f"pulled the published dataset from {memory_url}" in out
    assert "cleanset build finished: 2 candidates, 2 accepted" in out  # only the rest
    remote = assert_marker_describes(memory_url)
    local = local_files(tmp_path / "local")
    assert set(remote) == set(local) | {MARKER}
    assert memory_files(memory_url)["shards/000001.tar"] is not partial  # completed, re-uploaded
    for rel in local.keys() - STATE_FILES:
        assert remote[rel] == local[rel], rel  # byte-identical to the local directory
    assert cli(capsys, "verify", memory_url)[0] == 0


def test_a_takedown_in_the_stage_removes_the_shard_from_the_url_after_the_new_marker(
        tmp_path: Path, memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    add_images(tmp_path / "images", [1, 2, 3])
    recipe = recipe_for(tmp_path, "recipe.toml", "images", per_shard=1)
    stage = tmp_path / "stage"
    args = ("build", str(recipe), "--out", memory_url, "--stage", str(stage), "--no-progress")
    assert cli(capsys, *args)[0] == 0
    before = memory_files(memory_url)
    assert cli(capsys, "takedown", str(stage), "--key", "0000000001", "--reason", "request")[0] == 0
    code, out, _ = cli(capsys, *args)
    assert code == 0
    assert "1 removed" in out
    after = memory_files(memory_url)
    assert "shards/000001.tar" not in after and "shards/000001.tar" not in marker(memory_url)["files"]
    assert after["shards/000000.tar"] is before["shards/000000.tar"]
    assert after["shards/000002.tar"] is before["shards/000002.tar"]
    assert {"takedowns.jsonl", "denylist.jsonl"} <= set(marker(memory_url)["files"])
    assert_marker_describes(memory_url)
    assert cli(capsys, "verify", memory_url)[0] == 0


def test_a_takedown_given_the_url_pulls_removes_and_publishes_and_a_dry_run_publishes_nothing(
        tmp_path: Path, memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    add_images(tmp_path / "images", [1, 2, 3])
    recipe = recipe_for(tmp_path, "recipe.toml", "images", per_shard=1)
    assert cli(capsys, "build", str(recipe), "--out", memory_url, "--stage",
               str(tmp_path / "build-stage"), "--no-progress")[0] == 0
    before = memory_files(memory_url)
    fresh = tmp_path / "takedown-stage"  # another machine: nothing staged yet
    code, out, _ = cli(capsys, "takedown", memory_url, "--stage", str(fresh), "--key",
                       "0000000001", "--dry-run")
    assert code == 0 and "0000000001" in out
    assert memory_files(memory_url) == before  # the very same file objects: nothing written
    code, out, err = cli(capsys, "takedown", memory_url, "--stage", str(fresh), "--key",
                         "0000000001", "--reason", "the artist asked")
    assert code == 0, err
    after = memory_files(memory_url)
    assert "shards/000001.tar" not in after
    assert after["shards/000000.tar"] is before["shards/000000.tar"]  # untouched, not re-sent
    assert {"takedowns.jsonl", "denylist.jsonl"} <= set(marker(memory_url)["files"])
    assert_marker_describes(memory_url)
    assert cli(capsys, "verify", memory_url)[0] == 0
    removed = json.loads(remote_bytes(memory_url)["takedowns.jsonl"].decode().splitlines()[0])
    assert "the artist asked" in json.dumps(removed)


def test_a_recheck_of_a_url_publishes_nothing_and_with_apply_publishes_the_takedown(
        tmp_path: Path, memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    add_images(tmp_path / "images", [1, 2, 3])
    recipe = recipe_for(tmp_path, "recipe.toml", "images", per_shard=1)
    assert cli(capsys, "build", str(recipe), "--out", memory_url, "--stage",
               str(tmp_path / "build-stage"), "--no-progress")[0] == 0
    (tmp_path / "images" / "img002.jpg").unlink()  # the work is gone from the source
    before = memory_files(memory_url)
    fresh = tmp_path / "recheck-stage"  # another machine: pulled from the URL first
    code, out, _ = cli(capsys, "recheck", memory_url, "--stage", str(fresh), "--no-progress")
    assert code == 3 and "0000000001 (folder) deleted" in out
    assert memory_files(memory_url) == before  # the very same file objects: nothing written
    code, out, err = cli(capsys, "recheck", memory_url, "--stage", str(fresh), "--no-progress",
                         "--apply", "--reason", "gone at the source")
    assert code == 0, err
    assert "shards/000001.tar" not in memory_files(memory_url)
    assert_marker_describes(memory_url)
    assert cli(capsys, "verify", memory_url)[0] == 0


def test_lookup_of_a_url_downloads_only_the_ledger_and_finds_the_work(
        tmp_path: Path, memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    add_images(tmp_path / "images", [1, 2, 3])
    recipe = recipe_for(tmp_path, "recipe.toml", "images")
    assert cli(capsys, "build", str(recipe), "--out", memory_url, "--stage",
               str(tmp_path / "stage"), "--no-progress")[0] == 0
    query = sorted((tmp_path / "images").glob("*.jpg"))[1]
    code, out, err = cli(capsys, "lookup", memory_url, str(query))
    assert code == 0, err
    found = json.loads(out.splitlines()[0])
    assert found["matches"] and found["matches"][0]["exact"] is True
    local = cli(capsys, "lookup", str(tmp_path / "stage"), str(query))[1]
    assert out == local  # the same answer as against the staged directory
    code, _, err = cli(capsys, "lookup", memory_url.replace("dataset", "nothing"), str(query))
    assert code == 2 and "no dataset is published there" in err
    # taken down: the takedowns' log and denylist are downloaded with the ledger
    key = found["matches"][0]["key"]
    assert cli(capsys, "takedown", memory_url, "--stage", str(tmp_path / "stage"), "--key", key,
               "--reason", "artist request")[0] == 0
    code, out, err = cli(capsys, "lookup", memory_url, str(query))
    assert code == 0, err
    gone = json.loads(out.splitlines()[0])
    assert gone["matches"] == [] and gone["taken_down"][0]["reason"] == "artist request"
    assert gone["taken_down"][0]["takedown"] == "takedown-v2"
    assert out == cli(capsys, "lookup", str(tmp_path / "stage"), str(query))[1]


def test_a_takedown_of_a_url_with_nothing_published_exits_2_naming_it(
        tmp_path: Path, memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "takedown", memory_url, "--stage", str(tmp_path / "s"),
                       "--key", "0000000001", "--reason", "r")
    assert code == 2 and memory_url in err and "no dataset is published there" in err


def test_stage_with_a_local_takedown_is_refused(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "takedown", str(tmp_path), "--stage", str(tmp_path / "s"),
                       "--key", "k", "--reason", "r")
    assert code == 2 and "--stage is for a dataset published to a URL" in err


def test_a_stage_refuses_to_overwrite_a_dataset_published_since_from_another_stage(
        corpus: Path, tmp_path: Path, memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    first = tmp_path / "first"
    assert cli(capsys, "build", str(corpus), "--out", memory_url, "--stage", str(first),
               "--no-progress")[0] == 0
    add_images(tmp_path / "more", [30, 31])
    more = recipe_for(tmp_path, "more.toml", "more")
    code, out, err = cli(capsys, "build", str(more), "--out", memory_url, "--stage",
                         str(tmp_path / "second"), "--no-progress")
    assert code == 0, err
    assert "pulled the published dataset" in out
    published = memory_files(memory_url)

    code, out, err = cli(capsys, "build", str(corpus), "--out", memory_url, "--stage", str(first),
                         "--no-progress")
    assert code == 1
    assert f"cleanset: error: {memory_url}: holds a dataset published from elsewhere" in err
    assert "Nothing was built" in err and "Traceback" not in err
    assert memory_files(memory_url) == published


def test_a_remote_with_a_ledger_but_no_marker_is_not_mistaken_for_an_empty_one(
        corpus: Path, tmp_path: Path, memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    fs, root = fsspec.core.url_to_fs(memory_url)
    fs.pipe_file(f"{root}/ledger.sqlite", b"half a publish")
    code, _, err = cli(capsys, "build", str(corpus), "--out", memory_url, "--stage",
                       str(tmp_path / "stage"), "--no-progress")
    assert code == 1
    assert f"{memory_url}: holds ledger.sqlite but no {MARKER}" in err
    assert not (tmp_path / "stage" / "ledger.sqlite").exists()


# -- file://, through the real CLI -------------------------------------------------------------
def test_a_file_url_through_the_cli_matches_a_local_build_and_verifies(
        corpus: Path, tmp_path: Path) -> None:
    run_cli("build", str(corpus), "--out", str(tmp_path / "local"), "--no-progress", check=True)
    remote_dir = tmp_path / "remote" / "dataset"
    url = remote_dir.as_uri()
    proc = run_cli("build", str(corpus), "--out", url, "--stage", str(tmp_path / "stage"),
                   "--no-progress", check=True)
    assert f"published to {url}: 12 files uploaded" in proc.stdout
    local = local_files(tmp_path / "local")
    remote = local_files(remote_dir)
    assert set(remote) == set(local) | {MARKER}
    for rel in local.keys() - STATE_FILES:
        assert remote[rel] == local[rel], rel
    assert not [p for p in remote_dir.rglob("*") if p.name.startswith(".")]

    samples = list(wds.WebDataset([str(p) for p in sorted(remote_dir.glob("shards/*.tar"))],
                                  shardshuffle=False))
    assert len(samples) == 5
    assert "verify: OK: 5 samples" in run_cli("verify", url, check=True).stdout
    assert "verify: OK: 5 samples" in run_cli("verify", str(remote_dir), check=True).stdout


def test_the_default_stage_is_derived_from_the_url_under_xdg_cache_home(
        corpus: Path, tmp_path: Path) -> None:
    url = (tmp_path / "remote").as_uri()
    cache = tmp_path / "cache"
    run_cli("build", str(corpus), "--out", url, "--no-progress", check=True,
            env={"XDG_CACHE_HOME": str(cache)})
    stage = cache / "cleanset" / "stage" / hashlib.sha256(url.encode()).hexdigest()[:16]
    assert (stage / "ledger.sqlite").exists() and (stage / "shards" / "000000.tar").exists()


def test_a_recipe_output_url_is_built_staged_and_published(tmp_path: Path) -> None:
    add_images(tmp_path / "images", [1, 2])
    url = (tmp_path / "remote").as_uri()
    recipe = write_recipe(tmp_path / "recipe.toml", f"""
[dataset]
name = "from-recipe"
output = "{url}"
[policy]
use = "commercial"
[[sources]]
kind = "folder"
path = "images"
""")
    proc = run_cli("build", str(recipe), "--stage", str(tmp_path / "stage"), "--no-progress",
                   check=True)
    assert f"published to {url}" in proc.stdout
    assert (tmp_path / "remote" / MARKER).exists()


def test_a_failed_upload_keeps_the_staged_build_and_the_same_command_publishes_it(
        corpus: Path, tmp_path: Path) -> None:
    remote_dir = tmp_path / "remote"
    # a folder where the first shard should go: no file of anyone's there, the upload fails
    (remote_dir / "shards" / "000000.tar").mkdir(parents=True)
    url = remote_dir.as_uri()
    stage = tmp_path / "stage"
    args = ("build", str(corpus), "--out", url, "--stage", str(stage), "--no-progress")
    proc = run_cli(*args)
    assert proc.returncode == 1, proc.stderr
    assert f"cleanset: error: {url}: uploading shards/" in proc.stderr
    assert f"The build in {stage} is kept" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (remote_dir / MARKER).exists()
    assert (stage / "ledger.sqlite").exists() and len(list(stage.glob("shards/*.tar"))) == 3

    shutil.rmtree(remote_dir / "shards" / "000000.tar")
    proc = run_cli(*args, check=True)
    assert "already complete" in proc.stdout and f"published to {url}" in proc.stdout
    assert "verify: OK: 5 samples" in run_cli("verify", url, check=True).stdout


# A real SIGINT, sent by the process to itself as the first paper's upload is renamed into
# place (every shard and evidence file is uploaded by then); from that moment the remote
# stops answering: every upload thread that touches it waits for good.
_CTRL_C_AS_THE_PAPERS_UPLOAD = """
import os, signal, sys, threading
remote = sys.argv.pop(1)
hang, sent = threading.Event(), []
def hook(event, args):
    if event not in ('open', 'os.rename') or not str(args[0]).startswith(remote + '/'):
        return
    rel = str(args[0])[len(remote) + 1:]
    if not sent and event == 'os.rename' and not rel.startswith(('shards/', 'evidence/')):
        sent.append(rel)
        os.kill(os.getpid(), signal.SIGINT)
    if sent and threading.current_thread() is not threading.main_thread():
        hang.wait()
sys.addaudithook(hook)
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
from builder.cli import run
sys.argv = ['cleanset', *sys.argv[1:]]
run()
"""


def test_ctrl_c_mid_publish_stops_at_once_and_the_rerun_uploads_nothing_twice(
        tmp_path: Path) -> None:
    """Ctrl-C as a publish uploads: it waited for every upload still queued (for good, with
    a remote that stopped answering), and the same command then uploaded every file again,
    those already at the URL whole too, since no marker listed them yet."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    add_images(tmp_path / "images", list(range(6)))
    recipe = recipe_for(tmp_path, "recipe.toml", "images", per_shard=1)
    remote_dir = tmp_path / "remote" / "dataset"
    args = ("build", str(recipe), "--out", remote_dir.as_uri(), "--stage",
            str(tmp_path / "stage"), "--no-progress")
    proc = subprocess.run([sys.executable, "-c", _CTRL_C_AS_THE_PAPERS_UPLOAD, str(remote_dir),
                           *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SOURCE_DATE_EPOCH": FIXED_EPOCH,
                               "PYTHONPATH": str(REPO)})
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr == "cleanset: interrupted; run the same command again to resume.\n"
    assert not (remote_dir / MARKER).exists()
    uploaded = {p.relative_to(remote_dir).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
                for p in remote_dir.rglob("*") if p.is_file()
                and p.relative_to(remote_dir).parts[0] in ("shards", "evidence")
                and ".cleanset-upload-" not in p.name}
    assert len([rel for rel in uploaded if rel.startswith("shards/")]) == 6

    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert f"({len(uploaded)} more were uploaded by the interrupted publish before it, and " \
           "not again)" in again.stdout
    for rel, before in uploaded.items():
        path = remote_dir / rel
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == before, rel  # not sent again
    assert_marker_describes(remote_dir.as_uri())
    assert "verify: OK: 6 samples" in run_cli("verify", remote_dir.as_uri(), check=True).stdout


# A real SIGINT, sent by the process to itself the N-th time its main thread raises the audit
# EVENT on a path ending in (or, for a rename, holding) NAME.
_CTRL_C_AT = """
import os, signal, sys, threading
event, name, nth = sys.argv.pop(1), sys.argv.pop(1), int(sys.argv.pop(1))
seen = []
def hook(ev, args):
    if ev == event and threading.current_thread() is threading.main_thread() \\
            and name in os.path.basename(str(args[0])):
        seen.append(args[0])
        if len(seen) == nth:
            os.kill(os.getpid(), signal.SIGINT)
sys.addaudithook(hook)
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
from builder.cli import run
sys.argv = ['cleanset', *sys.argv[1:]]
run()
"""


@pytest.mark.parametrize("moment", ["as the 4th file pulled is renamed into place",
                                    "once the ledger is in place"])
def test_a_pull_stopped_by_ctrl_c_is_resumed_by_the_same_command_downloading_nothing_twice(
        corpus: Path, tmp_path: Path, moment: str) -> None:
    """A build into a URL from an empty stage pulls the published dataset first. Ctrl-C
    once the pulled ledger was in place, before the stage noted the marker it pulled: the
    same command refused the URL as "a dataset published from elsewhere" (a new empty stage
    and the whole pull again was the way out). Ctrl-C before that: the same command
    downloaded every file again, those already pulled whole too."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    url = (tmp_path / "remote" / "dataset").as_uri()
    run_cli("build", str(corpus), "--out", url, "--stage", str(tmp_path / "first"),
            "--no-progress", check=True)
    stage = tmp_path / "second"
    args = ("build", str(corpus), "--out", url, "--stage", str(stage), "--no-progress")
    at = (("os.rename", ".cleanset-upload-download", "4") if moment.startswith("as")
          else ("open", "hashes.json.tmp", "1"))
    proc = subprocess.run([sys.executable, "-c", _CTRL_C_AT, *at, *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO),
                                                       "SOURCE_DATE_EPOCH": FIXED_EPOCH})
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr == "cleanset: interrupted; run the same command again to resume.\n"
    # the shards and the evidence (the build after the pull writes the papers again)
    pulled = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in stage.rglob("*")
              if p.is_file() and not p.name.startswith(".")
              and p.relative_to(stage).parts[0] in ("shards", "evidence")}
    assert len(pulled) == (3 if moment.startswith("as") else 4)

    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert "published from elsewhere" not in again.stderr
    if moment.startswith("as"):
        assert "12 files (" in again.stdout and "3 of them already there from the pull that " \
               "was stopped, not downloaded again" in again.stdout
    else:
        assert "pulled" not in again.stdout  # it was: its ledger is there
    assert f"published to {url}: up to date" in again.stdout
    for path, before in pulled.items():
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == before, path  # not again
    assert "verify: OK: 5 samples" in run_cli("verify", str(stage), check=True).stdout


def test_an_unreachable_remote_fails_before_building_with_the_url_named(
        corpus: Path, tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("not a directory")
    url = (tmp_path / "blocker" / "dataset").as_uri()
    proc = run_cli("build", str(corpus), "--out", url, "--stage", str(tmp_path / "stage"),
                   "--no-progress")
    assert proc.returncode == 1
    assert f"cleanset: error: {url}: reading {MARKER} failed" in proc.stderr
    assert "Nothing was built" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("out", "says"), [
    ("nosuch://bucket/dataset", "unknown protocol 'nosuch'"),
    ("https://example.org/dataset", "https:// is read-only"),
    ("memory://", "names no directory"),
])
def test_an_unusable_url_exits_2_naming_it(corpus: Path, tmp_path: Path, out: str,
                                           says: str) -> None:
    proc = run_cli("build", str(corpus), "--out", out, "--stage", str(tmp_path / "stage"),
                   "--no-progress")
    assert proc.returncode == 2, proc.stderr
    assert f"cleanset: error: --out {out}: {says}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "stage" / "ledger.sqlite").exists()


def test_a_missing_filesystem_package_exits_2_with_the_extra_to_install(
        corpus: Path, tmp_path: Path) -> None:
    if importlib.util.find_spec("s3fs") is not None:
        pytest.skip("s3fs is installed; the missing-package message cannot be shown")
    proc = run_cli("build", str(corpus), "--out", "s3://bucket/dataset", "--stage",
                   str(tmp_path / "stage"), "--no-progress")
    assert proc.returncode == 2
    assert "cleanset: error: --out s3://bucket/dataset:" in proc.stderr
    assert 'pip install "cleanset[s3]"' in proc.stderr and "Traceback" not in proc.stderr


def test_a_bad_output_url_in_a_recipe_exits_2_naming_the_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    recipe = write_recipe(tmp_path / "bad.toml", """
[dataset]
name = "x"
output = "nosuch://bucket/x"
[[sources]]
kind = "folder"
path = "images"
""")
    proc = run_cli("build", str(recipe), "--no-progress")
    assert proc.returncode == 2
    assert "bad.toml: [dataset] output = 'nosuch://bucket/x': unknown protocol" in proc.stderr


def test_stage_with_a_local_out_is_refused(corpus: Path, tmp_path: Path) -> None:
    proc = run_cli("build", str(corpus), "--out", str(tmp_path / "out"), "--stage",
                   str(tmp_path / "stage"), "--no-progress")
    assert proc.returncode == 2
    assert "only a URL output" in proc.stderr


def test_verify_of_a_url_without_a_marker_exits_2(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    proc = run_cli("verify", (tmp_path / "empty").as_uri())
    assert proc.returncode == 2
    assert f"no {MARKER} here" in proc.stderr


def test_verify_of_a_url_names_a_listed_file_missing_from_it(
        corpus: Path, tmp_path: Path, memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "build", str(corpus), "--out", memory_url, "--stage",
               str(tmp_path / "stage"), "--no-progress")[0] == 0
    fs, root = fsspec.core.url_to_fs(memory_url)
    fs.rm_file(f"{root}/shards/000002.tar")
    code, out, _ = cli(capsys, "verify", memory_url)
    assert code == 1
    assert f"PROBLEM shards/000002.tar: listed in {MARKER} but missing at {memory_url}" in out
    assert "PROBLEM 000002.tar: in the ledger but the file is missing" in out


def test_a_file_url_naming_the_stage_itself_is_refused(
        corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stage = tmp_path / "stage"
    code, _, err = cli(capsys, "build", str(corpus), "--out", stage.as_uri(), "--stage",
                       str(stage), "--no-progress")
    assert code == 2
    assert "is the stage itself" in err
    assert not stage.exists()  # its lock was made before the refusal, and left behind
    around = tmp_path / "pub"
    code, _, err = cli(capsys, "build", str(corpus), "--out", around.as_uri(), "--stage",
                       str(around / "stage"), "--no-progress")
    assert code == 2 and "is around its stage" in err
    assert not around.exists()


# -- a careless user's URLs (the sweep of 2026-12-06) ------------------------------------------
def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def published(corpus: Path, tmp_path: Path) -> tuple[Path, str, Path, tuple[str, ...]]:
    remote = tmp_path / "remote"
    url, stage = remote.as_uri(), tmp_path / "stage"
    args = ("build", str(corpus), "--out", url, "--stage", str(stage), "--no-progress")
    run_cli(*args, check=True)
    return remote, url, stage, args


def test_a_url_holding_someone_s_files_but_no_marker_is_never_published_over(
        corpus: Path, tmp_path: Path) -> None:
    """It overwrote their README.md and shards/000000-000003.tar, deleted 000004-000007,
    and exited 0."""
    remote = tmp_path / "remote"
    (remote / "shards").mkdir(parents=True)
    (remote / "README.md").write_text("my project, years of work\n")
    for i in range(8):
        (remote / "shards" / f"{i:06d}.tar").write_bytes(bytes([i]) * 5000)
    before = tree(remote)
    proc = run_cli("build", str(corpus), "--out", remote.as_uri(), "--stage",
                   str(tmp_path / "stage"), "--no-progress")
    assert proc.returncode == 1, proc.stderr
    assert "holds files (README.md, shards/000000.tar" in proc.stderr
    assert f"but no {MARKER}" in proc.stderr and "Nothing was built" in proc.stderr
    assert tree(remote) == before


@pytest.mark.parametrize("out", ["file://", "file://rel/ds", "file://localhost/tmp/x",
                                 "file:/tmp/ds", "s3:/bucket/ds"])
def test_a_url_naming_no_absolute_place_is_exit_2_and_creates_nothing(
        corpus: Path, tmp_path: Path, out: str) -> None:
    """`file://` alone was the current directory (its README.md replaced by the card),
    `file://rel/ds` a folder below it; `s3:/bucket` a folder named `s3:` and a traceback."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "README.md").write_text("mine\n")
    proc = run_cli("build", str(corpus), "--out", out, "--no-progress", cwd=work)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert ("names an absolute path" in proc.stderr or "looks like a URL with one slash"
            in proc.stderr), proc.stderr
    assert tree(work) == {"README.md": b"mine\n"}


def test_a_plain_build_into_a_published_copy_and_a_url_inside_its_stage_are_refused(
        corpus: Path, tmp_path: Path) -> None:
    remote, url, stage, _ = published(corpus, tmp_path)
    before = tree(remote)
    proc = run_cli("build", str(corpus), "--out", str(remote), "--no-progress")
    assert proc.returncode == 2 and "is the published copy of a dataset" in proc.stderr
    assert f"Build into its URL ({url})" in proc.stderr
    assert tree(remote) == before
    inside = run_cli("build", str(corpus), "--out", (stage / "published").as_uri(), "--stage",
                     str(stage), "--no-progress")
    assert inside.returncode == 2 and "is inside its stage" in inside.stderr


def test_a_damaged_stage_shard_is_never_published_and_a_deleted_one_is_pulled_back(
        corpus: Path, tmp_path: Path) -> None:
    """A byte flipped in the stage's shard was uploaded over the good published copy and the
    marker re-signed to match: the only good copy gone."""
    remote, url, stage, args = published(corpus, tmp_path)
    before = tree(remote)
    shard = stage / "shards" / "000001.tar"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    proc = run_cli(*args)
    assert proc.returncode == 1, proc.stderr
    assert "the stage's copy was changed or damaged" in proc.stderr
    assert tree(remote) == before
    shard.unlink()  # as the message says: it is pulled back from the URL
    again = run_cli(*args, check=True)
    assert shard.read_bytes() == (remote / "shards" / "000001.tar").read_bytes()
    assert "up to date" in again.stdout
    assert run_cli("verify", url).returncode == 0


def test_a_takedown_that_reached_the_stage_but_not_the_url_is_published_by_running_it_again(
        corpus: Path, tmp_path: Path) -> None:
    """Killed between the stage and the upload, the same takedown said "already removed ...
    nothing changed" and the work stayed published (verify OK, lookup finding it)."""
    remote, url, stage, _ = published(corpus, tmp_path)
    local = run_cli("takedown", str(stage), "--key", "0000000001", "--reason", "request",
                    check=True)
    assert "0000000001.jpg" in tree(remote)["shards/000000.tar"].decode("latin-1")
    # The stage's takedown said nothing of the URL, which still served the work.
    assert (f"cleanset: note: {stage} is the stage of the dataset published to {url}: the "
            "published copy still holds what this takedown removed. Publish it: `cleanset "
            f"takedown {url} --stage {stage}`") in local.stderr
    proc = run_cli("takedown", url, "--stage", str(stage), "--key", "0000000001",
                   "--reason", "request")
    assert proc.returncode == 0, proc.stderr
    assert "already removed" in proc.stdout and "published the takedown" in proc.stdout
    assert "0000000001.jpg" not in tree(remote)["shards/000000.tar"].decode("latin-1")
    # the form without selectors finishes the same way
    run_cli("takedown", str(stage), "--key", "0000000002", "--reason", "request", check=True)
    finish = run_cli("takedown", url, "--stage", str(stage))
    assert finish.returncode == 0 and "published the takedown" in finish.stdout, finish.stderr
    assert run_cli("verify", url).returncode == 0


def test_a_recheck_applied_in_the_stage_says_the_url_still_serves_what_it_took_down(
        corpus: Path, tmp_path: Path) -> None:
    """`recheck STAGE --apply` took the work down in the stage alone, with nothing said of
    the URL that still served it."""
    remote, url, stage, _ = published(corpus, tmp_path)
    sidecar = corpus.parent / "images" / "img001.jpg.json"
    sidecar.write_text(json.dumps({"license": "https://creativecommons.org/licenses/by-nc/4.0/",
                                   "creator": "Creator 1", "title": "Picture 1"}),
                       encoding="utf-8")  # the licence changed at the source since
    proc = run_cli("recheck", str(stage), "--apply", "--reason", "licence changed")
    assert "license_changed: 1" in proc.stdout, proc.stdout + proc.stderr
    assert (f"cleanset: note: {stage} is the stage of the dataset published to {url}: the "
            "published copy still holds what this takedown removed.") in proc.stderr
    finish = run_cli("takedown", url, "--stage", str(stage))
    assert finish.returncode == 0 and "published the takedown" in finish.stdout, finish.stderr
    assert run_cli("verify", url).returncode == 0


def test_shards_numbered_past_999999_are_published_like_the_others(
        corpus: Path, tmp_path: Path) -> None:
    """Shard names have six digits until shard 1,000,000 (1B images at 1,000 a shard, or
    fewer a shard, numbers never reused); a publish took only six-digit names for shards,
    so those past it were never uploaded, and the publish said it had published the
    dataset."""
    import sqlite3

    remote, url, stage, _ = published(corpus, tmp_path)
    with sqlite3.connect(stage / "ledger.sqlite") as db:  # as after 999,999 shards
        db.execute("UPDATE meta SET value = '999999' WHERE key = 'next_shard'")
    add_images(tmp_path / "more", [10, 11, 12])
    more = recipe_for(tmp_path, "more.toml", "more")
    run_cli("build", str(more), "--out", url, "--stage", str(stage), "--no-progress",
            check=True)
    assert {"shards/999999.tar", "shards/1000000.tar"} <= set(
        json.loads((remote / "_cleanset_published.json").read_text())["files"])
    assert (remote / "shards" / "1000000.tar").read_bytes() == \
        (stage / "shards" / "1000000.tar").read_bytes()
    proc = run_cli("verify", url)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_verify_of_a_url_names_a_shard_its_marker_does_not_list(
        corpus: Path, tmp_path: Path) -> None:
    """A shard a takedown emptied, left when its publish was stopped before removing it: a
    glob of shards/ still reads its works, and verify said OK."""
    remote, url, _, args = published(corpus, tmp_path)
    shutil.copy(remote / "shards" / "000000.tar", remote / "shards" / "000009.tar")
    proc = run_cli("verify", url)
    assert proc.returncode == 1
    assert f"shards/000009.tar: at {url} but not listed in {MARKER}" in proc.stdout
    run_cli(*args, check=True)  # the build's publish removes what no marker lists
    assert run_cli("verify", url).returncode == 0


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_a_takedown_whose_publish_another_stage_beat_says_the_takedown_did_not_reach_the_url(
        corpus: Path, tmp_path: Path) -> None:
    """Two takedowns of one URL from two stages at once: the one that published second was
    refused, exit 1, saying "The build in STAGE is kept, unpublished. To continue that
    dataset, build with --stage ..." after printing "removed KEY": it named a build, and
    never said that its takedown had not reached the URL. Here it is stopped once its stage
    is pulled (CLEANSET_STOP_AT) while the other takedown publishes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    _, url, stage, _ = published(corpus, tmp_path)
    other = tmp_path / "other-stage"
    env = {**os.environ, "PYTHONPATH": str(REPO), "CLEANSET_STOP_AT": "staged"}
    late = subprocess.Popen([sys.executable, "-m", "builder", "takedown", url, "--stage",
                             str(other), "--key", "0000000002", "--reason", "request"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        state = ""
        while state != "T" and time.monotonic() < deadline and late.poll() is None:
            state = Path(f"/proc/{late.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            time.sleep(0.01)
        assert state == "T", late.communicate()
        run_cli("takedown", url, "--stage", str(stage), "--key", "0000000001", "--reason",
                "request", check=True)
    finally:
        late.send_signal(signal.SIGCONT)
        _, err = late.communicate(timeout=120)
    assert late.returncode == 1, err
    assert f"The takedown in {other} is kept there, unpublished: {url} does not have it" in err
    assert "build" not in err and "Traceback" not in err, err
    assert "run the same command again with --stage pointing to an empty directory" in err
    assert run_cli("verify", url).returncode == 0
    # as it says: the same takedown from a fresh stage reaches the URL, after the other's
    fresh = run_cli("takedown", url, "--stage", str(tmp_path / "fresh"), "--key", "0000000002",
                    "--reason", "request")
    assert fresh.returncode == 0, fresh.stderr
    assert run_cli("verify", url).returncode == 0
    removed = [json.loads(line)["keys"] for line in
               (Path(url.removeprefix("file://")) / "takedowns.jsonl").read_text().splitlines()]
    assert removed == [["0000000001"], ["0000000002"]]
