"""`croissant.json`: Croissant 1.0 metadata (JSON-LD) with the Responsible-AI fields.

Two ways in: `manifest.parquet` as the `samples` RecordSet (one record per sample, every
column a field), and each shard as its own FileObject with the images as a FileSet
contained in the shards, read by the `images` RecordSet. A FileSet over `*.tar` would
validate but could not be read, so the tars are FileObjects and the images are inside them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from builder.exports.papers import atomic_write, semver
from builder.exports.tables import MANIFEST_SCHEMA
from builder.ledger import Ledger
from builder.shards import shard_name

if TYPE_CHECKING:
    from builder.exports.papers import Facts

CONFORMS_TO = "http://mlcommons.org/croissant/1.0"
IMAGE_GLOBS = ("*.jpg", "*.png", "*.webp", "*.gif", "*.tif")

CONTEXT: dict[str, Any] = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}

_ARROW_TO_CROISSANT = {"string": "sc:Text", "int32": "sc:Integer", "int64": "sc:Integer"}


def write_croissant(ledger: Ledger, out: Path, facts: Facts) -> None:
    doc = croissant_document(out, facts)
    atomic_write(out / "croissant.json", json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def croissant_document(out: Path, facts: Facts) -> dict[str, Any]:
    manifest = out / "manifest.parquet"
    shards = [s for s in facts.shards if s["sha256"]]
    distribution: list[dict[str, Any]] = [{
        "@type": "cr:FileObject", "@id": "manifest.parquet", "name": "manifest.parquet",
        "description": "One row per sample: key, shard, checksums, licence, source, creator.",
        "contentUrl": "manifest.parquet", "encodingFormat": "application/x-parquet",
        "sha256": _sha256(manifest),
    }]
    distribution += [{
        "@type": "cr:FileObject", "@id": f"shard-{s['shard']:06d}",
        "name": f"shard-{s['shard']:06d}",
        "description": f"WebDataset shard with {s['samples']} samples.",
        "contentUrl": f"shards/{shard_name(s['shard'])}", "contentSize": f"{s['size']} B",
        "encodingFormat": "application/x-tar", "sha256": s["sha256"],
    } for s in shards]
    distribution += [_evidence_file(out, f) for f in facts.evidence]
    if shards:
        distribution.append({
            "@type": "cr:FileSet", "@id": "image-files", "name": "image-files",
            "description": "The images, as fetched, inside the shards.",
            "containedIn": [{"@id": f"shard-{s['shard']:06d}"} for s in shards],
            "encodingFormat": "image/*", "includes": list(IMAGE_GLOBS),
        })
    record_sets = [_samples_record_set()]
    if shards:
        record_sets.append(_images_record_set())
    licenses = sorted(facts.licenses)
    return {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": CONFORMS_TO,
        "name": facts.name,
        "description": facts.description or f"{facts.name}: an image dataset built by cleanset.",
        "version": semver(facts.version),
        **({"datePublished": facts.updated[:10]} if facts.updated else {}),
        # No homepage, no `url`: an invented address would send readers nowhere.
        **({"url": facts.homepage} if facts.homepage else {}),
        **_maintainers(facts),
        "license": [_license_url(lic) for lic in licenses] or ["https://spdx.org/licenses/"],
        "keywords": ["images", "provenance", "open licences", "webdataset"],
        "isLiveDataset": False,
        "citeAs": facts.citation or (f"{facts.name}, version {semver(facts.version)}. "
                                     "See ATTRIBUTION.md."),
        **_rai_fields(facts),
        "distribution": distribution,
        "recordSet": record_sets,
    }


def _samples_record_set() -> dict[str, Any]:
    # Nested columns (lists of structs) are left to Parquet readers: Croissant's subField
    # support in mlcroissant does not read them back from Parquet.
    fields = [_manifest_field(col) for col in MANIFEST_SCHEMA if not _nested(col.type)]
    return {"@type": "cr:RecordSet", "@id": "samples", "name": "samples",
            "description": "manifest.parquet: one record per sample.",
            "key": {"@id": "samples/key"}, "field": fields}


def _nested(kind: pa.DataType) -> bool:
    return pa.types.is_struct(kind) or (pa.types.is_list(kind)
                                        and pa.types.is_struct(kind.value_type))


def _manifest_field(col: pa.Field) -> dict[str, Any]:
    repeated = pa.types.is_list(col.type)
    value_type = col.type.value_type if repeated else col.type
    field: dict[str, Any] = {
        "@type": "cr:Field", "@id": f"samples/{col.name}", "name": col.name,
        "dataType": _ARROW_TO_CROISSANT.get(str(value_type), "sc:Text"),
        "source": {"fileObject": {"@id": "manifest.parquet"}, "extract": {"column": col.name}},
    }
    if repeated:
        field["repeated"] = True
    return field


def _images_record_set() -> dict[str, Any]:
    source = {"fileSet": {"@id": "image-files"}}
    return {
        "@type": "cr:RecordSet", "@id": "images", "name": "images",
        "description": "Every image in the shards, keyed like manifest.parquet.",
        "field": [
            {"@type": "cr:Field", "@id": "images/key", "name": "key", "dataType": "sc:Text",
             "source": {**source, "extract": {"fileProperty": "filename"},
                        "transform": {"regex": "^([0-9a-z_-]+)\\..*$"}}},
            {"@type": "cr:Field", "@id": "images/image", "name": "image",
             "dataType": "sc:ImageObject",
             "source": {**source, "extract": {"fileProperty": "content"}}},
        ],
    }


def _maintainers(facts: Facts) -> dict[str, Any]:
    """`creator` and `publisher`: whoever the recipe's contact reaches (not the images'
    creators, who are credited per sample)."""
    if not facts.contact:
        return {}
    maintainers: dict[str, Any] = {"@type": "sc:Organization",
                                   "name": f"Maintainers of {facts.name}"}
    if facts.contact_email:
        maintainers["email"] = facts.contact_email
    else:
        maintainers["url"] = facts.contact
    return {"creator": maintainers, "publisher": maintainers}


def _timeframe(facts: Facts) -> dict[str, Any]:
    if facts.collected is None:
        return {}
    return {"rai:dataCollectionTimeframe": list(facts.collected)}


def _rai_fields(facts: Facts) -> dict[str, Any]:
    policies = ", ".join(str(p.get("name")) for p in facts.policies) or "none recorded"
    signals = ", ".join(facts.optout_signals) or "none recorded"
    sources = ", ".join(sorted(facts.sources)) or "none"
    return {
        "rai:dataCollection": (
            f"Images collected by cleanset from: {sources}. Each candidate's licence was read "
            f"from its source metadata before download and checked against the policy "
            f"({policies}); machine-readable opt-out signals were honoured ({signals}); "
            "exact and near duplicates were removed. candidates.parquet lists every candidate "
            "considered and why each refused one was refused."),
        "rai:dataCollectionType": ["Web Scraping", "Secondary Data Analysis"],
        **_timeframe(facts),
        "rai:dataBiases": (
            "Only openly licensed and public-domain images are included, which over-represents "
            "institutions and photographers who publish under open licences (museums, "
            "government agencies, Wikimedia contributors) and older public-domain works; "
            "the per-creator concentration is in report.html."),
        "rai:dataLimitations": (
            "Licence status is taken from source metadata; a wrong claim at the source is "
            "inherited. Public-domain status can depend on jurisdiction. Captions, where "
            "present, come from the sources and are not verified."),
        "rai:personalSensitiveInformation": (
            "Images may show identifiable people; no face or personal-data filtering was "
            "applied. Creator names are recorded for attribution. Request removal as the "
            "dataset card (README.md) describes."),
        "rai:dataUseCases": (
            "Training and evaluating image models where every sample's licence must be "
            "known and defensible; licence-aware retrieval research."),
        "rai:dataSocialImpact": (
            "Gives model trainers a dataset whose every image is traceable to a licence and "
            "a creator, and honours creators' do-not-train signals."),
        "rai:dataReleaseMaintenancePlan": (
            "Rebuilt from the recipe to refresh; takedown requests remove works, rewrite only "
            "the affected shards and bump the version; every paper is regenerated each time."),
    }


def _license_url(license_id: str) -> str:
    from builder.licensing import license_info

    info = license_info(license_id)
    if info and info.url:
        return info.url
    return f"https://spdx.org/licenses/{license_id}.html"


def _evidence_file(out: Path, f: dict[str, Any]) -> dict[str, Any]:
    url = f"evidence/{f['name']}"
    return {
        "@type": "cr:FileObject", "@id": url, "name": f["name"],
        "description": "Evidence archive (WARC 1.1, gzip per record): the responses the "
                       f"build decided from, {f['records']} of them; provenance `evidence` "
                       "points at records by file, WARC-Record-ID and offset.",
        "contentUrl": url, "contentSize": f"{f['size']} B",
        "encodingFormat": "application/warc",
        "sha256": f["sha256"] or _sha256(out / url),
    }


def _sha256(path: Path) -> str:
    from builder.shards import file_sha256

    return file_sha256(path) if path.exists() else ""


def check_croissant(out: Path, ledger: Ledger, facts: Facts,
                    samples: dict[str, tuple[str, str]]) -> list[str]:
    path = out / "croissant.json"
    if not path.exists():
        return ["croissant.json is missing"]
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        return [f"croissant.json is not valid JSON: {exc}"]
    problems = []
    if doc.get("version") != semver(facts.version):
        problems.append(f"croissant.json: version {doc.get('version')} differs from the "
                        f"ledger's {semver(facts.version)}")
    files = {d.get("contentUrl"): d.get("sha256") for d in doc.get("distribution", [])
             if d.get("@type") == "cr:FileObject"}
    manifest = out / "manifest.parquet"
    if manifest.exists() and files.get("manifest.parquet") != _sha256(manifest):
        problems.append("croissant.json: manifest.parquet sha256 differs from the file")
    expected = {f"shards/{shard_name(s['shard'])}": s["sha256"] for s in facts.shards
                if s["sha256"]}
    listed = {url: sha for url, sha in files.items() if url and url.startswith("shards/")}
    if listed != expected:
        problems.append(f"croissant.json: lists {len(listed)} shard(s) that differ from the "
                        f"ledger's {len(expected)} complete shard(s)")
    archived = {f"evidence/{f['name']}" for f in facts.evidence}
    listed_evidence = {url for url in files if url and url.startswith("evidence/")}
    if listed_evidence != archived:
        problems.append(f"croissant.json: lists {len(listed_evidence)} evidence file(s); the "
                        f"ledger has {len(archived)}")
    return problems
