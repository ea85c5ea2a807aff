"""The `europeana` source against a local server speaking the Search API with cursors."""

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
    ids,
    ledger_rows,
    open_source,
    requests_to,
    serve_images,
)
from tests.conftest import run_cli, write_recipe

FIXTURE = json.loads((Path(__file__).parent / "fixtures/europeana/item.json").read_text())
KEY = "eu-wskey-secret-91c2aa"
API = "/record/v2"
SEARCH = f"{API}/search.json"
PD = "http://creativecommons.org/publicdomain/mark/1.0/"
CC0 = "http://creativecommons.org/publicdomain/zero/1.0/"
BY_SA = "http://creativecommons.org/licenses/by-sa/4.0/"
IN_COPYRIGHT = "http://rightsstatements.org/vocab/InC/1.0/"
# Opaque cursors, as Europeana hands them out (base64 Solr cursor marks).
CURSORS = ["*", "AoE/GC85MDQwMi9SUF9QX09CXzc0NA==", "AoE/GC85MDQwMi9SUF9QX09CXzc0Ng=="]


def item(n: int, image: str | None, rights: list[str] | None) -> dict[str, Any]:
    i = copy.deepcopy(FIXTURE)
    i["id"] = f"/90402/RP_P_OB_{n}"
    i["title"] = [f"Print {n}"]
    i["edmIsShownAt"] = [f"https://www.rijksmuseum.nl/nl/collectie/RP-P-OB-{n}"]
    if image is None:
        del i["edmIsShownBy"]
    else:
        i["edmIsShownBy"] = [image]
    if rights is None:
        del i["rights"]
    else:
        i["rights"] = rights
    return i


def catalogue(images: list[str]) -> list[dict[str, Any]]:
    """Six items over three cursor pages of two."""
    return [
        item(1, images[0], [PD]),
        item(2, images[1], [CC0]),
        item(3, images[2], [IN_COPYRIGHT]),   # not admitted
        item(4, images[3], None),             # no licence
        item(5, images[4], [BY_SA, PD]),      # every URI is a claim: they disagree
        item(6, None, [PD]),                  # no media URL: still accounted for
    ]


def serve_search(httpserver: HTTPServer, items: list[dict[str, Any]], size: int = 2) -> None:
    def handler(request: Request) -> Response:
        page = CURSORS.index(request.args["cursor"])
        chunk = items[page * size:(page + 1) * size]
        body: dict[str, Any] = {"apikey": request.args["wskey"], "success": True,
                                "requestNumber": 999, "itemsCount": len(chunk),
                                "totalResults": len(items), "items": chunk}
        if page + 1 < len(CURSORS):
            body["nextCursor"] = CURSORS[page + 1]
        return Response(json.dumps(body), content_type="application/json")

    httpserver.expect_request(SEARCH).respond_with_handler(handler)


def build_recipe(httpserver: HTTPServer, path: Path, *, name: str = "eu-test",
                 fetch: str = "") -> Path:
    """A build recipe with one Europeana source over the fake API, pages of two."""
    return write_recipe(path, f"""
[dataset]
name = "{name}"

[[sources]]
kind = "europeana"
api = "{httpserver.url_for(API)}"
query = "*"
rows = 2

[fetch]
allow_private_addresses = true
{fetch}""")


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("EUROPEANA_API_KEY", KEY)
    return KEY


def test_pages_with_cursor_star_then_each_next_cursor_and_the_documented_filters(
        httpserver: HTTPServer, tmp_path: Path, key: str) -> None:
    serve_search(httpserver, catalogue(serve_images(httpserver, 5)))
    source = open_source("europeana", tmp_path, api=httpserver.url_for(API), rows=2,
                         query="who:(Rembrandt)", qf=("PROVIDER:Rijksmuseum",))
    cands = list(source.candidates(None))
    sent = requests_to(httpserver, SEARCH)
    assert [q["cursor"] for q in sent] == [[c] for c in CURSORS]
    for q in sent:
        assert q["wskey"] == [key] and q["query"] == ["who:(Rembrandt)"]
        assert q["reusability"] == ["open"] and q["media"] == ["true"] and q["rows"] == ["2"]
        assert q["qf"] == ["TYPE:IMAGE", "PROVIDER:Rijksmuseum"]
    assert ids(cands) == [f"90402/RP_P_OB_{n}" for n in range(1, 7)]
    first = cands[0]
    assert first.creator == "Rembrandt van Rijn" and first.title == "Print 1"
    assert first.landing_url == "https://www.rijksmuseum.nl/nl/collectie/RP-P-OB-1"
    assert ("dataProvider", "Rijksmuseum") in first.extra
    assert all(key not in (c.api_url or "") and "wskey" not in (c.api_url or "") for c in cands)


def test_rights_uri_is_the_evidence_and_the_gate_decides(
        httpserver: HTTPServer, tmp_path: Path, key: str) -> None:
    serve_search(httpserver, catalogue(serve_images(httpserver, 5)))
    by_id = {c.source_id: c for c in open_source(
        "europeana", tmp_path, api=httpserver.url_for(API), rows=2, query="*").candidates(None)}
    policy = load_policy("commercial")
    assert decide(by_id["90402/RP_P_OB_1"].evidence, policy).spdx == "CC-PDM-1.0"
    for n, reason in ((3, "license_not_allowed"), (4, "license_missing")):
        verdict = decide(by_id[f"90402/RP_P_OB_{n}"].evidence, policy)
        assert isinstance(verdict, Rejection) and verdict.reason == reason
    five = by_id["90402/RP_P_OB_5"]
    assert [e.value for e in five.evidence] == [BY_SA, PD]
    verdict = decide(five.evidence, policy)
    assert isinstance(verdict, Rejection) and verdict.reason == "license_conflict"
    assert by_id["90402/RP_P_OB_6"].url == ""


def test_resume_sends_the_saved_cursor_and_skips_what_was_done_on_that_page(
        httpserver: HTTPServer, tmp_path: Path, key: str) -> None:
    serve_search(httpserver, catalogue(serve_images(httpserver, 5)))
    source = open_source("europeana", tmp_path, api=httpserver.url_for(API), rows=2, query="*")
    everything = list(source.candidates(None))
    stop = everything[2]
    assert stop.resume == {"page": CURSORS[1], "skip": 1, "count": 3}
    httpserver.clear_log()
    rest = list(source.candidates(stop.resume))
    assert ids(rest) == ids(everything[3:])
    assert [q["cursor"] for q in requests_to(httpserver, SEARCH)] == [[CURSORS[1]], [CURSORS[2]]]


def test_429_then_500_then_malformed_json_are_retried(
        httpserver: HTTPServer, tmp_path: Path, key: str) -> None:
    httpserver.expect_oneshot_request(SEARCH).respond_with_data(
        "", status=429, headers={"Retry-After": "0"})
    httpserver.expect_oneshot_request(SEARCH).respond_with_data("error", status=500)
    httpserver.expect_oneshot_request(SEARCH).respond_with_data('{"success": true, "items": [{',
                                                                content_type="application/json")
    serve_search(httpserver, catalogue(serve_images(httpserver, 5)))
    source = open_source("europeana", tmp_path, api=httpserver.url_for(API), rows=2, query="*")
    assert len(list(source.candidates(None))) == 6


def test_an_error_answer_and_a_failing_api_end_in_clear_errors_without_the_key(
        httpserver: HTTPServer, tmp_path: Path, key: str) -> None:
    httpserver.expect_oneshot_request(SEARCH).respond_with_json(
        {"apikey": KEY, "success": False, "error": "Invalid query parameter: qf"})
    source = open_source("europeana", tmp_path, api=httpserver.url_for(API), query="*")
    with pytest.raises(UserError, match="Invalid query parameter") as info:
        list(source.candidates(None))
    assert key not in str(info.value)
    httpserver.expect_request(SEARCH).respond_with_data("down", status=500)
    with pytest.raises(UserError, match=r"^HTTP 500 \(page tried 3 times\); source 'europeana'") as info:
        list(source.candidates(None))
    assert key not in str(info.value)


def test_a_missing_key_variable_is_refused_when_the_recipe_loads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EUROPEANA_API_KEY", raising=False)
    with pytest.raises(UserError, match="EUROPEANA_API_KEY is not set"):
        open_source("europeana", tmp_path, query="*")


def test_build_ledgers_every_item_and_the_key_appears_in_no_output_or_log(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    # A malformed page first: the fetcher logs the URL it retries, which carries wskey.
    httpserver.expect_oneshot_request(SEARCH).respond_with_data("{not json",
                                                                content_type="application/json")
    serve_search(httpserver, catalogue(serve_images(httpserver, 5)))
    recipe = build_recipe(httpserver, tmp_path / "recipe.toml",
                          fetch="retries = 1\nbackoff_s = 0.01\n")
    out = tmp_path / "out"
    proc = run_cli("-v", "build", str(recipe), "--out", str(out), "--no-progress",
                   env={"EUROPEANA_API_KEY": KEY})
    assert proc.returncode == 0, proc.stderr
    assert "malformed JSON" in proc.stderr  # the log line was written, redacted
    ledger = {r["candidate_id"]: r for r in ledger_rows(out)}
    assert set(ledger) == {f"europeana:90402/RP_P_OB_{n}" for n in range(1, 7)}
    reasons = {k.rsplit("_", 1)[1]: r["reason"] for k, r in ledger.items()}
    assert reasons == {"1": None, "2": None, "3": "license_not_allowed", "4": "license_missing",
                       "5": "license_conflict", "6": "http_error"}
    assert files_containing(out, KEY) == []
    assert KEY not in proc.stdout + proc.stderr


def test_a_build_stopped_mid_paging_resumes_at_the_saved_cursor(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    serve_search(httpserver, catalogue(serve_images(httpserver, 5)))
    recipe = build_recipe(httpserver, tmp_path / "recipe.toml", name="eu-resume",
                          fetch="retries = 0\n")
    out, env = tmp_path / "out", {"EUROPEANA_API_KEY": KEY}
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", "--limit", "3",
            env=env, check=True)
    assert len(ledger_rows(out)) == 3
    httpserver.clear_log()
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", env=env, check=True)
    assert [q["cursor"] for q in requests_to(httpserver, SEARCH)] == [[CURSORS[1]], [CURSORS[2]]]
    assert sorted(r["candidate_id"] for r in ledger_rows(out)) == sorted(
        f"europeana:90402/RP_P_OB_{n}" for n in range(1, 7))


def test_the_limit_key_stops_paging_at_the_page_that_reaches_it(
        httpserver: HTTPServer, tmp_path: Path, key: str) -> None:
    serve_search(httpserver, catalogue(serve_images(httpserver, 5)))
    source = open_source("europeana", tmp_path, api=httpserver.url_for(API), rows=2,
                         query="*", limit=4)
    assert ids(source.candidates(None)) == [f"90402/RP_P_OB_{n}" for n in range(1, 5)]
    assert [q["cursor"] for q in requests_to(httpserver, SEARCH)] == [[c] for c in CURSORS[:2]]
