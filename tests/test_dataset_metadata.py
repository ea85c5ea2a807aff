"""`[dataset] homepage`, `contact`, `citation` in the papers, and when the images were
collected (#16 item 18): Croissant validated with mlcroissant, SPDX with spdx-tools."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from builder.errors import UserError
from builder.recipe import load_recipe
from tests.conftest import FIXED_EPOCH, make_image, run_cli, write_recipe

CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"
HOMEPAGE = "https://example.org/datasets/meta-test"
CITATION = ("@misc{metatest2024,\n  title = {meta-test: openly licensed images},\n"
            "  year = {2024}\n}")
FIRST = "2023-11-14T22:13:20Z"  # FIXED_EPOCH
NEXT_DAY_EPOCH = str(int(FIXED_EPOCH) + 86_400)
NEXT_DAY = "2023-11-15T22:13:20Z"

READ_METADATA = """
import json, sys
import mlcroissant as mlc
m = mlc.Dataset(sys.argv[1]).metadata  # raises on validation errors
print(json.dumps({
    "url": m.url, "cite_as": m.cite_as,
    "timeframe": [d.isoformat() for d in m.data_collection_timeframe or []],
    "creators": [[c.name, c.email, c.url] for c in m.creators],
    "publisher": [[p.name, p.email, p.url] for p in m.publisher],
}))
"""


def image_folder(root: Path, name: str, seeds: range) -> None:
    folder = root / name
    folder.mkdir()
    for seed in seeds:
        (folder / f"{seed}.jpg").write_bytes(make_image(seed, (80, 60)))
        (folder / f"{seed}.jpg.json").write_text(json.dumps({"license": CC0}), encoding="utf-8")


def recipe_text(dataset_keys: str, folders: tuple[str, ...] = ("images",)) -> str:
    sources = "".join(f'\n[[sources]]\nkind = "folder"\nname = "{f}"\npath = "{f}"\n'
                      for f in folders)
    return (f'[dataset]\nname = "meta-test"\ndescription = "Generated blocks."\n'
            f"{dataset_keys}\n[policy]\nuse = \"public-domain\"\n{sources}")


def build(recipe: Path, out: Path, epoch: str = FIXED_EPOCH) -> None:
    run_cli("build", str(recipe), "--out", str(out), "--no-progress",
            env={"SOURCE_DATE_EPOCH": epoch}, check=True)


def croissant_metadata(out: Path, tmp_path: Path) -> dict:
    env = {**os.environ, "CROISSANT_CACHE": str(tmp_path / "croissant-cache")}
    proc = subprocess.run([sys.executable, "-c", READ_METADATA, str(out / "croissant.json")],
                          capture_output=True, text=True, env=env, timeout=300, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def spdx_package(out: Path):  # type: ignore[no-untyped-def]
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    document = parse_file(str(out / "spdx.json"))
    assert validate_full_spdx_document(document) == []
    return document.packages[0]


@pytest.fixture(scope="module")
def described(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("described")
    image_folder(root, "images", range(3))
    recipe = write_recipe(root / "recipe.toml", recipe_text(
        f'homepage = "{HOMEPAGE}"\ncontact = "datasets@example.org"\n'
        f"citation = '''\n{CITATION}'''\n"))
    build(recipe, root / "out")
    return root / "out"


def test_croissant_names_the_homepage_citation_maintainers_and_collection_time(
        described: Path, tmp_path: Path) -> None:
    meta = croissant_metadata(described, tmp_path)
    assert meta["url"] == HOMEPAGE
    assert meta["cite_as"] == CITATION
    maintainers = ["Maintainers of meta-test", "datasets@example.org", None]
    assert meta["creators"] == [maintainers] and meta["publisher"] == [maintainers]
    doc = json.loads((described / "croissant.json").read_text())
    assert doc["rai:dataCollectionTimeframe"] == [FIRST, FIRST]


def test_spdx_package_has_the_homepage_and_the_maintainers_as_supplier(described: Path) -> None:
    from spdx_tools.spdx.model import ActorType

    package = spdx_package(described)
    assert package.homepage == HOMEPAGE
    assert package.supplier.actor_type == ActorType.ORGANIZATION
    assert (package.supplier.name, package.supplier.email) == (
        "Maintainers of meta-test", "datasets@example.org")
    assert "Cite as: @misc{metatest2024," in package.comment


def test_card_shows_contact_homepage_and_citation_and_takedowns_go_to_the_contact(
        described: Path) -> None:
    card = (described / "README.md").read_text(encoding="utf-8")
    assert f"- Homepage: {HOMEPAGE}" in card
    assert "- Contact (questions, takedown requests): <datasets@example.org>" in card
    takedown = card.split("## Takedown requests", 1)[1].split("\n## ", 1)[0]
    assert "contact the maintainers at <datasets@example.org>" in takedown
    assert f"## Citation\n\n```bibtex\n{CITATION}\n```\n" in card


def test_without_a_homepage_no_paper_invents_an_address(tmp_path: Path) -> None:
    image_folder(tmp_path, "images", range(2))
    recipe = write_recipe(tmp_path / "recipe.toml", recipe_text(""))
    out = tmp_path / "out"
    build(recipe, out)
    for paper in ("croissant.json", "spdx.json", "README.md"):
        assert "example.invalid" not in (out / paper).read_text(encoding="utf-8"), paper
    meta = croissant_metadata(out, tmp_path)
    assert meta["url"] is None and meta["creators"] == []
    assert meta["cite_as"].startswith("meta-test, version 1.0.0")
    package = spdx_package(out)
    assert str(package.homepage) == "NOASSERTION" and str(package.supplier) == "NOASSERTION"
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "## Contact" not in card and "## Citation" not in card
    assert "its recipe names no `[dataset] contact`" in card


def test_a_contact_url_reaches_croissant_and_the_spdx_comment(tmp_path: Path) -> None:
    image_folder(tmp_path, "images", range(2))
    recipe = write_recipe(tmp_path / "recipe.toml",
                          recipe_text('contact = "https://example.org/contact"\n'))
    out = tmp_path / "out"
    build(recipe, out)
    meta = croissant_metadata(out, tmp_path)
    assert meta["publisher"] == [["Maintainers of meta-test", None, "https://example.org/contact"]]
    package = spdx_package(out)
    assert package.supplier.email is None
    assert package.comment.splitlines()[0] == "Contact: https://example.org/contact"


def test_collection_timeframe_spans_the_first_and_last_retrieval_and_later_keys_win(
        tmp_path: Path) -> None:
    image_folder(tmp_path, "old", range(2))
    image_folder(tmp_path, "new", range(10, 12))
    out = tmp_path / "out"
    build(write_recipe(tmp_path / "one.toml", recipe_text(
        f'homepage = "{HOMEPAGE}"\n', ("old",))), out)
    # A second recipe into the same DIR, a day later: it adds images and drops the homepage.
    build(write_recipe(tmp_path / "two.toml", recipe_text(
        'contact = "new@example.org"\n', ("old", "new"))), out, epoch=NEXT_DAY_EPOCH)
    doc = json.loads((out / "croissant.json").read_text())
    assert doc["rai:dataCollectionTimeframe"] == [FIRST, NEXT_DAY]
    assert "url" not in doc
    assert doc["publisher"]["email"] == "new@example.org"


@pytest.mark.parametrize(("line", "names"), [
    ('homepage = "example.org/data"', "[dataset] homepage = 'example.org/data'"),
    ('homepage = "ftp://example.org/data"', "[dataset] homepage = 'ftp://example.org/data'"),
    ('homepage = "http://[::1"', "[dataset] homepage = 'http://[::1'"),
    ('contact = "the maintainers"', "[dataset] contact = 'the maintainers'"),
    ('contact = "mailto:a@example.org"', 'without "mailto:", e.g. "a@example.org"'),
    ('citation = "  "', "[dataset] citation is empty"),
    ("homepage = 3", "dataset.homepage must be a string"),
])
def test_bad_dataset_contacts_are_refused_naming_the_recipe_and_key(
        tmp_path: Path, line: str, names: str) -> None:
    image_folder(tmp_path, "images", range(1))
    recipe = write_recipe(tmp_path / "recipe.toml", recipe_text(line + "\n"))
    with pytest.raises(UserError) as caught:
        load_recipe(recipe)
    assert str(recipe) in str(caught.value) and names in str(caught.value)
    proc = run_cli("build", str(recipe), "--out", str(tmp_path / "out"), "--no-progress")
    assert proc.returncode == 2
    assert names in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
