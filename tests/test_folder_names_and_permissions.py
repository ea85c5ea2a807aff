"""A folder source meets what careless users leave in a folder: file and folder names that
are not UTF-8, an image nobody may read, a sub-folder nobody may open. None of them may
crash a build, be refused for good for a passing reason, or be skipped without a word.
Through the real CLI; the permission tests run it as a user the permissions apply to."""

from __future__ import annotations

import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    FIXED_EPOCH,
    REPO,
    make_image,
    run_cli,
    without_capabilities,
    write_recipe,
)

CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"


def folder_recipe(root: Path) -> Path:
    return write_recipe(root / "recipe.toml", f"""
[dataset]
name = "careless-folder"
samples_per_shard = 4
[[sources]]
kind = "folder"
name = "local"
path = "images"
license = "{CC0}"
""")


def put_images(folder: Path, names: list[str], seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        (folder / name).write_bytes(make_image(seed + i))


def rows(out: Path) -> dict[str, tuple[str, str | None, str | None]]:
    """candidate_id -> (status, reason, detail), from the ledger."""
    with sqlite3.connect(out / "ledger.sqlite") as db:
        return {cid: (status, reason, detail) for cid, status, reason, detail in db.execute(
            "SELECT candidate_id, status, reason, detail FROM candidates")}


# -- names that are not UTF-8 ------------------------------------------------------------------
@pytest.mark.parametrize(("odd", "shown"), [
    (b"caf\xe9.jpg", "caf\\xe9.jpg"),  # Latin-1 é in the file name
    (b"d\xe9p\xf4t/x.jpg", "d\\xe9p\\xf4t/x.jpg"),  # in a folder's name
])
def test_a_name_that_is_not_utf8_is_refused_by_name_and_the_build_finishes(
        tmp_path: Path, odd: bytes, shown: str) -> None:
    images = tmp_path / "images"
    put_images(images, ["a.jpg", "b.jpg"])
    odd_path = os.fsencode(images) + b"/" + odd
    os.makedirs(os.path.dirname(odd_path), exist_ok=True)
    with open(odd_path, "wb") as f:  # noqa: PTH123 - a bytes path, as a Latin-1 system makes
        f.write(make_image(99))
    with open(odd_path + b".json", "w", encoding="utf-8") as f:  # noqa: PTH123
        f.write('{"creator": "Zo\\u00e9"}')
    recipe, out = folder_recipe(tmp_path), tmp_path / "out"

    first = run_cli("build", str(recipe), "--out", str(out), "--no-progress")
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    ledger = rows(out)
    status, reason, detail = ledger[f"local:{shown}"]
    assert (status, reason) == ("rejected", "http_error")
    assert f"{images}/{shown}" in detail and "not UTF-8" in detail and "rename" in detail
    assert {cid for cid, row in ledger.items() if row[0] == "accepted"} == {"local:a.jpg",
                                                                             "local:b.jpg"}
    again = run_cli("build", str(recipe), "--out", str(out), "--no-progress")
    assert again.returncode == 0 and "already complete" in again.stdout, again.stderr
    checked = run_cli("verify", str(out))
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- permissions -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def as_reader() -> list[str]:
    """The argv prefix running a command as a user whom file permissions bind: this user
    when it is not root, else `nobody` through setpriv (no capabilities: root reads anything,
    which is just what must not happen here)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: permissions cannot be observed")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("running as root without a user nobody")
    prefix = [setpriv, f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]
    if _runs_python(prefix):
        return prefix
    # This Python lives where nobody may not go (a pyenv under /root): root without its
    # capabilities is bound by file permissions too, on files it keeps owning.
    prefix = without_capabilities(setpriv)
    if prefix is None or not _runs_python(prefix):
        pytest.skip("neither nobody nor root without capabilities can run this Python")
    return prefix


def _runs_python(prefix: list[str]) -> bool:
    probe = subprocess.run([*prefix, sys.executable, "-c", "import builder.cli, pyarrow"],
                           env={**os.environ, "PYTHONPATH": str(REPO)}, cwd="/",
                           capture_output=True, timeout=60)
    return probe.returncode == 0


@pytest.fixture
def shared(as_reader: list[str]) -> Iterator[Path]:
    """A scratch directory the reader owns (pytest's own is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="cleanset-perms-"))
    path.chmod(0o755)
    yield path
    for sub in [path, *path.rglob("*")]:
        if sub.is_dir() and not sub.is_symlink():
            sub.chmod(0o755)
    shutil.rmtree(path)


def give(root: Path, as_reader: list[str]) -> None:
    """Everything under `root` owned by the reader, as a user's own folder would be."""
    if not any(arg.startswith("--reuid=") for arg in as_reader):
        return  # the reader is this user (root without its capabilities, or not root)
    nobody = pwd.getpwnam("nobody")
    for path in [root, *root.rglob("*")]:
        os.chown(path, nobody.pw_uid, nobody.pw_gid, follow_symlinks=False)


def build_as(prefix: list[str], recipe: Path, out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SOURCE_DATE_EPOCH": FIXED_EPOCH, "PYTHONPATH": str(REPO)}
    return subprocess.run([*prefix, sys.executable, "-m", "builder", "build", str(recipe),
                           "--out", str(out), "--no-progress"], env=env, cwd="/",
                          capture_output=True, text=True, timeout=300)


def test_an_unreadable_image_is_transient_and_comes_in_once_it_is_readable(
        shared: Path, as_reader: list[str]) -> None:
    put_images(shared / "images", ["a.jpg", "b.jpg", "c.jpg"])
    recipe, out = folder_recipe(shared), shared / "out"
    give(shared, as_reader)
    (shared / "images" / "b.jpg").chmod(0)

    first = build_as(as_reader, recipe, out)
    assert first.returncode == 0, first.stderr
    status, reason, detail = rows(out)["local:b.jpg"]
    assert (status, reason) == ("rejected", "connection_error")  # transient: retried
    assert str(shared / "images" / "b.jpg") in detail and "Permission denied" in detail
    assert "run the same command again to retry" in first.stdout

    (shared / "images" / "b.jpg").chmod(0o644)
    second = build_as(as_reader, recipe, out)
    assert second.returncode == 0, second.stderr
    assert rows(out)["local:b.jpg"][0] == "accepted"
    assert {row[0] for row in rows(out).values()} == {"accepted"}


@pytest.mark.parametrize(("mode", "what"), [(0, "cannot be listed"),
                                            (0o644, "lists its names but cannot be entered")])
def test_an_unreadable_sub_folder_stops_the_build_naming_it_before_anything_is_written(
        shared: Path, as_reader: list[str], mode: int, what: str) -> None:
    put_images(shared / "images", ["a.jpg", "b.jpg"])
    put_images(shared / "images" / "locked", ["c.jpg", "d.jpg"], seed=10)
    recipe, out = folder_recipe(shared), shared / "out"
    give(shared, as_reader)
    (shared / "images" / "locked").chmod(mode)

    refused = build_as(as_reader, recipe, out)
    assert refused.returncode == 2, (what, refused.stdout, refused.stderr)
    assert f"{shared / 'images' / 'locked'}: cannot read this folder (Permission denied)" \
        in refused.stderr, what
    assert "Traceback" not in refused.stderr
    assert not out.exists()  # refused before the output directory was made

    (shared / "images" / "locked").chmod(0o755)
    built = build_as(as_reader, recipe, out)
    assert built.returncode == 0, built.stderr
    assert set(rows(out)) == {f"local:{n}" for n in ("a.jpg", "b.jpg", "locked/c.jpg",
                                                       "locked/d.jpg")}
