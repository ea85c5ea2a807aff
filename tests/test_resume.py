"""Crash safety: a real kill -9 at any point, then the same command, gives the same dataset."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.conftest import (
    FIXED_EPOCH,
    REPO,
    make_image,
    run_cli,
    serve_no_site_policies,
    write_jsonl,
    write_recipe,
)

CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"
N = 40


@pytest.fixture
def recipe(httpserver: HTTPServer, tmp_path: Path) -> Path:
    serve_no_site_policies(httpserver)
    rows = []
    for i in range(N):
        body = make_image(i % 35)  # five exact duplicates among forty
        httpserver.expect_request(f"/{i}.jpg").respond_with_data(body, content_type="image/jpeg")
        lic = CC0 if i % 7 else "https://creativecommons.org/licenses/by-nd/4.0/"
        rows.append({"id": f"img{i}", "url": httpserver.url_for(f"/{i}.jpg"), "license": lic})
    table = write_jsonl(tmp_path / "urls.jsonl", rows)
    return write_recipe(tmp_path / "recipe.toml", f"""
[dataset]
name = "crash-test"
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
""")


def build_args(recipe: Path, out: Path) -> list[str]:
    # small commit windows, so crashes land between many different commits
    return ["build", str(recipe), "--out", str(out), "--no-progress"]


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "shards").iterdir())}


def evidence_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "evidence").iterdir())}


def assert_same_dataset(out: Path, reference: Path) -> None:
    assert shard_bytes(out) == shard_bytes(reference)
    # The evidence archive too: no record lost or doubled by the crash (#19).
    assert evidence_bytes(out) == evidence_bytes(reference)
    cands = pq.read_table(out / "candidates.parquet").to_pylist()
    assert len(cands) == N
    assert len({(c["build"], c["seq"]) for c in cands}) == N
    accepted = [c for c in cands if c["status"] == "accepted"]
    assert len(pq.read_table(out / "manifest.parquet")) == len(accepted)
    proc = run_cli("verify", str(out))
    assert proc.returncode == 0, proc.stdout


@pytest.fixture
def reference(recipe: Path, tmp_path: Path) -> Path:
    out = tmp_path / "reference"
    run_cli(*build_args(recipe, out), env={"CLEANSET_COMMIT_EVERY": "3"}, check=True)
    return out


@pytest.mark.parametrize("point", [
    "decide:1", "decide:7", "decide:23", "after_shard_sync:2", "after_commit:3",
    "before_shard_rename:2", "after_shard_rename:1", "after_shard_rename:3",
    "before_finish_commit:1",
])
def test_kill_9_at_a_crash_point_then_resume_gives_identical_shards(
        recipe: Path, reference: Path, tmp_path: Path, point: str) -> None:
    out = tmp_path / "crashed"
    env = {"CLEANSET_COMMIT_EVERY": "3"}
    crashed = run_cli(*build_args(recipe, out), env={**env, "CLEANSET_CRASH_AT": point})
    assert crashed.returncode == -signal.SIGKILL
    run_cli(*build_args(recipe, out), env=env, check=True)
    assert_same_dataset(out, reference)


def test_external_kill_9_mid_build_then_resume(httpserver: HTTPServer, recipe: Path,
                                               reference: Path, tmp_path: Path) -> None:
    """The test itself kills the build once the server has answered half the images."""
    answered = 0
    halfway = threading.Event()
    hold = threading.Event()
    lock = threading.Lock()

    def slow_half(request: Request) -> Response:
        nonlocal answered
        with lock:
            answered += 1
            if answered >= N // 2:
                halfway.set()
        if answered > N // 2:
            hold.wait(timeout=30)  # park the rest until the process is dead
        i = int(request.path.strip("/").split(".")[0])
        return Response(make_image(i % 35), content_type="image/jpeg")

    httpserver.clear()
    serve_no_site_policies(httpserver)
    for i in range(N):
        httpserver.expect_request(f"/{i}.jpg").respond_with_handler(slow_half)
    out = tmp_path / "killed"
    env = {**os.environ, "SOURCE_DATE_EPOCH": FIXED_EPOCH, "PYTHONPATH": str(REPO),
           "CLEANSET_COMMIT_EVERY": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "builder", *build_args(recipe, out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert halfway.wait(timeout=120)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        hold.set()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    ledger_rows = 0
    if (out / "ledger.sqlite").exists():
        import sqlite3
        with sqlite3.connect(out / "ledger.sqlite") as db:
            ledger_rows = db.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
    assert ledger_rows < N
    run_cli(*build_args(recipe, out), env={"CLEANSET_COMMIT_EVERY": "3"}, check=True)
    assert_same_dataset(out, reference)


def test_a_second_build_on_the_same_dir_refuses_while_the_first_holds_the_lock(
        recipe: Path, tmp_path: Path) -> None:
    from builder.errors import BuildLockedError
    from builder.lock import OutputLock

    out = tmp_path / "locked"
    out.mkdir()
    with OutputLock(out):
        proc = run_cli(*build_args(recipe, out))
        assert proc.returncode == 1
        assert "another cleanset process" in proc.stderr
        assert "Traceback" not in proc.stderr
        with pytest.raises(BuildLockedError), OutputLock(out):
            pass


def test_a_worker_process_killed_mid_build_stops_it_with_one_line_then_it_resumes(
        recipe: Path, reference: Path, tmp_path: Path) -> None:
    """The kernel's OOM killer ends a worker process, not the build: the build stopped
    with multiprocessing's BrokenProcessPool traceback. Now one line says what happened and
    that the same command resumes, and it does, to the uninterrupted dataset."""
    out = tmp_path / "worker-killed"
    args = [*build_args(recipe, out), "--executor", "processes"]
    env = {"CLEANSET_COMMIT_EVERY": "3"}
    stopped = run_cli(*args, env={**env, "CLEANSET_CRASH_AT": "worker_batch:1"})
    assert stopped.returncode == 1, stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert "a worker process of this build ended abruptly" in stopped.stderr
    assert "run the same command again to resume" in stopped.stderr
    run_cli(*args, env=env, check=True)
    assert_same_dataset(out, reference)
