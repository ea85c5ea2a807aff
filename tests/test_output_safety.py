"""Never lose a user's file: cleanset builds only into a new or empty directory or an earlier
cleanset output, refuses everything else before creating anything, and refuses a recipe it
can check offline before the output directory exists (#16 items 1, 11, 16)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from builder.output_dir import is_cleanset_output
from tests.api_support import ApiServer, recipe_text
from tests.conftest import make_image, run_cli, start_cli, stopped_itself, write_recipe

CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"


def add_images(folder: Path, seeds: range) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        (folder / f"img{seed:02d}.jpg").write_bytes(make_image(seed))


def recipe_in(folder: Path, *, extra_dataset: str = "", policy: str = "commercial",
              source: str = 'kind = "folder"\npath = "images"', tail: str = "") -> Path:
    if not (folder / "images").exists():
        add_images(folder / "images", range(5))
    return write_recipe(folder / "recipe.toml", f"""
[dataset]
name = "safety"
samples_per_shard = 2
{extra_dataset}
[policy]
use = "{policy}"
[[sources]]
{source}
license = "{CC0}"
{tail}""")


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and every directory (None) under `root`, hidden ones too."""
    found: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in dirnames:
            found[(here / name).relative_to(root).as_posix()] = None
        for name in filenames:
            path = here / name
            found[path.relative_to(root).as_posix()] = (
                None if path.is_symlink() else path.read_bytes())
    return found


def build(recipe: Path, *args: str, cwd: Path | None = None,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli("build", str(recipe), *args, "--no-progress", cwd=cwd, env=env)


# A commit every two decisions: a build stopped mid-way has committed some already
COMMIT_OFTEN = {"CLEANSET_COMMIT_EVERY": "2"}


def assert_refused(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in proc.stderr, (word, proc.stderr)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A clone of some repository: the README and the code must survive any cleanset mistake."""
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "README.md").write_text("# My project\n\nHand-written, years of work.\n")
    (root / "pyproject.toml").write_text("[project]\nname = 'mine'\n")
    (root / "src" / "main.py").write_text("print('hello')\n")
    recipe_in(root)
    return root


# -- item 1: where a build may write ------------------------------------------------------------
def test_out_dot_in_a_project_is_refused_and_leaves_every_file_as_it_was(project: Path) -> None:
    before = snapshot(project)
    proc = build(project / "recipe.toml", "--out", ".", cwd=project)
    assert_refused(proc, "--out .", "no cleanset ledger", "README.md",
                   "new or empty directory", "earlier cleanset build")
    assert snapshot(project) == before  # no README replaced, no shards/, no .lock


def test_out_naming_a_non_empty_directory_by_its_path_is_refused_too(project: Path) -> None:
    before = snapshot(project)
    assert_refused(build(project / "recipe.toml", "--out", str(project)), str(project))
    assert snapshot(project) == before


def test_out_at_a_disks_mount_point_names_the_way_on(project: Path, tmp_path: Path) -> None:
    """A fresh ext4 disk's mount point holds lost+found: refused as "not empty" alone."""
    mount = tmp_path / "disk"
    (mount / "lost+found").mkdir(parents=True)
    before = snapshot(mount)
    assert_refused(build(project / "recipe.toml", "--out", str(mount)), "lost+found",
                   f"--out {mount / 'my-dataset'}")
    assert snapshot(mount) == before


@pytest.mark.parametrize("flags", [["--out", ""], ["--out", "  "],
                                   ["--out", "file:///nowhere/ds", "--stage", ""]])
def test_an_empty_out_or_stage_is_a_usage_error_that_creates_nothing(
        project: Path, flags: list[str]) -> None:
    before = snapshot(project)
    proc = build(project / "recipe.toml", *flags, cwd=project)
    assert_refused(proc, flags[-2], "empty")
    assert snapshot(project) == before


def test_an_empty_dataset_output_in_the_recipe_is_refused_naming_the_recipe_and_key(
        tmp_path: Path) -> None:
    recipe = recipe_in(tmp_path, extra_dataset='output = ""')
    before = snapshot(tmp_path)
    assert_refused(build(recipe, cwd=tmp_path), "recipe.toml", "output", "current directory")
    assert snapshot(tmp_path) == before


def test_the_recipes_output_into_a_non_empty_directory_is_refused_naming_the_key(
        tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("buy milk\n")
    recipe = recipe_in(tmp_path, extra_dataset='output = "notes"')
    before = snapshot(tmp_path)
    assert_refused(build(recipe, cwd=tmp_path), "[dataset] output", "notes", "todo.txt")
    assert snapshot(tmp_path) == before


def test_a_stranger_ledger_sqlite_does_not_make_a_directory_a_cleanset_output(
        tmp_path: Path) -> None:
    books = tmp_path / "books"
    books.mkdir()
    db = sqlite3.connect(books / "ledger.sqlite")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE accounts (name TEXT, balance INTEGER)")
    db.execute("INSERT INTO accounts VALUES ('rent', -1200)")
    db.commit()
    db.close()
    (books / "README.md").write_text("my accounts\n")
    recipe = recipe_in(tmp_path)
    before = snapshot(books)
    assert_refused(build(recipe, "--out", str(books)), "is not a cleanset ledger")
    assert snapshot(books) == before  # not even a -shm beside the stranger's database


@pytest.mark.parametrize(("make", "out", "words"), [
    (lambda t: (t / "afile").write_text("mine\n"), "afile",
     ["exists and is not a directory", "new or empty directory"]),
    (lambda t: (t / "afile").write_text("mine\n"), "afile/sub/out", ["afile is a file"]),
    (lambda t: (t / "link").symlink_to(t / "nowhere"), "link", ["broken symbolic link"]),
    (lambda t: (t / "link").symlink_to(t / "nowhere"), "link/out",
     ["link is a broken symbolic link"]),
    # below a link to itself: RuntimeError "Symlink loop from ...", a traceback
    (lambda t: (t / "loop").symlink_to(t / "loop"), "loop/out",
     ["goes round a loop of symbolic links"]),
])
def test_a_file_a_path_below_a_file_and_a_broken_link_are_refused_creating_nothing(
        tmp_path: Path, make: Any, out: str, words: list[str]) -> None:
    recipe = recipe_in(tmp_path)
    make(tmp_path)
    before = snapshot(tmp_path)
    assert_refused(build(recipe, "--out", str(tmp_path / out)), *words)
    assert snapshot(tmp_path) == before


@pytest.fixture
def read_only_fs(tmp_path: Path) -> Iterator[Path]:
    """A read-only tmpfs (root in CI ignores chmod); skipped where mounting is not allowed."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if not shutil.which("mount") or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(mnt)],
            capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_an_output_below_a_read_only_directory_names_the_directory_that_cannot_be_written(
        tmp_path: Path, read_only_fs: Path) -> None:
    proc = build(recipe_in(tmp_path), "--out", str(read_only_fs / "a" / "b"))
    assert_refused(proc, f"cannot be created in {read_only_fs}", "Read-only file system")


def test_what_a_first_build_stopped_before_its_ledger_leaves_is_resumed_but_a_user_file_is_not(
        tmp_path: Path) -> None:
    recipe = recipe_in(tmp_path)
    stopped = tmp_path / "stopped"
    (stopped / "shards").mkdir(parents=True)
    (stopped / ".lock").write_text("12345")
    assert build(recipe, "--out", str(stopped)).returncode == 0
    assert run_cli("verify", str(stopped)).returncode == 0

    mine = tmp_path / "mine"
    (mine / "shards").mkdir(parents=True)
    (mine / "shards" / "00000.tar").write_bytes(b"someone else's webdataset shard")
    before = snapshot(mine)
    assert_refused(build(recipe, "--out", str(mine)), "no cleanset ledger")
    assert snapshot(mine) == before


@pytest.mark.parametrize("ledger", ["none", "blank"])
def test_shards_kept_without_their_ledger_are_never_built_over(tmp_path: Path,
                                                                ledger: str) -> None:
    """Complete shards beside no ledger (or an empty one) once read as a first build's
    leftovers: a build overwrote 4 of 12 kept shards, deleted the rest and exited 0."""
    recipe = recipe_in(tmp_path)
    assert build(recipe, "--out", str(tmp_path / "full")).returncode == 0
    kept = tmp_path / "kept"
    kept.mkdir()
    shutil.copytree(tmp_path / "full" / "shards", kept / "shards")
    if ledger == "blank":
        (kept / "ledger.sqlite").write_bytes(b"")
    before = snapshot(kept)
    assert_refused(build(recipe, "--out", str(kept)), "its shards/ holds 3 shard file(s) no "
                   "ledger here accounts for", "Nothing was written")
    assert snapshot(kept) == before


@pytest.mark.parametrize("inside", ["shards/new", "sub/new"])
def test_an_output_inside_another_output_is_refused_and_verify_names_a_stranger_in_shards(
        tmp_path: Path, inside: str) -> None:
    recipe = recipe_in(tmp_path)
    out = tmp_path / "out"
    assert build(recipe, "--out", str(out)).returncode == 0
    before = snapshot(out)
    assert_refused(build(recipe, "--out", str(out / inside)),
                   f"is inside the cleanset output {out}")
    assert snapshot(out) == before
    (out / "shards" / "new").mkdir()  # made by hand, e.g. another tool's output
    proc = run_cli("verify", str(out))
    assert proc.returncode == 1 and "PROBLEM shards/new: not a shard of this dataset" in \
        proc.stdout


def test_a_file_in_shards_not_named_as_cleanset_names_shards_is_never_deleted(
        tmp_path: Path) -> None:
    """A build clears the shards a stopped build left uncommitted (NNNNNN.tar, six digits
    or more), and took any name of digits and `.tar` for one: a `2024.tar` put there by hand
    was deleted by the next build, exit 0. It is named by verify and left alone."""
    recipe = recipe_in(tmp_path)
    out = tmp_path / "out"
    assert build(recipe, "--out", str(out)).returncode == 0
    (out / "shards" / "2024.tar").write_bytes(b"a tar of the user's")
    (out / "shards" / "7.tar.tmp").write_bytes(b"another")
    add_images(tmp_path / "more", range(20, 23))
    more = recipe_in(tmp_path / "second", source=f'kind = "folder"\npath = "{tmp_path / "more"}"')
    assert build(more, "--out", str(out)).returncode == 0
    assert (out / "shards" / "2024.tar").read_bytes() == b"a tar of the user's"
    assert (out / "shards" / "7.tar.tmp").read_bytes() == b"another"
    proc = run_cli("verify", str(out))
    assert "PROBLEM shards/2024.tar: not a shard of this dataset" in proc.stdout, proc.stdout


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize("first", ["outer", "inner"])
def test_two_first_builds_started_together_one_inside_the_other_never_nest(
        tmp_path: Path, first: str) -> None:
    """`build --out D` and `build --out D/inner` started at the same moment each passed the
    check before the other had created anything, and both built, exit 0: a dataset inside a
    dataset, measured in 1 of 4 starts 0.1-0.2 s apart. Here one build is stopped just past
    its check (CLEANSET_STOP_AT) while the other builds whole, then let go: it is refused,
    exit 2, leaving nothing of its own, and the other is a dataset verify passes."""


    recipe = recipe_in(tmp_path)
    outer, inner = tmp_path / "out", tmp_path / "out" / "inner"
    stopped_out, other_out = (outer, inner) if first == "outer" else (inner, outer)
    stopped, other, _, err = _while_one_is_stopped(recipe, stopped_out, "output_checked",
                                                   other_out)
    assert other.returncode == 0, other.stderr
    assert stopped.returncode == 2, err
    assert "Traceback" not in err and "Nothing was written" in err, err
    assert (f"is inside the cleanset output {outer}" if first == "inner"
            else "inner appeared in it while this first build was starting") in err, err
    assert run_cli("verify", str(other_out)).returncode == 0
    if first == "outer":  # its own ledger and shards/ are gone: only the inner dataset left
        assert sorted(p.name for p in outer.iterdir()) == ["inner"]
    else:  # the inner directory it made is all it left, empty
        assert list(inner.iterdir()) == []


def test_an_empty_ledger_file_above_the_output_is_named_not_taken_for_a_build_starting(
        tmp_path: Path) -> None:
    """An empty ledger.sqlite in a parent folder (a stray `touch`, a crash before a first
    build wrote anything) refused every build below it as "inside the cleanset output P,
    which a build started at the same time", never naming the file to remove."""
    recipe = recipe_in(tmp_path)
    parent = tmp_path / "parent"
    parent.mkdir()
    (parent / "ledger.sqlite").touch()
    proc = build(recipe, "--out", str(parent / "out"))
    assert proc.returncode == 2, proc.stderr
    assert (f"whose ledger.sqlite is blank: a build starting there at the same time, or a "
            f"leftover (an empty file: if no build is running there, remove "
            f"{parent / 'ledger.sqlite'})") in proc.stderr
    (parent / "ledger.sqlite").unlink()
    assert build(recipe, "--out", str(parent / "out")).returncode == 0


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_two_builds_started_together_on_one_directory_do_not_trip_on_the_write_probe(
        tmp_path: Path) -> None:
    """Both write and remove DIR/.write-probe before taking the lock: the one whose probe the
    other had removed said "--out DIR: cannot be used: No such file or directory.", exit 2
    (nothing wrong with DIR), 1 in 70 tries of two at once. Here one is stopped between
    writing and removing it while the other builds whole; let go, it finds the build done."""


    recipe = recipe_in(tmp_path)
    out = tmp_path / "out"
    stopped, other, stdout, err = _while_one_is_stopped(recipe, out, "write_probe", out)
    assert other.returncode == 0, other.stderr
    assert stopped.returncode == 0, err
    assert "cleanset build already complete" in stdout
    assert not (out / ".write-probe").exists()
    assert run_cli("verify", str(out)).returncode == 0


def test_a_tilde_in_out_or_the_recipe_s_output_is_the_home_directory_not_a_folder_named_tilde(
        tmp_path: Path) -> None:
    """`--out=~/x` and `output = "~/x"` reach cleanset unexpanded: shards once went to ./~,
    a paper into $HOME, and every rerun failed."""
    home = tmp_path / "home"
    home.mkdir()
    recipe = recipe_in(tmp_path, extra_dataset='output = "~/datasets/by-recipe"')
    env = {"HOME": str(home)}
    assert run_cli("build", str(recipe), "--out=~/datasets/by-flag", "--no-progress",
                   env=env, cwd=tmp_path).returncode == 0
    assert run_cli("build", str(recipe), "--no-progress", env=env, cwd=tmp_path).returncode == 0
    for name in ("by-flag", "by-recipe"):
        assert run_cli("verify", f"~/datasets/{name}", env=env).returncode == 0
        assert (home / "datasets" / name / "manifest.parquet").is_file()
    assert not (tmp_path / "~").exists() and sorted(os.listdir(home)) == ["datasets"]
    proc = run_cli("build", str(recipe), "--out", "~no-such-user-here/x", "--no-progress",
                   cwd=tmp_path)
    assert proc.returncode == 2 and "is no user's home directory here" in proc.stderr


def recipe_decided_before_the_second_source(tmp_path: Path) -> Path:
    """Two folder sources, the first holding more images than a build keeps in flight (64
    with one connection per host: the stages stay in threads), so some are decided and
    committed before the second source is read. With 5, every candidate could be read
    before the first decision on a slow machine, and a build stopping there has decided
    nothing (exit 2: the fixed recipe takes it over)."""
    add_images(tmp_path / "images", range(70))
    add_images(tmp_path / "more", range(100, 106))
    return recipe_in(tmp_path, tail='[[sources]]\nkind = "folder"\nname = "more"\n'
                                    f'path = "more"\nlicense = "{CC0}"\n'
                                    '[fetch]\nper_host_connections = 1\nworkers = 2\n')


def test_a_broken_sidecar_met_mid_build_is_exit_1_and_resumable_not_nothing_changed(
        tmp_path: Path) -> None:
    """Exit 2 says "refused, nothing changed"; this build had started (ledger, evidence)."""
    recipe = recipe_decided_before_the_second_source(tmp_path)
    broken = tmp_path / "more" / "img104.jpg.json"
    broken.write_text("{not json")
    out = tmp_path / "out"
    proc = build(recipe, "--out", str(out), env=COMMIT_OFTEN)
    assert proc.returncode == 1, proc.stderr
    assert "img104.jpg.json: sidecar is not valid JSON" in proc.stderr
    assert "Build 1 stopped there; what it committed is kept" in proc.stderr
    assert "run the same command again to resume it" in proc.stderr
    broken.write_text(json.dumps({"creator": "A. Person"}))
    assert build(recipe, "--out", str(out)).returncode == 0
    assert run_cli("verify", str(out)).returncode == 0


def test_a_recipe_edited_while_its_build_is_unfinished_resumes_if_it_reads_the_same(
        tmp_path: Path) -> None:
    """An added comment once blocked the directory for good ("an unfinished build of another
    recipe", naming the very file given, whose old text was nowhere)."""
    recipe = recipe_decided_before_the_second_source(tmp_path)
    started_from = recipe.read_text()
    (tmp_path / "more" / "img104.jpg.json").write_text("{not json")
    out = tmp_path / "out"
    assert build(recipe, "--out", str(out), env=COMMIT_OFTEN).returncode == 1  # stopped mid-way
    (tmp_path / "more" / "img104.jpg.json").write_text(json.dumps({"creator": "A. Person"}))

    recipe.write_text(started_from.replace('name = "safety"', 'name = "safety-2"'))
    before = snapshot(out)
    proc = build(recipe, "--out", str(out))
    assert_refused(proc, f"build 1 started from {recipe.resolve()} as it was before an edit",
                   "undo the edit", "the text it started from is kept in the ledger")
    assert snapshot(out) == before
    with sqlite3.connect(out / "ledger.sqlite") as db:
        (kept,) = db.execute("SELECT value FROM meta WHERE key = 'recipe_text:1'").fetchone()
    db.close()
    assert kept == started_from

    recipe.write_text("# a comment, and the same recipe\n" + started_from)
    proc = build(recipe, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "was edited since build 1 started from it, but reads the same" in proc.stderr
    assert run_cli("verify", str(out)).returncode == 0


def test_a_stopped_build_that_cannot_finish_as_it_was_is_closed_where_it_stopped(
        tmp_path: Path) -> None:
    """A source the build had not reached refused its request: "fix it" led to an edited
    recipe, refused as "resume only with the recipe it started from", whose rerun met the
    same refusal: a circle. The refusal names the way out, and it works."""
    import re

    recipe = recipe_decided_before_the_second_source(tmp_path)
    started_from = recipe.read_text()
    (tmp_path / "more" / "img104.jpg.json").write_text("{not json")
    out = tmp_path / "out"
    assert build(recipe, "--out", str(out), env=COMMIT_OFTEN).returncode == 1
    edited = started_from.replace('name = "safety"', 'name = "safety-2"')
    recipe.write_text(edited)
    proc = build(recipe, "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    way_out = re.search(r"close it where it stopped, keeping the (\d+) candidates it decided: "
                        rf"run that recipe with --out {re.escape(str(out))} --limit (\d+), "
                        "then this one", proc.stderr)
    assert way_out and way_out[1] == way_out[2] and int(way_out[1]) > 0, proc.stderr

    recipe.write_text(started_from)
    closed = build(recipe, "--out", str(out), "--limit", way_out[2])
    assert closed.returncode == 0, closed.stderr
    recipe.write_text(edited)
    (tmp_path / "more" / "img104.jpg.json").write_text(json.dumps({"creator": "A. Person"}))
    extended = build(recipe, "--out", str(out), "--rename-dataset")
    assert extended.returncode == 0, extended.stderr
    assert run_cli("verify", str(out)).returncode == 0


def test_a_build_stopped_before_deciding_anything_is_taken_over_by_the_fixed_recipe(
        tmp_path: Path) -> None:
    """A recipe error met at the start (here a broken sidecar; an API refusing the request
    is the same) said "fix it", and the fixed recipe was then refused as "another recipe"."""
    add_images(tmp_path / "more", range(20, 23))
    recipe = recipe_in(tmp_path, source='kind = "folder"\npath = "more"')
    (tmp_path / "more" / "img20.jpg.json").write_text("{not json")
    out = tmp_path / "out"
    proc = build(recipe, "--out", str(out))
    assert proc.returncode == 2 and "sidecar is not valid JSON" in proc.stderr, proc.stderr
    (tmp_path / "more" / "img20.jpg.json").unlink()
    fixed = write_recipe(tmp_path / "fixed.toml", recipe.read_text().replace(
        'path = "more"', 'path = "images"'))
    proc = build(fixed, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "build 1 stopped before deciding any candidate; it goes on with" in proc.stderr
    assert "dataset: 5 samples" in proc.stdout
    assert run_cli("verify", str(out)).returncode == 0


def test_a_recipe_with_a_looser_policy_is_refused_into_an_existing_dataset_unless_allowed(
        tmp_path: Path) -> None:
    """A research recipe pointed at a commercial dataset's --out once added its NC images,
    renamed the dataset and exited 0; verify said OK."""
    recipe = recipe_in(tmp_path)
    out = tmp_path / "out"
    assert build(recipe, "--out", str(out)).returncode == 0
    add_images(tmp_path / "nc", range(30, 33))
    for sidecar in ("img30", "img31", "img32"):
        (tmp_path / "nc" / f"{sidecar}.jpg.json").write_text('{"license": "CC-BY-NC-4.0"}')
    other = write_recipe(tmp_path / "nc.toml", '[dataset]\nname = "research"\n'
                         '[policy]\nuse = "open-research"\n'
                         '[[sources]]\nkind = "folder"\npath = "nc"\n')
    before = snapshot(out)
    assert_refused(build(other, "--out", str(out)), "[policy] 'open-research' admits licences "
                   "that policy 'commercial' of build 1", "CC-BY-NC-4.0", "--allow-looser-policy")
    assert snapshot(out) == before
    allowed = build(other, "--out", str(out), "--allow-looser-policy", "--rename-dataset")
    assert allowed.returncode == 0, allowed.stderr
    assert "policy 'open-research' differs from 'commercial' of build 1" in allowed.stderr
    assert "names the dataset 'research'" in allowed.stderr
    assert "dataset: 8 samples" in allowed.stdout
    # stricter than the last build's: a note, no refusal
    add_images(tmp_path / "pd", range(40, 42))
    strict = write_recipe(tmp_path / "pd.toml", '[dataset]\nname = "research"\n'
                          '[policy]\nuse = "public-domain"\n[[sources]]\nkind = "folder"\n'
                          f'path = "pd"\nlicense = "{CC0}"\n')
    proc = build(strict, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "policy 'public-domain' differs from 'open-research' of build 2" in proc.stderr


def test_a_recipe_naming_another_dataset_is_refused_into_an_existing_one_unless_renaming(
        tmp_path: Path) -> None:
    """Another dataset's recipe, pointed at this --out by mistake with a policy as strict,
    added its images, renamed the dataset and exited 0, with a note."""
    recipe = recipe_in(tmp_path)
    out = tmp_path / "out"
    assert build(recipe, "--out", str(out)).returncode == 0
    add_images(tmp_path / "more", range(30, 33))
    other = write_recipe(tmp_path / "other.toml", '[dataset]\nname = "birds"\n'
                         '[policy]\nuse = "commercial"\n[[sources]]\nkind = "folder"\n'
                         f'path = "more"\nlicense = "{CC0}"\n')
    before = snapshot(out)
    assert_refused(build(other, "--out", str(out)), "[dataset] name is 'birds'",
                   "holds dataset 'safety' (5 samples)", "--rename-dataset", "Nothing changed")
    assert snapshot(out) == before
    renamed = build(other, "--out", str(out), "--rename-dataset")
    assert renamed.returncode == 0, renamed.stderr
    assert "names the dataset 'birds'" in renamed.stderr and "dataset: 8 samples" in \
        renamed.stdout
    assert run_cli("verify", str(out)).returncode == 0
    # The same name again needs nothing: the dataset is 'birds' now.
    add_images(tmp_path / "more", range(33, 34))
    more = write_recipe(tmp_path / "more.toml", other.read_text() + "\n# one more image\n"
                        "[image]\nmin_width = 8\n")
    assert build(more, "--out", str(out)).returncode == 0


def test_a_first_build_killed_before_its_ledger_was_checkpointed_is_recognised_and_resumed(
        tmp_path: Path) -> None:
    recipe = recipe_in(tmp_path)
    out = tmp_path / "out"
    env = {"CLEANSET_COMMIT_EVERY": "2", "CLEANSET_CRASH_AT": "after_commit:1"}
    killed = run_cli("build", str(recipe), "--out", str(out), "--no-progress", env=env)
    assert killed.returncode == -9
    assert (out / "ledger.sqlite-wal").exists()  # its tables are still in the WAL only
    listing = sorted(p.name for p in out.iterdir())
    assert is_cleanset_output(out)
    assert sorted(p.name for p in out.iterdir()) == listing  # recognising it created nothing
    (out / "NOTES.txt").write_text("a note the operator left while it was down\n")
    assert build(recipe, "--out", str(out)).returncode == 0
    reference = tmp_path / "reference"
    assert build(recipe, "--out", str(reference)).returncode == 0
    assert {p.name: p.read_bytes() for p in (out / "shards").iterdir()} == \
        {p.name: p.read_bytes() for p in (reference / "shards").iterdir()}


def test_a_url_output_refuses_a_stage_that_is_a_users_directory(project: Path,
                                                                 tmp_path: Path) -> None:
    before = snapshot(project)
    url = (tmp_path / "published").as_uri()
    proc = build(project / "recipe.toml", "--out", url, "--stage", str(project))
    assert_refused(proc, f"--stage {project}", "no cleanset ledger")
    assert snapshot(project) == before  # no .cleanset-publish/, no .lock
    assert not (tmp_path / "published").exists()


def test_a_url_output_still_builds_in_a_new_stage_and_again_in_the_same_one(
        tmp_path: Path) -> None:
    recipe = recipe_in(tmp_path)
    url = (tmp_path / "published").as_uri()
    stage = tmp_path / "stage"
    assert build(recipe, "--out", url, "--stage", str(stage)).returncode == 0
    add_images(tmp_path / "images", range(5, 7))  # a changed recipe is a new build, same stage
    recipe = recipe_in(tmp_path, tail="# second\n")
    again = build(recipe, "--out", url, "--stage", str(stage))
    assert again.returncode == 0, again.stderr
    assert run_cli("verify", url).returncode == 0
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.txt").write_text("x")
    assert_refused(build(recipe, "--out", url, "--stage", str(tmp_path / "mine")), "a.txt")


# -- item 11: everything checked offline is checked before the output exists ---------------------
def test_a_misspelt_policy_names_the_recipe_suggests_the_closest_and_creates_nothing(
        tmp_path: Path) -> None:
    recipe = recipe_in(tmp_path, policy="comercial")
    proc = build(recipe, "--out", str(tmp_path / "out"))
    assert_refused(proc, str(recipe), "[policy] use = 'comercial'", "Did you mean 'commercial'?")
    assert not (tmp_path / "out").exists()


def test_a_source_licence_no_catalogue_entry_reads_is_refused_before_the_build(
        tmp_path: Path) -> None:
    """`license = "CCO"` (a letter O) once built 0 of 20 images, exit 0, then "complete"."""
    recipe = recipe_in(tmp_path, source='kind = "folder"\npath = "images"').read_text()
    recipe_path = write_recipe(tmp_path / "recipe.toml", recipe.replace(CC0, "CCO"))
    proc = build(recipe_path, "--out", str(tmp_path / "out"))
    assert_refused(proc, "sources[0].license = 'CCO' is not a licence cleanset recognises",
                   "Did you mean 'CC0-1.0'?")
    assert not (tmp_path / "out").exists()


def test_a_ray_address_nothing_answers_at_is_refused_at_once_creating_nothing(
        tmp_path: Path) -> None:
    """ray.init waited over ten minutes for 127.0.0.1:1, in silence, the output made."""
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    recipe = recipe_in(tmp_path)
    proc = run_cli("build", str(recipe), "--out", str(tmp_path / "out"), "--executor", "ray",
                   "--ray-address", f"127.0.0.1:{port}", "--no-progress", )
    assert_refused(proc, "Nothing was written")
    assert ("nothing answers there" in proc.stderr or "needs Ray, which is not installed"
            in proc.stderr)
    assert not (tmp_path / "out").exists()


def test_a_broken_policy_file_names_the_recipe_and_the_policy_file_and_creates_nothing(
        tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text('name = "mine"\nfamilies = ["CC-BYY"]\n')
    recipe = recipe_in(tmp_path, policy="mine.toml")
    proc = build(recipe, "--out", str(tmp_path / "out"))
    assert_refused(proc, str(recipe), str(tmp_path / "mine.toml"), "CC-BYY")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("table", "words"), [
    ("url,license\nhttps://e.org/1.jpg\n", ["line 2", "fields"]),
    ("link,licence\nhttps://e.org/1.jpg,x\n", ["no image URL column"]),
    ("url\tlicense\nhttps://e.org/1.jpg\tx\n", ['format = "tsv"']),
    ("", ["no data rows", "'table'"]),
])
def test_a_bad_or_empty_table_is_refused_before_the_output_directory_exists(
        tmp_path: Path, table: str, words: list[str]) -> None:
    (tmp_path / "urls.csv").write_text(table)
    recipe = recipe_in(tmp_path, source='kind = "table"\npath = "urls.csv"')
    proc = build(recipe, "--out", str(tmp_path / "out"))
    assert_refused(proc, "urls.csv", *words)
    assert not (tmp_path / "out").exists()


def test_a_folder_without_images_or_with_a_malformed_metadata_file_creates_nothing(
        tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "notes.txt").write_text("no pictures yet\n")
    recipe = recipe_in(tmp_path)
    assert_refused(build(recipe, "--out", str(tmp_path / "out")), "holds no image files",
                   "'folder'")
    add_images(tmp_path / "images", range(2))
    (tmp_path / "images" / "metadata.jsonl").write_text('{"file_name": "img00.jpg"}\n{oops\n')
    assert_refused(build(recipe, "--out", str(tmp_path / "out")), "metadata.jsonl", "line 2")
    assert not (tmp_path / "out").exists()


def test_an_evaluation_set_without_images_is_refused_before_the_output_exists(
        tmp_path: Path) -> None:
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "README").write_text("images to come\n")
    recipe = recipe_in(tmp_path, tail='[dedup]\nexclude = ["eval"]\n')
    assert_refused(build(recipe, "--out", str(tmp_path / "out")), "dedup.exclude[0]",
                   "no image files")
    assert not (tmp_path / "out").exists()


def test_ray_only_executor_settings_are_refused_before_the_output_exists(tmp_path: Path) -> None:
    recipe = recipe_in(tmp_path)
    assert_refused(build(recipe, "--out", str(tmp_path / "out"), "--write-shards", "workers"),
                   "write_shards", "--executor ray")
    recipe = recipe_in(tmp_path, tail="[executor]\nindex_parts = 2\n")
    assert_refused(build(recipe, "--out", str(tmp_path / "out")), "index_parts")
    assert not (tmp_path / "out").exists()


# -- item 16: a source that yields nothing ---------------------------------------------------------
def test_an_api_source_that_yields_nothing_is_warned_about_by_name_and_the_build_exits_0(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    ApiServer(httpserver, "/api/artworks/",
              lambda args, path: {"info": {"total": 0, "parameters": args}, "data": []})
    add_images(tmp_path / "images", range(3))
    text = recipe_text("empty-search", f"""kind = "folder"
path = "images"
license = "{CC0}"

[[sources]]
kind = "cleveland"
name = "typo-search"
api = "{httpserver.url_for('/api')}"
query = "impresionism"
""")
    recipe = write_recipe(tmp_path / "recipe.toml", text)
    proc = build(recipe, "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stdout.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, proc.stdout
    assert "source 'typo-search' (cleveland) yielded no candidates" in warnings[0]
    assert "recipe.toml" in warnings[0]
    assert "typo-search" in proc.stderr  # the log says it too


def test_a_ledger_being_created_is_never_taken_for_someone_else_s_database(
        tmp_path: Path) -> None:
    """Its tables were created one transaction each: a build started on the same directory
    at that moment read a ledger holding `meta` alone as a stranger's database and refused,
    exit 2, "its ledger.sqlite is not a cleanset ledger" (152 of 2963 looks while 40 ledgers
    were created). Looked at while another process creates ledger after ledger, each one is
    absent, blank (being created) or whole."""
    import sys

    from builder.output_dir import LedgerKind, ledger_kind
    from tests.conftest import REPO

    create = ("import sys; from pathlib import Path; from builder.ledger import Ledger\n"
              "for i in range(40):\n"
              "    d = Path(sys.argv[1]) / f'{i:03d}'\n"
              "    d.mkdir()\n"
              "    Ledger(d / 'ledger.sqlite').close()\n")
    creator = subprocess.Popen([sys.executable, "-c", create, str(tmp_path)],
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    seen: dict[LedgerKind, int] = {}
    try:
        while creator.poll() is None:
            names = sorted(p.name for p in tmp_path.iterdir())
            if names:
                kind = ledger_kind(tmp_path / names[-1] / "ledger.sqlite")
                seen[kind] = seen.get(kind, 0) + 1
    finally:
        creator.wait(timeout=120)
    assert creator.returncode == 0
    assert LedgerKind.FOREIGN not in seen, seen
    assert all(ledger_kind(p / "ledger.sqlite") is LedgerKind.CLEANSET
               for p in tmp_path.iterdir())


def _while_one_is_stopped(recipe: Path, stopped_out: Path, point: str, other_out: Path
                          ) -> tuple[subprocess.Popen[str], Any, str, str]:
    """A build into `stopped_out` held at stop point `point` while another into `other_out`
    runs whole; then the first let go. The first's process, the other's result, the first's
    stdout and stderr."""
    import signal

    stopped = start_cli("build", str(recipe), "--out", str(stopped_out), "--no-progress",
                        env={"CLEANSET_STOP_AT": point})
    try:
        assert stopped_itself(stopped), stopped.communicate()
        other = build(recipe, "--out", str(other_out))
    finally:
        stopped.send_signal(signal.SIGCONT)
        stdout, err = stopped.communicate(timeout=120)
    return stopped, other, stdout, err
