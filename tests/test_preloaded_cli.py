"""The suite's preloaded CLI (tests/preloaded_cli.py) gives what a fresh `python -m builder`
gives: exit status, stdout and stderr, working directory, environment, a kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import PRELOADED, REPO, cli_env, run_cli

EXAMPLE = REPO / "examples" / "offline" / "recipe.toml"
pytestmark = pytest.mark.skipif(os.environ.get("CLEANSET_TEST_FRESH_PROCESSES") == "1",
                                reason="CLEANSET_TEST_FRESH_PROCESSES=1: no preloaded CLI")


def fresh(*args: str, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "builder", *args], capture_output=True,
                          text=True, env={**cli_env(), **(env or {})}, cwd=cwd, timeout=300)


def preloaded(*args: str, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full = {**cli_env(), **(env or {})}
    assert PRELOADED.usable(full)
    proc = PRELOADED.run(list(args), full, cwd, timeout=300)
    assert proc is not None, "the preloaded CLI server did not start"
    return proc


def same(a: subprocess.CompletedProcess[str], b: subprocess.CompletedProcess[str]) -> None:
    assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr)


def test_a_command_from_the_server_says_and_exits_as_a_fresh_process(tmp_path: Path) -> None:
    out = tmp_path / "out"
    built = preloaded("build", str(EXAMPLE), "--out", str(out), "--no-progress")
    assert built.returncode == 0, built.stderr
    assert "7 accepted" in built.stdout
    for args in (["verify", str(out)], ["lookup", str(out), "--json",
                                        str(next(REPO.glob("examples/offline/images/*")))],
                 ["evidence", str(out), "0000000000"], ["licenses"],
                 ["verify", str(tmp_path / "nope")], ["build", "--no-such-flag"],
                 ["--version"]):
        same(preloaded(*args), fresh(*args))
    assert preloaded("verify", str(tmp_path / "nope")).returncode == 2


def test_the_command_runs_in_the_callers_directory_with_its_environment(
        tmp_path: Path) -> None:
    """A relative --out lands under cwd; SOURCE_DATE_EPOCH is this command's, not the
    server's."""
    built = preloaded("build", str(EXAMPLE), "--out", "relative", "--no-progress",
                      env={"SOURCE_DATE_EPOCH": "1600000000"}, cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    shard = min((tmp_path / "relative" / "shards").glob("*.tar"))
    with tarfile.open(shard) as tar:
        stamps = {json.loads(tar.extractfile(member).read())["retrieved_at"]  # type: ignore[union-attr]
                  for member in tar.getmembers() if member.name.endswith(".json")}
    assert stamps == {"2020-09-13T12:26:40Z"}
    assert run_cli("verify", "relative", cwd=tmp_path).returncode == 0


def test_a_crash_point_kills_the_command_not_the_server(tmp_path: Path) -> None:
    killed = preloaded("build", str(EXAMPLE), "--out", str(tmp_path / "out"), "--no-progress",
                       env={"CLEANSET_CRASH_AT": "decide:3"})
    assert killed.returncode == -signal.SIGKILL
    finished = preloaded("build", str(EXAMPLE), "--out", str(tmp_path / "out"), "--no-progress")
    assert finished.returncode == 0, finished.stderr


def test_what_an_imported_process_cannot_take_runs_as_a_fresh_process() -> None:
    assert PRELOADED.usable(cli_env())
    assert PRELOADED.usable({**cli_env(), "CLEANSET_COMMIT_EVERY": "2"})
    for name in ("PYTHONWARNINGS", "LC_ALL", "MALLOC_ARENA_MAX", "HF_HUB_OFFLINE"):
        assert not PRELOADED.usable({**cli_env(), name: "x"}), name
