"""The documentation cannot drift: every shell command and Python snippet in README.md and
docs/ runs here against the bundled offline example (or is marked as not run, with the reason:
`<!-- network: ... -->` for what needs the internet, `<!-- not run: ... -->` otherwise), in the
order a reader meets them, one fresh working directory per document."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import FIXED_EPOCH, REPO

DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
# Run against a local replay of its API instead (test_the_commons_guide_runs_against_a_replay).
REPLAYED = {REPO / "docs" / "guide-commons.md"}
RUN_LANGUAGES = {"bash": "bash", "sh": "bash", "python": "python"}
FENCE = re.compile(r"^```(\w*)\s*$")
MARKER = re.compile(r"^<!--\s*(network|not run)\s*:\s*(.+?)\s*-->\s*$")


@dataclass(frozen=True)
class Snippet:
    doc: Path
    line: int
    language: str
    code: str
    skip: str | None  # why it is not run, from the marker above it

    def __str__(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"


def snippets(doc: Path) -> list[Snippet]:
    found: list[Snippet] = []
    lines = doc.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        language, start = opening.group(1), i
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        if language not in RUN_LANGUAGES:
            continue
        previous = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(previous.strip())
        skip = f"{marker.group(1)}: {marker.group(2)}" if marker else None
        found.append(Snippet(doc, start + 1, language, "\n".join(body) + "\n", skip))
    return found


@pytest.fixture(scope="module")
def offline_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("built") / "offline-example"
    subprocess.run([sys.executable, "-m", "builder", "build",
                    str(REPO / "examples/offline/recipe.toml"), "--out", str(out),
                    "--no-progress"], check=True, capture_output=True, env=_env(out.parent))
    return out


def _env(shim: Path) -> dict[str, str]:
    return {**os.environ, "SOURCE_DATE_EPOCH": FIXED_EPOCH, "PYTHONPATH": str(REPO),
            "PATH": f"{shim}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONWARNINGS": "error::UserWarning"}


def _workdir(tmp_path: Path, offline_example: Path) -> Path:
    """A reader's checkout: the example and recipes, the offline example already built, and
    `cleanset` meaning this tree's code."""
    work = tmp_path / "work"
    work.mkdir()
    for name in ("examples", "recipes", "licenses"):
        (work / name).symlink_to(REPO / name)
    shutil.copytree(offline_example, work / "shards" / "offline-example")
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "cleanset").write_text(f"#!/bin/sh\nexec {sys.executable} -m builder \"$@\"\n")
    (shim / "cleanset").chmod(0o755)
    return work


@pytest.mark.parametrize("doc", sorted(set(DOCS) - REPLAYED),
                         ids=lambda d: str(d.relative_to(REPO)))
def test_every_snippet_in_the_doc_runs(doc: Path, tmp_path: Path, offline_example: Path) -> None:
    work = _workdir(tmp_path, offline_example)
    env = _env(tmp_path / "bin")
    for snippet in snippets(doc):
        if not snippet.skip:
            _run(snippet, work, env)


def test_the_commons_guide_runs_against_a_replay(httpserver, tmp_path: Path,
                                                 offline_example: Path) -> None:
    """docs/guide-commons.md, command by command, with the recipe it copies pointed at a local
    MediaWiki API (and its images on 127.0.0.1): only the API root differs."""
    from tests.test_source_wikimedia import FakeCommons

    commons = FakeCommons(httpserver)
    work = _workdir(tmp_path, offline_example)
    env = {**_env(tmp_path / "bin"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    ran = 0
    for snippet in snippets(REPO / "docs" / "guide-commons.md"):
        _point_at_replay(work / "my-commons.toml", commons.url)
        if not snippet.skip:
            _run(snippet, work, env)
            ran += 1
    assert ran >= 10
    assert (work / "commons" / "report.html").is_file()
    assert (work / "published" / "commons" / "_cleanset_published.json").is_file()


def _point_at_replay(recipe: Path, api: str) -> None:
    if not recipe.exists() or "allow_private_addresses" in recipe.read_text():
        return
    text = recipe.read_text()
    assert "\n# api = " in text, "the Commons recipe should show its api key, commented out"
    text = text.replace("\n# api = ", f'\napi = "{api}"\n# was: api = ', 1)
    text = text.replace("\n[fetch]\n", "\n[fetch]\nallow_private_addresses = true\n", 1)
    recipe.write_text(text)


def _run(snippet: Snippet, work: Path, env: dict[str, str]) -> None:
    command = ([RUN_LANGUAGES[snippet.language], "-euo", "pipefail", "-c", snippet.code]
               if snippet.language != "python" else [sys.executable, "-c", snippet.code])
    proc = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, (f"{snippet} ({snippet.language}) exited {proc.returncode}\n"
                                  f"{snippet.code}\nstdout:\n{proc.stdout[-3000:]}\n"
                                  f"stderr:\n{proc.stderr[-3000:]}")


def test_every_skipped_snippet_says_why() -> None:
    for doc in DOCS:
        for snippet in snippets(doc):
            if snippet.skip:
                assert len(snippet.skip.split(":", 1)[1].strip()) > 5, f"{snippet}: say why"


def test_the_snippet_finder_sees_markers_and_languages(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text("```bash\necho a\n```\n\n<!-- network: talks to Commons -->\n```bash\n"
                   "curl x\n```\n```toml\n[a]\n```\n```python\nprint(1)\n```\n")
    found = snippets(doc)
    assert [(s.language, s.skip) for s in found] == [
        ("bash", None), ("bash", "network: talks to Commons"), ("python", None)]


# -- docs/recipe.md lists every recipe key the code accepts, and no other ------------------
RECIPE_MD = REPO / "docs" / "recipe.md"
SECTION = re.compile(r"^## \[(\[?[a-z]+\]?)\]\s*$")
KIND = re.compile(r'^### kind = "([a-z]+)"\s*$')
ROW = re.compile(r"^\| `([a-z_0-9]+)` \|")


def documented_keys() -> dict[str, set[str]]:
    """{"dataset": {...}, ..., "sources": common keys, "sources.table": {...}, ...}"""
    keys: dict[str, set[str]] = {}
    where: str | None = None
    for line in RECIPE_MD.read_text(encoding="utf-8").splitlines():
        if (m := SECTION.match(line)):
            where = m.group(1).strip("[]")
            keys.setdefault(where, set())
        elif (m := KIND.match(line)):
            where = f"sources.{m.group(1)}"
            keys.setdefault(where, set())
        elif where is not None and (m := ROW.match(line)):
            keys[where].add(m.group(1))
    return keys


def accepted_keys() -> dict[str, set[str]]:
    import dataclasses
    import importlib

    from builder import recipe
    from builder.evidence.archive import EvidenceConfig
    from builder.optout.config import OptoutConfig
    from builder.recheck_log import RecheckConfig
    from builder.sources import REGISTRY

    def names(cls: type) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    keys = {"dataset": names(recipe.DatasetConfig), "policy": names(recipe.PolicyConfig),
            "fetch": names(recipe.FetchConfig), "image": names(recipe.ImageConfig),
            "dedup": names(recipe.DedupConfig), "executor": names(recipe.ExecutorConfig),
            "optout": names(OptoutConfig), "evidence": names(EvidenceConfig),
            "recheck": names(RecheckConfig),
            "sources": {"kind", "name"}}
    for kind, module in REGISTRY.items():
        keys[f"sources.{kind}"] = names(importlib.import_module(module).Config)
    return keys


def test_recipe_md_documents_every_section_the_recipe_loader_accepts() -> None:
    from builder.recipe import EXTENSION_SECTIONS, SECTIONS

    assert set(documented_keys()) & (SECTIONS | EXTENSION_SECTIONS) == SECTIONS | EXTENSION_SECTIONS


def test_recipe_md_lists_exactly_the_keys_the_code_accepts() -> None:
    documented, accepted = documented_keys(), accepted_keys()
    assert set(documented) == set(accepted), "sections or source kinds differ"
    for where, keys in accepted.items():
        assert keys - documented[where] == set(), f"[{where}] keys missing from docs/recipe.md"
        assert documented[where] - keys == set(), f"[{where}] keys docs/recipe.md names but " \
                                                  "the code refuses"


def test_a_key_removed_from_recipe_md_fails_the_coverage_check(tmp_path: Path,
                                                               monkeypatch) -> None:
    text = RECIPE_MD.read_text(encoding="utf-8")
    trimmed = tmp_path / "recipe.md"
    trimmed.write_text(text.replace("| `max_per_creator` |", "| max per creator |"))
    monkeypatch.setattr(sys.modules[__name__], "RECIPE_MD", trimmed)
    assert "max_per_creator" not in documented_keys()["dataset"]
    assert "max_per_creator" in accepted_keys()["dataset"]


# -- every relative link and anchor in README.md and docs/ resolves ------------------------
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _outside_fences(doc: Path) -> list[tuple[int, str]]:
    lines, inside = [], False
    for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            inside = not inside
        elif not inside:
            lines.append((number, line))
    return lines


def anchors(doc: Path) -> set[str]:
    """The ids GitHub gives the headings: lower case, punctuation but '-' and '_' dropped,
    spaces as '-', a repeated one suffixed -1, -2..."""
    found: set[str] = set()
    for _, line in _outside_fences(doc):
        if (m := re.match(r"^#{1,6}\s+(.+?)\s*#*\s*$", line)):
            slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
            unique, n = slug, 0
            while unique in found:
                n += 1
                unique = f"{slug}-{n}"
            found.add(unique)
    return found


def broken_links(doc: Path) -> list[str]:
    broken = []
    for number, line in _outside_fences(doc):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            path, _, fragment = target.partition("#")
            linked = (doc.parent / path) if path else doc
            where = f"{doc.relative_to(REPO)}:{number}: {target}"
            if not linked.exists():
                broken.append(f"{where} (no such file)")
            elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
                broken.append(f"{where} (no such heading)")
    return broken


def test_every_relative_link_and_anchor_in_the_docs_resolves() -> None:
    assert [problem for doc in DOCS for problem in broken_links(doc)] == []


def test_the_link_checker_sees_a_missing_file_and_a_missing_heading(tmp_path: Path,
                                                                    monkeypatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    (tmp_path / "b.md").write_text('# Title\n\n### kind = "table"\n```\n# not a heading\n```\n')
    doc = tmp_path / "a.md"
    doc.write_text("[ok](b.md#kind--table) [gone](c.md) [no](b.md#not-a-heading) "
                   "[web](https://example.org/x) [self](#top)\n# Top\n")
    assert broken_links(doc) == ["a.md:1: c.md (no such file)",
                                 "a.md:1: b.md#not-a-heading (no such heading)"]


# -- docs/reasons.md names every rejection reason, and no other ------------------------------
def test_reasons_md_lists_exactly_the_reasons_a_candidate_can_be_refused_for() -> None:
    from builder.records import TRANSIENT_REASONS, Reason

    rows = re.findall(r"^\| `([a-z_]+)`( \*)? \|", (REPO / "docs" / "reasons.md").read_text(
        encoding="utf-8"), flags=re.M)
    assert {name for name, _ in rows} == {r.value for r in Reason}
    assert {name for name, star in rows if star} == {r.value for r in TRANSIENT_REASONS}


# -- docs/output.md names every key of a sample's provenance, and no other -----------------
def documented_provenance() -> dict[str, object]:
    """output.md's `KEY.json` line, `a, b{c,d[{e,f}]}`, as {"a": None, "b": {"c": None,
    "d": {"e": None, "f": None}}}."""
    text = (REPO / "docs" / "output.md").read_text(encoding="utf-8")
    spec = "".join(text.split("`KEY.json` — provenance: `", 1)[1].split("`", 1)[0].split())

    def fields(at: int) -> tuple[dict[str, object], int]:
        found: dict[str, object] = {}
        while at < len(spec) and spec[at] not in "}]":
            name = re.match(r"[a-z_0-9]+", spec[at:]).group(0)
            at += len(name)
            found[name] = None
            if at < len(spec) and spec[at] in "{[":
                closing = "]" if spec[at:at + 2] == "[{" else "}"
                at += 2 if closing == "]" else 1
                found[name], at = fields(at)
                at += 2 if closing == "]" else 1
            at += spec[at:at + 1] == ","
        return found, at

    return fields(0)[0]


def _shape(value: object) -> object:
    """A provenance value's keys, as documented_provenance() writes them."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        value = value[0]
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    return None


def test_output_md_names_exactly_the_keys_of_a_samples_provenance(offline_example: Path) -> None:
    import json
    import tarfile

    with tarfile.open(next((offline_example / "shards").glob("*.tar"))) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".json"))
        provenance = json.load(tar.extractfile(member))
    documented = documented_provenance()
    shape = _shape(provenance)
    assert isinstance(shape, dict)
    for name in ("evidence", "optout"):  # lists of records whose keys the page names elsewhere
        shape[name] = {k: None for k in shape[name]}
    assert documented == shape
