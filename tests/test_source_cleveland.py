"""The `cleveland` source against a local Cleveland Museum of Art Open Access API."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from builder.licensing import decide, load_policy
from builder.records import Reason, Rejection
from builder.sources._museum import SourceError
from builder.sources.cleveland import ClevelandSource, Config
from tests.api_support import ApiServer, context, fixture, ledger, recipe_text, serve_image
from tests.conftest import run_cli, write_recipe

PAGE = 2
# id -> (share_license_status or None, expected reason); 7 records -> pages 2, 2, 2, 1
ARTWORKS: dict[int, tuple[str | None, str | None]] = {
    201: ("CC0", None),
    202: ("Copyrighted", "license_not_allowed"),
    203: (None, "license_missing"),
    204: ("CC0", None),
    205: ("CC0", None),
    206: ("CC0", None),
    207: ("CC0", None),
}


class FakeCleveland(ApiServer):
    def __init__(self, httpserver: HTTPServer) -> None:
        template = fixture("cleveland/artwork.json")
        self.items = []
        for artwork_id, (status, _) in ARTWORKS.items():
            item = copy.deepcopy(template)
            item["id"], item["share_license_status"] = artwork_id, status
            item["url"] = f"https://clevelandart.org/art/{artwork_id}"
            for size in ("web", "print"):
                item["images"][size]["url"], _ = serve_image(
                    httpserver, f"/cdn/{artwork_id}_{size}.jpg",
                    artwork_id * (2 if size == "print" else 1))
            if status is None:
                del item["share_license_status"]
            self.items.append(item)
        super().__init__(httpserver, "/api/artworks/", self._answer)

    def _answer(self, args: dict[str, str], path: str) -> Any:
        skip, limit = int(args.get("skip", 0)), int(args.get("limit", 1000))
        return {"info": {"total": len(self.items), "parameters": args},
                "data": self.items[skip:skip + limit]}


@pytest.fixture
def cma(httpserver: HTTPServer) -> FakeCleveland:
    return FakeCleveland(httpserver)


def source(cma: FakeCleveland, tmp_path: Path, **config: Any) -> ClevelandSource:
    api = cma.httpserver.url_for("/api")
    cfg = Config(api=api, page_size=PAGE, **config).check(file="r.toml", base=tmp_path,
                                                         where="sources[0]")
    return ClevelandSource("cleveland", cfg, context(tmp_path))


def test_pages_with_cc0_has_image_limit_and_skip(cma: FakeCleveland, tmp_path: Path) -> None:
    cands = list(source(cma, tmp_path, type="Painting").candidates(None))
    assert [c.source_id for c in cands] == [str(i) for i in ARTWORKS]
    sent = [args for _, args, _ in cma.requests]
    assert [a["skip"] for a in sent] == ["0", "2", "4", "6"]
    assert all(a["cc0"] == "1" and a["has_image"] == "1" and a["limit"] == "2"
               and a["type"] == "Painting" for a in sent)


def test_every_record_is_judged_by_its_own_licence_status(cma: FakeCleveland,
                                                           tmp_path: Path) -> None:
    first, copyrighted, unstated, *_ = source(cma, tmp_path).candidates(None)
    policy = load_policy("commercial")
    assert decide(first.evidence, policy).spdx == "CC0-1.0"  # type: ignore[union-attr]
    refused = decide(copyrighted.evidence, policy)
    assert isinstance(refused, Rejection) and refused.reason is Reason.LICENSE_NOT_ALLOWED
    missing = decide(unstated.evidence, policy)
    assert isinstance(missing, Rejection) and missing.reason is Reason.LICENSE_MISSING
    assert first.creator == "Frederic Edwin Church (American, 1826–1900)"
    assert first.landing_url == "https://clevelandart.org/art/201"
    assert first.title == "Twilight in the Wilderness"
    assert first.credit == "Mr. and Mrs. William H. Marlatt Fund"
    assert first.caption == "Church painted this dramatic sunset in 1860, on the eve of the " \
                            "Civil War."
    assert first.url.endswith("/cdn/201_web.jpg")


def test_print_size_is_used_when_the_recipe_asks(cma: FakeCleveland, tmp_path: Path) -> None:
    first = next(iter(source(cma, tmp_path, image_size="print").candidates(None)))
    assert first.url.endswith("/cdn/201_print.jpg")


def test_resume_mid_page_does_not_ask_for_earlier_pages(cma: FakeCleveland,
                                                        tmp_path: Path) -> None:
    state = list(source(cma, tmp_path).candidates(None))[4].resume
    assert state == {"skip": 4, "index": 1, "count": 5}
    cma.requests.clear()
    rest = list(source(cma, tmp_path).candidates(state))
    assert [c.source_id for c in rest] == ["206", "207"]
    assert [a["skip"] for _, a, _ in cma.requests] == ["4", "6"]


def test_429_500_and_malformed_json_are_retried(cma: FakeCleveland, tmp_path: Path) -> None:
    cma.fail((429, "", {"Retry-After": "1"}), (500, "", {}), (200, '{"data": [', {}))
    assert len(list(source(cma, tmp_path).candidates(None))) == len(ARTWORKS)


def test_an_api_that_keeps_failing_stops_with_a_clear_error(cma: FakeCleveland,
                                                            tmp_path: Path) -> None:
    cma.fail(*[(500, "", {})] * 10)
    with pytest.raises(SourceError, match=r"^HTTP 500; source 'cleveland' stopped at\n.*skip=0"):
        list(source(cma, tmp_path).candidates(None))


def test_build_puts_every_returned_record_in_the_ledger(cma: FakeCleveland,
                                                        tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "recipe.toml", recipe_text("cleveland-test", f"""
kind = "cleveland"
api = "{cma.httpserver.url_for('/api')}"
page_size = 3
"""))
    out = tmp_path / "out"
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    rows = ledger(out)
    assert set(rows) == {str(i) for i in ARTWORKS}
    for artwork_id, (_, reason) in ARTWORKS.items():
        assert rows[str(artwork_id)]["reason"] == reason, rows[str(artwork_id)]["detail"]


def test_an_empty_page_the_count_says_is_not_the_last_is_asked_again(
        cma: FakeCleveland, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The page at skip=2 came back empty once (an index hiccup): the source ended there,
    silently, and the build called itself complete with two of eight artworks."""
    answer, hiccups = cma.answer, ["2"]

    def hiccup(args: dict[str, str], path: str) -> Any:
        body = answer(args, path)
        if args.get("skip") in hiccups:
            hiccups.remove(args["skip"])
            body["data"] = []
        return body

    cma.answer = hiccup
    cands = list(source(cma, tmp_path).candidates(None))
    assert [c.source_id for c in cands] == [str(i) for i in ARTWORKS]
    assert [a["skip"] for _, a, _ in cma.requests] == ["0", "2", "2", "4", "6"]
    assert "taken as the end" not in caplog.text


def test_an_empty_page_twice_ends_the_source_saying_so(
        cma: FakeCleveland, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    answer = cma.answer

    def count_too_high(args: dict[str, str], path: str) -> Any:
        body = answer(args, path)
        body["info"]["total"] = 500
        return body

    cma.answer = count_too_high
    cands = list(source(cma, tmp_path).candidates(None))
    assert len(cands) == len(ARTWORKS)
    assert [a["skip"] for _, a, _ in cma.requests] == ["0", "2", "4", "6", "7", "7"]
    assert "page at skip=7 was empty twice though the API counts 500" in caplog.text
