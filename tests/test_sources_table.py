"""The `table` source: CSV / TSV / JSONL / Parquet rows -> Candidates, streamed and resumable."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from builder.errors import UserError
from builder.recipe import load_recipe
from builder.records import Candidate, Evidence
from builder.sources import source_module
from builder.sources.base import SourceContext

CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"
PDM = "https://creativecommons.org/publicdomain/mark/1.0/"
BY4 = "https://creativecommons.org/licenses/by/4.0/"


def open_source(tmp_path: Path, source_toml: str, index: int = 0):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        '[dataset]\nname = "t"\n[policy]\nuse = "commercial"\n' + source_toml, encoding="utf-8"
    )
    loaded = load_recipe(recipe)
    spec = loaded.sources[index]
    module = source_module(spec.kind, file=str(recipe), where=f"sources[{index}]")
    context = SourceContext(recipe_file=loaded.file, base_dir=loaded.base_dir,
                            fetch=loaded.fetch)
    return module.SOURCE(spec.name, spec.config, context)


def table(tmp_path: Path, filename: str, extra: str = "") -> object:
    return open_source(tmp_path, f'[[sources]]\nkind = "table"\npath = "{filename}"\n{extra}')


def all_of(source, resume=None) -> list[Candidate]:
    return list(source.candidates(resume))


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def pd12m_table(n: int) -> pa.Table:
    return pa.table({
        "id": [f"pd-{i:04d}" for i in range(n)],
        "url": [f"https://pd12m.s3.us-west-2.amazonaws.com/images/{i}.jpeg" for i in range(n)],
        "caption": [f"caption {i}" for i in range(n)],
        "hash": [f"{i:032x}" for i in range(n)],
        "width": pa.array([640 + i for i in range(n)], pa.int64()),
        "height": pa.array([480] * n, pa.int64()),
        "mime_type": ["image/jpeg"] * n,
        "license": [CC0 if i % 2 else PDM for i in range(n)],
        "source": ["wikimedia-commons" if i % 3 else "smithsonian" for i in range(n)],
    })


# -- known layouts -----------------------------------------------------------------------


def test_img2dataset_csv_gives_url_caption_and_row_numbers_as_ids(tmp_path: Path) -> None:
    write_csv(tmp_path / "urls.csv", ["url", "caption"],
              [["https://example.org/a.jpg", "a red door"],
               ["https://example.org/b.png", 'a "quoted", comma caption']])
    got = all_of(table(tmp_path, "urls.csv"))
    assert [(c.source, c.source_id, c.url, c.caption) for c in got] == [
        ("table", "row-0", "https://example.org/a.jpg", "a red door"),
        ("table", "row-1", "https://example.org/b.png", 'a "quoted", comma caption'),
    ]
    assert all(c.evidence == () for c in got)


def test_pd12m_parquet_keeps_licence_url_as_evidence_and_raw_columns_as_extra(
    tmp_path: Path,
) -> None:
    pq.write_table(pd12m_table(7), tmp_path / "pd12m.000.parquet", row_group_size=3)
    got = all_of(table(tmp_path, "pd12m.000.parquet"))
    assert [c.source_id for c in got] == [f"pd-{i:04d}" for i in range(7)]
    first = got[0]
    assert first.url == "https://pd12m.s3.us-west-2.amazonaws.com/images/0.jpeg"
    assert first.caption == "caption 0"
    assert first.evidence == (Evidence("license", PDM),)
    assert got[1].evidence == (Evidence("license", CC0),)
    assert dict(first.extra) == {
        "source": "smithsonian", "hash": f"{0:032x}", "mime_type": "image/jpeg",
        "width": "640", "height": "480",
    }
    assert [c.resume["row"] for c in got] == [i + 1 for i in range(7)]


def test_commoncatalog_jsonl_maps_flickr_columns_and_keeps_both_licence_columns(
    tmp_path: Path,
) -> None:
    rows = [{
        "photoid": 2938475, "uid": "12345678@N00", "unickname": "Jane Doe",
        "title": "Harbour at dawn", "description": "Boats in the harbour",
        "pageurl": "http://www.flickr.com/photos/12345678@N00/2938475/",
        "downloadurl": "http://farm4.staticflickr.com/3001/2938475_abc.jpg",
        "licensename": "Attribution License", "licenseurl": "http://creativecommons.org/licenses/by/2.0/",
        "key": "000000001",
    }]
    path = tmp_path / "commoncatalog.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (c,) = all_of(table(tmp_path, "commoncatalog.jsonl"))
    assert c.source_id == "2938475"
    assert c.url == "http://farm4.staticflickr.com/3001/2938475_abc.jpg"
    assert c.landing_url == "http://www.flickr.com/photos/12345678@N00/2938475/"
    assert (c.creator, c.title, c.caption) == ("Jane Doe", "Harbour at dawn", "Boats in the harbour")
    assert c.evidence == (
        Evidence("licensename", "Attribution License"),
        Evidence("licenseurl", "http://creativecommons.org/licenses/by/2.0/"),
    )


def test_openverse_licence_code_and_version_are_emitted_as_the_gates_pair(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ov.jsonl"
    path.write_text(json.dumps({"url": "https://e.org/x.jpg", "license": "by-sa",
                                "license_version": "4.0", "creator": "A",
                                "foreign_landing_url": "https://e.org/x"}) + "\n")
    (c,) = all_of(table(tmp_path, "ov.jsonl"))
    assert c.evidence == (Evidence("openverse:license", "by-sa"),
                          Evidence("openverse:license_version", "4.0"))
    assert c.landing_url == "https://e.org/x"


def test_a_version_beside_a_licence_url_is_not_a_claim_of_its_own(tmp_path: Path) -> None:
    write_csv(tmp_path / "u.csv", ["url", "license", "license_version"],
              [["https://e.org/1.jpg", BY4, "4.0"], ["https://e.org/2.jpg", "", "4.0"]])
    first, second = all_of(table(tmp_path, "u.csv"))
    assert first.evidence == (Evidence("license", BY4),)
    assert ("license_version", "4.0") in first.extra
    assert second.evidence == () and ("license_version", "4.0") in second.extra


@pytest.mark.parametrize(("row", "spdx"), [
    ({"id": "1", "url": "https://e.org/1.jpg", "license": CC0}, "CC0-1.0"),  # PD12M
    ({"photoid": 7, "downloadurl": "https://e.org/7.jpg", "licensename": "Attribution License",
      "licenseurl": "http://creativecommons.org/licenses/by/2.0/"}, "CC-BY-2.0"),  # CommonCatalog
    ({"url": "https://e.org/o.jpg", "license": "by", "license_version": "4.0"}, "CC-BY-4.0"),
])
def test_the_licence_gate_reads_the_evidence_of_each_known_layout(
    tmp_path: Path, row: dict, spdx: str,
) -> None:
    from builder.licensing import decide, load_policy

    (tmp_path / "u.jsonl").write_text(json.dumps(row) + "\n")
    (c,) = all_of(table(tmp_path, "u.jsonl"))
    decision = decide(c.evidence, load_policy("commercial"))
    assert getattr(decision, "spdx", decision) == spdx


def test_explicit_column_mapping_names_their_columns(tmp_path: Path) -> None:
    write_csv(tmp_path / "mine.csv", ["image_link", "lic", "who", "pic", "notes"],
              [["https://e.org/1.jpg", BY4, "Ana", "p-1", "kept"]])
    source = table(tmp_path, "mine.csv",
                   'columns = { url = "image_link", license = "lic", creator = "who" }\n'
                   'id_column = "pic"\nkeep_columns = ["notes"]\n')
    (c,) = all_of(source)
    assert (c.source_id, c.url, c.creator) == ("p-1", "https://e.org/1.jpg", "Ana")
    assert c.evidence == (Evidence("lic", BY4),)
    assert c.extra == (("notes", "kept"),)


def test_recipe_licence_is_recorded_as_its_own_evidence(tmp_path: Path) -> None:
    write_csv(tmp_path / "u.csv", ["url"], [["https://e.org/1.jpg"]])
    (c,) = all_of(table(tmp_path, "u.csv", f'license = "{CC0}"\n'))
    assert c.evidence == (Evidence("recipe:license", CC0),)


def test_tsv_and_gzipped_text_formats_are_read(tmp_path: Path) -> None:
    (tmp_path / "u.tsv").write_text("url\tcaption\nhttps://e.org/1.jpg\ta, b\n")
    with gzip.open(tmp_path / "u.jsonl.gz", "wt") as fh:
        fh.write(json.dumps({"url": "https://e.org/2.jpg"}) + "\n")
    with gzip.open(tmp_path / "u.csv.gz", "wt") as fh:
        fh.write("url\nhttps://e.org/3.jpg\n")
    assert [c.caption for c in all_of(table(tmp_path, "u.tsv"))] == ["a, b"]
    assert [c.url for c in all_of(table(tmp_path, "u.jsonl.gz"))] == ["https://e.org/2.jpg"]
    assert [c.url for c in all_of(table(tmp_path, "u.csv.gz"))] == ["https://e.org/3.jpg"]


def test_format_key_overrides_an_unhelpful_extension(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text("url\nhttps://e.org/1.jpg\n")
    with pytest.raises(UserError, match=r"sources\[0\]\.path.*format"):
        table(tmp_path, "list.txt")
    assert len(all_of(table(tmp_path, "list.txt", 'format = "csv"\n'))) == 1


# -- absent values -----------------------------------------------------------------------


def test_nan_none_and_empty_cells_are_treated_as_absent(tmp_path: Path) -> None:
    pq.write_table(pa.table({
        "url": ["https://e.org/1.jpg", None, "https://e.org/3.jpg"],
        "caption": [None, "two", "  "],
        "license": [CC0, None, ""],
        "width": [float("nan"), 2.0, 3.5],
    }), tmp_path / "t.parquet")
    got = all_of(table(tmp_path, "t.parquet"))
    assert [c.url for c in got] == ["https://e.org/1.jpg", "", "https://e.org/3.jpg"]
    assert [c.caption for c in got] == [None, "two", None]
    assert [c.evidence for c in got] == [(Evidence("license", CC0),), (), ()]
    assert [c.extra for c in got] == [(), (("width", "2"),), (("width", "3.5"),)]

    write_csv(tmp_path / "t.csv", ["url", "license", "caption"],
              [["https://e.org/1.jpg", "NaN", ""], ["", "", "None"]])
    got = all_of(table(tmp_path, "t.csv"))
    assert [(c.url, c.evidence, c.caption) for c in got] == [
        ("https://e.org/1.jpg", (), None), ("", (), None)]

    # Python's json (and pandas' to_json) write NaN for missing floats
    (tmp_path / "t.jsonl").write_text('{"url": "https://e.org/1.jpg", "license": NaN, '
                                      '"caption": null, "id": NaN}\n')
    (c,) = all_of(table(tmp_path, "t.jsonl"))
    assert (c.source_id, c.evidence, c.caption) == ("row-0", (), None)


def test_rows_without_url_are_still_yielded_so_the_ledger_records_them(tmp_path: Path) -> None:
    path = tmp_path / "u.jsonl"
    path.write_text('{"url": "https://e.org/1.jpg", "license": "CC0"}\n{"license": "CC0"}\n')
    got = all_of(table(tmp_path, "u.jsonl"))
    assert [(c.source_id, c.url) for c in got] == [("row-0", "https://e.org/1.jpg"), ("row-1", "")]


# -- resume ------------------------------------------------------------------------------


def test_resume_in_the_second_parquet_row_group_yields_exactly_the_remaining_rows(
    tmp_path: Path,
) -> None:
    pq.write_table(pd12m_table(10), tmp_path / "pd.parquet", row_group_size=4)
    assert pq.ParquetFile(tmp_path / "pd.parquet").metadata.num_row_groups == 3
    source = table(tmp_path, "pd.parquet", "batch_size = 3\n")
    full = all_of(source)
    assert all_of(source, full[4].resume) == full[5:]  # inside the second row group
    assert all_of(source, {"row": 4}) == full[4:]      # exactly at its start
    for i, c in enumerate(full):
        assert all_of(source, c.resume) == full[i + 1:]
    assert all_of(source, {"row": 10}) == []


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "csv.gz", "jsonl.gz"])
def test_text_formats_resume_after_every_row_with_offsets_or_without(
    tmp_path: Path, suffix: str,
) -> None:
    rows = [{"url": f"https://e.org/{i}.jpg", "caption": f"line one\nline two {i}"}
            for i in range(6)]
    if suffix.startswith("csv"):
        buf = ["url,caption\n"] + [f'{r["url"]},"{r["caption"]}"\n' for r in rows]
        buf.insert(3, "\n")  # a blank line is not a row
    else:
        buf = [json.dumps(r) + "\n" for r in rows]
        buf.insert(3, "\n")
    text = "".join(buf)
    path = tmp_path / f"u.{suffix}"
    if suffix.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    source = table(tmp_path, path.name)
    full = all_of(source)
    assert [c.caption for c in full] == [r["caption"] for r in rows]
    for i, c in enumerate(full):
        assert all_of(source, c.resume) == full[i + 1:]
        # state kept by an older build (row count only) still resumes at the right row
        assert all_of(source, {"row": c.resume["row"]}) == full[i + 1:]
    # an offset that no longer lands on a line start (file edited) falls back to counting
    assert all_of(source, {"row": 2, "offset": 5, "line": 1}) == full[2:]


def _resumed_after_an_edit(tmp_path: Path, filename: str, before: list[str],
                          after: list[str], decided: int) -> list[str]:
    """Read the table as `before`, stop after `decided` rows, rewrite it as `after`, and
    resume: the URLs the resumed build gets (or the UserError it raises)."""
    path = tmp_path / filename
    write = (lambda rows: pq.write_table(pa.table({"url": rows, "license": [CC0] * len(rows)}),
                                         path, row_group_size=2)) \
        if filename.endswith(".parquet") else \
        (lambda rows: path.write_text("".join(json.dumps({"url": u, "license": CC0}) + "\n"
                                              for u in rows)) if filename.endswith(".jsonl")
         else write_csv(path, ["url", "license"], [[u, CC0] for u in rows]))
    write(before)
    source = table(tmp_path, filename)
    state = all_of(source)[decided - 1].resume
    write(after)
    return [c.url for c in all_of(source, state)]


@pytest.mark.parametrize("filename", ["u.csv", "u.jsonl", "u.parquet"])
@pytest.mark.parametrize("edit", ["first row removed", "row inserted at the top",
                                  "rows reordered", "rows cut off"])
def test_a_table_edited_before_the_resume_point_stops_the_resume_naming_the_file(
    tmp_path: Path, filename: str, edit: str,
) -> None:
    # The build decided rows a and b (given long and short URLs, so that the stored byte
    # offset of a shifted file still lands on some line start). Resuming the edited file
    # at the stored offset or row count would skip rows without a ledger row, or decide a
    # row twice under another row number: it must stop and say why.
    urls = [f"https://e.org/{n}.jpg" for n in ("aaaaaaaa", "b", "c", "dddd", "e")]
    after = {
        "first row removed": urls[1:],
        "row inserted at the top": ["https://e.org/new-one.jpg", *urls],
        "rows reordered": [urls[2], urls[0], urls[1], *urls[3:]],
        "rows cut off": urls[:1],
    }[edit]
    with pytest.raises(UserError) as err:
        _resumed_after_an_edit(tmp_path, filename, urls, after, decided=2)
    message = str(err.value)
    assert filename in message and "changed since the build being resumed read it" in message
    assert "Put the table back as it was" in message


@pytest.mark.parametrize("filename", ["u.csv", "u.jsonl", "u.parquet"])
def test_rows_added_at_the_end_or_a_decided_row_fixed_in_place_resume_where_the_build_stopped(
    tmp_path: Path, filename: str,
) -> None:
    urls = [f"https://e.org/{n}.jpg" for n in ("a", "b", "c", "d")]
    assert _resumed_after_an_edit(tmp_path, filename, urls, [*urls, "https://e.org/e.jpg"],
                                  decided=2) == [*urls[2:], "https://e.org/e.jpg"]
    # the first row, already decided, made longer: the offset is stale, counting finds row 2
    fixed = ["https://e.org/a-renamed-longer.jpg", *urls[1:]]
    assert _resumed_after_an_edit(tmp_path, filename, urls, fixed, decided=2) == urls[2:]


# -- user errors -------------------------------------------------------------------------


def test_missing_table_file_names_the_recipe_key(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        table(tmp_path, "nowhere.parquet")
    message = str(err.value)
    assert "recipe.toml" in message and "sources[0].path" in message
    assert "nowhere.parquet" in message


def test_mapping_an_unknown_field_is_refused_when_the_recipe_loads(tmp_path: Path) -> None:
    write_csv(tmp_path / "u.csv", ["url"], [["https://e.org/1.jpg"]])
    with pytest.raises(UserError, match=r"sources\[0\]\.columns\.picture"):
        table(tmp_path, "u.csv", 'columns = { picture = "url" }\n')


def test_mapping_a_column_the_file_lacks_names_the_column_and_the_file(tmp_path: Path) -> None:
    write_csv(tmp_path / "u.csv", ["url", "lic"], [["https://e.org/1.jpg", CC0]])
    with pytest.raises(UserError) as err:  # refused as the recipe loads, before any work
        table(tmp_path, "u.csv", 'columns = { license = "licence_col" }\n')
    assert "u.csv" in str(err.value) and "licence_col" in str(err.value)
    assert "'lic'" in str(err.value)  # the columns it does have


def test_table_without_a_url_column_tells_how_to_map_one(tmp_path: Path) -> None:
    write_csv(tmp_path / "u.csv", ["link", "license"], [["https://e.org/1.jpg", CC0]])
    with pytest.raises(UserError, match=r'columns = \{ url = '):
        all_of(table(tmp_path, "u.csv"))
    pq.write_table(pa.table({"link": ["x"]}), tmp_path / "u.parquet")
    with pytest.raises(UserError, match="no image URL column"):
        all_of(table(tmp_path, "u.parquet"))


def test_a_bad_jsonl_line_stops_with_its_line_number_after_the_good_rows(tmp_path: Path) -> None:
    path = tmp_path / "u.jsonl"
    path.write_text('{"url": "https://e.org/1.jpg"}\n{"url": "https://e.org/2.jpg",\n'
                    '{"url": "https://e.org/3.jpg"}\n')
    got = []
    with pytest.raises(UserError, match=r"u\.jsonl: line 2: not valid JSON"):
        for c in table(tmp_path, "u.jsonl").candidates(None):
            got.append(c)
    assert [c.url for c in got] == ["https://e.org/1.jpg"]


def test_a_jsonl_line_that_is_not_an_object_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "u.jsonl").write_text('{"url": "a"}\n["b"]\n')
    with pytest.raises(UserError, match="line 2: a JSON list"):
        all_of(table(tmp_path, "u.jsonl"))


def test_a_csv_row_with_the_wrong_number_of_fields_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "u.csv").write_text("url,caption\nhttps://e.org/1.jpg,a,b\n")
    with pytest.raises(UserError, match="line 2: 3 fields where the header has 2"):
        all_of(table(tmp_path, "u.csv"))


NC4 = "https://creativecommons.org/licenses/by-nc/4.0/"


def test_a_licence_column_spelt_in_two_cases_gives_the_gate_both_claims(tmp_path: Path) -> None:
    # Tables merged from two exports: only the first spelling was read, and an NC claim in
    # the other column was dropped, the image admitted as CC BY.
    write_csv(tmp_path / "t.csv", ["url", "License", "LICENSE"],
              [["https://e.org/1.jpg", BY4, NC4]])
    (tmp_path / "t.jsonl").write_text(json.dumps(
        {"url": "https://e.org/1.jpg", "license": BY4, "License": NC4}) + "\n")
    from builder.licensing import decide, load_policy
    for name in ("t.csv", "t.jsonl"):
        (c,) = all_of(table(tmp_path, name))
        assert sorted(e.value for e in c.evidence) == sorted([BY4, NC4]), name
        assert decide(c.evidence, load_policy("commercial")).reason == "license_conflict"


@pytest.mark.parametrize("header", [["url", "license", "license"], ["url", "license", " license"],
                                    ["url", "creator", "creator"]])
def test_a_column_named_twice_is_refused_naming_it(tmp_path: Path, header: list[str]) -> None:
    # One of the two cells was silently lost: an NC licence, or the creator a credit owes.
    write_csv(tmp_path / "t.csv", header, [["https://e.org/1.jpg", "CC BY-NC 4.0", BY4]])
    with pytest.raises(UserError, match=rf"t\.csv: the header line names column '{header[1]}' "
                                        r"twice"):
        all_of(table(tmp_path, "t.csv"))
    pq.write_table(pa.Table.from_arrays(
        [pa.array(["https://e.org/1.jpg"]), pa.array([NC4]), pa.array([BY4])],
        names=["url", "license", "license"]), tmp_path / "t.parquet")
    with pytest.raises(UserError, match=r"t\.parquet: the Parquet schema names column "
                                        r"'license' twice"):
        all_of(table(tmp_path, "t.parquet"))


def test_a_broken_parquet_file_is_a_user_error(tmp_path: Path) -> None:
    pq.write_table(pd12m_table(5), tmp_path / "ok.parquet")
    data = (tmp_path / "ok.parquet").read_bytes()
    (tmp_path / "bad.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"bad\.parquet: not a readable Parquet file"):
        all_of(table(tmp_path, "bad.parquet"))


@pytest.mark.parametrize("content", ["", "url,license\n", "\n\n", "url,license\n\n  \n"])
def test_a_csv_without_data_rows_is_refused_as_the_recipe_loads_naming_source_and_file(
        tmp_path: Path, content: str) -> None:
    (tmp_path / "u.csv").write_text(content)
    with pytest.raises(UserError) as err:
        table(tmp_path, "u.csv")
    assert "u.csv" in str(err.value) and "'table'" in str(err.value)
    assert "no data rows" in str(err.value) and "recipe.toml" in str(err.value)


@pytest.mark.parametrize(("name", "write"), [
    ("u.jsonl", lambda p: p.write_text("\n")),
    ("u.parquet", lambda p: pq.write_table(pa.table({"url": pa.array([], pa.string())}), p)),
    ("u.csv.gz", lambda p: p.write_bytes(gzip.compress(b"url,license\n"))),
])
def test_empty_jsonl_parquet_and_gzip_tables_are_refused_as_the_recipe_loads(
        tmp_path: Path, name: str, write) -> None:
    write(tmp_path / name)
    with pytest.raises(UserError, match="no data rows"):
        table(tmp_path, name)


def test_a_tab_separated_file_named_csv_is_told_to_say_format_tsv(tmp_path: Path) -> None:
    (tmp_path / "u.csv").write_text(f"url\tlicense\nhttps://e.org/1.jpg\t{CC0}\n")
    with pytest.raises(UserError) as err:
        table(tmp_path, "u.csv")
    message = str(err.value)
    assert 'format = "tsv"' in message and "tab-separated" in message
    assert "columns" not in message  # a mapping cannot fix a wrong delimiter
    # ... and with that advice followed, the same file reads.
    source = table(tmp_path, "u.csv", 'format = "tsv"\n')
    assert [c.url for c in all_of(source)] == ["https://e.org/1.jpg"]


def test_a_tab_separated_csv_with_a_column_mapping_still_gets_the_tsv_advice(
        tmp_path: Path) -> None:
    (tmp_path / "u.csv").write_text(f"link\tlic\nhttps://e.org/1.jpg\t{CC0}\n")
    with pytest.raises(UserError, match='format = "tsv"'):
        table(tmp_path, "u.csv", 'columns = { url = "link", license = "lic" }\n')


def test_a_comma_separated_file_read_as_tsv_is_told_to_say_format_csv(tmp_path: Path) -> None:
    (tmp_path / "u.tsv").write_text(f"url,license\nhttps://e.org/1.jpg,{CC0}\n")
    with pytest.raises(UserError, match='format = "csv"'):
        table(tmp_path, "u.tsv")


def test_a_semicolon_separated_csv_is_told_to_be_re_saved_not_to_map_a_url_column(
        tmp_path: Path) -> None:
    # What Excel saves as "CSV" where the decimal separator is a comma (much of Europe).
    (tmp_path / "u.csv").write_bytes(
        f"\ufeffurl;license\r\nhttps://e.org/1.jpg;{CC0}\r\n".encode())
    for mapping in ("", 'columns = { url = "url", license = "license" }\n'):
        with pytest.raises(UserError) as err:
            table(tmp_path, "u.csv", mapping)
        message = str(err.value)
        assert "u.csv" in message and "semicolon-separated" in message
        assert "'url', 'license'" in message and "Re-save it comma-separated" in message
        assert "columns = {" not in message  # a mapping cannot fix a wrong delimiter


def test_a_gzip_or_parquet_file_under_a_text_name_is_named_for_what_it_is(
        tmp_path: Path) -> None:
    text = f"url,license\nhttps://e.org/1.jpg,{CC0}\n".encode()
    (tmp_path / "u.csv").write_bytes(gzip.compress(text))
    with pytest.raises(UserError, match=r"u\.csv: line 1 is not UTF-8 text\. It is "
                                        r"gzip-compressed: name it \.csv\.gz"):
        table(tmp_path, "u.csv")
    pq.write_table(pa.table({"url": ["https://e.org/1.jpg"]}), tmp_path / "u.jsonl")
    with pytest.raises(UserError, match=r'It is a Parquet file: .* format = "parquet"'):
        table(tmp_path, "u.jsonl")


def test_a_malformed_first_row_is_refused_as_the_recipe_loads(tmp_path: Path) -> None:
    (tmp_path / "u.csv").write_text("url,license\nhttps://e.org/1.jpg\n")
    with pytest.raises(UserError, match="line 2"):
        table(tmp_path, "u.csv")


def test_a_recipe_given_by_a_relative_path_finds_its_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "proj").mkdir()
    write_csv(tmp_path / "proj" / "u.csv", ["url"], [["https://e.org/1.jpg"]])
    (tmp_path / "proj" / "recipe.toml").write_text(
        '[dataset]\nname = "t"\n[[sources]]\nkind = "table"\npath = "u.csv"\n')
    monkeypatch.chdir(tmp_path)
    loaded = load_recipe(Path("proj/recipe.toml"))
    spec = loaded.sources[0]
    source = source_module("table", file="r", where="w").SOURCE(
        spec.name, spec.config, SourceContext(loaded.file, loaded.base_dir, loaded.fetch))
    assert [c.url for c in all_of(source)] == ["https://e.org/1.jpg"]


def test_a_table_s_expected_candidates_come_cheaply_from_its_metadata_or_size(tmp_path):
    """For planning only (the build warms its worker processes up when a table is large):
    a Parquet file's row count from its metadata, a text table's guessed from its bytes."""
    from builder.sources.table import expected_candidates

    pq.write_table(pd12m_table(1234), tmp_path / "many.parquet", row_group_size=100)
    urls = [[f"https://example.org/images/{i:06d}.jpg", CC0] for i in range(2000)]
    write_csv(tmp_path / "many.csv", ["url", "license"], urls)
    write_csv(tmp_path / "few.csv", ["url", "license"], urls[:10])

    assert expected_candidates(table(tmp_path, "many.parquet").config) == 1234
    assert 1000 <= expected_candidates(table(tmp_path, "many.csv").config) <= 4000
    assert expected_candidates(table(tmp_path, "few.csv").config) < 128


def test_a_jsonl_line_naming_a_key_twice_with_two_values_is_refused_naming_it(
        tmp_path: Path) -> None:
    """`{"license": "CC BY-NC 4.0", "license": "CC BY 4.0"}`: JSON keeps the last value, so
    the NC claim vanished and the image was admitted as CC BY."""
    (tmp_path / "t.jsonl").write_text(
        '{"url": "https://e.org/0.jpg", "license": "CC BY 4.0"}\n'
        '{"url": "https://e.org/1.jpg", "license": "CC BY-NC 4.0", "license": "CC BY 4.0"}\n')
    with pytest.raises(UserError, match=r"t\.jsonl: line 2: names 'license' twice, with "
                                        r"different values \('CC BY-NC 4\.0', then 'CC BY 4\.0'\)"):
        all_of(table(tmp_path, "t.jsonl"))
    # the same value twice loses nothing
    (tmp_path / "s.jsonl").write_text(
        '{"url": "https://e.org/1.jpg", "license": "CC BY 4.0", "license": "CC BY 4.0"}\n')
    assert len(all_of(table(tmp_path, "s.jsonl"))) == 1
