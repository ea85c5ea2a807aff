"""A takedown killed (kill -9) at any point, then run again, ends exactly as an uninterrupted one."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pytest_httpserver import HTTPServer

from tests.conftest import run_cli, write_jsonl, write_recipe
from tests.test_takedown import CC0, recipe_for, rows_for


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One build (4 shards of 3), copied by every test; and the reference takedown's result."""
    tmp = tmp_path_factory.mktemp("takedown-crash")
    server = HTTPServer()
    server.start()
    try:
        table = write_jsonl(tmp / "urls.jsonl", rows_for(server))
        recipe = recipe_for(tmp, table)
        out = tmp / "built"
        run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    finally:
        server.clear()
        server.stop()
    keys = [r["key"] for r in pq.read_table(out / "manifest.parquet").to_pylist()]
    # three shards touched: two rewritten, one emptied (deleted)
    args = ["--key", keys[1], "--key", keys[4], "--key", keys[9], "--key", keys[10],
            "--key", keys[11], "--reason", "rights holder request"]
    reference = tmp / "reference"
    shutil.copytree(out, reference)
    run_cli("takedown", str(reference), *args, check=True)
    yield {"out": out, "args": args, "reference": reference, "recipe": recipe}


def state(out: Path) -> dict[str, object]:
    cands = pq.read_table(out / "candidates.parquet").to_pylist()
    return {
        "shards": {p.name: p.read_bytes() for p in sorted((out / "shards").iterdir())},
        "manifest": pq.read_table(out / "manifest.parquet").column("key").to_pylist(),
        "removed": sorted(c["key"] for c in cands if c["status"] == "removed"),
        "log": [{k: v for k, v in json.loads(line).items() if k != "when"}
                for line in (out / "takedowns.jsonl").read_text().splitlines()],
        "denylist": [{k: v for k, v in json.loads(line).items() if k != "added_at"}
                     for line in (out / "denylist.jsonl").read_text().splitlines()],
    }


@pytest.mark.parametrize("point", [
    "takedown_journal:1", "takedown_shard_written:1", "takedown_shard_written:2",
    "takedown_ready:1", "takedown_renamed:1", "takedown_renamed:2", "takedown_ledger:1",
    "takedown_logged:1", "takedown_papers:1",
])
def test_kill_9_mid_takedown_then_the_same_command_completes_it(built: dict, tmp_path: Path,
                                                                 point: str) -> None:
    out = tmp_path / "out"
    shutil.copytree(built["out"], out)
    crashed = run_cli("takedown", str(out), *built["args"], env={"CLEANSET_CRASH_AT": point})
    assert crashed.returncode == -9, crashed.stdout + crashed.stderr
    assert (out / ".takedown.json").exists()
    if point.split(":")[0] in ("takedown_journal", "takedown_shard_written", "takedown_ready"):
        # no rename yet: every shard is still the old one (the journal decides what comes next)
        assert {p.name: p.read_bytes() for p in (out / "shards").glob("*.tar")} == {
            p.name: p.read_bytes() for p in (built["out"] / "shards").glob("*.tar")}
    rerun = run_cli("takedown", str(out), *built["args"], check=True)
    assert "completed the interrupted takedown takedown-v2" in rerun.stdout
    # it once ended "nothing left to remove ...; nothing changed", just after changing it
    assert "nothing changed" not in rerun.stdout
    assert rerun.stdout.splitlines()[-1].startswith("takedown: takedown-v2, completed above, "
                                                    "removed it; nothing left to remove in ")
    assert not (out / ".takedown.json").exists()
    assert not list((out / "shards").glob("*.takedown"))
    assert state(out) == state(built["reference"])
    proc = run_cli("verify", str(out))
    assert proc.returncode == 0, proc.stdout


def test_a_takedown_without_selectors_completes_an_interrupted_one(built: dict,
                                                                   tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(built["out"], out)
    crashed = run_cli("takedown", str(out), *built["args"],
                      env={"CLEANSET_CRASH_AT": "takedown_renamed:1"})
    assert crashed.returncode == -9
    verify = run_cli("verify", str(out))
    assert verify.returncode == 1
    assert f"finish the interrupted takedown first (`cleanset takedown {out}`)" in verify.stdout
    assert "cleanset build" not in verify.stdout  # a build is not what finishes it
    done = run_cli("takedown", str(out), check=True)
    assert "completed the interrupted takedown takedown-v2" in done.stdout
    assert state(out) == state(built["reference"])


def test_a_build_that_finishes_an_interrupted_takedown_says_so(built: dict,
                                                               tmp_path: Path) -> None:
    # A build finished the takedown before it started, in silence: its summary showed fewer
    # samples than the user last saw, and nothing said a takedown had been applied.
    out = tmp_path / "out"
    shutil.copytree(built["out"], out)
    crashed = run_cli("takedown", str(out), *built["args"],
                      env={"CLEANSET_CRASH_AT": "takedown_renamed:1"})
    assert crashed.returncode == -9
    build = run_cli("build", str(built["recipe"]), "--out", str(out), "--no-progress",
                    check=True)
    assert "finished the interrupted takedown takedown-v2 first" in build.stdout
    assert state(out) == state(built["reference"])
    again = run_cli("build", str(built["recipe"]), "--out", str(out), "--no-progress",
                    check=True)
    assert "interrupted takedown" not in again.stdout


def test_ctrl_c_as_the_journal_is_put_in_place_leaves_nothing_and_the_rerun_completes(
        built: dict, tmp_path: Path) -> None:
    """A Ctrl-C (or a full disk) while the journal was written left .takedown.json.tmp beside
    the dataset for good: nothing had changed yet, but no build or verify looked at it."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    out = tmp_path / "out"
    shutil.copytree(built["out"], out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # A real SIGINT, sent by the process to itself as it asks for the journal's rename.
    code = ("import os, signal, sys\n"
            "def hook(event, args):\n"
            "    if event == 'os.rename' and os.fspath(args[0]).endswith('.takedown.json.tmp'):\n"
            "        os.kill(os.getpid(), signal.SIGINT)\n"
            "sys.addaudithook(hook)\n"
            "from builder.cli import main\n"
            f"sys.exit(main(['takedown', {str(out)!r}, *{built['args']!r}]))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)

    assert proc.returncode == 130, proc.stderr
    assert not (out / ".takedown.json.tmp").exists() and not (out / ".takedown.json").exists()
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    run_cli("takedown", str(out), *built["args"], check=True)
    assert state(out) == state(built["reference"])


def test_a_takedown_between_a_stopped_first_build_and_its_resume_is_recorded_in_the_ledger(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    """A first build stopped (kill -9 after its first commit), a takedown, then the build
    resumed: the takedown rewrote the shards but found "its" version 1 (the build's, recorded
    as it planned) already there and skipped its ledger commit, so the ledger, the manifest
    and the papers still listed the removed samples, verify failed on every rewritten shard,
    and a second takedown refused those shards as edited outside cleanset."""
    table = write_jsonl(tmp_path / "urls.jsonl", rows_for(httpserver))
    recipe, out = recipe_for(tmp_path, table), tmp_path / "out"
    env = {"CLEANSET_COMMIT_EVERY": "6", "CLEANSET_CRASH_AT": "after_commit:1"}
    killed = run_cli("build", str(recipe), "--out", str(out), "--no-progress", env=env)
    assert killed.returncode != 0
    committed = sorted(pq.read_table(out / "manifest.parquet").column("key").to_pylist()
                       if (out / "manifest.parquet").exists() else [])
    taken = "0000000001"
    run_cli("takedown", str(out), "--key", taken, "--reason", "r", check=True)
    assert run_cli("verify", str(out)).stdout.count("PROBLEM") == 1  # only: build unfinished
    assert taken not in pq.read_table(out / "manifest.parquet").column("key").to_pylist()
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    verified = run_cli("verify", str(out))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    keys = pq.read_table(out / "manifest.parquet").column("key").to_pylist()
    assert taken not in keys and len(keys) == 11, (committed, keys)
    diff = run_cli("diff", str(out), "--from", "1", "--to", "2", check=True).stdout
    assert f"- {taken}" in diff


@pytest.mark.parametrize("source", ["table", "folder"])
def test_a_takedown_in_the_shard_a_stopped_build_left_open_says_resume_it(
        httpserver: HTTPServer, tmp_path: Path, source: str) -> None:
    """A sample in the shard a stopped build was still writing. Written in place (a table's
    build), the takedown rewrote it keeping the members past the build's last commit as if
    committed: after the resume, verify found a sample in no ledger row. Written as
    NNNNNN.tar.tmp (a folder's build), it said the shard "is missing ... changed outside
    cleanset: restore the shards from a copy". Both are refused: resume the build first."""
    from tests.test_output_safety import add_images

    if source == "table":
        recipe = recipe_for(tmp_path, write_jsonl(tmp_path / "urls.jsonl",
                                                  rows_for(httpserver)))
    else:
        add_images(tmp_path / "images", range(12))
        recipe = write_recipe(tmp_path / "folder.toml", f"""
[dataset]
name = "open-shard"
samples_per_shard = 3
[policy]
use = "commercial"
[[sources]]
kind = "folder"
path = "images"
license = "{CC0}"
""")
    out = tmp_path / "out"
    env = {"CLEANSET_COMMIT_EVERY": "5", "CLEANSET_CRASH_AT": "decide:7"}
    assert run_cli("build", str(recipe), "--out", str(out), "--no-progress",
                   env=env).returncode != 0
    shards = {p.name: p.read_bytes() for p in (out / "shards").iterdir()}
    assert {"000001.tar", "000001.tar.tmp"} & set(shards)  # keys 3 and 4 committed in it
    refused = run_cli("takedown", str(out), "--key", "0000000003", "--reason", "r")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "000001.tar is still being written by a build that was stopped" in refused.stderr
    assert "Resume the build first" in refused.stderr and "restore" not in refused.stderr
    assert {p.name: p.read_bytes() for p in (out / "shards").iterdir()} == shards
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    run_cli("takedown", str(out), "--key", "0000000003", "--reason", "r", check=True)
    verified = run_cli("verify", str(out))
    assert verified.returncode == 0, verified.stdout
