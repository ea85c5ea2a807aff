"""Each source's `rechecker` against a local replay of its API: what it asks (batched where
the API allows), and what it reports today for an item that is there, changed or gone."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Response

from builder.errors import UserError
from builder.records import Evidence
from builder.sources import source_module
from builder.sources._failures import SourceError
from builder.sources.base import GONE, PRESENT, UNREACHABLE, Item, Now
from tests.api_support import ApiServer, context, fixture
from tests.conftest import make_image

KEY = "test-key-0123456789"


def item(key: str, source_id: str, **fields: Any) -> Item:
    base: dict[str, Any] = {"file_url": None, "landing_url": None, "api_url": None,
                            "path": None, "sha1": "0" * 40, "sha256": "0" * 64, "bytes": 100,
                            "etag": None, "last_modified": None}
    return Item(key=key, source_id=source_id, **{**base, **fields})


def open_rechecker(kind: str, tmp_path: Path, **config: Any) -> Any:
    module = source_module(kind, file="recipe.toml", where="sources[0]")
    checked = module.Config(**config).check(file=tmp_path / "recipe.toml", base=tmp_path,
                                            where="sources[0]")
    return module.rechecker(kind, checked, context(tmp_path))


def ask(checker: Any, items: list[Item]) -> dict[str, Now]:
    try:
        return checker.ask(items)
    finally:
        checker.close()


def test_aic_asks_up_to_100_ids_in_one_request_and_an_id_it_no_longer_returns_is_gone(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    artwork = fixture("aic/artwork.json") | {"is_public_domain": False}

    def answer(args: dict[str, str], path: str) -> Any:
        if path == "/api/v1/artworks":
            return {"data": [artwork], "config": {"iiif_url": "https://www.artic.edu/iiif/2"}}
        return Response(json.dumps(AIC_NOT_FOUND), status=404)

    api = ApiServer(httpserver, "/api/v1", answer)
    now = ask(open_rechecker("aic", tmp_path, api=api.url), [
        item("k1", "27992"), item("k2", "404404")])
    (path, args, headers), (alone, _, _) = api.requests
    assert path == "/api/v1/artworks" and args["ids"] == "27992,404404"
    assert alone == "/api/v1/artworks/404404"  # the id the batch left out, asked alone
    assert "Aic-User-Agent" in headers  # as werkzeug spells it
    assert now["k1"].state == PRESENT
    assert now["k1"].evidence == (Evidence("aic:is_public_domain", "false"),)
    assert now["k2"].state == GONE and "HTTP 404" in now["k2"].detail


AIC_NOT_FOUND = {"status": 404, "error": "Not found",
                 "detail": "The item you requested cannot be found."}


@pytest.mark.parametrize(("alone", "state"), [
    ("record", PRESENT), ("404", GONE), ("no record", UNREACHABLE)])
def test_aic_artworks_a_batch_answer_leaves_out_are_asked_alone_and_only_a_404_is_gone(
        httpserver: HTTPServer, tmp_path: Path, alone: str, state: str) -> None:
    """A batch answer that dropped ids (an index being rebuilt, a search backend behind:
    `{"data": []}` for every batch) made every sample `deleted`, refused, and `recheck
    --apply` took the source down. Each id left out is now asked for alone."""
    artwork = fixture("aic/artwork.json")

    def answer(args: dict[str, str], path: str) -> Any:
        if path == "/api/v1/artworks":
            return {"data": [], "config": {"iiif_url": "https://www.artic.edu/iiif/2"}}
        if alone == "record":
            return {"data": artwork, "config": {"iiif_url": "https://www.artic.edu/iiif/2"}}
        if alone == "404":
            return Response(json.dumps(AIC_NOT_FOUND), status=404)
        return {"data": None}

    api = ApiServer(httpserver, "/api/v1", answer)
    now = ask(open_rechecker("aic", tmp_path, api=api.url), [
        item("k1", str(artwork["id"])), item("k2", "27993")])
    assert [p for p, _, _ in api.requests] == [
        "/api/v1/artworks", f"/api/v1/artworks/{artwork['id']}", "/api/v1/artworks/27993"]
    assert now["k1"].state == state, now["k1"]
    if alone == "record":
        assert now["k1"].evidence == (Evidence("aic:is_public_domain", "true"),)
        assert now["k2"].state == UNREACHABLE  # its id is not the record answered
    else:
        assert now["k2"].state == state


@pytest.mark.parametrize(("answered", "outcome", "refuse"), [
    ({}, "unreachable", False),  # the field left out of the answer: nothing is known
    ({"is_public_domain": ""}, "unreachable", False),  # blank: it says nothing either
    ({"is_public_domain": " "}, "unreachable", False),
    ({"is_public_domain": False}, "license_changed", True),  # stated otherwise: a change
    ({"is_public_domain": "no"}, "license_changed", True),  # stated, in no form we know
    ({"is_public_domain": True}, "unchanged", False),
])
def test_an_api_answer_without_a_licence_value_is_unreachable_not_a_licence_change(
        httpserver: HTTPServer, tmp_path: Path, answered: dict, outcome: str,
        refuse: bool) -> None:
    """An AIC answer that left `is_public_domain` out (a partial answer, a field renamed)
    was read as no licence at all: license_changed, refused, and `recheck --apply` would
    have taken every sample of the source down; so was one that gave it blank."""
    from builder.drift import Recorded, judge
    from builder.licensing import load_policy
    from builder.optout.config import OptoutConfig

    artwork = {k: v for k, v in fixture("aic/artwork.json").items()
               if k != "is_public_domain"} | answered
    api = ApiServer(httpserver, "/api/v1", lambda args, path: {
        "data": [artwork], "config": {"iiif_url": "https://www.artic.edu/iiif/2"}})
    sample = item("k1", "27992")
    now = ask(open_rechecker("aic", tmp_path, api=api.url), [sample])["k1"]
    built_from = Recorded(item=sample, source="aic", build=1, license="CC0-1.0",
                          evidence=(Evidence("aic:is_public_domain", "true"),))
    verdict = judge(built_from, now, [], policy=load_policy("commercial"),
                    optout=OptoutConfig())
    assert (verdict.outcome.value, verdict.refuse) == (outcome, refuse), verdict.detail
    if outcome == "unreachable":
        assert "no value for any of the licence fields the build read " \
            "(aic:is_public_domain)" in verdict.detail


def test_a_licence_field_removed_from_a_folder_sidecar_is_still_a_licence_change(
        tmp_path: Path) -> None:
    """A sidecar is the source's whole record: its licence field gone is a licence gone,
    unlike an API answer that leaves a field out."""
    import hashlib
    import json

    from builder.drift import Recorded, judge
    from builder.licensing import load_policy
    from builder.optout.config import OptoutConfig

    folder = tmp_path / "pics"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"bytes")
    (folder / "a.jpg.json").write_text(json.dumps({"creator": "Ada"}), encoding="utf-8")
    sample = item("a", "a.jpg", path="a.jpg", sha256=hashlib.sha256(b"bytes").hexdigest())
    now = ask(open_rechecker("folder", tmp_path, path="pics"), [sample])["a"]
    cc0 = "https://creativecommons.org/publicdomain/zero/1.0/"
    built_from = Recorded(item=sample, source="folder", build=1, license="CC0-1.0",
                          evidence=(Evidence("license", cc0),))
    verdict = judge(built_from, now, [], policy=load_policy("commercial"),
                    optout=OptoutConfig())
    assert (verdict.outcome.value, verdict.refuse) == ("license_changed", True), verdict.detail


# What each per-record API answers to the page its rechecker asks when a record answers 404
# (the Met's departments, the others' first page of one search): the API is there.
API_THERE = {
    "met": {"departments": [{"departmentId": 11, "displayName": "European Paintings"}]},
    "cleveland": {"info": {"total": 1, "parameters": {"limit": 1}},
                  "data": [fixture("cleveland/artwork.json")]},
    "openverse": {"result_count": 1, "page_count": 1, "page_size": 20, "page": 1,
                  "results": [fixture("openverse/result.json")]},
    "smithsonian": {"status": 200, "responseCode": 1,
                    "response": {"rows": [fixture("smithsonian/row.json")], "rowCount": 1}},
}
MOVED_API_PATHS = {"met": "/public/collection/v1", "cleveland": "/api", "openverse": "/v1",
                   "smithsonian": "/openaccess/api/v1.0"}


@pytest.mark.parametrize("probe", ["404", "not the API"])
@pytest.mark.parametrize("kind", sorted(MOVED_API_PATHS))
def test_an_api_that_moved_answering_404_to_everything_stops_the_recheck_not_deletes(
        httpserver: HTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str,
        probe: str) -> None:
    """An API that moved (a new version's path, a retired host answering 404 to every
    request) made every sample of the Met, Cleveland, the Smithsonian and Openverse
    `deleted`: refused, and `recheck --apply` took the whole source down. A 404 is a record
    gone only once the API answers its own listing; otherwise the recheck stops (exit 1)."""
    monkeypatch.setenv("SI_API_KEY", KEY)

    def answer(args: dict[str, str], path: str) -> Any:
        if probe == "not the API" and path.endswith(("/departments", "/artworks/", "/images/",
                                                     "/search")):
            return {"message": "This domain is parked"}
        return Response('{"message": "Not found"}', status=404)

    api = ApiServer(httpserver, MOVED_API_PATHS[kind], answer)
    checker = open_rechecker(kind, tmp_path, api=api.url,
                             **({"query": "x"} if kind == "openverse" else {}))
    said = "HTTP 404 too" if probe == "404" else "an answer that is not the API's"
    with pytest.raises(SourceError, match=rf"(?s)HTTP 404 for the record at .*, and {said}.*"
                       r"from the API's own .*has it moved\?.*no record of it is taken for "
                       "deleted") as stopped:
        ask(checker, [item("k1", "436535", extra=(("record_id", "edanmdm-1"),)),
                      item("k2", "436536", extra=(("record_id", "edanmdm-2"),))])
    assert KEY not in str(stopped.value)


def test_met_asks_each_object_once_and_an_object_answering_404_is_gone(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    obj = fixture("met/object.json")

    def answer(args: dict[str, str], path: str) -> Any:
        if path.endswith("/436535"):
            return obj
        if path.endswith("/departments"):
            return API_THERE["met"]
        return Response('{"message": "ObjectID not found"}', status=404)

    api = ApiServer(httpserver, "/public/collection/v1", answer)
    now = ask(open_rechecker("met", tmp_path, api=api.url), [
        item("k1", "436535"), item("k2", "436535-1"), item("k3", "1"), item("k4", "2")])
    # The first 404 asks once whether the API is there at all (see test_an_api_that_moved_...)
    assert [p for p, _, _ in api.requests] == [
        "/public/collection/v1/objects/436535", "/public/collection/v1/objects/1",
        "/public/collection/v1/departments", "/public/collection/v1/objects/2"]
    assert now["k1"].state == PRESENT and now["k1"].file_url == obj["primaryImage"]
    assert now["k2"].state == PRESENT and now["k2"].file_url == obj["additionalImages"][0]
    assert now["k3"].state == GONE and "404" in now["k3"].detail
    assert now["k4"].state == GONE


@pytest.mark.parametrize("answered", ["left out", [], None, "no record"])
def test_met_additional_images_left_out_are_unreachable_and_an_empty_list_is_none_left(
        httpserver: HTTPServer, tmp_path: Path, answered: Any) -> None:
    """A Met record without its `additionalImages` list (a partial answer, a renamed field),
    or an answer without a record, read as "the object no longer lists this image":
    every additional image deleted, refused, and `--apply` took them down. Only the list
    there and empty (or null, as the Met writes "none") is the Met's word they are gone."""
    obj = copy.deepcopy(fixture("met/object.json"))
    if answered == "left out":
        del obj["additionalImages"]
    else:
        obj["additionalImages"] = answered
    record: Any = {} if answered == "no record" else obj
    api = ApiServer(httpserver, "/public/collection/v1", lambda args, path: record)
    now = ask(open_rechecker("met", tmp_path, api=api.url), [
        item("k1", "436535"), item("k2", "436535-1")])
    if answered in ("left out", "no record"):
        assert now["k2"].state == UNREACHABLE, now["k2"]
        assert ("`additionalImages` field at all" if answered == "left out"
                else "no object record") in now["k2"].detail
    else:
        assert now["k2"].state == GONE and "no longer lists" in now["k2"].detail
    assert now["k1"].state == (UNREACHABLE if answered == "no record" else PRESENT)


def test_cleveland_404_is_gone_and_a_record_states_its_own_licence_status(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    artwork = fixture("cleveland/artwork.json") | {"share_license_status": "Copyrighted"}

    def answer(args: dict[str, str], path: str) -> Any:
        if path.endswith("/135382"):
            return {"data": artwork}
        if path == "/api/artworks/":
            return API_THERE["cleveland"]
        return Response("{}", status=404)

    api = ApiServer(httpserver, "/api", answer)
    now = ask(open_rechecker("cleveland", tmp_path, api=api.url),
              [item("k1", "135382"), item("k2", "7")])
    assert now["k1"].evidence == (Evidence("cleveland:share_license_status", "Copyrighted"),)
    assert now["k2"].state == GONE


def test_openverse_asks_the_single_image_endpoint(httpserver: HTTPServer,
                                                  tmp_path: Path) -> None:
    result = fixture("openverse/result.json")

    def answer(args: dict[str, str], path: str) -> Any:
        if result["id"] in path:
            return result
        if path == "/v1/images/":
            return API_THERE["openverse"]
        return Response('{"detail": "Not found."}', status=404)

    api = ApiServer(httpserver, "/v1", answer)
    now = ask(open_rechecker("openverse", tmp_path, api=api.url, query="x"),
              [item("k1", result["id"]), item("k2", "gone-id")])
    assert [p for p, _, _ in api.requests] == [f"/v1/images/{result['id']}/",
                                                "/v1/images/gone-id/", "/v1/images/"]
    assert ("openverse:license", "by") in [(e.field, e.value) for e in now["k1"].evidence or ()]
    assert now["k2"].state == GONE


def test_europeana_asks_many_records_by_id_in_one_search_without_the_reusability_filter(
        httpserver: HTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EUROPEANA_API_KEY", KEY)
    record = fixture("europeana/item.json")
    restricted = copy.deepcopy(record) | {"rights": ["http://rightsstatements.org/vocab/InC/1.0/"]}

    def answer(args: dict[str, str], path: str) -> Any:
        if path.endswith("/search.json"):
            return {"success": True, "itemsCount": 1, "items": [restricted]}
        return Response(json.dumps(EUROPEANA_NOT_FOUND), status=404)

    api = ApiServer(httpserver, "/record/v2", answer)
    wanted = record["id"].lstrip("/")
    now = ask(open_rechecker("europeana", tmp_path, api=api.url, query="*"),
              [item("k1", wanted), item("k2", "9/gone")])
    (_, args, _), (alone, alone_args, _) = api.requests
    assert args["query"] == f'europeana_id:("/{wanted}" OR "/9/gone")'
    assert "reusability" not in args and args["wskey"] == KEY
    assert alone == "/record/v2/9/gone.json" and alone_args["wskey"] == KEY
    assert now["k1"].evidence == (Evidence("europeana:rights",
                                           "http://rightsstatements.org/vocab/InC/1.0/"),)
    assert now["k2"].state == GONE and "HTTP 404" in now["k2"].detail
    assert KEY not in now["k2"].detail


EUROPEANA_NOT_FOUND = {"apikey": "****", "success": False,
                       "error": "Invalid record identifier: /9/gone"}


@pytest.mark.parametrize(("alone", "state"), [
    ("record", UNREACHABLE), ("404", GONE), ("no record", UNREACHABLE)])
def test_a_europeana_record_the_search_leaves_out_is_asked_of_the_record_api(
        httpserver: HTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, alone: str,
        state: str) -> None:
    """The Search API is an index that can fall behind its records (a re-index): a record
    it left out was `deleted`, refused, and `recheck --apply` took it down. Only the Record
    API's 404 for the record itself is gone now."""
    monkeypatch.setenv("EUROPEANA_API_KEY", KEY)

    def answer(args: dict[str, str], path: str) -> Any:
        if path.endswith("/search.json"):
            return {"success": True, "itemsCount": 0}
        if alone == "record":
            return {"apikey": "****", "success": True,
                    "object": {"about": "/9/behind", "aggregations": []}}
        if alone == "404":
            return Response(json.dumps(EUROPEANA_NOT_FOUND), status=404)
        return {"success": False, "error": "Unable to reach the database"}

    api = ApiServer(httpserver, "/record/v2", answer)
    now = ask(open_rechecker("europeana", tmp_path, api=api.url, query="*"),
              [item("k1", "9/behind")])["k1"]
    assert [p for p, _, _ in api.requests] == ["/record/v2/search.json",
                                                "/record/v2/9/behind.json"]
    assert now.state == state, now
    if alone == "record":
        assert "the search index may be behind" in now.detail


def _image_field_case(kind: str, record: dict[str, Any]) -> tuple[str, dict, Any, str]:
    """(api path, recheck config, answer for the record, source id) of one source."""
    if kind == "aic":
        return ("/api/v1", {}, lambda a, p: {"data": [record]}, str(record["id"]))
    if kind == "cleveland":
        return ("/api", {}, lambda a, p: {"data": record}, str(record["id"]))
    if kind == "openverse":
        return ("/v1", {"query": "x"}, lambda a, p: record, record["id"])
    if kind == "met":
        return ("/public/collection/v1", {}, lambda a, p: record, str(record["objectID"]))
    if kind == "smithsonian":
        return ("/openaccess/api/v1.0", {}, lambda a, p: {"status": 200, "response": record},
                "media-id")
    return ("/record/v2/search.json", {"query": "*"},
            lambda a, p: {"success": True, "itemsCount": 1, "items": [record]},
            record["id"].lstrip("/"))


IMAGE_FIELDS = {"aic": ("aic/artwork.json", "image_id"),
                "cleveland": ("cleveland/artwork.json", "images"),
                "openverse": ("openverse/result.json", "url"),
                "europeana": ("europeana/item.json", "edmIsShownBy"),
                "met": ("met/object.json", "primaryImage"),
                "smithsonian": ("smithsonian/row.json", "online_media")}


@pytest.mark.parametrize("left_out", [True, False], ids=["field-left-out", "field-empty"])
@pytest.mark.parametrize("kind", sorted(IMAGE_FIELDS))
def test_a_record_without_its_image_field_is_unreachable_and_an_empty_one_is_gone(
        httpserver: HTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str,
        left_out: bool) -> None:
    """A record whose image field was left out of the answer (a partial answer, a field
    renamed) was read as "the source offers no image for it any more": deleted, refused,
    and `recheck --apply` would take every sample of the source down. Only the field
    there and empty is the source's word that the image is gone."""
    monkeypatch.setenv("EUROPEANA_API_KEY", KEY)
    monkeypatch.setenv("SI_API_KEY", KEY)
    name, field = IMAGE_FIELDS[kind]
    record = copy.deepcopy(fixture(name))
    holder = record["content"]["descriptiveNonRepeating"] if kind == "smithsonian" else record
    if left_out:
        del holder[field]
    else:
        holder[field] = {"europeana": [], "met": "", "smithsonian": {"media": []}}.get(kind)
    path, config, answer, source_id = _image_field_case(kind, record)
    api = ApiServer(httpserver, path, answer)
    root = api.url.rsplit("/", 1)[0] if kind == "europeana" else api.url
    extra = {"extra": (("record_id", record["id"]),)} if kind == "smithsonian" else {}
    now = ask(open_rechecker(kind, tmp_path, api=root, **config),
              [item("k1", source_id, **extra)])["k1"]
    if left_out:
        assert now.state == UNREACHABLE, now
        assert f"`{field}` field at all" in now.detail
    else:
        assert now.state == GONE, now


def test_smithsonian_asks_each_record_once_with_the_key_in_a_header(
        httpserver: HTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SI_API_KEY", KEY)
    row = fixture("smithsonian/row.json")

    def answer(args: dict[str, str], path: str) -> Any:
        if path.endswith(row["id"]):
            return {"status": 200, "response": row}
        if path.endswith("/search"):
            return API_THERE["smithsonian"]
        return Response("{}", status=404)

    api = ApiServer(httpserver, "/openaccess/api/v1.0", answer)
    media = row["content"]["descriptiveNonRepeating"]["online_media"]["media"][0]["idsId"]
    now = ask(open_rechecker("smithsonian", tmp_path, api=api.url), [
        item("k1", media, extra=(("record_id", row["id"]),)),
        item("k2", "gone", extra=(("record_id", "edanmdm-gone"),))])
    assert [p for p, _, _ in api.requests] == [
        f"/openaccess/api/v1.0/content/{row['id']}", "/openaccess/api/v1.0/content/edanmdm-gone",
        "/openaccess/api/v1.0/search"]
    assert all(h.get("X-Api-Key") == KEY and "api_key" not in a for _, a, h in api.requests)
    assert now["k1"].evidence == (Evidence("smithsonian:usage.access", "CC0"),)
    assert now["k2"].state == GONE


def test_a_key_missing_from_the_environment_stops_before_any_request(
        httpserver: HTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SI_API_KEY", KEY)  # the recipe check needs it ...
    module = source_module("smithsonian", file="recipe.toml", where="sources[0]")
    config = module.Config(api=httpserver.url_for("/si")).check(
        file=tmp_path / "recipe.toml", base=tmp_path, where="sources[0]")
    monkeypatch.delenv("SI_API_KEY")  # ... and it is gone by the time of the recheck
    with pytest.raises(UserError, match="SI_API_KEY"):
        module.rechecker("si", config, context(tmp_path))
    assert list(httpserver.log) == []


def test_a_head_tells_gone_from_unreachable_and_reports_validators(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    data = make_image(5)
    httpserver.expect_request("/ok.jpg").respond_with_data(
        data, content_type="image/jpeg", headers={"ETag": '"v2"', "Last-Modified":
                                                  "Wed, 01 Jan 2025 00:00:00 GMT"})
    httpserver.expect_request("/gone.jpg").respond_with_data("", status=410)
    httpserver.expect_request("/nohead.jpg").respond_with_data("", status=405)
    httpserver.expect_request("/down.jpg").respond_with_data("", status=503)
    urls = {name: httpserver.url_for(f"/{name}.jpg") for name in ("ok", "gone", "nohead",
                                                                 "down")}
    checker = open_rechecker("table", tmp_path, path=str(_table(tmp_path)))
    now = ask(checker, [item(name, name, file_url=url) for name, url in urls.items()])
    assert (now["ok"].state, now["ok"].etag, now["ok"].length) == (PRESENT, '"v2"', len(data))
    assert now["ok"].last_modified == "Wed, 01 Jan 2025 00:00:00 GMT"
    assert now["gone"].state == GONE
    assert now["nohead"].state == UNREACHABLE and "does not answer HEAD" in now["nohead"].detail
    assert now["down"].state == UNREACHABLE
    assert {r.method for r, _ in httpserver.log} == {"HEAD"}


def _table(tmp_path: Path) -> Path:
    path = tmp_path / "t.jsonl"
    path.write_text('{"url": "http://127.0.0.1/x.jpg"}\n', encoding="utf-8")
    return path


def test_a_folder_image_that_is_gone_or_rewritten_is_told_apart_from_one_unchanged(
        tmp_path: Path) -> None:
    import hashlib

    folder = tmp_path / "pics"
    folder.mkdir()
    (folder / "same.jpg").write_bytes(b"same bytes")
    (folder / "changed.jpg").write_bytes(b"new bytes")
    same = hashlib.sha256(b"same bytes").hexdigest()
    now = ask(open_rechecker("folder", tmp_path, path="pics"), [
        item("a", "same.jpg", path="same.jpg", sha256=same),
        item("b", "changed.jpg", path="changed.jpg", sha256=same),
        item("c", "gone.jpg", path="gone.jpg")])
    assert now["a"] == Now(PRESENT, sha256=same, evidence=(), record_is_whole=True)
    assert now["b"].sha256 == hashlib.sha256(b"new bytes").hexdigest()
    assert now["c"].state == GONE


@pytest.mark.parametrize("kind", ["aic", "europeana"])
@pytest.mark.parametrize("answer", [{}, {"success": False, "error": "Invalid query"},
                                    {"pagination": {}},
                                    {"success": True, "itemsCount": 2, "items": None}],
                         ids=["empty", "failed", "no list", "null list"])
def test_an_answer_without_its_result_list_stops_the_recheck_instead_of_reading_as_gone(
        httpserver: HTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str,
        answer: dict[str, Any]) -> None:
    """An id left out of a whole answer is gone; left out of a broken one (HTTP 200 with no
    result list), nothing is known: every sample once read as deleted, and `--apply` would
    have taken the batch down."""
    monkeypatch.setenv("EUROPEANA_API_KEY", KEY)
    if kind == "aic":
        api = ApiServer(httpserver, "/api/v1", lambda args, path: answer)
        checker = open_rechecker("aic", tmp_path, api=api.url)
    else:
        api = ApiServer(httpserver, "/record/v2/search.json", lambda args, path: answer)
        checker = open_rechecker("europeana", tmp_path, api=api.url.rsplit("/", 1)[0],
                                 query="*")
    with pytest.raises(SourceError, match="nothing was judged"):
        ask(checker, [item("k1", "27992"), item("k2", "9/gone")])


def test_a_folder_sidecar_relicensed_after_the_build_is_a_licence_change(
        tmp_path: Path) -> None:
    """Recheck once re-hashed a folder's images only: a sidecar changed from CC0 to BY-NC
    went unnoticed, and the sample stayed in a commercial dataset."""
    import json

    from tests.conftest import run_cli
    from tests.test_dedup import jpeg, photo
    from tests.test_dedup_build import CC0, folder_recipe, put

    put(tmp_path / "pics", "a.jpg", jpeg(photo(1)), CC0, creator="Ada")
    put(tmp_path / "pics", "b.jpg", jpeg(photo(2)), CC0, creator="Bo")
    recipe = folder_recipe(tmp_path, ["pics"])
    out = tmp_path / "out"
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    unchanged = run_cli("recheck", str(out), "--json", "--no-progress")
    assert unchanged.returncode == 0, unchanged.stderr
    (tmp_path / "pics" / "a.jpg.json").write_text(json.dumps(
        {"license": "https://creativecommons.org/licenses/by-nc/4.0/", "creator": "Ada"}),
        encoding="utf-8")
    (tmp_path / "pics" / "b.jpg.json").write_text("{not json", encoding="utf-8")
    proc = run_cli("recheck", str(out), "--json", "--no-progress")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    found = {v["key"]: v for v in map(json.loads, proc.stdout.splitlines())}
    by_name = {v["outcome"]: v for v in found.values()}
    assert by_name["license_changed"]["refuse"] is True
    assert by_name["unreachable"]["refuse"] is False
    assert "metadata cannot be read" in by_name["unreachable"]["detail"]


def test_a_folder_sidecar_this_user_may_not_read_is_unreachable_not_a_stopped_recheck(
        tmp_path: Path, bound_by_permissions: list[str]) -> None:
    """One sidecar made unreadable since the build (a permissions change on a shared drive)
    stopped the whole recheck: "fatal: [Errno 13] Permission denied: '.../b.jpg.json'", exit
    1 on every run, so no other sample was rechecked. An unreadable image was already
    `unreachable`; its unreadable sidecar is too."""
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import REPO, run_cli
    from tests.test_dedup import jpeg, photo
    from tests.test_dedup_build import CC0, folder_recipe, put

    put(tmp_path / "pics", "a.jpg", jpeg(photo(1)), CC0, creator="Ada")
    put(tmp_path / "pics", "b.jpg", jpeg(photo(2)), CC0, creator="Bo")
    recipe = folder_recipe(tmp_path, ["pics"])
    out = tmp_path / "out"
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    sidecar = tmp_path / "pics" / "b.jpg.json"
    sidecar.chmod(0)
    try:
        proc = subprocess.run([*bound_by_permissions, sys.executable, "-m", "builder",
                               "recheck", str(out), "--json", "--no-progress"],
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        sidecar.chmod(0o644)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    found = sorted(map(json.loads, proc.stdout.splitlines()), key=lambda v: v["outcome"])
    assert [(v["outcome"], v["refuse"]) for v in found] == [
        ("unchanged", False), ("unreachable", False)]
    assert f"{sidecar}" in found[1]["detail"] and "Permission denied" in found[1]["detail"]


# A per-object API's HTTP 200 that holds no record: JSON `null`, `{}`, an error object.
NO_RECORD = {"null": None, "empty": {}, "error": {"error": {"code": "API_KEY_INVALID"}},
             "null response": {"status": 200, "response": None},
             "detail": {"detail": "Internal server error."}}


@pytest.mark.parametrize("answer", list(NO_RECORD.values()), ids=list(NO_RECORD))
@pytest.mark.parametrize("kind", ["met", "smithsonian", "openverse", "cleveland"])
def test_a_per_object_answer_of_200_without_a_record_is_never_read_as_deleted(
        httpserver: HTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str,
        answer: Any) -> None:
    """A JSON `null` came back from the client as a 404 does (None), and the Met, Cleveland,
    the Smithsonian and Openverse read it as "HTTP 404: deleted"; the Smithsonian read
    `{"response": null}` or an error object as "no longer lists this media item" and
    Openverse `{}` or `{"detail": ...}` as "offers no image": every sample deleted, refused,
    and `--apply` took the source down. Now nothing is known of them (Cleveland, whose
    answers carry a `data` object, stops with exit 1 as for any answer without it)."""
    monkeypatch.setenv("SI_API_KEY", KEY)
    paths = {"met": "/public/collection/v1", "smithsonian": "/openaccess/api/v1.0",
             "openverse": "/v1", "cleveland": "/api"}
    api = ApiServer(httpserver, paths[kind], lambda args, path: answer)
    extra = {"openverse": {"query": "x"}}.get(kind, {})
    checker = open_rechecker(kind, tmp_path, api=api.url, **extra)
    sample = item("k1", "436535", extra=(("record_id", "edanmdm-1"),))
    if kind == "cleveland":
        with pytest.raises(SourceError, match="no `data` object"):
            ask(checker, [sample])
        return
    now = ask(checker, [sample])["k1"]
    assert now.state == UNREACHABLE, now
    assert "no " in now.detail and "404" not in now.detail
