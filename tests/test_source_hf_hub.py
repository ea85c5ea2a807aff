"""The `hf` source streaming a hub dataset from a local hub (tests/hubserver.py) that fails
part-way: the build stops as for any API, exit 1, and resumes where it stopped."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from tests.apihelpers import serve_images
from tests.conftest import run_cli, write_recipe
from tests.hubserver import Hub, hub_server, parquet

pytest.importorskip("datasets")

CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"
FILES = ("data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet")


def hub_env(hub: Hub, tmp_path: Path) -> dict[str, str]:
    return {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf-home"),
            "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1"}


def test_a_hub_file_failing_mid_stream_stops_the_build_as_an_api_does_and_the_rerun_resumes(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    """The hub answering 503 for the dataset's second file (after huggingface_hub's own
    retries) printed "cleanset: fatal: Server error '503 ...'" over three lines, naming no
    source, told the user to "fix the cause", and the rows of the first file, handed out
    and decided, were thrown away. Now it is the source's failure (exit 1, the cause, the
    source and the dataset once) and those rows are kept; the rerun reads on from there."""
    urls = serve_images(httpserver, 4)
    rows = [{"id": f"pd-{i}", "url": url, "license": CC0} for i, url in enumerate(urls)]
    hub = Hub("someone/pd", {FILES[0]: parquet(rows[:2]), FILES[1]: parquet(rows[2:])},
              busy={FILES[1]})
    recipe = write_recipe(tmp_path / "recipe.toml", """
[dataset]
name = "hub-test"
[[sources]]
kind = "hf"
dataset = "someone/pd"
[fetch]
allow_private_addresses = true
retries = 0
""")
    out = tmp_path / "out"
    with hub_server(hub):
        env = hub_env(hub, tmp_path)
        stopped = run_cli("build", str(recipe), "--out", str(out), "--no-progress", env=env)
        assert stopped.returncode == 1, stderr_of(stopped)
        error = [line for line in stopped.stderr.splitlines()
                 if line.startswith("cleanset: ")]
        assert len(error) == 1 and error[0].startswith("cleanset: error: "), stopped.stderr
        assert "503" in error[0] and "source 'hf'" in error[0], stopped.stderr
        assert f"{hub.endpoint}/datasets/someone/pd" in stopped.stderr
        assert "fatal" not in stopped.stderr and "Traceback" not in stopped.stderr
        assert "run the same command again to resume" in stopped.stderr
        assert decided(out) == ["hf:pd-0", "hf:pd-1"]

        hub.busy.clear()
        rerun = run_cli("build", str(recipe), "--out", str(out), "--no-progress", env=env)
        assert rerun.returncode == 0, stderr_of(rerun)
    assert decided(out) == [f"hf:pd-{i}" for i in range(4)]
    assert "2 accepted" in rerun.stdout
    verify = run_cli("verify", str(out))
    assert verify.returncode == 0, verify.stdout + verify.stderr


def decided(out: Path) -> list[str]:
    db = sqlite3.connect(out / "ledger.sqlite")
    try:
        return [r[0] for r in db.execute("SELECT candidate_id FROM candidates ORDER BY seq")]
    finally:
        db.close()


def stderr_of(proc: object) -> str:
    return str(getattr(proc, "stderr", ""))[-3000:]
