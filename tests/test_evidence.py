"""The evidence archive (#19): a build from a local MediaWiki API and a table source keeps
every response it decided from as WARC, provenance points at the records, `cleanset
evidence` prints them, rebuilds are identical and verify catches a changed byte."""

from __future__ import annotations

import json
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


def make_recipe(httpserver: HTTPServer, tmp_path: Path, extra: str = "") -> Path:
    """Seven Commons files in pages of three, then four table rows (one refused, NC)."""
    commons = FakeCommons(httpserver)
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
