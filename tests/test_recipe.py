"""The recipe contract: every user mistake is exit code 2 and one message naming file, key, fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import UserError
from builder.recipe import load_recipe
from tests.conftest import make_image, run_cli, write_recipe

GOOD = """
[dataset]
name = "ok"
[policy]
use = "commercial"
[[sources]]
kind = "folder"
path = "images"
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(make_image(1))
    return tmp_path


def test_a_good_recipe_loads_with_defaults(folder: Path) -> None:
    recipe = load_recipe(write_recipe(folder / "r.toml", GOOD))
    assert recipe.dataset.samples_per_shard == 1000
    assert recipe.sources[0].kind == "folder" and recipe.sources[0].name == "folder"
    assert recipe.executor.kind == "auto"
    assert recipe.fetch.allow_private_addresses is False


@pytest.mark.parametrize(("body", "names"), [
    (GOOD.replace('use = "commercial"', 'use = "commercial"\ncolour = "red"'),
     ["policy.colour", "Known keys"]),
    (GOOD.replace('name = "ok"', 'name = "ok"\nsamples_per_shard = "many"'),
     ["dataset.samples_per_shard", "an integer"]),
    (GOOD.replace('path = "images"', 'path = "nowhere"'), ["sources[0].path", "nowhere"]),
    (GOOD.replace('kind = "folder"', 'kind = "ftp"'), ["sources[0].kind", "Known kinds"]),
    (GOOD + '\n[fetch]\ntimeout_s = -1\n', ["[fetch]", "timeout_s"]),
    (GOOD + '\n[dedup]\nmax_distance = 999\n', ["[dedup]", "max_distance"]),
    (GOOD + '\n[executor]\nkind = "slurm"\n', ["[executor]", "slurm"]),
    (GOOD + '\n[extras]\nx = 1\n', ["unknown section [extras]"]),
    (GOOD.replace('name = "ok"', 'name = "Not OK!"'), ["dataset", "name"]),
    (GOOD.replace('use = "commercial"', 'use = "no-such-policy"'), ["no-such-policy"]),
    ("[dataset\nname = 1", ["not valid TOML"]),
    ('[[sources]]\nkind = "folder"\npath = "images"\n', ["missing [dataset]"]),
])
def test_a_bad_recipe_exits_2_naming_the_file_and_key_without_a_traceback(
        folder: Path, body: str, names: list[str]) -> None:
    recipe = write_recipe(folder / "bad.toml", body)
    proc = run_cli("build", str(recipe), "--out", str(folder / "out"), "--no-progress")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "bad.toml" in proc.stderr or "no-such-policy" in proc.stderr
    for name in names:
        assert name in proc.stderr, (name, proc.stderr)


@pytest.mark.parametrize(("typo", "named", "suggested"), [
    (GOOD.replace('path = "images"', 'path = "images"\nlicence = "CC0-1.0"'),
     "unknown key sources[0].licence.", "Did you mean 'license'?"),
    (GOOD.replace('name = "ok"', 'name = "ok"\nsample_per_shard = 10'),
     "unknown key dataset.sample_per_shard.", "Did you mean 'samples_per_shard'?"),
    (GOOD + '\n[fetch]\nallow_private_address = true\n',
     "unknown key fetch.allow_private_address.", "Did you mean 'allow_private_addresses'?"),
    (GOOD + '\n[optout]\nrobots = false\n',
     "unknown key optout.robots.", "Did you mean 'robots_txt'?"),
    (GOOD + '\n[fetsh]\nretries = 1\n', "unknown section [fetsh].", "Did you mean 'fetch'?"),
    (GOOD.replace('kind = "folder"', 'kind = "fodler"'),
     "sources[0].kind = 'fodler' is not a known source kind.", "Did you mean 'folder'?"),
    (GOOD.replace('kind = "folder"\npath = "images"',
                  'kind = "table"\npath = "u.csv"\ncolumns = { ulr = "link" }'),
     "sources[0].columns.ulr", "Did you mean 'url'?"),
])
def test_a_misspelt_key_section_or_kind_is_refused_with_the_closest_name(
        folder: Path, typo: str, named: str, suggested: str) -> None:
    (folder / "u.csv").write_text("link\nhttps://e.org/1.jpg\n")
    with pytest.raises(UserError) as err:
        load_recipe(write_recipe(folder / "r.toml", typo))
    assert named in str(err.value) and suggested in str(err.value), str(err.value)


def test_a_key_unlike_any_known_one_gets_no_suggestion(folder: Path) -> None:
    with pytest.raises(UserError) as err:
        load_recipe(write_recipe(folder / "r.toml", GOOD + "\n[fetch]\nflavour = 1\n"))
    assert "unknown key fetch.flavour." in str(err.value)
    assert "Did you mean" not in str(err.value)


def test_a_recipe_saved_as_utf8_with_a_byte_order_mark_loads(folder: Path) -> None:
    # Windows editors' "UTF-8 with BOM"; tomllib alone says "Invalid statement" at 1:1.
    recipe = folder / "bom.toml"
    recipe.write_bytes(b"\xef\xbb\xbf" + GOOD.lstrip().encode())
    loaded = load_recipe(recipe)
    assert loaded.dataset.name == "ok" and loaded.sources[0].kind == "folder"


def test_a_missing_recipe_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="recipe not found"):
        load_recipe(tmp_path / "absent.toml")


def test_an_api_source_with_a_bad_url_is_refused_before_any_work(folder: Path) -> None:
    body = GOOD.replace('kind = "folder"\npath = "images"', 'kind = "wikimedia"\n'
                        'category = "Featured pictures"\napi = "not a url"')
    proc = run_cli("build", str(write_recipe(folder / "bad.toml", body)), "--out",
                   str(folder / "out"), "--no-progress")
    assert proc.returncode == 2
    assert "api" in proc.stderr and "Traceback" not in proc.stderr
    assert not (folder / "out" / "ledger.sqlite").exists()


def test_bad_cli_arguments_exit_2(folder: Path) -> None:
    recipe = write_recipe(folder / "r.toml", GOOD)
    proc = run_cli("build", str(recipe), "--limit", "0")
    assert proc.returncode == 2 and "--limit" in proc.stderr


def test_load_recipe_refuses_a_misspelt_policy_naming_the_file_and_the_closest_name(
        folder: Path) -> None:
    recipe = write_recipe(folder / "r.toml", GOOD.replace('"commercial"', '"public-domian"'))
    with pytest.raises(UserError) as err:
        load_recipe(recipe)
    assert str(recipe) in str(err.value)
    assert "[policy] use = 'public-domian'" in str(err.value)
    assert "Did you mean 'public-domain'?" in str(err.value)


def test_load_recipe_refuses_an_empty_or_blank_dataset_output(folder: Path) -> None:
    for value in ('""', '"   "'):
        body = GOOD.replace('name = "ok"', f'name = "ok"\noutput = {value}')
        with pytest.raises(UserError, match=r"\[dataset\] output = .* current directory"):
            load_recipe(write_recipe(folder / "r.toml", body))
