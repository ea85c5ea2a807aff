"""The `wikimedia` source against a local MediaWiki action API on 127.0.0.1."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from builder.licensing import decide, load_policy
from builder.records import Reason, Rejection
from builder.sources.wikimedia import Config, WikimediaSource
from tests.api_support import ApiServer, context, fixture, ledger, recipe_text, serve_image
from tests.conftest import run_cli, write_recipe

BATCH = 3
# (licence fields, what the gate should say) per file; 7 files -> pages of 3, 3, 1.
LICENCES: list[tuple[dict[str, str], str | None]] = [
    ({"LicenseShortName": "CC BY-SA 4.0", "License": "cc-by-sa-4.0",
      "UsageTerms": "Creative Commons Attribution-Share Alike 4.0",
      "LicenseUrl": "https://creativecommons.org/licenses/by-sa/4.0"}, None),
    ({"LicenseShortName": "CC BY-NC 2.0", "License": "cc-by-nc-2.0",
      "LicenseUrl": "https://creativecommons.org/licenses/by-nc/2.0"}, "license_not_allowed"),
    ({}, "license_not_allowed"),  # the fixture's Copyrighted=True with no licence field
    ({"LicenseShortName": "Public domain", "License": "pd"}, None),
    ({"LicenseShortName": "CC0", "License": "cc0",
      "LicenseUrl": "http://creativecommons.org/publicdomain/zero/1.0/deed.en"}, None),
    ({"LicenseShortName": "CC BY 4.0", "License": "cc-by-4.0",
      "LicenseUrl": "https://creativecommons.org/licenses/by/4.0"}, None),
    ({"LicenseShortName": "CC BY 4.0", "LicenseUrl": "https://creativecommons.org/licenses/by/4.0"},
     "corrupt_image"),  # the API's sha1 does not match the bytes served
]


def make_page(httpserver: HTTPServer, i: int, licence: dict[str, str]) -> dict[str, Any]:
    """File page `1000 + i` whose image is served at /upload/i.jpg, with these licence fields."""
    page = copy.deepcopy(fixture("wikimedia/page.json"))
    page["pageid"] = 1000 + i
    page["title"] = f"File:Test {i}.jpg"
    info = page["imageinfo"][0]
    info["url"], info["sha1"] = serve_image(httpserver, f"/upload/{i}.jpg", seed=100 + i)
    set_licence(page, licence)
    return page


def set_licence(page: dict[str, Any], licence: dict[str, str]) -> None:
    """Replace the page's licence fields (a relicensing on Commons)."""
    meta = page["imageinfo"][0]["extmetadata"]
    for key in ("LicenseShortName", "UsageTerms", "LicenseUrl", "License"):
        meta.pop(key, None)
    for key, value in licence.items():
        meta[key] = {"value": value, "source": "commons-desc-page"}


def make_pages(httpserver: HTTPServer) -> list[dict[str, Any]]:
    pages = [make_page(httpserver, i, licence) for i, (licence, _) in enumerate(LICENCES)]
    pages[-1]["imageinfo"][0]["sha1"] = "f" * 40
    pages[3]["imageinfo"][0]["extmetadata"]["Restrictions"] = {
        "value": "trademarked", "source": "commons-desc-page"}
    return pages


class FakeCommons(ApiServer):
    """generator=categorymembers with gcmcontinue paging, as api.php answers it; and
    `prop=imageinfo&pageids=...` (what `cleanset recheck` asks), where a page id in
    `deleted` answers `missing` as for a deleted file."""

    def __init__(self, httpserver: HTTPServer,
                 pages: list[dict[str, Any]] | None = None) -> None:
        self.pages = make_pages(httpserver) if pages is None else pages
        self.deleted: set[int] = set()
        # answer -> what is sent instead: a short or broken imageinfo answer, for a test
        self.degrade: Callable[[dict[str, Any]], Any] | None = None
        super().__init__(httpserver, "/w/api.php", self._answer)

    def _answer(self, args: dict[str, str], path: str) -> Any:
        if "pageids" in args:
            return self._imageinfo(args)
        start = int(args.get("gcmcontinue", "file|0").split("|")[1])
        limit = int(args["gcmlimit"])
        body: dict[str, Any] = {"batchcomplete": True,
                                "query": {"pages": self.pages[start:start + limit]}}
        if start + limit < len(self.pages):
            body["continue"] = {"gcmcontinue": f"file|{start + limit}",
                                "continue": "gcmcontinue||"}
        return body

    def _imageinfo(self, args: dict[str, str]) -> Any:
        by_id = {p["pageid"]: p for p in self.pages if p["pageid"] not in self.deleted}
        wanted = [int(i) for i in args["pageids"].split("|")]
        pages = [by_id.get(i, {"pageid": i, "missing": True}) for i in wanted]
        answer = {"batchcomplete": True, "query": {"pages": pages}}
        return answer if self.degrade is None else self.degrade(copy.deepcopy(answer))


@pytest.fixture
def commons(httpserver: HTTPServer) -> FakeCommons:
    return FakeCommons(httpserver)


def source(commons: FakeCommons, tmp_path: Path, **config: Any) -> WikimediaSource:
    cfg = Config(category="Test files", api=commons.url, batch=BATCH, **config)
    return WikimediaSource("wikimedia", cfg.check(file="r.toml", base=tmp_path,
                                                  where="sources[0]"), context(tmp_path))


def test_category_pages_follow_mediawiki_continuation_exactly(
        commons: FakeCommons, tmp_path: Path) -> None:
    cands = list(source(commons, tmp_path).candidates(None))
    assert [c.source_id for c in cands] == [str(1000 + i) for i in range(len(LICENCES))]
    sent = [args for _, args, _ in commons.requests]
    assert len(sent) == 3
    for args in sent:
        assert args["action"] == "query" and args["format"] == "json"
        assert args["formatversion"] == "2" and args["maxlag"] == "5"
        assert args["generator"] == "categorymembers" and args["gcmtype"] == "file"
        assert args["gcmtitle"] == "Category:Test files" and args["gcmlimit"] == "3"
        assert args["prop"] == "imageinfo"
        assert args["iiprop"] == "url|sha1|size|mime|extmetadata"
    assert "gcmcontinue" not in sent[0] and "continue" not in sent[0]
    assert (sent[1]["gcmcontinue"], sent[1]["continue"]) == ("file|3", "gcmcontinue||")
    assert sent[2]["gcmcontinue"] == "file|6"
    assert cands[-1].resume == {"done": True, "count": 7}


def test_the_credit_the_licensor_asks_for_is_the_credit(
        commons: FakeCommons, tmp_path: Path) -> None:
    """Commons' `Attribution` (a licence template's attribution parameter, the credit the
    licensor requires) was never asked for: the credit was `Credit`, most often "Own work"."""
    meta = commons.pages[0]["imageinfo"][0]["extmetadata"]
    meta["Attribution"] = {"value": "Photo: <b>Example Photographer</b> / CC BY-SA 4.0",
                           "source": "commons-desc-page"}
    first, second, *_ = source(commons, tmp_path).candidates(None)
    assert first.credit == "Photo: Example Photographer / CC BY-SA 4.0"
    assert second.credit == "Own work"  # no Attribution: Credit, as before
    sent = [args for _, args, _ in commons.requests]
    assert "Attribution" in sent[0]["iiextmetadatafilter"].split("|")


def test_extmetadata_becomes_evidence_attribution_and_expected_sha1(
        commons: FakeCommons, tmp_path: Path) -> None:
    first, _, missing, pd, *_ = source(commons, tmp_path).candidates(None)
    fields = {e.field: e.value for e in first.evidence}
    assert fields["wikimedia:LicenseShortName"] == "CC BY-SA 4.0"
    assert fields["wikimedia:UsageTerms"] == "Creative Commons Attribution-Share Alike 4.0"
    assert fields["wikimedia:AttributionRequired"] == "true"
    assert first.creator == "Example Photographer"
    assert first.creator_url == "https://commons.wikimedia.org/wiki/User:Example_Photographer"
    assert first.credit == "Own work"
    assert first.title == "Lighthouse at dawn"
    assert first.caption == "A lighthouse on the coast of Brittany at dawn."
    assert first.landing_url == "https://commons.wikimedia.org/wiki/File:Lighthouse_at_dawn.jpg"
    assert first.expected_sha1 == commons.pages[0]["imageinfo"][0]["sha1"]
    policy = load_policy("commercial")
    assert decide(first.evidence, policy).spdx == "CC-BY-SA-4.0"  # type: ignore[union-attr]
    refused = decide(missing.evidence, policy)  # Copyrighted=True and no licence field
    assert isinstance(refused, Rejection) and refused.reason is Reason.LICENSE_NOT_ALLOWED
    assert refused.detail.startswith("Copyrighted=True and no licence field")
    assert ("wikimedia:Restrictions", "trademarked") in pd.extra


def test_resume_mid_batch_asks_only_for_that_batch_and_the_next(
        commons: FakeCommons, tmp_path: Path) -> None:
    everything = list(source(commons, tmp_path).candidates(None))
    commons.requests.clear()
    state = everything[4].resume  # second batch, one page of it still to go
    assert state == {"continue": {"gcmcontinue": "file|3", "continue": "gcmcontinue||"},
                     "index": 2, "count": 5}
    rest = list(source(commons, tmp_path).candidates(state))
    assert [c.source_id for c in rest] == ["1005", "1006"]
    assert [args.get("gcmcontinue") for _, args, _ in commons.requests] == ["file|3", "file|6"]


def test_resume_after_a_batch_end_starts_with_the_next_batch(
        commons: FakeCommons, tmp_path: Path) -> None:
    state = list(source(commons, tmp_path).candidates(None))[2].resume
    commons.requests.clear()
    rest = list(source(commons, tmp_path).candidates(state))
    assert [c.source_id for c in rest] == ["1003", "1004", "1005", "1006"]
    assert "file|0" not in [a.get("gcmcontinue", "file|0") for _, a, _ in commons.requests]


def test_429_500_malformed_json_and_maxlag_are_retried(
        commons: FakeCommons, tmp_path: Path) -> None:
    commons.fail((429, "slow down", {"Retry-After": "1"}), (500, "oops", {}),
                 (200, '{"batchcomplete": tr', {}),
                 (200, '{"error": {"code": "maxlag", "info": "Waiting for db1: 7 seconds '
                       'lagged", "lag": 7}}', {"Retry-After": "0"}))
    cands = list(source(commons, tmp_path).candidates(None))
    assert len(cands) == len(LICENCES)
    assert len(commons.requests) == 3 + 4


def test_an_api_that_keeps_failing_stops_with_a_clear_error(
        commons: FakeCommons, tmp_path: Path) -> None:
    from builder.sources._museum import SourceError

    commons.fail(*[(500, "down", {})] * 10)
    with pytest.raises(SourceError, match=r"^HTTP 500; source 'wikimedia' stopped at\n.*\n.*resume"):
        list(source(commons, tmp_path).candidates(None))


def test_search_and_time_window_use_their_generators(httpserver: HTTPServer,
                                                     tmp_path: Path) -> None:
    seen: list[dict[str, str]] = []

    def answer(args: dict[str, str], path: str) -> Any:
        seen.append(args)
        return {"batchcomplete": True, "query": {"pages": []}}

    api = ApiServer(httpserver, "/w/api.php", answer)
    ctx = context(tmp_path)
    list(WikimediaSource("w", Config(search="lighthouse", api=api.url), ctx).candidates(None))
    list(WikimediaSource("w", Config(start="2024-01-01T00:00:00Z", end="2024-01-02T00:00:00Z",
                                     api=api.url), ctx).candidates(None))
    assert seen[0]["generator"] == "search" and seen[0]["gsrnamespace"] == "6"
    assert seen[0]["gsrsearch"] == "lighthouse"
    assert seen[1]["generator"] == "allimages" and seen[1]["gaisort"] == "timestamp"
    assert (seen[1]["gaistart"], seen[1]["gaiend"]) == ("2024-01-01T00:00:00Z",
                                                       "2024-01-02T00:00:00Z")


def test_recipe_needs_exactly_one_way_to_choose_files(tmp_path: Path) -> None:
    from builder.errors import UserError

    with pytest.raises(UserError, match="exactly one of category, search or start"):
        Config(category="A", search="b").check(file="r.toml", base=tmp_path, where="sources[0]")


def test_build_puts_every_listed_file_in_the_ledger(commons: FakeCommons,
                                                    tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "recipe.toml", recipe_text("commons-test", f"""
kind = "wikimedia"
api = "{commons.url}"
category = "Test files"
batch = {BATCH}
"""))
    out = tmp_path / "out"
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    rows = ledger(out)
    assert set(rows) == {str(1000 + i) for i in range(len(LICENCES))}
    for i, (_, reason) in enumerate(LICENCES):
        row = rows[str(1000 + i)]
        assert row["reason"] == reason, (i, row["detail"])
        assert row["status"] == ("accepted" if reason is None else "rejected")


@pytest.mark.parametrize("short_name", ["استعمال عادل", "Fair use", "Non-free media"])
def test_a_non_free_commons_file_is_refused_as_non_free_whatever_its_licence_name(
        commons: FakeCommons, tmp_path: Path, short_name: str) -> None:
    meta = commons.pages[0]["imageinfo"][0]["extmetadata"]
    for key in ("UsageTerms", "LicenseUrl", "License"):
        meta.pop(key, None)
    meta["LicenseShortName"] = {"value": short_name, "source": "commons-desc-page"}
    meta["NonFree"] = {"value": "true", "source": "commons-desc-page"}
    first = next(iter(source(commons, tmp_path).candidates(None)))
    refused = decide(first.evidence, load_policy("open-research"))
    assert isinstance(refused, Rejection) and refused.reason == Reason.LICENSE_NOT_ALLOWED
    assert refused.detail == "NonFree=true (fair use / non-free media)"



# Wikimedia's 2026 limits for anonymous traffic, one shape each, as the servers send them.
RATE_LIMITS = {
    "request-limit-reached": (429, '{"httpCode": 429, "httpReason": "Too Many Requests", '
                                   '"errorKey": "request-limit-reached"}'),
    "ratelimited": (200, '{"error": {"code": "ratelimited", "info": "You\'ve exceeded your '
                         'rate limit. Please wait some time and try again."}}'),
    "maxlag": (200, '{"error": {"code": "maxlag", "info": "Waiting for db1: 7 seconds lagged", '
                    '"lag": 7}}'),
}


@pytest.mark.parametrize("shape", sorted(RATE_LIMITS))
def test_a_rate_limit_is_waited_out_counted_in_the_summary_and_rejects_no_file(
        commons: FakeCommons, tmp_path: Path, shape: str) -> None:
    status, body = RATE_LIMITS[shape]
    # Four in a row: more than the recipe's retries (1) allow for ordinary failures.
    commons.fail(*[(status, body, {"Retry-After": "0"})] * 4)
    recipe = write_recipe(tmp_path / "recipe.toml", recipe_text("commons-test", f"""
kind = "wikimedia"
api = "{commons.url}"
category = "Test files"
batch = {BATCH}
"""))
    out = tmp_path / "out"
    proc = run_cli("build", str(recipe), "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert f"source wikimedia: waited out 4 rate-limit answers ({shape} 4)" in (
        proc.stdout + proc.stderr)
    rows = ledger(out)
    assert {sid: row["reason"] for sid, row in rows.items()} == {
        str(1000 + i): reason for i, (_, reason) in enumerate(LICENCES)}
    assert len(commons.requests) == 4 + 3
