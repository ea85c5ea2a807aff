"""Which cleanset made a build: `0.1.0+src.DIGEST` in the ledger, each sample's provenance,
the dataset card and `cleanset --version`, changing with the code (builder/identity.py)."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, run_cli, upgraded_cleanset

SHAPE = re.compile(r"0\.1\.0\+src\.[0-9a-f]{12}")


def test_the_build_records_the_version_and_digest_of_the_code_that_made_it(
        tmp_path: Path) -> None:
    """Every release said 0.1.0: years later, nothing told which cleanset decided a sample."""
    version = run_cli("--version", check=True).stdout.split()[1]
    assert SHAPE.fullmatch(version), version
    out = tmp_path / "out"
    run_cli("build", str(REPO / "examples/offline/recipe.toml"), "--out", str(out),
            "--no-progress", check=True)
    with sqlite3.connect(out / "ledger.sqlite") as db:
        (recorded,) = db.execute("SELECT tool_version FROM builds").fetchone()
        provenance = [json.loads(p) for (p,) in db.execute("SELECT provenance FROM samples")]
    assert recorded == version
    assert {p["build"]["tool_version"] for p in provenance} == {version}
    run_cli("report", str(out), check=True)
    assert f"(cleanset {version}, recipe" in (out / "report.html").read_text(encoding="utf-8")


def test_the_digest_is_the_same_for_the_same_code_and_changes_with_it(tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(REPO / "builder", copy / "builder",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "licenses", copy / "licenses")

    def version_of(tree: Path) -> str:
        return subprocess.run(
            [sys.executable, "-c", "from builder.identity import tool_version; "
                                   "print(tool_version())"],
            cwd=tree, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
            capture_output=True, text=True, check=True).stdout.strip()

    here = run_cli("--version", check=True).stdout.split()[1]
    assert version_of(copy) == here
    with (copy / "builder" / "lookup.py").open("a") as f:
        f.write("# an edit\n")
    edited = version_of(copy)
    assert SHAPE.fullmatch(edited) and edited != here
    (copy / "builder" / "lookup.py").write_bytes((REPO / "builder" / "lookup.py").read_bytes())
    (copy / "licenses" / "catalogue.toml").write_text(
        (REPO / "licenses" / "catalogue.toml").read_text() + "\n# an edit\n")
    assert version_of(copy) not in (here, edited)


def test_a_build_resumed_by_another_cleanset_names_both(tmp_path: Path) -> None:
    """A build stopped, cleanset upgraded, the build resumed: the ledger and report said the
    first cleanset made it all, though the second decided and wrote what was left."""
    copy = upgraded_cleanset(tmp_path / "copy")
    first = run_cli("--version", check=True).stdout.split()[1]
    upgraded = {"PYTHONPATH": str(copy)}  # run from `copy`: `python -m` looks in cwd first

    def by_upgraded(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env=upgraded, cwd=copy)

    second = by_upgraded("--version").stdout.split()[1]
    assert first != second
    recipe, out = str(REPO / "examples/offline/recipe.toml"), tmp_path / "out"
    stopped = run_cli("build", recipe, "--out", str(out), "--no-progress",
                      env={"CLEANSET_CRASH_AT": "decide:6", "CLEANSET_COMMIT_EVERY": "2"})
    assert stopped.returncode == -9
    resumed = by_upgraded("build", recipe, "--out", str(out), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert (f"build 1 was run by cleanset {first}; cleanset {second} goes on with it"
            in resumed.stderr)
    with sqlite3.connect(out / "ledger.sqlite") as db:
        (started_by,) = db.execute("SELECT tool_version FROM builds").fetchone()
        ran = [v for (v,) in db.execute("SELECT tool_version FROM build_tools ORDER BY rowid")]
        wrote = {json.loads(p)["build"]["tool_version"]
                 for (p,) in db.execute("SELECT provenance FROM samples")}
    assert started_by == first and ran == [first, second]
    assert wrote == {first, second}  # the samples committed before the stop, and the rest
    again = by_upgraded("build", recipe, "--out", str(out), "--no-progress")
    assert again.returncode == 0 and "goes on with it" not in again.stderr
    run_cli("report", str(out), check=True)
    assert f"(cleanset {first}, then cleanset {second}, recipe" in \
        (out / "report.html").read_text(encoding="utf-8")
    assert run_cli("verify", str(out)).returncode == 0
