"""The `folder` source: local images + sidecars / metadata files -> Candidates."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import REPO, make_image
from PIL import Image

from builder.errors import UserError
from builder.recipe import load_recipe
from builder.records import Candidate, Evidence
from builder.sources import source_module
from builder.sources.base import SourceContext

CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"
PDM = "https://creativecommons.org/publicdomain/mark/1.0/"
BY4 = "https://creativecommons.org/licenses/by/4.0/"
EXAMPLE = REPO / "examples" / "offline"


def open_recipe(recipe: Path):
    loaded = load_recipe(recipe)
    spec = loaded.sources[0]
    module = source_module(spec.kind, file=str(recipe), where="sources[0]")
    context = SourceContext(recipe_file=loaded.file, base_dir=loaded.base_dir,
                            fetch=loaded.fetch)
    return module.SOURCE(spec.name, spec.config, context)


def folder(tmp_path: Path, extra: str = "", path: str = "images"):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('[dataset]\nname = "t"\n[[sources]]\nkind = "folder"\n'
                      f'path = "{path}"\n{extra}', encoding="utf-8")
    return open_recipe(recipe)


def put_image(path: Path, seed: int = 0, sidecar: dict | None = None,
              sidecar_name: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".png": "PNG", ".gif": "GIF", ".webp": "WEBP"}.get(path.suffix.lower(), "JPEG")
    path.write_bytes(make_image(seed, fmt=fmt))
    if sidecar is not None:
        side = path.with_name(sidecar_name or path.name + ".json")
        side.write_text(json.dumps(sidecar), encoding="utf-8")
    return path


def all_of(source, resume=None) -> list[Candidate]:
    return list(source.candidates(resume))


def test_both_sidecar_styles_fill_licence_and_attribution(tmp_path: Path) -> None:
    images = tmp_path / "images"
    put_image(images / "a.jpg", 1, {"license": CC0, "creator": "Ana", "title": "A",
                                    "caption": "an a", "url": "https://e.org/a",
                                    "credit": "Photo: Ana", "camera": "X100"})
    put_image(images / "b.png", 2, {"licence": BY4, "author": "Bo",
                                    "creator_url": "https://e.org/bo",
                                    "source_url": "https://e.org/b", "text": "a b"},
              sidecar_name="b.json")
    a, b = all_of(folder(tmp_path))
    assert (a.source_id, a.url, a.local_path) == ("a.jpg", "a.jpg", str(images / "a.jpg"))
    assert a.evidence == (Evidence("license", CC0),)
    assert (a.creator, a.title, a.caption, a.landing_url, a.credit) == (
        "Ana", "A", "an a", "https://e.org/a", "Photo: Ana")
    assert ("camera", "X100") in a.extra and ("metadata_from", "a.jpg.json") in a.extra
    assert b.evidence == (Evidence("licence", BY4),)
    assert (b.creator, b.creator_url, b.landing_url, b.caption) == (
        "Bo", "https://e.org/bo", "https://e.org/b", "a b")


def test_name_ext_json_sidecar_wins_over_name_json(tmp_path: Path) -> None:
    images = tmp_path / "images"
    put_image(images / "p.jpg", 1, {"license": CC0}, sidecar_name="p.jpg.json")
    (images / "p.json").write_text(json.dumps({"license": BY4}))
    (c,) = all_of(folder(tmp_path))
    assert c.evidence == (Evidence("license", CC0),)


def test_metadata_csv_rows_apply_by_file_name_relative_to_the_metadata_file(
    tmp_path: Path,
) -> None:
    images = tmp_path / "images"
    put_image(images / "x.jpg", 1)
    put_image(images / "sub" / "y.webp", 2)
    put_image(images / "sub" / "deeper" / "z.jpg", 3)
    (images / "metadata.csv").write_text(
        "file_name,license,artist,description\n"
        f"x.jpg,{CC0},Xu,first\n"
        f"sub/y.webp,{PDM},Yi,second\n", encoding="utf-8")
    (images / "sub" / "deeper" / "metadata.jsonl").write_text(
        json.dumps({"file_name": "z.jpg", "license_url": BY4, "creator": "Zo"}) + "\n")
    got = all_of(folder(tmp_path))
    assert [(c.source_id, c.creator, c.evidence) for c in got] == [
        ("sub/deeper/z.jpg", "Zo", (Evidence("license_url", BY4),)),
        ("sub/y.webp", "Yi", (Evidence("license", PDM),)),
        ("x.jpg", "Xu", (Evidence("license", CC0),)),
    ]
    assert got[2].caption == "first"
    assert ("metadata_from", "metadata.csv") in got[2].extra
    assert ("metadata_from", "sub/deeper/metadata.jsonl") in got[0].extra


def test_sidecar_overrides_metadata_fields_but_both_licence_claims_are_kept(
    tmp_path: Path,
) -> None:
    images = tmp_path / "images"
    put_image(images / "x.jpg", 1, {"license": BY4, "creator": "From sidecar"})
    (images / "metadata.csv").write_text(f"file_name,license,creator\nx.jpg,{CC0},From csv\n")
    (c,) = all_of(folder(tmp_path))
    assert c.creator == "From sidecar"
    # a disagreement is the licence gate's to judge (license_conflict), not ours to hide
    assert c.evidence == (Evidence("license", CC0), Evidence("license", BY4))


def test_a_licence_key_in_two_cases_or_a_metadata_column_named_twice_loses_no_claim(
    tmp_path: Path,
) -> None:
    nc4 = "https://creativecommons.org/licenses/by-nc/4.0/"
    images = tmp_path / "images"
    put_image(images / "x.jpg", 1, {"License": BY4, "license": nc4})
    (c,) = all_of(folder(tmp_path))
    assert c.evidence == (Evidence("License", BY4), Evidence("license", nc4))
    (images / "metadata.csv").write_text(f"file_name,license,license\nx.jpg,{nc4},{BY4}\n")
    with pytest.raises(UserError, match=r"metadata\.csv: the header line names column "
                                        r"'license' twice"):
        all_of(folder(tmp_path))


def test_every_metadata_row_naming_an_image_gives_its_licence_claim(tmp_path: Path) -> None:
    # A row appended again (a correction, a merge), or a row above and one beside: the last
    # one read used to replace the others, and an NC claim went unseen.
    nc4 = "https://creativecommons.org/licenses/by-nc/4.0/"
    images = tmp_path / "images"
    put_image(images / "sub" / "x.jpg", 1)
    (images / "sub" / "metadata.csv").write_text(
        f"file_name,license,creator\nx.jpg,{nc4},Old\n./x.jpg,{BY4},New\n")
    (c,) = all_of(folder(tmp_path))
    assert c.evidence == (Evidence("license", nc4), Evidence("license", BY4))
    assert c.creator == "New"  # descriptive fields: the later row wins, as documented
    assert [v for k, v in c.extra if k == "metadata_from"] == ["sub/metadata.csv"]
    (images / "sub" / "metadata.csv").write_text(f"file_name,license\nx.jpg,{BY4}\n")
    (images / "metadata.csv").write_text(f"file_name,license\nsub/x.jpg,{nc4}\n")
    (c,) = all_of(folder(tmp_path))
    assert c.evidence == (Evidence("license", nc4), Evidence("license", BY4))
    assert [v for k, v in c.extra if k == "metadata_from"] == ["metadata.csv",
                                                               "sub/metadata.csv"]


def test_order_is_by_relative_posix_path_and_only_images_count(tmp_path: Path) -> None:
    images = tmp_path / "images"
    for i, rel in enumerate(["b/2.JPG", "a.PNG", "c.Jpeg", "b/1.gif", "a_b.webp"]):
        put_image(images / rel, i)
    Image.new("RGB", (8, 8)).save(images / "b" / "10.tiff")
    (images / "notes.txt").write_text("not an image")
    (images / "metadata.json").write_text("{}")
    (images / ".hidden.jpg").write_bytes(make_image(9))
    put_image(images / ".cache" / "x.jpg", 10)
    got = [c.source_id for c in all_of(folder(tmp_path))]
    assert got == ["a.PNG", "a_b.webp", "b/1.gif", "b/10.tiff", "b/2.JPG", "c.Jpeg"]


def test_recursive_false_reads_only_the_top_folder(tmp_path: Path) -> None:
    put_image(tmp_path / "images" / "top.jpg", 1)
    put_image(tmp_path / "images" / "sub" / "below.jpg", 2)
    assert [c.source_id for c in all_of(folder(tmp_path, "recursive = false\n"))] == ["top.jpg"]


def test_recipe_licence_is_added_as_evidence(tmp_path: Path) -> None:
    put_image(tmp_path / "images" / "a.jpg", 1)
    (c,) = all_of(folder(tmp_path, f'license = "{CC0}"\n'))
    assert c.evidence == (Evidence("recipe:license", CC0),)


def test_resume_continues_after_the_last_path_even_if_files_were_added(tmp_path: Path) -> None:
    images = tmp_path / "images"
    for i, name in enumerate(["a.jpg", "c.jpg", "e.jpg"]):
        put_image(images / name, i)
    source = folder(tmp_path)
    full = all_of(source)
    assert [c.resume for c in full] == [{"after": "a.jpg", "count": 1},
                                        {"after": "c.jpg", "count": 2},
                                        {"after": "e.jpg", "count": 3}]
    assert all_of(source, full[0].resume) == full[1:]
    put_image(images / "b.jpg", 7)  # sorts before the resume point: already behind us
    put_image(images / "d.jpg", 8)
    assert [c.source_id for c in all_of(source, full[1].resume)] == ["d.jpg", "e.jpg"]


@pytest.mark.skipif(os.name == "nt", reason="symlinks need privileges on Windows")
def test_symlinks_leading_out_of_the_folder_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    put_image(outside / "secret.jpg", 1, {"license": CC0})
    put_image(outside / "dir" / "inner.jpg", 2)
    images = tmp_path / "images"
    put_image(images / "ok.jpg", 3)
    (images / "escape.jpg").symlink_to(outside / "secret.jpg")
    (images / "linked-dir").symlink_to(outside / "dir", target_is_directory=True)
    (images / "ok.jpg.json").symlink_to(outside / "secret.jpg.json")  # sidecar escaping
    (images / "alias.jpg").symlink_to(images / "ok.jpg")  # inside: fine
    (images / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    got = all_of(folder(tmp_path))
    assert [c.source_id for c in got] == ["alias.jpg", "ok.jpg"]
    assert all(c.evidence == () for c in got)


def test_a_malformed_sidecar_is_a_user_error_naming_it(tmp_path: Path) -> None:
    put_image(tmp_path / "images" / "a.jpg", 1)
    (tmp_path / "images" / "a.jpg.json").write_text('{"license": "CC0",}')
    with pytest.raises(UserError, match=r"a\.jpg\.json: sidecar is not valid JSON"):
        all_of(folder(tmp_path))
    (tmp_path / "images" / "a.jpg.json").write_text('["CC0"]')
    with pytest.raises(UserError, match=r"a\.jpg\.json: sidecar must be one JSON object"):
        all_of(folder(tmp_path))


def test_a_metadata_row_without_file_name_is_a_user_error(tmp_path: Path) -> None:
    put_image(tmp_path / "images" / "a.jpg", 1)
    (tmp_path / "images" / "metadata.jsonl").write_text(json.dumps({"license": CC0}) + "\n")
    with pytest.raises(UserError, match=r"metadata\.jsonl: line 1 has no file_name"):
        all_of(folder(tmp_path))


def test_a_missing_folder_names_the_recipe_key(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"sources\[0\]\.path = 'nope'"):
        folder(tmp_path, path="nope")
    (tmp_path / "file.jpg").write_bytes(make_image(1))
    with pytest.raises(UserError, match="is not a directory"):
        folder(tmp_path, path="file.jpg")


# -- the bundled offline example -----------------------------------------------------------

EXPECTED = {
    "astronaut.jpg": ("NASA", PDM),
    "camera.jpg": ("Lav Varshney", CC0),
    "chelsea.jpg": ("Stefan van der Walt", CC0),
    "chelsea_copy.jpg": ("Stefan van der Walt", CC0),
    "coffee.jpg": ("Rachel Michetti", CC0),
    "grass.jpg": ("linolafett", None),
    "horse.png": ("Andreas Preuss (marauder)", CC0),
    "hubble_deep_field.jpg": ("NASA", PDM),
    "rocket.jpg": ("SpaceX", PDM),
}


def test_offline_example_offers_every_image_with_its_documented_licence() -> None:
    source = open_recipe(EXAMPLE / "recipe.toml")
    got = all_of(source)
    assert [c.source_id for c in got] == sorted(EXPECTED)
    for c in got:
        creator, licence = EXPECTED[c.source_id]
        assert c.creator == creator
        assert c.evidence == ((Evidence("license", licence),) if licence else ())
        assert c.title and c.caption and c.landing_url
        assert Path(c.local_path).is_file()
        assert any(k == "derived_from" and "scikit-image" in v for k, v in c.extra)
        if licence:
            assert any(k == "documented_as" and "skimage.data." in v for k, v in c.extra)


def test_offline_example_holds_one_exact_copy_and_one_unlicensed_image() -> None:
    images = EXAMPLE / "images"
    assert (images / "chelsea.jpg").read_bytes() == (images / "chelsea_copy.jpg").read_bytes()
    grass = json.loads((images / "grass.jpg.json").read_text())
    assert not {"license", "license_url", "licence", "rights"} & set(grass)
    assert "deliberately omitted" in grass["note"]


def test_offline_example_images_are_small_real_images(tmp_path: Path) -> None:
    files = [p for p in (EXAMPLE / "images").iterdir() if p.suffix in (".jpg", ".png")]
    assert len(files) == len(EXPECTED)
    assert sum(p.stat().st_size for p in (EXAMPLE / "images").iterdir()) <= 400_000
    for p in files:
        assert p.stat().st_size <= 40_000, p
        with Image.open(p) as im:
            im.load()
            assert max(im.size) <= 320
    # the example does not depend on where the checkout lives
    copy = tmp_path / "offline"
    shutil.copytree(EXAMPLE, copy)
    assert len(all_of(open_recipe(copy / "recipe.toml"))) == len(EXPECTED)


def test_a_recipe_given_by_a_relative_path_finds_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    put_image(tmp_path / "proj" / "images" / "a.jpg", 1)
    (tmp_path / "proj" / "recipe.toml").write_text(
        '[dataset]\nname = "t"\n[[sources]]\nkind = "folder"\npath = "images"\n')
    monkeypatch.chdir(tmp_path)
    assert [c.source_id for c in all_of(open_recipe(Path("proj/recipe.toml")))] == ["a.jpg"]


def test_a_sidecar_or_metadata_line_naming_a_key_twice_with_two_values_is_refused(
        tmp_path: Path) -> None:
    """JSON keeps a repeated key's last value: an NC claim before a CC BY one vanished."""
    put_image(tmp_path / "images" / "a.jpg", 1)
    side = tmp_path / "images" / "a.jpg.json"
    side.write_text('{"license": "CC BY-NC 4.0", "license": "CC BY 4.0"}')
    with pytest.raises(UserError, match=r"a\.jpg\.json: the sidecar names 'license' twice"):
        all_of(folder(tmp_path))
    side.unlink()
    (tmp_path / "images" / "metadata.jsonl").write_text(
        '{"file_name": "a.jpg", "license": "CC BY-NC 4.0", "license": "CC BY 4.0"}\n')
    with pytest.raises(UserError, match=r"metadata\.jsonl: line 1: names 'license' twice"):
        all_of(folder(tmp_path))
