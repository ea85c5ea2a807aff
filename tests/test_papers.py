"""The dataset's papers (SPDX, Croissant, card, attribution, report) from a real build."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, make_image, run_cli, write_recipe

CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"
BY4 = "https://creativecommons.org/licenses/by/4.0/"
BYSA4 = "https://creativecommons.org/licenses/by-sa/4.0/"
PDM = "https://creativecommons.org/publicdomain/mark/1.0/"

# (file, licence, creator, title, caption): nulls on the first samples on purpose, so that
# type inference from the first rows would guess wrongly.
WORKS = [
    ("a.jpg", CC0, None, None, None),
    ("b.jpg", BY4, "Ada Lovelace", "Engine", "a drawing of an engine"),
    ("c.png", BYSA4, "Grace Hopper", "Bug", None),
    ("d.jpg", PDM, "NASA", "Moon", "the moon"),
    ("e.jpg", BY4, "Ada Lovelace", None, "more blocks"),
    ("f.jpg", BYSA4, None, "No creator known", None),
]
BY_KINDS = (BY4, BYSA4)
# The credit a source gives with a work (a licensor's requested attribution line)
SOURCE_CREDITS = {"b.jpg": "Photo: Ada Lovelace / Analytical Engine Trust"}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("papers")
    images = root / "images"
    images.mkdir()
    for seed, (name, lic, creator, title, caption) in enumerate(WORKS):
        fmt = "PNG" if name.endswith(".png") else "JPEG"
        (images / name).write_bytes(make_image(100 + seed, (96 + 16 * seed, 64), fmt=fmt))
        sidecar = {"license": lic, "creator": creator, "title": title, "caption": caption,
                   "landing_url": f"https://example.org/works/{name}",
                   "attribution": SOURCE_CREDITS.get(name)}
        (images / f"{name}.json").write_text(
            json.dumps({k: v for k, v in sidecar.items() if v is not None}), encoding="utf-8")
    recipe = write_recipe(root / "recipe.toml", """
[dataset]
name = "papers-test"
samples_per_shard = 2
description = "Six generated images under four licences."

[policy]
use = "commercial"

[[sources]]
kind = "folder"
name = "generated"
path = "images"
""")
    out = root / "out"
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True)
    return out


def manifest_keys(out: Path) -> list[str]:
    import pyarrow.parquet as pq

    return pq.read_table(out / "manifest.parquet", columns=["key"]).column("key").to_pylist()


def test_every_build_writes_all_papers_atomically(built: Path) -> None:
    for name in ("spdx.json", "croissant.json", "README.md", "ATTRIBUTION.md",
                 "attribution.csv", "manifest.parquet", "candidates.parquet"):
        assert (built / name).stat().st_size > 0, name
    assert not list(built.glob("*.tmp*")), "a temporary paper was left behind"
    assert len(manifest_keys(built)) == len(WORKS)


def test_spdx_round_trips_through_spdx_tools_with_no_validation_messages(built: Path) -> None:
    from spdx_tools.spdx.model import ChecksumAlgorithm, RelationshipType
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    document = parse_file(str(built / "spdx.json"))
    assert validate_full_spdx_document(document) == []
    assert len(document.files) == len(WORKS)
    package = document.packages[0]
    assert package.version == "1"
    for f in document.files:
        algorithms = {c.algorithm for c in f.checksums}
        assert {ChecksumAlgorithm.SHA1, ChecksumAlgorithm.SHA256} <= algorithms
        assert f.license_concluded is not None and f.license_info_in_file
        assert "landing_url: https://example.org/works/" in (f.comment or "")
    contains = [r for r in document.relationships
                if r.relationship_type == RelationshipType.CONTAINS]
    assert len(contains) == len(WORKS)
    by = [f for f in document.files if str(f.license_concluded).startswith("CC-BY")]
    assert by and all(f.attribution_texts for f in by)
    # the credit the source gave is an attribution text of its own, beside the line made
    credited = [f for f in document.files if SOURCE_CREDITS["b.jpg"] in f.attribution_texts]
    assert len(credited) == 1 and len(credited[0].attribution_texts) == 2


def test_licence_refs_get_extracted_licensing_info_and_ids_stay_valid(tmp_path: Path) -> None:
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    from builder.exports.papers import gather_facts
    from builder.exports.spdx import build_document
    from builder.ledger import Ledger

    ledger = Ledger(tmp_path / "ledger.sqlite")
    fill_ledger(ledger, ["LicenseRef-US-Government-Work", "CC0-1.0", "LicenseRef-Odd+Id"],
                keys=["k_1", "k-2", "k3"])
    document = build_document(ledger, gather_facts(ledger))
    assert validate_full_spdx_document(document) == []
    refs = {e.license_id for e in document.extracted_licensing_info}
    assert refs == {"LicenseRef-US-Government-Work", "LicenseRef-Odd-Id"}
    assert {f.spdx_id for f in document.files} == {
        "SPDXRef-File-k.1", "SPDXRef-File-k-2", "SPDXRef-File-k3"}


def test_fast_validation_reports_the_same_messages_as_spdx_tools(tmp_path: Path) -> None:
    from spdx_tools.spdx.model import Relationship, RelationshipType
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    from builder.exports.papers import gather_facts
    from builder.exports.spdx import build_document, validate_document
    from builder.ledger import Ledger

    ledger = Ledger(tmp_path / "ledger.sqlite")
    fill_ledger(ledger, ["CC-BY-4.0"] * 30)
    document = build_document(ledger, gather_facts(ledger))
    document.relationships[3].related_spdx_element_id = "SPDXRef-nowhere"
    document.relationships.append(
        Relationship("SPDXRef-Dataset", RelationshipType.CONTAINS, "bad_id"))
    ours = sorted(m.validation_message for m in validate_document(document))
    theirs = sorted(m.validation_message for m in validate_full_spdx_document(document))
    assert ours == theirs
    assert len(ours) == 3


def test_the_streamed_spdx_document_is_the_whole_document_spdx_tools_reads_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    from builder.exports.papers import gather_facts
    from builder.exports.spdx import build_document, write_spdx
    from builder.ledger import Ledger

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    ledger = Ledger(tmp_path / "ledger.sqlite")
    fill_ledger(ledger, ["CC-BY-4.0", "LicenseRef-US-Government-Work", "CC0-1.0",
                         "CC-BY-SA-4.0 OR LicenseRef-Odd+Id"] * 5,
                keys=[f"k_{i:02d}" for i in range(20)])
    facts = gather_facts(ledger)

    assert write_spdx(ledger, tmp_path / "spdx.json", facts) == 20
    written = parse_file(str(tmp_path / "spdx.json"))

    assert written == build_document(ledger, facts)
    assert validate_full_spdx_document(written) == []
    assert [f.spdx_id for f in written.files] == [f"SPDXRef-File-k.{i:02d}" for i in range(20)]

    empty = Ledger(tmp_path / "empty.sqlite")
    fill_ledger(empty, [])
    assert write_spdx(empty, tmp_path / "empty.json", gather_facts(empty)) == 0
    assert parse_file(str(tmp_path / "empty.json")) == build_document(empty, gather_facts(empty))


def test_every_file_line_is_the_one_spdx_tools_converts_for_that_sample(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer reuses the converted form of the first File of each shape for the next
    ones; each line must still be, value for value, what spdx-tools makes of that sample."""
    from spdx_tools.spdx.jsonschema.file_converter import FileConverter

    from builder.exports.papers import gather_facts
    from builder.exports.spdx import build_document, write_spdx
    from builder.ledger import Ledger

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.set_meta("dataset_name", "synthetic")
    ledger.set_meta("dataset_version", "1")
    awkward = ['plain', 'q"uote\\back', 'line\nbreak\ttab', "é 😀 \u2028 \x7f", "", None]
    licences = ["CC0-1.0", "CC-BY-4.0", "LicenseRef-US-Government-Work",
                "CC-BY-SA-4.0 OR LicenseRef-Odd+Id"]
    for i in range(96):
        credit, creator = awkward[i % 6], awkward[(i // 6) % 6]
        prov = {"attribution": {"text": credit} if credit is not None else None,
                "source": {"file_url": f"https://example.org/{i}.jpg"} if i % 4 else {}}
        ledger.add_sample({
            "key": f"k_{i:03d}" if i % 5 else f"{i:010d}", "shard": i // 40, "build": 1,
            "seq": i, "sha256": f"{i * 7919:064x}", "sha1": f"{i * 31:040x}",
            "license": licences[i % 4], "source": "s", "source_id": str(i),
            "landing_url": f"https://example.org/page/{i}" if i % 3 else None,
            "creator": creator, "title": f"Work {i}", "width": 8, "height": 8,
            "mime": "image/jpeg", "ext": "jpg", "bytes": 10, "provenance": json.dumps(prov)})
    facts = gather_facts(ledger)

    assert write_spdx(ledger, tmp_path / "spdx.json", facts) == 96
    written = json.loads((tmp_path / "spdx.json").read_text(encoding="utf-8"))["files"]
    document = build_document(ledger, facts)
    converter = FileConverter()
    expected = [converter.convert(file, document) for file in document.files]
    assert written == expected
    assert len({json.dumps(sorted(line)) for line in written}) == 4  # with and without each


def test_a_file_spdx_tools_refuses_stops_the_writer_and_keeps_the_last_document(
        tmp_path: Path) -> None:
    from builder.exports.papers import gather_facts
    from builder.exports.spdx import SpdxInvalid, write_spdx
    from builder.ledger import Ledger

    ledger = Ledger(tmp_path / "ledger.sqlite")
    fill_ledger(ledger, ["CC0-1.0"] * 3)
    write_spdx(ledger, tmp_path / "spdx.json", gather_facts(ledger))
    before = (tmp_path / "spdx.json").read_bytes()
    ledger.db.execute("UPDATE samples SET sha1 = 'not-a-sha1' WHERE key = '0000000001'")

    with pytest.raises(SpdxInvalid, match=r"SPDXRef-File-0000000001") as raised:
        write_spdx(ledger, tmp_path / "spdx.json", gather_facts(ledger))

    assert "not-a-sha1" in str(raised.value)
    assert (tmp_path / "spdx.json").read_bytes() == before
    assert not list(tmp_path.glob("spdx.json.*"))


def fill_ledger(ledger, licenses: list[str], keys: list[str] | None = None) -> None:  # type: ignore[no-untyped-def]
    ledger.set_meta("dataset_name", "synthetic")
    ledger.set_meta("dataset_version", "1")
    for i, lic in enumerate(licenses):
        key = keys[i] if keys else f"{i:010d}"
        prov = {"attribution": {"text": f"Work {i} by C, {lic}."},
                "source": {"landing_url": f"https://example.org/{i}"}}
        ledger.add_sample({
            "key": key, "shard": 0, "build": 1, "seq": i, "sha256": f"{i:064x}",
            "sha1": f"{i:040x}", "license": lic, "source": "s", "source_id": str(i),
            "creator": "C", "title": f"Work {i}", "width": 8, "height": 8,
            "mime": "image/jpeg", "ext": "jpg", "bytes": 10, "provenance": json.dumps(prov)})


READ_CROISSANT = """
import json, sys
import mlcroissant as mlc
dataset = mlc.Dataset(sys.argv[1])  # raises on validation errors
samples = [r["samples/key"].decode() for r in dataset.records("samples")]
images = [[r["images/key"].decode(), r["images/image"].size[0]]
          for r in dataset.records("images")]
print(json.dumps({"samples": samples, "images": images}))
"""


def test_croissant_validates_and_yields_one_record_per_sample(built: Path,
                                                              tmp_path: Path) -> None:
    # A fresh process with its own cache: mlcroissant keys extracted archives by their
    # contentUrl alone, so another dataset's shards/000000.tar would otherwise be reused.
    env = {**os.environ, "CROISSANT_CACHE": str(tmp_path / "croissant-cache")}
    proc = subprocess.run([sys.executable, "-c", READ_CROISSANT, str(built / "croissant.json")],
                          capture_output=True, text=True, env=env, timeout=300, check=True)
    read = json.loads(proc.stdout.strip().splitlines()[-1])
    keys = sorted(manifest_keys(built))
    assert sorted(read["samples"]) == keys
    assert sorted(key for key, _ in read["images"]) == keys
    assert all(width > 0 for _, width in read["images"])


def test_croissant_has_licence_rai_fields_and_distinct_ids(built: Path) -> None:
    doc = json.loads((built / "croissant.json").read_text())
    assert doc["version"] == "1.0.0"
    assert BY4 in doc["license"] and CC0 in doc["license"]
    for field in ("dataCollection", "dataBiases", "dataLimitations",
                  "personalSensitiveInformation", "dataUseCases", "dataReleaseMaintenancePlan"):
        assert doc[f"rai:{field}"], field
    record_ids = {r["@id"] for r in doc["recordSet"]}
    file_ids = {d["@id"] for d in doc["distribution"]}
    assert not record_ids & file_ids
    shards = [d for d in doc["distribution"] if d["encodingFormat"] == "application/x-tar"]
    assert len(shards) == 3 and all(len(d["sha256"]) == 64 for d in shards)


def test_datasets_loads_the_shards_with_consistently_typed_provenance(built: Path) -> None:
    from datasets import load_dataset

    from builder.exports.card import hf_features

    ds = load_dataset("webdataset", data_files={"train": str(built / "shards" / "*.tar")},
                      split="train", features=hf_features(),
                      cache_dir=str(built.parent / "hf-cache"))
    assert len(ds) == len(WORKS)
    captions = sorted(str(row["json"]["caption"]) for row in ds)
    assert captions.count("None") == 3
    assert {row["json"]["license"]["spdx"] for row in ds} == {
        "CC0-1.0", "CC-BY-4.0", "CC-BY-SA-4.0", "CC-PDM-1.0"}
    assert all(row["jpg"] is not None or row["png"] is not None for row in ds)


def test_dataset_card_yaml_parses_and_says_other_for_a_licence_mix(built: Path) -> None:
    text = (built / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    header = yaml.safe_load(text.split("---\n")[1])
    assert header["license"] == "other"
    assert header["license_name"] and header["license_link"]
    assert header["size_categories"] == ["n<1K"]
    assert "text-to-image" in header["task_categories"]
    for needle in ("## Licences", "## Sources", "commercial", "## What was refused",
                   "import webdataset", "load_dataset", "cleanset takedown"):
        assert needle in text, needle


def test_every_by_and_by_sa_sample_is_credited_in_attribution(built: Path) -> None:
    import pyarrow.parquet as pq

    rows = pq.read_table(built / "manifest.parquet", columns=["key", "license"]).to_pylist()
    owed = {r["key"] for r in rows if r["license"] in ("CC-BY-4.0", "CC-BY-SA-4.0")}
    free = {r["key"] for r in rows} - owed
    assert len(owed) == 4
    markdown = (built / "ATTRIBUTION.md").read_text(encoding="utf-8")
    for key in owed:
        assert f"`{key}`" in markdown, key
    for key in free:
        assert f"`{key}`" not in markdown, key
    assert "Ada Lovelace" in markdown and "## [Creative Commons Attribution 4.0" in markdown
    with (built / "attribution.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {r["key"] for r in rows} == owed
    # The credit the source gave is owed too, not only the line made from title and creator
    # (it was kept in provenance only).
    credit = SOURCE_CREDITS["b.jpg"]
    assert f"Credit given by the source: {credit}." in markdown
    assert sorted(r["source_credit"] for r in rows) == ["", "", "", credit]


@pytest.mark.parametrize("paper", ["spdx.json", "croissant.json", "README.md",
                                   "ATTRIBUTION.md"])
def test_verify_reports_a_paper_out_of_step_with_the_manifest(built: Path, tmp_path: Path,
                                                               paper: str) -> None:
    out = tmp_path / "copy"
    shutil.copytree(built, out)
    path = out / paper
    if paper == "spdx.json":
        doc = json.loads(path.read_text())
        doc["files"] = doc["files"][1:]
        path.write_text(json.dumps(doc))
    elif paper == "croissant.json":
        doc = json.loads(path.read_text())
        doc["version"] = "7.0.0"
        path.write_text(json.dumps(doc))
    elif paper == "README.md":
        path.write_text(path.read_text().replace(f": {len(WORKS)} images", ": 99 images"))
    else:
        lines = path.read_text().splitlines()
        path.write_text("\n".join(line for line in lines if not line.startswith("- ")))
    proc = run_cli("verify", str(out))
    assert proc.returncode == 1
    assert paper in proc.stdout


def _credit_changed(out: Path) -> None:
    for name in ("ATTRIBUTION.md", "attribution.csv"):
        text = (out / name).read_text(encoding="utf-8")
        assert "Ada Lovelace" in text
        (out / name).write_text(text.replace("Ada Lovelace", "Someone Else"), encoding="utf-8")


def _card_sentence_added(out: Path) -> None:
    with (out / "README.md").open("a", encoding="utf-8") as card:
        card.write("\nEvery image here may be used for any purpose.\n")


def _candidates_truncated(out: Path) -> None:
    path = out / "candidates.parquet"
    path.write_bytes(path.read_bytes()[:100])


@pytest.mark.parametrize(("edit", "papers"), [
    (_credit_changed, ["ATTRIBUTION.md", "attribution.csv"]),
    (_card_sentence_added, ["README.md"]),
    (_candidates_truncated, ["candidates.parquet"])],
    ids=["a credit's creator", "a sentence in the card", "candidates.parquet cut short"])
def test_verify_finds_a_paper_edited_where_it_still_agrees_with_the_ledger_and_a_rerun_mends_it(
        built: Path, tmp_path: Path, edit: Callable[[Path], None], papers: list[str]) -> None:
    """The papers' own checks hold their keys and counts to the ledger; a changed creator or
    an added sentence kept both. Each paper's sha256 as written is in the ledger."""
    out = tmp_path / "copy"
    shutil.copytree(built, out)
    edit(out)
    proc = run_cli("verify", str(out))
    assert proc.returncode == 1, proc.stdout
    for paper in papers:
        assert f"PROBLEM {paper}: changed since cleanset wrote it" in proc.stdout
    assert "run the same `cleanset build RECIPE --out DIR` again" in proc.stdout
    run_cli("build", str(built.parent / "recipe.toml"), "--out", str(out), "--no-progress",
            check=True)
    assert run_cli("verify", str(out)).returncode == 0


def test_verify_passes_on_a_fresh_build(built: Path) -> None:
    proc = run_cli("verify", str(built))
    assert proc.returncode == 0, proc.stdout


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(),
                    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
def test_report_opens_in_headless_chromium_and_shows_charts(built: Path, tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "copy"
    shutil.copytree(built, out)
    run_cli("report", str(out), check=True)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<svg" in page and "<script" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    shot = tmp_path / "shot.png"
    subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                    "--window-size=1200,2000", (out / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    with Image.open(shot) as img:
        colours = img.convert("RGB").getcolors(maxcolors=1_000_000) or []
    assert len(colours) > 8, "the screenshot is (nearly) blank"


def test_report_on_a_folder_without_a_ledger_is_a_clear_error(tmp_path: Path) -> None:
    proc = run_cli("report", str(tmp_path))
    assert proc.returncode == 2
    assert "no ledger.sqlite" in proc.stderr


def test_report_out_never_replaces_the_datasets_files_or_a_page_it_did_not_write(
        built: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(built, out)
    own_page = tmp_path / "notes.html"
    own_page.write_text("<html>my notes</html>", encoding="utf-8")
    targets = [out / "ledger.sqlite", out / "manifest.parquet", out / "shards",
               out / "other.html", own_page]
    before = {p: p.read_bytes() for p in [*targets, *out.rglob("*")] if p.is_file()}
    for target in targets:
        proc = run_cli("report", str(out), "--out", str(target))
        assert proc.returncode == 2, (target, proc.stderr)
        assert str(target) in proc.stderr and "Traceback" not in proc.stderr
    assert {p: p.read_bytes() for p in before} == before
    assert not (out / "other.html").exists() and not (out / "shards" / "report.html").exists()
    assert run_cli("verify", str(out)).returncode == 0
    # Its own pages it may replace: the dataset's report.html, and a FILE it wrote before.
    for target in (out / "report.html", tmp_path / "report.html"):
        run_cli("report", str(out), "--out", str(target), check=True)
        run_cli("report", str(out), "--out", str(target), check=True)


def test_report_out_to_a_folder_not_made_yet_is_refused_not_written_as_a_file(
        built: Path, tmp_path: Path) -> None:
    """`--out reports/` for a folder that does not exist once wrote the page as a FILE named
    `reports` (exit 0): the trailing slash was dropped with the directory it named."""
    proc = run_cli("report", str(built), "--out", f"{tmp_path / 'reports'}/")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no such directory" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "reports").exists()
    (tmp_path / "reports").mkdir()
    run_cli("report", str(built), "--out", f"{tmp_path / 'reports'}/", check=True)
    assert (tmp_path / "reports" / "report.html").is_file()


def test_report_out_never_puts_one_dataset_s_report_into_another(built: Path,
                                                                  tmp_path: Path) -> None:
    """Written into another output directory, the page once sat there as that dataset's
    report (verify passed it, both being at version 1)."""
    out, other = tmp_path / "one", tmp_path / "other"
    shutil.copytree(built, out)
    shutil.copytree(built, other)
    before = {p: p.read_bytes() for p in other.rglob("*") if p.is_file()}
    for target in (other, other / "shards", other / "report.html", other / "shards" / "x.html"):
        proc = run_cli("report", str(out), "--out", str(target))
        assert proc.returncode == 2, (target, proc.stdout, proc.stderr)
        assert "inside another cleanset output directory" in proc.stderr, proc.stderr
    assert {p: p.read_bytes() for p in other.rglob("*") if p.is_file()} == before
    assert run_cli("verify", str(other)).returncode == 0


def test_running_the_build_again_regenerates_papers_that_were_lost(built: Path,
                                                                   tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(built, out)
    for name in ("spdx.json", "croissant.json", "ATTRIBUTION.md"):
        (out / name).unlink()
    run_cli("build", str(built.parent / "recipe.toml"), "--out", str(out), "--no-progress",
            check=True)
    assert (out / "spdx.json").read_bytes() == (built / "spdx.json").read_bytes()
    assert (out / "ATTRIBUTION.md").read_text() == (built / "ATTRIBUTION.md").read_text()
    assert run_cli("verify", str(out)).returncode == 0


def test_the_cards_datasets_snippet_runs_as_written_without_cleanset(tmp_path: Path) -> None:
    """A reader on a dataset hub copies the card's snippet: it must load every sample."""
    import re

    out = tmp_path / "card-out"
    run_cli("build", str(REPO / "examples/offline/recipe.toml"), "--out", str(out),
            "--no-progress", check=True)
    text = (out / "README.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(from datasets import Features.*?)```", text, re.S)
    assert code is not None and "builder" not in code.group(1)
    script = out / "load.py"
    script.write_text(code.group(1) + "\nprint(ds.num_rows, ds[0]['json']['license']['spdx'])\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_DATASETS_CACHE"] = str(tmp_path / "hf-cache")
    proc = subprocess.run([sys.executable, str(script)], cwd=out, capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[:2] == ["7", "CC-PDM-1.0"]


def test_the_card_lists_every_file_an_output_directory_can_hold(built: Path,
                                                                tmp_path: Path) -> None:
    """An auditor with a copy years later reads the card to learn what each file is."""
    from builder.publish import MARKER

    out = tmp_path / "copy"
    shutil.copytree(built, out)
    key = manifest_keys(out)[0]
    run_cli("takedown", str(out), "--key", key, "--reason", "rights holder asked",
            check=True)  # adds takedowns.jsonl and denylist.jsonl, rewrites the card
    run_cli("report", str(out), check=True)
    card = (out / "README.md").read_text(encoding="utf-8")
    files = card.split("## Files", 1)[1]
    names = {p.name for p in out.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert {"ledger.sqlite", "denylist.jsonl", "takedowns.jsonl", "report.html"} <= names
    for name in sorted(names | {MARKER}):
        assert f"`{name}`" in files, name
    assert "`shards/*.tar`" in files and "hidden files" in files


def test_a_table_interrupted_while_written_leaves_the_last_whole_one_and_no_temporary(
        tmp_path: Path) -> None:
    from builder.exports.tables import CANDIDATES_SCHEMA, _write_atomically

    path = tmp_path / "candidates.parquet"
    row = {name: None for name in CANDIDATES_SCHEMA.names}
    _write_atomically(path, CANDIDATES_SCHEMA, iter([row]))
    before = path.read_bytes()

    def interrupted():  # type: ignore[no-untyped-def]
        yield row
        raise KeyboardInterrupt  # Ctrl-C while the papers are written

    with pytest.raises(KeyboardInterrupt):
        _write_atomically(path, CANDIDATES_SCHEMA, interrupted())

    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["candidates.parquet"]


def test_ctrl_c_as_a_paper_is_renamed_into_place_leaves_no_temporary(built: Path,
                                                                     tmp_path: Path) -> None:
    """Ctrl-C landing after a paper was written, as it was renamed into place, left its
    temporary for good (report.html's beside the dataset after `cleanset report`): the
    temporary was removed only when the writing itself was interrupted."""
    out = tmp_path / "out"
    shutil.copytree(built, out)
    # A real SIGINT, sent by the process to itself as it asks for the rename (Python's
    # audit event for os.replace); its handler raises KeyboardInterrupt right there.
    code = ("import os, signal, sys\n"
            "def hook(event, args):\n"
            "    name = os.path.basename(os.fspath(args[0])) if event == 'os.rename' else ''\n"
            "    if name.startswith('report.html.') and name.endswith('.tmp'):\n"
            "        os.kill(os.getpid(), signal.SIGINT)\n"
            "sys.addaudithook(hook)\n"
            "from builder.cli import main\n"
            f"sys.exit(main(['report', {str(out)!r}]))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr == ("cleanset: interrupted; the report was not written (nothing in the "
                           "dataset changed); run the same command again to write it.\n")
    assert not list(out.glob("report.html*.tmp"))  # report.html.PID.tmp, its own name
    assert not (out / "report.html").exists()
    assert run_cli("verify", str(out)).returncode == 0


def test_a_ledger_read_dropped_half_way_after_the_ledger_closed_prints_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Ctrl-C while the papers are written: the build closes the ledger, then the half-read
    # generators are collected; closing their cursor then failed, printed as "Exception
    # ignored" with a traceback after "interrupted".
    import gc

    from builder.ledger import Ledger

    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    fill_ledger(ledger, ["CC0-1.0"] * 3)
    samples, candidates = ledger.iter_samples(), ledger.iter_candidates()
    next(samples)
    next(candidates, None)
    ledger.close()
    del samples, candidates
    gc.collect()

    assert unraisable == []


def test_report_out_where_no_file_can_be_made_is_exit_2_naming_it(built: Path) -> None:
    """`--out /proc/x` once ended in "fatal: ... /proc/x.tmp ... run the same command again
    to resume", as if a build had broken."""
    proc = run_cli("report", str(built), "--out", "/proc/cleanset-report.html")
    assert proc.returncode == 2, proc.stderr
    assert "/proc/cleanset-report.html: cannot be written" in proc.stderr
    assert "resume" not in proc.stderr and "Traceback" not in proc.stderr
