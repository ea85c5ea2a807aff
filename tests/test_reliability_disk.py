"""Disk and permission faults: a clear error, earlier shards intact, and the same command
finishes the job once the fault is gone, byte-identical to a build that never failed.

How the faults are made (tests run as root in CI, and root ignores chmod):
- disk full during a shard: the build runs under RLIMIT_FSIZE (with SIGXFSZ ignored, so the
  write fails with EFBIG instead of killing the process), small enough that the shard holding
  one large image cannot be written; and, where the test may mount, a real 1 MiB tmpfs (ENOSPC);
- unwritable output: --out below a regular file (ENOTDIR), and a read-only tmpfs (EROFS) where
  mounting is allowed.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import FIXED_EPOCH, REPO, make_image, run_cli, write_recipe

CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"
LIMIT = 1_000_000
ENV = {"CLEANSET_COMMIT_EVERY": "2", "OMP_NUM_THREADS": "1"}


def noise_png(seed: int, size: tuple[int, int]) -> bytes:
    """Incompressible: a PNG of random pixels is about 3 bytes per pixel."""
    rng = random.Random(seed)
    img = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    """Six small images (two full shards), then one of ~1.4 MB, then two small ones."""
    images = tmp_path / "images"
    images.mkdir()
    for i in range(9):
        data = noise_png(i, (800, 600)) if i == 6 else make_image(i, (48, 32), fmt="PNG")
        (images / f"img{i}.png").write_bytes(data)
    return write_recipe(tmp_path / "recipe.toml", f"""
[dataset]
name = "disk-faults"
samples_per_shard = 3
[policy]
use = "commercial"
[[sources]]
kind = "folder"
path = "images"
license = "{CC0}"
""")


def run_limited(args: list[str], fsize: int) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write(), as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    env = {**os.environ, "SOURCE_DATE_EPOCH": FIXED_EPOCH, "PYTHONPATH": str(REPO), **ENV}
    return subprocess.run([sys.executable, "-m", "builder", *args], capture_output=True,
                          text=True, env=env, preexec_fn=limit, timeout=300)


def build_args(recipe: Path, out: Path) -> list[str]:
    return ["build", str(recipe), "--out", str(out), "--no-progress"]


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "shards").glob("*.tar"))}


def assert_clear_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode in (1, 2), proc.stderr  # 1: the system failed us, 2: a user error
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("cleanset: "), proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr


def test_disk_full_during_a_shard_keeps_earlier_shards_and_the_same_command_finishes(
        recipe: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    run_cli(*build_args(recipe, reference), env=ENV, check=True)
    out = tmp_path / "out"

    failed = run_limited(build_args(recipe, out), LIMIT)
    # the file the write failed on is named (the shard of the large image)
    assert_clear_error(failed, "run the same command again", "000002.tar.tmp")
    done = shard_bytes(out)
    assert set(done) == {"000000.tar", "000001.tar"}
    assert done == {name: shard_bytes(reference)[name] for name in done}

    again = run_limited(build_args(recipe, out), LIMIT)  # the fault is still there: same answer
    assert_clear_error(again)
    assert shard_bytes(out) == done

    run_cli(*build_args(recipe, out), env=ENV, check=True)  # the disk has room again
    assert shard_bytes(out) == shard_bytes(reference)
    assert run_cli("verify", str(out)).returncode == 0


def test_output_below_a_regular_file_is_a_clear_error_then_works_once_it_is_a_folder(
        recipe: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    out = blocker / "out"
    assert_clear_error(run_cli(*build_args(recipe, out), env=ENV), str(out))
    blocker.unlink()
    blocker.mkdir()
    run_cli(*build_args(recipe, out), env=ENV, check=True)
    reference = tmp_path / "reference"
    run_cli(*build_args(recipe, reference), env=ENV, check=True)
    assert shard_bytes(out) == shard_bytes(reference)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs we may remount read-only; skipped where mounting is not allowed."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if not shutil.which("mount") or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
            capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_really_full_filesystem_is_a_clear_error_and_the_build_moves_on_elsewhere(
        recipe: Path, tmp_path: Path, tmpfs: Path) -> None:
    out = tmpfs / "out"
    failed = run_cli(*build_args(recipe, out), env=ENV)
    assert_clear_error(failed, "run the same command again")
    # which disk (a shard's write names no file: it said only "No space left on device")
    assert f"disk holding {out} is full" in failed.stderr
    done = shard_bytes(out)
    assert {"000000.tar", "000001.tar"} <= set(done)
    # The fault goes away: copy the directory to a roomy disk and run the same command there.
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    run_cli(*build_args(recipe, moved), env=ENV, check=True)
    reference = tmp_path / "reference"
    run_cli(*build_args(recipe, reference), env=ENV, check=True)
    assert shard_bytes(moved) == shard_bytes(reference)


def test_a_full_disk_under_an_existing_dataset_says_full_never_restore_from_a_copy(
        recipe: Path, tmp_path: Path, tmpfs: Path) -> None:
    """SQLite says "disk I/O error" or "cannot rollback" when its journal cannot grow; the
    message once read as damage and told the user to restore the directory from a copy."""
    first = tmp_path / "first"
    run_cli(*build_args(recipe, first), "--limit", "3", env=ENV, check=True)
    out = tmpfs / "out"
    shutil.copytree(first, out)
    filler = tmpfs / "filler"
    with filler.open("wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)
    failed = run_cli(*build_args(recipe, out), env=ENV)
    assert_clear_error(failed, "run the same command again")
    assert "restore the directory" not in failed.stderr
    assert "is full" in failed.stderr or "No space left on device" in failed.stderr
    moved = tmp_path / "moved"  # room again: the same command finishes it
    shutil.copytree(out, moved)
    run_cli(*build_args(recipe, moved), env=ENV, check=True)
    assert run_cli("verify", str(moved)).returncode == 0


def test_a_read_only_output_filesystem_is_a_clear_error(recipe: Path, tmpfs: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    assert_clear_error(run_cli(*build_args(recipe, tmpfs / "out"), env=ENV), "Read-only file system")


@pytest.mark.parametrize("damage", ["truncated", "overwritten"])
def test_a_damaged_ledger_is_a_clear_fatal_error_in_every_command(
        damage: str, recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_cli(*build_args(recipe, out), env=ENV, check=True)
    ledger = out / "ledger.sqlite"
    if damage == "truncated":  # a copy interrupted half-way
        ledger.write_bytes(ledger.read_bytes()[:5000])
    else:
        ledger.write_bytes(ledger.read_bytes()[:100] + b"<html>" * 4000)
    image = str(recipe.parent / "images" / "img0.png")
    for argv in (["verify", str(out)], ["diff", str(out)], ["lookup", str(out), image],
                 ["report", str(out), "--out", str(tmp_path / "r.html")],
                 ["takedown", str(out), "--key", "0000000001", "--reason", "asked"],
                 ["recheck", str(out), "--no-progress"]):
        proc = run_cli(*argv, env=ENV)
        assert proc.returncode == 1, (argv, proc.stderr)
        assert_clear_error(proc, "ledger.sqlite", "restore")


def test_a_full_temporary_directory_is_named_never_the_ledger_to_restore(
        recipe: Path, tmp_path: Path, tmpfs: Path) -> None:
    """A build stopped half-way leaves its write-ahead log, which a command that only reads
    replays in a private copy of the ledger under $TMPDIR. With no room there, verify,
    lookup and diff said the ledger "cannot be read (No space left on device). Restore it
    from a good copy of the dataset": the ledger was whole, and an older copy put back in
    its place would have lost what the build had committed."""
    out = tmp_path / "out"
    killed = run_cli(*build_args(recipe, out), env={**ENV, "CLEANSET_CRASH_AT": "decide:5"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (out / "ledger.sqlite-wal").stat().st_size > 0
    room = os.statvfs(tmpfs)
    with (tmpfs / "filler").open("wb") as f:  # 8 KiB left: enough for Python to pick it
        f.write(b"\0" * (room.f_bavail * room.f_frsize - 8192))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    image = str(recipe.parent / "images" / "img0.png")
    for argv in (["verify", str(out)], ["diff", str(out)], ["lookup", str(out), image]):
        proc = run_cli(*argv, env={"TMPDIR": str(tmpfs)})
        assert_clear_error(proc, f"{tmpfs}", "TMPDIR", "No space left on device")
        assert "estore" not in proc.stderr, proc.stderr  # never "Restore it from a copy"
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert "build 1 is unfinished" in run_cli("verify", str(out)).stdout  # room elsewhere
    # A build ending beside a report.html rewrites the report: it read the ledger through
    # the same private copy of the whole ledger (GBs at scale) in $TMPDIR, and with no room
    # there stopped at its very end, at every rerun. It folds its log in and reads in place.
    run_cli("report", str(out), check=True)
    ended = run_cli(*build_args(recipe, out), env={**ENV, "TMPDIR": str(tmpfs)})
    assert ended.returncode == 0, ended.stderr
    assert run_cli("verify", str(out)).returncode == 0


def test_verify_of_a_url_with_no_room_in_tmpdir_names_the_temporary_directory(
        recipe: Path, tmp_path: Path, tmpfs: Path) -> None:
    """`verify URL` (and `lookup`, `diff` of a URL) download into $TMPDIR; with no room there
    it said "downloading shards/000000.tar failed: OSError: [Errno 28] No space left on
    device", read as the published copy failing."""
    url = (tmp_path / "published").as_uri()
    run_cli(*build_args(recipe, tmp_path / "stage"), env=ENV, check=True)
    run_cli("build", str(recipe), "--out", url, "--stage", str(tmp_path / "stage"),
            "--no-progress", env=ENV, check=True)
    room = os.statvfs(tmpfs)
    with (tmpfs / "filler").open("wb") as f:  # 8 KiB left: enough for Python to pick it
        f.write(b"\0" * (room.f_bavail * room.f_frsize - 8192))
    image = str(recipe.parent / "images" / "img0.png")
    for argv in (["verify", url], ["lookup", url, image]):
        proc = run_cli(*argv, env={"TMPDIR": str(tmpfs)})
        assert_clear_error(proc, f"temporary directory {tmpfs}", "TMPDIR",
                           "No space left on device")
    assert run_cli("verify", url).returncode == 0  # with room, the copy is fine
