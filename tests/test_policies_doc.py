"""docs/policies.md says exactly what each shipped policy admits (#16 item 20): regenerated
from licenses/*.toml and licenses/policies/*.toml, and every example claim in it is checked
against the real gate."""

from __future__ import annotations

import re

import pytest

from builder.licensing import decide, known_policies, load_policy
from builder.licensing.policy_doc import policies_markdown
from builder.records import Evidence, LicenseDecision, Reason
from tests.conftest import REPO, run_cli

DOC = REPO / "docs" / "policies.md"
JURISDICTION = re.compile(r'with `\[policy\] jurisdiction = "([A-Z]+)"`')


def test_docs_policies_md_is_what_the_policy_files_say_now() -> None:
    assert DOC.read_text(encoding="utf-8") == policies_markdown(), (
        "docs/policies.md is out of date: run `cleanset licenses policies > docs/policies.md`")


def test_cleanset_licenses_policies_prints_the_page() -> None:
    proc = run_cli("licenses", "policies", check=True)
    assert proc.stdout == DOC.read_text(encoding="utf-8")


def rows_of(policy: str) -> list[list[str]]:
    """The table rows of one policy's section: [family, entry, kind, admitted, examples]."""
    section = DOC.read_text(encoding="utf-8").split(f"## `{policy}`\n", 1)[1].split("\n## ")[0]
    lines = [line for line in section.splitlines() if line.startswith("| `")]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]


def example_claims(cell: str) -> list[str]:
    """The literal claims of a row (a /regex/ stands for a family of claims, not one)."""
    claims = re.findall(r"`([^`]+)`", cell)
    return [c for c in claims if not (c.startswith("/") and c.endswith("/"))]


@pytest.mark.parametrize("name", known_policies())
def test_every_example_claim_is_decided_as_its_row_says(name: str) -> None:
    rows = rows_of(name)
    assert rows, f"no table for {name}"
    for family, _entry, _kind, admitted, examples in rows:
        claims = example_claims(examples)
        assert claims, (name, family)
        scoped = JURISDICTION.fullmatch(admitted)
        for claim in claims:
            evidence = (Evidence("license", claim),)
            if scoped is None:
                assert admitted == "yes"
                outcome = decide(evidence, load_policy(name))
                assert isinstance(outcome, LicenseDecision), (name, claim, outcome)
                continue
            without = decide(evidence, load_policy(name))
            assert without.reason == Reason.LICENSE_NOT_ALLOWED, (name, claim)
            declared = decide(evidence, load_policy(name, jurisdiction=scoped.group(1)))
            assert isinstance(declared, LicenseDecision), (name, claim, declared)


def test_a_bare_public_domain_statement_is_listed_under_the_public_domain_policy() -> None:
    public_domain = {row[1].split("`")[1]: row for row in rows_of("public-domain")}
    assert "`Public domain`" in public_domain["LicenseRef-Public-Domain"][4]
    assert public_domain["CC0-1.0"][3] == "yes"
    assert "CC-BY" in DOC.read_text(encoding="utf-8").split("## `public-domain`")[1].split(
        "Refused (no entry admitted):")[1]


def test_the_readme_links_the_page_from_its_sentence_on_shipped_policies() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    sentence = readme.split("Shipped policies (`licenses/policies/`)", 1)[1].split("\n\n")[0]
    assert "[docs/policies.md](docs/policies.md)" in sentence
    assert '"Public domain"' in sentence
