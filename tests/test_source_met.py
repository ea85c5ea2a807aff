"""The `met` source against a local Met Collection API on 127.0.0.1."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Response

from builder.licensing import decide, load_policy
from builder.records import Reason, Rejection
from builder.sources._museum import SourceError
from builder.sources.met import Config, MetSource
from tests.api_support import ApiServer, context, fixture, ledger, recipe_text, serve_image
from tests.conftest import run_cli, write_recipe

# object id -> (isPublicDomain or None for absent, expected ledger reason); 404 for a gone id
OBJECTS: dict[int, tuple[Any, str | None]] = {
    11: (True, None),
    12: (False, "license_not_allowed"),
    13: (None, "license_missing"),
    14: ("404", "license_missing"),
    15: (True, None),
    16: ("noimage", "http_error"),
}


class FakeMet(ApiServer):
    def __init__(self, httpserver: HTTPServer) -> None:
        self.objects: dict[int, dict[str, Any]] = {}
        template = fixture("met/object.json")
        for object_id, (flag, _) in OBJECTS.items():
            if flag == "404":
                continue
            obj = copy.deepcopy(template)
            obj["objectID"] = object_id
            obj["objectURL"] = f"https://www.metmuseum.org/art/collection/search/{object_id}"
            obj["primaryImage"], _ = serve_image(httpserver, f"/img/{object_id}.jpg", object_id)
            obj["additionalImages"] = []
            if flag == "noimage":
                obj["isPublicDomain"], obj["primaryImage"] = True, ""
            elif flag is None:
                del obj["isPublicDomain"]
            else:
                obj["isPublicDomain"] = flag
            self.objects[object_id] = obj
        extra, _ = serve_image(httpserver, "/img/11-1.jpg", 1101)
        self.objects[11]["additionalImages"] = [extra]
        self.moved = False  # answers 404 to everything, as an API that has moved
        super().__init__(httpserver, "/public/collection/v1", self._answer)

    def _answer(self, args: dict[str, str], path: str) -> Any:
        tail = path.removeprefix("/public/collection/v1")
        if self.moved:
            return Response('{"message": "Not Found"}', status=404,
                            content_type="application/json")
        if tail == "/departments":
            return {"departments": [{"departmentId": 11, "displayName": "European Paintings"}]}
        if tail in ("/objects", "/search"):
            ids = sorted(OBJECTS, reverse=True)  # the API promises no order
            return {"total": len(ids), "objectIDs": ids}
        object_id = int(tail.rsplit("/", 1)[1])
        if object_id not in self.objects:
            return Response('{"message": "ObjectID not found"}', status=404,
                            content_type="application/json")
        return self.objects[object_id]


@pytest.fixture
def met(httpserver: HTTPServer) -> FakeMet:
    return FakeMet(httpserver)


def source(met: FakeMet, tmp_path: Path, **config: Any) -> MetSource:
    cfg = Config(api=met.url, **config).check(file="r.toml", base=tmp_path, where="sources[0]")
    return MetSource("met", cfg, context(tmp_path))


def paths(met: FakeMet) -> list[str]:
    return [p.removeprefix("/public/collection/v1") for p, _, _ in met.requests]


def test_lists_ids_then_asks_for_each_object_in_id_order(met: FakeMet, tmp_path: Path) -> None:
    cands = list(source(met, tmp_path, department_ids=(11, 21)).candidates(None))
    assert [c.source_id for c in cands] == ["11", "12", "13", "14", "15", "16"]
    assert paths(met) == ["/objects"] + [f"/objects/{i}" for i in sorted(OBJECTS)]
    assert met.requests[0][1] == {"departmentIds": "11|21"}


def test_search_asks_for_public_domain_objects_with_images(met: FakeMet, tmp_path: Path) -> None:
    list(source(met, tmp_path, query="cypresses", department_ids=(11,)).candidates(None))
    assert paths(met)[0] == "/search"
    assert met.requests[0][1] == {"q": "cypresses", "hasImages": "true",
                                  "isPublicDomain": "true", "departmentId": "11"}


def test_fields_evidence_and_additional_images(met: FakeMet, tmp_path: Path) -> None:
    cands = {c.source_id: c for c in
             source(met, tmp_path, additional_images=True).candidates(None)}
    first = cands["11"]
    assert first.evidence[0].field == "met:isPublicDomain" and first.evidence[0].value == "true"
    assert first.creator == "Vincent van Gogh"
    assert first.creator_url == "https://www.wikidata.org/wiki/Q5582"
    assert first.title == "Wheat Field with Cypresses"
    assert first.credit == "Purchase, The Annenberg Foundation Gift, 1993"
    assert first.landing_url == "https://www.metmuseum.org/art/collection/search/11"
    assert cands["11-1"].url.endswith("/img/11-1.jpg")
    assert cands["11-1"].evidence == first.evidence
    policy = load_policy("commercial")
    assert decide(first.evidence, policy).spdx == "CC0-1.0"  # type: ignore[union-attr]
    refused = decide(cands["12"].evidence, policy)
    assert isinstance(refused, Rejection) and refused.reason is Reason.LICENSE_NOT_ALLOWED
    gone = cands["14"]
    assert gone.url == "" and gone.evidence == () and ("met:problem",
                                                       "object not found (HTTP 404)") in gone.extra


def test_resume_skips_objects_already_decided(met: FakeMet, tmp_path: Path) -> None:
    state = list(source(met, tmp_path).candidates(None))[2].resume
    met.requests.clear()
    rest = list(source(met, tmp_path).candidates(state))
    assert [c.source_id for c in rest] == ["14", "15", "16"]
    assert paths(met) == ["/objects", "/objects/14", "/objects/15", "/objects/16"]


def test_resume_inside_an_objects_images_continues_with_its_next_image(
        met: FakeMet, tmp_path: Path) -> None:
    state = next(iter(source(met, tmp_path, additional_images=True).candidates(None))).resume
    rest = [c.source_id for c in source(met, tmp_path, additional_images=True).candidates(state)]
    assert rest[:2] == ["11-1", "12"]


def test_429_500_and_malformed_json_are_retried(met: FakeMet, tmp_path: Path) -> None:
    met.fail((429, "", {"Retry-After": "1"}), (500, "", {}), (200, "{not json", {}))
    assert len(list(source(met, tmp_path).candidates(None))) == len(OBJECTS)


def test_an_api_that_keeps_failing_stops_with_a_clear_error(met: FakeMet, tmp_path: Path) -> None:
    met.fail(*[(500, "", {})] * 10)
    with pytest.raises(SourceError, match=r"^HTTP 500; source 'met' stopped at\n.*/objects"):
        list(source(met, tmp_path).candidates(None))


def built(met: FakeMet, tmp_path: Path) -> Path:
    """A dataset built from the fake Met through the CLI."""
    recipe = write_recipe(tmp_path / "recipe.toml", recipe_text("met-test", f"""
kind = "met"
api = "{met.url}"
department_ids = [11]
"""))
    out = tmp_path / "out"
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    return out


def test_build_puts_every_listed_object_in_the_ledger(met: FakeMet, tmp_path: Path) -> None:
    out = built(met, tmp_path)
    rows = ledger(out)
    assert set(rows) == {str(i) for i in OBJECTS}
    for object_id, (_, reason) in OBJECTS.items():
        assert rows[str(object_id)]["reason"] == reason, rows[str(object_id)]["detail"]


def test_a_work_not_in_the_public_domain_is_refused_in_the_museums_words(
        met: FakeMet, tmp_path: Path) -> None:
    met.objects[15]["isPublicDomain"] = False
    met.objects[15]["rightsAndReproduction"] = "© Walker Evans Archive"
    by_id = {c.source_id: c for c in source(met, tmp_path).candidates(None)}
    policy = load_policy("commercial")
    bare = decide(by_id["12"].evidence, policy)  # rightsAndReproduction "" in the fixture
    assert isinstance(bare, Rejection) and bare.reason == Reason.LICENSE_NOT_ALLOWED
    assert bare.detail == ("the source marks it not public domain (isPublicDomain=false) "
                           "and states no open licence")
    noticed = decide(by_id["15"].evidence, policy)
    assert isinstance(noticed, Rejection)
    assert noticed.detail.endswith("; rightsAndReproduction='© Walker Evans Archive'")


def test_a_recheck_against_an_api_that_moved_stops_and_resumes_deleting_nothing(
        met: FakeMet, tmp_path: Path) -> None:
    """Every object answering 404 was every sample `deleted` (exit 3, and `--apply` took the
    source down); now the recheck asks whether the API is there, stops with exit 1 naming
    it, judges nothing deleted, and resumes once the API answers again."""
    out = built(met, tmp_path)
    met.moved = True
    moved = run_cli("recheck", str(out), "--apply", "--reason", "weekly recheck")
    assert moved.returncode == 1, moved.stderr
    assert "HTTP 404 for the record at http" in moved.stderr
    assert "HTTP 404 too from the API's own departments list" in moved.stderr
    assert "/public/collection/v1/departments\n" in moved.stderr
    assert "has it moved?" in moved.stderr and "deleted" not in moved.stdout
    met.moved = False
    del met.objects[15]
    again = run_cli("recheck", str(out), "--json")
    assert again.returncode == 3, again.stderr
    assert "resum" in again.stderr.lower()
    outcomes = {json.loads(line)["key"]: json.loads(line)["outcome"]
                for line in again.stdout.splitlines()}
    assert sorted(outcomes.values()) == ["deleted", "unchanged"], outcomes
