"""What a user sees when a source's API fails: exit 1 for a failing API (the recipe is fine,
run again to resume), exit 2 only for what the recipe must fix; the cause first, the URL once."""

from __future__ import annotations

import json
import re
import socket
import sqlite3
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from builder.errors import UserError
from builder.fetch import Fetcher, FetchError, failure_cause
from builder.sources._failures import SourceError
from tests.apihelpers import FAST_FETCH, ledger_rows, open_source, serve_images
from tests.conftest import run_cli, write_recipe
from tests.test_source_openverse import result as openverse_result

ERROR = "cleanset: error: "
RESUME = "run the same command again to resume"
KEYS = {"SI_API_KEY": "si-test-key-0001", "EUROPEANA_API_KEY": "eu-test-key-0001"}

# Each API source kind, as a recipe would name it; `{api}` is the unreachable endpoint.
API_SOURCES = {
    "wikimedia": 'api = "{api}/w/api.php"\ncategory = "Featured pictures on Wikimedia Commons"',
    "met": 'api = "{api}/public/collection/v1"\ndepartment_ids = [11]',
    "aic": 'api = "{api}/api/v1"\nquery = "impressionism"',
    "cleveland": 'api = "{api}/api"\nquery = "painting"',
    "smithsonian": 'api = "{api}/openaccess/api/v1.0"',
    "europeana": 'api = "{api}/record/v2"\nquery = "painting"',
    "openverse": 'api = "{api}/v1"\nquery = "lighthouse"',
}


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def recipe_for(tmp_path: Path, source: str, *, user_agent: str = "cleanset-test/0.1 "
               "(https://ci.cleanset.test/contact)") -> Path:
    return write_recipe(tmp_path / "recipe.toml", f"""
[dataset]
name = "failing-api"

[[sources]]
{source}

[fetch]
allow_private_addresses = true
user_agent = "{user_agent}"
timeout_s = 5
retries = 0
backoff_s = 0.01
""")


def first_line(stderr: str) -> str:
    return stderr.strip().splitlines()[0]


@pytest.mark.parametrize("kind", sorted(API_SOURCES))
def test_an_unreachable_api_exits_1_with_the_cause_first_and_the_url_once(
        tmp_path: Path, closed_port: int, kind: str) -> None:
    api = f"http://127.0.0.1:{closed_port}"
    recipe = recipe_for(tmp_path, f'kind = "{kind}"\n' + API_SOURCES[kind].format(api=api))
    proc = run_cli("build", str(recipe), "--out", str(tmp_path / "out"), "--no-progress",
                   env=KEYS)
    assert proc.returncode == 1, proc.stderr
    assert first_line(proc.stderr).startswith(f"{ERROR}connection error"), proc.stderr
    assert "Connection refused" in first_line(proc.stderr)
    assert proc.stderr.count(f"127.0.0.1:{closed_port}") == 1, proc.stderr
    assert proc.stderr.index("Connection refused") < proc.stderr.index(api)
    assert f"source '{kind}'" in proc.stderr and RESUME in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_offline_hub_exits_1_naming_the_hub_and_the_way_out(tmp_path: Path) -> None:
    recipe = recipe_for(tmp_path, 'kind = "hf"\ndataset = "Spawning/PD12M"')
    proc = run_cli("build", str(recipe), "--out", str(tmp_path / "out"), "--no-progress",
                   env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                        "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 1, proc.stderr
    line = first_line(proc.stderr)
    assert line.startswith(f"{ERROR}cannot reach the Hugging Face hub: offline mode"), line
    assert "HF_HUB_OFFLINE" in line and "path" in line
    assert proc.stderr.count("http://127.0.0.1:9/datasets/Spawning/PD12M") == 1
    assert RESUME in proc.stderr and "Traceback" not in proc.stderr


def test_an_api_refusing_the_request_is_for_the_recipe_to_fix_exit_2(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request("/api/v1/artworks/search").respond_with_json(
        {"error": "Invalid number of result to return"}, status=403)
    recipe = recipe_for(tmp_path, f'kind = "aic"\napi = "{httpserver.url_for("/api/v1")}"')
    proc = run_cli("build", str(recipe), "--out", str(tmp_path / "out"), "--no-progress")
    assert proc.returncode == 2, proc.stderr
    assert first_line(proc.stderr).startswith(f"{ERROR}HTTP 403: the API refused"), proc.stderr
    assert proc.stderr.count(httpserver.url_for("/api/v1/artworks/search")) == 1
    assert str(recipe.resolve()) in proc.stderr


def test_an_api_still_answering_429_after_retries_is_a_failure_to_resume_not_a_recipe_error(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request("/v1/images/").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "0"})
    recipe = recipe_for(tmp_path, f'kind = "openverse"\napi = "{httpserver.url_for("/v1")}"\n'
                                  'query = "lighthouse"')
    proc = run_cli("build", str(recipe), "--out", str(tmp_path / "out"), "--no-progress")
    assert proc.returncode == 1, proc.stderr
    assert first_line(proc.stderr).startswith(f"{ERROR}HTTP 429"), proc.stderr
    assert RESUME in proc.stderr


def test_a_fetch_error_names_the_cause_before_the_url_and_the_url_once(
        closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}/api/v1/artworks/search?" + "&".join(
        f"fields{i}=id,title,artist_display,image_id" for i in range(10))
    with Fetcher(FAST_FETCH) as fetcher, pytest.raises(FetchError) as info:
        fetcher.get_json(url)
    message = str(info.value)
    assert message.count(url) == 1 and message.endswith(url)
    assert message.startswith("connection error") and "Connection refused" in info.value.cause
    assert url not in info.value.cause


def test_the_cause_of_an_unresolvable_host_does_not_repeat_the_url() -> None:
    url = "https://api.artic.edu/api/v1/artworks/search?fields=id,title&page=1&limit=100"
    assert failure_cause(f"cannot resolve host of {url}", url) == "cannot resolve host"
    assert failure_cause(f"connect timeout for {url} (after 4 attempts)", url) == (
        "connect timeout (after 4 attempts)")


@pytest.mark.parametrize(("code", "error_type"), [("badvalue", UserError),
                                                  ("internal_api_error_DBQueryError", SourceError)])
def test_a_wikimedia_error_answer_is_the_recipes_to_fix_unless_the_wiki_itself_failed(
        httpserver: HTTPServer, tmp_path: Path, code: str, error_type: type) -> None:
    httpserver.expect_request("/w/api.php").respond_with_json(
        {"error": {"code": code, "info": "Unrecognized value for parameter gcmtype"}})
    source = open_source("wikimedia", tmp_path, api=httpserver.url_for("/w/api.php"),
                         category="Featured pictures")
    with pytest.raises(UserError) as info:
        list(source.candidates(None))
    assert type(info.value) is error_type
    assert str(info.value).startswith(f"the API answered error {code}: Unrecognized value")
    assert str(info.value).count(httpserver.url_for("/w/api.php")) == 1


def test_an_api_failing_mid_pagination_keeps_what_it_handed_out_and_the_rerun_asks_no_page_again(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    """"Everything decided so far is kept", said the error, but the ledger was empty: the
    candidates of the pages already read (in flight, up to 64, and up to 256 decisions since
    the last commit) were thrown away, and the rerun read those pages and downloaded those
    images again. Now they are decided and committed before the build stops."""
    images = serve_images(httpserver, 6)
    results = [openverse_result(i + 1, images[i], "cc0", "1.0") for i in range(6)]
    down = {"page 3": True}

    def search(request: Request) -> Response:
        page, size = int(request.args["page"]), int(request.args["page_size"])
        if page == 3 and down["page 3"]:
            return Response("<html>busy</html>", status=503)
        body = {"result_count": 6, "page_count": 3, "page_size": size, "page": page,
                "results": results[(page - 1) * size:page * size]}
        return Response(json.dumps(body), content_type="application/json")

    httpserver.expect_request("/v1/images/").respond_with_handler(search)
    recipe = recipe_for(tmp_path, f'kind = "openverse"\napi = "{httpserver.url_for("/v1")}"\n'
                                  'query = "lighthouse"\npage_size = 2')
    out = tmp_path / "out"
    proc = run_cli("build", str(recipe), "--out", str(out), "--no-progress")
    assert proc.returncode == 1, proc.stderr
    assert first_line(proc.stderr).startswith(f"{ERROR}HTTP 503"), proc.stderr
    assert proc.stderr.count(RESUME) == 1 and "fix this" not in proc.stderr, proc.stderr
    kept = sqlite3.connect(out / "ledger.sqlite")
    try:
        decided = kept.execute("SELECT seq, status FROM candidates ORDER BY seq").fetchall()
    finally:
        kept.close()
    assert decided == [(n, "accepted") for n in range(4)]

    down["page 3"] = False
    again = run_cli("build", str(recipe), "--out", str(out), "--no-progress")
    assert again.returncode == 0, again.stderr
    assert "6 candidates" not in again.stdout and "2 accepted" in again.stdout
    pages = [r.args["page"] for r, _ in httpserver.log if r.path == "/v1/images/"]
    assert pages.count("1") == 1 and pages.count("2") == 1  # not read again
    for url in images:
        path = url.split(str(httpserver.port), 1)[1]
        assert [r.path for r, _ in httpserver.log].count(path) == 1  # nor downloaded again
    assert len(ledger_rows(out)) == 6
    verify = run_cli("verify", str(out))
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_mediawiki_answering_formatversion_1_stops_the_build_naming_it(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    """A MediaWiki older than 1.25 ignores formatversion=2 and keys `query.pages` by page id:
    iterated as the list it should be, its keys were taken for pages, a traceback."""
    httpserver.expect_request("/w/api.php").respond_with_json({"batchcomplete": "", "query": {
        "pages": {"17": {"pageid": 17, "ns": 6, "title": "File:A.jpg", "imageinfo": [
            {"url": "https://upload.example/a.jpg", "extmetadata": {}}]}}}})
    source = open_source("wikimedia", tmp_path, api=httpserver.url_for("/w/api.php"),
                         category="Featured pictures")
    with pytest.raises(SourceError, match=r"^the answer's query.pages is a JSON object, not "
                       r"the list of page objects formatversion=2 gives \(a MediaWiki older "
                       r"than 1.25\?\); source 'wikimedia' stopped at"):
        list(source.candidates(None))


@pytest.mark.parametrize(("kind", "keys", "answer"), [
    ("aic", {"api": "/api/v1", "query": "x"},
     {"pagination": "none", "config": "none", "data": [{"id": 1, "title": "A"}]}),
    ("cleveland", {"api": "/api", "query": "x"},
     {"info": "none", "data": [{"id": 1, "title": "A"}]}),
])
def test_an_api_page_s_paging_fields_of_another_shape_are_read_as_absent(
        httpserver: HTTPServer, tmp_path: Path, kind: str, keys: dict[str, str],
        answer: dict) -> None:
    """A string where the AIC's `config` / `pagination` or Cleveland's `info` object belongs
    was an AttributeError's traceback; the records beside them are read as any others."""
    def page(request: Request) -> Response:  # the record on the first page, then none
        first = request.args.get("page", "1") == "1" and request.args.get("skip", "0") == "0"
        return Response(json.dumps(answer if first else {**answer, "data": []}),
                        content_type="application/json")

    httpserver.expect_request(re.compile(".*")).respond_with_handler(page)
    source = open_source(kind, tmp_path, **{**keys, "api": httpserver.url_for(keys["api"])})
    assert [c.source_id for c in source.candidates(None)] == ["1"]
