"""The evidence archive (#19): a build from a local MediaWiki API and a table source keeps
every response it decided from as WARC, provenance points at the records, `cleanset
evidence` prints them, rebuilds are identical and verify catches a changed byte."""

from __future__ import annotations

import base64
import gzip
import json
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from pytest_httpserver import HTTPServer
from warcio.archiveiterator import ArchiveIterator

from tests.api_support import recipe_text
from tests.conftest import make_image, run_cli, serve_no_site_policies, write_jsonl, write_recipe
from tests.test_source_wikimedia import BATCH, FakeCommons

CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"
TABLE_ROWS = 4


def make_recipe(httpserver: HTTPServer, tmp_path: Path, extra: str = "",
                padding: int = 0) -> Path:
    """Seven Commons files in pages of three, then four table rows (one refused, NC).
    `padding` bytes of incompressible text ride in the second API page."""
    commons = FakeCommons(httpserver)
    if padding:
        noise = random.Random(19).randbytes(padding * 3 // 4)
        commons.pages[3]["padding"] = base64.b64encode(noise).decode("ascii")
    serve_no_site_policies(httpserver)
    rows = []
    for i in range(TABLE_ROWS):
        path = f"/table/{i}.jpg"
        httpserver.expect_request(path).respond_with_data(make_image(500 + i, (64, 48)),
                                                          content_type="image/jpeg")
        lic = CC0 if i != 2 else "https://creativecommons.org/licenses/by-nc/4.0/"
        rows.append({"id": f"t{i}", "url": httpserver.url_for(path), "license": lic})
    write_jsonl(tmp_path / "urls.jsonl", rows)
    text = recipe_text("evidence-test", f"""
kind = "wikimedia"
api = "{commons.url}"
category = "Test files"
batch = {BATCH}

[[sources]]
kind = "table"
path = "urls.jsonl"
""") + extra
    return write_recipe(tmp_path / "recipe.toml", text)


@pytest.fixture
def recipe(httpserver: HTTPServer, tmp_path: Path) -> Path:
    return make_recipe(httpserver, tmp_path)


def build(recipe: Path, out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli("build", str(recipe), "--out", str(out), "--no-progress", env=env,
                   check=True)


def archive_files(out: Path) -> list[Path]:
    return sorted((out / "evidence").glob("*.warc.gz"))


def read_records(out: Path) -> list[dict[str, Any]]:
    """Every record of every file, read by warcio with digests checked."""
    found = []
    for path in archive_files(out):
        with path.open("rb") as stream:
            it = ArchiveIterator(stream, check_digests=True)
            for rec in it:
                body = rec.content_stream().read()
                found.append({
                    "file": f"evidence/{path.name}", "offset": it.get_record_offset(),
                    "type": rec.rec_type, "id": rec.rec_headers.get_header("WARC-Record-ID"),
                    "uri": rec.rec_headers.get_header("WARC-Target-URI"),
                    "status": rec.http_headers.get_statuscode() if rec.http_headers and
                    rec.rec_type != "request" else None,
                    "headers": rec.rec_headers, "body": body,
                    "digest_ok": rec.digest_checker.passed})
    return found


def warcio_check(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    """`warcio check FILE...`: the reference reader's digest check, exit 0 when all pass."""
    code = "import sys; from warcio.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, "check", "-v", *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


def samples(out: Path) -> list[dict[str, Any]]:
    return pq.read_table(out / "manifest.parquet").to_pylist()


def provenance(out: Path, key: str) -> dict[str, Any]:
    import sqlite3

    with sqlite3.connect(out / "ledger.sqlite") as db:
        (text,) = db.execute("SELECT provenance FROM samples WHERE key = ?", (key,)).fetchone()
    return json.loads(text)


def test_every_api_page_host_file_and_image_is_archived_as_request_and_response(
        recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    build(recipe, out)
    records = read_records(out)
    assert records[0]["type"] == "warcinfo"
    assert all(r["digest_ok"] is not False for r in records)
    responses = [r for r in records if r["type"] in ("response", "revisit")]
    requests = [r for r in records if r["type"] == "request"]
    assert len(requests) == len(responses)
    for response, request in zip(responses, requests, strict=True):
        assert request["headers"].get_header("WARC-Concurrent-To") == response["id"]
    api = [r for r in responses if "/w/api.php" in r["uri"]]
    assert len(api) == 3  # three pages of three, three and one
    assert all(json.loads(r["body"])["query"]["pages"] for r in api)
    robots = [r for r in responses if r["uri"].endswith("/robots.txt")]
    assert len(robots) == 1 and robots[0]["status"] == "404"
    images = [r for r in responses if r["type"] == "revisit"]
    assert {r["uri"].rsplit("/", 1)[-1] for r in images} >= {"0.jpg", "1.jpg"}
    assert warcio_check(archive_files(out)).returncode == 0


def record_at(out: Path, pointer: dict[str, Any]) -> dict[str, Any]:
    """The record a pointer names, read at its offset as a third-party reader would."""
    with (out / pointer["file"]).open("rb") as stream:
        stream.seek(pointer["offset"])
        rec = next(iter(ArchiveIterator(stream)))
        return {"type": rec.rec_type, "id": rec.rec_headers.get_header("WARC-Record-ID"),
                "headers": rec.rec_headers, "http": rec.http_headers,
                "body": rec.content_stream().read()}


def test_each_sample_points_at_the_api_response_holding_its_licence_and_at_its_image_record(
        recipe: Path, tmp_path: Path) -> None:
    from builder.evidence.warc import sha256_label

    out = tmp_path / "out"
    build(recipe, out)
    rows = samples(out)
    assert {r["source"] for r in rows} == {"wikimedia", "table"}
    for row in rows:
        prov = provenance(out, row["key"])
        assert prov["build"]["provenance_version"] == 2
        assert prov["evidence"] == row["evidence"]  # the manifest carries the same pointers
        image = record_at(out, prov["evidence"]["image"])
        assert image["id"] == prov["evidence"]["image"]["record_id"]
        assert image["type"] == "revisit" and image["http"].get_statuscode() == "200"
        assert image["headers"].get_header("WARC-Payload-Digest") == sha256_label(row["sha256"])
        signals = [record_at(out, p)["headers"].get_header("WARC-Target-URI")
                   for p in prov["evidence"]["signals"]]
        assert [s.rsplit("/", 1)[-1] for s in signals] == ["robots.txt", "ai.txt",
                                                           "tdmrep.json"]
        if row["source"] == "table":
            assert prov["evidence"]["api"] == []
            continue
        (api,) = prov["evidence"]["api"]
        page = json.loads(record_at(out, api)["body"])
        mine = [p for p in page["query"]["pages"] if str(p["pageid"]) == row["source_id"]]
        licence = mine[0]["imageinfo"][0]["extmetadata"]["LicenseShortName"]["value"]
        assert licence in [e["value"] for e in prov["license"]["evidence"]]


def test_a_refused_candidates_ledger_row_points_at_what_it_was_refused_on(
        recipe: Path, tmp_path: Path) -> None:
    import sqlite3

    out = tmp_path / "out"
    build(recipe, out)
    with sqlite3.connect(out / "ledger.sqlite") as db:
        def linked(candidate_id: str) -> list[tuple[str, str]]:
            return db.execute(
                "SELECT l.role, r.kind FROM candidates c JOIN evidence_links l ON "
                "l.build = c.build AND l.seq = c.seq JOIN evidence_records r ON "
                "r.record_id = l.record_id WHERE c.candidate_id = ? ORDER BY l.position",
                (candidate_id,)).fetchall()

        # refused on its licence: the API page that stated it, nothing fetched
        assert linked("wikimedia:1001") == [("api", "api")]
        # refused on its bytes (the API's sha1 differs): the page, host files and image
        assert linked("wikimedia:1006") == [
            ("api", "api"), ("signal", "robots.txt"), ("signal", "ai.txt"),
            ("signal", "tdmrep.json"), ("image", "image")]
        assert linked("table:t2") == []  # an NC licence in the table: no request at all


def test_cleanset_evidence_prints_the_licence_fields_and_the_image_digest_by_key_or_url(
        recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    build(recipe, out)
    first = samples(out)[0]
    proc = run_cli("evidence", str(out), first["key"])
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    print(text[:3000])  # the closing note quotes this
    assert text.startswith(f"candidate wikimedia:{first['source_id']} (build 1, seq 0): "
                           f"accepted as sample {first['key']}")
    assert "== api (api) evidence/" in text and "== image (image) evidence/" in text
    assert '"LicenseShortName": {' in text and '"value": "CC BY-SA 4.0"' in text  # pretty JSON
    # HTTP/1.1 once any threaded werkzeug server ran in this process: werkzeug switches its
    # handler class for every later server too
    assert re.search(r"status: HTTP/1\.[01] 200 OK", text) and "Content-Type: image/jpeg" in text
    assert f"the same as the sample's image in the shard (sha256 {first['sha256']})" in text
    by_url = run_cli("evidence", str(out), first["file_url"])
    assert by_url.returncode == 0 and by_url.stdout == text
    scheme, rest = first["file_url"].split("://", 1)
    typed = f"{scheme.upper()}://{rest}{'&' if '?' in rest else '?'}utm_source=mail"
    for pasted in (f"{first['key']} ", f" {first['key']}\n", f"\t{first['file_url']} ", typed):
        again = run_cli("evidence", str(out), pasted)  # copied with the space around it
        assert again.returncode == 0 and again.stdout == text, again.stderr
    refused = run_cli("evidence", str(out), "wikimedia:1001")
    assert "rejected, license_not_allowed" in refused.stdout
    assert '"value": "CC BY-NC 2.0"' in refused.stdout


def test_cleanset_evidence_refuses_an_unknown_key_or_directory_with_exit_2(
        recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    build(recipe, out)
    for args, words in ((("evidence", str(out), "0000009999"), "no candidate with key"),
                        (("evidence", str(tmp_path / "nope"), "0000000000"), "no such directory"),
                        (("evidence", str(tmp_path), "0000000000"), "has no ledger.sqlite")):
        proc = run_cli(*args)
        assert proc.returncode == 2, proc.stderr
        assert words in proc.stderr and "Traceback" not in proc.stderr


def as_built_before_the_archive(out: Path) -> None:
    """What a cleanset before the evidence archive (2026-12-05) left: the same ledger without
    its evidence tables, and no evidence/ folder."""
    import shutil
    import sqlite3

    with sqlite3.connect(out / "ledger.sqlite") as db:
        for table in ("evidence_links", "evidence_records", "evidence_files"):
            db.execute(f"DROP TABLE {table}")
    db.close()
    shutil.rmtree(out / "evidence")


def test_evidence_on_a_dataset_built_before_the_archive_gives_the_ledgers_decision(
        httpserver: HTTPServer, recipe: Path, tmp_path: Path) -> None:
    """Asked why a sample is in, or a candidate refused, of a dataset an older cleanset
    built, `evidence` said only "built before cleanset kept an evidence archive" (exit 2),
    though the ledger holds the decision; once a takedown of today had made the archive's
    tables, it said the sample was "refused before any request, or no answer came". It now
    gives the decision and says that build kept no archive."""
    out = tmp_path / "out"
    build(recipe, out)
    as_built_before_the_archive(out)
    refused = httpserver.url_for("/table/2.jpg")  # CC BY-NC: refused by the policy
    for when in ("as the old cleanset left it", "after a takedown by today's"):
        accepted = run_cli("evidence", str(out), "0000000000")
        assert accepted.returncode == 0, (when, accepted.stderr)
        lines = accepted.stdout.splitlines()
        assert lines[0] == "candidate wikimedia:1000 (build 1, seq 0): accepted as sample 0000000000"
        assert lines[-1] == ("  no archived response: build 1 was made by a cleanset that kept "
                             "no evidence archive yet; the ledger's decision above is the "
                             "record of it"), when
        rejected = run_cli("evidence", str(out), refused, check=True)
        assert "rejected, license_not_allowed: " in rejected.stdout.splitlines()[0], when
        assert "kept no evidence archive yet" in rejected.stdout.splitlines()[-1], when
        as_json = json.loads(run_cli("evidence", str(out), "0000000000", "--json",
                                     check=True).stdout)
        assert (as_json["status"], as_json["build_archived"], as_json["records"]) == (
            "accepted", False, []), when
        if not (out / "evidence").exists():
            run_cli("takedown", str(out), "--key", "0000000001", "--reason", "request",
                    check=True)
            assert (out / "evidence").is_dir()  # its own record: the tables are made again


def test_cleanset_evidence_says_a_folder_file_was_read_from_disk_not_that_no_answer_came(
        tmp_path: Path) -> None:
    """The offline example (a folder): its samples have no archived response because no
    server was asked, and the line says so instead of pointing at a detail it does not show."""
    from tests.conftest import REPO

    out = tmp_path / "out"
    run_cli("build", str(REPO / "examples/offline/recipe.toml"), "--out", str(out),
            "--no-progress", check=True)
    for wanted in ("0000000000", "skimage-samples:grass.jpg"):  # accepted; refused (no licence)
        proc = run_cli("evidence", str(out), wanted, check=True)
        assert proc.stdout.splitlines()[-1] == (
            "  no archived response: a local file, read from disk; no server was asked")


def test_two_builds_with_source_date_epoch_write_byte_identical_archives_whatever_the_executor(
        recipe: Path, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    build(recipe, one)
    run_cli("build", str(recipe), "--out", str(two), "--no-progress", "--executor", "processes",
            "--workers", "4", check=True)
    assert [p.name for p in archive_files(one)] == [p.name for p in archive_files(two)]
    for a, b in zip(archive_files(one), archive_files(two), strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


@pytest.mark.parametrize("point", ["decide:5", "after_commit:2", "before_finish_commit:1"])
def test_kill_9_mid_page_then_resume_gives_the_uninterrupted_archive(
        recipe: Path, tmp_path: Path, point: str) -> None:
    """The resumed source asks for its page again: the same answer is the same record."""
    reference, out = tmp_path / "reference", tmp_path / "crashed"
    build(recipe, reference, CLEANSET_COMMIT_EVERY="2")
    crashed = run_cli("build", str(recipe), "--out", str(out), "--no-progress",
                      env={"CLEANSET_COMMIT_EVERY": "2", "CLEANSET_CRASH_AT": point})
    assert crashed.returncode == -9, crashed.stderr
    build(recipe, out, CLEANSET_COMMIT_EVERY="2")
    assert {p.name: p.read_bytes() for p in archive_files(out)} == {
        p.name: p.read_bytes() for p in archive_files(reference)}
    assert run_cli("verify", str(out)).returncode == 0


def test_a_build_stopped_at_limit_continues_its_archive_file_when_resumed(
        recipe: Path, tmp_path: Path) -> None:
    reference, out = tmp_path / "reference", tmp_path / "limited"
    build(recipe, reference)
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", "--limit", "4", check=True)
    build(recipe, out)
    assert {p.name: p.read_bytes() for p in archive_files(out)} == {
        p.name: p.read_bytes() for p in archive_files(reference)}


def flip_byte(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x20
    path.write_bytes(bytes(data))


def test_verify_names_the_file_and_record_of_a_flipped_byte_or_a_hand_edited_record(
        recipe: Path, tmp_path: Path) -> None:
    import shutil
    import zlib

    out = tmp_path / "out"
    build(recipe, out)
    assert run_cli("verify", str(out)).returncode == 0
    (path,) = archive_files(out)
    records = read_records(out)
    api = next(r for r in records if r["type"] == "response" and "/w/api.php" in r["uri"])
    after = next(r for r in records if r["offset"] > api["offset"])

    flipped = tmp_path / "flipped"
    shutil.copytree(out, flipped)
    flip_byte(flipped / "evidence" / path.name, (api["offset"] + after["offset"]) // 2)
    proc = run_cli("verify", str(flipped))
    assert proc.returncode == 1
    assert f"evidence/{path.name}: record at offset {api['offset']}:" in proc.stdout

    # By hand: one record decompressed, a licence changed, compressed again (valid gzip).
    edited = tmp_path / "edited"
    shutil.copytree(out, edited)
    data = (edited / "evidence" / path.name).read_bytes()
    member = zlib.decompress(data[api["offset"]:after["offset"]], 31)
    changed = member.replace(b"CC BY-NC 2.0", b"CC BY 2.0   ")
    assert changed != member
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    (edited / "evidence" / path.name).write_bytes(
        data[:api["offset"]] + packer.compress(changed) + packer.flush() + data[after["offset"]:])
    proc = run_cli("verify", str(edited))
    assert proc.returncode == 1
    assert (f"evidence/{path.name}: record at offset {api['offset']}: WARC-Block-Digest "
            in proc.stdout)
    assert api["id"] in proc.stdout


def test_the_archive_rolls_to_a_new_file_at_max_file_mb_and_every_pointer_still_reads(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    recipe = make_recipe(httpserver, tmp_path, "\n[evidence]\nmax_file_mb = 0.004\n")
    out = tmp_path / "out"
    build(recipe, out)
    files = archive_files(out)
    assert len(files) >= 3
    assert [p.name for p in files] == [f"evidence-test-build0001-{n:05d}.warc.gz"
                                       for n in range(len(files))]
    assert all(read_records(out)[0]["type"] == "warcinfo" for _ in files)
    for row in samples(out):
        for pointer in [*row["evidence"]["api"], row["evidence"]["image"]]:
            assert record_at(out, pointer)["id"] == pointer["record_id"]
    assert warcio_check(files).returncode == 0
    assert run_cli("verify", str(out)).returncode == 0


def test_a_bad_max_file_mb_is_refused_before_anything_is_written(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    recipe = make_recipe(httpserver, tmp_path, "\n[evidence]\nmax_file_mb = 0\n")
    proc = run_cli("build", str(recipe), "--out", str(tmp_path / "out"), "--no-progress")
    assert proc.returncode == 2
    assert "[evidence] max_file_mb = 0 must be positive" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_takedown_keeps_the_evidence_and_archives_itself_as_a_metadata_record(
        recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    build(recipe, out)
    before = {p.name: p.read_bytes() for p in archive_files(out)}
    key = samples(out)[0]["key"]
    run_cli("takedown", str(out), "--key", key, "--reason", "the artist asked", check=True)
    after = {p.name: p.read_bytes() for p in archive_files(out)}
    assert {n: after[n] for n in before} == before  # nothing of the build's archive changed
    (log,) = set(after) - set(before)
    assert log == "takedown-v2.warc.gz"
    records = [r for r in read_records(out) if r["file"] == f"evidence/{log}"]
    assert [r["type"] for r in records] == ["warcinfo", "metadata"]
    entry = json.loads(records[1]["body"])
    assert entry["keys"] == [key] and entry["reason"] == "the artist asked"
    assert entry["evidence"][key]  # the records the removed sample was decided from
    assert "accepted as sample" in run_cli("evidence", str(out), key).stdout  # still shown
    croissant = json.loads((out / "croissant.json").read_text())
    listed = {d.get("contentUrl") for d in croissant["distribution"]}
    assert {f"evidence/{n}" for n in after} <= listed
    assert run_cli("verify", str(out)).returncode == 0


def test_the_card_and_spdx_document_mention_the_archive(recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    build(recipe, out)
    assert "`evidence/*.warc.gz`" in (out / "README.md").read_text()
    spdx = json.loads((out / "spdx.json").read_text())
    assert "Evidence archive: 1 WARC 1.1 file(s) in evidence/" in spdx["packages"][0]["comment"]


def test_api_keys_never_reach_the_archive(httpserver: HTTPServer, tmp_path: Path) -> None:
    from tests.apihelpers import serve_images
    from tests.test_source_europeana import KEY, build_recipe, catalogue, serve_search

    serve_search(httpserver, catalogue(serve_images(httpserver, 5)))  # its pages echo wskey
    recipe = build_recipe(httpserver, tmp_path / "recipe.toml")
    out = tmp_path / "out"
    run_cli("build", str(recipe), "--out", str(out), "--no-progress",
            env={"EUROPEANA_API_KEY": KEY}, check=True)
    everything = b"".join(gzip.decompress(p.read_bytes()) for p in archive_files(out))
    assert KEY.encode() not in everything
    pages = [r for r in read_records(out) if r["type"] == "response" and "search.json" in r["uri"]]
    assert len(pages) == 3 and all("wskey=" not in r["uri"] for r in pages)
    assert all(json.loads(r["body"])["apikey"] == "***" for r in pages)
    assert b"cleanset-redaction: API keys removed" in everything


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_a_key_echoed_by_an_image_host_is_scrubbed_wherever_the_stages_ran(
        httpserver: HTTPServer, tmp_path: Path, executor: str) -> None:
    """Image exchanges are made into records where they were fetched (a worker process
    too); the key the build process read is handed to it and scrubbed there."""
    from tests.test_source_europeana import KEY, build_recipe, catalogue, serve_search

    serve_no_site_policies(httpserver)
    images = []
    for i in range(5):
        path = f"/echo/{i}.jpg"
        httpserver.expect_request(path).respond_with_data(
            make_image(200 + i, (64, 48)), content_type="image/jpeg",
            headers={"X-Echo": f"requested with {KEY}"})
        images.append(httpserver.url_for(path))
    serve_search(httpserver, catalogue(images))
    recipe = build_recipe(httpserver, tmp_path / "recipe.toml")
    out = tmp_path / "out"
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", "--executor", executor,
            env={"EUROPEANA_API_KEY": KEY}, check=True)
    everything = b"".join(gzip.decompress(p.read_bytes()) for p in archive_files(out))
    assert KEY.encode() not in everything
    echoed = [r for r in read_records(out) if r["type"] == "revisit"]
    assert len(echoed) == 2  # the admitted images (PD, CC0; the one whose rights disagree is not)
    assert b"X-Echo: requested with ***" in everything
    assert run_cli("verify", str(out)).returncode == 0


def test_disk_full_while_writing_evidence_stops_and_the_same_command_finishes_identically(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    import os
    import resource
    import signal

    from tests.conftest import FIXED_EPOCH, REPO

    # The second API page is 3 MB: no file but the archive grows past 1.5 MB.
    recipe = make_recipe(httpserver, tmp_path, padding=3_000_000)
    reference, out = tmp_path / "reference", tmp_path / "out"
    build(recipe, reference, CLEANSET_COMMIT_EVERY="2")
    assert archive_files(reference)[0].stat().st_size > 2_000_000

    def limit() -> None:  # EFBIG from write() past 1.5 MB, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_500_000, 1_500_000))

    env = {**os.environ, "SOURCE_DATE_EPOCH": FIXED_EPOCH, "PYTHONPATH": str(REPO),
           "CLEANSET_COMMIT_EVERY": "2"}
    args = [sys.executable, "-m", "builder", "build", str(recipe), "--out", str(out),
            "--no-progress"]
    failed = subprocess.run(args, capture_output=True, text=True, env=env, preexec_fn=limit,
                            timeout=300)
    assert failed.returncode == 1, failed.stderr
    assert "Traceback" not in failed.stderr, failed.stderr
    assert "run the same command again" in failed.stderr
    assert (out / "ledger.sqlite").exists() and list((out / "shards").glob("*.tar*"))
    build(recipe, out, CLEANSET_COMMIT_EVERY="2")
    assert {p.name: p.read_bytes() for p in archive_files(out)} == {
        p.name: p.read_bytes() for p in archive_files(reference)}
    assert run_cli("verify", str(out)).returncode == 0


# A member, not a WARC record (seeded: some random bytes do parse as a record's head)
_NOT_A_RECORD = random.Random(7).randbytes(4000) + b"\n"
# A record whose head parses but names no WARC-Record-ID, bytes trailing its block
_NO_RECORD_ID = b"WARC/1.0\r\nWARC-Type: metadata\r\nContent-Length: 4\r\n\r\n\x00\x01\x02\x03" \
    + bytes(range(128, 256)) * 3 + b"\n"


@pytest.mark.parametrize(("damaged", "said"), [
    (_NOT_A_RECORD, "cannot read the record at offset 0"),
    (_NO_RECORD_ID, "offset 0 holds a record without a WARC-Record-ID, not <urn:uuid:x>")],
    ids=["not a record", "no record id"])
def test_a_record_warcio_cannot_read_is_named_in_one_readable_line(
        tmp_path: Path, capfd: pytest.CaptureFixture[str], damaged: bytes, said: str) -> None:
    """warcio quotes the damaged bytes in its error, and writes them to stderr as warnings;
    `cleanset evidence` once printed hundreds of bytes of raw gzip to the terminal."""
    from builder.errors import UserError
    from builder.evidence.shown import Link, read

    (tmp_path / "evidence").mkdir()
    (tmp_path / "evidence" / "x.warc.gz").write_bytes(gzip.compress(damaged, mtime=0))
    with pytest.raises(UserError) as raised:
        read(tmp_path, Link("api", "api", "evidence/x.warc.gz", 0, "<urn:uuid:x>", 1))
    message = str(raised.value)
    assert said in message and message.isprintable()
    quoted = message.replace(str(tmp_path), "")  # the path is named twice; its length varies
    assert len(quoted) < 300 and f"cleanset verify {tmp_path}" in message
    assert capfd.readouterr().err == ""  # nothing of the damaged bytes on the terminal


def forge_in_place(path: Path, offset: int, old: bytes, new: bytes) -> None:
    """Rewrite the response record at `offset` as a forger would: `old` replaced by `new` in
    its body, WARC-Block-Digest and WARC-Payload-Digest recomputed to match, its
    WARC-Record-ID kept, and the member compressed to its old size (a deflate stream can
    be flushed at any point), so every later offset still holds its record."""
    import hashlib
    import itertools
    import zlib

    def label(data: bytes) -> bytes:
        return b"sha256:" + base64.b32encode(hashlib.sha256(data).digest())

    data = path.read_bytes()
    inflater = zlib.decompressobj(31)
    member = inflater.decompress(data[offset:])
    end = len(data) - len(inflater.unused_data)
    head, _, rest = member.partition(b"\r\n\r\n")
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
    block = rest[:length].replace(old, new)
    assert block != rest[:length]
    head = re.sub(rb"WARC-Block-Digest: \S+", b"WARC-Block-Digest: " + label(block), head)
    body = block.partition(b"\r\n\r\n")[2]
    head = re.sub(rb"WARC-Payload-Digest: \S+", b"WARC-Payload-Digest: " + label(body), head)
    forged = head + b"\r\n\r\n" + block + b"\r\n\r\n"

    def packed(mem_level: int, flushes: int, shift: int, level: int = 9) -> bytes:
        packer = zlib.compressobj(level, zlib.DEFLATED, 31, mem_level)
        step = len(forged) // (flushes + 1)
        cuts = [0, *(shift + step * n for n in range(1, flushes + 1)), len(forged)]
        return b"".join(packer.compress(forged[a:b]) + packer.flush(zlib.Z_SYNC_FLUSH)
                        for a, b in itertools.pairwise(cuts)) + packer.flush()

    size = end - offset
    # Which settings land on the old size depends on the record's bytes (its date, its id):
    # three levels, so that one record in a thousand is not left without one.
    for level, mem_level in itertools.product((9, 6, 4), range(9, 0, -1)):
        for flushes in range(100):
            if abs(len(packed(mem_level, flushes, 0, level)) - size) > 12:
                continue
            for shift in range(40):
                member_now = packed(mem_level, flushes, shift, level)
                if len(member_now) == size:
                    path.write_bytes(data[:offset] + member_now + data[end:])
                    return
    raise AssertionError("the forged record compresses to no size that fits")


def test_a_record_rewritten_with_recomputed_digests_is_named_by_evidence_and_verify(
        recipe: Path, tmp_path: Path) -> None:
    """A record's digests only say it agrees with itself; its id is a hash of what was
    archived. `cleanset evidence` once printed a forged licence (CC BY-SA made CC0, digests
    recomputed, every offset kept) with no warning and exit 0."""
    out = tmp_path / "out"
    build(recipe, out)
    first = samples(out)[0]
    (api,) = first["evidence"]["api"]
    forge_in_place(out / api["file"], api["offset"], b'"CC BY-SA 4.0"', b'"CC0 1.0     "')
    assert all(r["digest_ok"] is not False for r in read_records(out))  # warcio sees no harm
    assert warcio_check(archive_files(out)).returncode == 0
    proc = run_cli("evidence", str(out), first["key"])
    assert '"value": "CC0 1.0     "' in proc.stdout  # still shown: what the file now says
    assert proc.returncode == 1, proc.stderr
    assert "WARNING: this record is not what was archived under its id" in proc.stdout
    assert f"{api['file']} offset {api['offset']}" in proc.stderr and "prove nothing" in \
        proc.stderr and "Traceback" not in proc.stderr
    assert run_cli("evidence", str(out), samples(out)[-1]["key"]).returncode == 0  # untouched
    verify = run_cli("verify", str(out))
    assert verify.returncode == 1
    assert (f"PROBLEM {api['file']}: record {api['record_id']} at offset {api['offset']} no "
            "longer holds what was archived under its id") in verify.stdout


def test_a_copy_without_its_evidence_folder_is_one_problem_per_missing_file(
        recipe: Path, tmp_path: Path) -> None:
    """verify once added a line per pointer per sample (five per sample: millions for a real
    dataset), each saying provenance named a file "which is not an archive file of this
    dataset", as if the builds had never written it."""
    import shutil

    out = tmp_path / "out"
    build(recipe, out)
    (archive,) = archive_files(out)
    shutil.rmtree(out / "evidence")
    proc = run_cli("verify", str(out))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    problems = [line for line in proc.stdout.splitlines() if line.startswith("PROBLEM")]
    assert problems == [f"PROBLEM evidence/{archive.name}: in the ledger but the file is missing"]
    assert "verify: an evidence file the ledger records is missing" in proc.stdout
    proc = run_cli("evidence", str(out), samples(out)[0]["key"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "the evidence file the ledger names is missing" in proc.stderr


def test_evidence_of_a_sample_a_recheck_took_down_shows_the_answer_that_refused_it(
        httpserver: HTTPServer, recipe: Path, tmp_path: Path) -> None:
    """`cleanset evidence` showed only build day's robots.txt (no Disallow) under "since
    removed (takedown-v2: recheck 2: ...)": the auditor read that nothing had refused it,
    and the robots.txt that did was archived nowhere."""
    import warcio

    out = tmp_path / "out"
    build(recipe, out)
    key = next(r["key"] for r in samples(out) if r["source_id"] == "t0")
    # One answer, ahead of the standing 404: the host now opts this file out.
    httpserver.expect_oneshot_request("/robots.txt").respond_with_data(
        "User-agent: *\nDisallow: /table/0.jpg\n", content_type="text/plain")
    run_cli("recheck", str(out), "--apply", "--reason", "host opted out", check=True)
    proc = run_cli("evidence", str(out), key)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].endswith("since removed (takedown-v2: recheck 1: host opted out)")
    assert lines[2].startswith("  takedown-v2 followed recheck 1 (") and \
        "): optout: robots.txt: Disallow for user-agent '*'" in lines[2] and \
        "(line 2: 'Disallow: /table/0.jpg')" in lines[2]
    # the recheck's own answer, archived: the robots.txt that refused it, then the build's
    recheck_part, _, build_part = proc.stdout.partition("the build's records, which admitted it")
    assert "== robots.txt (recheck 1) evidence/" in recheck_part
    # its look at the file was a HEAD, and is archived as one (the request said GET)
    assert "== head (recheck 1)" in recheck_part and "request: HEAD /table/0.jpg" in recheck_part
    assert "Disallow: /table/0.jpg" in recheck_part and "WARNING" not in proc.stdout
    assert "== robots.txt (signal)" in build_part  # build day's answer, still shown
    (archived,) = sorted((out / "evidence").glob("*-recheck0001-*.warc.gz"))
    with archived.open("rb") as f:  # a WARC any reader reads
        kinds = [r.rec_type for r in warcio.ArchiveIterator(f)]
    assert kinds[0] == "warcinfo" and "response" in kinds and "request" in kinds
    assert run_cli("verify", str(out)).returncode == 0
    other = run_cli("evidence", str(out), samples(out)[0]["key"], check=True)
    assert "found: unchanged (not a refusal)" in other.stdout  # what the recheck found of it


def rechecked_with_t0_refused(httpserver: HTTPServer, recipe: Path, tmp_path: Path
                              ) -> tuple[Path, str]:
    """The dataset built, then rechecked once its host's robots.txt refused sample t0: the
    directory, and t0's key."""
    out = tmp_path / "out"
    build(recipe, out)
    key = next(r["key"] for r in samples(out) if r["source_id"] == "t0")
    httpserver.expect_oneshot_request("/robots.txt").respond_with_data(
        "User-agent: *\nDisallow: /table/0.jpg\n", content_type="text/plain")
    assert run_cli("recheck", str(out), "--no-progress").returncode == 3
    return out, key


def test_evidence_of_a_sample_the_last_recheck_would_refuse_shows_that_finding_and_answer(
        httpserver: HTTPServer, recipe: Path, tmp_path: Path) -> None:
    """A sample the report lists as open (the last recheck would refuse it, not yet taken
    down): `cleanset evidence` showed only build day's records, which admitted it."""
    out, key = rechecked_with_t0_refused(httpserver, recipe, tmp_path)
    proc = run_cli("evidence", str(out), key)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[2].startswith("  the last recheck, 1 (") and \
        "found: optout (a build today would refuse it): robots.txt: Disallow" in lines[2]
    recheck_part, _, build_part = proc.stdout.partition("the build's records, which admitted it")
    assert "== robots.txt (recheck 1)" in recheck_part and "Disallow: /table/0.jpg" in recheck_part
    assert "== robots.txt (signal)" in build_part
    # A sample it found unchanged: that finding, and what its host's files said that day
    # (archived whatever they said), above the build's records.
    other = next(r for r in samples(out) if r["source_id"] == "t1")
    unchanged = run_cli("evidence", str(out), other["key"], check=True).stdout
    assert "the last recheck, 1 (" in unchanged and "found: unchanged (not a refusal)" in unchanged
    recheck_part, _, build_part = unchanged.partition("the build's records, which admitted it")
    assert "== robots.txt (recheck 1)" in recheck_part and "Disallow: /table/0.jpg" in recheck_part
    assert "== robots.txt (signal)" in build_part
    assert run_cli("recheck", str(out), "--no-progress").returncode == 0  # the host relents
    again = run_cli("evidence", str(out), key, check=True).stdout
    assert "the last recheck, 2 (" in again and "found: unchanged" in again
    assert "found: optout" not in again  # only the last recheck speaks


def test_a_refusal_found_by_a_recheck_that_archived_nothing_says_so(
        httpserver: HTTPServer, recipe: Path, tmp_path: Path) -> None:
    """A recheck of a cleanset before recheck_archive.py kept its verdicts, not the answers:
    for a sample it would refuse, `evidence` gave the finding and then build day's records
    as if they were what it was found in, and the report said the answer was "archived by
    the recheck"."""
    import sqlite3

    out, key = rechecked_with_t0_refused(httpserver, recipe, tmp_path)
    # What the older recheck left: its verdicts, no archive of its answers.
    with sqlite3.connect(out / "ledger.sqlite") as db:
        db.execute("DROP TABLE recheck_evidence")
        db.execute("DELETE FROM evidence_records WHERE build < 0")
        db.execute("DELETE FROM evidence_files WHERE build < 0")
    db.close()
    for path in (out / "evidence").glob("*-recheck*"):
        path.unlink()
    lines = run_cli("evidence", str(out), key, check=True).stdout.splitlines()
    assert "found: optout (a build today would refuse it)" in lines[2]
    assert lines[3] == ("  recheck 1's answers are not archived (a recheck before this "
                        "cleanset kept its verdicts in the ledger, not the responses); the "
                        "records below are the build's, which admitted it")
    assert lines[5].startswith("== robots.txt (signal)")
    page = tmp_path / "page.html"
    run_cli("report", str(out), "--out", str(page), check=True)
    text = page.read_text(encoding="utf-8")
    assert "would now be refused" in text and "archived by the recheck" not in text


def test_a_candidate_admitted_on_retry_keeps_its_api_page_and_one_image_record(
        httpserver: HTTPServer, recipe: Path, tmp_path: Path) -> None:
    """A Commons file whose image answered 503 on the first run is admitted by the next; its
    provenance pointed at no API page (the licence's evidence) and `cleanset evidence`
    showed the first run's 503 as a second image record of the sample."""
    import sqlite3

    for _ in range(2):  # the first run's attempt and its one retry ([fetch] retries = 1)
        httpserver.expect_oneshot_request("/upload/0.jpg").respond_with_data("busy", status=503)
    out = tmp_path / "out"
    build(recipe, out)
    with sqlite3.connect(out / "ledger.sqlite") as db:
        (first_api,) = db.execute(
            "SELECT l.record_id FROM candidates c JOIN evidence_links l ON l.build = c.build "
            "AND l.seq = c.seq WHERE c.candidate_id = 'wikimedia:1000' AND l.role = 'api'"
        ).fetchall()
    build(recipe, out)  # retries it: admitted
    row = next(r for r in samples(out) if r["source_id"] == "1000")
    prov = provenance(out, row["key"])
    assert [p["record_id"] for p in prov["evidence"]["api"]] == [first_api[0]]
    page = json.loads(record_at(out, prov["evidence"]["api"][0])["body"])
    assert 1000 in [p["pageid"] for p in page["query"]["pages"]]
    with sqlite3.connect(out / "ledger.sqlite") as db:
        roles = db.execute(
            "SELECT l.role, r.status FROM candidates c JOIN evidence_links l ON l.build = "
            "c.build AND l.seq = c.seq JOIN evidence_records r ON r.record_id = l.record_id "
            "WHERE c.candidate_id = 'wikimedia:1000' ORDER BY l.position").fetchall()
    assert roles == [("api", 200), ("signal", 404), ("signal", 404), ("signal", 404),
                     ("image", 200)]
    shown = run_cli("evidence", str(out), row["key"], check=True).stdout
    assert shown.count("== api (api)") == 1 and shown.count("== image (image)") == 1
    # A status 503 on its own, not three digits of a record's id or a digest.
    assert not re.search(r"\b503\b", shown) and '"value": "CC BY-SA 4.0"' in shown
    assert run_cli("verify", str(out)).returncode == 0


# -- cleanset evidence --json: what the text shows, as one JSON object per candidate ------

def evidence_json(out: Path, wanted: str) -> tuple[subprocess.CompletedProcess[str],
                                                   list[dict[str, Any]]]:
    proc = run_cli("evidence", str(out), wanted, "--json")
    return proc, [json.loads(line) for line in proc.stdout.splitlines()]


def pages_of(record: dict[str, Any]) -> list[dict[str, Any]]:
    assert record["body"]["type"] == "json"
    return record["body"]["json"]["query"]["pages"]


def test_evidence_json_gives_an_admitted_samples_records_as_data(
        recipe: Path, tmp_path: Path) -> None:
    """Licensing teams audit with scripts: the text had to be scraped."""
    out = tmp_path / "out"
    build(recipe, out)
    first = samples(out)[0]
    proc, (found,) = evidence_json(out, first["key"])
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert {k: found[k] for k in ("candidate_id", "build", "seq", "status", "reason", "key",
                                  "url", "recheck")} == {
        "candidate_id": f"wikimedia:{first['source_id']}", "build": 1, "seq": 0,
        "status": "accepted", "reason": None, "key": first["key"], "url": first["file_url"],
        "recheck": None}
    records = found["records"]
    assert [(r["role"], r["kind"]) for r in records] == [
        ("api", "api"), ("signal", "robots.txt"), ("signal", "ai.txt"),
        ("signal", "tdmrep.json"), ("image", "image")]
    api, robots, image = records[0], records[1], records[-1]
    # the records provenance points at, in its order
    prov = provenance(out, first["key"])["evidence"]
    pointers = [*prov["api"], *prov["signals"], prov["image"]]
    assert [(r["file"], r["offset"], r["record_id"]) for r in records] == [
        (p["file"], p["offset"], p["record_id"]) for p in pointers]
    # the API page as a JSON object, holding the licence fields the sample was admitted on
    page = next(p for p in pages_of(api) if p["pageid"] == int(first["source_id"]))
    assert page["imageinfo"][0]["extmetadata"]["LicenseShortName"]["value"] == "CC BY-SA 4.0"
    assert api["request_line"].startswith("GET /w/api.php?") and \
        ["Accept-Encoding", "identity"] in api["request_headers"]
    assert re.fullmatch(r"HTTP/1\.[01] 200 OK", api["status_line"])
    assert ["Content-Type", "application/json"] in api["response_headers"]
    assert api["target"].startswith("http://") and api["date"].endswith("Z")
    assert re.fullmatch(r"HTTP/1\.[01] 404 NOT FOUND", robots["status_line"])
    assert robots["body"]["type"] == "text"
    assert image["body"] == {"type": "revisit", "payload_sha256": first["sha256"],
                             "sample_sha256": first["sha256"], "same_as_sample": True}
    assert all(r["intact"] and r["digest_ok"] is not False for r in records)
    # the same records the text shows, found by URL too
    text = run_cli("evidence", str(out), first["key"], check=True).stdout
    assert all(f"offset {r['offset']} {r['record_id']}" in text for r in records)
    assert evidence_json(out, first["file_url"])[0].stdout == proc.stdout


def test_evidence_json_gives_a_refused_candidate_what_it_was_refused_on(
        recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    build(recipe, out)
    proc, (licence,) = evidence_json(out, "wikimedia:1001")
    assert proc.returncode == 0, proc.stderr
    assert licence["status"] == "rejected" and licence["reason"] == "license_not_allowed"
    assert licence["key"] is None and licence["detail"]
    (api,) = licence["records"]
    page = next(p for p in pages_of(api) if p["pageid"] == 1001)
    assert page["imageinfo"][0]["extmetadata"]["LicenseShortName"]["value"] == "CC BY-NC 2.0"
    # refused on its bytes: its image was fetched, and there is no sample to compare with
    _, (bytes_refused,) = evidence_json(out, "wikimedia:1006")
    image = bytes_refused["records"][-1]
    assert image["role"] == "image" and image["body"]["type"] == "revisit"
    assert image["body"]["sample_sha256"] is None and image["body"]["same_as_sample"] is None
    assert re.fullmatch(r"[0-9a-f]{64}", image["body"]["payload_sha256"])
    _, (table,) = evidence_json(out, "table:t2")  # NC in the table: nothing was asked
    assert table["status"] == "rejected" and table["records"] == []


def test_evidence_json_gives_the_recheck_finding_and_the_answers_it_archived(
        httpserver: HTTPServer, recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    build(recipe, out)
    key = next(r["key"] for r in samples(out) if r["source_id"] == "t0")
    for _ in range(2):  # the host opts the file out for the recheck and for its --apply
        httpserver.expect_oneshot_request("/robots.txt").respond_with_data(
            "User-agent: *\nDisallow: /table/0.jpg\n", content_type="text/plain")

    def recheck_part(found: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
        role = f"recheck {found['recheck']['number']}"
        ours = [r for r in found["records"] if r["role"] == role]
        assert found["records"][:len(ours)] == ours  # the recheck's answers come first
        return ours, [r["role"] for r in found["records"][len(ours):]]

    assert run_cli("recheck", str(out), "--no-progress").returncode == 3
    proc, (open_item,) = evidence_json(out, key)
    assert proc.returncode == 0, proc.stderr
    finding = open_item["recheck"]
    assert finding["number"] == 1 and finding["outcome"] == "optout"
    assert finding["refuse"] is True and finding["applied_by"] is None
    assert "robots.txt: Disallow" in finding["detail"] and finding["checked_at"]
    ours, build_roles = recheck_part(open_item)
    robots = next(r for r in ours if r["kind"] == "robots.txt")
    assert robots["body"] == {"type": "text", "text": "User-agent: *\nDisallow: /table/0.jpg\n"}
    assert build_roles == ["signal", "signal", "signal", "image"]

    run_cli("recheck", str(out), "--apply", "--reason", "host opted out", check=True)
    proc, (removed,) = evidence_json(out, key)
    assert proc.returncode == 0, proc.stderr
    assert removed["status"] == "removed" and removed["detail"].startswith("takedown-v2:")
    finding = removed["recheck"]
    assert finding["number"] == 2 and finding["applied_by"] == "takedown-v2"  # --apply's own
    assert finding["answers_archived"] is True
    assert finding["refuse"] is True and finding["outcome"] == "optout"
    ours, build_roles = recheck_part(removed)
    assert {r["kind"] for r in ours} >= {"robots.txt", "head"}
    head = next(r for r in ours if r["kind"] == "head")
    assert head["request_line"].startswith("HEAD /table/0.jpg")
    assert all(r["intact"] for r in removed["records"])
    assert build_roles == ["signal", "signal", "signal", "image"]
    _, (untouched,) = evidence_json(out, samples(out)[0]["key"])
    assert untouched["recheck"]["outcome"] == "unchanged"
    assert untouched["recheck"]["refuse"] is False and untouched["recheck"]["answers_archived"]
    # what the host's files said on the day, archived whatever they said; no HEAD of it
    assert untouched["recheck"]["number"] == 2  # --apply's recheck, the last one
    assert {r["kind"] for r in untouched["records"] if r["role"] == "recheck 2"} == {
        "robots.txt", "ai.txt", "tdmrep.json"}


def test_a_recheck_archives_the_head_s_status_and_headers_its_finding_was_read_from(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    """A file host now answers the HEAD with `X-Robots-Tag: noai` and a new ETag: the
    recheck refused the sample on that header, but archived the HEAD as `HTTP/1.1 200`
    without a header, so its evidence showed nothing that refused it (nor the ETag)."""
    serve_no_site_policies(httpserver)
    image = make_image(8, (64, 48))
    httpserver.expect_request("/h.jpg").respond_with_data(image, content_type="image/jpeg")
    write_jsonl(tmp_path / "urls.jsonl", [{"id": "h", "url": httpserver.url_for("/h.jpg"),
                                           "license": CC0}])
    recipe = write_recipe(tmp_path / "recipe.toml", recipe_text(
        "head-headers", '\nkind = "table"\npath = "urls.jsonl"\n'))
    out = tmp_path / "out"
    build(recipe, out)
    httpserver.expect_oneshot_request("/h.jpg", method="HEAD").respond_with_data(
        b"", content_type="image/jpeg", headers={"X-Robots-Tag": "noai", "ETag": '"v2"'})
    assert run_cli("recheck", str(out), "--no-progress").returncode == 3
    proc, (found,) = evidence_json(out, samples(out)[0]["key"])
    assert proc.returncode == 0, proc.stderr
    assert found["recheck"]["outcome"] == "optout" and "noai" in found["recheck"]["detail"]
    head = next(r for r in found["records"] if r["role"] == "recheck 1" and r["kind"] == "head")
    assert head["status_line"].endswith(" 200 OK")  # as the server said it (was "HTTP/1.1 200")
    assert ["X-Robots-Tag", "noai"] in head["response_headers"]
    assert ["ETag", '"v2"'] in head["response_headers"] and head["intact"] is True
    text = run_cli("evidence", str(out), samples(out)[0]["key"], check=True).stdout
    assert "X-Robots-Tag: noai" in text.partition("the build's records")[0]
    assert run_cli("verify", str(out)).returncode == 0


def test_evidence_json_marks_a_rewritten_record_not_intact_and_exits_1(
        recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    build(recipe, out)
    first = samples(out)[0]
    (api,) = first["evidence"]["api"]
    forge_in_place(out / api["file"], api["offset"], b'"CC BY-SA 4.0"', b'"CC0 1.0     "')
    proc, (found,) = evidence_json(out, first["key"])
    assert proc.returncode == 1
    assert f"{api['file']} offset {api['offset']}" in proc.stderr and "Traceback" not in \
        proc.stderr
    forged, *rest = found["records"]
    assert forged["record_id"] == api["record_id"] and forged["intact"] is False
    assert forged["digest_ok"] is True  # its digests were recomputed: only its id tells
    page = next(p for p in pages_of(forged) if p["pageid"] == int(first["source_id"]))
    assert page["imageinfo"][0]["extmetadata"]["LicenseShortName"]["value"] == "CC0 1.0     "
    assert rest and all(r["intact"] for r in rest)
    other, _ = evidence_json(out, samples(out)[-1]["key"])
    assert other.returncode == 0, other.stderr


def test_evidence_json_gives_one_line_per_candidate_a_url_matches(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    """A table listing one image twice: the URL finds both candidates, the copy refused as
    a duplicate after the same answers."""
    serve_no_site_policies(httpserver)
    httpserver.expect_request("/d.jpg").respond_with_data(make_image(7, (64, 48)),
                                                          content_type="image/jpeg")
    url = httpserver.url_for("/d.jpg")
    write_jsonl(tmp_path / "urls.jsonl", [{"id": i, "url": url, "license": CC0} for i in "ab"])
    recipe = write_recipe(tmp_path / "recipe.toml", recipe_text(
        "twice", '\nkind = "table"\npath = "urls.jsonl"\n'))
    out = tmp_path / "out"
    build(recipe, out)
    proc, found = evidence_json(out, url)
    assert proc.returncode == 0, proc.stderr
    assert [(f["candidate_id"], f["status"], f["reason"]) for f in found] == [
        ("table:a", "accepted", None), ("table:b", "rejected", "duplicate_exact")]
    assert [r["record_id"] for r in found[0]["records"]] == \
        [r["record_id"] for r in found[1]["records"]]
    assert found[0]["records"][-1]["body"]["same_as_sample"] is True


def test_evidence_json_prints_nothing_for_a_candidate_not_found_or_unreadable(
        recipe: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "out"
    build(recipe, out)
    for wanted in ("0000009999", "nope:1", "http://localhost/nothing.jpg"):
        proc = run_cli("evidence", str(out), wanted, "--json")
        assert proc.returncode == 2 and proc.stdout == ""
        assert "no candidate with key, id or URL" in proc.stderr and "Traceback" not in \
            proc.stderr
    shutil.rmtree(out / "evidence")  # its records cannot be read: not half an object
    proc = run_cli("evidence", str(out), samples(out)[0]["key"], "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "the evidence file the ledger names is missing" in proc.stderr
