"""The pipeline spine end to end, through the real CLI, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import struct
import tarfile
import tempfile
import threading
import urllib.request
import zlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds
from pytest_httpserver import HTTPServer

from builder.executors.local import AutoExecutor
from tests.conftest import (
    FIXED_EPOCH,
    REPO,
    make_image,
    run_cli,
    serve_no_site_policies,
    start_cli,
    stopped_itself,
    write_jsonl,
    write_recipe,
)

CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"
BY4 = "http://creativecommons.org/licenses/by/4.0/deed.en"
NC4 = "https://creativecommons.org/licenses/by-nc/4.0/"


def bomb_png(width: int = 60_000, height: int = 60_000) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def png_bytes(seed: int, size: tuple[int, int] = (80, 60)) -> bytes:
    return make_image(seed, size, fmt="PNG")


def serve(httpserver: HTTPServer, path: str, body: bytes, content_type: str = "image/jpeg",
          status: int = 200) -> str:
    httpserver.expect_request(path).respond_with_data(body, status=status,
                                                      content_type=content_type)
    return httpserver.url_for(path)


@pytest.fixture
def corpus(httpserver: HTTPServer, tmp_path: Path) -> dict:
    """A table of candidates exercising every outcome the spine decides, and its recipe."""
    serve_no_site_policies(httpserver)
    good_jpg = make_image(1, (120, 90))
    truncated = make_image(2, (200, 150))[:-400]
    rows = [
        {"id": "ok-cc0", "url": serve(httpserver, "/a.jpg", good_jpg), "license": CC0,
         "caption": "blocks of colour"},
        {"id": "ok-by", "url": serve(httpserver, "/b.png", png_bytes(3), "image/png"),
         "license": BY4},
        {"id": "nc", "url": serve(httpserver, "/c.jpg", make_image(4)), "license": NC4},
        {"id": "missing", "url": serve(httpserver, "/d.jpg", make_image(5))},
        {"id": "unknown", "url": serve(httpserver, "/e.jpg", make_image(6)),
         "license": "all rights kinda reserved maybe"},
        {"id": "gone", "url": httpserver.url_for("/404.jpg"), "license": CC0},
        {"id": "html", "url": serve(httpserver, "/f.jpg", b"<html><body>hi</body></html>"),
         "license": CC0},
        {"id": "truncated", "url": serve(httpserver, "/g.jpg", truncated), "license": CC0},
        {"id": "big", "url": serve(httpserver, "/h.jpg", make_image(7, (900, 900), quality=100)
                                   + b"\0" * 300_000), "license": CC0},
        {"id": "dup", "url": serve(httpserver, "/a-copy.jpg", good_jpg), "license": BY4},
        {"id": "bomb", "url": serve(httpserver, "/bomb.png", bomb_png(), "image/png"),
         "license": CC0},
        {"id": "tiny", "url": serve(httpserver, "/tiny.png", png_bytes(8, (4, 4)), "image/png"),
         "license": CC0},
    ]
    for i in range(9, 14):
        rows.append({"id": f"more-{i}", "url": serve(httpserver, f"/m{i}.jpg", make_image(i)),
                     "license": CC0, "caption": f"picture {i}"})
    httpserver.expect_request("/404.jpg").respond_with_data("nope", status=404)
    table = write_jsonl(tmp_path / "urls.jsonl", rows)
    recipe = write_recipe(tmp_path / "recipe.toml", f"""
[dataset]
name = "spine-test"
samples_per_shard = 3

[policy]
use = "commercial"

[[sources]]
kind = "table"
path = "{table.name}"

[fetch]
allow_private_addresses = true
timeout_s = 5
max_bytes = 250_000
retries = 0
workers = 4

[image]
min_width = 8
min_height = 8
""")
    return {"recipe": recipe, "rows": rows}


EXPECTED_REASONS = {
    "nc": "license_not_allowed",
    "missing": "license_missing",
    "unknown": "license_unrecognized",
    "gone": "http_error",
    "html": "not_image",
    "truncated": "corrupt_image",
    "big": "too_large",
    "dup": "duplicate_exact",
    "bomb": "decompression_bomb",
    "tiny": "too_small",
}


def build(recipe: Path, out: Path, *extra: str) -> str:
    proc = run_cli("build", str(recipe), "--out", str(out), "--no-progress", *extra, check=True)
    return proc.stdout


def test_every_candidate_ends_in_exactly_one_ledger_row_with_the_right_reason(
        corpus: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    stdout = build(corpus["recipe"], out)
    cands = pq.read_table(out / "candidates.parquet").to_pylist()
    assert len(cands) == len(corpus["rows"])
    by_id = {c["candidate_id"].split(":", 1)[1]: c for c in cands}
    for source_id, reason in EXPECTED_REASONS.items():
        assert by_id[source_id]["status"] == "rejected", source_id
        assert by_id[source_id]["reason"] == reason, (source_id, by_id[source_id]["detail"])
    accepted = [c for c in cands if c["status"] == "accepted"]
    assert {c["candidate_id"].split(":", 1)[1] for c in accepted} == {
        "ok-cc0", "ok-by", "more-9", "more-10", "more-11", "more-12", "more-13"}
    assert all(c["reason"] is None and c["key"] for c in accepted)
    assert by_id["dup"]["detail"].endswith(by_id["ok-cc0"]["key"])
    assert "7 accepted" in stdout and "10 rejected" in stdout
    assert "rejected license_not_allowed: 1" in stdout


def test_shards_hold_original_bytes_and_full_provenance_readable_by_webdataset(
        corpus: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    build(corpus["recipe"], out)
    shards = sorted((out / "shards").glob("*.tar"))
    assert [p.name for p in shards] == ["000000.tar", "000001.tar", "000002.tar"]
    samples = list(wds.WebDataset([str(p) for p in shards], shardshuffle=False))
    assert len(samples) == 7
    first = samples[0]
    served = {r["url"]: r for r in corpus["rows"]}
    prov = json.loads(first["json"])
    assert first["jpg"] == make_image(1, (120, 90))  # never re-encoded
    assert first["txt"] == b"blocks of colour"
    assert samples[1]["jpg"] == png_bytes(3)  # one member name for all; true format in mime
    assert json.loads(samples[1]["json"])["mime"] == "image/png"
    assert all({k for k in s if not k.startswith("__")} == {"jpg", "json", "txt"} for s in samples)
    assert prov["license"]["spdx"] == "CC0-1.0"
    assert prov["source"]["file_url"] in served
    assert prov["license"]["evidence"] == [{"field": "license", "value": CC0}]
    required = {"key", "sha256", "sha1", "pdq", "phash", "width", "height", "mime", "bytes",
                "source", "license", "attribution", "caption", "retrieved_at", "http",
                "optout", "build"}
    for sample in samples:
        p = json.loads(sample["json"])
        assert required <= set(p)
        assert set(p["source"]) >= {"name", "id", "file_url", "landing_url", "api_url"}
        assert set(p["license"]) >= {"spdx", "url", "name", "attribution_required",
                                     "share_alike", "evidence"}
        assert set(p["attribution"]) >= {"creator", "creator_url", "title", "text"}
        assert p["key"] == sample["__key__"]
        assert all(ch.isdigit() or ch.islower() or ch in "_-" for ch in p["key"])
    by_license = {json.loads(s["json"])["license"]["spdx"] for s in samples}
    assert by_license == {"CC0-1.0", "CC-BY-4.0"}
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    assert [m["key"] for m in manifest] == [s["__key__"] for s in samples]
    assert {"shard", "sha256", "license", "license_url", "source", "source_id", "file_url",
            "landing_url", "creator", "width", "height", "bytes"} <= set(manifest[0])


def test_shards_load_with_hugging_face_datasets(corpus: dict, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "out"
    build(corpus["recipe"], out)
    files = sorted(str(p) for p in (out / "shards").glob("*.tar"))
    ds = datasets.load_dataset("webdataset", data_files={"train": files}, split="train",
                               cache_dir=str(tmp_path / "hf-cache"))
    assert ds.num_rows == 7
    keys = ds["__key__"]
    assert len(set(keys)) == 7
    row = ds[0]
    assert row["json"]["license"]["spdx"] == "CC0-1.0"


def test_rebuild_gives_byte_identical_shards(corpus: dict, tmp_path: Path) -> None:
    build(corpus["recipe"], tmp_path / "one")
    build(corpus["recipe"], tmp_path / "two", "--workers", "1")
    one = sorted((tmp_path / "one" / "shards").glob("*.tar"))
    two = sorted((tmp_path / "two" / "shards").glob("*.tar"))
    assert [p.name for p in one] == [p.name for p in two]
    for a, b in zip(one, two, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_shard_members_have_fixed_metadata_and_dot_free_keys(corpus: dict,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "out"
    build(corpus["recipe"], out)
    with tarfile.open(out / "shards" / "000000.tar") as tar:
        infos = tar.getmembers()
    assert {i.mtime for i in infos} == {1_577_836_800}
    assert {i.uname for i in infos} == {"cleanset"}
    for info in infos:
        key, _, ext = info.name.partition(".")
        assert "." not in ext or ext == ""
        assert key.isalnum()


def test_a_second_build_into_the_same_dir_is_a_no_op_and_verify_passes(
        corpus: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    build(corpus["recipe"], out)
    before = {p.name: p.read_bytes() for p in (out / "shards").glob("*.tar")}
    stdout = build(corpus["recipe"], out)
    assert "already complete" in stdout
    assert {p.name: p.read_bytes() for p in (out / "shards").glob("*.tar")} == before
    assert len(pq.read_table(out / "candidates.parquet")) == len(corpus["rows"])
    proc = run_cli("verify", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verify: OK: 7 samples" in proc.stdout


def test_a_table_changed_after_its_build_is_named_when_the_same_recipe_adds_nothing(
        corpus: dict, tmp_path: Path) -> None:
    """Rows appended to the table got only "already complete" and 0 candidates: the user
    could not tell that the same recipe never reads its sources again."""
    import time

    out = tmp_path / "out"
    build(corpus["recipe"], out)
    assert "changed after build" not in build(corpus["recipe"], out)
    table = corpus["recipe"].parent / "urls.jsonl"
    with table.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"id": "new", "url": "http://127.0.0.1:9/new.jpg",
                            "license": CC0}) + "\n")
    later = time.time() + 5  # after the build's finish, whatever the clock's resolution
    os.utime(table, (later, later))
    stdout = build(corpus["recipe"], out)
    assert "already complete" in stdout
    assert f"note: {table.resolve()} (source 'table') changed after build 1" in stdout, stdout
    assert "change the recipe" in stdout and "starts build 2" in stdout


def test_verify_catches_one_flipped_byte_in_a_shard(corpus: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    build(corpus["recipe"], out)
    shard = out / "shards" / "000001.tar"
    with tarfile.open(shard) as tar:
        image = next(i for i in tar.getmembers() if not i.name.endswith((".json", ".txt")))
    data = bytearray(shard.read_bytes())
    data[image.offset_data + image.size // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    proc = run_cli("verify", str(out))
    assert proc.returncode == 1
    assert f"000001.tar:{image.name.split('.')[0]}: image sha256" in proc.stdout


@pytest.mark.parametrize(("edit", "said"), [
    ("UPDATE samples SET creator = 'Someone Else' WHERE key = '{key}'",
     "{key}: the ledger's creator 'Someone Else' differs from the provenance's"),
    ("UPDATE samples SET provenance = replace(provenance, '\"bytes\":', '\"bytes\": ') "
     "WHERE key = '{key}'", "{key}: provenance differs from the ledger's copy of it"),
    ("UPDATE candidates SET license = 'MIT' WHERE key = '{key}'",
     "{key}: its candidate row says licence MIT, its sample ")],
    ids=["a sample's creator", "a sample's provenance", "a candidate's licence"])
def test_verify_names_a_ledger_row_edited_away_from_the_sample_s_provenance(
        corpus: dict, tmp_path: Path, edit: str, said: str) -> None:
    """The shard's provenance, the ledger's copy of it and the columns papers, lookup and
    takedown read must tell one story; a hand edit of one of them is named."""
    out = tmp_path / "out"
    build(corpus["recipe"], out)
    key = pq.read_table(out / "manifest.parquet", columns=["key"]).column("key")[0].as_py()
    with sqlite3.connect(out / "ledger.sqlite") as db:
        assert db.execute(edit.format(key=key)).rowcount == 1
    db.close()
    proc = run_cli("verify", str(out))
    assert proc.returncode == 1, proc.stdout
    assert said.format(key=key) in proc.stdout


def test_a_later_build_of_another_recipe_dedups_against_what_is_already_there(
        corpus: dict, tmp_path: Path, httpserver: HTTPServer) -> None:
    out = tmp_path / "out"
    build(corpus["recipe"], out)
    again = write_jsonl(tmp_path / "again.jsonl", [
        {"id": "same-bytes", "url": serve(httpserver, "/again.jpg", make_image(1, (120, 90))),
         "license": CC0},
        {"id": "new", "url": serve(httpserver, "/new.jpg", make_image(99)), "license": CC0},
    ])
    recipe2 = write_recipe(tmp_path / "recipe2.toml",
                           corpus["recipe"].read_text().replace("urls.jsonl", again.name))
    build(recipe2, out)
    cands = pq.read_table(out / "candidates.parquet").to_pylist()
    assert len(cands) == len(corpus["rows"]) + 2
    later = {c["candidate_id"]: c for c in cands if c["build"] == 2}
    assert later["table:same-bytes"]["reason"] == "duplicate_exact"
    assert later["table:new"]["status"] == "accepted"
    assert (out / "shards" / "000003.tar").exists()  # a new build starts a new shard
    assert run_cli("verify", str(out)).returncode == 0


def test_limit_then_continue_gives_the_same_shards_as_one_build(corpus: dict,
                                                                tmp_path: Path) -> None:
    build(corpus["recipe"], tmp_path / "whole")
    out = tmp_path / "parts"
    first = build(corpus["recipe"], out, "--limit", "5")
    assert "stopped at --limit 5" in first
    assert len(pq.read_table(out / "candidates.parquet")) == 5
    build(corpus["recipe"], out)
    for p in sorted((tmp_path / "whole" / "shards").glob("*.tar")):
        assert (out / "shards" / p.name).read_bytes() == p.read_bytes(), p.name
    assert run_cli("verify", str(out)).returncode == 0


def test_worker_processes_give_the_same_shards_as_threads(corpus: dict, tmp_path: Path) -> None:
    build(corpus["recipe"], tmp_path / "threads", "--executor", "threads")
    build(corpus["recipe"], tmp_path / "procs", "--executor", "processes")
    one = sorted((tmp_path / "threads" / "shards").glob("*.tar"))
    two = sorted((tmp_path / "procs" / "shards").glob("*.tar"))
    assert [p.name for p in one] == [p.name for p in two]
    for a, b in zip(one, two, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    reasons = [(c["candidate_id"], c["reason"]) for c in
               pq.read_table(tmp_path / "procs" / "candidates.parquet").to_pylist()]
    assert reasons == [(c["candidate_id"], c["reason"]) for c in
                       pq.read_table(tmp_path / "threads" / "candidates.parquet").to_pylist()]


def many_images_recipe(tmp_path: Path, rows: list[dict], dataset: str, rest: str) -> Path:
    """A table recipe over `rows` for the executor tests: the commercial policy, small images
    allowed, `dataset` lines under [dataset] and `rest` (whole sections) after the source."""
    table = write_jsonl(tmp_path / "urls.jsonl", rows)
    return write_recipe(tmp_path / "recipe.toml", f"""
[dataset]
name = "executor-test"
{dataset}
[policy]
use = "commercial"
[[sources]]
kind = "table"
path = "{table.name}"
{rest}
[image]
min_width = 8
min_height = 8
""")


def test_the_default_executor_moves_a_large_build_to_worker_processes_with_the_same_result(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    """A build past AutoExecutor.SWITCH_AFTER candidates runs the rest in worker processes
    (one per core) and writes exactly what the threads executor writes."""
    serve_no_site_policies(httpserver)
    count = AutoExecutor.SWITCH_AFTER + 40
    image = make_image(0, (48, 40))
    rows = [{"id": f"r{i}", "url": serve(httpserver, f"/{i}.jpg", make_image(i, (48, 40))),
             "license": CC0} for i in range(count)]
    rows.append({"id": "copy", "url": serve(httpserver, "/copy.jpg", image), "license": CC0})
    recipe = many_images_recipe(tmp_path, rows, "samples_per_shard = 50",
                                "[fetch]\nallow_private_addresses = true\nretries = 0")
    # The temporary directory, where worker processes spool images for the build process,
    # is a short path of its own (multiprocessing puts its forkserver's socket there too).
    with tempfile.TemporaryDirectory(prefix="spool-") as temp:
        default = run_cli("build", str(recipe), "--out", str(tmp_path / "auto"),
                          "--no-progress", env={"TMPDIR": temp}, check=True).stdout
        assert list(Path(temp).iterdir()) == []
    build(recipe, tmp_path / "threads", "--executor", "threads")
    assert f"the first {AutoExecutor.SWITCH_AFTER} candidates' stages ran in threads" in default
    assert "worker processes" in default
    for name in ("auto", "threads"):
        assert run_cli("verify", str(tmp_path / name)).returncode == 0
    one = sorted((tmp_path / "auto" / "shards").glob("*.tar"))
    two = sorted((tmp_path / "threads" / "shards").glob("*.tar"))
    assert [p.name for p in one] == [p.name for p in two] and len(one) == 4
    for a, b in zip(one, two, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    for a, b in zip(sorted((tmp_path / "auto" / "evidence").iterdir()),
                    sorted((tmp_path / "threads" / "evidence").iterdir()), strict=True):
        assert a.name == b.name and a.read_bytes() == b.read_bytes(), a.name
    reasons = [c["reason"] for c in pq.read_table(tmp_path / "auto" / "candidates.parquet")
               .to_pylist()]
    assert reasons.count("duplicate_exact") == 1 and reasons.count(None) == count


def holding_recipe(httpserver: HTTPServer, tmp_path: Path, count: int, answered: int
                   ) -> tuple[Path, threading.Event, threading.Event]:
    """A recipe of `count` images whose server answers `answered` requests, then holds every
    further one until `release` is set (60 s at most): the fetches in flight stay in flight.
    Returns the recipe, `reached` (set once it holds) and `release`.

    The images sit under a folder of their own: the server outlives the test, and a worker
    process of the test before, still fetching as its killed build's end reached it, once
    asked for /0.jpg here and set `reached` before this build had started."""
    import uuid

    from werkzeug import Request, Response

    serve_no_site_policies(httpserver)
    run = uuid.uuid4().hex[:12]
    images = {f"/{run}/{i}.jpg": make_image(i, (40, 32)) for i in range(count)}
    served, reached, release = [0], threading.Event(), threading.Event()

    def image(request: Request) -> Response:
        served[0] += 1
        if served[0] >= answered:
            reached.set()
            release.wait(60)
        return Response(images[request.path], content_type="image/jpeg")

    for path in images:
        httpserver.expect_request(path).respond_with_handler(image)
    rows = [{"id": path, "url": httpserver.url_for(path), "license": CC0} for path in images]
    recipe = many_images_recipe(tmp_path, rows, "samples_per_shard = 100",
                                "[fetch]\nallow_private_addresses = true\nretries = 0\n"
                                "[executor]\nprocesses = 2")
    return recipe, reached, release


@pytest.mark.parametrize("phase", ["worker processes", "threads"])
def test_ctrl_c_mid_build_exits_130_at_once_quietly_and_the_rerun_finishes(
        httpserver: HTTPServer, tmp_path: Path, phase: str) -> None:
    """Ctrl-C reaches the whole process group (the build and its worker processes): the
    build stops at once without waiting for the fetches in flight, says it was interrupted,
    exits 130 with no traceback from any process, and running the same command again
    finishes the dataset. In the default executor's worker-process phase, and with the
    stages in the build's own threads."""
    import signal
    import subprocess
    import sys

    in_threads = phase == "threads"
    count = 60 if in_threads else AutoExecutor.SWITCH_AFTER + 120
    # requests answered before the server holds them (until the test has pressed Ctrl-C):
    # past the switch to worker processes, or a few into the threads' build
    answered = 20 if in_threads else AutoExecutor.SWITCH_AFTER + 30
    recipe, reached, release = holding_recipe(httpserver, tmp_path, count, answered)
    # Python keeps SIGINT ignored when it starts ignored (a test runner started in the
    # background, as `cmd &` in a script does): the build gets Ctrl-C as in a terminal.
    as_in_a_terminal = ("import signal, sys; signal.signal(signal.SIGINT, "
                        "signal.default_int_handler); from builder.cli import run; "
                        "sys.argv = ['cleanset', *sys.argv[1:]]; run()")
    command = [sys.executable, "-c", as_in_a_terminal, "build", str(recipe), "--out",
               str(tmp_path / "out"), "--no-progress",
               *(["--executor", "threads"] if in_threads else [])]
    env = {**os.environ, "SOURCE_DATE_EPOCH": FIXED_EPOCH, "PYTHONPATH": str(REPO)}
    # A session of its own: the process group a terminal's Ctrl-C is sent to.
    build_process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert reached.wait(120), f"the build never reached its {phase}"
        os.killpg(build_process.pid, signal.SIGINT)
        # The server still holds the requests of the batches the workers are running: a
        # build that waited for them (it throws their outcomes away) would sit here for the
        # server's 60 s, as on a host that never answers, and miss this deadline.
        stdout, stderr = build_process.communicate(timeout=30)
    finally:
        release.set()
        if build_process.poll() is None:
            build_process.kill()

    assert build_process.returncode == 130, stderr
    assert "interrupted; run the same command again to resume" in stderr
    assert "Traceback" not in stderr and "ERROR" not in stderr, stderr
    assert "dataset:" not in stdout
    rerun = run_cli("build", str(recipe), "--out", str(tmp_path / "out"), "--no-progress")
    assert rerun.returncode == 0, rerun.stderr
    assert f"dataset: {count} samples" in rerun.stdout
    assert run_cli("verify", str(tmp_path / "out")).returncode == 0


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_a_ctrl_c_keeps_the_decisions_of_the_last_seconds_not_only_each_256th(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    """Decisions commit every 256, and now also once 30 s have passed since the last commit:
    at a polite host's one request a second, a Ctrl-C threw away up to four minutes of
    downloads, all asked again by the rerun. Here the seconds are 0, so the build commits
    its first decision at once, and is stopped and Ctrl-C'd there."""
    import signal

    from werkzeug import Request, Response

    serve_no_site_policies(httpserver)
    images = {f"/slow/{i}.jpg": make_image(i, (40, 32)) for i in range(12)}
    asked: list[str] = []

    def image(request: Request) -> Response:
        asked.append(request.path)
        return Response(images[request.path], content_type="image/jpeg")

    for path in images:
        httpserver.expect_request(path).respond_with_handler(image)
    rows = [{"id": path, "url": httpserver.url_for(path), "license": CC0} for path in images]
    recipe = many_images_recipe(tmp_path, rows, "", "[fetch]\nallow_private_addresses = true")
    out = tmp_path / "out"
    command = ("build", str(recipe), "--out", str(out), "--no-progress", "--executor", "threads")
    held = start_cli(*command, env={"CLEANSET_COMMIT_SECONDS": "0",
                                    "CLEANSET_STOP_AT": "after_commit"})
    try:
        assert stopped_itself(held), held.communicate()
        with sqlite3.connect(f"file:{out / 'ledger.sqlite'}?mode=ro", uri=True) as db:
            committed = db.execute("SELECT url FROM candidates ORDER BY seq").fetchall()
        held.send_signal(signal.SIGINT)
    finally:
        held.send_signal(signal.SIGCONT)
        _, stderr = held.communicate(timeout=120)
    assert held.returncode == 130, stderr
    # committed as its first decision was taken, not at the 256th or at the build's end
    assert committed == [(rows[0]["url"],)]
    # The server answers one connection at a time: requests the stopped build sent before it
    # ended are still queued there. One more request is answered after all of them, so none
    # is counted as the rerun's.
    httpserver.expect_request("/after-the-first-run").respond_with_data("")
    urllib.request.urlopen(httpserver.url_for("/after-the-first-run"), timeout=60).read()
    asked.clear()
    rerun = run_cli(*command)
    assert rerun.returncode == 0, rerun.stderr
    assert "dataset: 12 samples" in rerun.stdout
    assert "/slow/0.jpg" not in asked and len(asked) == 11
    assert run_cli("verify", str(out)).returncode == 0


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_ctrl_c_that_lands_in_a_finalizer_still_stops_the_build(
        tmp_path: Path, signal_name: str) -> None:
    """Python raises KeyboardInterrupt wherever the main thread is; in a finalizer (a
    `__del__`, as a Ray driver runs for every object reference it drops) it is printed as
    "Exception ignored" and lost: a build once ran on to exit 0 after a Ctrl-C. Here a real
    signal lands in a finalizer as the first shard is opened, with 38 decisions to go."""
    import subprocess
    import sys

    from tests.test_output_safety import add_images, recipe_in

    add_images(tmp_path / "images", range(40))
    recipe = recipe_in(tmp_path)  # two samples a shard
    code = ("import os, signal, sys, threading\n"
            "class Finalized:\n"
            "    def __del__(self):\n"
            "        print('in the finalizer', flush=True)\n"
            f"        signal.raise_signal(signal.{signal_name})\n"
            "        sum(range(100))  # the handler's exception is raised in here\n"
            "fired = []\n"
            "def hook(event, args):\n"
            "    if (event == 'open' and str(args[0]).endswith('.tar.tmp') and not fired\n"
            "            and threading.current_thread() is threading.main_thread()):\n"
            "        fired.append(True)\n"
            "        Finalized()  # collected at once, in the build's main thread\n"
            "sys.addaudithook(hook)\n"
            "from builder.cli import main\n"
            f"sys.exit(main(['build', {str(recipe)!r}, '--out', {str(tmp_path / 'out')!r}, "
            "'--executor', 'threads', '--no-progress']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "SOURCE_DATE_EPOCH": FIXED_EPOCH,
                               "PYTHONPATH": str(REPO)}, timeout=300)
    assert "in the finalizer" in proc.stdout
    # SIGHUP (the terminal closed) ended a build with no word and none of the clean-up
    exit_code, said = {"SIGINT": (130, "interrupted"), "SIGTERM": (143, "terminated (SIGTERM)"),
                       "SIGHUP": (129, "hung up (SIGHUP: the terminal closed?)")}[signal_name]
    assert proc.returncode == exit_code, proc.stderr
    # no "Exception ignored"
    assert proc.stderr == f"cleanset: {said}; run the same command again to resume.\n"
    assert "dataset:" not in proc.stdout
    rerun = run_cli("build", str(recipe), "--out", str(tmp_path / "out"), "--no-progress")
    assert rerun.returncode == 0, rerun.stderr
    assert "dataset: 40 samples" in rerun.stdout


def test_sigterm_mid_build_stops_as_ctrl_c_does_exit_143_nothing_left_and_the_rerun_finishes(
        httpserver: HTTPServer, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """`kill PID` (a scheduler stopping a job) reaches the build process alone: it once died
    where it stood, exit 143 with no word, leaving multiprocessing's temporary folder and a
    "leaked semaphore" warning behind."""
    import signal
    import subprocess
    import sys

    count = AutoExecutor.SWITCH_AFTER + 120
    recipe, reached, release = holding_recipe(httpserver, tmp_path, count,
                                              AutoExecutor.SWITCH_AFTER + 30)
    # A short TMPDIR: the fork server's socket path must fit in 107 bytes (tmp_path may not)
    temp = Path(tempfile.mkdtemp(prefix="cs-term-"))
    request.addfinalizer(lambda: shutil.rmtree(temp, ignore_errors=True))
    env = {**os.environ, "SOURCE_DATE_EPOCH": FIXED_EPOCH, "PYTHONPATH": str(REPO),
           "TMPDIR": str(temp)}
    build_process = subprocess.Popen(
        [sys.executable, "-m", "builder", "build", str(recipe), "--out", str(tmp_path / "out"),
         "--no-progress"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        assert reached.wait(120), "the build never reached its worker processes"
        assert any(temp.glob("pymp-*"))  # the fork server's folder, while it runs
        build_process.send_signal(signal.SIGTERM)
        stdout, stderr = build_process.communicate(timeout=30)
    finally:
        release.set()
        if build_process.poll() is None:
            build_process.kill()
    assert build_process.returncode == 143, stderr
    assert "terminated (SIGTERM); run the same command again to resume" in stderr
    assert "Traceback" not in stderr and "leaked" not in stderr, stderr
    assert list(temp.iterdir()) == []  # the spool and the fork server's folder went with it
    rerun = run_cli("build", str(recipe), "--out", str(tmp_path / "out"), "--no-progress")
    assert rerun.returncode == 0, rerun.stderr
    assert f"dataset: {count} samples" in rerun.stdout


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize("rows, executor, started", [
    (AutoExecutor.SWITCH_AFTER + 120, None, True), (40, None, False),
    (AutoExecutor.SWITCH_AFTER + 120, "threads", False), (40, "processes", True)],
    ids=["large table", "small table", "threads", "processes"])
def test_the_fork_server_starts_with_a_build_that_will_want_worker_processes(
        httpserver: HTTPServer, tmp_path: Path, rows: int, executor: str | None,
        started: bool) -> None:
    """It imports the stages while the build process starts up, instead of after the switch
    with the first batch waiting: running already when the first image is asked for, in a
    build whose table has more rows than the default executor keeps in threads (or with
    the processes executor); not for a small table, nor with the threads executor."""
    import signal
    import subprocess
    import sys

    recipe, reached, release = holding_recipe(httpserver, tmp_path, rows, answered=1)
    command = [sys.executable, "-m", "builder", "build", str(recipe), "--out",
               str(tmp_path / "out"), "--no-progress", *(["--executor", executor]
                                                       if executor else [])]
    env = {**os.environ, "SOURCE_DATE_EPOCH": FIXED_EPOCH, "PYTHONPATH": str(REPO)}
    build_process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
    try:
        assert reached.wait(120), "the build never asked for an image"
        servers = [pid for pid in _descendants(build_process.pid)
                   if b"multiprocessing.forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    finally:
        build_process.send_signal(signal.SIGKILL)
        build_process.wait()
        release.set()

    assert bool(servers) is started, servers
    assert _still_running(servers, timeout=30) == []  # it ends with the build process


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux's /proc children lists), before it goes."""
    found = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:  # the process has ended
        return found
    for task in tasks:
        try:  # a thread may end between the listing and this read
            children = (task / "children").read_text().split()
        except FileNotFoundError:
            continue
        for child in children:
            found += [int(child), *_descendants(int(child))]
    return found


def _still_running(pids: list[int], timeout: float) -> list[int]:
    """The processes of `pids` that have not ended within `timeout` seconds (woken by
    the kernel as each one ends, through a pidfd)."""
    import select
    import time

    deadline = time.monotonic() + timeout
    left = []
    for pid in pids:
        try:
            handle = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            readable, _, _ = select.select([handle], [], [], max(0, deadline - time.monotonic()))
        finally:
            os.close(handle)
        if not readable:
            left.append(pid)
    return left


@pytest.mark.skipif(not hasattr(os, "pidfd_open") or not Path("/proc/self/task").exists(),
                    reason="needs Linux's pidfds and /proc")
def test_a_build_process_killed_outright_takes_its_worker_processes_and_spool_with_it(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    """The OOM killer or `kill -9` gives the build process no chance to stop its workers:
    they notice by themselves, remove the spool of images and exit (with them the fork
    server and multiprocessing's resource tracker), even while fetching; the same command
    then finishes the dataset."""
    import signal
    import subprocess
    import sys

    count = AutoExecutor.SWITCH_AFTER + 120
    # held past the switch to worker processes: the workers are mid-batch, waiting on them
    recipe, reached, release = holding_recipe(httpserver, tmp_path, count,
                                              AutoExecutor.SWITCH_AFTER + 30)
    with tempfile.TemporaryDirectory(prefix="spool-") as temp:
        env = {**os.environ, "SOURCE_DATE_EPOCH": FIXED_EPOCH, "PYTHONPATH": str(REPO),
               "TMPDIR": temp}
        command = [sys.executable, "-m", "builder", "build", str(recipe), "--out",
                   str(tmp_path / "out"), "--no-progress"]
        build_process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
        below: list[int] = []
        try:
            assert reached.wait(120), "the build never reached its worker processes"
            below = _descendants(build_process.pid)
            assert len(below) >= 3, below  # the fork server and two workers at least
            assert any(p.name.startswith("cleanset-spool-") for p in Path(temp).iterdir())
            build_process.send_signal(signal.SIGKILL)
            build_process.wait()
            survivors = _still_running(below, timeout=30)
        finally:
            release.set()
            for pid in _still_running(below, timeout=0):
                os.kill(pid, signal.SIGKILL)
        assert survivors == [], [Path(f"/proc/{p}/cmdline").read_bytes()[:120]
                                 for p in survivors]
        assert not [p for p in Path(temp).iterdir() if p.name.startswith("cleanset-spool-")]

    rerun = run_cli("build", str(recipe), "--out", str(tmp_path / "out"), "--no-progress")
    assert rerun.returncode == 0, rerun.stderr
    assert f"dataset: {count} samples" in rerun.stdout
    assert run_cli("verify", str(tmp_path / "out")).returncode == 0


def test_a_temporary_directory_too_long_for_a_socket_keeps_the_stages_in_threads(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    """Worker processes are started through a Unix socket in TMPDIR (107 bytes at most):
    with a longer TMPDIR the default executor says so and stays in threads, and the
    processes executor is refused before anything is created."""
    from builder.executors.local import AutoExecutor

    serve_no_site_policies(httpserver)
    rows = [{"id": f"r{i}", "url": serve(httpserver, f"/{i}.jpg", make_image(i, (40, 32))),
             "license": CC0} for i in range(AutoExecutor.SWITCH_AFTER + 10)]
    recipe = many_images_recipe(tmp_path, rows, "", "[fetch]\nallow_private_addresses = true\n"
                                "[executor]\nprocesses = 2")
    deep = tmp_path / ("t" * 100)
    deep.mkdir()

    built = run_cli("build", str(recipe), "--out", str(tmp_path / "out"), "--no-progress",
                    env={"TMPDIR": str(deep)})
    refused = run_cli("build", str(recipe), "--out", str(tmp_path / "refused"),
                      "--executor", "processes", env={"TMPDIR": str(deep)})

    assert built.returncode == 0, built.stderr
    assert "stages ran in threads, not worker processes" in built.stdout
    assert "set TMPDIR to a shorter one" in built.stdout and "stay in threads" in built.stderr
    assert run_cli("verify", str(tmp_path / "out")).returncode == 0
    assert refused.returncode == 2 and "TMPDIR" in refused.stderr
    assert not (tmp_path / "refused").exists()


def test_a_build_allowed_one_connection_per_host_stays_in_threads_under_the_default_executor(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    """Worker processes each keep their own per-host limits; one connection cannot be shared
    out among two, so the default executor never starts them (politeness over speed)."""
    from builder.executors.local import AutoExecutor

    serve_no_site_policies(httpserver)
    rows = [{"id": f"r{i}", "url": serve(httpserver, f"/{i}.jpg", make_image(i, (40, 32))),
             "license": CC0} for i in range(AutoExecutor.SWITCH_AFTER + 10)]
    recipe = many_images_recipe(tmp_path, rows, "", "[fetch]\nallow_private_addresses = true\n"
                                "per_host_connections = 1\n[executor]\nprocesses = 2")
    stdout = build(recipe, tmp_path / "out")
    assert "worker processes" not in stdout
    assert f"opt-out robots.txt: checked {len(rows)}, rejected 0" in stdout  # threads' counts


def test_worker_processes_share_out_the_per_host_limits_the_recipe_sets() -> None:
    from dataclasses import replace

    from builder.executors.local import split_host_limits
    from builder.recipe import FetchConfig, load_recipe
    from builder.stages import StagePlan

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "examples/offline/recipe.toml")
    recipe = replace(recipe, fetch=FetchConfig(per_host_connections=8, per_host_rps=3.0))
    plan = StagePlan(recipe=recipe, policy=None, out=Path("out"))
    two = split_host_limits(plan, 2).recipe.fetch
    assert (two.per_host_connections, two.per_host_rps) == (4, 1.5)
    three = split_host_limits(plan, 3).recipe.fetch
    assert (three.per_host_connections, three.per_host_rps) == (2, 1.0)
    assert split_host_limits(plan, 1) is plan
