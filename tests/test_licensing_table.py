"""Real-world licence strings, as the sources emit them, with the expected SPDX id and the
decision of every shipped policy.

Where they come from: Wikimedia Commons extmetadata (LicenseShortName, UsageTerms,
LicenseUrl, License) as returned by imageinfo&iiprop=extmetadata; Openverse's
(license, license_version) pairs and license_url; Flickr's licence ids and names
(flickr.photos.licenses.getInfo) as carried by CommonCatalog (licensename, licenseurl);
PD12M's `license` URLs; Europeana EDM `edm:rights` URIs (CC and rightsstatements.org,
plus Europeana's pre-2016 rights URIs); museum open-access flags (The Met isPublicDomain,
AIC is_public_domain, Cleveland share_license_status, Smithsonian usage.access); CC deed
titles and URL forms (deed.xx, legalcode, ports); XMP xmpRights:WebStatement / cc:license;
SPDX ids and expressions.
"""

from __future__ import annotations

import pytest

from builder.licensing import decide, load_policy, normalise
from builder.records import Evidence, LicenseDecision, Reason, Rejection

POLICIES = ("public-domain", "commercial", "commercial-no-sharealike", "open-research")
PD = frozenset(POLICIES)
BY = frozenset({"commercial", "commercial-no-sharealike", "open-research"})
SA = frozenset({"commercial", "open-research"})
NC = frozenset({"open-research"})
NONE: frozenset[str] = frozenset()
US = "US"  # public domain in the US only: admitted by every policy iff jurisdiction = "US"
UNRECOGNISED = None
# Not a licence: the source's own "not public domain" flag, refused in its own words.
SOURCE_REFUSAL = "(refused by the source's flag, no licence id)"

W_SHORT = "wikimedia:LicenseShortName"
W_TERMS = "wikimedia:UsageTerms"
W_URL = "wikimedia:LicenseUrl"
W_LIC = "wikimedia:License"
EU = "europeana:rights"

Row = tuple[tuple[tuple[str, str], ...], str | None, frozenset[str] | str]


def one(field: str, value: str, spdx: str | None, admits: frozenset[str] | str) -> Row:
    return (((field, value),), spdx, admits)


def ov(code: str, version: str, spdx: str | None, admits: frozenset[str] | str) -> Row:
    pairs = [("openverse:license", code)]
    if version:
        pairs.append(("openverse:license_version", version))
    return (tuple(pairs), spdx, admits)


TABLE: list[Row] = [
    # --- Wikimedia Commons LicenseShortName ---
    one(W_SHORT, "CC BY-SA 4.0", "CC-BY-SA-4.0", SA),
    one(W_SHORT, "CC BY-SA 3.0", "CC-BY-SA-3.0", SA),
    one(W_SHORT, "CC BY-SA 2.5", "CC-BY-SA-2.5", SA),
    one(W_SHORT, "CC BY-SA 2.0", "CC-BY-SA-2.0", SA),
    one(W_SHORT, "CC BY-SA 1.0", "CC-BY-SA-1.0", SA),
    one(W_SHORT, "CC BY 4.0", "CC-BY-4.0", BY),
    one(W_SHORT, "CC BY 3.0", "CC-BY-3.0", BY),
    one(W_SHORT, "CC BY 2.5", "CC-BY-2.5", BY),
    one(W_SHORT, "CC BY 2.0", "CC-BY-2.0", BY),
    one(W_SHORT, "CC BY 1.0", "CC-BY-1.0", BY),
    one(W_SHORT, "CC0", "CC0-1.0", PD),
    one(W_SHORT, "Public domain", "LicenseRef-Public-Domain", PD),
    one(W_SHORT, "CC BY-SA 3.0 de", "CC-BY-SA-3.0-DE", SA),
    one(W_SHORT, "CC BY-SA 3.0 at", "CC-BY-SA-3.0-AT", SA),
    one(W_SHORT, "CC BY-SA 3.0 nl", "LicenseRef-CC-BY-SA-3.0-NL", SA),
    one(W_SHORT, "CC BY-SA 3.0 es", "LicenseRef-CC-BY-SA-3.0-ES", SA),
    one(W_SHORT, "CC BY-SA 3.0 igo", "CC-BY-SA-3.0-IGO", SA),
    one(W_SHORT, "CC BY 3.0 igo", "CC-BY-3.0-IGO", BY),
    one(W_SHORT, "CC BY 3.0 us", "CC-BY-3.0-US", BY),
    one(W_SHORT, "CC BY 3.0 au", "CC-BY-3.0-AU", BY),
    one(W_SHORT, "CC BY 2.5 au", "CC-BY-2.5-AU", BY),
    one(W_SHORT, "CC BY-SA 2.0 de", "LicenseRef-CC-BY-SA-2.0-DE", SA),
    one(W_SHORT, "CC BY-SA 2.0 uk", "CC-BY-SA-2.0-UK", SA),
    one(W_SHORT, "CC BY-SA 2.1 jp", "CC-BY-SA-2.1-JP", SA),
    one(W_SHORT, "CC BY-SA 2.5 pl", "LicenseRef-CC-BY-SA-2.5-PL", SA),
    one(W_SHORT, "CC BY-SA 3.0 pl", "LicenseRef-CC-BY-SA-3.0-PL", SA),
    one(W_SHORT, "CC BY-SA 3.0 br", "LicenseRef-CC-BY-SA-3.0-BR", SA),
    one(W_SHORT, "CC BY 3.0 de", "CC-BY-3.0-DE", BY),
    one(W_SHORT, "CC BY 3.0 nl", "CC-BY-3.0-NL", BY),
    one(W_SHORT, "CC BY 3.0 at", "CC-BY-3.0-AT", BY),
    one(W_SHORT, "CC-BY-SA-3.0", "CC-BY-SA-3.0", SA),
    one(W_SHORT, "CC-BY-4.0", "CC-BY-4.0", BY),
    one(W_SHORT, "CC-BY-SA-3.0-migrated", "CC-BY-SA-3.0", SA),
    one(W_SHORT, "CC BY-NC 4.0", "CC-BY-NC-4.0", NC),
    one(W_SHORT, "CC BY-NC-SA 4.0", "CC-BY-NC-SA-4.0", NC),
    one(W_SHORT, "CC BY-NC-ND 4.0", "CC-BY-NC-ND-4.0", NONE),
    one(W_SHORT, "CC BY-ND 4.0", "CC-BY-ND-4.0", NONE),
    one(W_SHORT, "GFDL", "GFDL-1.2-or-later", NONE),
    one(W_SHORT, "FAL", "LAL-1.3", NONE),
    one(W_SHORT, "Attribution", "LicenseRef-Attribution", NONE),
    one(W_SHORT, "No restrictions", "LicenseRef-Flickr-No-Known-Copyright-Restrictions", NONE),
    one(W_SHORT, "PD-US", "LicenseRef-PD-US", US),
    one(W_SHORT, "PD-USGov", "LicenseRef-US-Government-Work", US),
    one(W_SHORT, "PD-USGov-NASA", "LicenseRef-US-Government-Work", US),
    one(W_SHORT, "PD-old-70", "LicenseRef-Public-Domain", PD),
    one(W_SHORT, "PD-Art", "LicenseRef-Public-Domain", PD),
    one(W_SHORT, "CC BY-SA", UNRECOGNISED, NONE),
    one(W_SHORT, "CC BY", UNRECOGNISED, NONE),
    one(W_SHORT, "Copyrighted free use", UNRECOGNISED, NONE),
    one(W_SHORT, "CC-BY-SA-3.0,2.5,2.0,1.0",
        "CC-BY-SA-3.0 OR CC-BY-SA-2.5 OR CC-BY-SA-2.0 OR CC-BY-SA-1.0", SA),
    one(W_SHORT, "CC BY-SA 4.0<br>", "CC-BY-SA-4.0", SA),
    one(W_SHORT, "<span class=\"licensetpl_short\">CC BY 4.0</span>", "CC-BY-4.0", BY),
    # --- Wikimedia UsageTerms ---
    one(W_TERMS, "Creative Commons Attribution-Share Alike 4.0", "CC-BY-SA-4.0", SA),
    one(W_TERMS, "Creative Commons Attribution-Share Alike 3.0", "CC-BY-SA-3.0", SA),
    one(W_TERMS, "Creative Commons Attribution-Share Alike 2.5", "CC-BY-SA-2.5", SA),
    one(W_TERMS, "Creative Commons Attribution-Share Alike 2.0", "CC-BY-SA-2.0", SA),
    one(W_TERMS, "Creative Commons Attribution 4.0", "CC-BY-4.0", BY),
    one(W_TERMS, "Creative Commons Attribution 3.0", "CC-BY-3.0", BY),
    one(W_TERMS, "Creative Commons Attribution 2.0", "CC-BY-2.0", BY),
    one(W_TERMS, "Creative Commons Attribution-Share Alike 3.0 de", "CC-BY-SA-3.0-DE", SA),
    one(W_TERMS, "Creative Commons Attribution-Share Alike 3.0 Germany", "CC-BY-SA-3.0-DE", SA),
    one(W_TERMS, "Creative Commons Zero, Public Domain Dedication", "CC0-1.0", PD),
    one(W_TERMS, "Public domain", "LicenseRef-Public-Domain", PD),
    one(W_TERMS, "Creative Commons Attribution-ShareAlike", UNRECOGNISED, NONE),
    one(W_TERMS, "GNU Free Documentation License", "GFDL-1.2-or-later", NONE),
    one(W_TERMS, "Creative Commons Attribution-NonCommercial-ShareAlike 2.0",
        "CC-BY-NC-SA-2.0", NC),
    # --- Wikimedia LicenseUrl ---
    one(W_URL, "https://creativecommons.org/licenses/by-sa/4.0", "CC-BY-SA-4.0", SA),
    one(W_URL, "http://creativecommons.org/licenses/by-sa/3.0", "CC-BY-SA-3.0", SA),
    one(W_URL, "https://creativecommons.org/licenses/by/4.0", "CC-BY-4.0", BY),
    one(W_URL, "https://creativecommons.org/licenses/by/2.0", "CC-BY-2.0", BY),
    one(W_URL, "http://creativecommons.org/licenses/by-sa/2.5", "CC-BY-SA-2.5", SA),
    one(W_URL, "https://creativecommons.org/publicdomain/zero/1.0/deed.en", "CC0-1.0", PD),
    one(W_URL, "http://creativecommons.org/publicdomain/zero/1.0/deed.en", "CC0-1.0", PD),
    one(W_URL, "https://creativecommons.org/licenses/by-sa/3.0/de/deed.en", "CC-BY-SA-3.0-DE", SA),
    one(W_URL, "http://creativecommons.org/licenses/by-sa/3.0/nl/deed.en",
        "LicenseRef-CC-BY-SA-3.0-NL", SA),
    one(W_URL, "https://creativecommons.org/licenses/by/3.0/igo/deed.en", "CC-BY-3.0-IGO", BY),
    one(W_URL, "http://www.gnu.org/copyleft/fdl.html", "GFDL-1.2-or-later", NONE),
    one(W_URL, "http://artlibre.org/licence/lal/en", "LAL-1.3", NONE),
    one(W_URL, "https://creativecommons.org/licenses/by-nc/2.0", "CC-BY-NC-2.0", NC),
    one(W_URL, "https://creativecommons.org/publicdomain/mark/1.0/", "CC-PDM-1.0", PD),
    one(W_URL, "https://creativecommons.org/licenses/by-sa/2.0/uk/deed.en", "CC-BY-SA-2.0-UK", SA),
    # --- Wikimedia License (template name) ---
    one(W_LIC, "cc-by-sa-4.0", "CC-BY-SA-4.0", SA),
    one(W_LIC, "cc-by-4.0", "CC-BY-4.0", BY),
    one(W_LIC, "cc-by-sa-3.0", "CC-BY-SA-3.0", SA),
    one(W_LIC, "cc-by-2.0", "CC-BY-2.0", BY),
    one(W_LIC, "cc0", "CC0-1.0", PD),
    one(W_LIC, "pd", "LicenseRef-Public-Domain", PD),
    one(W_LIC, "cc-by-sa-3.0-de", "CC-BY-SA-3.0-DE", SA),
    one(W_LIC, "cc-by-sa-2.5,2.0,1.0", "CC-BY-SA-2.5 OR CC-BY-SA-2.0 OR CC-BY-SA-1.0", SA),
    one(W_LIC, "cc-by-3.0-us", "CC-BY-3.0-US", BY),
    one(W_LIC, "gfdl", "GFDL-1.2-or-later", NONE),
    one(W_LIC, "fal", "LAL-1.3", NONE),
    one(W_LIC, "attribution", "LicenseRef-Attribution", NONE),
    one(W_LIC, "cc-by-sa-3.0-migrated", "CC-BY-SA-3.0", SA),
    one(W_LIC, "cc-by-sa-3.0-migrated-with-disclaimers", "CC-BY-SA-3.0", SA),
    # --- Openverse (license, license_version) ---
    ov("by", "4.0", "CC-BY-4.0", BY),
    ov("by", "3.0", "CC-BY-3.0", BY),
    ov("by", "2.5", "CC-BY-2.5", BY),
    ov("by", "2.0", "CC-BY-2.0", BY),
    ov("by", "1.0", "CC-BY-1.0", BY),
    ov("by-sa", "4.0", "CC-BY-SA-4.0", SA),
    ov("by-sa", "3.0", "CC-BY-SA-3.0", SA),
    ov("by-sa", "2.0", "CC-BY-SA-2.0", SA),
    ov("by-nc", "2.0", "CC-BY-NC-2.0", NC),
    ov("by-nc", "4.0", "CC-BY-NC-4.0", NC),
    ov("by-nd", "2.0", "CC-BY-ND-2.0", NONE),
    ov("by-nd", "3.0", "CC-BY-ND-3.0", NONE),
    ov("by-nc-sa", "2.0", "CC-BY-NC-SA-2.0", NC),
    ov("by-nc-sa", "4.0", "CC-BY-NC-SA-4.0", NC),
    ov("by-nc-nd", "2.0", "CC-BY-NC-ND-2.0", NONE),
    ov("by-nc-nd", "4.0", "CC-BY-NC-ND-4.0", NONE),
    ov("cc0", "1.0", "CC0-1.0", PD),
    ov("pdm", "1.0", "CC-PDM-1.0", PD),
    ov("sampling+", "1.0", "LicenseRef-CC-Sampling-Plus-1.0", NONE),
    ov("nc-sampling+", "1.0", "LicenseRef-CC-NC-Sampling-Plus-1.0", NONE),
    ov("by 4.0", "", "CC-BY-4.0", BY),
    ov("by-sa", "", UNRECOGNISED, NONE),
    ov("cc-by", "4.0", "CC-BY-4.0", BY),
    one("openverse:license_url", "https://creativecommons.org/licenses/by/2.0/", "CC-BY-2.0", BY),
    one("openverse:license_url", "https://creativecommons.org/publicdomain/zero/1.0/",
        "CC0-1.0", PD),
    one("openverse:license_url", "https://creativecommons.org/licenses/by-nc-sa/2.0/",
        "CC-BY-NC-SA-2.0", NC),
    # --- Flickr licence ids ---
    one("flickr:license", "0", "LicenseRef-All-Rights-Reserved", NONE),
    one("flickr:license", "1", "CC-BY-NC-SA-2.0", NC),
    one("flickr:license", "2", "CC-BY-NC-2.0", NC),
    one("flickr:license", "3", "CC-BY-NC-ND-2.0", NONE),
    one("flickr:license", "4", "CC-BY-2.0", BY),
    one("flickr:license", "5", "CC-BY-SA-2.0", SA),
    one("flickr:license", "6", "CC-BY-ND-2.0", NONE),
    one("flickr:license", "7", "LicenseRef-Flickr-No-Known-Copyright-Restrictions", NONE),
    one("flickr:license", "8", "LicenseRef-US-Government-Work", US),
    one("flickr:license", "9", "CC0-1.0", PD),
    one("flickr:license", "10", "CC-PDM-1.0", PD),
    one("flickr:license", " 4 ", "CC-BY-2.0", BY),
    one("flickr:license", "CC BY 2.0", UNRECOGNISED, NONE),
    # --- CommonCatalog (Flickr names and URLs) ---
    one("licensename", "Attribution License", "CC-BY-2.0", BY),
    one("licensename", "Attribution-ShareAlike License", "CC-BY-SA-2.0", SA),
    one("licensename", "Attribution-NoDerivs License", "CC-BY-ND-2.0", NONE),
    one("licensename", "Attribution-NonCommercial License", "CC-BY-NC-2.0", NC),
    one("licensename", "Attribution-NonCommercial-ShareAlike License", "CC-BY-NC-SA-2.0", NC),
    one("licensename", "Attribution-NonCommercial-NoDerivs License", "CC-BY-NC-ND-2.0", NONE),
    one("licensename", "No known copyright restrictions",
        "LicenseRef-Flickr-No-Known-Copyright-Restrictions", NONE),
    one("licensename", "United States Government Work", "LicenseRef-US-Government-Work", US),
    one("licensename", "Public Domain Dedication (CC0)", "CC0-1.0", PD),
    one("licensename", "Public Domain Mark", "CC-PDM-1.0", PD),
    one("licensename", "All Rights Reserved", "LicenseRef-All-Rights-Reserved", NONE),
    one("licenseurl", "https://creativecommons.org/licenses/by/2.0/", "CC-BY-2.0", BY),
    one("licenseurl", "https://creativecommons.org/licenses/by-sa/2.0/", "CC-BY-SA-2.0", SA),
    one("licenseurl", "https://creativecommons.org/publicdomain/zero/1.0/", "CC0-1.0", PD),
    one("licenseurl", "https://creativecommons.org/publicdomain/mark/1.0/", "CC-PDM-1.0", PD),
    one("licenseurl", "https://www.usa.gov/copyright.shtml", "LicenseRef-US-Government-Work", US),
    one("licenseurl", "https://www.flickr.com/commons/usage/",
        "LicenseRef-Flickr-No-Known-Copyright-Restrictions", NONE),
    # Generic `license` column: Flickr's unversioned names are ambiguous there.
    one("license", "Attribution License", UNRECOGNISED, NONE),
    # --- PD12M / generic `license` URLs ---
    one("license", "https://creativecommons.org/publicdomain/zero/1.0/", "CC0-1.0", PD),
    one("license", "https://creativecommons.org/publicdomain/mark/1.0/", "CC-PDM-1.0", PD),
    one("license", "http://creativecommons.org/publicdomain/zero/1.0/legalcode", "CC0-1.0", PD),
    one("license", "creativecommons.org/publicdomain/zero/1.0", "CC0-1.0", PD),
    one("license", "https://creativecommons.org/publicdomain/zero/1.0/deed.fr", "CC0-1.0", PD),
    one("license", "https://creativecommons.org/licenses/publicdomain/", "CC-PDDC", PD),
    one("license_url", "https://creativecommons.org/licenses/by/4.0/legalcode.de", "CC-BY-4.0", BY),
    one("license_url", "https://creativecommons.org/licenses/by-sa/4.0/legalcode.txt",
        "CC-BY-SA-4.0", SA),
    one("license_url", "//creativecommons.org/licenses/by-nc/3.0/", "CC-BY-NC-3.0", NC),
    one("license_url", "https://creativecommons.org/licenses/by-nd-nc/1.0/", "CC-BY-NC-ND-1.0",
        NONE),
    one("license_url", "https://creativecommons.org/licenses/sa/1.0/", "CC-SA-1.0", SA),
    one("license_url", "https://creativecommons.org/licenses/nc/1.0/", "LicenseRef-CC-NC-1.0", NC),
    one("license_url", "https://creativecommons.org/licenses/nd/1.0/", "LicenseRef-CC-ND-1.0",
        NONE),
    one("license_url", "https://creativecommons.org/licenses/nc-sa/1.0/",
        "LicenseRef-CC-NC-SA-1.0", NC),
    one("license_url", "https://creativecommons.org/licenses/nd-nc/1.0/",
        "LicenseRef-CC-ND-NC-1.0", NONE),
    one("license_url", "https://creativecommons.org/licenses/by/1.0/fi/", "LicenseRef-CC-BY-1.0-FI",
        BY),
    one("license_url", "https://creativecommons.org/licenses/by-nc-sa/2.0/fr/",
        "CC-BY-NC-SA-2.0-FR", NC),
    one("license_url", "https://creativecommons.org/licenses/by-nc-sa/2.0/de/",
        "CC-BY-NC-SA-2.0-DE", NC),
    one("license_url", "https://creativecommons.org/licenses/by-nc-nd/3.0/de/",
        "CC-BY-NC-ND-3.0-DE", NONE),
    one("license_url", "https://creativecommons.org/licenses/by-nc/3.0/de/", "CC-BY-NC-3.0-DE", NC),
    one("license_url", "https://creativecommons.org/licenses/by-nd/3.0/de/", "CC-BY-ND-3.0-DE",
        NONE),
    one("license_url", "https://creativecommons.org/licenses/by-sa/2.5/scotland/",
        "LicenseRef-CC-BY-SA-2.5-SCOTLAND", SA),
    one("license_url", "https://creativecommons.org/licenses/by/2.1/jp/", "LicenseRef-CC-BY-2.1-JP",
        BY),
    one("license_url", "https://creativecommons.org/licenses/by/2.1/", UNRECOGNISED, NONE),
    one("license_url", "https://creativecommons.org/licenses/by/3.0/us/", "CC-BY-3.0-US", BY),
    one("license_url", "http://creativecommons.org/licenses/by-nc-sa/3.0/us/",
        "LicenseRef-CC-BY-NC-SA-3.0-US", NC),
    one("license_url", "https://creativecommons.org/licenses/by-sa/4.0/deed.zh-hans",
        "CC-BY-SA-4.0", SA),
    one("license_url", "https://creativecommons.org/licenses/by/4.0/deed.es_ES", "CC-BY-4.0", BY),
    one("license_url", "https://creativecommons.org/licenses/by/4.0/#", "CC-BY-4.0", BY),
    one("license_url", "https://creativecommons.org/licenses/by/4.0/rdf", "CC-BY-4.0", BY),
    one("license_url", "https://creativecommons.org/licenses/sampling+/1.0/",
        "LicenseRef-CC-Sampling-Plus-1.0", NONE),
    one("license_url", "https://creativecommons.org/licenses/by/4.0/fr/", UNRECOGNISED, NONE),
    one("license_url", "https://example.com/license", UNRECOGNISED, NONE),
    one("license_url", "https://creativecommons.org/", UNRECOGNISED, NONE),
    # --- Europeana edm:rights ---
    one(EU, "http://creativecommons.org/publicdomain/mark/1.0/", "CC-PDM-1.0", PD),
    one(EU, "http://creativecommons.org/publicdomain/zero/1.0/", "CC0-1.0", PD),
    one(EU, "http://creativecommons.org/licenses/by/4.0/", "CC-BY-4.0", BY),
    one(EU, "http://creativecommons.org/licenses/by-sa/4.0/", "CC-BY-SA-4.0", SA),
    one(EU, "http://creativecommons.org/licenses/by-nc/4.0/", "CC-BY-NC-4.0", NC),
    one(EU, "http://creativecommons.org/licenses/by-nc-sa/4.0/", "CC-BY-NC-SA-4.0", NC),
    one(EU, "http://creativecommons.org/licenses/by-nd/4.0/", "CC-BY-ND-4.0", NONE),
    one(EU, "http://creativecommons.org/licenses/by-nc-nd/4.0/", "CC-BY-NC-ND-4.0", NONE),
    one(EU, "http://creativecommons.org/licenses/by/3.0/nl/", "CC-BY-3.0-NL", BY),
    one(EU, "http://creativecommons.org/licenses/by-sa/3.0/nl/", "LicenseRef-CC-BY-SA-3.0-NL", SA),
    one(EU, "http://creativecommons.org/licenses/by-nc-sa/2.5/it/",
        "LicenseRef-CC-BY-NC-SA-2.5-IT", NC),
    one(EU, "http://rightsstatements.org/vocab/InC/1.0/", "LicenseRef-RS-InC-1.0", NONE),
    one(EU, "http://rightsstatements.org/vocab/InC-OW-EU/1.0/", "LicenseRef-RS-InC-OW-EU-1.0",
        NONE),
    one(EU, "http://rightsstatements.org/vocab/InC-EDU/1.0/", "LicenseRef-RS-InC-EDU-1.0", NONE),
    one(EU, "http://rightsstatements.org/vocab/InC-NC/1.0/", "LicenseRef-RS-InC-NC-1.0", NONE),
    one(EU, "http://rightsstatements.org/vocab/InC-RUU/1.0/", "LicenseRef-RS-InC-RUU-1.0", NONE),
    one(EU, "http://rightsstatements.org/vocab/NoC-CR/1.0/", "LicenseRef-RS-NoC-CR-1.0", NONE),
    one(EU, "http://rightsstatements.org/vocab/NoC-NC/1.0/", "LicenseRef-RS-NoC-NC-1.0", NC),
    one(EU, "http://rightsstatements.org/vocab/NoC-OKLR/1.0/", "LicenseRef-RS-NoC-OKLR-1.0", NONE),
    one(EU, "http://rightsstatements.org/vocab/NoC-US/1.0/", "LicenseRef-RS-NoC-US-1.0", US),
    one(EU, "http://rightsstatements.org/vocab/CNE/1.0/", "LicenseRef-RS-CNE-1.0", NONE),
    one(EU, "http://rightsstatements.org/vocab/UND/1.0/", "LicenseRef-RS-UND-1.0", NONE),
    one(EU, "http://rightsstatements.org/vocab/NKC/1.0/", "LicenseRef-RS-NKC-1.0", NONE),
    one(EU, "https://rightsstatements.org/page/InC/1.0/?language=en", "LicenseRef-RS-InC-1.0",
        NONE),
    one(EU, "http://rightsstatements.org/page/NoC-NC/1.0/?language=de",
        "LicenseRef-RS-NoC-NC-1.0", NC),
    one(EU, "http://www.europeana.eu/rights/rr-f/", "LicenseRef-Europeana-RR-F", NONE),
    one(EU, "http://www.europeana.eu/rights/rr-p/", "LicenseRef-Europeana-RR-P", NONE),
    one(EU, "http://www.europeana.eu/rights/rr-r/", "LicenseRef-Europeana-RR-R", NONE),
    one(EU, "http://www.europeana.eu/rights/unknown/", "LicenseRef-Europeana-Unknown", NONE),
    one(EU, "http://www.europeana.eu/rights/orphan-work-eu/", "LicenseRef-Europeana-Orphan-Work-EU",
        NONE),
    one(EU, "http://www.europeana.eu/rights/out-of-copyright-non-commercial/",
        "LicenseRef-Europeana-Out-Of-Copyright-NC", NC),
    one(EU, "http://rightsstatements.org/vocab/InC/2.0/", UNRECOGNISED, NONE),
    # --- Museum flags ---
    one("met:isPublicDomain", "true", "CC0-1.0", PD),
    one("met:isPublicDomain", "True", "CC0-1.0", PD),
    one("met:isPublicDomain", "false", SOURCE_REFUSAL, NONE),
    one("met:isPublicDomain", "False", SOURCE_REFUSAL, NONE),
    one("aic:is_public_domain", "true", "CC0-1.0", PD),
    one("aic:is_public_domain", "false", SOURCE_REFUSAL, NONE),
    one("cleveland:share_license_status", "CC0", "CC0-1.0", PD),
    one("cleveland:share_license_status", "Copyrighted", "LicenseRef-All-Rights-Reserved", NONE),
    one("smithsonian:usage.access", "CC0", "CC0-1.0", PD),
    one("smithsonian:usage.access", "Usage conditions apply", "LicenseRef-Usage-Conditions-Apply",
        NONE),
    one("cleveland:share_license_status", "Public Domain", UNRECOGNISED, NONE),
    # --- XMP embedded metadata ---
    one("xmp:xmpRights:WebStatement", "https://creativecommons.org/licenses/by/4.0/", "CC-BY-4.0",
        BY),
    one("xmp:xmpRights:WebStatement", "http://creativecommons.org/licenses/by-sa/4.0/legalcode",
        "CC-BY-SA-4.0", SA),
    one("xmp:xmpRights:WebStatement", "https://rightsstatements.org/page/InC/1.0/?language=en",
        "LicenseRef-RS-InC-1.0", NONE),
    one("xmp:xmpRights:WebStatement", "https://www.gettyimages.com/eula", UNRECOGNISED, NONE),
    one("xmp:cc:license", "https://creativecommons.org/licenses/by-nc/4.0/", "CC-BY-NC-4.0", NC),
    one("xmp:cc:license", "http://creativecommons.org/publicdomain/zero/1.0/", "CC0-1.0", PD),
    # --- Deed titles and short names as people write them ---
    one("license", "Attribution 4.0 International (CC BY 4.0)", "CC-BY-4.0", BY),
    one("license", "Attribution-ShareAlike 4.0 International (CC BY-SA 4.0)", "CC-BY-SA-4.0", SA),
    one("license", "Attribution-NonCommercial 4.0 International (CC BY-NC 4.0)", "CC-BY-NC-4.0",
        NC),
    one("license", "Attribution-NoDerivatives 4.0 International (CC BY-ND 4.0)", "CC-BY-ND-4.0",
        NONE),
    one("license", "Attribution-NonCommercial-ShareAlike 4.0 International (CC BY-NC-SA 4.0)",
        "CC-BY-NC-SA-4.0", NC),
    one("license", "Attribution-NonCommercial-NoDerivatives 4.0 International (CC BY-NC-ND 4.0)",
        "CC-BY-NC-ND-4.0", NONE),
    one("license", "Attribution 2.0 Generic (CC BY 2.0)", "CC-BY-2.0", BY),
    one("license", "Attribution-ShareAlike 3.0 Unported (CC BY-SA 3.0)", "CC-BY-SA-3.0", SA),
    one("license", "Attribution 4.0 International (CC BY-SA 4.0)", UNRECOGNISED, NONE),
    one("license", "Creative Commons Attribution 4.0 International License", "CC-BY-4.0", BY),
    one("license", "Creative Commons Attribution-ShareAlike 4.0 International Public License",
        "CC-BY-SA-4.0", SA),
    one("license", "Creative Commons Attribution-NoDerivs 3.0 Unported License", "CC-BY-ND-3.0",
        NONE),
    one("license", "Creative Commons Attribution-NonCommercial-NoDerivs 2.0 Generic",
        "CC-BY-NC-ND-2.0", NONE),
    one("license", "Creative Commons Attribution-Noncommercial-Share Alike 3.0 Unported",
        "CC-BY-NC-SA-3.0", NC),
    one("license", "Creative Commons Attribution 3.0 Germany", "CC-BY-3.0-DE", BY),
    one("license", "Creative Commons Attribution 3.0 United States", "CC-BY-3.0-US", BY),
    one("license", "Creative Commons Attribution-ShareAlike 2.5 Scotland",
        "LicenseRef-CC-BY-SA-2.5-SCOTLAND", SA),
    one("license", "CC BY-SA 4.0 International", "CC-BY-SA-4.0", SA),
    one("license", "CC-BY 4.0", "CC-BY-4.0", BY),
    one("license", "CC BY 4", "CC-BY-4.0", BY),
    one("license", "cc by v4.0", "CC-BY-4.0", BY),
    one("license", "CC_BY_SA_4.0", "CC-BY-SA-4.0", SA),
    one("license", "cc-by-nc-sa", UNRECOGNISED, NONE),
    one("license", "CC SA-BY 4.0", "CC-BY-SA-4.0", SA),
    one("license", "CC BY-SA 3.0 Unported", "CC-BY-SA-3.0", SA),
    one("license", "CC BY-NC 2.0", "CC-BY-NC-2.0", NC),
    one("license", "CC BY-NC-ND 3.0 IGO", "CC-BY-NC-ND-3.0-IGO", NONE),
    one("license", "CC BY-NC-SA 3.0 IGO", "CC-BY-NC-SA-3.0-IGO", NC),
    one("license", "CC SA 1.0", "CC-SA-1.0", SA),
    one("license", "CC BY 5.0", UNRECOGNISED, NONE),
    one("license", "CC0 1.0", "CC0-1.0", PD),
    one("license", "CC0 1.0 Universal", "CC0-1.0", PD),
    one("license", "CC0 1.0 Universal (CC0 1.0) Public Domain Dedication", "CC0-1.0", PD),
    one("license", "Creative Commons Zero", "CC0-1.0", PD),
    one("license", "cc-zero", "CC0-1.0", PD),
    one("license", "Public Domain Mark 1.0", "CC-PDM-1.0", PD),
    one("license", "PDM", "CC-PDM-1.0", PD),
    one("license", "public-domain", "LicenseRef-Public-Domain", PD),
    one("license", "No Copyright", "LicenseRef-Public-Domain", PD),
    one("license", "All rights reserved", "LicenseRef-All-Rights-Reserved", NONE),
    one("license", "© All Rights Reserved", "LicenseRef-All-Rights-Reserved", NONE),
    one("license", "Copyright 2021 Jane Doe", UNRECOGNISED, NONE),
    one("license", "Open Government Licence v3.0", "OGL-UK-3.0", NONE),
    one("license", "Licence Ouverte 2.0", "etalab-2.0", NONE),
    one("rights", "unknown", UNRECOGNISED, NONE),
    one("rights", "Public Domain", "LicenseRef-Public-Domain", PD),
    one("rights", "No known copyright restrictions",
        "LicenseRef-Flickr-No-Known-Copyright-Restrictions", NONE),
    # --- SPDX ids and expressions ---
    one("license", "CC-BY-4.0", "CC-BY-4.0", BY),
    one("license", "cc-by-sa-4.0", "CC-BY-SA-4.0", SA),
    one("license", "CC0-1.0", "CC0-1.0", PD),
    one("license", "CC-PDDC", "CC-PDDC", PD),
    one("license", "CC-PDM-1.0", "CC-PDM-1.0", PD),
    one("license", "CC-BY-SA-3.0-DE", "CC-BY-SA-3.0-DE", SA),
    one("license", "CC-BY-SA-2.1-JP", "CC-BY-SA-2.1-JP", SA),
    one("license", "MIT", "MIT", NONE),
    one("license", "Apache-2.0", "Apache-2.0", NONE),
    one("license", "PDDL-1.0", "PDDL-1.0", PD),
    one("license", "Unlicense", "Unlicense", PD),
    one("license", "GFDL-1.3-or-later", "GFDL-1.3-or-later", NONE),
    one("license", "LicenseRef-CC-BY-SA-3.0-ES", "LicenseRef-CC-BY-SA-3.0-ES", SA),
    one("license", "CC-BY-4.0 OR CC0-1.0", "CC-BY-4.0 OR CC0-1.0", PD),
    one("license", "CC-BY-SA-4.0 OR CC-BY-4.0", "CC-BY-SA-4.0 OR CC-BY-4.0", BY),
    one("license", "CC-BY-NC-4.0 OR CC-BY-SA-4.0", "CC-BY-NC-4.0 OR CC-BY-SA-4.0", SA),
    one("license", "GFDL-1.2-or-later OR CC-BY-SA-3.0", "GFDL-1.2-or-later OR CC-BY-SA-3.0", SA),
    one("license", "CC-BY-4.0 AND CC-BY-SA-4.0", "CC-BY-4.0 AND CC-BY-SA-4.0", SA),
    one("license", "CC-BY-4.0 AND CC-BY-NC-4.0", "CC-BY-4.0 AND CC-BY-NC-4.0", NC),
    one("license", "(CC-BY-4.0 OR CC-BY-NC-4.0) AND CC0-1.0",
        "(CC-BY-4.0 OR CC-BY-NC-4.0) AND CC0-1.0", BY),
    one("license", "cc-by-4.0 or mit", "CC-BY-4.0 OR MIT", BY),
    one("license", "CC BY-SA 4.0 or GFDL", "CC-BY-SA-4.0 OR GFDL-1.2-or-later", SA),
    one("license", "CC-BY-4.0 OR Proprietary", UNRECOGNISED, NONE),
    one("license", "CC-BY-4.0 WITH", UNRECOGNISED, NONE),
]


def _expected(admits: frozenset[str] | str, policy: str, jurisdiction: str | None) -> bool:
    if admits == US:
        return jurisdiction == "US"
    assert isinstance(admits, frozenset)
    return policy in admits


def _ids(row: Row) -> str:
    return " + ".join(f"{f}={v}" for f, v in row[0])


@pytest.mark.parametrize("row", TABLE, ids=[_ids(r) for r in TABLE])
def test_real_world_string_normalises_and_decides_as_documented(row: Row) -> None:
    pairs, spdx, admits = row
    evidence = tuple(Evidence(f, v) for f, v in pairs)
    for jurisdiction in (None, "US"):
        for name in POLICIES:
            outcome = decide(evidence, load_policy(name, jurisdiction=jurisdiction))
            if spdx is None:
                assert isinstance(outcome, Rejection), outcome
                assert outcome.reason == Reason.LICENSE_UNRECOGNIZED, outcome
                continue
            if _expected(admits, name, jurisdiction):
                assert isinstance(outcome, LicenseDecision), (name, jurisdiction, outcome)
                if outcome.chosen_from is not None:
                    assert outcome.chosen_from == spdx
                else:
                    assert outcome.spdx == spdx
                assert outcome.evidence == evidence and outcome.policy == name
            else:
                assert isinstance(outcome, Rejection), (name, jurisdiction, outcome)
                assert outcome.reason == Reason.LICENSE_NOT_ALLOWED, outcome
                assert outcome.detail


def test_the_table_holds_at_least_200_real_world_strings() -> None:
    assert len({r[0] for r in TABLE}) == len(TABLE) >= 200


@pytest.mark.parametrize("row", [r for r in TABLE if len(r[0]) == 1 and r[1] is not None
                                 and not r[0][0][0].startswith(("flickr:", "met:", "aic:",
                                                                "cleveland:", "smithsonian:",
                                                                "licensename", "wikimedia:Lic"))],
                         ids=lambda r: r[0][0][1])
def test_generic_normalise_agrees_with_the_gate_for_free_text_fields(row: Row) -> None:
    (_, value), = row[0]
    assert normalise(value) == row[1]
