"""Properties of normalisation and the gate that must hold for any input (hypothesis)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.licensing import decide, load_catalogue, load_policy, normalise
from builder.records import Evidence, LicenseDecision, Rejection

IDS = sorted(load_catalogue().entries)
POLICY = load_policy("open-research")
FIELDS = ["license", "license_url", "rights", "flickr:license", "met:isPublicDomain",
          "openverse:license", "openverse:license_version", "wikimedia:LicenseShortName",
          "wikimedia:AttributionRequired", "xmp:xmpRights:WebStatement"]

# Text that looks like licence claims: fragments of real spellings, glued at random.
FRAGMENTS = st.sampled_from([
    "cc", "CC", "by", "BY", "-", " ", "sa", "nc", "nd", "4.0", "3.0", "2.5", "2.0", "1.0", "de",
    "igo", "Attribution", "ShareAlike", "NonCommercial", "NoDerivs", "Creative Commons",
    "https://", "http://", "//", "www.", "creativecommons.org/", "licenses/", "publicdomain/",
    "zero/", "mark/", "/", "deed.en", "legalcode", "OR", " OR ", " AND ", " WITH ", "(", ")",
    "<a href='x'>", "</a>", "&amp;", ",", "Public domain", "PD-", "US", "rightsstatements.org/",
    "vocab/", "NoC-US", "InC", "CC0", "MIT", "GFDL", "LicenseRef-", "?lang=fr", "#x", "\u00a0",
])
CLAIMISH = st.lists(FRAGMENTS, min_size=1, max_size=12).map("".join)


def test_every_catalogue_id_normalises_to_itself() -> None:
    for lid in IDS:
        assert normalise(lid) == lid
        assert normalise(lid.lower()) == lid
        assert normalise(f" {lid.upper()} ") == lid


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_normalise_never_raises_on_arbitrary_text(text: str) -> None:
    result = normalise(text)
    assert result is None or isinstance(result, str)


@settings(max_examples=600)
@given(st.one_of(CLAIMISH, st.text(max_size=80)))
def test_normalise_is_idempotent_on_its_outputs(text: str) -> None:
    result = normalise(text)
    if result is not None:
        assert normalise(result) == result


@settings(max_examples=300)
@given(st.lists(st.sampled_from(IDS), min_size=2, max_size=4),
       st.lists(st.sampled_from([" OR ", " AND "]), min_size=3, max_size=3))
def test_expressions_of_catalogue_ids_are_recognised_and_stable(ids: list[str],
                                                               ops: list[str]) -> None:
    text = ids[0] + "".join(op + lid for op, lid in zip(ops, ids[1:], strict=False))
    result = normalise(text)
    assert result is not None
    assert normalise(result) == result


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from(FIELDS), st.one_of(CLAIMISH, st.text(max_size=40))),
                max_size=4))
def test_decide_always_returns_a_decision_or_a_rejection_keeping_all_evidence(
        pairs: list[tuple[str, str]]) -> None:
    evidence = tuple(Evidence(f, v) for f, v in pairs)
    outcome = decide(evidence, POLICY)
    assert isinstance(outcome, LicenseDecision | Rejection)
    if isinstance(outcome, LicenseDecision):
        assert outcome.evidence == evidence
    else:
        assert outcome.detail


@settings(max_examples=200)
@given(st.sampled_from(IDS), st.sampled_from(IDS))
def test_two_claims_naming_different_licences_never_admit(a: str, b: str) -> None:
    outcome = decide((Evidence("license", a), Evidence("xmp:cc:license", b)), POLICY)
    if a != b:
        assert isinstance(outcome, Rejection) and outcome.reason == "license_conflict"
