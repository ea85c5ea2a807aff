"""`cleanset recheck` after the world moved on: a Commons replay where files are relicensed,
deleted and re-uploaded, plain file hosts where a URL starts answering 404 and a host starts
refusing us in robots.txt. Every server is on 127.0.0.1 and records what it was asked."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Request, Response

from tests.api_support import recipe_text
from tests.conftest import (
    make_image,
    run_cli,
    serve_no_site_policies,
    start_cli,
    stopped_itself,
    upgraded_cleanset,
    write_jsonl,
    write_recipe,
)
from tests.test_source_wikimedia import FakeCommons, make_page, set_licence

CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"
BY_SA = {"LicenseShortName": "CC BY-SA 4.0", "License": "cc-by-sa-4.0",
         "LicenseUrl": "https://creativecommons.org/licenses/by-sa/4.0"}
BY_NC = {"LicenseShortName": "CC BY-NC 2.0", "License": "cc-by-nc-2.0",
         "LicenseUrl": "https://creativecommons.org/licenses/by-nc/2.0"}
CC0_CLAIM = {"LicenseShortName": "CC0", "License": "cc0", "LicenseUrl": CC0}
POLICY_FILES = ("/robots.txt", "/ai.txt", "/.well-known/tdmrep.json")

# key -> (outcome, refuse) once the world has drifted (see World.drift)
EXPECTED = {
    "0000000000": ("license_changed", True),    # Commons: BY-SA -> BY-NC (not admitted)
    "0000000001": ("deleted", True),            # Commons: file deleted (`missing`)
    "0000000002": ("content_changed", False),   # Commons: a new upload (new sha1)
    "0000000003": ("license_changed", False),   # Commons: BY-SA -> CC0 (still admitted)
    "0000000004": ("unchanged", False),
    "0000000005": ("deleted", True),            # table URL answers 404
    "0000000006": ("unchanged", False),
    "0000000007": ("optout", True),             # its host now says Disallow: /
    "0000000008": ("optout", True),
}
REFUSED = sorted(k for k, (_, refuse) in EXPECTED.items() if refuse)


class Origin:
    """A plain file host on its own port: JPEGs with ETags, robots.txt, and a log of every
    request (method, path) it answered."""

    def __init__(self, prefix: str, seeds: list[int]) -> None:
        self.server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
        self.server.start()
        self.files = {f"/{prefix}/{i}.jpg": make_image(seed, (64, 48))
                      for i, seed in enumerate(seeds)}
        self.seen: list[tuple[str, str]] = []
        self.reset()
        self.server.expect_request(re.compile(".*")).respond_with_handler(self._handle)

    def reset(self) -> None:
        self.robots = (404, "")
        self.forced: dict[str, int] = {}  # path -> status answered instead of the file
        self.moved: dict[str, str] = {}  # path -> where it now redirects (302)
        self.seen.clear()

    def urls(self) -> list[str]:
        return [self.server.url_for(path) for path in self.files]

    def _handle(self, request: Request) -> Response:
        self.seen.append((request.method, request.path))
        if request.path in self.forced:
            return Response("", status=self.forced[request.path])
        if request.path in self.moved:
            return Response("", status=302, headers={"Location": self.moved[request.path]})
        if request.path == "/login":
            return Response("<html><body>Sign in</body></html>", content_type="text/html")
        if request.path == "/robots.txt":
            return Response(self.robots[1], status=self.robots[0], content_type="text/plain")
        data = self.files.get(request.path)
        if data is None:
            return Response("not found", status=404)
        etag = f'"{hashlib.sha1(data).hexdigest()[:16]}"'
        return Response(data, content_type="image/jpeg", headers={"ETag": etag})

    def image_gets(self) -> list[str]:
        return [p for m, p in self.seen if m == "GET" and p in self.files]

    def stop(self) -> None:
        self.server.clear()
        self.server.stop()


class World:
    """Commons (API and uploads) on one port, two file hosts on two more."""

    def __init__(self, tmp: Path) -> None:
        self.commons_server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
        self.commons_server.start()
        serve_no_site_policies(self.commons_server)
        self.pages = [make_page(self.commons_server, i, CC0_CLAIM if i == 4 else BY_SA)
                      for i in range(5)]
        self.pristine = json.dumps(self.pages)
        self.commons = FakeCommons(self.commons_server, self.pages)
        self.hosts = Origin("t", [300, 301])
        self.refusing = Origin("c", [310, 311])
        rows = [{"url": u, "license": CC0} for u in self.hosts.urls() + self.refusing.urls()]
        table = write_jsonl(tmp / "urls.jsonl", rows)
        self.recipe = write_recipe(tmp / "recipe.toml", recipe_text("recheck-test", f"""
kind = "wikimedia"
name = "commons"
api = "{self.commons.url}"
category = "Test files"

[[sources]]
kind = "table"
name = "urls"
path = "{table.name}"
"""))

    def reset(self) -> None:
        self.pages[:] = json.loads(self.pristine)
        self.commons.deleted.clear()
        self.commons.degrade = None
        self.commons.requests.clear()
        self.commons_server.clear_log()
        self.hosts.reset()
        self.refusing.reset()

    def drift(self) -> None:
        set_licence(self.pages[0], BY_NC)
        self.commons.deleted.add(1001)
        self.pages[2]["imageinfo"][0]["sha1"] = "a" * 40
        set_licence(self.pages[3], CC0_CLAIM)
        self.hosts.forced["/t/0.jpg"] = 404
        self.refusing.robots = (200, "User-agent: *\nDisallow: /\n")
        self.commons.requests.clear()

    def image_gets(self) -> list[str]:
        commons = [r.path for r, _ in self.commons_server.log
                   if r.method == "GET" and r.path.startswith("/upload/")]
        return commons + self.hosts.image_gets() + self.refusing.image_gets()

    def imageinfo_requests(self) -> list[dict[str, str]]:
        return [args for _, args, _ in self.commons.requests if "pageids" in args]

    def stop(self) -> None:
        for server in (self.commons_server,):
            server.clear()
            server.stop()
        self.hosts.stop()
        self.refusing.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, Path]]:
    tmp = tmp_path_factory.mktemp("recheck")
    world = World(tmp)
    out = tmp / "built"
    try:
        run_cli("build", str(world.recipe), "--out", str(out), "--no-progress", check=True)
        yield world, out
    finally:
        world.stop()


@pytest.fixture
def dataset(world: tuple[World, Path], tmp_path: Path) -> tuple[World, Path]:
    """A fresh copy of the built dataset, the servers as they were at build time."""
    w, built = world
    w.reset()
    out = tmp_path / "out"
    shutil.copytree(built, out)
    return w, out


def build_table(tmp_path: Path, rows: list[dict[str, Any]], name: str,
                extra: str = "") -> Path:
    """A dataset built from `rows` by a `table` source (recipe_text's fetch settings, then
    `extra`); its directory."""
    write_jsonl(tmp_path / "urls.jsonl", rows)
    recipe = write_recipe(tmp_path / "recipe.toml", recipe_text(name, """
kind = "table"
name = "urls"
path = "urls.jsonl"
""") + extra)
    out = tmp_path / "out"
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    return out


def recheck(out: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return run_cli("recheck", str(out), "--no-progress", *args, env=env)


def verdicts(stdout: str) -> dict[str, dict[str, Any]]:
    return {v["key"]: v for v in map(json.loads, stdout.splitlines())}


def papers(out: Path) -> dict[str, bytes]:
    names = ["manifest.parquet", "candidates.parquet", "spdx.json", "croissant.json",
             "README.md", "ATTRIBUTION.md", "attribution.csv"]
    files = {n: (out / n).read_bytes() for n in names}
    files.update({p.name: p.read_bytes() for p in (out / "shards").iterdir()})
    return files


def test_each_drift_gets_its_outcome_and_refuse_and_the_recheck_exits_3_without_any_image_get(
        dataset: tuple[World, Path]) -> None:
    world, out = dataset
    before = papers(out)
    world.drift()
    proc = recheck(out, "--json")
    assert proc.returncode == 3, proc.stderr
    found = verdicts(proc.stdout)
    assert {k: (v["outcome"], v["refuse"]) for k, v in found.items()} == EXPECTED
    assert world.image_gets() == []  # metadata, HEADs and host files only
    assert papers(out) == before  # a plain recheck changes no shard, manifest or paper
    # Commons: one batched imageinfo request for the five files
    (asked,) = world.imageinfo_requests()
    assert asked["pageids"] == "1000|1001|1002|1003|1004"
    assert asked["iiprop"] == "sha1|url|extmetadata" and asked["prop"] == "imageinfo"
    # each host's consent files read once
    for host in (world.hosts, world.refusing):
        assert [p for _, p in host.seen if p in POLICY_FILES] == list(POLICY_FILES)
    assert ("HEAD", "/t/1.jpg") in world.hosts.seen
    detail = {k: v["detail"] for k, v in found.items()}
    assert "CC-BY-SA-4.0 -> refused (license_not_allowed" in detail["0000000000"]
    assert "'CC BY-SA 4.0' -> 'CC BY-NC 2.0'" in detail["0000000000"]
    assert "missing" in detail["0000000001"]
    assert "SHA-1 " + "a" * 40 in detail["0000000002"]
    assert "CC-BY-SA-4.0 -> CC0-1.0, still admitted" in detail["0000000003"]
    assert detail["0000000005"].startswith("HTTP 404 from ")
    assert "robots.txt" in detail["0000000007"] and "line 2: 'Disallow: /'" in \
        detail["0000000007"]
    summary = proc.stderr
    assert "would now be refused: 5" in summary and "license_changed: 2" in summary
    for key in REFUSED:
        assert f"    {key} " in summary


def test_every_recheck_is_recorded_in_the_ledger_with_date_scope_and_outcomes(
        dataset: tuple[World, Path]) -> None:
    world, out = dataset
    world.drift()
    assert recheck(out).returncode == 3
    with sqlite3.connect(out / "ledger.sqlite") as db:
        status, finished, scope, total, counts, refused = db.execute(
            "SELECT status, finished_at, scope, total, counts, refused FROM rechecks").fetchone()
        kept = dict(db.execute("SELECT key, outcome FROM recheck_results"))
    assert status == "finished" and finished and total == 9 and refused == 5
    assert json.loads(scope) == {"sources": [], "sample": None, "seed": None}
    assert json.loads(counts) == {"content_changed": 1, "deleted": 2, "license_changed": 2,
                                  "optout": 2, "unchanged": 2}
    # the samples that drifted keep their detail; the unchanged ones only their count
    assert kept == {k: o for k, (o, _) in EXPECTED.items() if o != "unchanged"}
    report = run_cli("report", str(out), check=True)
    assert report.returncode == 0
    html = (out / "report.html").read_text()
    assert "Last rechecked" in html and "7 drifted" in html


def cleanset_version(**kwargs: Any) -> str:
    return run_cli("--version", check=True, **kwargs).stdout.split()[1]


def test_a_recheck_records_the_cleanset_that_ran_it_and_the_report_and_evidence_name_it(
        dataset: tuple[World, Path]) -> None:
    """Builds and takedowns named the cleanset that decided them; a recheck, whose verdicts
    a takedown may follow years later, named none."""
    world, out = dataset
    version = cleanset_version()
    world.drift()
    assert recheck(out).returncode == 3
    with sqlite3.connect(out / "ledger.sqlite") as db:
        assert db.execute("SELECT tool_version, resumed_by FROM rechecks").fetchall() == [
            (version, None)]
    run_cli("report", str(out), check=True)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert f"(recheck 1 by cleanset {version}: 9 samples of version 1" in page
    assert f'<p class="note">Recheck 1: cleanset {version}.</p>' in page  # under the table
    evidence = run_cli("evidence", str(out), "0000000000", "--json", check=True)
    finding = json.loads(evidence.stdout)["recheck"]
    assert finding["tool_version"] == version and finding["resumed_by"] == []
    text = run_cli("evidence", str(out), "0000000000", check=True).stdout
    assert f", by cleanset {version}), found: license_changed" in text


# The rechecks table as cleansets before rechecks.tool_version made it.
RECHECKS_WITHOUT_TOOL_VERSION = """CREATE TABLE rechecks (
    recheck INTEGER PRIMARY KEY, started_at TEXT NOT NULL, finished_at TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'finished', 'abandoned')),
    scope TEXT NOT NULL, version INTEGER NOT NULL, total INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0, last_key TEXT, counts TEXT NOT NULL DEFAULT '{}',
    refused INTEGER NOT NULL DEFAULT 0, applied TEXT)"""
OLD_COLUMNS = ("recheck, started_at, finished_at, status, scope, version, total, done, "
               "last_key, counts, refused, applied")


def as_before_tool_version(ledger: Path) -> None:
    """Rewrite `ledger`'s rechecks table as an older cleanset wrote it, its rows kept."""
    with sqlite3.connect(ledger) as db:
        db.executescript(f"""
            ALTER TABLE rechecks RENAME TO rechecks_now;
            {RECHECKS_WITHOUT_TOOL_VERSION};
            INSERT INTO rechecks SELECT {OLD_COLUMNS} FROM rechecks_now;
            DROP TABLE rechecks_now;""")
    db.close()


def recheck_columns(ledger: Path) -> set[str]:
    with sqlite3.connect(ledger) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(rechecks)")}
    db.close()
    return columns


def test_a_ledger_without_rechecks_tool_version_is_read_as_it_is_and_gets_it_on_the_next_recheck(
        dataset: tuple[World, Path], tmp_path: Path) -> None:
    """A ledger a cleanset before the column wrote: the readers (report, verify, evidence)
    must read it without adding anything, and the next recheck brings it up to date."""
    from tests.test_readonly_audit import make_writable, snapshot

    world, out = dataset
    world.drift()
    assert recheck(out).returncode == 3
    as_before_tool_version(out / "ledger.sqlite")
    for path in [out, *out.rglob("*")]:  # a copy an auditor may only read
        path.chmod(path.stat().st_mode & ~0o222)
    before = snapshot(out)
    page = tmp_path / "page.html"
    run_cli("report", str(out), "--out", str(page), check=True)
    html = page.read_text(encoding="utf-8")
    assert "(recheck 1: 9 samples of version 1" in html  # who ran it is not known: unsaid
    assert "Recheck 1: not recorded (an older cleanset)." in html
    assert run_cli("verify", str(out)).returncode == 0
    finding = json.loads(run_cli("evidence", str(out), "0000000000", "--json",
                                 check=True).stdout)["recheck"]
    assert finding["number"] == 1 and finding["tool_version"] is None
    assert snapshot(out) == before
    assert "tool_version" not in recheck_columns(out / "ledger.sqlite")
    make_writable(out)
    assert recheck(out).returncode == 3
    assert {"tool_version", "resumed_by"} <= recheck_columns(out / "ledger.sqlite")
    with sqlite3.connect(out / "ledger.sqlite") as db:
        rows = db.execute("SELECT recheck, tool_version FROM rechecks ORDER BY recheck")
        assert rows.fetchall() == [(1, None), (2, cleanset_version())]
    run_cli("report", str(out), check=True)
    assert (f"Recheck 2: cleanset {cleanset_version()}. Recheck 1: not recorded (an older "
            "cleanset).") in (out / "report.html").read_text(encoding="utf-8")


def test_a_recheck_resumed_by_another_cleanset_names_both(
        dataset: tuple[World, Path], tmp_path: Path) -> None:
    """A recheck stopped, cleanset upgraded, the recheck resumed: both decided verdicts, as a
    build so resumed names both (tests/test_identity.py)."""
    world, out = dataset
    copy = upgraded_cleanset(tmp_path / "upgraded")
    upgraded = {"PYTHONPATH": str(copy), "CLEANSET_RECHECK_CHUNK": "2"}
    first, second = cleanset_version(), cleanset_version(env=upgraded, cwd=copy)
    assert first != second
    world.drift()
    killed = recheck(out, env={"CLEANSET_RECHECK_CHUNK": "2",
                               "CLEANSET_CRASH_AT": "recheck_chunk:2"})
    assert killed.returncode == -9
    resumed = run_cli("recheck", str(out), "--no-progress", env=upgraded, cwd=copy)
    assert resumed.returncode == 3, resumed.stderr
    assert (f"note: recheck 1 was run by cleanset {first}; cleanset {second} goes on with it"
            in resumed.stdout)
    with sqlite3.connect(out / "ledger.sqlite") as db:
        row = db.execute("SELECT status, tool_version, resumed_by FROM rechecks").fetchone()
    assert row == ("finished", first, json.dumps([second]))
    run_cli("report", str(out), check=True)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert f"(recheck 1 by cleanset {first}, then cleanset {second}: 9 samples" in page
    assert f"Recheck 1: cleanset {first}, then cleanset {second}.</p>" in page


def test_apply_takes_down_exactly_the_refused_samples_then_verify_passes_and_a_recheck_exits_0(
        dataset: tuple[World, Path]) -> None:
    world, out = dataset
    world.drift()
    proc = recheck(out, "--apply", "--reason", "weekly recheck")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "takedown: 5 sample(s) removed" in proc.stdout
    keys = pq.read_table(out / "manifest.parquet").column("key").to_pylist()
    assert keys == sorted(set(EXPECTED) - set(REFUSED))
    (entry,) = [json.loads(line) for line in (out / "takedowns.jsonl").read_text().splitlines()]
    assert entry["reason"] == "recheck 1: weekly recheck"
    why = {m["key"]: " ".join(m["why"]) for m in entry["matched"]}
    assert sorted(why) == REFUSED
    for key in REFUSED:
        assert f"recheck 1: {EXPECTED[key][0]}: " in why[key]
    assert run_cli("verify", str(out)).returncode == 0
    card = (out / "README.md").read_text()
    assert "Last rechecked" in card and "7 drifted" in card
    again = recheck(out, "--json")
    assert again.returncode == 0, again.stderr
    assert {k: v["outcome"] for k, v in verdicts(again.stdout).items()} == {
        "0000000002": "content_changed", "0000000003": "license_changed",
        "0000000004": "unchanged", "0000000006": "unchanged"}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_apply_keeps_the_directory_from_its_recheck_to_its_takedown(
        dataset: tuple[World, Path]) -> None:
    """`recheck --apply` let its lock go between the recheck and the takedown: a verify or
    report that started in that moment made the apply fail (exit 1) after the whole recheck,
    and the rerun asked every source again. Held there, it still holds the directory."""
    import signal

    world, out = dataset
    world.drift()
    held = start_cli("recheck", str(out), "--no-progress", "--apply", "--reason", "weekly",
                     env={"CLEANSET_STOP_AT": "recheck_applying"})
    try:
        assert stopped_itself(held), held.communicate()
        verify = run_cli("verify", str(out))
        assert verify.returncode == 1, verify.stdout + verify.stderr
        assert f"a recheck (pid {held.pid}) is writing this directory" in verify.stderr
    finally:
        held.send_signal(signal.SIGCONT)
        stdout, stderr = held.communicate(timeout=120)
    assert held.returncode == 0, stdout + stderr
    assert "takedown: 5 sample(s) removed" in stdout
    assert run_cli("verify", str(out)).returncode == 0


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_ctrl_c_between_the_recheck_and_its_takedown_then_the_same_command_asks_nothing_again(
        dataset: tuple[World, Path]) -> None:
    """Ctrl-C after the recheck had finished and before `--apply` began its takedown: the
    same command once started a new recheck and asked every source again (hours, on a
    large dataset). It now takes down what the finished recheck found, asking nothing."""
    import signal

    world, out = dataset
    world.drift()
    command = ("recheck", str(out), "--no-progress", "--apply", "--reason", "weekly")
    held = start_cli(*command, env={"CLEANSET_STOP_AT": "recheck_applying"})
    try:
        assert stopped_itself(held), held.communicate()
        held.send_signal(signal.SIGINT)
    finally:
        held.send_signal(signal.SIGCONT)
        stdout, stderr = held.communicate(timeout=120)
    assert held.returncode == 130, stdout + stderr
    assert not (out / "takedowns.jsonl").exists()
    assert "(the command this recheck was run with, stopped before its takedown) takes them " \
        "down without asking the sources again" in signoff_text(out)
    world.commons.requests.clear()
    world.hosts.seen.clear()
    world.refusing.seen.clear()
    again = run_cli(*command)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "recheck 1 finished at " in again.stdout
    assert "stopped before its takedown: taking down what it found" in again.stdout
    assert "takedown: 5 sample(s) removed" in again.stdout
    assert world.commons.requests == [] and world.hosts.seen == world.refusing.seen == []
    with sqlite3.connect(out / "ledger.sqlite") as db:
        rows = db.execute("SELECT recheck, status, refused, applied FROM rechecks").fetchall()
    assert rows == [(1, "finished", len(REFUSED), "takedown-v2")]
    keys = pq.read_table(out / "manifest.parquet").column("key").to_pylist()
    assert keys == sorted(set(EXPECTED) - set(REFUSED))
    assert run_cli("verify", str(out)).returncode == 0
    # applied: the same command now asks the sources again, as a new recheck
    third = run_cli(*command)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "cleanset recheck 2 finished" in third.stdout and world.commons.requests


def test_an_apply_whose_takedown_is_refused_says_the_recheck_is_recorded_and_owed(
        dataset: tuple[World, Path]) -> None:
    """A shard changed outside cleanset refuses `--apply`'s takedown: the error ended
    "Nothing changed." as if the hours of rechecking were lost too; the recheck is recorded,
    and once the shard is restored the same command takes down what it found, asking
    nothing again."""
    world, out = dataset
    world.drift()
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    shard = out / next(r["shard"] for r in manifest if r["key"] == REFUSED[0])
    good = shard.read_bytes()
    shard.write_bytes(good + b"\0" * 512)
    command = ("recheck", str(out), "--no-progress", "--apply", "--reason", "weekly")
    refused = run_cli(*command)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert (f"cleanset: error: recheck 1 is finished and recorded ({len(REFUSED)} sample(s) "
            "refused), but its --apply takedown stopped: ") in refused.stderr
    assert "the same command takes down what this recheck found without asking the " \
        "sources again" in refused.stderr
    shard.write_bytes(good)
    world.commons.requests.clear()
    again = run_cli(*command)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "takedown: 5 sample(s) removed" in again.stdout
    assert world.commons.requests == []


def test_a_plain_recheck_is_not_taken_down_by_a_later_apply_without_asking_again(
        dataset: tuple[World, Path]) -> None:
    """Only a recheck run with --apply owes a takedown: after a plain recheck, `--apply`
    asks the sources again, as the summary's hint says, rather than acting on findings the
    user may have read days ago."""
    world, out = dataset
    world.drift()
    assert recheck(out).returncode == 3
    world.commons.requests.clear()
    proc = recheck(out, "--apply", "--reason", "weekly")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cleanset recheck 2 finished" in proc.stdout and world.commons.requests
    assert "stopped before its takedown" not in proc.stdout


@pytest.mark.parametrize("point", ["takedown_ready", "takedown_renamed", "takedown_logged"])
def test_a_recheck_s_takedown_killed_midway_is_finished_by_the_rerun_and_still_named_applied(
        dataset: tuple[World, Path], point: str) -> None:
    """The rerun once finished the interrupted takedown in silence and the recheck that
    asked for it never recorded it (`applied` empty: the report's "taken down in" blank)."""
    world, out = dataset
    world.drift()
    killed = recheck(out, "--apply", "--reason", "weekly",
                     env={"CLEANSET_CRASH_AT": f"{point}:1"})
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert (out / ".takedown.json").exists()
    again = recheck(out, "--apply", "--reason", "weekly")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "finished the interrupted takedown takedown-v2 first" in again.stdout
    with sqlite3.connect(out / "ledger.sqlite") as db:
        rows = db.execute("SELECT recheck, refused, applied FROM rechecks ORDER BY recheck"
                          ).fetchall()
    assert rows[0] == (1, len(REFUSED), "takedown-v2")
    keys = pq.read_table(out / "manifest.parquet").column("key").to_pylist()
    assert keys == sorted(set(EXPECTED) - set(REFUSED))
    assert run_cli("verify", str(out)).returncode == 0


def test_apply_with_a_reason_that_is_not_utf8_is_refused_before_the_recheck_runs(
        dataset: tuple[World, Path]) -> None:
    """A Latin-1 --reason (argv bytes Python reads as lone surrogates) once ran the whole
    recheck, journalled the takedown and failed at its ledger commit with a traceback,
    leaving a journal that stopped every later write to the directory."""
    world, out = dataset
    world.drift()
    before = papers(out) | {"ledger.sqlite": (out / "ledger.sqlite").read_bytes()}
    proc = recheck(out, "--apply", "--reason", "caf\udce9")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--reason 'caf\\xe9' is not UTF-8 text" in proc.stderr
    assert "Traceback" not in proc.stderr and not world.commons.requests
    assert not (out / ".takedown.json").exists()
    assert papers(out) | {"ledger.sqlite": (out / "ledger.sqlite").read_bytes()} == before


def test_an_unreachable_host_gives_unreachable_and_refuses_nothing(
        dataset: tuple[World, Path]) -> None:
    world, out = dataset
    for path in (*POLICY_FILES, "/t/0.jpg", "/t/1.jpg"):
        world.hosts.forced[path] = 503
    proc = recheck(out, "--json")
    # not "all clean": two samples could not be asked about, and a scheduled job must know
    assert proc.returncode == 4, proc.stderr
    assert "could not be checked: 2" in proc.stderr
    found = verdicts(proc.stdout)
    for key in ("0000000005", "0000000006"):
        assert found[key]["outcome"] == "unreachable" and found[key]["refuse"] is False
        assert "HTTP 503" in found[key]["detail"]
    assert {v["outcome"] for k, v in found.items() if k not in ("0000000005", "0000000006")} \
        == {"unchanged"}


def test_a_host_answering_404_for_every_file_of_ours_is_unreachable_not_deleted(
        dataset: tuple[World, Path]) -> None:
    """A file host that moved, or lost its files to a misconfiguration, answers 404 for
    every file: each sample of it was `deleted`, and `--apply` took them all down. A 404 is
    "gone" only once the host serves another file of ours; one host 404 for every file of
    ours leaves them unreachable (exit 4), and `--apply` takes none down."""
    world, out = dataset
    for path in ("/t/0.jpg", "/t/1.jpg"):
        world.hosts.forced[path] = 404
    before = papers(out)
    proc = recheck(out, "--json", "--apply", "--reason", "weekly")
    assert proc.returncode == 4, proc.stderr
    found = verdicts(proc.stdout)
    for key in ("0000000005", "0000000006"):
        assert found[key]["outcome"] == "unreachable" and found[key]["refuse"] is False
        assert "it may have moved or answer 404 to everything" in found[key]["detail"]
        assert f"    {key} (urls): HTTP 404 from " in proc.stderr  # the summary says why
    assert {v["outcome"] for k, v in found.items() if k not in ("0000000005", "0000000006")} \
        == {"unchanged"}
    assert papers(out) == before and not (out / "takedowns.jsonl").exists()
    # the host serving one of them again: the other's 404 is its own, the file gone (asked
    # one sample at a time, the other file is found in the ledger and asked)
    del world.hosts.forced["/t/1.jpg"]
    world.hosts.seen.clear()
    again = recheck(out, "--json", env={"CLEANSET_RECHECK_CHUNK": "1"})
    assert world.hosts.seen.count(("HEAD", "/t/1.jpg")) == 2
    assert again.returncode == 3, again.stderr
    found = verdicts(again.stdout)
    assert (found["0000000005"]["outcome"], found["0000000006"]["outcome"]) == \
        ("deleted", "unchanged")


def test_a_410_is_a_file_removed_on_purpose_even_for_every_file_of_a_host(
        dataset: tuple[World, Path]) -> None:
    world, out = dataset
    for path in ("/t/0.jpg", "/t/1.jpg"):
        world.hosts.forced[path] = 410
    proc = recheck(out, "--json")
    assert proc.returncode == 3, proc.stderr
    found = verdicts(proc.stdout)
    assert {k: found[k]["outcome"] for k in ("0000000005", "0000000006")} == {
        "0000000005": "deleted", "0000000006": "deleted"}


def signoff_text(out: Path, *, env: dict[str, str] | None = None) -> str:
    """report.html's sign-off section as text (inline tags dropped without a space)."""
    run_cli("report", str(out), check=True, env=env)
    page = (out / "report.html").read_text(encoding="utf-8")
    found = re.search(r'<section id="signoff">(.*?)</section>', page, re.S)
    assert found, "no sign-off section"
    inline = re.sub(r"</?(b|code)\b[^>]*>", "", found.group(1))
    summary = re.search(r"<dt>Rechecked</dt><dd>(.*?)</dd>", page, re.S)
    assert summary, "no Rechecked line"
    return " ".join(re.sub(r"<[^>]+>", " ", inline + " || " + summary.group(1)).split())


def test_the_report_names_unreachable_samples_as_open_not_as_clean(
        dataset: tuple[World, Path]) -> None:
    """Its summary once read "0 drifted, 0 would now be refused" after a recheck that could
    not reach a host (exit 4: not an all-clear), and nothing else on the page said so."""
    world, out = dataset
    for path in (*POLICY_FILES, "/t/0.jpg", "/t/1.jpg"):
        world.hosts.forced[path] = 503
    assert recheck(out).returncode == 4
    text = signoff_text(out)
    assert "2 images could not be checked by recheck 1" in text
    assert "0000000005 unreachable: HTTP 503" in text and "0000000006 unreachable" in text
    assert "Nothing open" not in text
    assert "0 would now be refused, 2 could not be checked (unreachable)" in text
    # the card, from the next time the papers are written (here a takedown of another key)
    run_cli("takedown", str(out), "--key", "0000000000", "--reason", "asked", check=True)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert ("0 drifted, 0 would have been refused; 2 could not be checked (unreachable: not "
            "an all-clear).") in card
    assert run_cli("verify", str(out)).returncode == 0


def test_the_report_lists_samples_a_recheck_would_refuse_until_they_are_taken_down(
        dataset: tuple[World, Path]) -> None:
    world, out = dataset
    world.drift()
    assert recheck(out).returncode == 3
    text = signoff_text(out)
    assert "5 images still in the dataset would now be refused (recheck 1" in text
    for key in REFUSED:
        assert f"{key} {EXPECTED[key][0]}:" in text
    assert "--apply --reason TEXT" in text
    assert f"cleanset evidence {out.resolve()} KEY shows the answer each was found in" in text
    # The Consent section counts the builds' refusals: it said no host refused us, beside
    # two images a host's robots.txt now refuses.
    assert "rechecks found 2 images that a do-not-train signal now refuses: 0 taken down, " \
        "2 still in the dataset" in consent_text(out)
    assert recheck(out, "--apply", "--reason", "weekly").returncode == 0
    text = signoff_text(out)  # taken down; a content change alone asks nothing of anyone
    assert "would now be refused (recheck" not in text
    assert "Nothing open found by this page" in text and "cleanset verify" in text
    assert "2 taken down, 0 still in the dataset" in consent_text(out)


def test_a_refusal_a_later_partial_recheck_did_not_ask_about_stays_open_in_report_and_evidence(
        dataset: tuple[World, Path]) -> None:
    """A full recheck found samples a build today would refuse; a later `--source` (or
    `--sample`) recheck did not ask about them. The report's sign-off then listed nothing
    but "the last recheck covered part of the dataset", and `cleanset evidence` on such a
    sample showed no finding at all, only build day's records, which admitted it."""
    world, out = dataset
    world.drift()
    assert recheck(out).returncode == 3
    later = recheck(out, "--source", "commons")  # the Commons files only, still drifted
    assert later.returncode == 3
    text = signoff_text(out)
    assert "2 images still in the dataset would now be refused (recheck 2" in text
    assert ("3 images still in the dataset would now be refused by an earlier recheck, "
            "and no recheck since asked about them") in text
    for key in ("0000000005", "0000000007", "0000000008"):
        assert f"{key} {EXPECTED[key][0]} (recheck 1):" in text
    shown = run_cli("evidence", str(out), "0000000007", check=True).stdout
    assert "the last recheck to ask about it, 1 (" in shown
    assert "found: optout (a build today would refuse it): robots.txt: Disallow" in shown
    assert "== robots.txt (recheck 1)" in shown.partition("the build's records")[0]
    # asked about again and found unchanged: neither the page nor evidence holds it open;
    # recheck 2's refusals, which this one did not ask about, are the earlier ones now
    world.reset()
    assert recheck(out, "--source", "urls").returncode == 0
    text = signoff_text(out)
    assert "(recheck 1)" not in text
    assert "2 images still in the dataset would now be refused by an earlier recheck" in text
    assert "0000000000 license_changed (recheck 2):" in text
    assert "found: unchanged" in run_cli("evidence", str(out), "0000000007",
                                         check=True).stdout


def test_a_recheck_of_another_scope_says_it_abandons_the_unfinished_one(
        dataset: tuple[World, Path]) -> None:
    """A full recheck killed midway, then a quick `--source urls`: the full one was marked
    abandoned without a word, and the user who meant to finish it later by running it again
    learnt only then, from "starts afresh", that its hours were thrown away."""
    world, out = dataset
    world.drift()
    killed = recheck(out, env={"CLEANSET_RECHECK_CHUNK": "2",
                               "CLEANSET_CRASH_AT": "recheck_chunk:2"})
    assert killed.returncode == -9
    other = recheck(out, "--source", "urls")
    assert other.returncode == 3, other.stderr
    assert ("note: recheck 1 (every source, 4 of 9 samples judged) was unfinished and is "
            "abandoned: this recheck asks about another scope.") in other.stdout
    assert "the same command as recheck 1 starts it afresh" in other.stdout
    # what the abandoned one found of the Commons files, which the other did not ask about,
    # stays open: on the page and in evidence
    text = signoff_text(out)
    assert "2 images still in the dataset would now be refused by an earlier recheck" in text
    assert "0000000001 deleted (recheck 1):" in text
    shown = run_cli("evidence", str(out), "0000000001", check=True).stdout
    assert "the last recheck to ask about it, 1 (" in shown and "found: deleted" in shown
    again = recheck(out)  # the full one: afresh, and it abandons nothing
    assert again.returncode == 3 and "(resumed)" not in again.stdout
    assert "abandoned" not in again.stdout


def consent_text(out: Path) -> str:
    """report.html's Consent section as text (the report written by signoff_text)."""
    page = (out / "report.html").read_text(encoding="utf-8")
    found = re.search(r'<section id="consent">(.*?)</section>', page, re.S)
    assert found, "no consent section"
    return " ".join(re.sub(r"<[^>]+>", "", found.group(1)).split())


def test_the_consent_section_does_not_count_an_opt_out_a_later_recheck_found_lifted(
        dataset: tuple[World, Path]) -> None:
    """A host refused us in robots.txt at one recheck and relented by the next: the Consent
    section still said "rechecks found 2 images that a do-not-train signal now refuses: 0
    taken down, 2 still in the dataset" under a sign-off with nothing open."""
    world, out = dataset
    world.drift()
    assert recheck(out).returncode == 3
    world.reset()
    assert recheck(out).returncode == 0
    text = signoff_text(out)
    assert "Nothing open found by this page" in text
    consent = consent_text(out)
    assert "now refuses" not in consent, consent
    assert ("rechecks found 2 images that a do-not-train signal refused; a later recheck "
            "found none of them refused any more") in consent


def test_the_report_names_a_recheck_older_than_90_days(dataset: tuple[World, Path]) -> None:
    import time

    _, out = dataset
    assert recheck(out).returncode == 0
    assert "days old" not in signoff_text(out, env={"SOURCE_DATE_EPOCH": str(int(time.time()))})
    later = str(int(time.time()) + 100 * 86400)
    assert "The last recheck is 100 days old" in signoff_text(
        out, env={"SOURCE_DATE_EPOCH": later})


@pytest.mark.parametrize("broken", [("/ai.txt",), ("/.well-known/tdmrep.json",),
                                    ("/ai.txt", "/.well-known/tdmrep.json")])
def test_an_ai_txt_or_tdmrep_json_answering_500_is_no_file_as_in_a_build(
        dataset: tuple[World, Path], broken: tuple[str, ...]) -> None:
    """A build admits from a host whose ai.txt or tdmrep.json answers 500 (no file there);
    a recheck called every sample of that host unreachable, exit 4, on every run."""
    world, out = dataset
    for path in broken:
        world.hosts.forced[path] = 500
    proc = recheck(out, "--json")
    assert proc.returncode == 0, proc.stderr
    assert {v["outcome"] for v in verdicts(proc.stdout).values()} == {"unchanged"}
    assert all(("GET", path) in world.hosts.seen for path in broken)  # asked, not skipped


@pytest.mark.parametrize("path", ["/ai.txt", "/.well-known/tdmrep.json"])
def test_an_ai_txt_or_tdmrep_json_answering_busy_cannot_be_checked_as_in_a_build(
        dataset: tuple[World, Path], path: str) -> None:
    """503 (or 429) is "not now", not "no file": a build holds such a host's candidates for
    the next run, and a recheck cannot tell whether the file now refuses us."""
    world, out = dataset
    world.hosts.forced[path] = 503
    proc = recheck(out, "--json")
    assert proc.returncode == 4, proc.stderr
    found = verdicts(proc.stdout)
    assert {found[k]["outcome"] for k in ("0000000005", "0000000006")} == {"unreachable"}
    assert "HTTP 503" in found["0000000006"]["detail"]


def test_a_robots_txt_answering_5xx_is_still_unreachable(dataset: tuple[World, Path]) -> None:
    """RFC 9309 2.3.1.4: a robots.txt that cannot be read says nothing of what is allowed (a
    build admits nothing from that host meanwhile): the recheck cannot tell, exit 4."""
    world, out = dataset
    world.hosts.forced["/robots.txt"] = 503
    proc = recheck(out, "--json")
    assert proc.returncode == 4, proc.stderr
    found = verdicts(proc.stdout)
    assert {found[k]["outcome"] for k in ("0000000005", "0000000006")} == {"unreachable"}
    assert "robots.txt: HTTP 503" in found["0000000006"]["detail"]


def test_an_image_url_now_sending_to_a_login_page_names_the_redirect_and_the_page(
        dataset: tuple[World, Path]) -> None:
    world, out = dataset
    world.hosts.moved["/t/1.jpg"] = "/login"
    proc = recheck(out, "--json")
    assert proc.returncode == 0, proc.stderr  # drift, but nothing a build would refuse
    found = verdicts(proc.stdout)["0000000006"]
    assert (found["outcome"], found["refuse"]) == ("content_changed", False)
    assert "Content-Type text/html, a page, not an image" in found["detail"]
    assert found["detail"].endswith(f"the URL now redirects to {world.hosts.server.url_for('/login')}")
    others = {v["outcome"] for k, v in verdicts(proc.stdout).items() if k != "0000000006"}
    assert others == {"unchanged"}


def _no_pages(answer: dict[str, Any]) -> Any:
    return {"batchcomplete": True}


def _empty(answer: dict[str, Any]) -> Any:
    return {}


def _pages_left_out(answer: dict[str, Any]) -> Any:
    answer["query"]["pages"] = answer["query"]["pages"][1:]
    return answer


def _no_extmetadata(answer: dict[str, Any]) -> Any:
    for page in answer["query"]["pages"]:
        for info in page.get("imageinfo", []):
            info.pop("extmetadata", None)
    return answer


@pytest.mark.parametrize(("degrade", "exit_code"), [
    (_no_pages, 1), (_empty, 1), (_pages_left_out, 4), (_no_extmetadata, 4)],
    ids=["no query", "empty object", "pages left out", "no extmetadata"])
def test_a_short_or_broken_api_answer_is_never_read_as_deleted_or_relicensed(
        dataset: tuple[World, Path], degrade: Callable[[dict[str, Any]], Any],
        exit_code: int) -> None:
    """An answer of HTTP 200 that says nothing about the files (no pages, some left out,
    no licence fields) once read as "every file deleted" or "every licence gone", and
    `--apply` then took the whole dataset down."""
    world, out = dataset
    world.commons.degrade = degrade
    before = papers(out)
    proc = recheck(out, "--json", "--apply", "--reason", "weekly")
    assert proc.returncode == exit_code, proc.stdout + proc.stderr
    assert papers(out) == before
    assert not (out / "takedowns.jsonl").exists()
    if exit_code == 1:
        assert "query.pages" in proc.stderr and "Traceback" not in proc.stderr
        return
    found = verdicts(proc.stdout)
    commons = [k for k, v in found.items() if v["outcome"] != "unchanged"]
    assert commons, found  # the degraded files are named, not passed over
    for key in commons:
        assert found[key]["outcome"] == "unreachable" and found[key]["refuse"] is False
    assert {v["outcome"] for v in found.values()} <= {"unchanged", "unreachable"}


def test_kill_9_mid_recheck_then_the_same_command_resumes_where_it_stopped(
        dataset: tuple[World, Path], tmp_path: Path) -> None:
    world, out = dataset
    world.drift()
    reference = tmp_path / "reference"
    shutil.copytree(out, reference)
    env = {"CLEANSET_RECHECK_CHUNK": "2"}
    expected = verdicts(recheck(reference, "--json", env=env).stdout)
    world.commons.requests.clear()
    killed = recheck(out, "--json", env={**env, "CLEANSET_CRASH_AT": "recheck_chunk:2"})
    assert killed.returncode == -9
    assert [a["pageids"] for a in world.imageinfo_requests()] == ["1000|1001", "1002|1003"]
    world.commons.requests.clear()
    resumed = recheck(out, "--json", env=env)
    assert resumed.returncode == 3, resumed.stderr
    assert "(resumed)" in resumed.stderr
    assert verdicts(resumed.stdout) == expected  # every sample, the first four from the ledger
    assert [a["pageids"] for a in world.imageinfo_requests()] == ["1004"]
    with sqlite3.connect(out / "ledger.sqlite") as db:
        assert db.execute("SELECT recheck, status, done FROM rechecks").fetchall() == [
            (1, "finished", 9)]
    # the answers behind the drifted verdicts: archived once, as an uninterrupted recheck's
    assert archived_evidence(out) == archived_evidence(reference)
    assert run_cli("verify", str(out)).returncode == 0


@pytest.mark.parametrize(("days", "resumed"), [(3, True), (100, False)])
def test_a_recheck_killed_long_ago_is_dated_by_its_start_or_started_afresh(
        dataset: tuple[World, Path], days: int, resumed: bool) -> None:
    """Resumed weeks later, a recheck was "finished" today with half its verdicts weeks old,
    and the card and report dated it today. It is now dated from its start; one older than
    the report's 90 days is abandoned and every sample judged afresh."""
    from datetime import UTC, datetime, timedelta

    world, out = dataset
    env = {"CLEANSET_RECHECK_CHUNK": "2"}
    killed = recheck(out, env={**env, "CLEANSET_CRASH_AT": "recheck_chunk:2"})
    assert killed.returncode == -9
    then = (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with sqlite3.connect(out / "ledger.sqlite") as db:  # as if killed `days` ago
        db.execute("UPDATE rechecks SET started_at = ?", (then,))
    world.commons.requests.clear()
    again = recheck(out, env=env)
    assert again.returncode == 0, again.stderr
    said = again.stdout
    with sqlite3.connect(out / "ledger.sqlite") as db:
        rows = db.execute("SELECT recheck, status, started_at FROM rechecks").fetchall()
    page = out.parent / "report.html"
    run_cli("report", str(out), "--out", str(page), check=True)
    text = re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8"))
    if resumed:
        assert f"resumed recheck 1, started {then} ({days} days ago)" in said
        assert rows == [(1, "finished", then)]
        assert [a["pageids"] for a in world.imageinfo_requests()] == ["1004"]
        assert f"Last rechecked {then} to " in text
    else:
        assert f"recheck 1, started {then} ({days} days ago) and never finished, was " \
               "abandoned" in said
        assert [(r, status) for r, status, _ in rows] == [(1, "abandoned"), (2, "finished")]
        assert len(world.imageinfo_requests()) == 3  # every sample asked again
        assert f"Last rechecked {then}" not in text


def test_a_killed_sample_larger_than_the_dataset_resumes_where_it_stopped(
        dataset: tuple[World, Path]) -> None:
    """`--sample N` of a dataset under N samples is recorded as a recheck of every sample;
    the same command, killed and run again, compared its N with that and started afresh,
    asking every source again, on every run."""
    world, out = dataset
    env = {"CLEANSET_RECHECK_CHUNK": "2"}
    killed = recheck(out, "--sample", "50", "--seed", "7",
                     env={**env, "CLEANSET_CRASH_AT": "recheck_chunk:2"})
    assert killed.returncode == -9
    world.commons.requests.clear()
    resumed = recheck(out, "--sample", "50", "--seed", "7", env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "(resumed)" in resumed.stdout and "--sample 50 covers all 9 samples" in resumed.stdout
    assert [a["pageids"] for a in world.imageinfo_requests()] == ["1004"]
    with sqlite3.connect(out / "ledger.sqlite") as db:
        assert db.execute("SELECT recheck, status, done FROM rechecks").fetchall() == [
            (1, "finished", 9)]


@pytest.mark.parametrize("hangs", ["/0.jpg", "/robots.txt"], ids=["HEAD", "robots.txt"])
def test_ctrl_c_while_a_host_does_not_answer_stops_at_once_and_the_rerun_finishes(
        tmp_path: Path, hangs: str) -> None:
    """Ctrl-C waited for the HEAD or consent file in flight to time out (20 s by default,
    here 600 s) before the recheck stopped: the pool's threads were joined on the way out."""
    import signal
    import threading

    entered, release = threading.Event(), threading.Event()
    image = make_image(5, (64, 48))
    hanging = {"on": False}

    def handle(request: Request) -> Response:
        if hanging["on"] and request.path == hangs:
            entered.set()
            release.wait(120)
        if request.path == "/0.jpg":
            return Response(image, content_type="image/jpeg", headers={"ETag": '"a"'})
        return Response("not found", status=404)

    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    server.expect_request(re.compile(".*")).respond_with_handler(handle)
    try:
        write_jsonl(tmp_path / "urls.jsonl", [{"url": server.url_for("/0.jpg"), "license": CC0}])
        recipe = write_recipe(tmp_path / "recipe.toml", recipe_text("hang", """
kind = "table"
name = "urls"
path = "urls.jsonl"
""").replace("timeout_s = 5", "timeout_s = 600"))
        out = tmp_path / "out"
        run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
        hanging["on"] = True
        proc = start_cli("recheck", str(out), "--no-progress")
        assert entered.wait(60), proc.communicate()
        proc.send_signal(signal.SIGINT)
        try:
            stdout, stderr = proc.communicate(timeout=60)  # not 600 s
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        assert proc.returncode == 130, stdout + stderr
        assert "interrupted" in stderr and "Traceback" not in stderr
        hanging["on"] = False
        release.set()
        again = recheck(out)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "unchanged: 1" in again.stdout
    finally:
        release.set()
        server.clear()
        server.stop()


def archived_evidence(out: Path) -> tuple[list[str], list[tuple[str, int, str]]]:
    """A recheck's evidence files, and which sample relied on which record (by target)."""
    with sqlite3.connect(out / "ledger.sqlite") as db:
        links = db.execute(
            "SELECT e.key, e.position, r.target_uri FROM recheck_evidence e JOIN "
            "evidence_records r ON r.record_id = e.record_id ORDER BY 1, 2").fetchall()
    return sorted(p.name for p in (out / "evidence").glob("*-recheck*")), links


def test_a_recheck_that_finds_nothing_still_archives_each_host_file_it_read_once(
        dataset: tuple[World, Path]) -> None:
    """What each host consented to on the day of a recheck was kept nowhere when every
    sample was unchanged: its robots.txt, ai.txt and tdmrep.json are archived once per host
    (no sample links to them), whatever they said, also over many chunks."""
    world, out = dataset
    world.hosts.robots = (200, "User-agent: *\nAllow: /\n")
    proc = recheck(out, env={"CLEANSET_RECHECK_CHUNK": "2"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with sqlite3.connect(f"file:{out / 'ledger.sqlite'}?mode=ro", uri=True) as db:
        kept = db.execute("SELECT kind, target_uri, status FROM evidence_records "
                          "WHERE build = -1 ORDER BY target_uri").fetchall()
        linked = db.execute("SELECT COUNT(*) FROM recheck_evidence").fetchone()[0]
    hosts = {world.commons_server.url_for("/"), world.hosts.server.url_for("/"),
             world.refusing.server.url_for("/")}
    assert sorted(t for _, t, _ in kept) == sorted(
        host.rstrip("/") + path for host in hosts for path in POLICY_FILES)
    assert (("robots.txt", world.hosts.server.url_for("/robots.txt"), 200)) in kept
    assert linked == 0  # nothing drifted: no sample relied on an answer
    assert run_cli("verify", str(out)).returncode == 0


@pytest.mark.parametrize("crash", ["recheck_archived:1", "recheck_archived:2"])
def test_a_recheck_killed_as_it_archives_leaves_no_file_no_commit_names(
        dataset: tuple[World, Path], tmp_path: Path, crash: str) -> None:
    """Killed after a chunk's evidence file was renamed into place but before the commit
    naming it: the same command deletes it, judges the chunk again and archives it once."""
    world, out = dataset
    world.drift()
    reference = tmp_path / "reference"
    shutil.copytree(out, reference)
    env = {"CLEANSET_RECHECK_CHUNK": "2"}
    recheck(reference, env=env)
    killed = recheck(out, env={**env, "CLEANSET_CRASH_AT": crash})
    assert killed.returncode == -9
    with sqlite3.connect(out / "ledger.sqlite") as db:
        named = {n for (n,) in db.execute("SELECT name FROM evidence_files")}
    assert [p.name for p in (out / "evidence").glob("*-recheck*") if p.name not in named]
    resumed = recheck(out, env=env)
    assert resumed.returncode == 3, resumed.stderr
    assert archived_evidence(out) == archived_evidence(reference)
    assert archived_evidence(out)[1]  # the drifted samples relied on archived answers
    assert run_cli("verify", str(out)).returncode == 0


def test_a_recheck_whose_json_reader_stops_early_is_still_finished(
        dataset: tuple[World, Path]) -> None:
    """`recheck --json | head -1`: the pipe closed while the verdicts were printed, after
    every sample was judged, and the recheck stayed unfinished; the same command resumed it,
    printed into a closed pipe again, and it never finished."""
    import sys

    from tests.conftest import FIXED_EPOCH, REPO

    world, out = dataset
    world.drift()
    env = {**os.environ, "SOURCE_DATE_EPOCH": FIXED_EPOCH, "PYTHONPATH": str(REPO)}
    reader = subprocess.Popen(["head", "-c", "1"], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL)
    proc = subprocess.run([sys.executable, "-m", "builder", "recheck", str(out), "--json",
                           "--no-progress"], stdout=reader.stdin, stderr=subprocess.PIPE,
                          text=True, env=env, timeout=300)
    reader.stdin.close()
    reader.wait(timeout=60)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    with sqlite3.connect(f"file:{out / 'ledger.sqlite'}?mode=ro", uri=True) as db:
        assert db.execute("SELECT recheck, status, done FROM rechecks").fetchall() == [
            (1, "finished", 9)]
    again = recheck(out, "--json")
    assert again.returncode == 3 and "(resumed)" not in again.stderr


def test_a_recheck_whose_json_reader_left_says_it_is_finished_with_nothing_to_resume(
        dataset: tuple[World, Path]) -> None:
    """The reader gone (`--json | head -1`), the recheck is finished and recorded, yet it
    said "Run it again with its output going somewhere that stays open to finish it": the
    rerun asks every source again (hours, on a large dataset) for nothing."""
    import sys

    from tests.conftest import REPO

    _, out = dataset
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader left before the first line
    try:
        proc = subprocess.run([sys.executable, "-m", "builder", "recheck", str(out), "--json",
                               "--no-progress"], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                              timeout=300)
    finally:
        os.close(write_end)
    assert proc.returncode == 141, proc.stderr
    assert "recorded as finished, so there is nothing to resume" in proc.stderr, proc.stderr
    assert "to finish it" not in proc.stderr
    with sqlite3.connect(f"file:{out / 'ledger.sqlite'}?mode=ro", uri=True) as db:
        assert db.execute("SELECT recheck, status FROM rechecks").fetchall() == [
            (1, "finished")]


def test_a_read_only_recheck_whose_json_reader_stops_early_says_nothing_was_recorded(
        dataset: tuple[World, Path], bound_by_permissions: list[str]) -> None:
    """On a copy this user may only read, `recheck --json | head -1` must not claim the
    recheck is "recorded as finished": a read-only copy's recheck records nothing."""
    import sys

    from tests.conftest import REPO
    from tests.test_readonly_audit import make_writable

    _, out = dataset
    for path in [out, *out.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader left before the first line
    try:
        proc = subprocess.run([*bound_by_permissions, sys.executable, "-m", "builder",
                               "recheck", str(out), "--json", "--no-progress"],
                              stdout=write_end, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    finally:
        os.close(write_end)
        make_writable(out)
    assert proc.returncode == 141, proc.stderr
    assert "read-only, so nothing was recorded" in proc.stderr
    assert "recorded as finished" not in proc.stderr


def test_ctrl_c_in_a_recheck_of_a_read_only_copy_does_not_promise_a_resume(
        dataset: tuple[World, Path], bound_by_permissions: list[str]) -> None:
    """A read-only copy's recheck records nothing and cannot resume, yet Ctrl-C said "run
    the same command again to resume": hours into a large dataset, the rerun started over."""
    import signal
    import sys

    from tests.conftest import REPO
    from tests.test_readonly_audit import make_writable

    _, out = dataset
    for path in [out, *out.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    proc = subprocess.Popen([*bound_by_permissions, sys.executable, "-m", "builder",
                             "recheck", str(out), "--no-progress"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO),
                                 "CLEANSET_STOP_AT": "recheck_judged"})
    try:
        assert stopped_itself(proc), proc.communicate()
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGCONT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        make_writable(out)
    assert proc.returncode == 130, stderr
    assert stderr == ("cleanset: interrupted; this directory is read-only, so nothing was "
                      "recorded and the same command starts over (a writable copy keeps what "
                      "it judged and resumes).\n")


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_ctrl_c_once_every_sample_is_judged_resumes_without_asking_any_source_again(
        dataset: tuple[World, Path], signal_name: str) -> None:
    """`recheck --json | less`, Ctrl-C while the pager holds the verdicts: the recheck was
    marked finished as it stopped, and the same command, "to resume", started a new one that
    asked every source again (hours, for a large dataset). It now stays unfinished with
    every verdict kept: the rerun asks nothing and prints them all."""
    import signal

    world, out = dataset
    world.drift()
    proc = start_cli("recheck", str(out), "--json", "--no-progress",
                     env={"CLEANSET_STOP_AT": "recheck_judged"})
    assert stopped_itself(proc), proc.communicate()
    proc.send_signal(getattr(signal, signal_name))
    proc.send_signal(signal.SIGCONT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == (130 if signal_name == "SIGINT" else 143), stderr
    assert stderr.count("\n") == 1 and "run the same command again to resume" in stderr
    with sqlite3.connect(f"file:{out / 'ledger.sqlite'}?mode=ro", uri=True) as db:
        assert db.execute("SELECT recheck, status, done FROM rechecks").fetchall() == [
            (1, "running", 9)]
    world.commons.requests.clear()
    world.hosts.seen.clear()
    world.refusing.seen.clear()
    again = recheck(out, "--json")
    assert again.returncode == 3, again.stderr
    assert "cleanset recheck 1 finished" in again.stderr and "(resumed)" in again.stderr
    assert {k: (v["outcome"], v["refuse"]) for k, v in verdicts(again.stdout).items()} \
        == EXPECTED
    assert world.commons.requests == [] and world.hosts.seen == [] \
        and world.refusing.seen == []  # nothing asked again: no API page, HEAD, robots.txt
    with sqlite3.connect(f"file:{out / 'ledger.sqlite'}?mode=ro", uri=True) as db:
        assert db.execute("SELECT recheck, status, done FROM rechecks").fetchall() == [
            (1, "finished", 9)]


def test_sample_rechecks_a_seeded_random_sample_and_reports_the_seed(
        dataset: tuple[World, Path]) -> None:
    world, out = dataset
    world.drift()
    first = recheck(out, "--json", "--sample", "4")
    seed = re.search(r"a random sample, seed (\d+)", first.stderr)
    assert seed, first.stderr
    picked = sorted(verdicts(first.stdout))
    assert len(picked) == 4 and set(picked) <= set(EXPECTED)
    assert "4 samples rechecked" in first.stderr
    again = recheck(out, "--json", "--sample", "4", "--seed", seed.group(1))
    assert sorted(verdicts(again.stdout)) == picked
    for key, verdict in verdicts(again.stdout).items():
        assert (verdict["outcome"], verdict["refuse"]) == EXPECTED[key]
    assert again.returncode == (3 if set(picked) & set(REFUSED) else 0)


def test_source_limits_the_recheck_to_that_source(dataset: tuple[World, Path]) -> None:
    world, out = dataset
    world.drift()
    proc = recheck(out, "--json", "--source", "urls")
    assert sorted(verdicts(proc.stdout)) == ["0000000005", "0000000006", "0000000007",
                                             "0000000008"]
    assert world.commons.requests == []
    bad = recheck(out, "--source", "flickr")
    assert bad.returncode == 2
    assert "--source flickr" in bad.stderr and "commons, urls" in bad.stderr


def test_a_missing_recipe_is_exit_2_naming_recipe_and_recipe_path_fixes_it(
        dataset: tuple[World, Path], tmp_path: Path) -> None:
    world, out = dataset
    (tmp_path / "moved").mkdir()
    moved = tmp_path / "moved" / "elsewhere.toml"
    shutil.copy(world.recipe, moved)
    shutil.copy(world.recipe.with_name("urls.jsonl"), moved.parent)  # its table, beside it
    # gone, and its table with it: the text the ledger kept of it cannot be read there
    with sqlite3.connect(out / "ledger.sqlite") as db:
        db.execute("UPDATE builds SET recipe_path = ?", (str(tmp_path / "gone.toml"),))
    proc = recheck(out)
    assert proc.returncode == 2
    assert "gone.toml" in proc.stderr and "--recipe PATH" in proc.stderr
    assert "Traceback" not in proc.stderr
    with sqlite3.connect(out / "ledger.sqlite") as db:
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'rechecks'"
                          ).fetchone() is None  # nothing recorded
    assert recheck(out, "--recipe", str(moved)).returncode == 0


def _folder_versions(tmp_path: Path, *, in_place: bool) -> tuple[Path, Path]:
    """A dataset built twice from a folder source `pics`: version 1 from folder v1, version
    2 from folder v2, with one recipe edited in place or two recipe files."""
    from tests.test_dedup_build import put

    for folder, seeds in (("v1", (1, 2, 3)), ("v2", (4, 5))):
        for seed in seeds:
            put(tmp_path / folder, f"{seed}.jpg", make_image(seed))
    out = tmp_path / "out"
    recipe = tmp_path / "recipe.toml"
    for folder in ("v1", "v2"):
        if not in_place:
            recipe = tmp_path / f"{folder}.toml"
        write_recipe(recipe, f"""
[dataset]
name = "versions"
[policy]
use = "commercial"
[[sources]]
kind = "folder"
name = "pics"
path = "{folder}"
[image]
min_width = 8
min_height = 8
""")
        run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    return out, recipe


@pytest.mark.parametrize("in_place", [True, False], ids=["recipe edited", "two recipes"])
def test_a_folder_source_moved_to_a_new_folder_for_version_2_keeps_version_1_s_images(
        tmp_path: Path, in_place: bool) -> None:
    """Every sample was asked about with its source as the newest build configured it: the
    images of version 1, still in v1/, were all "deleted" (looked for in v2/), and `--apply`
    took them down; with the recipe edited in place the recheck stopped with exit 2 instead,
    asking for the recipe of version 1 (the ledger keeps its text)."""
    out, recipe = _folder_versions(tmp_path, in_place=in_place)
    proc = recheck(out, "--json", "--apply", "--reason", "monthly")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = verdicts(proc.stdout)
    assert len(found) == 5 and {v["outcome"] for v in found.values()} == {"unchanged"}
    assert not (out / "takedowns.jsonl").exists()
    if in_place:
        assert "build 1: its recipe" in proc.stderr and "read as the ledger recorded it" \
            in proc.stderr
        # the edited recipe given as the fix the error once asked for: the same answer
        again = recheck(out, "--json", "--recipe", str(recipe))
        assert again.returncode == 0, again.stdout + again.stderr
        assert {v["outcome"] for v in verdicts(again.stdout).values()} == {"unchanged"}
    (tmp_path / "v1" / "2.jpg").unlink()  # a real deletion is still one
    found = verdicts(recheck(out, "--json").stdout)
    assert (found["0000000001"]["outcome"], found["0000000001"]["refuse"]) == ("deleted", True)
    assert str(tmp_path / "v1" / "2.jpg") in found["0000000001"]["detail"]


def test_a_recipe_given_but_not_used_is_said_not_ignored_in_silence(
        dataset: tuple[World, Path], tmp_path: Path) -> None:
    """With the recorded recipe unchanged, another --recipe was passed over without a word:
    the user took its sources for the ones rechecked."""
    world, out = dataset
    other = write_recipe(tmp_path / "other.toml", recipe_text("other", """
kind = "wikimedia"
name = "elsewhere"
api = "http://127.0.0.1:9/w/api.php"
category = "Other files"
"""))
    proc = recheck(out, "--recipe", str(other))
    assert proc.returncode == 0, proc.stderr
    assert f"note: --recipe {other} was not used" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["--apply"], "--apply needs --reason"),
    (["--reason", "x"], "--reason goes with --apply"),
    (["--sample", "0"], "--sample 0"),
    (["--seed", "3"], "--seed goes with --sample"),
])
def test_bad_arguments_are_exit_2_and_change_nothing(dataset: tuple[World, Path],
                                                     args: list[str], message: str) -> None:
    _, out = dataset
    before = (out / "ledger.sqlite").read_bytes()
    proc = recheck(out, *args)
    assert proc.returncode == 2 and message in proc.stderr
    assert (out / "ledger.sqlite").read_bytes() == before


def test_an_unknown_directory_is_exit_2(tmp_path: Path) -> None:
    proc = recheck(tmp_path / "nope")
    assert proc.returncode == 2 and "no such directory" in proc.stderr
    proc = recheck(tmp_path)
    assert proc.returncode == 2 and "no ledger.sqlite" in proc.stderr


def test_a_work_listed_since_the_build_in_a_denylist_is_refused_by_the_recheck_and_applied(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    """An opt-out registry's export (the recipe's `[optout] denylist`) refreshed after the
    build, and the dataset's own denylist: a recheck read neither, so a work listed since
    stayed in the dataset on every recheck. Each kind of entry, read from what is recorded
    of each sample (nothing downloaded), as a build's gate reads it."""
    serve_no_site_policies(httpserver)
    images = [make_image(60 + i, (64, 48)) for i in range(6)]
    rows = []
    for i, data in enumerate(images):
        httpserver.expect_request(f"/d/{i}.jpg").respond_with_data(
            data, content_type="image/jpeg", headers={"ETag": f'"e{i}"'})
        rows.append({"id": f"w{i}", "url": httpserver.url_for(f"/d/{i}.jpg"), "license": CC0,
                     "creator": "Ada" if i == 1 else f"Someone {i}",
                     "landing_url": f"https://{'gallery.artist.example' if i == 2 else 'example.org'}"
                                    f"/works/{i}"})
    registry = tmp_path / "registry.jsonl"
    registry.write_text("")
    out = build_table(tmp_path, rows, "registry", '\n[optout]\ndenylist = "registry.jsonl"\n')
    with sqlite3.connect(out / "ledger.sqlite") as db:
        key_of = dict(db.execute("SELECT source_id, key FROM samples"))
        pdq_4 = db.execute("SELECT pdq FROM samples WHERE source_id = 'w4'").fetchone()[0]
    assert recheck(out).returncode == 0

    registry.write_text("\n".join(json.dumps(e) for e in [
        {"kind": "url", "value": rows[0]["url"] + "?utm_source=x", "reason": "registry 1"},
        {"kind": "creator", "value": "ADA", "reason": "registry 2"},
        {"kind": "site", "value": "artist.example", "reason": "registry 3"},
        {"kind": "sha256", "value": hashlib.sha256(images[3]).hexdigest(), "reason": "r4"},
        {"kind": "pdq", "value": pdq_4, "reason": "registry 5"}]) + "\n")
    httpserver.clear_log()
    proc = recheck(out, "--json")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    found = {v["key"]: v for v in map(json.loads, proc.stdout.splitlines())}
    said = {i: found[key_of[f"w{i}"]] for i in range(6)}
    assert all(said[i]["outcome"] == "optout" and said[i]["refuse"] for i in range(5)), said
    assert said[0]["detail"].startswith("denylist: URL ") and "registry 1" in said[0]["detail"]
    assert said[1]["detail"].startswith("denylist: creator 'Ada'")
    assert said[2]["detail"].startswith("denylist: site artist.example")
    assert said[3]["detail"].startswith("denylist: sha256 ")
    assert said[4]["detail"].startswith("denylist: PDQ within 0 bits")
    assert str(registry) in said[0]["detail"]
    assert said[5]["outcome"] == "unchanged"
    assert not any(request.path.startswith("/d/") and request.method == "GET"
                   for request, _ in httpserver.log)  # HEADs only, no image fetched

    applied = recheck(out, "--apply", "--reason", "the registry lists them")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert sorted(r["key"] for r in pq.read_table(out / "manifest.parquet").to_pylist()) == \
        [key_of["w5"]]
    assert run_cli("verify", str(out)).returncode == 0


ALLOW_ALL = "User-agent: *\nAllow: /\n"


@pytest.fixture
def artist_host() -> Iterator[tuple[HTTPServer, dict[str, str]]]:
    """A host of its own (127.0.0.1; httpserver's URLs say localhost) serving /art/, and
    the text of its robots.txt, which a test may rewrite."""
    server = HTTPServer(host="127.0.0.1", port=0)
    server.no_handler_status_code = 404
    server.start()
    robots = {"text": ALLOW_ALL}
    server.expect_request("/robots.txt").respond_with_handler(
        lambda _request: Response(robots["text"], content_type="text/plain"))
    try:
        yield server, robots
    finally:
        server.clear()
        server.stop()


def assert_rechecked_where_it_is_served(out: Path, robots: dict[str, str], said: str) -> None:
    """A reservation of /art/ by the artist host, then a site line denylisting it: each
    refuses the one sample, the first with `said` in its detail."""
    assert recheck(out).returncode == 0
    robots["text"] = "User-agent: *\nDisallow: /art/\n"
    proc = recheck(out, "--json")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    (verdict,) = map(json.loads, proc.stdout.splitlines())
    assert verdict["outcome"] == "optout" and verdict["refuse"]
    assert verdict["detail"].startswith("robots.txt: ") and said in verdict["detail"]
    # The host denylisted since (a takedown --site of it, no sample taken down).
    robots["text"] = ALLOW_ALL
    (out / "denylist.jsonl").write_text(json.dumps(
        {"kind": "site", "value": "127.0.0.1", "reason": "the artist's request"}) + "\n")
    proc = recheck(out, "--json")
    (verdict,) = map(json.loads, proc.stdout.splitlines())
    assert proc.returncode == 3 and verdict["outcome"] == "optout", proc.stdout
    assert verdict["detail"].startswith("denylist: site 127.0.0.1 is on the denylist")


def test_a_file_url_that_redirects_is_rechecked_against_the_files_of_where_it_leads(
        httpserver: HTTPServer, artist_host: tuple[HTTPServer, dict[str, str]],
        tmp_path: Path) -> None:
    """A build reads the robots.txt of each redirect's target before following it; a
    recheck read only the file URL's own host, so a reservation added where the image is
    actually served (a CDN, the artist's site behind a short link) was never seen."""
    serve_no_site_policies(httpserver)
    other, robots = artist_host
    other.expect_request("/art/a.jpg").respond_with_data(
        make_image(77, (64, 48)), content_type="image/jpeg", headers={"ETag": '"a"'})
    httpserver.expect_request("/s/a").respond_with_data(
        "", status=302, headers={"Location": other.url_for("/art/a.jpg")})
    out = build_table(tmp_path, [{"id": "a", "url": httpserver.url_for("/s/a"),
                                  "license": CC0}], "redirected")
    assert_rechecked_where_it_is_served(out, robots,
                                        f"(redirect to {other.url_for('/art/a.jpg')})")


def test_an_api_source_s_file_is_rechecked_against_the_files_of_where_the_build_got_it(
        httpserver: HTTPServer, artist_host: tuple[HTTPServer, dict[str, str]],
        tmp_path: Path) -> None:
    """An API source's recheck asks the API, not the file URL: where that URL redirected
    was never known to it, so a reservation added where the image was really served (the
    provider behind an aggregator's link) stayed unseen. The build's own record of where
    the bytes came from now says which host's files to read."""
    serve_no_site_policies(httpserver)
    other, robots = artist_host
    image = make_image(78, (64, 48))
    served = other.url_for("/art/r.jpg")
    other.expect_request("/art/r.jpg").respond_with_data(image, content_type="image/jpeg")
    httpserver.expect_request("/upload/r.jpg").respond_with_data(
        "", status=302, headers={"Location": served})
    page = make_page(httpserver, 0, CC0_CLAIM)
    info = page["imageinfo"][0]
    info["url"], info["sha1"] = (httpserver.url_for("/upload/r.jpg"),
                                 hashlib.sha1(image).hexdigest())
    commons = FakeCommons(httpserver, [page])
    recipe = write_recipe(tmp_path / "recipe.toml", recipe_text("api-redirected", f"""
kind = "wikimedia"
name = "commons"
api = "{commons.url}"
category = "Test files"
"""))
    out = tmp_path / "out"
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    other.clear_log()
    assert_rechecked_where_it_is_served(out, robots, f"(redirect to {served} when built)")
    assert "/art/r.jpg" not in [r.path for r, _ in other.log]  # its host's files read only


@pytest.mark.parametrize(("root", "outcome"), [(404, "unreachable"), (500, "unreachable"),
                                               (200, "deleted"), (403, "deleted")])
def test_a_host_holding_one_file_of_ours_answering_404_is_judged_by_its_root(
        root: int, outcome: str, tmp_path: Path) -> None:
    """A host with one file of the dataset has no other file to tell "gone" from "moved":
    its 404 was `deleted`, and `--apply` took the work down and denylisted it for good on a
    misconfiguration's word. Its root now decides: a server there (a page, 403...) means the
    file is gone; a root answering 404 or 5xx too leaves it unreachable."""
    state = {"file": 200}
    image = make_image(9, (64, 48))

    def handle(request: Request) -> Response:
        if request.path == "/only.jpg":
            if state["file"] != 200:
                return Response("not found", status=state["file"])
            return Response(image, content_type="image/jpeg", headers={"ETag": '"x"'})
        if request.path == "/":
            return Response("home", status=root, content_type="text/html")
        return Response("not found", status=404)

    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    server.expect_request(re.compile(".*")).respond_with_handler(handle)
    try:
        out = build_table(tmp_path, [{"url": server.url_for("/only.jpg"), "license": CC0}],
                          "one")
        state["file"] = 404
        proc = recheck(out, "--json", "--apply", "--reason", "weekly")
        (verdict,) = map(json.loads, proc.stdout.splitlines())
        assert verdict["outcome"] == outcome, verdict
        if outcome == "unreachable":
            assert proc.returncode == 4 and verdict["refuse"] is False
            assert f"its root ({server.url_for('/')}) answered HTTP {root} too" in \
                verdict["detail"]
            assert not (out / "takedowns.jsonl").exists()
        else:
            assert proc.returncode == 0 and (out / "takedowns.jsonl").exists()
    finally:
        server.clear()
        server.stop()
