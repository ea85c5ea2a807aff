"""After a takedown (finished or interrupted) every file and every command tells the same story:
verify changes nothing and names what is unfinished or stale, the report follows the version,
loading snippets name shards that exist, and the takedown says what it did and did not do."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image
from pytest_httpserver import HTTPServer

from tests.conftest import run_cli, write_jsonl
from tests.test_takedown import N, image, recipe_for, rows_for


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One build (4 shards of 3 from loopback HTTP), copied by every test."""
    tmp = tmp_path_factory.mktemp("takedown-consistency")
    server = HTTPServer()
    server.start()
    try:
        rows = rows_for(server)
        recipe = recipe_for(tmp, write_jsonl(tmp / "urls.jsonl", rows))
        out = tmp / "built"
        run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    finally:
        server.clear()
        server.stop()
    keys = [r["key"] for r in pq.read_table(out / "manifest.parquet").to_pylist()]
    assert len(keys) == N
    yield {"out": out, "rows": rows, "keys": keys, "recipe": recipe}


@pytest.fixture
def out(built: dict, tmp_path: Path) -> Path:
    copy = tmp_path / "out"
    shutil.copytree(built["out"], copy)
    return copy


def every_file(directory: Path) -> dict[str, str]:
    """Every file (hidden ones too) by relative path, with its sha256."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def dataset_files(directory: Path) -> dict[str, str]:
    """Every file but `.lock`, which holds the pid of the last command that took the lock."""
    return {name: sha for name, sha in every_file(directory).items() if name != ".lock"}


def first_shard_keys(built: dict) -> list[str]:
    return built["keys"][:3]  # samples_per_shard = 3: all of 000000.tar


def run_python_as_a_reader(code: str, cwd: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run pasted code as a reader would, without cleanset on the path; warnings are errors."""
    script = tmp_path / "reader.py"
    script.write_text(code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-W", "error", str(script)], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=300)


# -- item 6: verify reports an interrupted takedown, `cleanset takedown DIR` finishes it -------
def test_verify_reports_an_interrupted_takedown_changes_nothing_and_names_the_command_to_finish(
        built: dict, out: Path) -> None:
    # killed after the ledger commit, before the papers: manifest and ledger now disagree
    crashed = run_cli("takedown", str(out), "--key", built["keys"][4], "--reason", "request",
                      env={"CLEANSET_CRASH_AT": "takedown_ledger:1"})
    assert crashed.returncode == -9, crashed.stdout + crashed.stderr
    before = every_file(out)
    assert ".takedown.json" in before

    proc = run_cli("verify", str(out))

    assert proc.returncode == 1, proc.stdout
    assert every_file(out) == before
    problem = next(line for line in proc.stdout.splitlines() if "interrupted" in line)
    assert problem.startswith("PROBLEM takedown takedown-v2 was interrupted")
    command = re.search(r"`(cleanset takedown [^`]+)`", problem)
    assert command is not None and command.group(1) == f"cleanset takedown {out}"

    done = run_cli(*command.group(1).split()[1:], check=True)
    assert "completed the interrupted takedown takedown-v2" in done.stdout
    assert not (out / ".takedown.json").exists()
    assert run_cli("verify", str(out)).returncode == 0
    assert built["keys"][4] not in pq.read_table(out / "manifest.parquet").column("key").to_pylist()


def test_lookup_evidence_report_and_a_dry_run_say_when_an_interrupted_takedown_is_pending(
        built: dict, out: Path, tmp_path: Path) -> None:
    """Between a takedown's shard rewrite and its ledger commit, lookup and evidence once
    answered "accepted as sample ..." for a work no shard held any more, with no word (and
    `takedown --dry-run` still did)."""
    key = built["keys"][4]
    crashed = run_cli("takedown", str(out), "--key", key, "--reason", "request",
                      env={"CLEANSET_CRASH_AT": "takedown_ready:1"})
    assert crashed.returncode == -9, crashed.stdout + crashed.stderr
    before = every_file(out)
    for args in (["evidence", str(out), key],
                 ["report", str(out), "--out", str(tmp_path / "report.html")],
                 ["takedown", str(out), "--key", key, "--dry-run"]):
        proc = run_cli(*args)
        assert proc.returncode == 0, (args, proc.stderr)
        assert "note: takedown takedown-v2 was interrupted" in proc.stderr, (args, proc.stderr)
        assert f"run `cleanset takedown {out}` to finish it" in proc.stderr
    assert every_file(out) == before
    run_cli("takedown", str(out), check=True)
    proc = run_cli("evidence", str(out), key)
    assert "note:" not in proc.stderr


def test_diff_says_when_an_interrupted_takedown_is_pending(built: dict, out: Path,
                                                           tmp_path: Path) -> None:
    """Killed after its ledger commit, before the papers: `diff DIR` names the removed key
    while `diff PUBLISHED DIR` (by the manifests) says nothing was removed. A user syncing
    a copy got either answer with no word that the takedown was half done."""
    published = tmp_path / "published"
    shutil.copytree(out, published)
    crashed = run_cli("takedown", str(out), "--key", built["keys"][4], "--reason", "request",
                      env={"CLEANSET_CRASH_AT": "takedown_ledger:1"})
    assert crashed.returncode == -9, crashed.stdout + crashed.stderr
    before = every_file(out)
    for args in (["diff", str(out), "--json"], ["diff", str(published), str(out), "--json"]):
        proc = run_cli(*args)
        assert proc.returncode == 0, (args, proc.stderr)
        json.loads(proc.stdout)  # the note goes to stderr: stdout stays one JSON object
        assert "note: takedown takedown-v2 was interrupted" in proc.stderr, (args, proc.stderr)
        assert f"run `cleanset takedown {out}` to finish it" in proc.stderr
    assert every_file(out) == before
    run_cli("takedown", str(out), check=True)
    proc = run_cli("diff", str(published), str(out), "--json", check=True)
    assert "note:" not in proc.stderr
    assert json.loads(proc.stdout)["removed"] == [built["keys"][4]]


def test_takedown_without_selectors_and_nothing_to_finish_says_so_and_exits_2(out: Path) -> None:
    before = dataset_files(out)
    proc = run_cli("takedown", str(out))
    assert proc.returncode == 2
    assert "nothing to finish" in proc.stderr and "--key" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert dataset_files(out) == before


# -- item 8: report.html follows the version ---------------------------------------------------
def test_a_takedown_regenerates_report_html_for_the_new_version(built: dict, out: Path,
                                                                tmp_path: Path) -> None:
    run_cli("report", str(out), check=True)
    run_cli("takedown", str(out), "--key", built["keys"][4], "--reason", "request", check=True)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert '<meta name="cleanset-version" content="2">' in page
    assert f"<b>{N - 1}</b>images" in page
    fresh = tmp_path / "fresh"
    shutil.copytree(out, fresh)
    run_cli("report", str(fresh), check=True)
    # The same page a report written now would show, but for the location it names.
    regenerated = (fresh / "report.html").read_text(encoding="utf-8")
    assert regenerated.replace(str(fresh.resolve()), str(out.resolve())) == page
    assert run_cli("verify", str(out)).returncode == 0


def test_verify_flags_a_report_describing_an_older_version_and_names_cleanset_report(
        built: dict, out: Path) -> None:
    run_cli("report", str(out), check=True)
    old_page = (out / "report.html").read_text(encoding="utf-8")
    assert '<meta name="cleanset-version" content="1">' in old_page
    run_cli("takedown", str(out), "--key", built["keys"][4], "--reason", "request", check=True)
    for page in (old_page, old_page.replace('<meta name="cleanset-version" content="1">', "")):
        (out / "report.html").write_text(page, encoding="utf-8")  # a copy restored, or older
        proc = run_cli("verify", str(out))
        assert proc.returncode == 1, proc.stdout
        assert (f"PROBLEM report.html is stale: it shows version 1, the dataset is at version "
                f"2; regenerate it with `cleanset report {out}`") in proc.stdout
    run_cli("report", str(out), check=True)
    assert run_cli("verify", str(out)).returncode == 0


# -- item 9: loading snippets name shards that exist ------------------------------------------
def test_the_cards_webdataset_snippet_loads_every_sample_after_the_first_shard_is_deleted(
        built: dict, out: Path, tmp_path: Path) -> None:
    args = [a for k in first_shard_keys(built) for a in ("--key", k)]
    run_cli("takedown", str(out), *args, "--reason", "request", check=True)
    assert not (out / "shards" / "000000.tar").exists()
    card = (out / "README.md").read_text(encoding="utf-8")
    snippet = re.search(r"```python\n(.*?import webdataset as wds.*?)```", card, re.S)
    assert snippet is not None and "builder" not in snippet.group(1)
    proc = run_python_as_a_reader(
        snippet.group(1) + "\nprint(sum(1 for _ in dataset), type(image).__name__)\n",
        out, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(N - 3), "Image"]
    croissant = json.loads((out / "croissant.json").read_text(encoding="utf-8"))
    urls = [d["contentUrl"] for d in croissant["distribution"] if "contentUrl" in d]
    shard_urls = [u for u in urls if u.startswith("shards/")]
    assert shard_urls and all((out / u).exists() for u in shard_urls)


# The README's webdataset example (a glob, shardshuffle=False) runs with warnings as errors in
# tests/test_docs.py, with every other snippet of the README and docs/.


# -- item 10: the takedown says what it did, and what was already done -------------------------
def test_a_takedown_that_empties_a_shard_reports_it_deleted_not_rewritten(built: dict,
                                                                         out: Path) -> None:
    args = [a for k in first_shard_keys(built) + [built["keys"][4]] for a in ("--key", k)]
    proc = run_cli("takedown", str(out), *args, "--reason", "request", check=True)
    assert ("takedown: 4 sample(s) removed, 1 shard(s) rewritten, 1 shard(s) deleted because "
            "emptied (000000.tar), dataset version 2") in proc.stdout
    log = json.loads((out / "takedowns.jsonl").read_text())
    assert log["shards_rewritten"] == ["000001.tar"] and log["shards_deleted"] == ["000000.tar"]


def test_taking_down_an_already_removed_work_says_when_and_why_by_key_url_and_sha256(
        built: dict, out: Path) -> None:
    key, row = built["keys"][4], built["rows"][4]
    run_cli("takedown", str(out), "--key", key, "--reason", "creator request #17", check=True)
    when = json.loads((out / "takedowns.jsonl").read_text())["when"][:10]
    before = dataset_files(out)
    sha = hashlib.sha256(image(4)).hexdigest().upper()
    expected = {
        ("--key", key): f"key={key}: already removed on {when} by takedown-v2 "
                        "(reason: creator request #17)",
        ("--url", row["url"]): f"url={row['url']}: already removed on {when} by takedown-v2 "
                               "(reason: creator request #17)",
        ("--sha256", sha): f"sha256={sha}: already removed on {when} "
                           "(reason: creator request #17)",
    }
    for selector, line in expected.items():
        proc = run_cli("takedown", str(out), *selector, "--reason", "again")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert line in proc.stdout.splitlines()
        assert "matches" not in proc.stdout and "nothing changed" in proc.stdout
    assert dataset_files(out) == before


def test_taking_down_an_already_removed_work_by_its_image_or_a_near_copy_says_when_and_why(
        built: dict, out: Path, tmp_path: Path) -> None:
    """--image of a work taken down said "nothing in DIR matches", as if it had never been in
    the dataset, while --sha256 of the same bytes (and `lookup`) said when and why it went."""
    key = built["keys"][4]
    run_cli("takedown", str(out), "--key", key, "--reason", "creator request #17", check=True)
    when = json.loads((out / "takedowns.jsonl").read_text())["when"][:10]
    before = dataset_files(out)
    exact, near = tmp_path / "exact.jpg", tmp_path / "near.jpg"
    exact.write_bytes(image(4))
    Image.open(io.BytesIO(image(4))).resize((240, 180)).save(near, "JPEG", quality=70)
    for path, how in ((exact, "(exact)"), (near, "(near: pdq ")):
        proc = run_cli("takedown", str(out), "--image", str(path), "--reason", "again")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert f"image={path} {how}" in proc.stdout, proc.stdout
        assert f"already removed on {when} by takedown-v2 (reason: creator request #17)" \
            in proc.stdout
        assert "matches" not in proc.stdout and "nothing changed" in proc.stdout
    assert dataset_files(out) == before


def test_taking_down_an_already_removed_creator_says_when_and_why_in_any_case(
        out: Path) -> None:
    """A rerun of `--creator Grace` said "nothing matches", as if the name were unknown,
    while --key, --url and --sha256 said when and why their work had gone."""
    run_cli("takedown", str(out), "--creator", "Grace", "--reason", "artist request #3",
            check=True)
    when = json.loads((out / "takedowns.jsonl").read_text())["when"][:10]
    before = dataset_files(out)
    for name in ("Grace", "  grace ", "GRACE"):
        proc = run_cli("takedown", str(out), "--creator", name, "--reason", "again")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert (f"creator={name}: already removed on {when} (reason: artist request #3)"
                in proc.stdout.splitlines()), proc.stdout
        assert "nothing left to remove" in proc.stdout
    other = run_cli("takedown", str(out), "--creator", "Nobody", "--reason", "again")
    assert other.returncode == 1 and "nothing in" in other.stdout and "matches" in other.stdout
    assert dataset_files(out) == before


@pytest.mark.parametrize(("selector", "value", "says"), [
    ("--sha256", "abc", "64 hexadecimal digits"),
    ("--sha256", "g" * 64, "64 hexadecimal digits"),
    ("--key", "42", "ten digits"),
    ("--key", "img4", "ten digits"),
    ("--url", " ", "is empty"),
    ("--creator", "", "is empty"),
])
def test_a_malformed_sha256_key_or_url_is_refused_with_exit_2_naming_the_value(
        out: Path, selector: str, value: str, says: str) -> None:
    before = dataset_files(out)
    proc = run_cli("takedown", str(out), selector, value, "--reason", "request")
    assert proc.returncode == 2, proc.stdout
    assert f"{selector} {value!r}" in proc.stderr and says in proc.stderr
    assert "Traceback" not in proc.stderr
    assert dataset_files(out) == before


def test_a_takedown_needing_a_shard_someone_deleted_changes_nothing_and_says_restore_it(
        built: dict, out: Path) -> None:
    """It used to journal the takedown, fail on the missing file and tell the user to run
    the same command again, which failed the same way: verify then asked to finish a
    takedown that could never finish."""
    (out / "shards" / "000000.tar").unlink()
    before = dataset_files(out)
    proc = run_cli("takedown", str(out), "--key", built["keys"][1], "--reason", "request")
    assert proc.returncode == 2, proc.stderr
    assert "000000.tar is missing" in proc.stderr and "restore the shards" in proc.stderr
    assert "run the same command again" not in proc.stderr
    assert dataset_files(out) == before  # no journal, nothing rewritten
    verify = run_cli("verify", str(out))
    assert "interrupted takedown" not in verify.stdout + verify.stderr
    assert "000000.tar: in the ledger but the file is missing" in verify.stdout
    later = run_cli("takedown", str(out), "--key", built["keys"][4], "--reason", "request")
    assert later.returncode == 0, later.stderr  # shards that are there can still be taken down


@pytest.mark.parametrize("damage", ["truncated", "garbage", "replaced"])
def test_a_takedown_needing_a_damaged_shard_changes_nothing_and_says_restore_it(
        built: dict, out: Path, damage: str) -> None:
    """A truncated shard was rewritten from the members it still held and its new sha256
    recorded: the lost samples' shard no longer fitted its good copy, and verify's "differs
    from the one recorded" was gone. Random bytes failed with a tarfile traceback after the
    journal, which every later command then stopped on."""
    shard = out / "shards" / "000000.tar"
    original = shard.read_bytes()
    if damage == "truncated":
        shard.write_bytes(original[:len(original) // 3])
    elif damage == "garbage":
        shard.write_bytes(bytes(range(256)) * (len(original) // 256))
    else:
        shutil.copyfile(out / "shards" / "000001.tar", shard)
    before = dataset_files(out)
    proc = run_cli("takedown", str(out), "--key", built["keys"][1], "--reason", "request")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "000000.tar is not the file the ledger recorded" in proc.stderr
    assert "Restore the shards from a copy" in proc.stderr and "Traceback" not in proc.stderr
    assert dataset_files(out) == before  # no journal, nothing rewritten or recorded
    assert "000000.tar: file sha256 differs" in run_cli("verify", str(out)).stdout
    shard.write_bytes(original)  # the copy restored: the same takedown goes through
    again = run_cli("takedown", str(out), "--key", built["keys"][1], "--reason", "request")
    assert again.returncode == 0, again.stderr
    assert run_cli("verify", str(out)).returncode == 0


def test_a_lost_shard_stops_every_build_until_restored_or_its_samples_are_taken_down(
        built: dict, out: Path) -> None:
    """A build once said "already complete: 12 samples in 4 shards" over a deleted shard, and
    an extending build refused the lost images as duplicates of samples no shard held."""
    (out / "shards" / "000000.tar").unlink()
    before = dataset_files(out)
    proc = run_cli("build", str(built["recipe"]), "--out", str(out), "--no-progress")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "1 shard(s) the ledger records are missing: 000000.tar (3 samples, sha256 " in \
        proc.stderr and "Restore them from a copy" in proc.stderr
    assert dataset_files(out) == before
    verify = run_cli("verify", str(out))
    assert "restore the dataset's shards/ from a copy" in verify.stdout
    lost = [r["key"] for r in pq.read_table(out / "manifest.parquet").to_pylist()
            if r["shard"] == "shards/000000.tar"]
    assert len(lost) == 3
    # The build's way on, taken one key at a time (an artist asked for one of them), was
    # refused with "restore the shards from a copy" alone: for a user with no copy, a circle.
    one = run_cli("takedown", str(out), "--key", lost[0], "--reason", "request")
    assert one.returncode == 2, one.stdout + one.stderr
    assert "000000.tar is missing" in one.stderr
    assert "with no copy, a takedown of every sample a shard held deletes it" in one.stderr
    assert dataset_files(out) == before
    # with no copy: a takedown of every sample it held needs nothing from it
    down = run_cli("takedown", str(out), *(a for k in lost for a in ("--key", k)),
                   "--reason", "shard lost")
    assert down.returncode == 0, down.stderr
    assert "1 shard(s) deleted because emptied (000000.tar)" in down.stdout
    assert run_cli("verify", str(out)).returncode == 0
    again = run_cli("build", str(built["recipe"]), "--out", str(out), "--no-progress")
    assert again.returncode == 0 and "already complete" in again.stdout, again.stderr


def test_diff_to_a_version_that_does_not_exist_names_the_version_given(out: Path) -> None:
    """`--to 99` alone once said "version 98 does not exist" (the --from it derived)."""
    proc = run_cli("diff", str(out), "--to", "99")
    assert proc.returncode == 2, proc.stderr
    assert "version 99 does not exist" in proc.stderr


# Python hands argv bytes that are not UTF-8 (a Latin-1 terminal's "café") on as lone
# surrogates; subprocess sends this string back to the command as the byte 0xe9.
LATIN1_CAFE = "caf\udce9"


@pytest.mark.parametrize("selector", [
    ("--key", "KEY", "--reason", LATIN1_CAFE),
    ("--creator", LATIN1_CAFE, "--reason", "request"),
    ("--url", f"http://example.org/{LATIN1_CAFE}.jpg", "--reason", "request"),
])
def test_a_reason_or_selector_that_is_not_utf8_is_refused_before_anything_changes(
        built: dict, out: Path, selector: tuple[str, ...]) -> None:
    """A Latin-1 --reason once passed every check, was journalled, and failed at the ledger
    commit with a traceback; the same command, every build and every other takedown then
    failed on that journal for good: the directory could not be written again."""
    before = dataset_files(out)
    args = [built["keys"][1] if a == "KEY" else a for a in selector]
    proc = run_cli("takedown", str(out), *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "caf\\xe9" in proc.stderr and "is not UTF-8 text" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert dataset_files(out) == before  # no journal: nothing to finish, nothing wedged
    assert run_cli("verify", str(out)).returncode == 0


def test_a_journal_an_older_cleanset_left_with_a_non_utf8_reason_is_finished(
        built: dict, out: Path) -> None:
    """Directories the older cleanset wedged (see above) are finished by `cleanset takedown
    DIR`, the reason recorded with its undecodable byte escaped."""
    key = built["keys"][1]
    crashed = run_cli("takedown", str(out), "--key", key, "--reason", "request",
                      env={"CLEANSET_CRASH_AT": "takedown_journal:1"})
    assert crashed.returncode == -9, crashed.stderr
    journal = out / ".takedown.json"
    plan = json.loads(journal.read_text(encoding="utf-8"))
    plan["reason"] = plan["log"]["reason"] = LATIN1_CAFE  # as the older cleanset wrote it
    journal.write_text(json.dumps(plan), encoding="utf-8")
    done = run_cli("takedown", str(out))
    assert done.returncode == 0, done.stderr
    assert "completed the interrupted takedown takedown-v2" in done.stdout
    assert run_cli("verify", str(out)).returncode == 0
    with closing(sqlite3.connect(out / "ledger.sqlite")) as db:
        detail = db.execute("SELECT detail FROM candidates WHERE key = ?", (key,)).fetchone()
    assert detail == ("takedown-v2: caf\\udce9",)
