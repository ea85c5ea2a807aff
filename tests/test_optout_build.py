"""The opt-out gate end to end: `cleanset build` against a real local server."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
from pytest_httpserver import HTTPServer

from tests.conftest import make_image, run_cli, write_jsonl, write_recipe
from tests.test_optout_signals import DATA_MINING_FORMS, IPTC_EXT, with_xmp, xmp

CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"
AI_SOURCE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


def test_build_records_every_optout_reason_and_the_trail_of_admitted_samples(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.no_handler_status_code = 404  # hosts without robots.txt answer 404
    httpserver.expect_request("/robots.txt").respond_with_data(
        "User-agent: cleanset\nDisallow: /private/\n", content_type="text/plain")
    httpserver.expect_request("/.well-known/tdmrep.json").respond_with_json(
        [{"location": "/reserved/*", "tdm-reservation": 1}])
    taken_down = make_image(77)
    ai_packet = xmp(f'<Iptc4xmpExt:DigitalSourceType rdf:resource="{AI_SOURCE}"/>', "",
                    f'xmlns:Iptc4xmpExt="{IPTC_EXT}"')

    def serve(path: str, body: bytes, headers: dict | None = None, ctype: str = "image/jpeg"):
        httpserver.expect_request(path).respond_with_data(body, content_type=ctype,
                                                          headers=headers or {})
        return httpserver.url_for(path)

    rows = {
        "control": (serve("/ok.jpg", make_image(1)), None),
        "control-png": (serve("/ok.png", make_image(2, fmt="PNG"), ctype="image/png"), None),
        "noai": (serve("/n.jpg", make_image(3), {"X-Robots-Tag": "noai"}), "optout_x_robots_tag"),
        "tdm-header": (serve("/t.jpg", make_image(4), {"tdm-reservation": "1"}), "optout_tdmrep"),
        "tdm-file": (serve("/reserved/r.jpg", make_image(5)), "optout_tdmrep"),
        "robots": (httpserver.url_for("/private/p.jpg"), "optout_robots_txt"),
        "xmp": (serve("/x.webp", with_xmp("WEBP", DATA_MINING_FORMS["resource"]),
                      ctype="image/webp"), "optout_embedded"),
        "ai": (serve("/ai.png", with_xmp("PNG", ai_packet), ctype="image/png"), "ai_generated"),
        "recipe-denylist": (httpserver.url_for("/deny.jpg"), "denylisted"),
        "dir-denylist": (serve("/copy.jpg", taken_down), "denylisted"),
    }
    table = write_jsonl(tmp_path / "urls.jsonl", [
        {"id": key, "url": url, "license": CC0} for key, (url, _) in rows.items()])
    (tmp_path / "registry.txt").write_text(f"# opt-out registry\n{rows['recipe-denylist'][0]}\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "denylist.jsonl").write_text(json.dumps({
        "kind": "sha256", "value": hashlib.sha256(taken_down).hexdigest(),
        "reason": "takedown request 12"}) + "\n")
    recipe = write_recipe(tmp_path / "recipe.toml", f"""
[dataset]
name = "optout-test"
samples_per_shard = 10

[[sources]]
kind = "table"
path = "{table.name}"

[fetch]
allow_private_addresses = true
retries = 0
workers = 4

[optout]
denylist = "registry.txt"
c2pa = false
""")
    proc = run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)

    cands = {c["candidate_id"].split(":", 1)[1]: c
             for c in pq.read_table(out / "candidates.parquet").to_pylist()}
    for key, (_, reason) in rows.items():
        assert cands[key]["reason"] == reason, (key, cands[key]["detail"])
    assert "takedown request 12" in cands["dir-denylist"]["detail"]
    assert "registry.txt:2" in cands["recipe-denylist"]["detail"]
    requested = [r.path for r, _ in httpserver.log]
    assert "/private/p.jpg" not in requested and "/deny.jpg" not in requested
    assert requested.count("/robots.txt") == 1

    with tarfile.open(out / "shards" / "000000.tar") as tar:
        provenance = [json.load(tar.extractfile(m)) for m in tar.getmembers()
                      if m.name.endswith(".json")]
    assert len(provenance) == 2
    for sample in provenance:
        checked = {c["signal"]: c["result"] for c in sample["optout"]["checked"]}
        assert checked["robots.txt"] == "allowed:cleanset"
        assert checked["ai.txt"] == "absent (HTTP 404)"
        assert checked["tdmrep.json"].startswith("no rule matches")
        assert checked["x-robots-tag"] == "absent"
        assert checked["c2pa"] == "off in the recipe"
        assert sample["optout"]["result"] == "allowed"

    assert "  opt-out x-robots-tag: checked 8, rejected 1" in proc.stdout
    assert "  opt-out robots.txt: checked 9, rejected 1" in proc.stdout
    assert "  C2PA: not checked (off in the recipe)" in proc.stdout, proc.stdout


def test_a_bad_optout_key_stops_the_build_with_exit_2(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    recipe = write_recipe(tmp_path / "recipe.toml", """
[dataset]
name = "bad"

[[sources]]
kind = "folder"
path = "img"

[optout]
robots = false
""")
    proc = run_cli("build", str(recipe), "--out", str(tmp_path / "out"), "--no-progress")
    assert proc.returncode == 2
    assert "optout.robots" in proc.stderr and "robots_txt" in proc.stderr
