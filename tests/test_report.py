"""report.html as a licensing lead reads it: every section from a real build with mixed
licences, refusals, duplicates, Commons restrictions, a robots.txt opt-out and a takedown;
then rendered by headless Chromium at 1280 px with nothing overflowing its box."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from pytest_httpserver import HTTPServer

from tests.api_support import recipe_text
from tests.conftest import make_image, run_cli, write_recipe
from tests.test_optout_signals import DATA_MINING_FORMS, with_xmp

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def refusing_host() -> Iterator[HTTPServer]:
    """A second origin whose robots.txt refuses our product token."""
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    server.expect_request("/robots.txt").respond_with_data(
        "User-agent: cleanset\nDisallow: /private/\n", content_type="text/plain")
    for i in range(3):
        server.expect_request(f"/private/{i}.jpg").respond_with_data(
            make_image(900 + i), content_type="image/jpeg")
    server.expect_request("/public/0.jpg").respond_with_data(make_image(950),
                                                              content_type="image/jpeg")
    # Refused by the image response's header, and by the image's own XMP.
    server.expect_request("/signals/header.jpg").respond_with_data(
        make_image(960), content_type="image/jpeg", headers={"X-Robots-Tag": "noai"})
    server.expect_request("/signals/xmp.jpg").respond_with_data(
        with_xmp("JPEG", DATA_MINING_FORMS["element"], seed=961), content_type="image/jpeg")
    yield server
    server.clear()
    server.stop()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, refusing_host: HTTPServer) -> Path:
    """Commons replay (BY-SA, NC, no licence, PD with Restrictions, CC0, BY, a SHA-1
    mismatch) plus a table with an exact copy, a BY-NC-SA row and a robots.txt opt-out; then a
    takedown of one sample."""
    from tests.test_source_wikimedia import FakeCommons

    root = tmp_path_factory.mktemp("report")
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    try:
        commons = FakeCommons(server)
        copy_of = commons.pages[0]["imageinfo"][0]["url"]
        rows = [
            {"url": copy_of, "license": "https://creativecommons.org/licenses/by/4.0/",
             "creator": "Mirror"},
            {"url": server.url_for("/upload/0.jpg") + "?nc",
             "license": "https://creativecommons.org/licenses/by-nc-sa/4.0/"},
        ] + [{"url": refusing_host.url_for(f"/private/{i}.jpg"),
              "license": "https://creativecommons.org/publicdomain/zero/1.0/"}
             for i in range(3)] + [
            {"url": refusing_host.url_for("/public/0.jpg"),
             "license": "https://creativecommons.org/licenses/by/4.0/", "creator": "Mirror"}] + [
            {"url": refusing_host.url_for(f"/signals/{name}.jpg"),
             "license": "https://creativecommons.org/publicdomain/zero/1.0/"}
            for name in ("header", "xmp")]
        (root / "urls.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        recipe = write_recipe(root / "recipe.toml", recipe_text("report-test", f"""
kind = "wikimedia"
api = "{commons.url}"
category = "Test files"
batch = 3

[[sources]]
kind = "table"
name = "mirror"
path = "urls.jsonl"
"""))
        out = root / "out"
        run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    finally:
        server.clear()
        server.stop()
    run_cli("takedown", str(out), "--key", "0000000002", "--reason", "rights holder request #7",
            check=True)
    run_cli("report", str(out), check=True)
    return out


@pytest.fixture(scope="module")
def page(dataset: Path) -> str:
    return (dataset / "report.html").read_text(encoding="utf-8")


def section(page: str, anchor: str) -> str:
    found = re.search(rf'<section id="{anchor}">(.*?)</section>', page, re.S)
    assert found, f"no section {anchor}"
    return re.sub(r"<[^>]+>", " ", found.group(1))


def test_header_names_version_builds_timeframe_policy_and_location(page: str,
                                                                   dataset: Path) -> None:
    head = section(page, "summary")
    assert "report-test, version 2" in head  # the build, then the takedown
    assert "build 1:" in head and "cleanset 0.1.0+src." in head
    assert "Retrieved" in head and "→" in head
    assert "commercial" in head and "the CC-BY-SA family" in head
    assert str(dataset.resolve()) in head
    assert 'name="cleanset-version" content="2"' in page


def test_obligations_count_attribution_share_alike_and_restrictions(page: str) -> None:
    text = " ".join(section(page, "obligations").split())
    assert re.search(r"(\d+) require attribution", text)
    assert "0 require attribution but name no creator" in text  # each has its creator
    assert "CC-BY-SA-4.0" in text and "are share-alike" in text
    assert "1 carry non-copyright restrictions" in text and "trademarked" in text
    assert "ATTRIBUTION.md" in page


def test_licences_by_source_table_and_evidence(page: str) -> None:
    text = " ".join(section(page, "licences").split())
    assert "wikimedia" in text and "mirror" in text
    assert "rest on one licence claim" in text
    assert "license_conflict" in text
    assert 'class="swatch"' in page  # colour per licence kind, with a legend
    assert "public domain / CC0" in text


def test_refusals_are_grouped_with_examples(page: str) -> None:
    text = " ".join(section(page, "refusals").split())
    for group in ("licence (", "opt-out (", "dedup ("):
        assert group in text, group
    for reason in ("license_not_allowed", "duplicate_exact",
                   "optout_robots_txt"):
        assert reason in text, reason
    assert "examples" in text and "/private/" in text


def test_refusals_say_how_to_look_a_candidate_up(page: str, dataset: Path) -> None:
    text = " ".join(section(page, "refusals").split())
    assert f"cleanset evidence {dataset.resolve()} URL" in text
    assert f"cleanset lookup {dataset.resolve()} IMAGE" in text


def test_consent_names_the_host_whose_robots_txt_refused(page: str,
                                                         refusing_host: HTTPServer) -> None:
    text = " ".join(section(page, "consent").split())
    host = f"127.0.0.1:{refusing_host.port}"
    assert host in text and "robots.txt" in text
    assert re.search(r"robots\.txt 3\b", text), text


def test_consent_counts_each_refusal_on_its_signal_s_own_row(page: str) -> None:
    """A header or embedded refusal was counted under its reason code: the page said
    'x-robots-tag 0' and, on another row, 'optout_x_robots_tag 1' for the same refusal."""
    text = " ".join(section(page, "consent").split())
    assert re.search(r"x-robots-tag 1\b", text), text
    assert re.search(r"plus:DataMining 1\b", text), text
    assert "optout_" not in text


def test_concentration_shows_creators_sources_curve_and_cap(page: str, dataset: Path) -> None:
    text = " ".join(section(page, "concentration").split())
    assert "Cap in force: no per-creator cap" in text
    creators = pq.read_table(dataset / "manifest.parquet").column("creator").to_pylist()
    named = {c.strip() for c in creators if c and c.strip()}
    assert f"Top {min(20, len(named))} of {len(named)} creators" in text
    assert "wikimedia" in text
    assert f"{len(named)} creators" in " ".join(section(page, "summary").split())
    assert "<polyline" in page


def test_duplicates_show_the_cluster_found_under_another_licence(page: str) -> None:
    text = " ".join(section(page, "duplicates").split())
    assert re.search(r"\b1 exact copies", text)
    assert "CC-BY-4.0" in text and "CC-BY-SA-4.0" in text and "mirror" in text


def test_history_lists_versions_and_the_takedown(page: str) -> None:
    text = " ".join(section(page, "history").split())
    assert "takedown" in text and "rights holder request #7" in text
    assert "key 0000000002" in text
    # named by the id the versions' notes and the rechecks' "taken down in" use
    takedowns = text[text.index("Takedowns"):]
    assert re.search(r"takedown-v2 \d{4}-\d\d-\d\dT[\d:]+Z key 0000000002 rights holder "
                     r"request #7 1 ", takedowns), takedowns


def test_report_uses_no_network_and_no_script(page: str) -> None:
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["']https?://""", page)


def chromium_at_1280px(profile: Path) -> list[str]:
    return [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--window-size=1280,2400"]


def probed(page: Path, probe: str, attribute: str, tmp_path: Path) -> Any:
    """What `probe` (a script ending the page's body) left in the body's `attribute`, the
    page laid out by headless Chromium at 1280 px."""
    copy = tmp_path / "probe.html"
    copy.write_text(page.read_text(encoding="utf-8").replace("</body>", probe),
                    encoding="utf-8")
    dom = subprocess.run([*chromium_at_1280px(tmp_path / "profile"), "--dump-dom",
                          copy.as_uri()],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    found = re.search(rf'{attribute}="([^"]*)"', dom)
    assert found, "the probe did not run"
    return json.loads(found.group(1).replace("&quot;", '"'))


OVERFLOW_PROBE = """<script>
const over = [];
for (const el of document.querySelectorAll('td, th, h1, h2, h3, dd, dt, .card, p, li')) {
  if (el.scrollWidth > el.clientWidth + 1) over.push(el.tagName + ': ' + el.textContent.slice(0, 60));
}
if (document.documentElement.scrollWidth > window.innerWidth + 1) over.push('page is wider than the window');
document.body.setAttribute('data-overflow', JSON.stringify(over));
</script></body>"""


@needs_chromium
def test_at_1280px_nothing_overflows_its_box_and_the_page_is_not_blank(
        dataset: Path, tmp_path: Path) -> None:
    from PIL import Image

    assert probed(dataset / "report.html", OVERFLOW_PROBE, "data-overflow", tmp_path) == []
    shot = tmp_path / "shot.png"
    subprocess.run([*chromium_at_1280px(tmp_path / "profile-shot"), f"--screenshot={shot}",
                    (dataset / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    with Image.open(shot) as img:
        colours = img.convert("RGB").getcolors(maxcolors=1_000_000) or []
    assert len(colours) > 8, "the screenshot is (nearly) blank"


WORD_PROBE = """<script>
const split = [];
for (const cell of document.querySelectorAll('#rechecks td, #rechecks th')) {
  const text = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
  for (let node = text.nextNode(); node; node = text.nextNode()) {
    for (const word of node.data.matchAll(/\\S+/g)) {
      const range = document.createRange();
      range.setStart(node, word.index);
      range.setEnd(node, word.index + word[0].length);
      if (range.getClientRects().length > 1) split.push(word[0]);
    }
  }
}
const box = document.querySelector('#rechecks div.scroll');
if (box && box.scrollWidth > box.clientWidth + 1) split.push('the table is wider than the page');
document.body.setAttribute('data-split', JSON.stringify(split));
</script></body>"""


@needs_chromium
def test_at_1280px_the_rechecks_table_fits_and_breaks_no_word_or_date(
        dataset: Path, tmp_path: Path) -> None:
    """Its 13 columns once broke `license_changed`, `takedown-v2` and each date mid-word."""
    out = tmp_path / "copy"
    shutil.copytree(dataset, out)
    assert run_cli("recheck", str(out), "--no-progress", "--source", "mirror").returncode == 0
    run_cli("report", str(out), check=True)
    assert probed(out / "report.html", WORD_PROBE, "data-split", tmp_path) == []
    assert "<th>license changed</th>" in (out / "report.html").read_text(encoding="utf-8")


def test_a_report_with_thousands_of_samples_keeps_its_numbers_whole() -> None:
    """Labels and numbers are table cells, never SVG text cut at a fixed width."""
    from builder.exports.report import _chart

    html = _chart([("CC-BY-SA-4.0", 3600, "#E69F00"), ("CC0-1.0", 400, "#009E73")], 4000)
    assert ">3,600<" in html and ">90.0%<" in html and ">400<" in html


def test_a_build_that_adds_a_version_rewrites_the_report_a_user_asked_for(
        tmp_path: Path) -> None:
    """A report written after a first build once stayed at version 1 through the next
    build, and `cleanset verify` then failed on a dataset nobody had touched."""
    from tests.conftest import REPO

    recipe = REPO / "examples" / "offline" / "recipe.toml"
    out = tmp_path / "out"
    run_cli("build", str(recipe), "--out", str(out), "--limit", "3", "--no-progress",
            check=True)
    run_cli("report", str(out), check=True)
    assert '<meta name="cleanset-version" content="1">' in (out / "report.html").read_text()
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    assert '<meta name="cleanset-version" content="2">' in (out / "report.html").read_text()
    proc = run_cli("verify", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_report_removes_the_temporary_a_killed_report_left_and_no_live_one_s(
        tmp_path: Path) -> None:
    """`kill -9` as a report wrote left `report.html.PID.tmp` in the dataset for good: each
    report writes under a name of its own, so no later one replaced it."""
    import os
    import sys

    from tests.conftest import REPO

    out = tmp_path / "out"
    run_cli("build", str(REPO / "examples" / "offline" / "recipe.toml"), "--out", str(out),
            "--no-progress", check=True)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = out / f"report.html.{int(gone.stdout)}.tmp"  # its process has ended
    live = out / f"report.html.{os.getpid()}.tmp"  # this test's: a report still writing
    for path in (dead, live):
        path.write_text("<html><body>half a pa")
    run_cli("report", str(out), check=True)
    assert not dead.exists() and live.exists()
    assert (out / "report.html").read_text().rstrip().endswith("</html>")


def test_reports_of_one_dataset_run_at_once_each_write_it_whole(tmp_path: Path) -> None:
    """Two `cleanset report DIR` at once (both only read, so both may run) wrote report.html
    under one temporary name: one renamed the other's half-written page into place and the
    other's rename then failed, exit 2 "report.html: cannot be written (No such file or
    directory)", 3 in 100 reports. Two processes writing 60 reports each, started together."""
    import os
    import sys

    from tests.conftest import REPO

    out = tmp_path / "out"
    run_cli("build", str(REPO / "examples" / "offline" / "recipe.toml"), "--out", str(out),
            "--no-progress", check=True)
    # Each waits for a line on stdin, so both start writing together.
    script = ("import sys; from pathlib import Path; from builder.errors import UserError; "
              "from builder.exports.report import write_report\n"
              "sys.stdin.readline()\n"
              "for _ in range(60):\n"
              "    try:\n        write_report(Path(sys.argv[1]))\n"
              "    except UserError as exc:\n        sys.exit(str(exc))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writers = [subprocess.Popen([sys.executable, "-c", script, str(out)], env=env,
                                stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    for writer in writers:
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()
    errors = [writer.communicate(timeout=120)[1] for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0], errors
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("report")) == [
        "report.html"]
    proc = run_cli("verify", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- sign-off: what to sign, and what is still open -------------------------------------------
def signoff(page: str) -> str:
    """The sign-off section's text, inline tags (<b>, <code>) dropped without a space."""
    found = re.search(r'<section id="signoff">(.*?)</section>', page, re.S)
    assert found, "no sign-off section"
    inline = re.sub(r"</?(b|code|a)\b[^>]*>", "", found.group(1))
    return " ".join(re.sub(r"<[^>]+>", " ", inline).split())


def test_signoff_comes_first_and_names_version_manifest_sha256_and_date(page: str,
                                                                        dataset: Path) -> None:
    """The page once gave no manifest sha256 and no date: nothing to put a signature to."""
    import hashlib

    assert page.index('<section id="signoff">') < page.index('<section id="summary">')
    text = signoff(page)
    assert "report-test, version 2" in text
    manifest = hashlib.sha256((dataset / "manifest.parquet").read_bytes()).hexdigest()
    assert f"manifest.parquet sha256 {manifest}" in text
    assert "Report written 2023-11-14T22:13:20Z by cleanset" in text  # SOURCE_DATE_EPOCH
    attribution = hashlib.sha256((dataset / "ATTRIBUTION.md").read_bytes()).hexdigest()
    assert f"ATTRIBUTION.md {attribution} yes" in text
    # built today and never rechecked: its build checked every sample, nothing is open
    assert "Nothing open found by this page" in text and "Never rechecked" not in text


def test_a_dataset_never_rechecked_months_after_its_build_is_open(dataset: Path,
                                                                   tmp_path: Path) -> None:
    """On build day the build has just checked every sample (the page once listed "never
    rechecked" as open then, for every new dataset); months later the sources' word is old."""
    import time

    later = str(int(time.time()) + 100 * 86400)  # builds are dated by the wall clock
    run_cli("report", str(dataset), "--out", str(tmp_path / "later.html"),
            env={"SOURCE_DATE_EPOCH": later}, check=True)
    text = signoff((tmp_path / "later.html").read_text(encoding="utf-8"))
    assert "1 open before sign-off" in text
    assert re.search(r"Never rechecked \(built 10\d days ago\)", text), text
    assert "Nothing open" not in text


def test_obligations_say_none_is_nc_or_nd_under_a_commercial_policy(page: str) -> None:
    text = " ".join(section(page, "obligations").split())
    assert "0 are NonCommercial or NoDerivatives" in text
    assert "policy commercial admits neither" in text


CC0_URL = "https://creativecommons.org/publicdomain/zero/1.0/"


def built_from_images(tmp_path: Path, name: str, *, license: str = CC0_URL,
                      policy: str = "commercial", dataset: str = "") -> Path:
    """The dataset `name` built from tmp_path/images, every image under `license` by the
    recipe; `dataset`: more lines under [dataset]."""
    recipe = write_recipe(tmp_path / "recipe.toml", f"""
[dataset]
name = "{name}"
{dataset}
[policy]
use = "{policy}"
[[sources]]
kind = "folder"
name = "mine"
path = "images"
license = "{license}"
[image]
min_width = 8
min_height = 8
""")
    out = tmp_path / "out"
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    return out


def test_nc_images_under_open_research_and_a_recipe_only_licence_claim_are_named(
        tmp_path: Path) -> None:
    """A folder whose licence only the recipe states, built under open-research: the NC
    images are counted as such, and resting on the recipe's word alone is an open item."""
    for i in range(3):
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "images" / f"{i}.jpg").write_bytes(make_image(40 + i))
    out = built_from_images(tmp_path, "nc-test", policy="open-research",
                            license="https://creativecommons.org/licenses/by-nc/4.0/")
    run_cli("report", str(out), check=True)
    page = (out / "report.html").read_text(encoding="utf-8")
    obligations = " ".join(section(page, "obligations").split())
    assert "3 are NonCommercial or NoDerivatives CC-BY-NC-4.0" in obligations
    assert "policy open-research admits them: not for commercial training" in obligations
    assert "3 require attribution but name no creator CC-BY-NC-4.0" in obligations
    assert "3 images rest only on the recipe's own licence claim" in signoff(page)
    # no image names a creator: no creator counted (the page once said "creators 1",
    # the "(unknown)" one)
    assert "0 creators" in " ".join(section(page, "summary").split())
    assert "No image names its creator (3 images)" in \
        " ".join(section(page, "concentration").split())


def test_images_naming_no_creator_are_not_ranked_as_a_creator(tmp_path: Path) -> None:
    """They were one bar among the creators, so the page said "Top 3 of 2 creators" and
    called them "the top creator" of the cumulative share when they were the most."""
    images = tmp_path / "images"
    images.mkdir()
    for i, creator in enumerate(["Ann", "Ann", "Bo", None, None, None]):
        (images / f"{i}.jpg").write_bytes(make_image(120 + i))
        if creator:
            (images / f"{i}.jpg.json").write_text(json.dumps({"creator": creator}))
    out = built_from_images(tmp_path, "anonymous")
    run_cli("report", str(out), check=True)
    text = " ".join(section((out / "report.html").read_text(encoding="utf-8"),
                            "concentration").split())
    assert "Top 2 of 2 creators (and 3 images that name none)" in text
    # ranked first by count, the unnamed images come after the creators
    assert text.index("Ann 2") < text.index("Bo 1") < text.index("(no creator named) 3")
    assert "creators, most images first (2)" in text
    assert "The top creator holds 33.3% of the images; all 2 hold 50.0%; 50.0% name no " \
           "creator." in text


def test_an_unfinished_recheck_names_the_refusals_it_has_already_found(tmp_path: Path) -> None:
    """Its committed verdicts were not on the page: only "has not finished (1 of 3 samples
    judged)", while a sample it had found deleted was still in the dataset."""
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        (images / f"{i}.jpg").write_bytes(make_image(140 + i))
    out = built_from_images(tmp_path, "half-rechecked")
    (images / "0.jpg").unlink()
    killed = run_cli("recheck", str(out), "--no-progress",
                     env={"CLEANSET_RECHECK_CHUNK": "1", "CLEANSET_CRASH_AT": "recheck_chunk:1"})
    assert killed.returncode == -9, killed.stderr
    run_cli("report", str(out), check=True)
    text = signoff((out / "report.html").read_text(encoding="utf-8"))
    assert "Recheck 1 has not finished (1 of 3 samples judged)" in text
    assert ("It has already found 1 images still in the dataset that would now be refused: "
            "0000000000 deleted:") in text
    assert f"cleanset recheck {out.resolve()} --apply --reason TEXT" in text


def test_a_limited_build_an_interrupted_takedown_and_an_edited_paper_are_open(
        tmp_path: Path) -> None:
    """Each once left the page silent: a build stopped at --limit read as finished, images
    added since the last recheck or a recheck of a sample as all rechecked, an interrupted
    takedown was only a note on stderr, an edited or missing paper went unmentioned."""
    import sqlite3

    from tests.conftest import REPO

    recipe = REPO / "examples" / "offline" / "recipe.toml"
    out = tmp_path / "out"
    run_cli("build", str(recipe), "--out", str(out), "--limit", "4", "--no-progress",
            check=True)
    run_cli("report", str(out), check=True)
    text = signoff((out / "report.html").read_text(encoding="utf-8"))
    assert "Build 1 stopped before reading its sources to the end" in text

    run_cli("recheck", str(out), "--no-progress", check=True)
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    text = signoff((out / "report.html").read_text(encoding="utf-8"))  # rewritten by it
    assert "stopped before reading" not in text and "has not finished" not in text
    assert re.search(r"\b[1-9] images were added after the last recheck", text), text
    run_cli("recheck", str(out), "--no-progress", "--sample", "2", "--seed", "1", check=True)
    run_cli("report", str(out), check=True)
    text = signoff((out / "report.html").read_text(encoding="utf-8"))
    assert "The last recheck covered part of the dataset" in text
    summary = " ".join(section((out / "report.html").read_text(encoding="utf-8"),
                               "summary").split())
    assert re.search(r"Rechecked \S+Z \(recheck 2 by cleanset \S+: 2 samples of version 2, "
                     r"every source; a random sample, seed 1\): \d drifted", summary), summary
    assert "added after the last recheck" not in text

    killed = run_cli("takedown", str(out), "--key", "0000000001", "--reason", "asked",
                     env={"CLEANSET_CRASH_AT": "takedown_renamed:1"})
    assert killed.returncode == -9, killed.stderr
    run_cli("report", str(out), check=True)
    text = signoff((out / "report.html").read_text(encoding="utf-8"))
    # what it removes, when and why: takedowns.jsonl has no line of it yet
    assert re.search(r"A takedown is unfinished: takedown-v3 \(started \d{4}-[\d-]+T[\d:]+Z, "
                     r"removing 1 images by key 0000000001; reason: asked\) was interrupted",
                     text), text
    assert f"cleanset takedown {out.resolve()}" in text
    run_cli("takedown", str(out), check=True)  # finishes it, and rewrites the page
    text = signoff((out / "report.html").read_text(encoding="utf-8"))
    assert "offline-example, version 3" in text and "takedown is unfinished" not in text
    card = (out / "README.md").read_text(encoding="utf-8")  # rewritten by the takedown
    assert re.search(r"Last rechecked against its sources \S+Z \(recheck 2, 2 samples of "
                     r"version 2, every source; a random sample, seed 1\): ", card), card

    with (out / "ATTRIBUTION.md").open("a", encoding="utf-8") as f:
        f.write("\nAll images by me.\n")
    with sqlite3.connect(out / "ledger.sqlite") as db:  # a ledger edited by hand
        db.execute("UPDATE samples SET license = 'CC-BY-NC-4.0' WHERE key = '0000000000'")
    page = tmp_path / "page.html"
    run_cli("report", str(out), "--out", str(page), check=True)
    text = signoff(page.read_text(encoding="utf-8"))
    assert "Papers changed since cleanset wrote them: ATTRIBUTION.md" in text
    assert "ATTRIBUTION.md" in text and "no: changed since" in text
    assert ("1 images carry a licence the policy of their build does not admit: "
            "CC-BY-NC-4.0 (1)") in text
    (out / "attribution.csv").unlink()
    run_cli("report", str(out), "--out", str(page), check=True)
    assert "Papers missing: attribution.csv" in signoff(page.read_text(encoding="utf-8"))


def test_a_takedown_of_many_keys_lists_the_first_ten_not_every_one(tmp_path: Path) -> None:
    """A recheck --apply (or any takedown) naming thousands of keys put every one on the
    page; the table shows ten per cell and says how many more (takedowns.jsonl has all)."""
    (tmp_path / "images").mkdir()
    for i in range(14):
        (tmp_path / "images" / f"{i:02d}.jpg").write_bytes(make_image(70 + i))
    out = built_from_images(tmp_path, "many", dataset="samples_per_shard = 1")
    keys = [f"{i:010d}" for i in range(12)]
    run_cli("takedown", str(out), *[a for k in keys for a in ("--key", k)], "--reason", "asked",
            check=True)
    run_cli("report", str(out), check=True)
    text = " ".join(section((out / "report.html").read_text(encoding="utf-8"),
                            "history").split())
    assert f"key {', '.join(keys[:10])} …and 2 more" in text
    assert keys[10] not in text and "…and 2 more" in text
    assert "000000.tar, 000001.tar" in text  # shards deleted: ten, then the count


def test_undecided_candidates_an_unfinished_recheck_and_an_unfinished_build_are_open(
        tmp_path: Path, httpserver: HTTPServer) -> None:
    """Each is listed with the command that settles it, and none reads as nothing open."""
    from tests.conftest import table_recipe
    from tests.test_transient import free_port, serve_host

    cc0 = "https://creativecommons.org/publicdomain/zero/1.0/"
    rows = [{"id": name, "url": url, "license": cc0}
            for name, url in zip("ab", serve_host(httpserver, ["a", "b"]), strict=True)]
    rows.append({"id": "down", "url": f"http://127.0.0.1:{free_port()}/c.jpg", "license": cc0})
    recipe = table_recipe(tmp_path, rows, 'name = "open-items"', after="retries = 0")
    out = tmp_path / "out"
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    run_cli("report", str(out), check=True)
    text = signoff((out / "report.html").read_text(encoding="utf-8"))
    assert "1 open before sign-off" in text
    assert "1 candidates were not decided: the network failed" in text

    killed = run_cli("recheck", str(out), "--no-progress",
                     env={"CLEANSET_RECHECK_CHUNK": "1", "CLEANSET_CRASH_AT": "recheck_chunk:1"})
    assert killed.returncode == -9, killed.stderr
    run_cli("report", str(out), check=True)
    text = signoff((out / "report.html").read_text(encoding="utf-8"))
    assert "Recheck 1 has not finished (1 of 2 samples judged)" in text
    assert f"cleanset recheck {out.resolve()} again" in text

    # The rerun that retries the undecided candidate reopens build 1; killed before it ends:
    killed = run_cli("build", str(recipe), "--out", str(out), "--no-progress",
                     env={"CLEANSET_CRASH_AT": "before_finish_commit:1"})
    assert killed.returncode == -9, killed.stderr
    run_cli("report", str(out), check=True)
    text = signoff((out / "report.html").read_text(encoding="utf-8"))
    assert "Build 1 has not finished" in text and "Run the same cleanset build" in text
    assert "Nothing open" not in text


def test_a_recipe_s_own_recheck_age_is_what_the_report_names_as_old(tmp_path: Path) -> None:
    """`[recheck] max_age_days`: a team rechecking monthly is told of a 40-day-old recheck,
    which the fixed 90 days let pass; a value that is no age is refused before any build."""
    import time

    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "0.jpg").write_bytes(make_image(50))
    text = f"""
[dataset]
name = "monthly"
[policy]
use = "commercial"
[[sources]]
kind = "folder"
name = "mine"
path = "images"
license = "{CC0_URL}"
[image]
min_width = 8
min_height = 8
[recheck]
max_age_days = 30
"""
    bad = write_recipe(tmp_path / "bad.toml", text.replace("max_age_days = 30",
                                                           "max_age_days = 0"))
    refused = run_cli("build", str(bad), "--out", str(tmp_path / "never"), "--no-progress")
    assert refused.returncode == 2 and not (tmp_path / "never").exists()
    assert "[recheck] max_age_days must be 1 or more (days)." in refused.stderr
    recipe = write_recipe(tmp_path / "recipe.toml", text)
    out = tmp_path / "out"
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    run_cli("recheck", str(out), "--no-progress", check=True)

    def open_items(days: int) -> str:
        later = str(int(time.time()) + days * 86400)
        page = tmp_path / f"in-{days}-days.html"
        run_cli("report", str(out), "--out", str(page), env={"SOURCE_DATE_EPOCH": later},
                check=True)
        return signoff(page.read_text(encoding="utf-8"))

    assert "days old" not in open_items(20)
    assert "The last recheck is 40 days old" in open_items(40)
    assert "older than 30 days, the recipe's [recheck] max_age_days" in open_items(40)
