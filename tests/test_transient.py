"""A network failure is not an opt-out: transient reasons, retried by running the same recipe.

Real builds through the CLI against real HTTP on loopback: pytest-httpserver for hosts that
answer, and a port with nothing listening for a host that is down (the same port is later
served, for a host that came back).
"""

from __future__ import annotations

import signal
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pytest_httpserver import HTTPServer

from builder.fetch import Fetcher
from builder.ledger import Ledger
from builder.recipe import FetchConfig
from tests.apihelpers import files_containing
from tests.conftest import make_image, run_cli, write_jsonl, write_recipe
from tests.test_optout_signals import candidate, make_gate, rejected, run

CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"


def free_port() -> int:
    """A loopback port nothing listens on (just bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_host(server: HTTPServer, names: list[str], *, robots: str | None = None,
               seed: int = 0) -> list[str]:
    """Images under /img/NAME.jpg, 404 for the policy files unless `robots` is given."""
    if robots is None:
        server.expect_request("/robots.txt").respond_with_data("none", status=404)
    else:
        server.expect_request("/robots.txt").respond_with_data(robots,
                                                               content_type="text/plain")
    for path in ("/ai.txt", "/.well-known/tdmrep.json"):
        server.expect_request(path).respond_with_data("none", status=404)
    for i, name in enumerate(names):
        server.expect_request(f"/img/{name}.jpg").respond_with_data(
            make_image(seed + i), content_type="image/jpeg")
    return [server.url_for(f"/img/{name}.jpg") for name in names]


@pytest.fixture
def down_port() -> int:
    return free_port()


@pytest.fixture
def revived(down_port: int) -> Iterator[HTTPServer]:
    """The host at `down_port`, not started: a test starts it when the host comes back."""
    server = HTTPServer(host="127.0.0.1", port=down_port)
    yield server
    if server.is_running():
        server.stop()


def table_recipe(tmp_path: Path, urls: dict[str, str], *, private: bool = True) -> Path:
    table = write_jsonl(tmp_path / "urls.jsonl",
                        [{"id": name, "url": url, "license": CC0} for name, url in urls.items()])
    return write_recipe(tmp_path / "recipe.toml", f"""
[dataset]
name = "transient-test"
samples_per_shard = 10

[[sources]]
kind = "table"
path = "{table.name}"

[fetch]
allow_private_addresses = {"true" if private else "false"}
retries = 0
timeout_s = 5
workers = 2

[optout]
c2pa = false
""")


def build(recipe: Path, out: Path, *extra: str, env: dict[str, str] | None = None) -> str:
    proc = run_cli("build", str(recipe), "--out", str(out), "--no-progress", *extra, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def rows(out: Path) -> dict[str, dict]:
    """The ledger's candidate rows (with attempts and earlier outcomes), by source id."""
    db = sqlite3.connect(out / "ledger.sqlite")
    db.row_factory = sqlite3.Row
    try:
        return {r["candidate_id"].split(":", 1)[1]: dict(r)
                for r in db.execute("SELECT * FROM candidates ORDER BY build, seq")}
    finally:
        db.close()


def manifest(out: Path) -> list[dict]:
    return pq.read_table(out / "manifest.parquet", columns=["key", "sha256"]).to_pylist()


def down_urls(port: int, names: list[str]) -> dict[str, str]:
    return {name: f"http://127.0.0.1:{port}/img/{name}.jpg" for name in names}


def test_with_the_host_down_candidates_are_transient_never_optouts_and_the_summary_says_rerun(
        tmp_path: Path, down_port: int) -> None:
    out = tmp_path / "out"
    stdout = build(table_recipe(tmp_path, down_urls(down_port, ["a", "b", "c"])), out)

    ledger = rows(out)
    assert {r["reason"] for r in ledger.values()} == {"robots_unreachable"}
    assert all(r["attempts"] == 1 and r["retry_with"] for r in ledger.values())
    assert ("3 candidates failed for a transient reason (robots_unreachable 3); run the same "
            "command again to retry them (attempt 1 of 3)") in stdout
    assert "0 rejected, 3 transient" in stdout
    assert "opt-out robots.txt: checked 0, rejected 0, could not be read 3" in stdout
    # Not an opt-out anywhere: summary, ledger, card, Croissant, SPDX, candidates.parquet.
    assert "optout_robots_txt" not in stdout
    assert files_containing(out, "optout_robots_txt") == []
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "`robots_unreachable`" in card and "They are not opt-outs" in card


def test_once_the_host_is_back_a_rerun_admits_them_with_the_next_keys_then_is_complete(
        tmp_path: Path, httpserver: HTTPServer, down_port: int, revived: HTTPServer) -> None:
    up = serve_host(httpserver, ["u0", "u1"], seed=10)
    urls = {"u0": up[0], **down_urls(down_port, ["d0", "d1"]), "u1": up[1]}
    recipe = table_recipe(tmp_path, urls)
    out = tmp_path / "out"
    build(recipe, out)
    first = rows(out)
    assert (first["u0"]["key"], first["u1"]["key"]) == ("0000000000", "0000000001")

    serve_host(revived, ["d0", "d1"], seed=20)
    revived.start()
    stdout = build(recipe, out)

    assert "retried 2 candidates that failed for a transient reason" in stdout
    assert "2 accepted" in stdout and "transient" not in stdout.splitlines()[0]
    after = rows(out)
    assert len(after) == 4  # one row per candidate: the retried rows were updated in place
    assert [after[n]["seq"] for n in ("u0", "d0", "d1", "u1")] == [0, 1, 2, 3]
    assert (after["d0"]["key"], after["d1"]["key"]) == ("0000000002", "0000000003")
    for name in ("d0", "d1"):
        assert after[name]["status"] == "accepted" and after[name]["attempts"] == 2
        assert after[name]["retry_with"] is None
        assert "attempt 1 robots_unreachable" in after[name]["detail"]
        assert '"robots_unreachable"' in after[name]["earlier"]
    parquet = {r["candidate_id"]: r for r in pq.read_table(out / "candidates.parquet").to_pylist()}
    assert "robots_unreachable" in parquet["table:d0"]["detail"]  # auditors still see it
    assert len(pq.read_table(out / "manifest.parquet")) == 4

    assert "already complete" in build(recipe, out)
    verify = run_cli("verify", str(out))
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_robots_txt_answering_503_then_200_is_retried_and_admitted(
        tmp_path: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/robots.txt").respond_with_data("busy", status=503)
    for path in ("/ai.txt", "/.well-known/tdmrep.json"):
        httpserver.expect_request(path).respond_with_data("none", status=404)
    httpserver.expect_request("/img/a.jpg").respond_with_data(make_image(1),
                                                              content_type="image/jpeg")
    recipe = table_recipe(tmp_path, {"a": httpserver.url_for("/img/a.jpg")})
    out = tmp_path / "out"
    stdout = build(recipe, out)
    assert rows(out)["a"]["reason"] == "robots_unreachable"
    assert "HTTP 503" in rows(out)["a"]["detail"]
    assert "/img/a.jpg" not in [r.path for r, _ in httpserver.log]  # RFC 9309: no download
    assert "robots_unreachable 1" in stdout

    httpserver.clear_all_handlers()
    serve_host(httpserver, ["a"], robots="User-agent: *\nAllow: /\n", seed=1)
    build(recipe, out)
    assert rows(out)["a"]["status"] == "accepted"
    assert rows(out)["a"]["key"] == "0000000000"


def test_a_robots_txt_that_failed_is_asked_again_later_in_the_same_build(
        tmp_path: Path, httpserver: HTTPServer) -> None:
    """A robots.txt that could not be read stood for the whole build: a minute's outage at
    its start held back every candidate of the host (robots_unreachable), for days, each
    losing an attempt. It is asked again once CLEANSET_HOST_FILE_RETRY_SECONDS (60 by
    default; 0 here) have passed: the candidates after the outage are admitted."""
    from werkzeug import Request, Response

    answers = iter([Response("busy", status=503)])

    def robots(_: Request) -> Response:
        return next(answers, Response("User-agent: *\nAllow: /\n", content_type="text/plain"))

    httpserver.expect_request("/robots.txt").respond_with_handler(robots)
    for path in ("/ai.txt", "/.well-known/tdmrep.json"):
        httpserver.expect_request(path).respond_with_data("none", status=404)
    for i, name in enumerate("abc"):
        httpserver.expect_request(f"/img/{name}.jpg").respond_with_data(
            make_image(i), content_type="image/jpeg")
    recipe = table_recipe(tmp_path, {name: httpserver.url_for(f"/img/{name}.jpg")
                                     for name in "abc"})
    out = tmp_path / "out"
    build(recipe, out, env={"CLEANSET_HOST_FILE_RETRY_SECONDS": "0"})
    outcomes = sorted(r["reason"] or r["status"] for r in rows(out).values())
    assert outcomes == ["accepted", "accepted", "robots_unreachable"]
    # asked again after the 503 (each worker process keeps its own answer, so perhaps more)
    assert [r.path for r, _ in httpserver.log].count("/robots.txt") >= 2


def test_a_real_disallow_stays_an_optout_and_only_the_transient_one_is_retried(
        tmp_path: Path, httpserver: HTTPServer, down_port: int) -> None:
    refused = serve_host(httpserver, ["x"], robots="User-agent: *\nDisallow: /img/\n")
    recipe = table_recipe(tmp_path, {"x": refused[0], **down_urls(down_port, ["d"])})
    out = tmp_path / "out"
    build(recipe, out)
    assert rows(out)["x"]["reason"] == "optout_robots_txt"
    asked = len(httpserver.log)

    stdout = build(recipe, out)

    assert "retried 1 candidates" in stdout and "(attempt 2 of 3)" in stdout
    again = rows(out)
    assert again["x"]["reason"] == "optout_robots_txt" and again["x"]["attempts"] == 1
    assert again["x"]["retry_with"] is None
    assert again["d"]["attempts"] == 2
    assert len(httpserver.log) == asked  # the opt-out's host was not asked again


def test_a_refused_private_address_is_not_an_optout_and_is_not_retried(
        tmp_path: Path, httpserver: HTTPServer) -> None:
    urls = serve_host(httpserver, ["p"])
    recipe = table_recipe(tmp_path, {"p": urls[0]}, private=False)
    out = tmp_path / "out"
    stdout = build(recipe, out)

    row = rows(out)["p"]
    assert row["reason"] == "address_refused" and row["retry_with"] is None
    assert "allow_private_addresses" in row["detail"]
    assert "rejected address_refused: 1" in stdout and "transient" not in stdout
    assert files_containing(out, "optout_robots_txt") == []
    assert "already complete" in build(recipe, out)
    assert httpserver.log == []


def test_after_the_last_attempt_no_more_retries_and_the_build_is_complete(
        tmp_path: Path, down_port: int) -> None:
    recipe = table_recipe(tmp_path, down_urls(down_port, ["a", "b"]))
    out = tmp_path / "out"
    assert "(attempt 1 of 3)" in build(recipe, out)
    assert "(attempt 2 of 3)" in build(recipe, out)
    third = build(recipe, out)
    assert "have had all 3 attempts and are not retried again" in third
    assert [r["attempts"] for r in rows(out).values()] == [3, 3]

    fourth = build(recipe, out)
    assert "already complete" in fourth
    assert [r["attempts"] for r in rows(out).values()] == [3, 3]
    assert run_cli("verify", str(out)).returncode == 0


def test_retries_after_limit_keep_the_limit_then_continue_with_the_next_keys(
        tmp_path: Path, down_port: int, revived: HTTPServer) -> None:
    recipe = table_recipe(tmp_path, down_urls(down_port, ["a", "b", "c", "d"]))
    out = tmp_path / "out"
    build(recipe, out, "--limit", "2")
    serve_host(revived, ["a", "b", "c", "d"])
    revived.start()

    stdout = build(recipe, out, "--limit", "2")
    assert "stopped at --limit 2" in stdout and "retried 2 candidates" in stdout
    assert [r["key"] for r in rows(out).values()] == ["0000000000", "0000000001"]
    assert "already complete" in build(recipe, out, "--limit", "2")

    build(recipe, out)
    assert [r["key"] for r in rows(out).values()] == [f"{k:010d}" for k in range(4)]
    assert run_cli("verify", str(out)).returncode == 0


@pytest.mark.parametrize("crash_at", ["decide:4", "after_commit:2"])
def test_kill_9_mid_retry_then_rerun_retries_each_once_and_matches_an_uninterrupted_run(
        tmp_path: Path, down_port: int, revived: HTTPServer, crash_at: str) -> None:
    names = ["a", "b", "c", "d", "e"]
    recipe = table_recipe(tmp_path, down_urls(down_port, names))
    crashed, clean = tmp_path / "crashed", tmp_path / "clean"
    build(recipe, crashed)
    build(recipe, clean)
    serve_host(revived, names)
    revived.start()
    env = {"CLEANSET_COMMIT_EVERY": "2"}

    killed = run_cli("build", str(recipe), "--out", str(crashed), "--no-progress",
                     env={**env, "CLEANSET_CRASH_AT": crash_at})
    assert killed.returncode == -signal.SIGKILL
    build(recipe, crashed, env=env)
    build(recipe, clean, env=env)

    for name in names:
        got, want = rows(crashed)[name], rows(clean)[name]
        assert (got["status"], got["key"], got["attempts"]) == (want["status"], want["key"], 2)
    assert manifest(crashed) == manifest(clean)
    verify = run_cli("verify", str(crashed))
    assert verify.returncode == 0, verify.stdout


def test_an_older_ledger_gains_the_attempt_columns_and_counts_its_rows_as_one_attempt(
        tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE candidates (build INTEGER NOT NULL, seq INTEGER NOT NULL,"
                " candidate_id TEXT NOT NULL, source TEXT NOT NULL, url TEXT NOT NULL,"
                " status TEXT NOT NULL, reason TEXT, detail TEXT, key TEXT, license TEXT,"
                " decided_at TEXT NOT NULL, PRIMARY KEY (build, seq))")
    old.execute("INSERT INTO candidates VALUES (1, 0, 't:a', 't', 'http://x/a', 'rejected',"
                " 'timeout', 'slow', NULL, NULL, '2024-01-01T00:00:00Z')")
    old.commit()
    old.close()

    ledger = Ledger(path)
    try:
        row = next(ledger.iter_candidates())
        assert (row["attempts"], row["retry_with"], row["earlier"]) == (1, None, None)
        # Nothing to retry: an older build did not keep what a retry needs.
        assert not ledger.has_retryable(1, max_attempts=3, reasons={"timeout"})
    finally:
        ledger.close()


# --- the opt-out gate alone, in this process -------------------------------------------------


def test_an_unreachable_tdmrep_json_holds_the_candidate_as_transient_not_as_no_reservation(
        down_port: int) -> None:
    config = FetchConfig(allow_private_addresses=True, retries=0, timeout_s=5)
    with Fetcher(config) as fetcher:
        gate = make_gate(fetcher, robots_txt=False, ai_txt=False, c2pa=False)
        url = f"http://127.0.0.1:{down_port}/img/a.jpg"
        detail = rejected(run(gate, candidate(url), fetcher), "tdmrep_unreachable")
    assert "tdmrep.json" in detail and "unreachable" in detail
    assert "opt-out tdmrep.json: checked 0, rejected 0, could not be read 1" in "\n".join(
        gate.summary_lines())



def test_a_landing_page_the_network_kept_from_us_is_transient_and_its_reservation_obeyed_later(
        tmp_path: Path, httpserver: HTTPServer, down_port: int, revived: HTTPServer) -> None:
    """With `landing_page = true`, a page that could not be fetched (host down) was recorded
    "unavailable" and the image admitted, though the page may carry tdm-reservation 1: a
    reservation lost to a hiccup. Now it waits as tdmrep_unreachable, and the rerun, the
    page back, refuses it."""
    image = serve_host(httpserver, ["a"])[0]
    page = f"http://127.0.0.1:{down_port}/page"
    table = write_jsonl(tmp_path / "urls.jsonl",
                        [{"id": "a", "url": image, "license": CC0, "landing_url": page}])
    recipe = write_recipe(tmp_path / "recipe.toml", f"""
[dataset]
name = "landing-test"
[[sources]]
kind = "table"
path = "{table.name}"
[fetch]
allow_private_addresses = true
retries = 0
timeout_s = 5
[optout]
c2pa = false
landing_page = true
""")
    out = tmp_path / "out"
    stdout = build(recipe, out)
    row = rows(out)["a"]
    assert (row["status"], row["reason"]) == ("rejected", "tdmrep_unreachable")
    assert "landing page: unreachable" in row["detail"] and row["retry_with"]
    assert "/img/a.jpg" not in [r.path for r, _ in httpserver.log]  # nothing downloaded
    assert "opt-out landing-page: checked 0, rejected 0, could not be read 1" in stdout

    revived.expect_request("/page").respond_with_data(
        '<html><head><meta name="tdm-reservation" content="1"></head></html>',
        content_type="text/html")
    revived.start()
    build(recipe, out)
    row = rows(out)["a"]
    assert (row["status"], row["reason"]) == ("rejected", "optout_tdmrep")
    assert "landing page" in row["detail"] and row["attempts"] == 2


@pytest.mark.parametrize(("path", "reason"), [
    ("/robots.txt", "robots_unreachable"), ("/ai.txt", "robots_unreachable"),
    ("/.well-known/tdmrep.json", "tdmrep_unreachable"), ("/img/a.jpg", "http_unavailable")])
def test_408_request_timeout_is_a_hiccup_retried_never_no_file_or_a_refusal(
        tmp_path: Path, httpserver: HTTPServer, path: str, reason: str) -> None:
    """HTTP 408 is the server saying our request timed out. A robots.txt, ai.txt or
    tdmrep.json answering it was read as "no such file" and its image admitted, the refusal
    the file may hold unseen; an image answering it was a permanent http_error. Now it is
    busy, as 429 and 503: held as transient, asked again by the next run, which obeys."""
    httpserver.expect_request(path).respond_with_data("Request Timeout", status=408)
    serve_host(httpserver, ["a"])
    recipe = table_recipe(tmp_path, {"a": httpserver.url_for("/img/a.jpg")})
    out = tmp_path / "out"
    stdout = build(recipe, out)
    row = rows(out)["a"]
    assert (row["status"], row["reason"]) == ("rejected", reason), row["detail"]
    assert "408" in row["detail"] and row["retry_with"]
    assert f"{reason} 1" in stdout and "0 accepted" in stdout

    # The next run reads what the host says now: a refusal is obeyed, an image admitted.
    httpserver.clear_all_handlers()
    disallow = ("User-agent: *\nDisallow: /img/\n", "text/plain", "optout_robots_txt")
    now = {"/robots.txt": disallow, "/ai.txt": disallow,
           "/.well-known/tdmrep.json": ('[{"location": "/img/*", "tdm-reservation": 1}]',
                                        "application/json", "optout_tdmrep")}
    if path in now:
        httpserver.expect_request(path).respond_with_data(now[path][0],
                                                          content_type=now[path][1])
    serve_host(httpserver, ["a"])
    build(recipe, out)
    row = rows(out)["a"]
    assert (row["reason"], row["attempts"]) == (now[path][2] if path in now else None, 2)
