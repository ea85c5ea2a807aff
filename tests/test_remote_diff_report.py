"""`diff` and `report` given the URL a dataset was published to (file://, through the real CLI).

`diff` downloads only what it compares (the ledger for versions, the manifest for two
datasets); `report` writes beside the ledger, so it asks for a local directory and says which.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.conftest import run_cli
from tests.test_remote_output import add_images, recipe_for


def publish(tmp_path: Path, name: str, seeds: list[int], **env: str) -> tuple[str, Path]:
    """Build images `seeds` into a stage and publish them to a file:// URL; (URL, stage)."""
    add_images(tmp_path / f"{name}-images", seeds)
    recipe = recipe_for(tmp_path, f"{name}.toml", f"{name}-images", per_shard=1)
    url = (tmp_path / "remote" / name).as_uri()
    stage = tmp_path / f"{name}-stage"
    run_cli("build", str(recipe), "--out", url, "--stage", str(stage), "--no-progress",
            check=True, env=env)
    return url, stage


def test_diff_of_a_published_url_lists_the_versions_keys_as_its_stage_does(
        tmp_path: Path) -> None:
    url, stage = publish(tmp_path, "pub", [1, 2, 3])
    run_cli("takedown", url, "--stage", str(stage), "--key", "0000000001", "--reason",
            "the artist asked", check=True)
    proc = run_cli("diff", url, check=True)
    assert proc.stdout.splitlines() == [f"diff {url}@1 -> {url}@2: 1 removed, 0 added",
                                        "- 0000000001"]
    local = run_cli("diff", str(stage), check=True).stdout
    assert local.splitlines()[1:] == proc.stdout.splitlines()[1:]


def test_diff_of_two_published_urls_compares_their_manifests(tmp_path: Path) -> None:
    first, _ = publish(tmp_path, "first", [1, 2])
    second, second_stage = publish(tmp_path, "second", [1, 2, 3])
    proc = run_cli("diff", first, second, check=True)
    assert proc.stdout.splitlines() == [f"diff {first} -> {second}: 0 removed, 1 added",
                                        "+ 0000000002"]
    mixed = run_cli("diff", first, str(second_stage), check=True)
    assert mixed.stdout.splitlines()[1:] == ["+ 0000000002"]


def test_diff_of_a_url_where_nothing_is_published_exits_2_naming_the_url(
        tmp_path: Path) -> None:
    url = (tmp_path / "nothing-here").as_uri()
    proc = run_cli("diff", url)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"cleanset: error: {url}: no ") and "published" in proc.stderr
    assert "file:/" + str(tmp_path).lstrip("/") not in proc.stderr.replace(url, "")


def test_report_of_a_url_asks_for_a_local_directory_and_names_the_stage(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    url, _ = publish(tmp_path, "pub", [1, 2], XDG_CACHE_HOME=str(cache))
    default = cache / "cleanset" / "stage" / hashlib.sha256(url.encode()).hexdigest()[:16]
    proc = run_cli("report", url, env={"XDG_CACHE_HOME": str(cache)}, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"cleanset: error: report {url}: needs a local directory")
    assert "stage" in proc.stderr and "local copy" in proc.stderr
    assert not list((tmp_path / "remote").rglob("report.html"))
    assert not (tmp_path / "file:").exists()

    run_cli("build", str(tmp_path / "pub.toml"), "--out", url, "--no-progress", check=True,
            env={"XDG_CACHE_HOME": str(cache)})  # now the default stage holds it
    proc = run_cli("report", url, env={"XDG_CACHE_HOME": str(cache)})
    assert proc.returncode == 2
    assert f"`cleanset report {default}`" in proc.stderr
