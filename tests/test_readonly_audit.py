"""Auditing a copy nobody may write: read-only commands read only, see every committed row, and
say clearly when a build is still writing the directory. Through the real CLI."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pwd
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
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
from tests.test_dedup_build import folder_recipe, put

IMAGES = 6
# Every command that only reads an output directory, as a careless auditor would type it:
# (name, arguments given the copy, a writable scratch directory and the query images).
READ_ONLY_COMMANDS: list[tuple[str, Callable[[Path, Path, Path], list[str]]]] = [
    ("verify", lambda d, scratch, pics: ["verify", str(d)]),
    ("lookup", lambda d, scratch, pics: ["lookup", str(d), str(pics / "p1.jpg")]),
    ("report --out", lambda d, scratch, pics: ["report", str(d), "--out",
                                               str(scratch / "report.html")]),
    ("diff versions", lambda d, scratch, pics: ["diff", str(d)]),
    ("diff directories", lambda d, scratch, pics: ["diff", str(d), str(d)]),
    ("takedown --dry-run", lambda d, scratch, pics: ["takedown", str(d), "--key", "0000000001",
                                                     "--dry-run"]),
    ("evidence", lambda d, scratch, pics: ["evidence", str(d), "0000000001"]),
    ("evidence --json", lambda d, scratch, pics: ["evidence", str(d), "0000000001", "--json"]),
]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished build from a folder: DIR/out, with its images in DIR/pics."""
    root = tmp_path_factory.mktemp("built")
    for i in range(IMAGES):
        put(root / "pics", f"p{i}.jpg", make_image(300 + i), creator=f"Creator {i % 2}")
    run_cli("build", str(folder_recipe(root, ["pics"])), "--out", str(root / "out"),
            "--no-progress", check=True)
    return root


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A scratch directory every user can reach (pytest's own is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="cleanset-readonly-"))
    path.chmod(0o755)
    yield path
    make_writable(path)
    shutil.rmtree(path)


def read_only_copy(built: Path, dest: Path) -> tuple[Path, Path]:
    """(the dataset, its query images) copied under `dest`, the dataset made `chmod -R a-w`."""
    copy = dest / "dataset"
    shutil.copytree(built / "out", copy)
    pics = dest / "pics"
    shutil.copytree(built / "pics", pics)
    for path in [copy, *copy.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return copy, pics


def make_writable(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every entry (hidden ones too): mode, mtime and content hash. A file created and deleted
    again still changes its directory's mtime."""
    out = {}
    for path in sorted([root, *root.rglob("*")]):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        out[str(path.relative_to(root))] = (st.st_mode, st.st_mtime_ns, digest)
    return out


def writable_scratch(parent: Path, owner: pwd.struct_passwd | None = None) -> Path:
    scratch = parent / "scratch"
    scratch.mkdir()
    if owner is not None:
        os.chown(scratch, owner.pw_uid, owner.pw_gid)
    return scratch


@pytest.fixture(scope="module")
def as_nobody() -> list[str]:
    """The argv prefix that runs a command as user `nobody`: a user without write access.

    It gets CAP_DAC_READ_SEARCH where the kernel allows, which lets it read any file (the
    interpreter under root's private home, the test's data under root's 0700 temporary
    directory) and nothing more: every write is still denied by the files' permissions,
    which is what is being tested.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        pytest.skip("needs setpriv and root to run commands as another user")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    base = [setpriv, f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]
    read_anything = ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    for prefix in (base + read_anything, base):
        probe = subprocess.run([*prefix, sys.executable, "-c", "import builder.cli, pyarrow"],
                               env={**os.environ, "PYTHONPATH": str(REPO)}, cwd="/",
                               capture_output=True, timeout=60)
        if probe.returncode == 0:
            return prefix
    pytest.skip("user nobody cannot run this Python")


def run_as(prefix: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SOURCE_DATE_EPOCH": FIXED_EPOCH, "PYTHONPATH": str(REPO)}
    return subprocess.run([*prefix, sys.executable, "-m", "builder", *args], env=env, cwd="/",
                          capture_output=True, text=True, timeout=300)


# -- item 4: a read-only copy, as root and as a user without write access -------------------
def test_every_read_only_command_leaves_a_read_only_copy_byte_identical(
        built: Path, tmp_path: Path) -> None:
    copy, pics = read_only_copy(built, tmp_path)
    scratch = writable_scratch(tmp_path)
    before = snapshot(copy)
    for name, argv in READ_ONLY_COMMANDS:
        proc = run_cli(*argv(copy, scratch, pics))
        assert proc.returncode == 0, (name, proc.stderr)
        assert snapshot(copy) == before, f"{name} changed the directory it only reads"
    assert not list(copy.glob("ledger.sqlite-*")) and not (copy / ".lock").exists()


def interrupted_as_the_ledger_opens(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """`cleanset ARGV` given a real SIGINT, sent by the process to itself as it opens the
    ledger."""
    code = ("import os, signal, sys\n"
            "def hook(event, args):\n"
            "    if event == 'sqlite3.connect':\n"
            "        os.kill(os.getpid(), signal.SIGINT)\n"
            "sys.addaudithook(hook)\n"
            "from builder.cli import main\n"
            f"sys.exit(main({argv!r}))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)


@pytest.mark.parametrize("name", [name for name, _ in READ_ONLY_COMMANDS
                                  # a page it writes: its own test; manifests open no ledger
                                  if name not in ("report --out", "diff directories")])
def test_ctrl_c_of_a_read_only_command_says_it_changed_nothing_not_resume(
        name: str, built: Path, tmp_path: Path) -> None:
    """Ctrl-C during `verify` (or lookup, diff, evidence, a dry run) said "run the same
    command again to resume", as if the audit had been changing the copy half-way."""
    copy, pics = read_only_copy(built, tmp_path)
    argv = dict(READ_ONLY_COMMANDS)[name](copy, writable_scratch(tmp_path), pics)
    before = snapshot(copy)
    proc = interrupted_as_the_ledger_opens(argv)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.endswith("cleanset: interrupted; it only reads, so nothing changed.\n")
    assert snapshot(copy) == before


def test_ctrl_c_of_a_report_says_the_page_was_not_written_not_resume(
        built: Path, tmp_path: Path) -> None:
    """Ctrl-C during `report --out` said "run the same command again to resume": there is
    nothing to resume, and the page it was making is not left half-written."""
    copy, pics = read_only_copy(built, tmp_path)
    scratch = writable_scratch(tmp_path)
    argv = dict(READ_ONLY_COMMANDS)["report --out"](copy, scratch, pics)
    before = snapshot(copy)
    proc = interrupted_as_the_ledger_opens(argv)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.endswith(
        "cleanset: interrupted; the report was not written (nothing in the dataset changed); "
        "run the same command again to write it.\n")
    assert "resume" not in proc.stderr
    assert snapshot(copy) == before
    assert not [p for p in scratch.rglob("*") if p.name.endswith(".html")]


@pytest.mark.parametrize("name", [name for name, _ in READ_ONLY_COMMANDS
                                  if name != "diff directories"])  # manifests only: always could
def test_a_user_without_write_access_can_run_every_read_only_command(
        name: str, built: Path, shared_tmp: Path, as_nobody: list[str]) -> None:
    copy, pics = read_only_copy(built, shared_tmp)
    scratch = writable_scratch(shared_tmp, owner=pwd.getpwnam("nobody"))
    before = snapshot(copy)
    argv = dict(READ_ONLY_COMMANDS)[name](copy, scratch, pics)
    proc = run_as(as_nobody, *argv)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert snapshot(copy) == before
    if name == "verify":
        assert "verify: OK: 6 samples" in proc.stdout
    if name == "lookup":
        assert '"exact": true' in proc.stdout
    if name == "report --out":
        assert "<svg" in (scratch / "report.html").read_text(encoding="utf-8")


def test_a_user_without_write_access_can_recheck_and_nothing_is_recorded_there(
        built: Path, shared_tmp: Path, as_nobody: list[str]) -> None:
    copy, _ = read_only_copy(built, shared_tmp)
    before = snapshot(copy)
    proc = run_as(as_nobody, "recheck", str(copy), "--json", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    outcomes = [json.loads(line)["outcome"] for line in proc.stdout.splitlines()]
    assert outcomes == ["unchanged"] * IMAGES
    assert "not recorded: the directory is read-only" in proc.stderr
    # not "recheck 1": that number, in this ledger, is another recheck's (or none's)
    assert "cleanset recheck (not recorded) finished: 6 samples" in proc.stderr
    assert snapshot(copy) == before
    applied = run_as(as_nobody, "recheck", str(copy), "--apply", "--reason", "gone")
    assert applied.returncode == 2 and "is read-only; --apply" in applied.stderr
    assert "Traceback" not in applied.stderr and snapshot(copy) == before


def test_a_takedown_in_a_directory_the_user_cannot_write_exits_2_and_changes_nothing(
        built: Path, shared_tmp: Path, as_nobody: list[str]) -> None:
    copy, _ = read_only_copy(built, shared_tmp)
    before = snapshot(copy)
    proc = run_as(as_nobody, "takedown", str(copy), "--key", "0000000001", "--reason", "asked")
    assert proc.returncode == 2, proc.stderr
    assert "is read-only" in proc.stderr and "--dry-run" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert snapshot(copy) == before


@pytest.mark.parametrize("locked", ["evidence", "denylist.jsonl"])
def test_a_takedown_that_could_not_write_its_archive_or_denylist_is_refused_before_any_change(
        built: Path, shared_tmp: Path, as_nobody: list[str], locked: str) -> None:
    """The user owns the directory but not evidence/ (or denylist.jsonl): the takedown once
    renamed its shards, then stopped with "Permission denied" half-applied, the journal left
    for every later command to trip over."""
    copy = shared_tmp / "dataset"
    shutil.copytree(built / "out", copy)
    nobody = pwd.getpwnam("nobody")
    for path in [copy, *copy.rglob("*")]:
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    first = run_as(as_nobody, "takedown", str(copy), "--key", "0000000000", "--reason", "asked")
    assert first.returncode == 0, first.stderr  # writes denylist.jsonl
    (copy / locked).chmod(0o555 if locked == "evidence" else 0o444)
    before = snapshot(copy)
    proc = run_as(as_nobody, "takedown", str(copy), "--key", "0000000001", "--reason", "asked")
    assert proc.returncode == 2, proc.stderr
    assert f"{copy / locked} cannot be written" in proc.stderr and "Nothing changed" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert snapshot(copy) == before  # no journal, no shard renamed


def test_report_of_a_directory_it_cannot_write_names_out_and_exits_2(
        built: Path, shared_tmp: Path, as_nobody: list[str]) -> None:
    copy, _ = read_only_copy(built, shared_tmp)
    proc = run_as(as_nobody, "report", str(copy))
    assert proc.returncode == 2, proc.stderr
    assert "--out FILE" in proc.stderr and str(copy / "report.html") in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (copy / "report.html").exists()


def test_committed_rows_left_in_the_wal_by_a_crashed_build_are_read_not_ignored(
        built: Path, tmp_path: Path) -> None:
    """A build killed before its last checkpoint leaves committed rows in ledger.sqlite-wal
    only: an immutable open would report the stale ledger; the copy must not."""
    copy = tmp_path / "crashed"
    shutil.copytree(built / "out", copy)
    gone = pq.read_table(copy / "manifest.parquet").to_pylist()[0]
    crash = ("import os, sqlite3, sys\n"
             "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
             "db.execute('PRAGMA wal_autocheckpoint=0')\n"
             "db.execute(\"UPDATE meta SET value = 'renamed-in-the-wal'"
             " WHERE key = 'dataset_name'\")\n"
             "db.execute('DELETE FROM samples WHERE key = ?', (sys.argv[2],))\n"
             "os._exit(0)  # killed: no checkpoint, no cleanup\n")
    subprocess.run([sys.executable, "-c", crash, str(copy / "ledger.sqlite"), gone["key"]],
                   check=True, timeout=60)
    assert (copy / "ledger.sqlite-wal").stat().st_size > 0
    pics = built / "pics"
    for path in [copy, *copy.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    before = snapshot(copy)

    lookup = run_cli("lookup", str(copy), str(pics / gone["source_id"]), check=True)
    assert gone["key"] not in lookup.stdout  # its row was deleted in the WAL
    verify = run_cli("verify", str(copy))
    assert verify.returncode == 1
    assert f"{gone['key']}: sample not in the ledger" in verify.stdout
    assert snapshot(copy) == before, "the WAL must be read where it is, not checkpointed"
    run_cli("report", str(copy), "--out", str(tmp_path / "report.html"), check=True)
    assert "renamed-in-the-wal" in (tmp_path / "report.html").read_text(encoding="utf-8")
    assert snapshot(copy) == before


# -- item 5: a build still writing the directory ---------------------------------------------
def test_read_only_commands_during_a_build_name_its_pid_and_exit_1(
        httpserver: HTTPServer, built: Path, tmp_path: Path) -> None:
    """A real build, parked while its images are fetched (its lock held, its ledger in a
    write transaction): every read-only command says so instead of `database is locked`, and
    every command that writes names the build too."""
    parked = threading.Event()
    release = threading.Event()

    def slow_image(request: Request) -> Response:
        parked.set()
        release.wait(timeout=120)
        return Response(make_image(400 + int(Path(request.path).stem)),
                        content_type="image/jpeg")

    serve_no_site_policies(httpserver)
    rows = []
    for i in range(3):
        httpserver.expect_request(f"/{i}.jpg").respond_with_handler(slow_image)
        rows.append({"id": f"img{i}", "url": httpserver.url_for(f"/{i}.jpg"),
                     "license": "https://creativecommons.org/publicdomain/zero/1.0/"})
    table = write_jsonl(tmp_path / "urls.jsonl", rows)
    recipe = write_recipe(tmp_path / "recipe.toml", f"""
[dataset]
name = "still-building"
samples_per_shard = 2
[policy]
use = "commercial"
[[sources]]
kind = "table"
path = "{table.name}"
[fetch]
allow_private_addresses = true
retries = 0
workers = 1
""")
    out = tmp_path / "out"
    env = {**os.environ, "SOURCE_DATE_EPOCH": FIXED_EPOCH, "PYTHONPATH": str(REPO)}
    build = subprocess.Popen([sys.executable, "-m", "builder", "build", str(recipe), "--out",
                              str(out), "--no-progress"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    scratch = writable_scratch(tmp_path)
    try:
        assert parked.wait(timeout=120)
        for name, argv in READ_ONLY_COMMANDS:
            proc = run_cli(*argv(out, scratch, built / "pics"))
            assert proc.returncode == 1, (name, proc.stdout, proc.stderr)
            assert f"a build (pid {build.pid}) is writing this directory" in proc.stderr, name
            assert f"run `cleanset {argv(out, scratch, built / 'pics')[0]}" in proc.stderr
            assert "Traceback" not in proc.stderr and "locked" not in proc.stderr
        # The commands that write said only "another cleanset process (pid N) is working on
        # this output directory", and told a takedown to "go to another --out".
        for argv in (["takedown", str(out), "--key", "0000000000", "--reason", "r"],
                     ["recheck", str(out), "--apply", "--reason", "r"],
                     ["build", str(recipe), "--out", str(out), "--no-progress"]):
            proc = run_cli(*argv)
            assert proc.returncode == 1, (argv, proc.stdout, proc.stderr)
            assert (f"a build (pid {build.pid}) is writing this output directory. Wait for "
                    "it to finish and run the same command again") in proc.stderr, proc.stderr
            assert ("another --out" in proc.stderr) is (argv[0] == "build"), proc.stderr
            assert "Traceback" not in proc.stderr
    finally:
        release.set()
        _, err = build.communicate(timeout=300)
    assert build.returncode == 0, err
    assert run_cli("verify", str(out)).returncode == 0  # as promised: once it has finished


def test_a_build_refuses_while_an_audit_reads_the_directory(
        built: Path, tmp_path: Path) -> None:
    from builder.lock import ReadLock

    out = tmp_path / "out"
    shutil.copytree(built / "out", out)
    recipe = folder_recipe(built, ["pics"], name="recipe.toml")
    with ReadLock(out, "verify"):
        proc = run_cli("build", str(recipe), "--out", str(out), "--no-progress")
    assert proc.returncode == 1
    # pytest holds it, so no command is named; a reader, so "reading"
    assert f"another cleanset process (pid {os.getpid()}) is reading" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- item 21: no lock file left behind; older outputs keep theirs ---------------------------
def test_a_build_leaves_no_lock_file_in_its_output_directory(built: Path) -> None:
    assert sorted(p.name for p in (built / "out").iterdir() if p.name.startswith(".")) == []


def test_an_older_cleanset_holding_its_lock_file_is_respected_and_the_file_kept(
        built: Path, tmp_path: Path) -> None:
    out = tmp_path / "old-output"
    shutil.copytree(built / "out", out)
    (out / ".lock").write_text("4242", encoding="utf-8")  # left by an older version

    fd = os.open(out / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # an older cleanset at work: it locks this file
        proc = run_cli("verify", str(out))
        assert proc.returncode == 1
        assert "is writing this directory; run `cleanset verify` again" in proc.stderr
    finally:
        os.close(fd)
    run_cli("verify", str(out), check=True)
    run_cli("build", str(folder_recipe(built, ["pics"])), "--out", str(out), "--no-progress",
            check=True)
    assert (out / ".lock").read_text(encoding="utf-8") == "4242"  # never rewritten nor removed


def test_the_ledger_opened_read_only_refuses_writes(built: Path) -> None:
    from builder.ledger import Ledger

    ledger = Ledger(built / "out" / "ledger.sqlite", readonly=True)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            ledger.set_meta("dataset_name", "changed")
    finally:
        ledger.close()
