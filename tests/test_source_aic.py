"""The `aic` source against a local Art Institute of Chicago API on 127.0.0.1."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from builder.licensing import decide, load_policy
from builder.records import Reason, Rejection
from builder.sources._museum import SourceError
from builder.sources.aic import AicSource, Config
from tests.api_support import ApiServer, context, fixture, ledger, recipe_text
from tests.conftest import make_image, run_cli, write_recipe

PAGE = 2
# artwork id -> (is_public_domain or None, has image, expected reason); 7 -> pages 2, 2, 2, 1
ARTWORKS: dict[int, tuple[bool | None, bool, str | None]] = {
    101: (True, True, None),
    102: (False, True, "license_not_allowed"),
    103: (None, True, "license_missing"),
    104: (True, True, None),
    105: (True, False, "http_error"),
    106: (True, True, None),
    107: (True, True, None),
}


class FakeAic(ApiServer):
    def __init__(self, httpserver: HTTPServer) -> None:
        template = fixture("aic/artwork.json")
        self.envelope = fixture("aic/envelope.json")
        self.envelope["config"]["iiif_url"] = httpserver.url_for("/iiif/2")
        self.items = []
        for artwork_id, (flag, has_image, _) in ARTWORKS.items():
            item = copy.deepcopy(template)
            item["id"], item["is_public_domain"] = artwork_id, flag
            item["image_id"] = f"img-{artwork_id}" if has_image else None
            if flag is None:
                del item["is_public_domain"]
            httpserver.expect_request(f"/iiif/2/img-{artwork_id}/full/843,/0/default.jpg") \
                .respond_with_data(make_image(artwork_id, (64, 48)), content_type="image/jpeg")
            self.items.append(item)
        super().__init__(httpserver, "/api/v1", self._answer)

    def _answer(self, args: dict[str, str], path: str) -> Any:
        page, limit = int(args.get("page", 1)), int(args.get("limit", 12))
        body = copy.deepcopy(self.envelope)
        total_pages = math.ceil(len(self.items) / limit)
        body["pagination"] = {"total": len(self.items), "limit": limit,
                              "offset": (page - 1) * limit, "total_pages": total_pages,
                              "current_page": page}
        body["data"] = self.items[(page - 1) * limit:page * limit]
        return body


@pytest.fixture
def aic(httpserver: HTTPServer) -> FakeAic:
    return FakeAic(httpserver)


def source(aic: FakeAic, tmp_path: Path, **config: Any) -> AicSource:
    cfg = Config(api=aic.url, page_size=PAGE, **config).check(file="r.toml", base=tmp_path,
                                                            where="sources[0]")
    return AicSource("aic", cfg, context(tmp_path, per_host_rps=None))


def test_pages_the_public_domain_search_with_the_documented_parameters(
        aic: FakeAic, tmp_path: Path) -> None:
    cands = list(source(aic, tmp_path, query="cats", rps=1.0).candidates(None))
    assert [c.source_id for c in cands] == [str(i) for i in ARTWORKS]
    assert [a["page"] for _, a, _ in aic.requests] == ["1", "2", "3", "4"]
    for path, args, headers in aic.requests:
        assert path == "/api/v1/artworks/search"
        assert args["q"] == "cats" and args["limit"] == "2"
        assert args["query[term][is_public_domain]"] == "true"
        assert "image_id" in args["fields"].split(",")
        assert headers["Aic-User-Agent"].startswith("cleanset-test/0.1 (https://ci.cleanset.test")


def test_listing_without_filters_pages_artworks(aic: FakeAic, tmp_path: Path) -> None:
    list(source(aic, tmp_path, public_domain_only=False).candidates(None))
    assert {p for p, _, _ in aic.requests} == {"/api/v1/artworks"}


def test_image_url_comes_from_the_responses_iiif_base(aic: FakeAic, tmp_path: Path) -> None:
    first, second, third, _, no_image, *_ = source(aic, tmp_path).candidates(None)
    assert first.url == aic.httpserver.url_for("/iiif/2/img-101/full/843,/0/default.jpg")
    assert first.landing_url == "https://www.artic.edu/artworks/101"
    assert first.creator == "Georges Seurat" and first.credit.startswith("Helen Birch")
    assert first.caption.startswith("Large oil painting")
    policy = load_policy("commercial")
    assert decide(first.evidence, policy).spdx == "CC0-1.0"  # type: ignore[union-attr]
    refused = decide(second.evidence, policy)
    assert isinstance(refused, Rejection) and refused.reason is Reason.LICENSE_NOT_ALLOWED
    assert third.evidence == ()
    assert no_image.url == "" and ("aic:problem", "no image_id") in no_image.extra


def test_resume_mid_page_does_not_ask_for_earlier_pages(aic: FakeAic, tmp_path: Path) -> None:
    state = list(source(aic, tmp_path).candidates(None))[2].resume
    assert state == {"page": 2, "index": 1, "count": 3}
    aic.requests.clear()
    rest = list(source(aic, tmp_path).candidates(state))
    assert [c.source_id for c in rest] == ["104", "105", "106", "107"]
    assert [a["page"] for _, a, _ in aic.requests] == ["2", "3", "4"]


def test_429_500_and_malformed_json_are_retried(aic: FakeAic, tmp_path: Path) -> None:
    aic.fail((429, "", {"Retry-After": "1"}), (500, "", {}), (200, "{oops", {}))
    assert len(list(source(aic, tmp_path).candidates(None))) == len(ARTWORKS)


def test_an_api_that_keeps_failing_stops_with_a_clear_error(aic: FakeAic, tmp_path: Path) -> None:
    aic.fail(*[(500, "", {})] * 10)
    with pytest.raises(SourceError, match=r"^HTTP 500; source 'aic' stopped at\n"):
        list(source(aic, tmp_path).candidates(None))


def test_rate_above_the_documented_limit_is_refused(tmp_path: Path) -> None:
    from builder.errors import UserError

    with pytest.raises(UserError, match="60 requests a minute"):
        Config(rps=5.0).check(file="r.toml", base=tmp_path, where="sources[0]")


def test_build_puts_every_returned_artwork_in_the_ledger(aic: FakeAic, tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "recipe.toml", recipe_text("aic-test", f"""
kind = "aic"
api = "{aic.url}"
page_size = 3
"""))
    out = tmp_path / "out"
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    rows = ledger(out)
    assert set(rows) == {str(i) for i in ARTWORKS}
    for artwork_id, (*_, reason) in ARTWORKS.items():
        assert rows[str(artwork_id)]["reason"] == reason, rows[str(artwork_id)]["detail"]


def test_a_work_not_in_the_public_domain_is_refused_in_the_museums_words_quoting_its_notice(
        aic: FakeAic, tmp_path: Path) -> None:
    aic.items[1]["copyright_notice"] = None  # 102, as the API answers for most such works
    aic.items.append({**copy.deepcopy(aic.items[1]), "id": 108,
                      "copyright_notice": "© 2024 Artist Rights Society (ARS), New York"})
    by_id = {c.source_id: c for c in source(aic, tmp_path).candidates(None)}
    policy = load_policy("commercial")
    bare = decide(by_id["102"].evidence, policy)
    assert isinstance(bare, Rejection) and bare.reason == Reason.LICENSE_NOT_ALLOWED
    assert bare.detail == ("the source marks it not public domain (is_public_domain=false) "
                           "and states no open licence")
    noticed = decide(by_id["108"].evidence, policy)
    assert isinstance(noticed, Rejection) and noticed.reason == Reason.LICENSE_NOT_ALLOWED
    assert noticed.detail == (
        "the source marks it not public domain (is_public_domain=false) and states no open "
        "licence; copyright_notice='© 2024 Artist Rights Society (ARS), New York'")


def test_an_empty_page_before_total_pages_is_asked_again_not_taken_as_the_end(
        aic: FakeAic, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Page 2 came back empty once (an index hiccup): the source ended there, silently, and
    the build called itself complete without pages 3 and 4."""
    answer, hiccups = aic.answer, {"2"}

    def hiccup(args: dict[str, str], path: str) -> Any:
        body = answer(args, path)
        if args.get("page") in hiccups:
            hiccups.discard(args["page"])
            body["data"] = []
        return body

    aic.answer = hiccup
    cands = list(source(aic, tmp_path).candidates(None))
    assert [a["page"] for _, a, _ in aic.requests] == ["1", "2", "2", "3", "4"]
    assert [c.source_id for c in cands] == [str(i) for i in ARTWORKS]
    assert "taken as the end" not in caplog.text


def test_empty_pages_in_a_row_before_total_pages_end_the_source_saying_so(
        aic: FakeAic, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    answer = aic.answer

    def count_too_high(args: dict[str, str], path: str) -> Any:
        body = answer(args, path)
        body["pagination"]["total_pages"] = 1000  # while the data ends after page 4
        return body

    aic.answer = count_too_high
    cands = list(source(aic, tmp_path).candidates(None))
    assert len(cands) == len(ARTWORKS)
    # each empty page asked twice; five in a row end it
    assert [a["page"] for _, a, _ in aic.requests] == [
        "1", "2", "3", "4", "5", "5", "6", "6", "7", "7", "8", "8", "9", "9"]
    assert "source aic: pages 5-9 were empty though the API counts more" in caplog.text
