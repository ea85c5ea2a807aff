"""`cleanset lookup DIR PATH...`: a portfolio against a built dataset, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
from pytest_httpserver import HTTPServer

from tests.conftest import run_cli, serve_no_site_policies, write_jsonl, write_recipe
from tests.test_dedup import jpeg, photo, variants
from tests.test_dedup_build import BYSA4, CC0, folder_recipe, put


def lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_lookup_of_a_portfolio_folder_gives_one_json_line_per_image(tmp_path: Path) -> None:
    work, other = variants(1), variants(2)
    put(tmp_path / "pics", "work.jpg", work["original"], creator="Ada")
    put(tmp_path / "pics", "other.jpg", other["original"], BYSA4, creator="Bo")
    out = tmp_path / "out"
    run_cli("build", str(folder_recipe(tmp_path, ["pics"])), "--out", str(out),
            "--no-progress", check=True)
    keys = {r["source_id"]: r["key"] for r in pq.read_table(out / "manifest.parquet").to_pylist()}

    portfolio = tmp_path / "portfolio"
    portfolio.mkdir()
    (portfolio / "1-same-bytes.jpg").write_bytes(work["original"])
    (portfolio / "2-resized.jpg").write_bytes(other["half"])
    (portfolio / "3-unrelated.jpg").write_bytes(jpeg(photo(4)))
    (portfolio / "notes.txt").write_text("not an image", encoding="utf-8")
    proc = run_cli("lookup", str(out), str(portfolio), check=True)
    got = lines(proc.stdout)
    assert [Path(g["query"]).name for g in got] == [
        "1-same-bytes.jpg", "2-resized.jpg", "3-unrelated.jpg"]

    exact = got[0]["matches"]
    assert len(exact) == 1
    assert exact[0]["key"] == keys["work.jpg"]
    assert exact[0]["exact"] is True and exact[0]["distance"] == 0
    assert exact[0]["license"] == "CC0-1.0" and exact[0]["creator"] == "Ada"
    assert set(exact[0]) >= {"key", "distance", "exact", "license", "source_url",
                             "landing_url", "creator"}

    near = got[1]["matches"]
    assert [m["key"] for m in near] == [keys["other.jpg"]]
    assert near[0]["exact"] is False and 0 < near[0]["distance"] <= 31
    assert near[0]["license"] == "CC-BY-SA-4.0"
    assert got[2]["matches"] == []


def test_lookup_reports_every_source_and_licence_the_work_was_found_under(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    work = variants(4)
    serve_no_site_policies(httpserver)
    httpserver.expect_request("/museum/work.jpg").respond_with_data(
        work["original"], content_type="image/jpeg")
    httpserver.expect_request("/mirror/work-small.jpg").respond_with_data(
        work["half"], content_type="image/jpeg")
    httpserver.expect_request("/mirror/work.jpg").respond_with_data(
        work["original"], content_type="image/jpeg")
    rows = [
        {"id": "m1", "url": httpserver.url_for("/museum/work.jpg"), "license": BYSA4,
         "creator": "Ada"},
        {"id": "x1", "url": httpserver.url_for("/mirror/work-small.jpg"), "license": CC0},
        {"id": "x2", "url": httpserver.url_for("/mirror/work.jpg"), "license": CC0},
    ]
    table = write_jsonl(tmp_path / "urls.jsonl", rows)
    recipe = write_recipe(tmp_path / "recipe.toml", f"""
[dataset]
name = "lookup-test"

[[sources]]
kind = "table"
path = "{table.name}"

[fetch]
allow_private_addresses = true
retries = 0
""")
    out = tmp_path / "out"
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    query = tmp_path / "mine.jpg"
    query.write_bytes(work["q40"])
    got = lines(run_cli("lookup", str(out), str(query), check=True).stdout)
    assert len(got) == 1
    matches = got[0]["matches"]
    assert [(m["found_as"], m["license"], m["source_url"]) for m in matches] == [
        ("sample", "CC-BY-SA-4.0", rows[0]["url"]),
        ("duplicate", "CC0-1.0", rows[1]["url"]),
        ("duplicate", "CC0-1.0", rows[2]["url"]),
    ]
    assert len({m["key"] for m in matches}) == 1  # all point at the one sample that holds it
    assert [m["exact"] for m in matches] == [False, False, False]


def test_lookup_of_a_missing_path_is_a_user_error(tmp_path: Path) -> None:
    put(tmp_path / "pics", "a.jpg", jpeg(photo(1)))
    out = tmp_path / "out"
    run_cli("build", str(folder_recipe(tmp_path, ["pics"])), "--out", str(out),
            "--no-progress", check=True)
    proc = run_cli("lookup", str(out), str(tmp_path / "nope.jpg"))
    assert proc.returncode == 2
    assert "nope.jpg: no such file or folder" in proc.stderr
    proc = run_cli("lookup", str(tmp_path / "pics"), str(tmp_path / "pics"))
    assert proc.returncode == 2 and "has no ledger.sqlite" in proc.stderr


def test_a_query_holding_no_image_is_exit_2_not_an_empty_answer(tmp_path: Path) -> None:
    """An empty answer read as "none of my images is in this dataset"."""
    put(tmp_path / "pics", "a.jpg", jpeg(photo(1)))
    out = tmp_path / "out"
    run_cli("build", str(folder_recipe(tmp_path, ["pics"])), "--out", str(out),
            "--no-progress", check=True)
    portfolio = tmp_path / "portfolio"
    portfolio.mkdir()
    (portfolio / "notes.txt").write_text("not an image", encoding="utf-8")
    for path, says in ((portfolio, "a folder holding no image files"),
                       (Path("/dev/null"), "is neither a file nor a folder")):
        proc = run_cli("lookup", str(out), str(path))
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert proc.stdout == "" and f"{path}: {says}" in proc.stderr
