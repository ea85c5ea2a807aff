"""What a plain `pip install .` (no extras) must be able to do, and what pyproject.toml declares.

The build runs in a subprocess whose `sitecustomize.py` makes every distribution that is only
in an extra (or dev) unimportable, as if it were not installed: the base dependencies alone
must build and verify the offline example. pyproject.toml is the single source of both lists.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.conftest import REPO, run_cli

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
EXAMPLE = REPO / "examples" / "offline" / "recipe.toml"

BLOCKER = '''\
"""Test-only: these top-level modules behave as if their distributions were not installed."""
import sys

BLOCKED = frozenset({blocked!r})


class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
'''


def normalise(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def declared(requirements: list[str]) -> set[str]:
    return {normalise(Requirement(r).name) for r in requirements}


BASE = declared(PYPROJECT["project"]["dependencies"])
EXTRAS = {name: declared(reqs)
          for name, reqs in PYPROJECT["project"]["optional-dependencies"].items()}


def base_closure() -> set[str]:
    """The base dependencies and everything they require in turn (without their extras)."""
    seen: set[str] = set()
    todo = list(BASE)
    while todo:
        dist = todo.pop()
        if dist in seen:
            continue
        seen.add(dist)
        for text in metadata.requires(dist) or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(normalise(req.name))
    return seen


def modules_by_distribution() -> dict[str, set[str]]:
    """Installed distribution -> its top-level import names."""
    found: dict[str, set[str]] = {}
    for module, dists in metadata.packages_distributions().items():
        for dist in dists:
            found.setdefault(normalise(dist), set()).add(module)
    return found


def optional_modules() -> set[str]:
    """Import names of every distribution in an extra or dev that a base install lacks."""
    optional = set().union(*EXTRAS.values()) - base_closure()
    installed = modules_by_distribution()
    # Not installed here (s3fs, gcsfs...): their import name is their distribution name.
    return set().union(*(installed.get(d, {d.replace("-", "_")}) for d in optional))


@pytest.fixture(scope="module")
def extras_hidden(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose sitecustomize.py hides every extra; put it on PYTHONPATH."""
    site = tmp_path_factory.mktemp("base-only-site")
    (site / "sitecustomize.py").write_text(BLOCKER.format(blocked=sorted(optional_modules())),
                                           encoding="utf-8")
    return site


@pytest.fixture(scope="module")
def base_only_env(extras_hidden: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(REPO), str(extras_hidden)])}


@pytest.fixture(scope="module")
def base_only_build(tmp_path_factory: pytest.TempPathFactory, base_only_env: dict[str, str]
                    ) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("base-only") / "offline-example"
    proc = run_cli("build", str(EXAMPLE), "--out", str(out), "--no-progress", env=base_only_env)
    assert proc.returncode == 0, proc.stderr
    return out, proc.stderr


def test_the_blocker_hides_every_extra_but_no_base_dependency(base_only_env: dict[str, str]
                                                              ) -> None:
    blocked = optional_modules()
    assert {"ray", "faiss", "c2pa", "datasets", "mlcroissant"} <= blocked
    assert not blocked & {"PIL", "pyarrow", "numpy", "webdataset", "spdx_tools", "yaml"}


def test_offline_example_builds_and_verifies_with_base_dependencies_only(
        base_only_build: tuple[Path, str], base_only_env: dict[str, str]) -> None:
    out, _ = base_only_build
    proc = run_cli("verify", str(out), env=base_only_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verify: OK: 7 samples" in proc.stdout
    for paper in ("spdx.json", "croissant.json", "README.md", "ATTRIBUTION.md"):
        assert (out / paper).is_file(), paper


def test_base_only_build_says_once_that_faiss_would_be_faster(
        base_only_build: tuple[Path, str]) -> None:
    _, stderr = base_only_build
    assert stderr.count("faiss is not installed") == 1, stderr
    assert "cleanset[faiss]" in stderr


def test_every_other_command_runs_with_base_dependencies_only(
        base_only_build: tuple[Path, str], base_only_env: dict[str, str],
        tmp_path: Path) -> None:
    out, _ = base_only_build
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    image = str(EXAMPLE.parent / "images" / "astronaut.jpg")
    for args in (("licenses",), ("lookup", str(copy), image), ("report", str(copy)),
                 ("diff", str(out), str(copy)),
                 ("takedown", str(copy), "--image", image, "--reason", "test"),
                 ("diff", str(copy)), ("verify", str(copy))):
        proc = run_cli(*args, env=base_only_env)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    assert (copy / "report.html").is_file()
    assert pq.read_metadata(copy / "manifest.parquet").num_rows == 6  # 7 less the one taken down


@pytest.fixture
def without_spdx_tools(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "no-spdx-tools"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER.format(blocked=["spdx_tools"]),
                                           encoding="utf-8")
    return {"PYTHONPATH": os.pathsep.join([str(REPO), str(site)])}


def assert_names_the_missing_package(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "'spdx-tools'" in proc.stderr and "pip install spdx-tools" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_build_without_a_paper_writer_stops_before_writing_anything(
        tmp_path: Path, without_spdx_tools: dict[str, str]) -> None:
    out = tmp_path / "out"
    proc = run_cli("build", str(EXAMPLE), "--out", str(out), "--no-progress",
                   env=without_spdx_tools)
    assert_names_the_missing_package(proc)
    assert not out.exists()  # no shard, no ledger: nothing a rerun would have to repair


def test_build_to_a_url_without_a_paper_writer_makes_no_stage(
        tmp_path: Path, without_spdx_tools: dict[str, str]) -> None:
    stage = tmp_path / "stage"
    proc = run_cli("build", str(EXAMPLE), "--out", "memory://install/x", "--stage", str(stage),
                   "--no-progress", env=without_spdx_tools)
    assert_names_the_missing_package(proc)
    assert not stage.exists()


def test_takedown_without_a_paper_writer_changes_nothing(
        tmp_path: Path, without_spdx_tools: dict[str, str]) -> None:
    out = tmp_path / "out"
    run_cli("build", str(EXAMPLE), "--out", str(out), "--no-progress", check=True)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    proc = run_cli("takedown", str(out), "--key", "0000000001", "--reason", "test",
                   env=without_spdx_tools)
    assert_names_the_missing_package(proc)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before


def test_verify_says_a_rerun_rewrites_missing_papers_and_the_rerun_does(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_cli("build", str(EXAMPLE), "--out", str(out), "--no-progress", check=True)
    (out / "spdx.json").unlink()
    (out / "README.md").unlink()
    proc = run_cli("verify", str(out))
    assert proc.returncode == 1
    assert "PROBLEM spdx.json is missing" in proc.stdout
    assert "run the same `cleanset build RECIPE --out DIR` again to rewrite them" in proc.stdout
    run_cli("build", str(EXAMPLE), "--out", str(out), "--no-progress", check=True)
    assert run_cli("verify", str(out)).returncode == 0


# -- the wheel: what `pip install .` puts in site-packages ------------------------------------
WHEEL_SOURCES = ("pyproject.toml", "README.md", "builder", "licenses")  # what the build reads


def setuptools_version() -> Version:
    try:
        return Version(metadata.version("setuptools"))
    except metadata.PackageNotFoundError:
        return Version("0")


@pytest.fixture(scope="module")
def unpacked_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cleanset's wheel, built offline by the installed setuptools and unpacked."""
    if setuptools_version() < Version("77"):
        pytest.skip(f"setuptools {setuptools_version()} cannot build the wheel offline "
                    "(>=77, as the dev extra installs)")
    root = tmp_path_factory.mktemp("wheel")
    (root / "src").mkdir()
    for name in WHEEL_SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, root / "src" / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, root / "src" / name)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--wheel-dir", str(root / "dist"), str(root / "src")],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(next((root / "dist").glob("cleanset-*.whl"))) as wheel:
        wheel.extractall(root / "site-packages")
    return root / "site-packages"


def test_the_wheel_alone_builds_and_verifies_the_example_with_base_dependencies(
        unpacked_wheel: Path, extras_hidden: Path, tmp_path: Path) -> None:
    env = {"PYTHONPATH": os.pathsep.join([str(unpacked_wheel), str(extras_hidden)])}
    # Run from elsewhere, so the checkout's builder/ and licenses/ cannot be found.
    out = tmp_path / "out"
    build = run_cli("build", str(EXAMPLE), "--out", str(out), "--no-progress", env=env,
                    cwd=tmp_path)
    assert build.returncode == 0, build.stderr
    verify = run_cli("verify", str(out), env=env, cwd=tmp_path)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert (unpacked_wheel / "builder" / "licenses" / "policies" / "commercial.toml").is_file()


def test_every_package_under_builder_is_listed_for_the_wheel() -> None:
    setuptools = PYPROJECT["tool"]["setuptools"]
    found = {".".join(init.parent.relative_to(REPO).parts)
             for init in (REPO / "builder").rglob("__init__.py")}
    assert found <= set(setuptools["packages"]), "add to [tool.setuptools] packages"
    assert setuptools["package-dir"]["builder.licenses"] == "licenses"
    assert "builder.licenses" in setuptools["packages"]


# -- every import in builder/ is declared -----------------------------------------------------
def third_party_imports() -> dict[str, set[str]]:
    """Top-level module -> the builder/ files importing it (absolute imports, not stdlib)."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / "builder").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top != "builder" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def distribution_of(module: str) -> str:
    dists = metadata.packages_distributions().get(module)
    assert dists, f"{module} is imported in builder/ but not installed here; cannot check it"
    return normalise(dists[0])


def test_every_third_party_import_in_builder_is_a_base_dependency_or_an_extra() -> None:
    optional = {name: dists for name, dists in EXTRAS.items() if name != "dev"}
    undeclared = []
    for module, files in sorted(third_party_imports().items()):
        dist = distribution_of(module)
        extras = [name for name, dists in optional.items() if dist in dists]
        if dist not in BASE and not extras:
            undeclared.append(f"{module} ({dist}) in {', '.join(sorted(files))}")
    assert not undeclared, "declare these in pyproject.toml [project] dependencies: " + \
        "; ".join(undeclared)


def test_every_optional_import_names_its_extra_in_an_install_hint() -> None:
    code = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "builder").rglob("*.py"))
    optional = {name: dists for name, dists in EXTRAS.items() if name != "dev"}
    for module in sorted(third_party_imports()):
        dist = distribution_of(module)
        if dist in BASE:
            continue
        extras = [name for name, dists in optional.items() if dist in dists]
        assert any(f"cleanset[{extra}]" in code for extra in extras), (module, extras)


def test_the_papers_extra_still_installs_for_old_instructions() -> None:
    assert "papers" in EXTRAS
    assert EXTRAS["papers"] <= BASE  # empty or an alias: it adds nothing a build lacks
