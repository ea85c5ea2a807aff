"""`cleanset lookup DIR PATH...`: a portfolio against a built dataset, through the real CLI."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from pytest_httpserver import HTTPServer

from tests.conftest import REPO, run_cli, serve_no_site_policies, table_recipe
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
    recipe = table_recipe(tmp_path, rows, 'name = "lookup-test"', after="retries = 0")
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
    proc = run_cli("lookup", str(tmp_path / "pics" / "a.jpg"), str(tmp_path / "pics"))
    assert proc.returncode == 2
    assert f"{tmp_path / 'pics' / 'a.jpg'}: is a file, not a directory" in proc.stderr


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


def built_with_one_work(tmp_path: Path) -> tuple[bytes, Path]:
    """A dataset of one work (a folder source) and that work's bytes."""
    work = jpeg(photo(1))
    put(tmp_path / "pics", "a.jpg", work)
    out = tmp_path / "out"
    run_cli("build", str(folder_recipe(tmp_path, ["pics"])), "--out", str(out),
            "--no-progress", check=True)
    return work, out


def test_an_unreadable_image_is_an_error_line_and_an_unreadable_folder_is_named(
        tmp_path: Path, bound_by_permissions: list[str]) -> None:
    """One image it may not read cost the whole answer ("fatal ... resume", exit 1), and a
    sub-folder it may not open was skipped in silence: "none of my works is in here"."""
    work, out = built_with_one_work(tmp_path)
    portfolio = tmp_path / "portfolio"
    (portfolio / "private").mkdir(parents=True)
    (portfolio / "1-work.jpg").write_bytes(work)
    locked = portfolio / "2-locked.jpg"
    locked.write_bytes(work)
    (portfolio / "private" / "3-work.jpg").write_bytes(work)
    locked.chmod(0)
    (portfolio / "private").chmod(0)
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def lookup(*paths: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*bound_by_permissions, sys.executable, "-m", "builder", "lookup",
                               str(out), *map(str, paths)], env=env, capture_output=True,
                              text=True, timeout=300)

    try:
        folder = lookup(portfolio)
        files = lookup(portfolio / "1-work.jpg", locked)
    finally:
        (portfolio / "private").chmod(0o755)
    assert folder.returncode == 2 and folder.stdout == "", folder.stderr
    assert f"{portfolio / 'private'}: this folder cannot be read (Permission denied)" \
        in folder.stderr
    assert "Traceback" not in folder.stderr + files.stderr
    assert files.returncode == 0, files.stderr
    found, unread = lines(files.stdout)
    assert found["matches"][0]["exact"] is True
    assert unread == {"query": str(locked), "matches": [],
                      "error": "unreadable: Permission denied; nothing was looked up for it"}


def test_a_broken_link_or_a_pipe_named_as_an_image_is_an_error_line_not_skipped(
        tmp_path: Path) -> None:
    """In a portfolio folder, a broken link or a pipe named x.jpg was left out without a word:
    the answer read as "these works are not in the dataset". Each is now its line with an
    error, and the pipe is never opened (reading it would wait for ever)."""
    work, out = built_with_one_work(tmp_path)
    portfolio = tmp_path / "portfolio"
    portfolio.mkdir()
    (portfolio / "1-work.jpg").write_bytes(work)
    (portfolio / "2-moved.jpg").symlink_to(tmp_path / "moved-away.jpg")
    os.mkfifo(portfolio / "3-pipe.png")

    proc = run_cli("lookup", str(out), str(portfolio))

    assert proc.returncode == 0, proc.stderr
    found, moved, pipe = lines(proc.stdout)
    assert found["matches"][0]["exact"] is True
    assert moved == {"query": str(portfolio / "2-moved.jpg"), "matches": [],
                     "error": "not_a_file: a broken link; nothing was looked up for it"}
    assert pipe == {"query": str(portfolio / "3-pipe.png"), "matches": [],
                    "error": "not_a_file: not a file (a pipe or a device); nothing was looked "
                             "up for it"}


def test_a_query_too_large_to_decode_is_hashed_in_chunks_not_read_into_memory(
        tmp_path: Path) -> None:
    """A 2 GiB file given by mistake was read whole: MemoryError's traceback under a memory
    limit (or the machine's memory gone). Now it is hashed in chunks, for exact copies only,
    and the rest of the portfolio is looked up."""
    work, out = built_with_one_work(tmp_path)
    portfolio = tmp_path / "portfolio"
    portfolio.mkdir()
    (portfolio / "1-work.jpg").write_bytes(work)
    huge = portfolio / "2-huge.tif"
    with huge.open("wb") as f:
        f.truncate(2 << 30)  # sparse: no disk used

    def limit_memory() -> None:  # far less than the file, far more than cleanset needs
        resource.setrlimit(resource.RLIMIT_AS, (5 << 29, 5 << 29))

    proc = subprocess.run([sys.executable, "-m", "builder", "lookup", str(out), str(portfolio)],
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=300, preexec_fn=limit_memory)
    assert proc.returncode == 0, proc.stderr
    found, big = lines(proc.stdout)
    assert found["matches"][0]["exact"] is True
    assert big["matches"] == []
    assert big["error"].startswith(f"too_large: {2 << 30} bytes, more than the ")


def test_lookup_into_a_build_that_has_not_finished_says_so(tmp_path: Path) -> None:
    """A build killed after its first commit: a work it had not reached yet was answered
    "no matches" with no word that the dataset was still incomplete."""
    works = [jpeg(photo(10 + i)) for i in range(6)]
    for i, work in enumerate(works):
        put(tmp_path / "pics", f"w{i}.jpg", work)
    out, recipe = tmp_path / "out", folder_recipe(tmp_path, ["pics"])
    build_args = ("build", str(recipe), "--out", str(out), "--no-progress")
    crashed = run_cli(*build_args, env={"CLEANSET_COMMIT_EVERY": "2",
                                        "CLEANSET_CRASH_AT": "after_commit:1"})
    assert crashed.returncode == -9, crashed.stderr
    (tmp_path / "query.jpg").write_bytes(works[5])
    proc = run_cli("lookup", str(out), str(tmp_path / "query.jpg"))
    assert proc.returncode == 0, proc.stderr
    assert lines(proc.stdout)[0]["matches"] == []
    assert f"note: build 1 into {out} has not finished; what it has not reached yet is not " \
        "in the answer" in proc.stderr
    run_cli(*build_args, check=True)
    proc = run_cli("lookup", str(out), str(tmp_path / "query.jpg"), check=True)
    assert lines(proc.stdout)[0]["matches"][0]["exact"] is True
    assert "note:" not in proc.stderr


def test_a_work_taken_down_is_answered_with_its_takedown_not_only_no_match(
        tmp_path: Path) -> None:
    """After a takedown, the artist's lookup of the work answered `"matches": []`, the same
    as for a work never taken: it now names the takedown, when and why, for the same bytes
    and for an edited copy a build's denylist refuses too."""
    work, other = variants(6), jpeg(photo(7))
    put(tmp_path / "pics", "a.jpg", work["original"])
    put(tmp_path / "pics", "b.jpg", other)
    out = tmp_path / "out"
    run_cli("build", str(folder_recipe(tmp_path, ["pics"])), "--out", str(out),
            "--no-progress", check=True)
    (query := tmp_path / "query").mkdir()
    (query / "original.jpg").write_bytes(work["original"])
    (query / "q40.jpg").write_bytes(work["q40"])
    (query / "other.jpg").write_bytes(other)
    before = {Path(g["query"]).name: g for g in
              lines(run_cli("lookup", str(out), str(query), check=True).stdout)}
    assert all("taken_down" not in g for g in before.values())
    key = before["original.jpg"]["matches"][0]["key"]
    run_cli("takedown", str(out), "--key", key, "--reason", "artist request #12", check=True)
    after = {Path(g["query"]).name: g for g in
             lines(run_cli("lookup", str(out), str(query), check=True).stdout)}
    (log,) = [json.loads(x) for x in (out / "takedowns.jsonl").read_text().splitlines()]
    for name, exact in (("original.jpg", True), ("q40.jpg", False)):
        assert after[name]["matches"] == []
        (gone,) = after[name]["taken_down"]
        assert (gone["takedown"], gone["when"], gone["reason"], gone["exact"]) == (
            "takedown-v2", log["when"], "artist request #12", exact)
        assert (gone["distance"] == 0) == exact
    assert "taken_down" not in after["other.jpg"]
    assert after["other.jpg"]["matches"][0]["found_as"] == "sample"


def test_a_work_a_build_downloaded_and_refused_is_answered_with_why(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    """A work a build fetched and refused (here its own XMP says DataMining prohibited) is
    no match, and was answered as nothing else: the lookup now says which candidate, from
    where, when and why, from the evidence archive's record of the bytes received."""
    from tests.test_optout_signals import DATA_MINING_FORMS, with_xmp

    marked = with_xmp("PNG", DATA_MINING_FORMS["attribute"], seed=3)
    serve_no_site_policies(httpserver)
    httpserver.expect_request("/art/marked.png").respond_with_data(
        marked, content_type="image/png")
    httpserver.expect_request("/art/fine.jpg").respond_with_data(
        jpeg(photo(8)), content_type="image/jpeg")
    rows = [{"id": "m", "url": httpserver.url_for("/art/marked.png"), "license": CC0},
            {"id": "f", "url": httpserver.url_for("/art/fine.jpg"), "license": CC0}]
    recipe = table_recipe(tmp_path, rows, 'name = "lookup-refused"', source='name = "art"',
                          after="retries = 0\n[image]\nmin_width = 8\nmin_height = 8")
    out = tmp_path / "out"
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    query = tmp_path / "mine.png"
    query.write_bytes(marked)
    (got,) = lines(run_cli("lookup", str(out), str(query), check=True).stdout)
    assert got["matches"] == [] and "taken_down" not in got
    (refused,) = got["refused"]
    assert (refused["candidate"], refused["source"], refused["url"], refused["reason"]) == (
        "art:m", "art", rows[0]["url"], "optout_embedded")
    assert "DataMining" in refused["detail"] and refused["decided_at"]


def test_a_damaged_denylist_line_is_named_by_verify_and_lookup_still_answers(
        tmp_path: Path) -> None:
    """verify said OK over a denylist.jsonl line the next build stops on (exit 2, after the
    dataset had been audited as sound); a lookup stopped on it too, answering nothing."""
    work, out = built_with_one_work(tmp_path)
    run_cli("takedown", str(out), "--key", "0000000000", "--reason", "request", check=True)
    with (out / "denylist.jsonl").open("a") as f:
        f.write('{"kind": "sha256", "value": "zz"}\n')
    proc = run_cli("verify", str(out))
    assert proc.returncode == 1
    assert "denylist.jsonl:4: sha256 value 'zz' is not 64 hex digits. The next build into " \
        "this directory stops on it." in proc.stdout
    query = tmp_path / "q.jpg"
    query.write_bytes(work)
    found = run_cli("lookup", str(out), str(query))
    assert found.returncode == 0, found.stderr
    assert "denylist.jsonl:4: sha256 value 'zz'" in found.stderr
    assert lines(found.stdout)[0]["taken_down"][0]["reason"] == "request"


def test_a_site_lookup_answers_for_every_work_considered_from_it_even_never_downloaded(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    """An artist's images have no bytes in the dataset to look up when a build refused them
    before downloading (their robots.txt, a licence it does not admit), and a lookup by image
    answered nothing. `--site` lists every candidate from the host and what became of it."""
    httpserver.expect_request("/robots.txt").respond_with_data(
        "User-agent: *\nDisallow: /private/\n", content_type="text/plain")
    for path in ("/ai.txt", "/.well-known/tdmrep.json"):
        httpserver.expect_request(path).respond_with_data("not found", status=404)
    for name, seed in (("a", 1), ("d", 2), ("f", 3)):
        httpserver.expect_request(f"/art/{name}.jpg").respond_with_data(
            jpeg(photo(seed)), content_type="image/jpeg")
    httpserver.expect_request("/art/e.jpg").respond_with_data(jpeg(photo(1)),
                                                              content_type="image/jpeg")
    httpserver.expect_request("/down/g.jpg").respond_with_data("busy", status=503)
    other = httpserver.url_for("/art/f.jpg").replace("localhost", "127.0.0.1")  # another host
    rows = [{"id": "a", "url": httpserver.url_for("/art/a.jpg"), "license": CC0},
            {"id": "b", "url": httpserver.url_for("/art/b.jpg"),
             "license": "LicenseRef-all-rights-reserved"},
            {"id": "c", "url": httpserver.url_for("/private/c.jpg"), "license": CC0},
            {"id": "d", "url": httpserver.url_for("/art/d.jpg"), "license": CC0},
            {"id": "e", "url": httpserver.url_for("/art/e.jpg"), "license": CC0},
            {"id": "f", "url": other, "license": CC0},
            {"id": "g", "url": httpserver.url_for("/down/g.jpg"), "license": CC0}]
    recipe = table_recipe(tmp_path, rows, 'name = "lookup-site"', source='name = "art"',
                          after="retries = 0\n[image]\nmin_width = 8\nmin_height = 8")
    out = tmp_path / "out"
    run_cli("build", str(recipe), "--out", str(out), "--no-progress")
    with_d = lines(run_cli("lookup", str(out), "--site", "localhost", check=True).stdout)
    key_d = next(c["key"] for c in with_d[0]["candidates"] if c["candidate"] == "art:d")
    run_cli("takedown", str(out), "--key", key_d, "--reason", "artist's request", check=True)
    served = httpserver.url_for("/").upper()  # a URL on the site, as typed
    proc = run_cli("lookup", str(out), "--site", served, "--site", "127.0.0.1")
    assert proc.returncode == 0, proc.stderr
    here, there = lines(proc.stdout)
    assert here["site"] == "localhost" and there["site"] == "127.0.0.1"
    found = {c["candidate"]: (c["found_as"], c["reason"]) for c in here["candidates"]}
    assert found == {"art:a": ("sample", None), "art:b": ("refused", "license_not_allowed"),
                     "art:c": ("refused", "optout_robots_txt"),
                     "art:d": ("taken_down", None),
                     "art:e": ("duplicate", "duplicate_exact"),
                     "art:g": ("unreachable", "http_unavailable")}
    said = {c["candidate"]: c for c in here["candidates"]}
    assert said["art:c"]["url"] == rows[2]["url"] and "Disallow" in said["art:c"]["detail"]
    assert said["art:d"]["detail"] == "takedown-v2: artist's request"
    assert said["art:d"]["key"] == key_d and said["art:a"]["license"] == "CC0-1.0"
    assert [(c["candidate"], c["found_as"]) for c in there["candidates"]] == [("art:f", "sample")]
    nothing = run_cli("lookup", str(out), "--site", "artist.example", check=True)
    assert lines(nothing.stdout) == [{"site": "artist.example", "denylisted": None,
                                      "candidates": []}]
    bad = run_cli("lookup", str(out), "--site", "not a host")
    assert bad.returncode == 2 and "'not a host' is not a host name" in bad.stderr
    neither = run_cli("lookup", str(out))
    assert neither.returncode == 2 and "give an image or a folder of images" in neither.stderr
