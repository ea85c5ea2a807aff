"""Reading a dataset some of whose files a bad copy truncated or wrote over, or whose build
never finished: `diff`, `verify` and `report` name the file and what to do, exit 1 or 2,
never a traceback, and change nothing. Through the real CLI."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, make_image, run_cli
from tests.test_dedup_build import folder_recipe, put


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("damaged")
    for i in range(3):
        put(root / "pics", f"p{i}.jpg", make_image(500 + i))
    run_cli("build", str(folder_recipe(root, ["pics"])), "--out", str(root / "out"),
            "--no-progress", check=True)
    yield root / "out"


@pytest.fixture
def copy(built: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(built, out)
    return out


def every_file(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def another_table(path: Path) -> None:
    pq.write_table(pa.table({"x": [1]}), path)


@pytest.mark.parametrize("damage", [truncated, another_table])
def test_a_manifest_that_cannot_be_read_is_named_by_diff_and_found_by_verify(
        built: Path, copy: Path, damage) -> None:  # type: ignore[no-untyped-def]
    """Both printed pyarrow's traceback (ArrowInvalid), exit 1."""
    damage(copy / "manifest.parquet")
    before = every_file(copy)
    for args in (["diff", str(built), str(copy), "--json"], ["diff", str(copy), str(built)]):
        proc = run_cli(*args)
        assert proc.returncode == 2, proc.stderr
        assert proc.stdout == "" and "Traceback" not in proc.stderr
        assert f"{copy / 'manifest.parquet'}: cannot be read as a cleanset manifest (" \
            in proc.stderr
        assert f"nothing was compared. `cleanset verify {copy}` checks" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    proc = run_cli("verify", str(copy))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "PROBLEM manifest.parquet cannot be read (" in proc.stdout
    assert every_file(copy) == before


def test_diff_against_an_unfinished_build_says_so_not_that_it_is_no_output(
        copy: Path, built: Path) -> None:
    """It asked "is this a cleanset output directory?" of a directory with a ledger."""
    (copy / "manifest.parquet").unlink()
    proc = run_cli("diff", str(built), str(copy))
    assert proc.returncode == 2 and proc.stdout == ""
    assert (f"{copy}: has a ledger but no manifest.parquet: its build has not finished (run "
            "the same `cleanset build` again to finish it)") in proc.stderr
    assert f"`cleanset verify {copy}` says which" in proc.stderr


def test_report_skips_takedown_log_lines_written_over_instead_of_a_traceback(
        copy: Path, tmp_path: Path) -> None:
    """Bytes that are not UTF-8 (UnicodeDecodeError) or a line that is not a record
    (AttributeError) stopped the report; the log's torn lines were already skipped."""
    (copy / "takedowns.jsonl").write_bytes(
        b"\x92\xff not utf-8\n123\n[1, 2]\n"
        # records edited by hand into other types (TypeError in the page's table)
        b'{"when": "2026-01-01T00:00:00Z", "keys": 5}\n'
        b'{"when": 1, "reason": ["x"], "selectors": {"key": 7}}\n'
        b'{"when": "2026-01-02T00:00:00Z", "reason": "kept", "keys": ["0000000001"], '
        b'"selectors": {"key": ["0000000001"]}, "shards_rewritten": ["000000.tar"], '
        b'"shards_deleted": []}\n')
    page = tmp_path / "report.html"
    proc = run_cli("report", str(copy), "--out", str(page))
    assert proc.returncode == 0, proc.stderr
    text = page.read_text(encoding="utf-8")
    assert text.count("2026-01-0") == 1 and "2026-01-02" in text and "kept" in text


def random_bytes(path: Path) -> None:
    path.write_bytes(bytes(range(128, 256)) * 3)


def another_csv(path: Path) -> None:
    path.write_text("a,b\n1,2\n", encoding="utf-8")


@pytest.mark.parametrize(("paper", "damage", "said"), [
    ("README.md", random_bytes, "README.md: not UTF-8 text (byte 0 is 0x80): written over"),
    ("ATTRIBUTION.md", random_bytes,
     "ATTRIBUTION.md: not UTF-8 text (byte 0 is 0x80): written over"),
    ("attribution.csv", random_bytes,
     "attribution.csv: not UTF-8 text (byte 0 is 0x80): written over"),
    ("attribution.csv", another_csv, "attribution.csv: no key column: written over")])
def test_verify_names_a_paper_written_over_with_what_is_not_its_text(
        copy: Path, paper: str, damage, said: str) -> None:  # type: ignore[no-untyped-def]
    """README.md, ATTRIBUTION.md and attribution.csv of bytes that are not UTF-8 stopped
    verify with a UnicodeDecodeError traceback; a CSV without its key column, a KeyError."""
    damage(copy / paper)
    before = every_file(copy)
    proc = run_cli("verify", str(copy))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"PROBLEM {said}" in proc.stdout
    assert f"PROBLEM {paper}: changed since cleanset wrote it" in proc.stdout
    assert every_file(copy) == before


def test_report_out_dash_is_refused_not_a_file_named_dash(built: Path, tmp_path: Path) -> None:
    """`--out -` wrote a file named '-' into the current directory."""
    proc = run_cli("report", str(built), "--out", "-", cwd=tmp_path)
    assert proc.returncode == 2
    assert "the report is a page written to a file, not to standard output" in proc.stderr
    assert not (tmp_path / "-").exists()


def test_report_out_below_a_link_to_itself_is_refused_not_a_traceback(
        built: Path, tmp_path: Path) -> None:
    """A loop of symbolic links: RuntimeError "Symlink loop from ...", a traceback."""
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for out in ("loop", "loop/report.html"):
        proc = run_cli("report", str(built), "--out", str(tmp_path / out))
        assert proc.returncode == 2, proc.stderr
        assert "goes round a loop of symbolic links" in proc.stderr, proc.stderr


def unreadable(path: Path) -> None:
    path.chmod(0)


def a_directory(path: Path) -> None:
    path.unlink()
    (path / "x").mkdir(parents=True)


@pytest.mark.parametrize(("name", "damage"), [
    ("croissant.json", unreadable), ("croissant.json", a_directory),
    ("shards/000000.tar", unreadable), ("shards/000000.tar", a_directory),
    ("evidence", unreadable)])  # an archive file turned directory is "missing", a PROBLEM
def test_verify_names_a_file_it_cannot_read_and_does_not_say_resume(
        copy: Path, name: str, damage, bound_by_permissions: list[str]  # type: ignore[no-untyped-def]
        ) -> None:
    """A paper, a shard or an evidence file made unreadable (or a directory) stopped verify
    with "fatal: [Errno 13] ... Everything committed so far is kept; ... run the same command
    again to resume", exit 1: a writer's words, from a command that writes nothing."""
    path = copy / name
    if name == "evidence":
        path = next(path.glob("*.warc.gz"))
    damage(path)
    before = every_file(copy)
    proc = subprocess.run([*bound_by_permissions, sys.executable, "-m", "builder", "verify",
                           str(copy)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    said = ("this user may not read it (Permission denied). Ask for read access"
            if damage is unreadable else "is a directory where the dataset keeps a file")
    assert f"cleanset: error: {path}: {said}" in proc.stderr
    assert "Nothing was changed." in proc.stderr and "resume" not in proc.stderr
    path.chmod(0o755)
    assert every_file(copy) == before


@pytest.mark.parametrize("command", ["lookup", "report", "diff", "evidence", "verify"])
def test_every_reader_names_an_output_directory_it_may_not_enter(
        copy: Path, built: Path, tmp_path: Path, command: str,
        bound_by_permissions: list[str]) -> None:
    """A copy whose directory this user may not open: "fatal: [Errno 13] Permission denied:
    'DIR/.takedown.json' ... run the same command again to resume", naming a file that is
    not there, exit 1."""
    image = next(built.parent.glob("pics/*.jpg"))
    args = {"lookup": [str(copy), str(image)],
            "report": [str(copy), "--out", str(tmp_path / "page.html")],
            "diff": [str(built), str(copy)], "evidence": [str(copy), "0000000000"],
            "verify": [str(copy)]}[command]
    copy.chmod(0)
    try:
        proc = subprocess.run([*bound_by_permissions, sys.executable, "-m", "builder", command,
                               *args], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        copy.chmod(0o755)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr == (f"cleanset: error: {copy}: this user may not read it (Permission "
                           "denied). Ask for read access to the output directory, or audit a "
                           "copy you can read. Nothing was changed.\n")


def test_verify_says_an_evidence_file_is_missing_not_a_shard(copy: Path) -> None:
    """A missing archive file is said in a lost shard's words, and the closing advice was to
    restore shards/ from a copy."""
    archive = next((copy / "evidence").glob("*.warc.gz"))
    archive.unlink()
    proc = run_cli("verify", str(copy))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"PROBLEM evidence/{archive.name}: in the ledger but the file is missing" \
        in proc.stdout
    assert "a shard the ledger records is missing" not in proc.stdout
    assert "verify: an evidence file the ledger records is missing: restore the dataset's " \
        "evidence/ from a copy" in proc.stdout


@pytest.mark.parametrize("command", ["verify", "lookup", "report", "evidence"])
def test_a_ledger_truncated_to_nothing_is_named_as_damaged_not_read_as_empty(
        copy: Path, built: Path, tmp_path: Path, command: str) -> None:
    """SQLite reads 0 bytes as an empty database: `evidence` answered "built before cleanset
    kept an evidence archive", the others a bare "no such table"."""
    (copy / "ledger.sqlite").write_bytes(b"")
    image = next(built.parent.glob("pics/*.jpg"))
    args = {"lookup": [str(image)], "report": ["--out", str(tmp_path / "page.html")],
            "evidence": ["0000000000"], "verify": []}[command]
    proc = run_cli(command, str(copy), *args)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert (f"cleanset: fatal: the ledger ({copy / 'ledger.sqlite'}) cannot be used: 0 bytes "
            "without the "
            "ledger's tables (meta, builds, candidates, samples, shards missing): truncated or "
            "written over. If it was damaged") in proc.stderr
    assert (copy / "ledger.sqlite").read_bytes() == b""


@pytest.mark.parametrize("command", ["verify", "lookup", "report", "evidence"])
def test_a_ledger_that_is_a_directory_is_named_as_one(copy: Path, built: Path, tmp_path: Path,
                                                      command: str) -> None:
    """lookup and evidence said "has no ledger.sqlite; it is not the output of cleanset
    build", verify and report "fatal: [Errno 21] ... resume"."""
    (copy / "ledger.sqlite").unlink()
    (copy / "ledger.sqlite").mkdir()
    image = next(built.parent.glob("pics/*.jpg"))
    args = {"lookup": [str(image)], "report": ["--out", str(tmp_path / "page.html")],
            "evidence": ["0000000000"], "verify": []}[command]
    proc = run_cli(command, str(copy), *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr == (f"cleanset: error: {copy / 'ledger.sqlite'}: is a directory, not "
                           "the ledger (a damaged copy?). Restore ledger.sqlite from a good "
                           "copy of the dataset.\n")


@pytest.mark.parametrize("journal", [b'{"x": 1}\n', b"[1, 2]\n", b'{"id": "takedown-v2"}\n'])
@pytest.mark.parametrize("command", [["recheck"], ["takedown"]])
def test_a_takedown_journal_of_another_shape_is_named_not_a_key_error(
        copy: Path, journal: bytes, command: list[str]) -> None:
    """Valid JSON that is no journal of ours stopped every command that finishes an
    interrupted takedown (recheck, takedown, build) with a KeyError traceback."""
    (copy / ".takedown.json").write_bytes(journal)
    before = every_file(copy)
    proc = run_cli(*command, str(copy))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert (f"cleanset: error: {copy / '.takedown.json'}: is not a takedown journal cleanset "
            "wrote (") in proc.stderr
    assert "Restore it, or delete it if no shard was renamed yet" in proc.stderr
    assert every_file(copy) == before


@pytest.mark.parametrize("command", [
    ["takedown", "{copy}", "--key", "0000000001", "--reason", "test"],
    ["recheck", "{copy}", "--no-progress"]])
def test_a_writer_refuses_a_ledger_truncated_to_nothing_instead_of_starting_a_new_one(
        copy: Path, command: list[str]) -> None:
    """SQLite opens a 0-byte file as an empty database: a takedown wrote a fresh ledger over
    the loss and said 'nothing matches; nothing changed'."""
    (copy / "ledger.sqlite").write_bytes(b"")
    before = every_file(copy)
    proc = run_cli(*[part.format(copy=copy) for part in command])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{copy / 'ledger.sqlite'}: 0 bytes: the ledger was truncated or written over" \
        in proc.stderr and "Traceback" not in proc.stderr
    assert every_file(copy) == before
