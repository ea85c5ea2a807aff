"""The licence gate: raw licence claims -> SPDX id -> policy decision. Data in licenses/.

Nothing here touches the network; everything a licence *is* (ids, URLs, aliases, what it
allows) lives in licenses/*.toml, and policies in licenses/policies/*.toml.

Evidence conventions (what sources emit as `records.Evidence(field, value)`):
- `field` is the raw field name. Generic table/folder columns keep their names:
  `license`, `license_url`, `licensename`, `licenseurl`, `rights`, ...
- Source-specific fields are namespaced `"<kind>:<field>"`:
  `met:isPublicDomain` = "true"/"false", `aic:is_public_domain` = "true"/"false",
  `cleveland:share_license_status` = "CC0"/"Copyrighted",
  `smithsonian:usage.access` = "CC0"/"Usage conditions apply",
  `wikimedia:LicenseShortName`, `wikimedia:UsageTerms`, `wikimedia:LicenseUrl`, `wikimedia:License`,
  `europeana:rights` (a URI), `flickr:license` (the numeric id "0".."10"),
  `xmp:xmpRights:WebStatement`, `xmp:cc:license` (embedded metadata, after download).
- Openverse: emit `openverse:license` ("by-sa", "cc0", "pdm"...) and
  `openverse:license_version` ("4.0") as two Evidence; the gate reads them as one claim
  ("cc by-sa 4.0"). A single `openverse:license` = "by-sa 4.0" is read the same way.
- Booleans are emitted as "true"/"false" (any case); values are strings.
- Informational fields (licenses/fields.toml, e.g. `wikimedia:AttributionRequired`,
  `wikimedia:Copyrighted`, `wikimedia:Restrictions`, `credit`) are kept as evidence but
  never decide. Empty values ("", "null", "None", "nan", "n/a") are not claims.

Decision rules (`decide`):
- no claim at all -> `license_missing`;
- any claim that does not normalise -> `license_unrecognized` (detail quotes field and value),
  even when another claim is recognised: strict, because an unreadable claim may restrict;
- claims that normalise to different results -> `license_conflict` (detail names both);
- recognised but not admitted by the policy -> `license_not_allowed` (detail: id and why,
  e.g. "NonCommercial", or the jurisdiction to declare);
- an explicit dual licence `A OR B` is admitted under the most permissive admitted option
  (commercial, then derivatives, then no ShareAlike, then no attribution; first on ties),
  recorded in `LicenseDecision.chosen_from`; `A AND B` needs both admitted.
`LicenseDecision.evidence` is all the evidence passed in, unchanged.
"""

from __future__ import annotations

from builder.licensing.catalogue import Catalogue, LicenseInfo, licenses_dir, load_catalogue
from builder.licensing.credit import credit_line, credit_line_text
from builder.licensing.gate import Claim, decide, is_admitted, read_claims
from builder.licensing.normalise import normalise as _normalise
from builder.licensing.normalise import url_key
from builder.licensing.policy import Policy, known_policies, load_policy, why_not

__all__ = [
    "Catalogue", "Claim", "LicenseInfo", "Policy", "credit_line", "credit_line_text", "decide",
    "is_admitted", "known_policies", "license_info", "licenses_dir", "load_catalogue",
    "load_policy", "normalise", "read_claims", "url_key", "why_not",
]


def normalise(text: str) -> str | None:
    """A licence claim string -> SPDX id (or LicenseRef-..., or an SPDX expression of them);
    None if unrecognised. Idempotent on its outputs; never raises."""
    return _normalise(text)


def license_info(spdx_id: str) -> LicenseInfo | None:
    """The catalogue entry for an id (case-insensitive), or None."""
    cat = load_catalogue()
    key = cat.by_lower_id.get(str(spdx_id).lower())
    return cat.entries[key] if key else None
