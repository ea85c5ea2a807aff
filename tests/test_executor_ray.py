"""The Ray executor: same dataset as the local executors, and no decision lost or doubled when
a Ray worker or the driver is killed. Real Ray clusters on this machine, 2 CPUs each."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from builder.shards import read_shard_members
from tests.conftest import (
    REPO,
    make_image,
    run_cli,
    serve_no_site_policies,
    write_jsonl,
    write_recipe,
)

ray = pytest.importorskip("ray")

CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"
ND4 = "https://creativecommons.org/licenses/by-nd/4.0/"
N = 48
# A head started by `ray start` uses Ray's token authentication; a driver given its address
# must opt in (the token itself is in ~/.ray/auth_token, shared by this machine's user).
TOKEN_AUTH = {"RAY_AUTH_MODE": "token"}
HELD = 29  # the image whose request the worker-kill test holds until the worker is dead


def body_for(i: int) -> bytes:
    if i % 11 == 10:
        return make_image(i - 1, (192, 128))  # the previous image, twice the size: near dup
    return make_image(i % 40)  # 40..47 repeat 0..7 byte for byte: exact dups


def rows_for(httpserver: HTTPServer) -> list[dict]:
    return [{"id": f"img{i}", "url": httpserver.url_for(f"/{i}.jpg"),
             "license": ND4 if i % 9 == 4 else CC0, "caption": f"picture {i}"}
            for i in range(N)]


@pytest.fixture
def recipe(httpserver: HTTPServer, tmp_path: Path) -> Path:
    serve_no_site_policies(httpserver)
    for i in range(N):
        if i != HELD:
            httpserver.expect_request(f"/{i}.jpg").respond_with_data(
                body_for(i), content_type="image/jpeg")
    table = write_jsonl(tmp_path / "urls.jsonl", rows_for(httpserver))
    return write_recipe(tmp_path / "recipe.toml", f"""
[dataset]
name = "ray-test"
samples_per_shard = 4
[policy]
use = "commercial"
[[sources]]
kind = "table"
path = "{table.name}"
[fetch]
allow_private_addresses = true
retries = 0
workers = 3
[executor]
batch_size = 5
""")


@pytest.fixture
def held_image(httpserver: HTTPServer) -> Iterator[dict]:
    """Image HELD's request signals `reached`, then waits for `release` (only the first time)."""
    state = {"reached": threading.Event(), "release": threading.Event(), "hits": 0}

    def handler(request: Request) -> Response:
        state["hits"] += 1
        if state["hits"] == 1:
            state["reached"].set()
            state["release"].wait(timeout=120)
        return Response(body_for(HELD), content_type="image/jpeg")

    httpserver.expect_request(f"/{HELD}.jpg").respond_with_handler(handler)
    yield state
    state["release"].set()


@pytest.fixture
def served(held_image: dict) -> None:
    held_image["release"].set()  # builds that need no pause: answer HELD at once


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[str, int]]:
    """A Ray head on this machine (2 CPUs), as `ray start` makes on a real cluster's head.

    Its workers import the checkout through PYTHONPATH, as an installed cleanset would be.
    """
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("SOURCE_DATE_EPOCH", None)  # the driver must forward it to the workers
    proc = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--port=0",
         "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats", "--block"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    address = None
    lines = []
    for line in proc.stdout:  # the head prints how to join it once it is up
        lines.append(line)
        if "ray start --address=" in line:
            address = line.split("--address=", 1)[1].strip().strip("'\"")
            break
    assert address, "".join(lines)
    drain = threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True)
    drain.start()
    yield address, proc.pid
    proc.send_signal(signal.SIGTERM)  # `ray start --block` stops its whole node on SIGTERM
    proc.wait(timeout=120)


def build(recipe: Path, out: Path, *extra: str, env: dict[str, str] | None = None
          ) -> subprocess.CompletedProcess[str]:
    return run_cli("build", str(recipe), "--out", str(out), "--no-progress", *extra,
                   env={"CLEANSET_COMMIT_EVERY": "3", **(env or {})})


def on_cluster(cluster: tuple[str, int]) -> tuple[str, ...]:
    """The arguments of a build on the module's Ray head: a local Ray started per build
    (a few seconds of start-up each) is tested once, by the first test."""
    return ("--executor", "ray", "--ray-address", cluster[0])


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "shards").iterdir())}


def decisions(out: Path) -> list[tuple]:
    return [(c["seq"], c["candidate_id"], c["status"], c["reason"], c["key"], c["license"])
            for c in pq.read_table(out / "candidates.parquet").to_pylist()]


def assert_same_dataset(out: Path, reference: Path) -> None:
    assert shard_bytes(out) == shard_bytes(reference)
    assert pq.read_table(out / "manifest.parquet").to_pylist() == \
        pq.read_table(reference / "manifest.parquet").to_pylist()
    assert decisions(out) == decisions(reference)
    assert len(decisions(out)) == N
    proc = run_cli("verify", str(out))
    assert proc.returncode == 0, proc.stdout


@pytest.fixture
def reference(recipe: Path, served: None, tmp_path: Path) -> Path:
    out = tmp_path / "threads"
    proc = build(recipe, out)
    assert proc.returncode == 0, proc.stderr
    reasons = {reason for _, _, _, reason, _, _ in decisions(out)}
    # the corpus exercises the licence gate and both kinds of dedup, or the test proves little
    assert {"duplicate_exact", "duplicate_near", "license_not_allowed"} <= reasons
    return out


def ray_processes_under(root: int, title: str) -> list[int]:
    """Pids of processes named `title` descending from `root` (our cluster, nobody else's)."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                names[int(entry)] = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])

    def descends(pid: int) -> bool:
        while pid > 1:
            if pid == root:
                return True
            pid = parents.get(pid, 0)
        return False

    return [pid for pid, name in names.items() if name.startswith(title) and descends(pid)]


def test_a_local_ray_gives_the_same_shards_manifest_and_decisions_as_threads(
        recipe: Path, reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "ray"
    proc = build(recipe, out, "--executor", "ray")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"stages ran on a local Ray with \d+ CPUs, in \d+ batches", proc.stdout)
    assert_same_dataset(out, reference)


def test_a_ray_cluster_gives_the_same_dataset_with_timestamps_forwarded_to_its_workers(
        recipe: Path, reference: Path, cluster: tuple[str, int], tmp_path: Path) -> None:
    address, _ = cluster
    out = tmp_path / "cluster"
    proc = build(recipe, out, "--executor", "ray", "--ray-address", address, env=TOKEN_AUTH)
    assert proc.returncode == 0, proc.stderr
    assert_same_dataset(out, reference)


@pytest.mark.parametrize("writers", [(), ("--write-shards", "workers")],
                         ids=["driver-writes", "workers-write"])
def test_a_ray_worker_killed_mid_batch_is_retried_and_the_dataset_is_unchanged(
        recipe: Path, held_image: dict, cluster: tuple[str, int], tmp_path: Path,
        writers: tuple[str, ...]) -> None:
    address, head = cluster
    out = tmp_path / "killed-worker"
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000", "PYTHONPATH": str(REPO),
           "CLEANSET_COMMIT_EVERY": "3", **TOKEN_AUTH}
    driver = subprocess.Popen(
        [sys.executable, "-m", "builder", "build", str(recipe), "--out", str(out),
         "--no-progress", "--executor", "ray", "--ray-address", address, *writers],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert held_image["reached"].wait(timeout=120), "the build never fetched the held image"
        busy = ray_processes_under(head, "ray::_run_batch")
        assert busy, "no Ray worker is running a batch while one is held"
        for pid in busy:  # the worker waiting for HELD is among them
            os.kill(pid, signal.SIGKILL)
        held_image["release"].set()
        stdout, stderr = driver.communicate(timeout=240)
    finally:
        held_image["release"].set()
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, stderr
    assert held_image["hits"] >= 2  # the dead worker's batch really ran again elsewhere
    reference = tmp_path / "threads"
    assert build(recipe, reference).returncode == 0
    assert_same_dataset(out, reference)


def test_sigterm_to_a_ray_driver_stops_it_as_ctrl_c_does_and_the_same_command_resumes(
        recipe: Path, held_image: dict, cluster: tuple[str, int], tmp_path: Path) -> None:
    """`kill PID` (a scheduler stopping the job) reached a Ray driver through the handler
    ray.init puts over cleanset's: a native stack dump ("*** SIGTERM received ... PC: @ ...
    fsync"), exit 15, none of the clean-up. It stops as a local build does now."""
    out = tmp_path / "terminated"
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000", "PYTHONPATH": str(REPO),
           "CLEANSET_COMMIT_EVERY": "3", **TOKEN_AUTH}
    driver = subprocess.Popen(
        [sys.executable, "-m", "builder", "build", str(recipe), "--out", str(out),
         "--no-progress", *on_cluster(cluster)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert held_image["reached"].wait(timeout=120), "the build never fetched the held image"
        driver.send_signal(signal.SIGTERM)
        _, stderr = driver.communicate(timeout=120)
    finally:
        held_image["release"].set()
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 143, stderr
    assert "cleanset: terminated (SIGTERM); run the same command again to resume." in stderr
    assert "SIGTERM received" not in stderr and "Traceback" not in stderr, stderr
    resumed = build(recipe, out, *on_cluster(cluster), env=TOKEN_AUTH)
    assert resumed.returncode == 0, resumed.stderr
    reference = tmp_path / "threads"
    assert build(recipe, reference).returncode == 0
    assert_same_dataset(out, reference)


def test_a_driver_killed_mid_build_resumes_on_ray_with_nothing_lost_or_doubled(
        recipe: Path, reference: Path, cluster: tuple[str, int], tmp_path: Path) -> None:
    out = tmp_path / "killed-driver"
    args = on_cluster(cluster)
    crashed = build(recipe, out, *args, env={"CLEANSET_CRASH_AT": "decide:15", **TOKEN_AUTH})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    resumed = build(recipe, out, *args, env=TOKEN_AUTH)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_dataset(out, reference)


def test_the_near_index_split_over_ray_actors_gives_the_same_dataset(
        recipe: Path, reference: Path, cluster: tuple[str, int], tmp_path: Path) -> None:
    split = recipe.with_name("split-index.toml")
    split.write_text(recipe.read_text().replace("batch_size = 5", "batch_size = 5\nindex_parts = 3"))
    out = tmp_path / "split"
    proc = build(split, out, *on_cluster(cluster), env=TOKEN_AUTH)
    assert proc.returncode == 0, proc.stderr
    assert "dedup indexes split over 3 Ray actors (0 parts rebuilt" in proc.stdout
    assert_same_dataset_but_the_recipe(out, reference)


def assert_same_dataset_but_the_recipe(out: Path, reference: Path) -> None:
    """`out`, built from the reference's recipe with a line added (index_parts), is the
    reference's dataset: the shards differ only where provenance names the recipe file."""
    assert pq.read_table(out / "manifest.parquet").to_pylist() == \
        pq.read_table(reference / "manifest.parquet").to_pylist()
    assert decisions(out) == decisions(reference)
    assert len(decisions(out)) == N
    ours, theirs = samples(out), samples(reference)
    assert ours.keys() == theirs.keys() and len(ours) > 20
    for key, members in ours.items():
        for ext, data in members.items():
            if ext == "json":
                mine, other = json.loads(data), json.loads(theirs[key][ext])
                assert mine["build"].pop("recipe_sha256") != other["build"].pop("recipe_sha256")
                assert mine == other
            else:
                assert data == theirs[key][ext]
    assert run_cli("verify", str(out)).returncode == 0


def samples(out: Path) -> dict[str, dict[str, bytes]]:
    found: dict[str, dict[str, bytes]] = {}
    for shard in sorted((out / "shards").glob("*.tar")):
        for name, data in read_shard_members(shard):
            key, ext = name.split(".", 1)
            found.setdefault(key, {})[ext] = data
    return found


def test_a_split_index_without_ray_is_refused_naming_the_key(recipe: Path, tmp_path: Path
                                                             ) -> None:
    split = recipe.with_name("split-index.toml")
    split.write_text(recipe.read_text().replace("batch_size = 5", "batch_size = 5\nindex_parts = 2"))
    proc = build(split, tmp_path / "out", "--executor", "threads")
    assert proc.returncode == 2
    assert "index_parts = 2" in proc.stderr and 'kind = "ray"' in proc.stderr


def test_a_driver_killed_with_the_index_split_over_actors_resumes_with_the_same_dataset(
        recipe: Path, reference: Path, cluster: tuple[str, int], tmp_path: Path) -> None:
    split = recipe.with_name("split-index.toml")
    split.write_text(recipe.read_text().replace("batch_size = 5", "batch_size = 5\nindex_parts = 2"))
    out = tmp_path / "killed-driver-split"
    crashed = build(split, out, *on_cluster(cluster),
                    env={"CLEANSET_CRASH_AT": "decide:30", **TOKEN_AUTH})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    # the parts, owned by the dead driver, died with it (the cluster lives on); the resumed
    # build rebuilds them from the ledger
    resumed = build(split, out, *on_cluster(cluster), env=TOKEN_AUTH)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_dataset_but_the_recipe(out, reference)


def test_shards_written_by_ray_workers_are_the_driver_written_shards_byte_for_byte(
        recipe: Path, reference: Path, cluster: tuple[str, int], tmp_path: Path) -> None:
    out = tmp_path / "worker-shards"
    proc = build(recipe, out, *on_cluster(cluster), "--write-shards", "workers", env=TOKEN_AUTH)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"\b(\d+) shards written by Ray workers", proc.stdout)
    assert not list((out / "shards").glob("*.tmp"))
    assert_same_dataset(out, reference)


def test_a_driver_killed_while_workers_write_shards_rewinds_and_resumes_identically(
        recipe: Path, reference: Path, cluster: tuple[str, int], tmp_path: Path) -> None:
    out = tmp_path / "worker-shards-killed"
    args = (*on_cluster(cluster), "--write-shards", "workers")
    crashed = build(recipe, out, *args, env={"CLEANSET_CRASH_AT": "decide:30", **TOKEN_AUTH})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    with sqlite3.connect(out / "ledger.sqlite") as db:
        unwritten = db.execute(
            "SELECT COUNT(*) FROM meta WHERE key LIKE 'unwritten_shard:%'").fetchone()[0]
        committed = db.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
        first = min(int(k.rsplit(":", 1)[1]) for (k,) in db.execute(
            "SELECT key FROM meta WHERE key LIKE 'unwritten_shard:%'"))
    # decisions were committed whose shard no worker had written: the resume must rewind them
    assert unwritten >= 1 and committed > 0
    # a user's copy named after that shard: the rewind's glob of the name deleted it too
    mine = out / "shards" / f"{first:06d}.tar.bak"
    mine.write_bytes(b"my own copy")
    resumed = build(recipe, out, *args, env=TOKEN_AUTH)
    assert resumed.returncode == 0, resumed.stderr
    assert mine.read_bytes() == b"my own copy"
    mine.unlink()
    assert_same_dataset(out, reference)


def test_worker_written_shards_without_ray_are_refused(recipe: Path, tmp_path: Path) -> None:
    proc = build(recipe, tmp_path / "out", "--executor", "threads", "--write-shards", "workers")
    assert proc.returncode == 2
    assert "needs the Ray executor" in proc.stderr
