"""A refused candidate still names its licence whenever one was recognised (#16 item 17):
auditors count what was turned away, and under which licence, from candidates.parquet."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pyarrow.parquet as pq
from pytest_httpserver import HTTPServer

from builder.licensing import decide, load_policy
from builder.records import Evidence, Reason
from tests.conftest import make_image, run_cli, serve_no_site_policies, write_jsonl, write_recipe

CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"
BY4 = "https://creativecommons.org/licenses/by/4.0/"
NC4 = "https://creativecommons.org/licenses/by-nc/4.0/"

# source id -> (reason, licence the ledger must name)
EXPECTED = {
    "ok": (None, "CC0-1.0"),
    "nc": ("license_not_allowed", "CC-BY-NC-4.0"),
    "gone": ("http_error", "CC0-1.0"),
    "noai": ("optout_x_robots_tag", "CC-BY-4.0"),
    "dup": ("duplicate_exact", "CC-BY-4.0"),
    "unknown": ("license_unrecognized", None),
    "missing": ("license_missing", None),
}


def serve(httpserver: HTTPServer, path: str, body: bytes, **headers: str) -> str:
    httpserver.expect_request(path).respond_with_data(body, content_type="image/jpeg",
                                                      headers=headers)
    return httpserver.url_for(path)


def test_refused_candidates_name_the_recognised_licence_in_ledger_and_parquet(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    serve_no_site_policies(httpserver)
    original = make_image(1, (96, 64))
    httpserver.expect_request("/gone.jpg").respond_with_data("nope", status=404)
    rows = [
        {"id": "ok", "url": serve(httpserver, "/ok.jpg", original), "license": CC0},
        {"id": "nc", "url": serve(httpserver, "/nc.jpg", make_image(2)), "license": NC4},
        {"id": "gone", "url": httpserver.url_for("/gone.jpg"), "license": CC0},
        {"id": "noai", "url": serve(httpserver, "/noai.jpg", make_image(3),
                                    **{"X-Robots-Tag": "noai"}), "license": BY4},
        {"id": "dup", "url": serve(httpserver, "/copy.jpg", original), "license": BY4},
        {"id": "unknown", "url": serve(httpserver, "/u.jpg", make_image(4)),
         "license": "all rights kinda reserved maybe"},
        {"id": "missing", "url": serve(httpserver, "/m.jpg", make_image(5))},
    ]
    write_jsonl(tmp_path / "urls.jsonl", rows)
    recipe = write_recipe(tmp_path / "recipe.toml", """
[dataset]
name = "refusals"

[policy]
use = "commercial"

[[sources]]
kind = "table"
path = "urls.jsonl"

[fetch]
allow_private_addresses = true
retries = 0
""")
    out = tmp_path / "out"
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)

    parquet = {r["candidate_id"].split(":", 1)[1]: (r["reason"], r["license"])
               for r in pq.read_table(out / "candidates.parquet").to_pylist()}
    assert parquet == EXPECTED
    with sqlite3.connect(out / "ledger.sqlite") as db:
        ledger = {cid.split(":", 1)[1]: (reason, lic) for cid, reason, lic in
                  db.execute("SELECT candidate_id, reason, license FROM candidates")}
    assert ledger == EXPECTED


def test_the_gate_names_the_id_it_refuses_but_not_a_conflict_or_an_unknown_string() -> None:
    policy = load_policy("commercial")
    refused = decide((Evidence("license", NC4),), policy)
    assert refused.reason == Reason.LICENSE_NOT_ALLOWED and refused.license == "CC-BY-NC-4.0"
    conflict = decide((Evidence("license", CC0), Evidence("license_url", BY4)), policy)
    assert conflict.reason == Reason.LICENSE_CONFLICT and conflict.license is None
    unknown = decide((Evidence("license", "ask me"),), policy)
    assert unknown.reason == Reason.LICENSE_UNRECOGNIZED and unknown.license is None
