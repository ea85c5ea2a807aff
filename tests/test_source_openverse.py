"""The `openverse` source against a local server speaking the Openverse image search API."""

from __future__ import annotations

import copy
import json
import math
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

FIXTURE = json.loads((Path(__file__).parent / "fixtures/openverse/result.json").read_text())
API = "/v1"
SEARCH = f"{API}/images/"
TOKEN = "ov-bearer-secret-77d0e1"


def result(n: int, url: str, license: str | None, version: str | None) -> dict[str, Any]:
    r = copy.deepcopy(FIXTURE)
    r["id"] = f"00000000-0000-4000-8000-00000000000{n}"
    r["url"] = url
    r["title"] = f"Lighthouse {n}"
    r["foreign_landing_url"] = f"https://www.flickr.com/photos/someone/{n}"
    r["license"], r["license_version"] = license, version
    r["license_url"] = (f"https://creativecommons.org/licenses/{license}/{version}/"
                        if license and license not in ("cc0", "pdm") else
                        "https://creativecommons.org/publicdomain/zero/1.0/" if license else None)
    return r


def catalogue(images: list[str]) -> list[dict[str, Any]]:
    """Six results over three pages of two."""
    return [
        result(1, images[0], "by", "2.0"),
        result(2, images[1], "cc0", "1.0"),
        result(3, images[2], "by-nc", "2.0"),   # not admitted
        result(4, images[3], None, None),        # no licence
        result(5, images[4], "by-sa", "4.0"),
        result(6, images[5], "by", "4.0"),
    ]


def serve_search(httpserver: HTTPServer, results: list[dict[str, Any]]) -> None:
    def handler(request: Request) -> Response:
        page, size = int(request.args["page"]), int(request.args["page_size"])
        chunk = results[(page - 1) * size:page * size]
        body = {"result_count": len(results), "page_count": math.ceil(len(results) / size),
                "page_size": size, "page": page, "results": chunk, "warnings": []}
        return Response(json.dumps(body), content_type="application/json")

    httpserver.expect_request(SEARCH).respond_with_handler(handler)


def test_pages_by_page_number_with_the_commercial_filter(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    serve_search(httpserver, catalogue(serve_images(httpserver, 6)))
    source = open_source("openverse", tmp_path, api=httpserver.url_for(API), query="lighthouse",
                         page_size=2)
    cands = list(source.candidates(None))
    sent = requests_to(httpserver, SEARCH)
    assert [(q["page"], q["page_size"]) for q in sent] == [(["1"], ["2"]), (["2"], ["2"]),
                                                          (["3"], ["2"])]
    assert all(q["q"] == ["lighthouse"] and q["license_type"] == ["commercial"] for q in sent)
    assert all("Authorization" not in h for h in headers_to(httpserver, SEARCH))
    assert len(cands) == 6
    first = cands[0]
    assert first.url.endswith("/img/0.jpg")  # the provider's file, not an Openverse copy
    assert first.landing_url == "https://www.flickr.com/photos/someone/1"
    assert first.creator == "Jane Photographer" and first.credit.startswith('"Lighthouse at dusk"')
    assert ("provider", "flickr") in first.extra and ("source", "flickr") in first.extra


def test_licence_code_version_and_url_are_evidence_and_the_gate_decides(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    serve_search(httpserver, catalogue(serve_images(httpserver, 6)))
    cands = list(open_source("openverse", tmp_path, api=httpserver.url_for(API),
                             query="lighthouse", page_size=2).candidates(None))
    policy = load_policy("commercial")
    assert [e.field for e in cands[0].evidence] == [
        "openverse:license", "openverse:license_version", "openverse:license_url"]
    assert decide(cands[0].evidence, policy).spdx == "CC-BY-2.0"
    assert decide(cands[1].evidence, policy).spdx == "CC0-1.0"
    for cand, reason in ((cands[2], "license_not_allowed"), (cands[3], "license_missing")):
        verdict = decide(cand.evidence, policy)
        assert isinstance(verdict, Rejection) and verdict.reason == reason


def test_the_limit_is_hard_and_stops_paging(httpserver: HTTPServer, tmp_path: Path) -> None:
    serve_search(httpserver, catalogue(serve_images(httpserver, 6)))
    source = open_source("openverse", tmp_path, api=httpserver.url_for(API), query="x",
                         page_size=2, limit=3)
    assert len(list(source.candidates(None))) == 3
    assert len(requests_to(httpserver, SEARCH)) == 2


def test_recipes_cannot_ask_for_a_bulk_pull_or_anonymous_large_pages(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="terms of service forbid scraping"):
        open_source("openverse", tmp_path, query="x", limit=5000)
    with pytest.raises(UserError, match="anonymous"):
        open_source("openverse", tmp_path, query="x", page_size=100)


def test_a_token_from_the_environment_goes_in_the_authorization_header(
        httpserver: HTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENVERSE_TOKEN", TOKEN)
    serve_search(httpserver, catalogue(serve_images(httpserver, 6)))
    source = open_source("openverse", tmp_path, api=httpserver.url_for(API), query="x",
                         page_size=100, token_env="OPENVERSE_TOKEN")
    cands = list(source.candidates(None))
    assert [h["Authorization"] for h in headers_to(httpserver, SEARCH)] == [f"Bearer {TOKEN}"]
    assert all(TOKEN not in (c.api_url or "") for c in cands)


def test_resume_continues_at_the_saved_page_and_index(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    serve_search(httpserver, catalogue(serve_images(httpserver, 6)))
    source = open_source("openverse", tmp_path, api=httpserver.url_for(API), query="x",
                         page_size=2)
    everything = list(source.candidates(None))
    stop = everything[2]
    assert stop.resume == {"page": 2, "skip": 1, "count": 3}
    httpserver.clear_log()
    assert ids(source.candidates(stop.resume)) == ids(everything[3:])
    assert [q["page"] for q in requests_to(httpserver, SEARCH)] == [["2"], ["3"]]


def test_429_then_500_then_malformed_json_are_retried(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_oneshot_request(SEARCH).respond_with_json(
        {"detail": "Request was throttled."}, status=429, headers={"Retry-After": "0"})
    httpserver.expect_oneshot_request(SEARCH).respond_with_data("oops", status=500)
    httpserver.expect_oneshot_request(SEARCH).respond_with_data('{"results": [',
                                                                content_type="application/json")
    serve_search(httpserver, catalogue(serve_images(httpserver, 6)))
    source = open_source("openverse", tmp_path, api=httpserver.url_for(API), query="x",
                         page_size=2)
    assert len(list(source.candidates(None))) == 6


def test_a_refused_query_ends_in_a_clear_error(httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request(SEARCH).respond_with_json(
        {"detail": "page_size may not exceed 20 for anonymous requests"}, status=401)
    source = open_source("openverse", tmp_path, api=httpserver.url_for(API), query="x")
    with pytest.raises(UserError, match=r"^HTTP 401: the API refused the request of source 'openverse'"):
        list(source.candidates(None))


def test_build_ledgers_every_result_and_the_token_appears_nowhere(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    serve_search(httpserver, catalogue(serve_images(httpserver, 6)))
    recipe = write_recipe(tmp_path / "recipe.toml", f"""
[dataset]
name = "ov-test"

[[sources]]
kind = "openverse"
api = "{httpserver.url_for(API)}"
query = "lighthouse"
page_size = 2
limit = 50
token_env = "OPENVERSE_TOKEN"

[fetch]
allow_private_addresses = true
retries = 1
backoff_s = 0.01
""")
    out = tmp_path / "out"
    proc = run_cli("-v", "build", str(recipe), "--out", str(out), "--no-progress",
                   env={"OPENVERSE_TOKEN": TOKEN})
    assert proc.returncode == 0, proc.stderr
    ledger = {r["candidate_id"]: r for r in ledger_rows(out)}
    assert set(ledger) == {f"openverse:00000000-0000-4000-8000-00000000000{n}"
                           for n in range(1, 7)}
    reasons = [ledger[f"openverse:00000000-0000-4000-8000-00000000000{n}"]["reason"]
               for n in range(1, 7)]
    assert reasons == [None, None, "license_not_allowed", "license_missing", None, None]
    assert files_containing(out, TOKEN) == []
    assert TOKEN not in proc.stdout + proc.stderr


def test_an_empty_page_before_page_count_is_asked_again_then_passed_over(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    """Openverse filters dead links out of a page after paging, so a page can come back
    empty before `page_count`: taken as the end, it silently cut the pull short."""
    results = catalogue(serve_images(httpserver, 6))
    size = 2

    def handler(request: Request) -> Response:
        page = int(request.args["page"])
        chunk = [] if page == 2 else results[(page - 1) * size:page * size]
        body = {"result_count": len(results), "page_count": 3, "page_size": size,
                "page": page, "results": chunk, "warnings": []}
        return Response(json.dumps(body), content_type="application/json")

    httpserver.expect_request(SEARCH).respond_with_handler(handler)
    source = open_source("openverse", tmp_path, api=httpserver.url_for(API), query="lighthouse",
                         page_size=size)
    cands = list(source.candidates(None))
    assert [q["page"] for q in requests_to(httpserver, SEARCH)] == [["1"], ["2"], ["2"], ["3"]]
    assert [c.source_id for c in cands] == [results[i]["id"] for i in (0, 1, 4, 5)]
    # the last candidate of page 1 points past the empty page's request, not at the end
    assert cands[1].resume == {"page": 2, "skip": 0, "count": 2}
