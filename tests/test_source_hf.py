"""The `hf` source on local datasets written in the test (no hub access)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pytest_httpserver import HTTPServer

from builder.errors import UserError
from tests.apihelpers import ids, ledger_rows, open_source, serve_images
from tests.conftest import run_cli, write_recipe

CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"
NC = "https://creativecommons.org/licenses/by-nc/4.0/"


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def pd12m_folder(root: Path, urls: list[str]) -> Path:
    """PD12M's layout (id, url, caption, width, height, mime_type, hash, license, source),
    split over two Parquet files as the hub repository is."""
    folder = root / "pd12m"
    folder.mkdir()
    licences = [CC0, CC0, NC, None, CC0, CC0][:len(urls)]
    rows = [{"id": f"pd-{i}", "url": u, "caption": f"caption {i}", "width": 64, "height": 48,
             "mime_type": "image/jpeg", "hash": f"{i:032x}", "license": licences[i],
             "source": "wikimedia"} for i, u in enumerate(urls)]
    half = len(rows) // 2
    pq.write_table(pa.Table.from_pylist(rows[:half]), folder / "train-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(rows[half:]), folder / "train-00001-of-00002.parquet")
    return folder


def test_a_pd12m_layout_folder_is_understood_without_a_mapping(tmp_path: Path) -> None:
    pd12m_folder(tmp_path, [f"https://example.org/{i}.jpg" for i in range(6)])
    cands = list(open_source("hf", tmp_path, path="pd12m").candidates(None))
    assert ids(cands) == [f"pd-{i}" for i in range(6)]
    first = cands[0]
    assert first.url == "https://example.org/0.jpg" and first.caption == "caption 0"
    assert [(e.field, e.value) for e in first.evidence] == [("license", CC0)]
    assert ("source", "wikimedia") in first.extra and ("mime_type", "image/jpeg") in first.extra
    assert cands[3].evidence == ()  # no licence: reaches the gate as license_missing
    assert [c.resume for c in cands] == [{"row": n} for n in range(1, 7)]


def test_resume_skips_the_rows_already_decided(tmp_path: Path) -> None:
    pd12m_folder(tmp_path, [f"https://example.org/{i}.jpg" for i in range(6)])
    source = open_source("hf", tmp_path, path="pd12m")
    assert ids(source.candidates({"row": 4})) == ["pd-4", "pd-5"]


def test_a_column_mapping_and_a_saved_dataset_directory(tmp_path: Path) -> None:
    from datasets import Dataset

    Dataset.from_dict({"key": ["a", "b"], "image_link": ["https://e.org/a.png",
                                                         "https://e.org/b.png"],
                       "lic": [CC0, CC0], "who": ["Ann", "Bo"]}).save_to_disk(tmp_path / "saved")
    source = open_source("hf", tmp_path, path="saved",
                         columns={"url": "image_link", "license": "lic", "creator": "who",
                                  "id": "key"})
    cands = list(source.candidates(None))
    assert [(c.source_id, c.url, c.creator) for c in cands] == [
        ("a", "https://e.org/a.png", "Ann"), ("b", "https://e.org/b.png", "Bo")]
    assert [(e.field, e.value) for e in cands[0].evidence] == [("lic", CC0)]


def test_a_dataset_without_a_url_column_names_its_columns_and_the_fix(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    pq.write_table(pa.table({"picture": ["x"], "license": [CC0]}), tmp_path / "d/a.parquet")
    with pytest.raises(UserError, match=r"no image URL column.*'picture'.*columns = \{ url"):
        list(open_source("hf", tmp_path, path="d").candidates(None))


def test_exactly_one_of_path_and_dataset(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="exactly one of"):
        open_source("hf", tmp_path)
    with pytest.raises(UserError, match="no such file"):
        open_source("hf", tmp_path, path="nowhere")


def test_build_from_a_local_dataset_ledgers_every_row(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    pd12m_folder(tmp_path, serve_images(httpserver, 6))
    recipe = write_recipe(tmp_path / "recipe.toml", """
[dataset]
name = "hf-test"

[[sources]]
kind = "hf"
path = "pd12m"

[fetch]
allow_private_addresses = true
retries = 0
""")
    out = tmp_path / "out"
    run_cli("build", str(recipe), "--out", str(out), "--no-progress", check=True,
            env={"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
    reasons = {r["candidate_id"]: r["reason"] for r in ledger_rows(out)}
    assert reasons == {"hf:pd-0": None, "hf:pd-1": None, "hf:pd-2": "license_not_allowed",
                       "hf:pd-3": "license_missing", "hf:pd-4": None, "hf:pd-5": None}
