"""The `smithsonian` source against a local server speaking the Open Access API."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from builder.errors import UserError
from builder.licensing import decide, load_policy
from builder.records import Rejection
from tests.apihelpers import (
    files_containing,
    headers_to,
    ids,
    ledger_rows,
    open_source,
    requests_to,
    serve_images,
)
from tests.conftest import run_cli, write_recipe

FIXTURE = json.loads((Path(__file__).parent / "fixtures/smithsonian/row.json").read_text())
KEY = "si-secret-KEY-4f1e9b77"
API = "/openaccess/api/v1.0"
SEARCH = f"{API}/search"


def row(n: int, images: list[str], access: list[str | None]) -> dict[str, Any]:
    """A search row shaped like the fixture, with one media item per image URL."""
    r = copy.deepcopy(FIXTURE)
    r["id"] = f"edanmdm-saam_{n}"
    r["title"] = f"Work {n}"
    dnr = r["content"]["descriptiveNonRepeating"]
    template = dnr["online_media"]["media"][0]
    media = []
    for i, (url, usage) in enumerate(zip(images, access, strict=True)):
        m = copy.deepcopy(template)
        m["idsId"] = f"SAAM-{n}_{i}"
        m["content"] = url
        m["resources"][1]["url"] = url + "?hires"
        if usage is None:
            del m["usage"]
        else:
            m["usage"] = {"access": usage}
        media.append(m)
    if media:
        dnr["online_media"] = {"mediaCount": len(media), "media": media}
    else:
        del dnr["online_media"]
    dnr["record_link"] = f"https://americanart.si.edu/artwork/work-{n}"
    return r


def catalogue(images: list[str]) -> list[dict[str, Any]]:
    """Six rows over three pages of two: seven CC0 images plus the awkward cases."""
    return [
        row(1, images[0:1], ["CC0"]),
        row(2, images[1:3], ["CC0", "CC0"]),            # two media: two candidates
        row(3, images[3:4], ["Usage conditions apply"]),  # not admitted
        row(4, images[4:5], [None]),                      # no licence at all
        row(5, [], []),                                   # no image media: still accounted for
        row(6, images[5:6], ["CC0"]),
    ]


def serve_search(httpserver: HTTPServer, rows: list[dict[str, Any]], path: str = SEARCH) -> None:
    def handler(request: Request) -> Response:
        start, size = int(request.args["start"]), int(request.args["rows"])
        body = {"status": 200, "responseCode": 1,
                "response": {"rows": rows[start:start + size], "rowCount": len(rows),
                             "message": "content found"}}
        return Response(json.dumps(body), content_type="application/json")

    httpserver.expect_request(path).respond_with_handler(handler)


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("SI_API_KEY", KEY)
    return KEY


def test_pages_by_start_and_rows_and_sends_the_key_only_in_a_header(
        httpserver: HTTPServer, tmp_path: Path, key: str) -> None:
    serve_search(httpserver, catalogue(serve_images(httpserver, 6)))
    source = open_source("smithsonian", tmp_path, api=httpserver.url_for(API), rows=2,
                         query="online_media_type:Images")
    cands = list(source.candidates(None))
    sent = requests_to(httpserver, SEARCH)
    assert [(q["start"], q["rows"], q["q"]) for q in sent] == [
        (["0"], ["2"], ["online_media_type:Images"]), (["2"], ["2"], ["online_media_type:Images"]),
        (["4"], ["2"], ["online_media_type:Images"])]
    assert all("api_key" not in q for q in sent)
    assert all(h.get("X-Api-Key") == key for h in headers_to(httpserver, SEARCH))
    assert ids(cands) == ["SAAM-1_0", "SAAM-2_0", "SAAM-2_1", "SAAM-3_0", "SAAM-4_0",
                          "edanmdm-saam_5", "SAAM-6_0"]
    first = cands[0]
    assert first.title == "Work 1"
    assert first.creator.startswith("Albert Pinkham Ryder")
    assert first.landing_url == "https://americanart.si.edu/artwork/work-1"
    assert ("unit_code", "SAAM") in first.extra
    assert all(key not in (c.api_url or "") for c in cands)


def test_licence_evidence_is_per_media_item_and_the_gate_admits_only_cc0(
        httpserver: HTTPServer, tmp_path: Path, key: str) -> None:
    serve_search(httpserver, catalogue(serve_images(httpserver, 6)))
    source = open_source("smithsonian", tmp_path, api=httpserver.url_for(API), rows=2)
    by_id = {c.source_id: c for c in source.candidates(None)}
    policy = load_policy("commercial")
    assert decide(by_id["SAAM-1_0"].evidence, policy).spdx == "CC0-1.0"
    refused = decide(by_id["SAAM-3_0"].evidence, policy)
    assert isinstance(refused, Rejection) and refused.reason == "license_not_allowed"
    missing = decide(by_id["SAAM-4_0"].evidence, policy)
    assert isinstance(missing, Rejection) and missing.reason == "license_missing"
    assert by_id["edanmdm-saam_5"].url == "" and not by_id["edanmdm-saam_5"].evidence


def test_category_search_and_a_named_resource_pick_the_endpoint_and_the_file(
        httpserver: HTTPServer, tmp_path: Path, key: str) -> None:
    path = f"{API}/category/art_design/search"
    serve_search(httpserver, catalogue(serve_images(httpserver, 6)), path=path)
    source = open_source("smithsonian", tmp_path, api=httpserver.url_for(API), rows=100,
                         category="art_design", resource="High-resolution JPEG")
    cands = list(source.candidates(None))
    assert len(requests_to(httpserver, path)) == 1
    assert cands[0].url.endswith("/img/0.jpg?hires")


def test_resume_continues_in_the_page_it_stopped_in_without_asking_for_earlier_pages(
        httpserver: HTTPServer, tmp_path: Path, key: str) -> None:
    serve_search(httpserver, catalogue(serve_images(httpserver, 6)))
    source = open_source("smithsonian", tmp_path, api=httpserver.url_for(API), rows=2)
    everything = list(source.candidates(None))
    stop = everything[3]  # SAAM-3_0: first of page two
    assert stop.resume == {"page": 2, "skip": 1, "count": 4}
    httpserver.clear_log()
    rest = list(source.candidates(stop.resume))
    assert ids(rest) == ids(everything[4:])
    assert [q["start"] for q in requests_to(httpserver, SEARCH)] == [["2"], ["4"]]


def test_429_then_500_then_malformed_json_are_retried_to_the_right_page(
        httpserver: HTTPServer, tmp_path: Path, key: str) -> None:
    rows = catalogue(serve_images(httpserver, 6))[:2]
    httpserver.expect_oneshot_request(SEARCH).respond_with_data(
        "slow down", status=429, headers={"Retry-After": "0"})
    httpserver.expect_oneshot_request(SEARCH).respond_with_data("boom", status=500)
    httpserver.expect_oneshot_request(SEARCH).respond_with_data('{"response": {"rows": [',
                                                                content_type="application/json")
    serve_search(httpserver, rows)
    source = open_source("smithsonian", tmp_path, api=httpserver.url_for(API), rows=2)
    assert ids(source.candidates(None)) == ["SAAM-1_0", "SAAM-2_0", "SAAM-2_1"]
    assert len(requests_to(httpserver, SEARCH)) == 4


def test_an_api_that_keeps_failing_ends_in_a_clear_error_without_the_key(
        httpserver: HTTPServer, tmp_path: Path, key: str) -> None:
    httpserver.expect_request(SEARCH).respond_with_data("boom", status=500)
    source = open_source("smithsonian", tmp_path, api=httpserver.url_for(API))
    with pytest.raises(UserError, match=r"^HTTP 500 \(page tried 3 times\); source 'smithsonian' stopped at\n.*\n.*resume") as info:
        list(source.candidates(None))
    assert key not in str(info.value)


def test_a_refused_key_names_the_variable_to_fix(
        httpserver: HTTPServer, tmp_path: Path, key: str) -> None:
    httpserver.expect_request(SEARCH).respond_with_data('{"error": {"code": "API_KEY_INVALID"}}',
                                                        status=403)
    source = open_source("smithsonian", tmp_path, api=httpserver.url_for(API))
    with pytest.raises(UserError, match="SI_API_KEY"):
        list(source.candidates(None))


def test_a_missing_key_variable_is_refused_when_the_recipe_loads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SI_API_KEY", raising=False)
    with pytest.raises(UserError, match="environment variable SI_API_KEY is not set"):
        open_source("smithsonian", tmp_path)
    with pytest.raises(UserError, match="not an environment variable name"):
        open_source("smithsonian", tmp_path, api_key_env="abc-123-my-key")


def test_build_accounts_for_every_media_item_and_never_writes_the_key(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    rows = catalogue(serve_images(httpserver, 6))
    serve_search(httpserver, rows)
    recipe = write_recipe(tmp_path / "recipe.toml", f"""
[dataset]
name = "si-test"
samples_per_shard = 2

[[sources]]
kind = "smithsonian"
api = "{httpserver.url_for(API)}"
rows = 2

[fetch]
allow_private_addresses = true
retries = 1
backoff_s = 0.01
""")
    out = tmp_path / "out"
    proc = run_cli("-v", "build", str(recipe), "--out", str(out), "--no-progress",
                   env={"SI_API_KEY": KEY})
    assert proc.returncode == 0, proc.stderr
    ledger = {r["candidate_id"]: r for r in ledger_rows(out)}
    assert set(ledger) == {f"smithsonian:{i}" for i in (
        "SAAM-1_0", "SAAM-2_0", "SAAM-2_1", "SAAM-3_0", "SAAM-4_0", "edanmdm-saam_5",
        "SAAM-6_0")}
    assert ledger["smithsonian:SAAM-3_0"]["reason"] == "license_not_allowed"
    assert ledger["smithsonian:SAAM-4_0"]["reason"] == "license_missing"
    assert ledger["smithsonian:edanmdm-saam_5"]["reason"] == "license_missing"
    accepted = [r for r in ledger.values() if r["status"] == "accepted"]
    assert len(accepted) == 4
    assert files_containing(out, KEY) == []
    assert KEY not in proc.stdout + proc.stderr


def test_build_without_the_key_variable_says_which_variable_to_set(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "recipe.toml", """
[dataset]
name = "si-test"

[[sources]]
kind = "smithsonian"
api_key_env = "SI_KEY_FOR_THIS_TEST"
""")
    proc = run_cli("build", str(recipe), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "SI_KEY_FOR_THIS_TEST" in proc.stderr and "export" in proc.stderr


def twenty_one_candidates_in_two_pages_of_ten(httpserver: HTTPServer) -> list[dict[str, Any]]:
    """30 rows: rows 1-10 give 10 candidates, rows 11-20 give 11 (row 15 has two images),
    so 21 candidates end exactly with page two (start=10) and a third page exists."""
    url = httpserver.url_for("/never-fetched.jpg")  # refused by the gate before download
    return [row(n, [url] * (2 if n == 15 else 1), ["Usage conditions apply"] * (2 if n == 15
                                                                               else 1))
            for n in range(1, 31)]


@pytest.mark.parametrize("how", ["--limit", "limit key"])
def test_a_build_that_holds_its_limit_at_a_page_end_never_asks_for_the_next_page(
        httpserver: HTTPServer, tmp_path: Path, how: str) -> None:
    serve_search(httpserver, twenty_one_candidates_in_two_pages_of_ten(httpserver))
    recipe = write_recipe(tmp_path / "recipe.toml", f"""
[dataset]
name = "si-test"

[[sources]]
kind = "smithsonian"
api = "{httpserver.url_for(API)}"
rows = 10
{"limit = 21" if how == "limit key" else ""}

[fetch]
allow_private_addresses = true
retries = 1
backoff_s = 0.01
""")
    flags = ["--limit", "21"] if how == "--limit" else []
    proc = run_cli("build", str(recipe), "--out", str(tmp_path / "out"), "--no-progress",
                   *flags, env={"SI_API_KEY": KEY})
    assert proc.returncode == 0, proc.stderr
    assert [q["start"] for q in requests_to(httpserver, SEARCH)] == [["0"], ["10"]]
    assert len(ledger_rows(tmp_path / "out")) == 21
    if how == "--limit":  # the same command without it resumes at the third page
        httpserver.clear_log()
        run_cli("build", str(recipe), "--out", str(tmp_path / "out"), "--no-progress",
                env={"SI_API_KEY": KEY}, check=True)
        assert [q["start"] for q in requests_to(httpserver, SEARCH)] == [["20"]]
        assert len(ledger_rows(tmp_path / "out")) == 31


def test_an_empty_page_the_row_count_says_is_not_the_last_is_asked_again(
        httpserver: HTTPServer, tmp_path: Path, key: str) -> None:
    """The page at start=2 came back empty once (an index hiccup): the source ended there,
    silently, and the build called itself complete without the rest."""
    rows = catalogue(serve_images(httpserver, 6))
    hiccups = ["2"]

    def handler(request: Request) -> Response:
        start, size = int(request.args["start"]), int(request.args["rows"])
        chunk = rows[start:start + size]
        if request.args["start"] in hiccups:
            hiccups.remove(request.args["start"])
            chunk = []
        body = {"status": 200, "responseCode": 1,
                "response": {"rows": chunk, "rowCount": len(rows), "message": "content found"}}
        return Response(json.dumps(body), content_type="application/json")

    httpserver.expect_request(SEARCH).respond_with_handler(handler)
    source = open_source("smithsonian", tmp_path, api=httpserver.url_for(API), rows=2)
    cands = list(source.candidates(None))
    assert [q["start"] for q in requests_to(httpserver, SEARCH)] == [["0"], ["2"], ["2"], ["4"]]
    assert len(cands) == 7
