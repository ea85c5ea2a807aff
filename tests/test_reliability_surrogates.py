"""Text with a lone surrogate never stops a build: it is recorded with the surrogate escaped.

JSON may spell a code point UTF-8 cannot encode (`"caf\\udce9"`: valid JSON, and json.loads
returns a str holding U+DCE9). The ledger, provenance, shards and papers are UTF-8, so such
text used to crash every run of the build at its first write. Every source turns outside
text into a `Candidate` / `Evidence` (builder/records.py), which escape each lone surrogate
as literal text, `caf\\udce9`, where they are made: the licence gate decides on the text
that is recorded, and every writer stores it unchanged.
"""

from __future__ import annotations

import json
import sqlite3
import tarfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.apihelpers import serve_images
from tests.conftest import make_image, run_cli, table_recipe, write_recipe
from tests.test_source_europeana import PD
from tests.test_source_europeana import item as europeana_item

CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"
BY = "https://creativecommons.org/licenses/by/4.0/"
CAFE = "caf\udce9"  # what json.loads returns for "caf\udce9": not encodable as UTF-8
RECORDED = "caf\\udce9"  # what is recorded: the escape, as literal text


def json_text(value: Any) -> str:
    """JSON as a broken or hostile writer sends it: lone surrogates as `\\uXXXX` escapes."""
    text = json.dumps(value)  # ensure_ascii: a lone surrogate is written as its escape
    assert "\\udce9" in text
    return text


def build_twice_and_verify(recipe: Path, out: Path, env: dict[str, str] | None = None) -> None:
    """The build finishes, verify is satisfied, and the same command again has nothing left."""
    first = run_cli("build", str(recipe), "--out", str(out), "--no-progress", env=env)
    assert first.returncode == 0, first.stderr
    assert "surrogates not allowed" not in first.stderr
    verify = run_cli("verify", str(out))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    again = run_cli("build", str(recipe), "--out", str(out), "--no-progress", env=env)
    assert again.returncode == 0, again.stderr
    assert "already complete" in again.stdout, again.stdout


def provenance(out: Path) -> dict[str, dict[str, Any]]:
    """Every sample's KEY.json (and KEY.txt caption) as the shards hold them, by key."""
    found: dict[str, dict[str, Any]] = {}
    for shard in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for info in tar:
                key, ext = info.name.split(".", 1)
                if ext not in ("json", "txt"):
                    continue
                data = tar.extractfile(info).read().decode("utf-8")  # type: ignore[union-attr]
                if ext == "json":
                    found.setdefault(key, {}).update(json.loads(data))
                elif ext == "txt":
                    found.setdefault(key, {})["_txt"] = data
    return found


def manifest(out: Path) -> dict[str, dict[str, Any]]:
    return {r["source_id"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}


def ledger(out: Path) -> dict[str, dict[str, Any]]:
    rows = pq.read_table(out / "candidates.parquet").to_pylist()
    return {r["candidate_id"]: r for r in rows}


def test_a_folder_sidecar_and_metadata_row_with_lone_surrogates_are_recorded_escaped(
        tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "x.jpg").write_bytes(make_image(1))
    (images / "x.jpg.json").write_text(json_text(
        {"license": BY, "creator": CAFE, "title": f"Le {CAFE}", "caption": f"a {CAFE} table",
         "camera": CAFE}))
    (images / "y.jpg").write_bytes(make_image(2))
    (images / "z.jpg").write_bytes(make_image(3))
    (images / "metadata.jsonl").write_text(
        json_text({"file_name": "y.jpg", "license": CC0, "creator": CAFE}) + "\n"
        # a licence claim that holds one is decided on the recorded text: not in the catalogue
        + json_text({"file_name": "z.jpg", "license": f"CC0-1.0 {CAFE}"}) + "\n")
    recipe = write_recipe(tmp_path / "recipe.toml", """
[dataset]
name = "surrogates"
[[sources]]
kind = "folder"
path = "images"
""")
    out = tmp_path / "out"
    build_twice_and_verify(recipe, out)

    rows = manifest(out)
    assert set(rows) == {"x.jpg", "y.jpg"}
    assert rows["x.jpg"]["creator"] == RECORDED and rows["x.jpg"]["title"] == f"Le {RECORDED}"
    assert rows["y.jpg"]["creator"] == RECORDED and rows["y.jpg"]["license"] == "CC0-1.0"
    prov = provenance(out)[rows["x.jpg"]["key"]]
    assert prov["attribution"]["creator"] == RECORDED
    assert prov["caption"] == f"a {RECORDED} table" == prov["_txt"]
    assert {"name": "camera", "value": RECORDED} in prov["extra"], prov["extra"]
    # the papers: the CSV as recorded; Markdown escapes the backslash, so it renders so too
    assert f"Le {RECORDED},{RECORDED}," in (out / "attribution.csv").read_text(encoding="utf-8")
    assert "by caf\\\\udce9," in (out / "ATTRIBUTION.md").read_text(encoding="utf-8")
    refused = ledger(out)["folder:z.jpg"]
    assert refused["reason"] == "license_unrecognized"
    assert "udce9" in refused["detail"], refused["detail"]
    with sqlite3.connect(out / "ledger.sqlite") as db:
        (detail,) = db.execute("SELECT detail FROM candidates WHERE reason IS NOT NULL").fetchone()
    assert detail == refused["detail"]


def test_a_table_row_with_lone_surrogates_is_built_and_recorded_escaped(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    [url] = serve_images(httpserver, 1)
    rows = [{"id": f"id-{CAFE}", "url": url, "license": CC0, "creator": CAFE,
             "title": f"Le {CAFE}", "caption": f"a {CAFE} table", "credit": CAFE}]
    recipe = table_recipe(tmp_path, rows, 'name = "surrogate-table"')  # json.dumps: escaped
    assert "\\udce9" in (tmp_path / "urls.jsonl").read_text(encoding="utf-8")
    out = tmp_path / "out"
    build_twice_and_verify(recipe, out)

    row = manifest(out)[f"id-{RECORDED}"]
    assert (row["creator"], row["title"]) == (RECORDED, f"Le {RECORDED}")
    prov = provenance(out)[row["key"]]
    assert prov["source"]["id"] == f"id-{RECORDED}"
    assert prov["attribution"]["creator"] == RECORDED
    assert prov["caption"] == f"a {RECORDED} table" == prov["_txt"]
    assert ledger(out)[f"table:id-{RECORDED}"]["status"] == "accepted"


def test_an_api_answer_with_lone_surrogates_cannot_crash_a_build(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    images = serve_images(httpserver, 2)
    results = [
        {"id": f"ov-{CAFE}", "url": images[0], "title": f"Le {CAFE}", "creator": CAFE,
         "creator_url": f"https://example.org/{CAFE}", "license": "cc0", "license_version": "1.0",
         "license_url": CC0, "foreign_landing_url": f"https://example.org/p/{CAFE}",
         "attribution": f'"Le {CAFE}" by {CAFE}', "provider": CAFE, "source": CAFE},
        {"id": "ov-2", "url": images[1], "title": "two", "license": f"cc0{CAFE}",
         "license_version": "1.0"},
    ]
    body = {"result_count": 2, "page_count": 1, "page_size": 20, "page": 1,
            "results": results, "warnings": []}
    httpserver.expect_request("/v1/images/").respond_with_data(
        json_text(body), content_type="application/json")
    recipe = write_recipe(tmp_path / "recipe.toml", f"""
[dataset]
name = "surrogate-api"
[[sources]]
kind = "openverse"
api = "{httpserver.url_for('/v1')}"
query = "cafe"
limit = 10
[fetch]
allow_private_addresses = true
retries = 1
backoff_s = 0.01
""")
    out = tmp_path / "out"
    build_twice_and_verify(recipe, out)

    row = manifest(out)[f"ov-{RECORDED}"]
    assert (row["creator"], row["title"]) == (RECORDED, f"Le {RECORDED}")
    assert row["landing_url"] == f"https://example.org/p/{RECORDED}"
    prov = provenance(out)[row["key"]]
    assert prov["attribution"]["creator"] == RECORDED
    assert prov["attribution"]["credit"] == f'"Le {RECORDED}" by {RECORDED}'
    refused = ledger(out)["openverse:ov-2"]
    assert refused["reason"] == "license_unrecognized" and "udce9" in refused["detail"]


def test_an_api_cursor_with_a_lone_surrogate_is_sent_back_escaped_and_paging_goes_on(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    """Text an API answer hands back to be sent again (Europeana's `nextCursor`) cannot be
    put in a URL as it is either: the answer is made recordable as it is read, so the cursor
    goes back as its escape and the next page is read."""
    images = serve_images(httpserver, 2)
    cursors = ["*", f"c-{CAFE}"]
    pages = [[europeana_item(1, images[0], [PD])], [europeana_item(2, images[1], [PD])]]
    pages[0][0]["title"] = [f"Le {CAFE}"]

    def search(request: Request) -> Response:
        page = [*cursors[:1], f"c-{RECORDED}"].index(request.args["cursor"])
        body: dict[str, Any] = {"success": True, "itemsCount": 1, "totalResults": 2,
                                "items": pages[page]}
        if page == 0:
            body["nextCursor"] = cursors[1]
        return Response(json.dumps(body), content_type="application/json")

    httpserver.expect_request("/record/v2/search.json").respond_with_handler(search)
    recipe = write_recipe(tmp_path / "recipe.toml", f"""
[dataset]
name = "surrogate-cursor"
[[sources]]
kind = "europeana"
api = "{httpserver.url_for('/record/v2')}"
query = "*"
rows = 1
[fetch]
allow_private_addresses = true
retries = 1
backoff_s = 0.01
""")
    out = tmp_path / "out"
    build_twice_and_verify(recipe, out, env={"EUROPEANA_API_KEY": "eu-key-surrogates"})

    sent = [req.args["cursor"] for req, _ in httpserver.log
            if req.path == "/record/v2/search.json"]
    assert sent[:2] == ["*", f"c-{RECORDED}"]
    rows = manifest(out)
    assert set(rows) == {"90402/RP_P_OB_1", "90402/RP_P_OB_2"}
    assert rows["90402/RP_P_OB_1"]["title"] == f"Le {RECORDED}"
