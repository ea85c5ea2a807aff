"""The User-Agent must let the sites a build asks reach whoever runs it: a placeholder
(example.org/.com/.net) or no contact at all is warned about loudly for every network source,
and refused before anything is created for sources whose policy requires a contact."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from builder.recipe import user_agent_problem
from tests.conftest import make_image, run_cli, serve_no_site_policies, write_jsonl, write_recipe

REPO = Path(__file__).resolve().parents[1]
CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"
REAL = "cleanset-test/0.1 (https://ci.cleanset.test/contact)"
PLACEHOLDER = "cleanset/0.1 (https://example.org/your-project; you@example.org)"


def table_recipe(tmp_path: Path, httpserver: HTTPServer, user_agent: str) -> Path:
    """A table of two image URLs on the loopback server: a network source."""
    serve_no_site_policies(httpserver)
    rows = []
    for i in range(2):
        httpserver.expect_request(f"/{i}.jpg").respond_with_data(make_image(i),
                                                                 content_type="image/jpeg")
        rows.append({"url": httpserver.url_for(f"/{i}.jpg"), "license": CC0})
    write_jsonl(tmp_path / "rows.jsonl", rows)
    return write_recipe(tmp_path / "recipe.toml", f"""
[dataset]
name = "ua-test"
[[sources]]
kind = "table"
path = "rows.jsonl"
[fetch]
allow_private_addresses = true
user_agent = "{user_agent}"
retries = 0
""")


def wikimedia_recipe(tmp_path: Path, user_agent: str) -> Path:
    return write_recipe(tmp_path / "commons.toml", f"""
[dataset]
name = "commons"
[[sources]]
kind = "wikimedia"
api = "http://127.0.0.1:9/w/api.php"
category = "Featured pictures on Wikimedia Commons"
[fetch]
allow_private_addresses = true
user_agent = "{user_agent}"
""")


def test_a_placeholder_contact_is_warned_on_stderr_and_in_the_summary_of_a_network_build(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    recipe = table_recipe(tmp_path, httpserver, PLACEHOLDER)
    proc = run_cli("build", str(recipe), "--out", str(tmp_path / "out"), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith(f"cleanset: warning: {recipe.resolve()}: [fetch] user_agent")
    assert "example.org" in proc.stderr and "https://your.site/contact" in proc.stderr
    summary = proc.stdout.splitlines()
    assert summary[0].startswith("cleanset build finished: 2 candidates, 2 accepted")
    assert summary[-1].startswith("  warning: ") and "example.org" in summary[-1]


@pytest.mark.parametrize("user_agent", ["cleanset/0.1", "cleanset/0.1 (Jane's crawler)",
                                        "cleanset/0.1 (mailto:data@www.example.com)",
                                        "cleanset/0.1 (https://example.net/team)"])
def test_no_contact_or_any_placeholder_domain_counts_as_no_real_contact(user_agent: str) -> None:
    assert user_agent_problem(user_agent) is not None


@pytest.mark.parametrize("user_agent", [REAL, "cleanset/0.1 (data-team@lab.uni.edu)",
                                        "cleanset/0.1 (https://notexample.org/contact)"])
def test_a_real_url_or_email_is_a_contact(user_agent: str) -> None:
    assert user_agent_problem(user_agent) is None


@pytest.mark.parametrize("user_agent", [PLACEHOLDER, "cleanset/0.1"])
def test_wikimedia_without_a_real_contact_is_refused_before_anything_is_created(
        tmp_path: Path, user_agent: str) -> None:
    recipe = wikimedia_recipe(tmp_path, user_agent)
    out = tmp_path / "out"
    proc = run_cli("build", str(recipe), "--out", str(out), "--no-progress")
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"cleanset: error: {recipe.resolve()}: [fetch] user_agent")
    assert "source 'wikimedia'" in proc.stderr and "User-Agent policy" in proc.stderr
    assert 'user_agent = "cleanset/0.1 (https://your.site/contact' in proc.stderr
    assert not out.exists()


def test_the_shipped_wikimedia_recipe_is_refused_until_given_a_contact(tmp_path: Path) -> None:
    shipped = Path(shutil.copy(REPO / "recipes" / "wikimedia-featured.toml", tmp_path))
    proc = run_cli("build", str(shipped), "--out", str(tmp_path / "out"), "--no-progress")
    assert proc.returncode == 2 and "example.org" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("shipped", sorted(p.name for p in (REPO / "recipes").glob("*.toml")))
def test_every_shipped_recipe_says_beside_its_placeholder_user_agent_to_change_it(
        shipped: str) -> None:
    lines = (REPO / "recipes" / shipped).read_text(encoding="utf-8").splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("user_agent"))
    assert user_agent_problem(lines[at]) is not None  # the placeholder stays: users must set it
    assert lines[at - 2].startswith("# Change this: name your project and a real contact")


def test_only_sources_that_ask_a_server_are_warned_about_and_a_real_contact_is_not(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(make_image(9))
    (tmp_path / "images" / "a.jpg.json").write_text(f'{{"license": "{CC0}"}}', encoding="utf-8")
    table = table_recipe(tmp_path, httpserver, PLACEHOLDER).read_text(encoding="utf-8")
    mixed = write_recipe(tmp_path / "mixed.toml", table.replace(
        "[fetch]", '[[sources]]\nkind = "folder"\nname = "mine"\npath = "images"\n[fetch]'))
    proc = run_cli("build", str(mixed), "--out", str(tmp_path / "mixed"), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "source(s) 'table' cannot reach you" in proc.stderr and "'mine'" not in proc.stderr

    local = write_recipe(tmp_path / "local.toml", f"""
[dataset]
name = "local"
[[sources]]
kind = "folder"
path = "images"
[fetch]
user_agent = "{PLACEHOLDER}"
""")
    real = write_recipe(tmp_path / "real.toml", table.replace(PLACEHOLDER, REAL))
    for recipe in (local, real):
        proc = run_cli("build", str(recipe), "--out", str(tmp_path / recipe.stem),
                       "--no-progress")
        assert proc.returncode == 0, proc.stderr
        assert "warning" not in proc.stderr and "warning" not in proc.stdout
