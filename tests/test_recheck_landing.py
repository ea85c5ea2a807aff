"""`cleanset recheck` reads each sample's landing page again when the recipe has
`[optout] landing_page = true`, as a build does: a page that now carries
`<meta name="tdm-reservation" content="1">` or a robots `noai` is an opt-out found after
build day; a page the network keeps from us is unreachable, never an opt-out."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Request, Response

from tests.conftest import run_cli, table_recipe
from tests.test_transient import serve_host

CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"
PLAIN = "<html><head><title>A photograph</title></head><body></body></html>"
RESERVED = '<html><head><meta name="tdm-reservation" content="1"></head></html>'
NOAI = '<html><head><meta name="robots" content="index; noai"></head></html>'


class Pages:
    """Landing pages on their own port: /a, /b, /c, each answering what `html` says."""

    def __init__(self) -> None:
        self.server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
        self.server.start()
        self.html = dict.fromkeys("abc", PLAIN)
        self.asked: list[str] = []
        self.server.expect_request(re.compile(".*")).respond_with_handler(self._handle)

    def _handle(self, request: Request) -> Response:
        self.asked.append(request.path)
        name = request.path.strip("/")
        if name not in self.html:
            return Response("not found", status=404)
        return Response(self.html[name], content_type="text/html")

    def stop(self) -> None:
        if self.server.is_running():
            self.server.stop()


@pytest.fixture
def pages() -> Pages:
    served = Pages()
    yield served
    served.stop()


def build(tmp_path: Path, httpserver: HTTPServer, pages: Pages, *, landing: bool) -> Path:
    images = serve_host(httpserver, list("abc"))
    rows = [{"id": name, "url": url, "license": CC0,
             "landing_url": pages.server.url_for(f"/{name}")}
            for name, url in zip("abc", images, strict=True)]
    recipe = table_recipe(tmp_path, rows, 'name = "recheck-landing"', after=f"""
retries = 0
timeout_s = 5
[optout]
c2pa = false
landing_page = {str(landing).lower()}""")
    out = tmp_path / "out"
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    return out


def by_source_id(out: Path, stdout: str) -> dict[str, dict]:
    with sqlite3.connect(f"file:{out / 'ledger.sqlite'}?mode=ro", uri=True) as db:
        ids = dict(db.execute("SELECT key, source_id FROM samples"))
    return {ids[v["key"]]: v for v in map(json.loads, stdout.splitlines())}


def test_a_landing_page_that_now_reserves_or_says_noai_is_an_opt_out_found_by_the_recheck(
        tmp_path: Path, httpserver: HTTPServer, pages: Pages) -> None:
    out = build(tmp_path, httpserver, pages, landing=True)
    assert sorted(pages.asked) == ["/a", "/b", "/c"]
    pages.asked.clear()
    pages.html.update(a=RESERVED, b=NOAI)

    proc = run_cli("recheck", str(out), "--no-progress", "--json")
    assert proc.returncode == 3, proc.stderr
    found = by_source_id(out, proc.stdout)
    assert {k: (v["outcome"], v["refuse"]) for k, v in found.items()} == {
        "a": ("optout", True), "b": ("optout", True), "c": ("unchanged", False)}
    assert found["a"]["detail"].startswith('landing-page: <meta name="tdm-reservation" '
                                           'content="1"> on the landing page ')
    assert "(noai)" in found["b"]["detail"]
    assert sorted(pages.asked) == ["/a", "/b", "/c"]  # each page read once
    assert "3 host files and 3 landing pages read" in proc.stderr

    # The page that refused is kept with the recheck's evidence.
    shown = run_cli("evidence", str(out), found["a"]["key"])
    assert shown.returncode == 0, shown.stderr
    assert pages.server.url_for("/a") in shown.stdout

    # --apply takes them down; the rebuilt papers no longer hold them.
    applied = run_cli("recheck", str(out), "--no-progress", "--apply", "--reason", "monthly")
    assert applied.returncode == 0, applied.stderr
    assert "takedown: 2 sample(s) removed" in applied.stdout
    with sqlite3.connect(f"file:{out / 'ledger.sqlite'}?mode=ro", uri=True) as db:
        assert [s for (s,) in db.execute("SELECT source_id FROM samples")] == ["c"]
    assert run_cli("verify", str(out)).returncode == 0


def test_a_landing_page_the_network_keeps_from_us_is_unreachable_never_an_opt_out(
        tmp_path: Path, httpserver: HTTPServer, pages: Pages) -> None:
    out = build(tmp_path, httpserver, pages, landing=True)
    pages.stop()  # connection refused: nothing is known about the reservation
    proc = run_cli("recheck", str(out), "--no-progress", "--json")
    assert proc.returncode == 4, proc.stderr
    found = by_source_id(out, proc.stdout)
    assert {k: (v["outcome"], v["refuse"]) for k, v in found.items()} == {
        k: ("unreachable", False) for k in "abc"}
    assert "landing-page: unreachable" in found["a"]["detail"]


def test_a_page_answering_404_says_nothing_as_in_a_build(
        tmp_path: Path, httpserver: HTTPServer, pages: Pages) -> None:
    out = build(tmp_path, httpserver, pages, landing=True)
    del pages.html["a"]
    proc = run_cli("recheck", str(out), "--no-progress", "--json")
    assert proc.returncode == 0, proc.stderr
    assert {v["outcome"] for v in by_source_id(out, proc.stdout).values()} == {"unchanged"}


def test_without_landing_page_in_the_recipe_no_page_is_asked(
        tmp_path: Path, httpserver: HTTPServer, pages: Pages) -> None:
    out = build(tmp_path, httpserver, pages, landing=False)
    pages.html.update(a=RESERVED)
    proc = run_cli("recheck", str(out), "--no-progress", "--json")
    assert proc.returncode == 0, proc.stderr
    assert pages.asked == []
