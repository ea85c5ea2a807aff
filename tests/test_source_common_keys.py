"""Every source kind takes the same common keys: `name` (every kind), and for the kinds that
read a remote API `api`, `limit` and `rps`, as the README promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.recipe import load_recipe
from builder.sources import API_KINDS, COMMON_API_KEYS, REGISTRY
from tests.conftest import write_recipe

# The keys each API kind needs besides the common ones, so that only the latter are tested.
REQUIRED = {
    "wikimedia": 'category = "Test files"',
    "europeana": 'query = "*"',
    "openverse": 'query = "lighthouse"',
}


def test_every_registered_kind_is_either_an_api_kind_or_reads_local_data() -> None:
    assert set(REGISTRY) - API_KINDS == {"table", "folder", "hf"}
    assert set(REGISTRY) >= API_KINDS


@pytest.mark.parametrize("kind", sorted(API_KINDS))
def test_every_api_source_kind_accepts_the_common_keys(
        kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SI_API_KEY", "si-key-for-the-test")
    monkeypatch.setenv("EUROPEANA_API_KEY", "eu-key-for-the-test")
    recipe = load_recipe(write_recipe(tmp_path / "recipe.toml", f"""
[dataset]
name = "common-keys"

[[sources]]
kind = "{kind}"
name = "mine"
api = "http://127.0.0.1:9/api"
limit = 7
rps = 0.5
{REQUIRED.get(kind, "")}
"""))
    spec = recipe.sources[0]
    assert spec.name == "mine"
    assert {key: getattr(spec.config, key) for key in COMMON_API_KEYS} == {
        "api": "http://127.0.0.1:9/api", "limit": 7, "rps": 0.5}
