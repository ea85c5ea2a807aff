"""The licence gate: evidence -> SPDX id -> policy decision, and the data it reads."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from builder.cli import main
from builder.errors import UserError
from builder.licensing import (
    Policy,
    credit_line,
    decide,
    is_admitted,
    license_info,
    licenses_dir,
    load_catalogue,
    load_policy,
    normalise,
)
from builder.records import Evidence, LicenseDecision, Reason, Rejection
from tests.conftest import run_cli

COMMERCIAL = load_policy("commercial")


def ev(*pairs: tuple[str, str]) -> tuple[Evidence, ...]:
    return tuple(Evidence(f, v) for f, v in pairs)


def rejected(outcome: object, reason: Reason) -> Rejection:
    assert isinstance(outcome, Rejection), outcome
    assert outcome.reason == reason, outcome
    return outcome


def admitted(outcome: object) -> LicenseDecision:
    assert isinstance(outcome, LicenseDecision), outcome
    return outcome


# --- normalisation -----------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "http://creativecommons.org/licenses/by/4.0/",
    "https://creativecommons.org/licenses/by/4.0",
    "//creativecommons.org/licenses/by/4.0/",
    "https://www.creativecommons.org/licenses/by/4.0/deed.de",
    "HTTPS://CreativeCommons.org/Licenses/BY/4.0/legalcode",
    "https://creativecommons.org/licenses/by/4.0/legalcode.fr",
    "https://creativecommons.org/licenses/by/4.0/legalcode.txt",
    "https://creativecommons.org/licenses/by/4.0/deed.pt_BR",
    "https://creativecommons.org/licenses/by/4.0/?ref=openverse",
    "<https://creativecommons.org/licenses/by/4.0/>",
    "  CC BY 4.0  ",
    "cc-by-4.0",
    "CC-BY-4.0",
    "<a href=\"https://creativecommons.org/licenses/by/4.0\">CC BY 4.0</a>",
    "Creative Commons Attribution 4.0 International",
    "Attribution 4.0 International (CC BY 4.0)",
    "CC&nbsp;BY&nbsp;4.0",
])
def test_every_common_spelling_of_cc_by_4_normalises_to_one_id(text: str) -> None:
    assert normalise(text) == "CC-BY-4.0"


def test_jurisdiction_ports_get_the_spdx_id_when_spdx_has_one_else_a_licenseref() -> None:
    assert normalise("https://creativecommons.org/licenses/by-sa/3.0/de/") == "CC-BY-SA-3.0-DE"
    assert normalise("http://creativecommons.org/licenses/by-sa/3.0/es/deed.es") == \
        "LicenseRef-CC-BY-SA-3.0-ES"
    assert normalise("CC BY 3.0 IGO") == "CC-BY-3.0-IGO"
    assert normalise("Attribution-ShareAlike 2.0 England and Wales") == "CC-BY-SA-2.0-UK"


def test_a_port_that_never_existed_is_not_recognised() -> None:
    assert normalise("https://creativecommons.org/licenses/by/3.0/zz/") is None
    assert normalise("https://creativecommons.org/licenses/by/5.0/") is None


def test_an_unversioned_cc_name_is_not_recognised_because_the_version_changes_the_terms() -> None:
    assert normalise("CC BY-SA") is None
    assert normalise("Creative Commons Attribution-ShareAlike") is None


def test_wikimedia_multi_version_short_name_becomes_a_dual_licence() -> None:
    assert normalise("CC-BY-SA-3.0,2.5,2.0,1.0") == \
        "CC-BY-SA-3.0 OR CC-BY-SA-2.5 OR CC-BY-SA-2.0 OR CC-BY-SA-1.0"


def test_spdx_expressions_are_rendered_canonically_by_license_expression() -> None:
    assert normalise("cc-by-4.0 or cc0-1.0") == "CC-BY-4.0 OR CC0-1.0"
    assert normalise("(CC BY 4.0 and MIT) or CC0") == "(CC-BY-4.0 AND MIT) OR CC0-1.0"
    assert normalise("GPL-2.0-or-later WITH Classpath-exception-2.0") == \
        "GPL-2.0-or-later WITH Classpath-exception-2.0"
    assert normalise("CC-BY-4.0 OR Nonsense-1.0") is None


@pytest.mark.parametrize("text", ["CC BY 4.0 WITH NC", "CC0-1.0 WITH NoAI",
                                  "CC0 WITH All-rights-reserved", "Public domain WITH NC",
                                  "CC-BY-4.0 WITH LicenseRef-no-training"])
def test_a_with_naming_no_spdx_exception_is_unrecognised_never_admitted(text: str) -> None:
    # An exception only SPDX's list defines adds permissions; any other word after WITH is
    # terms the catalogue cannot read ("NC", "NoAI"), which may restrict the work.
    assert normalise(text) is None
    r = rejected(decide(ev(("license", text)), COMMERCIAL), Reason.LICENSE_UNRECOGNIZED)
    assert repr(text) in r.detail
    assert normalise("gpl-2.0-or-later with classpath-exception-2.0") == \
        "GPL-2.0-or-later WITH Classpath-exception-2.0"
    # ... and a dataset an older cleanset admitted it into fails verify's policy check.
    assert not is_admitted("CC-BY-4.0 WITH NC", COMMERCIAL)
    assert is_admitted("CC-BY-4.0", COMMERCIAL)


@pytest.mark.parametrize("text", ["CC BY 4.0 <NC>", "CC BY 4.0 <non-commercial>",
                                  "<NoDerivatives> CC BY 4.0", "CC0 <not for AI training>",
                                  "CC BY 4.0 &lt;NC&gt;", "CC BY 4.0 <!-- NC -->"])
def test_words_in_angle_brackets_are_not_dropped_as_if_they_were_html(text: str) -> None:
    # Anything between < and > was removed as a tag: "CC BY 4.0 <NC>" was admitted as CC BY.
    assert normalise(text) is None
    rejected(decide(ev(("license", text)), COMMERCIAL), Reason.LICENSE_UNRECOGNIZED)


@pytest.mark.parametrize("text, expected", [
    ("PD-old-70", "LicenseRef-Public-Domain"), ("PD-old-100-expired", "LicenseRef-Public-Domain"),
    ("PD-US-no notice", "LicenseRef-PD-US"), ("PD-USGov-NASA", "LicenseRef-US-Government-Work"),
    # a phrase set off after the template name is not part of it, and may restrict the work
    ("PD-old-100 - except in the EU", None), ("PD-US - not for AI training", None),
    ("PD-Art - NC", None),
])
def test_a_commons_template_name_is_read_but_a_phrase_after_it_is_not(
        text: str, expected: str | None) -> None:
    assert normalise(text) == expected


def test_html_markup_around_a_licence_is_still_read_through() -> None:
    for text in ['<a href="https://e.org/">CC BY 4.0</a>', "<b>CC-BY-4.0</b>",
                 '<SPAN class="x">CC BY 4.0</SPAN><br/>', "<p>CC BY<br>4.0</p>"]:
        assert normalise(text) == "CC-BY-4.0", text


def test_normalise_returns_none_for_text_that_names_no_licence() -> None:
    for text in ["", "   ", "see website", "Copyright 2019 Jane Doe", "http://example.com/terms",
                 "(", ") OR (", "AND", "<b></b>"]:
        assert normalise(text) is None, text


# --- decisions ---------------------------------------------------------------------------


def test_no_claim_at_all_is_license_missing() -> None:
    rejected(decide((), COMMERCIAL), Reason.LICENSE_MISSING)
    r = rejected(decide(ev(("license", ""), ("wikimedia:AttributionRequired", "true")),
                        COMMERCIAL), Reason.LICENSE_MISSING)
    assert "wikimedia:AttributionRequired" in r.detail
    # An empty licence column is not "informational": the detail said it was.
    assert r.detail.endswith("(informational fields only: wikimedia:AttributionRequired; "
                             "empty: license)"), r.detail


def test_csv_null_markers_are_not_claims() -> None:
    for value in ["nan", "None", "null", "N/A"]:
        rejected(decide(ev(("license", value)), COMMERCIAL), Reason.LICENSE_MISSING)


def test_an_unrecognised_claim_is_rejected_quoting_field_and_value() -> None:
    r = rejected(decide(ev(("license", "Some Custom Licence v2")), COMMERCIAL),
                 Reason.LICENSE_UNRECOGNIZED)
    assert "license='Some Custom Licence v2'" in r.detail


def test_one_unrecognised_claim_rejects_even_when_another_is_recognised() -> None:
    r = rejected(decide(ev(("license", "CC BY 4.0"), ("xmp:xmpRights:WebStatement",
                                                      "https://photographer.example/terms")),
                        COMMERCIAL), Reason.LICENSE_UNRECOGNIZED)
    assert "xmp:xmpRights:WebStatement" in r.detail and "license='CC BY 4.0'" in r.detail


def test_nc_licence_is_rejected_before_download_naming_noncommercial() -> None:
    r = rejected(decide(ev(("license", "https://creativecommons.org/licenses/by-nc/4.0/")),
                        COMMERCIAL), Reason.LICENSE_NOT_ALLOWED)
    assert "CC-BY-NC-4.0" in r.detail and "NonCommercial" in r.detail


def test_nd_licence_is_refused_even_by_open_research() -> None:
    r = rejected(decide(ev(("license", "CC BY-NC-ND 4.0")), load_policy("open-research")),
                 Reason.LICENSE_NOT_ALLOWED)
    assert "NoDerivatives" in r.detail


def test_claims_that_disagree_are_a_conflict_naming_both() -> None:
    r = rejected(decide(ev(("license", "CC BY 4.0"),
                           ("xmp:cc:license", "https://creativecommons.org/licenses/by-nc/4.0/")),
                        COMMERCIAL), Reason.LICENSE_CONFLICT)
    assert "CC-BY-4.0" in r.detail and "CC-BY-NC-4.0" in r.detail
    assert "xmp:cc:license" in r.detail and "license=" in r.detail


def test_claims_that_agree_after_normalisation_admit_with_all_evidence_kept() -> None:
    evidence = ev(("wikimedia:LicenseShortName", "CC BY-SA 3.0"),
                  ("wikimedia:UsageTerms", "Creative Commons Attribution-Share Alike 3.0"),
                  ("wikimedia:LicenseUrl", "http://creativecommons.org/licenses/by-sa/3.0"),
                  ("wikimedia:AttributionRequired", "true"),
                  ("wikimedia:Copyrighted", "True"))
    d = admitted(decide(evidence, COMMERCIAL))
    assert d.spdx == "CC-BY-SA-3.0"
    assert d.url == "https://creativecommons.org/licenses/by-sa/3.0/"
    assert d.name == "Creative Commons Attribution-ShareAlike 3.0 Unported"
    assert d.attribution_required and d.share_alike
    assert d.evidence == evidence
    assert d.policy == "commercial" and d.chosen_from is None


def test_dual_licence_is_admitted_under_the_most_permissive_admitted_option() -> None:
    d = admitted(decide(ev(("license", "CC-BY-SA-4.0 OR CC-BY-4.0 OR CC-BY-NC-4.0")),
                        COMMERCIAL))
    assert d.spdx == "CC-BY-4.0"
    assert d.chosen_from == "CC-BY-SA-4.0 OR CC-BY-4.0 OR CC-BY-NC-4.0"


def test_dual_licence_skips_options_the_policy_refuses() -> None:
    d = admitted(decide(ev(("license", "CC-BY-NC-4.0 OR CC-BY-SA-4.0")),
                        load_policy("commercial")))
    assert d.spdx == "CC-BY-SA-4.0" and d.share_alike


def test_dual_licence_with_no_admitted_option_lists_each_reason() -> None:
    r = rejected(decide(ev(("license", "CC-BY-NC-4.0 OR CC-BY-ND-4.0")), COMMERCIAL),
                 Reason.LICENSE_NOT_ALLOWED)
    assert "NonCommercial" in r.detail and "NoDerivatives" in r.detail


def test_conjunctive_licence_needs_every_part_admitted() -> None:
    d = admitted(decide(ev(("license", "CC-BY-4.0 AND CC-BY-SA-4.0")), COMMERCIAL))
    assert d.spdx == "CC-BY-4.0 AND CC-BY-SA-4.0" and d.share_alike and d.url is None
    rejected(decide(ev(("license", "CC-BY-4.0 AND CC-BY-NC-4.0")), COMMERCIAL),
             Reason.LICENSE_NOT_ALLOWED)


def test_openverse_license_and_version_are_read_as_one_claim() -> None:
    d = admitted(decide(ev(("openverse:license", "by-sa"), ("openverse:license_version", "2.0"),
                           ("openverse:license_url",
                            "https://creativecommons.org/licenses/by-sa/2.0/")), COMMERCIAL))
    assert d.spdx == "CC-BY-SA-2.0"
    assert normalise("cc by-sa 2.0") == "CC-BY-SA-2.0"
    single = admitted(decide(ev(("openverse:license", "by 4.0")), COMMERCIAL))
    assert single.spdx == "CC-BY-4.0"
    pdm = admitted(decide(ev(("openverse:license", "pdm"), ("openverse:license_version", "1.0")),
                          load_policy("public-domain")))
    assert pdm.spdx == "CC-PDM-1.0"


@pytest.mark.parametrize("pairs", [
    (("openverse:license", "cc0 but not for AI"),),
    (("openverse:license", "pdm nc"),),
    (("openverse:license", "cc0"), ("openverse:license_version", "nc")),
])
def test_an_openverse_code_followed_by_more_than_a_version_is_unrecognised(
        pairs: tuple[tuple[str, str], ...]) -> None:
    # Only the first word was read: "cc0 but not for AI" was admitted as CC0.
    r = rejected(decide(ev(*pairs), COMMERCIAL), Reason.LICENSE_UNRECOGNIZED)
    assert "openverse:license=" in r.detail
    assert admitted(decide(ev(("openverse:license", "cc0 1.0")), COMMERCIAL)).spdx == "CC0-1.0"


def test_museum_flags_decide_by_the_museums_terms() -> None:
    pd = load_policy("public-domain")
    assert admitted(decide(ev(("met:isPublicDomain", "true")), pd)).spdx == "CC0-1.0"
    assert admitted(decide(ev(("aic:is_public_domain", "True")), pd)).spdx == "CC0-1.0"
    assert admitted(decide(ev(("cleveland:share_license_status", "CC0")), pd)).spdx == "CC0-1.0"
    assert admitted(decide(ev(("smithsonian:usage.access", "CC0")), pd)).spdx == "CC0-1.0"
    rejected(decide(ev(("met:isPublicDomain", "false")), pd), Reason.LICENSE_NOT_ALLOWED)
    rejected(decide(ev(("smithsonian:usage.access", "Usage conditions apply")), pd),
             Reason.LICENSE_NOT_ALLOWED)
    rejected(decide(ev(("met:isPublicDomain", "maybe")), pd), Reason.LICENSE_UNRECOGNIZED)


def test_flickr_ids_7_and_8_are_assertions_not_licences() -> None:
    nkc = rejected(decide(ev(("flickr:license", "7")), COMMERCIAL), Reason.LICENSE_NOT_ALLOWED)
    assert "not a licence" in nkc.detail
    usgov = rejected(decide(ev(("flickr:license", "8")), COMMERCIAL), Reason.LICENSE_NOT_ALLOWED)
    assert 'jurisdiction = "US"' in usgov.detail
    rejected(decide(ev(("flickr:license", "17")), COMMERCIAL), Reason.LICENSE_UNRECOGNIZED)


def test_us_only_statements_pass_only_when_the_recipe_declares_us() -> None:
    claim = ev(("europeana:rights", "http://rightsstatements.org/vocab/NoC-US/1.0/"))
    rejected(decide(claim, load_policy("public-domain")), Reason.LICENSE_NOT_ALLOWED)
    rejected(decide(claim, load_policy("public-domain", jurisdiction="DE")),
             Reason.LICENSE_NOT_ALLOWED)
    d = admitted(decide(claim, load_policy("public-domain", jurisdiction="us")))
    assert d.spdx == "LicenseRef-RS-NoC-US-1.0"


def test_a_policy_without_scoped_statements_refuses_them_whatever_the_jurisdiction(
        tmp_path: Path) -> None:
    path = tmp_path / "strict.toml"
    path.write_text('name = "strict"\nfamilies = ["public-domain"]\nscoped = false\n')
    policy = load_policy("strict.toml", jurisdiction="US", base_dir=tmp_path)
    r = rejected(decide(ev(("flickr:license", "8")), policy), Reason.LICENSE_NOT_ALLOWED)
    assert "jurisdiction-scoped" in r.detail
    assert admitted(decide(ev(("license", "CC0")), policy)).policy == "strict"


# --- policies ----------------------------------------------------------------------------


def test_shipped_policies_admit_what_issue_3_lists() -> None:
    cases = {
        "public-domain": {"CC0-1.0", "CC-PDM-1.0", "CC-PDDC"},
        "commercial": {"CC0-1.0", "CC-PDM-1.0", "CC-BY-4.0", "CC-BY-SA-4.0", "CC-BY-SA-3.0-DE"},
        "commercial-no-sharealike": {"CC0-1.0", "CC-BY-2.0", "LicenseRef-CC-BY-3.0-ES"},
        "open-research": {"CC-BY-NC-4.0", "CC-BY-NC-SA-2.0-FR", "CC-BY-SA-4.0", "CC0-1.0"},
    }
    refused = {
        "public-domain": {"CC-BY-4.0", "LicenseRef-All-Rights-Reserved"},
        "commercial": {"CC-BY-NC-4.0", "CC-BY-ND-4.0", "LicenseRef-RS-InC-1.0"},
        "commercial-no-sharealike": {"CC-BY-SA-4.0", "CC-BY-NC-4.0"},
        "open-research": {"CC-BY-ND-4.0", "CC-BY-NC-ND-4.0", "LicenseRef-RS-NoC-CR-1.0"},
    }
    for name, ids in cases.items():
        policy = load_policy(name)
        for lid in ids:
            assert is_admitted(lid, policy), (name, lid)
        for lid in refused[name]:
            assert not is_admitted(lid, policy), (name, lid)


def test_is_admitted_handles_expressions_and_unknown_ids() -> None:
    assert is_admitted("CC-BY-NC-4.0 OR CC-BY-4.0", COMMERCIAL)
    assert not is_admitted("CC-BY-4.0 AND CC-BY-NC-4.0", COMMERCIAL)
    assert not is_admitted("LicenseRef-Not-In-Catalogue", COMMERCIAL)
    assert not is_admitted("((", COMMERCIAL)


def test_policy_round_trips_through_its_recorded_json() -> None:
    policy = load_policy("commercial", jurisdiction="US")
    recorded = json.loads(json.dumps(policy.to_json()))
    assert Policy.from_json(recorded) == policy
    assert recorded["name"] == "commercial" and recorded["jurisdiction"] == "US"
    # machine-independent, so identical inputs give identical shards anywhere
    assert recorded["source"] == "licenses/policies/commercial.toml"
    assert len(recorded["sha256"]) == 64


def test_unknown_policy_name_is_a_user_error_listing_the_known_ones() -> None:
    with pytest.raises(UserError) as err:
        load_policy("comercial")
    message = str(err.value)
    assert "'comercial'" in message
    for name in ("commercial", "commercial-no-sharealike", "open-research", "public-domain"):
        assert name in message


def test_policy_file_path_is_resolved_relative_to_the_recipe(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "mine.toml").write_text(
        'name = "mine"\nfamilies = ["public-domain", "CC-BY"]\nexclude = ["CC-BY-1.0"]\n')
    policy = load_policy("policies/mine.toml", base_dir=tmp_path)
    assert policy.name == "mine"
    assert is_admitted("CC-BY-4.0", policy) and not is_admitted("CC-BY-1.0", policy)
    r = rejected(decide(ev(("license", "CC BY 1.0")), policy), Reason.LICENSE_NOT_ALLOWED)
    assert "excluded" in r.detail


@pytest.mark.parametrize(("text", "fragment"), [
    ('name = "x"\nfamilies = ["CC-BYY"]\n', "family 'CC-BYY'"),
    ('name = "x"\nids = ["CC-BY-9.0"]\n', "id 'CC-BY-9.0'"),
    ('name = "x"\nfamilie = []\n', "unknown key"),
    ('name = "x"\nfamilies = "CC-BY"\n', "`families` must be a list"),
    ('name = "x\n', "cannot read"),
])
def test_bad_policy_files_name_the_file_and_the_problem(tmp_path: Path, text: str,
                                                        fragment: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        load_policy(str(path))
    assert str(path) in str(err.value) and fragment in str(err.value)


# --- catalogue as data -------------------------------------------------------------------


def test_catalogue_entries_carry_terms_and_scope() -> None:
    info = license_info("cc-by-nc-sa-4.0")
    assert info is not None and info.id == "CC-BY-NC-SA-4.0"
    assert (info.commercial, info.derivatives, info.attribution_required, info.share_alike) == \
        (False, True, True, True)
    assert info.url == "https://creativecommons.org/licenses/by-nc-sa/4.0/"
    us = license_info("LicenseRef-RS-NoC-US-1.0")
    assert us is not None and us.jurisdiction == "US"
    assert license_info("CC-BY-NC-ND-1.0").url == \
        "https://creativecommons.org/licenses/by-nd-nc/1.0/"
    assert license_info("nope") is None


def test_catalogue_covers_every_cc_family_version_and_rightsstatement() -> None:
    cat = load_catalogue()
    for fam in ("BY", "BY-SA", "BY-ND", "BY-NC", "BY-NC-SA", "BY-NC-ND"):
        for version in ("1.0", "2.0", "2.5", "3.0", "4.0"):
            assert f"CC-{fam}-{version}" in cat.entries
    rs = [i for i in cat.entries if i.startswith("LicenseRef-RS-")]
    assert len(rs) == 12
    assert {"CC0-1.0", "CC-PDM-1.0", "CC-PDDC", "CC-SA-1.0"} <= set(cat.entries)


def test_adding_a_licence_needs_only_a_toml_entry(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for src in licenses_dir().glob("*.toml"):
        (tmp_path / src.name).write_text(src.read_text())
    (tmp_path / "policies").mkdir()
    (tmp_path / "local.toml").write_text(
        '[[license]]\nid = "LicenseRef-Acme-Photo-1.0"\nname = "Acme Photo Licence 1.0"\n'
        'url = "https://acme.example/photo-licence/1.0/"\naliases = ["acme photo licence"]\n'
        'family = "acme"\ncommercial = true\nderivatives = true\n'
        'attribution_required = true\nshare_alike = false\n')
    (tmp_path / "policies" / "acme.toml").write_text('name = "acme"\nfamilies = ["acme"]\n')
    monkeypatch.setenv("CLEANSET_LICENSES", str(tmp_path))
    policy = load_policy("acme")
    d = admitted(decide(ev(("license", "http://acme.example/photo-licence/1.0")), policy))
    assert d.spdx == "LicenseRef-Acme-Photo-1.0"
    assert normalise("Acme Photo Licence") == "LicenseRef-Acme-Photo-1.0"


@pytest.mark.parametrize(("text", "fragment"), [
    ('[[license]]\nid = "X-1"\nname = "x"\nfamily = "f"\ncommercial = "yes"\n'
     'derivatives = true\nattribution_required = true\nshare_alike = false\n', "`commercial`"),
    ('[[license]]\nid = "CC0-1.0"\nname = "dup"\nfamily = "f"\ncommercial = true\n'
     'derivatives = true\nattribution_required = true\nshare_alike = false\n', "already defined"),
    ('[[pattern]]\nregex = "("\nid = "CC0-1.0"\n', "regex"),
    ('[fields.license]\nvalues = { "x" = "LicenseRef-Nope" }\n', "LicenseRef-Nope"),
    ('[oops]\n', "unknown top-level key"),
])
def test_bad_catalogue_data_is_a_user_error_naming_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, fragment: str) -> None:
    for src in licenses_dir().glob("*.toml"):
        (tmp_path / src.name).write_text(src.read_text())
    (tmp_path / "zz-bad.toml").write_text(text)
    monkeypatch.setenv("CLEANSET_LICENSES", str(tmp_path))
    with pytest.raises(UserError) as err:
        load_catalogue()
    assert fragment in str(err.value)
    assert "zz-bad.toml" in str(err.value) or "licenses [fields" in str(err.value)


# --- attribution -------------------------------------------------------------------------


def test_credit_line_follows_title_author_source_licence() -> None:
    d = admitted(decide(ev(("license", "CC BY-SA 4.0")), COMMERCIAL))
    line = credit_line("Sunset over Lyon", "Jane Doe", "https://example.org/jane",
                       "https://example.org/photo/1", d)
    assert line == ('"Sunset over Lyon" (https://example.org/photo/1) by Jane Doe '
                    "(https://example.org/jane) is licensed under CC BY-SA 4.0 "
                    "(https://creativecommons.org/licenses/by-sa/4.0/).")
    md = credit_line("Sunset over Lyon", "Jane Doe", None, "https://example.org/photo/1", d,
                     markup="markdown")
    assert md == ('["Sunset over Lyon"](https://example.org/photo/1) by Jane Doe is licensed '
                  "under [CC BY-SA 4.0](https://creativecommons.org/licenses/by-sa/4.0/).")
    html_line = credit_line("A <b>&</b> B", "<a href='/u/x'>X</a>", None, None, d, markup="html")
    assert html_line.startswith('"A &amp; B" by X is licensed under <a href="https://')


def test_credit_line_keeps_a_name_as_written_and_only_drops_markup() -> None:
    # The licence-claim cleaner was used: "<i>Untitled</i>" became "i>Untitled</i" (read as
    # an RDF <url>), "Acme Co." lost its full stop, and an escaped "&lt;b&gt;" became a tag.
    d = admitted(decide(ev(("license", "CC BY 4.0")), COMMERCIAL))
    line = credit_line("<i>Untitled</i>", "Acme Co.", None, None, d)
    assert line.startswith('"Untitled" by Acme Co. is licensed under CC BY 4.0')
    line = credit_line("\u201cDawn\u201d", "<b>Bob</b> &lt;bob@example.org&gt;", None, None, d)
    assert line.startswith('"Dawn" by Bob <bob@example.org> is licensed')


def test_credit_line_links_only_http_urls_and_shows_markup_as_text() -> None:
    d = admitted(decide(ev(("license", "CC BY 4.0")), COMMERCIAL))
    md = credit_line("A [b](c) *x*", "Eve", "javascript:alert(1)", "https://example.org/a b)",
                     d, markup="markdown")
    assert md == ('["A \\[b\\](c) \\*x\\*"](<https://example.org/a%20b)>) by Eve '
                  "(`javascript:alert(1)`) is licensed under "
                  "[CC BY 4.0](https://creativecommons.org/licenses/by/4.0/).")
    html_line = credit_line("T", "Eve", "data:text/html,<script>", "vbscript:x", d,
                            markup="html")
    assert html_line == ('"T" (<code>vbscript:x</code>) by Eve (<code>data:text/html,&lt;script'
                         '&gt;</code>) is licensed under <a href="https://creativecommons.org/'
                         'licenses/by/4.0/">CC BY 4.0</a>.')


def test_credit_line_for_public_domain_marks_instead_of_licensing() -> None:
    pd = load_policy("public-domain")
    cc0 = admitted(decide(ev(("license", "CC0")), pd))
    assert credit_line(None, None, None, None, cc0) == \
        "This work is marked with CC0 1.0 (https://creativecommons.org/publicdomain/zero/1.0/)."
    plain = admitted(decide(ev(("wikimedia:LicenseShortName", "Public domain")), pd))
    assert credit_line("Mona Lisa", "Leonardo da Vinci", None, None, plain) == \
        '"Mona Lisa" by Leonardo da Vinci is in the public domain.'


# --- CLI ---------------------------------------------------------------------------------


def test_cli_check_explains_normalisation_and_each_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["licenses", "check", "CC BY-NC-SA 2.0 fr"]) == 0
    out = capsys.readouterr().out
    assert "CC-BY-NC-SA-2.0-FR" in out
    assert "policy open-research" in out and "admitted" in out
    assert "license_not_allowed" in out and "NonCommercial" in out


def test_cli_check_json_and_unrecognised_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["licenses", "check", "8", "--field", "flickr:license", "--jurisdiction", "US",
                 "--policy", "commercial", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["normalised"] == "LicenseRef-US-Government-Work"
    assert result["policies"] == [{"policy": "commercial", "admitted": True, "reason": None,
                                   "detail": "admitted as LicenseRef-US-Government-Work"}]
    assert main(["licenses", "check", "all yours, mate"]) == 1
    assert "not recognised" in capsys.readouterr().out


def test_cli_check_with_a_policy_that_does_not_load_is_exit_2_naming_it() -> None:
    """It was a verdict, "bad_policy", exit 0: as if that policy refused the licence."""
    proc = run_cli("licenses", "check", "CC BY 4.0", "--policy", "comercial", "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "licenses check --policy 'comercial': no such policy. Did you mean " \
        "'commercial'?" in proc.stderr
    assert "relative to the current directory" in proc.stderr


def test_cli_list_of_a_family_the_catalogue_lacks_is_exit_2_naming_the_families() -> None:
    """It listed 0 entries, exit 0: as if the catalogue held no such licence."""
    proc = run_cli("licenses", "list", "--family", "CC-BYY", "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "--family 'CC-BYY': no such family in the catalogue. Did you mean 'CC-BY'?" \
        in proc.stderr and "public-domain" in proc.stderr
    lower = run_cli("licenses", "list", "--family", "cc-by", "--json", check=True)
    assert {json.loads(line)["family"] for line in lower.stdout.splitlines()} == {"CC-BY"}


def test_cli_lists_catalogue_and_policies(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["licenses"]) == 0
    out = capsys.readouterr().out
    assert "CC-BY-SA-3.0-DE" in out and "LicenseRef-RS-NoC-US-1.0" in out
    for name in ("commercial", "commercial-no-sharealike", "open-research", "public-domain"):
        assert f"  {name} " in out
    assert main(["licenses", "list", "--family", "public-domain", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows and all(r["family"] == "public-domain" for r in rows)


# --- refusals the source itself states ---------------------------------------------------


@pytest.mark.parametrize("short_name", ["استعمال عادل", "Fair use", "Non-free media",
                                        "CC BY-SA 4.0"])
def test_nonfree_true_is_a_refusal_whatever_the_licence_name_says(short_name: str) -> None:
    evidence = ev(("wikimedia:LicenseShortName", short_name), ("wikimedia:NonFree", "true"))
    for name in ("public-domain", "commercial", "open-research"):
        r = rejected(decide(evidence, load_policy(name)), Reason.LICENSE_NOT_ALLOWED)
        assert r.detail == "NonFree=true (fair use / non-free media)"


def test_copyrighted_true_with_no_licence_field_is_refused_and_beside_one_is_not() -> None:
    alone = rejected(decide(ev(("wikimedia:Copyrighted", "True"),
                               ("wikimedia:AttributionRequired", "true")), COMMERCIAL),
                     Reason.LICENSE_NOT_ALLOWED)
    assert alone.detail.startswith("Copyrighted=True and no licence field")
    licensed = ev(("wikimedia:LicenseShortName", "CC BY 4.0"), ("wikimedia:Copyrighted", "True"))
    assert admitted(decide(licensed, COMMERCIAL)).spdx == "CC-BY-4.0"


@pytest.mark.parametrize(("field", "notice_field"), [
    ("aic:is_public_domain", "aic:copyright_notice"),
    ("met:isPublicDomain", "met:rightsAndReproduction"),
])
def test_a_not_public_domain_flag_is_refused_saying_only_what_the_source_said(
        field: str, notice_field: str) -> None:
    name = field.split(":")[1]
    bare = rejected(decide(ev((field, "false")), COMMERCIAL), Reason.LICENSE_NOT_ALLOWED)
    assert bare.detail == (f"the source marks it not public domain ({name}=false) and states "
                           "no open licence")
    assert "reserved" not in bare.detail and "NonCommercial" not in bare.detail
    quoted = rejected(decide(ev((field, "false"), (notice_field, "© 1962 The Estate")),
                             COMMERCIAL), Reason.LICENSE_NOT_ALLOWED)
    assert quoted.detail == f"{bare.detail}; {notice_field.split(':')[1]}='© 1962 The Estate'"


def test_a_creator_of_invisible_characters_alone_is_credited_as_unknown() -> None:
    """A name of U+200B alone was credited in ATTRIBUTION.md as an invisible "by "."""
    from builder.exports.attribution import Credit, _md_line

    credit = Credit(key="0000000001", license="CC-BY-4.0", license_name="CC BY 4.0",
                    license_url=None, title="Work", creator="\u200b\u2060", creator_url=None,
                    source_url=None, credit="")
    assert _md_line(credit) == "Work by unknown creator, CC BY 4.0."
    assert _md_line(replace(credit, creator="Ada")) == "Work by Ada, CC BY 4.0."


def test_a_jurisdiction_given_with_spaces_is_that_jurisdiction() -> None:
    """`--jurisdiction "us "` refused US-only public domain, "the recipe declares
    jurisdiction US " (with its space): two names for one country."""
    policy = load_policy("commercial", jurisdiction=" us ")
    assert policy.jurisdiction == "US"
    assert decide(ev(("license", "Public domain in the United States")), policy).spdx \
        == "LicenseRef-PD-US"
