"""Hostile and broken servers, end to end through `cleanset build`.

tests/test_fetch.py pins each fault at the Fetcher; here the whole build meets them at once,
from a raw-socket server (tests/faultserver.py), and must finish with every candidate
accounted for under the right reason, a valid dataset, and bounded memory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests import faultserver as fs
from tests.conftest import FIXED_EPOCH, REPO, make_image, run_cli, write_jsonl, write_recipe
from tests.test_build import bomb_png

CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"


@pytest.fixture
def server() -> Iterator[fs.FaultServer]:
    with fs.fault_server() as srv:
        yield srv


def hostile_routes(srv: fs.FaultServer) -> dict[str, tuple[str, str]]:
    """candidate id -> (path, expected outcome: 'accepted' or a rejection reason)."""
    img = {i: make_image(100 + i, (64, 48)) for i in range(10)}
    private = srv.url("/ok0.jpg", host="127.0.0.1")  # the same server, by its loopback address
    table: dict[str, tuple[fs.Handler | list[fs.Handler], str]] = {
        "ok0": (fs.ok(img[0]), "accepted"),
        "ok1": (fs.ok(img[1]), "accepted"),
        "slow": (fs.silent(30), "timeout"),
        "drip": (fs.drip(), "timeout"),
        "reset": (fs.reset(), "connection_error"),
        "reset-then-ok": ([fs.reset(), fs.ok(img[2])], "accepted"),
        "reset-mid-body": (fs.reset_mid_body(img[3]), "connection_error"),
        "truncated": (fs.declared_length(img[4], len(img[4]) + 5000), "connection_error"),
        # was not_image: the cut read as an empty body, refused for good, never retried
        "cut-in-headers": (fs.cut_in_headers(), "connection_error"),
        "cut-in-headers-then-ok": ([fs.cut_in_headers(), fs.ok(img[8])], "accepted"),
        "length-too-short": (fs.declared_length(img[5], len(img[5]) // 2), "corrupt_image"),
        # was corrupt_image, for good: a body that ends at the connection's close, cut short
        "until-close-cut": (fs.until_close(img[5], keep=0.6), "connection_error"),
        "until-close-whole": (fs.until_close(img[9]), "accepted"),
        "429-then-ok": ([fs.status(429, {"Retry-After": "1"}), fs.ok(img[6])], "accepted"),
        "429-for-an-hour": (fs.status(429, {"Retry-After": "3600"}), "http_unavailable"),
        "503-burst-then-ok": ([fs.status(503), fs.status(503), fs.ok(img[7])], "accepted"),
        "503-forever": (fs.status(503), "http_unavailable"),
        "404": (fs.status(404), "http_error"),
        "loop": (fs.redirect("/loop-b"), "http_error"),
        "to-private": (fs.redirect(private), "address_refused"),
        "to-metadata": (fs.redirect("http://169.254.169.254/latest/meta-data/"),
                        "address_refused"),
        "to-file": (fs.redirect("file:///etc/passwd"), "http_error"),
        "html": (fs.ok(b"<!doctype html><html><body>hi</body></html>"), "not_image"),
        "empty": (fs.ok(b""), "not_image"),
        "endless": (fs.endless(), "too_large"),
        "declared-huge": (fs.declared_length(b"\xff\xd8\xff", 50_000_000), "too_large"),
        "bomb": (fs.ok(bomb_png(), "image/png"), "decompression_bomb"),
        "dup-of-ok0": (fs.ok(img[0]), "duplicate_exact"),
    }
    srv.route("/loop-b", fs.redirect("/loop.jpg"))
    out: dict[str, tuple[str, str]] = {}
    for cid, (handlers, expected) in table.items():
        path = f"/{cid}.jpg"
        srv.route(path, *(handlers if isinstance(handlers, list) else [handlers]))
        out[cid] = (path, expected)
    return out


def hostile_recipe(tmp_path: Path, srv: fs.FaultServer, rows: list[dict], **fetch: object) -> Path:
    table = write_jsonl(tmp_path / "urls.jsonl", rows)
    settings = {"timeout_s": 0.5, "retries": 2, "backoff_s": 0.01, "max_retry_after_s": 2,
                "max_bytes": 1_000_000, "workers": 8, **fetch}
    lines = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in settings.items())
    return write_recipe(tmp_path / "recipe.toml", f"""
[dataset]
name = "hostile"
samples_per_shard = 2
[policy]
use = "commercial"
[[sources]]
kind = "table"
path = "{table.name}"
[fetch]
# The server is on loopback: only the name `localhost` is trusted, so a redirect to the
# same server by IP literal, or to any other private address, is still refused.
trusted_hosts = ["localhost"]
{lines}
[image]
max_pixels = 40_000_000
""")


def test_every_hostile_response_ends_with_the_right_reason_and_the_build_finishes(
        server: fs.FaultServer, tmp_path: Path) -> None:
    routes = hostile_routes(server)
    rows = [{"id": cid, "url": server.url(path, host="localhost"), "license": CC0}
            for cid, (path, _) in routes.items()]
    recipe = hostile_recipe(tmp_path, server, rows)
    out = tmp_path / "out"
    proc = run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    assert "Traceback" not in proc.stderr

    cands = {c["candidate_id"].split(":", 1)[-1]: c
             for c in pq.read_table(out / "candidates.parquet").to_pylist()}
    assert len(cands) == len(routes)
    got = {cid: c["reason"] or c["status"] for cid, c in cands.items()}
    assert got == {cid: expected for cid, (_, expected) in routes.items()}
    assert "private" in cands["to-private"]["detail"] or "loopback" in cands["to-private"]["detail"]
    assert "redirect loop" in cands["loop"]["detail"]
    assert "sent no Content-Length" in cands["until-close-cut"]["detail"]
    # Retries happened where the server asked for them, and only there.
    assert server.hits["/429-then-ok.jpg"] == 2
    assert server.hits["/503-burst-then-ok.jpg"] == 3
    assert server.hits["/503-forever.jpg"] == 3
    assert server.hits["/429-for-an-hour.jpg"] == 1
    assert server.hits["/404.jpg"] == 1
    assert run_cli("verify", str(out)).returncode == 0


def test_a_robots_txt_cut_inside_its_headers_is_unreachable_not_an_empty_allow_all(
        server: fs.FaultServer, tmp_path: Path) -> None:
    """A robots.txt whose connection closed before its headers ended (no Content-Length
    seen) read as a complete, empty file: no rules, the host's images admitted, whatever its
    robots.txt said. It is now a connection that failed: robots_unreachable, retried by the
    next run."""
    server.route("/robots.txt", fs.cut_in_headers())
    server.route("/work.jpg", fs.ok(make_image(7, (64, 48))))
    rows = [{"id": "work", "url": server.url("/work.jpg", host="localhost"), "license": CC0}]
    out = tmp_path / "out"
    proc = run_cli("build", str(hostile_recipe(tmp_path, server, rows)), "--out", str(out),
                   "--no-progress")
    assert "Traceback" not in proc.stderr
    (cand,) = pq.read_table(out / "candidates.parquet").to_pylist()
    assert (cand["status"], cand["reason"]) == ("rejected", "robots_unreachable"), cand
    assert server.hits["/work.jpg"] == 0


# A process's peak RSS (ru_maxrss) starts at the peak of the process it was forked from, which
# Linux records when it execs: started from pytest, whose own peak grows with the tests it
# ran (682 MB seen), not the build's. A small Python process in between starts the build and
# reports the build's own peak (wait4: this one child's rusage), in KiB, and its exit status.
_MEASURED = ("import os, subprocess, sys; "
             "child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, "
             "stderr=subprocess.DEVNULL); _, status, usage = os.wait4(child.pid, 0); "
             "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)")


def run_measured(args: list[str]) -> tuple[int, int]:
    """Run the CLI as a child; its exit status and its own peak RSS in bytes."""
    env = {**os.environ, "SOURCE_DATE_EPOCH": FIXED_EPOCH, "PYTHONPATH": str(REPO)}
    measured = subprocess.run([sys.executable, "-c", _MEASURED, sys.executable, "-m",
                               "builder", *args], env=env, capture_output=True, text=True,
                              check=True)
    code, peak_kib = map(int, measured.stdout.split())
    return code, peak_kib * 1024


def test_endless_bodies_are_cut_at_max_bytes_and_memory_stays_bounded(
        server: fs.FaultServer, tmp_path: Path) -> None:
    """Sixteen candidates each meet a 64 MB body with a 1 MB cap: nothing is buffered whole.

    Buffering the bodies would need ~1 GB; the build's own baseline (imports, papers) is
    ~200 MB, and thread arenas under load add some, hence the 600 MB bound.
    """
    server.route("/endless.jpg", fs.endless(limit=64 * 1024 * 1024))
    rows = [{"id": f"e{i}", "url": server.url(f"/endless.jpg?{i}", host="localhost"),
             "license": CC0} for i in range(16)]
    recipe = hostile_recipe(tmp_path, server, rows, timeout_s=10)
    out = tmp_path / "out"
    code, peak = run_measured(["build", str(recipe), "--out", str(out), "--no-progress"])
    assert code == 0
    reasons = {c["reason"] for c in pq.read_table(out / "candidates.parquet").to_pylist()}
    assert reasons == {"too_large"}
    assert peak < 600 * 1024 * 1024, f"peak RSS {peak / 1e6:.0f} MB"
