"""Which of their columns mean which of our Candidate fields — shared by table-like sources.

Tables in the wild name the same thing differently: img2dataset inputs say `url` and
`caption`; PD12M says `id, url, caption, hash, width, height, mime_type, license` (a licence
URL) and `source`; CommonCatalog (YFCC100M/Flickr columns) says `photoid, downloadurl,
pageurl, unickname, title, licensename, licenseurl`. A ColumnPlan is decided once per header
from those aliases plus the recipe's explicit mapping, then applied to every row.

Licence-bearing columns are never interpreted here: each one present and non-empty becomes
one Evidence(field=<their column name>, value=<raw text>), and builder.licensing decides.
One exception, because the licence gate refuses any claim it cannot read on its own: a
`license_version` column is not a claim by itself. Beside a short licence code ("by-sa",
"cc0": the Openverse catalogue layout) the two are emitted as the gate's Openverse pair,
Evidence("openverse:license", "by-sa") + Evidence("openverse:license_version", "4.0"), raw
values unchanged; beside a licence URL (which carries its version) or alone, the version is
kept in `extra` instead.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.config import did_you_mean
from builder.errors import UserError
from builder.records import Candidate, Evidence

# our field -> their column names, best first (matched case-insensitively)
TABLE_ALIASES: dict[str, tuple[str, ...]] = {
    "url": ("url", "downloadurl", "download_url", "image_url", "img_url", "file_url"),
    "id": ("id", "photoid", "image_id", "key"),
    "landing_url": ("landing_url", "pageurl", "page_url", "foreign_landing_url"),
    "creator": ("creator", "author", "artist", "unickname"),
    "creator_url": ("creator_url", "author_url", "artist_url"),
    "title": ("title",),
    "caption": ("caption", "text", "description", "alt"),
    "credit": ("credit", "attribution"),
    "sha1": ("sha1",),
}

# Their columns that carry a licence claim; every one present becomes Evidence.
LICENSE_COLUMNS: tuple[str, ...] = (
    "license", "license_url", "licensename", "licenseurl", "license_name", "license_type",
    "licence", "licence_url", "rights", "license_version",
)

# Raw columns worth keeping (as `extra`) for auditors: hashes, declared format, origin.
TABLE_EXTRA: tuple[str, ...] = (
    "source", "hash", "md5", "md5_hash", "sha256", "mime_type", "width", "height", "s3_key",
)

# Our fields a recipe may map explicitly: `columns = { url = "image_url", license = "lic" }`.
MAPPABLE: tuple[str, ...] = (*TABLE_ALIASES, "license", "license_url")

# The licence gate's names for the Openverse code + version pair (licenses/fields.toml).
PAIR_FIELDS = ("openverse:license", "openverse:license_version")

# How CSV writers (pandas, R, SQL dumps) spell a missing value; a cell saying this says nothing.
NULL_WORDS = frozenset({"NaN", "nan", "None", "null", "NULL", "<NA>", "N/A", "n/a"})


@dataclass(frozen=True)
class ColumnPlan:
    """Their column names (as spelled in the file) feeding each of our fields."""

    fields: Mapping[str, tuple[str, ...]]
    evidence: tuple[str, ...]
    extra: tuple[str, ...]

    @property
    def has_url(self) -> bool:
        return bool(self.fields.get("url"))


def check_mapping(mapping: Mapping[str, str], *, file: Path | str, where: str) -> dict[str, str]:
    """Refuse a recipe mapping that names a field we do not have."""
    for ours, theirs in mapping.items():
        if ours not in MAPPABLE:
            raise UserError(
                f"{file}: {where}.columns.{ours}: {ours!r} is not a field cleanset fills."
                f"{did_you_mean(ours, MAPPABLE)} Map one of {', '.join(MAPPABLE)} to a column name, e.g. "
                f'columns = {{ url = "image_url" }}.'
            )
        if not theirs.strip():
            raise UserError(f"{file}: {where}.columns.{ours} is empty; give a column name.")
    return dict(mapping)



def check_table_keys(columns: dict[str, str], id_column: str | None, license: str | None, *,
                     file: Path | str, where: str) -> dict[str, str]:
    """The column keys table-like sources share (`columns`, `id_column`, `license`): the
    checked mapping, with `id_column` folded in as `columns.id`."""
    mapping = check_mapping(columns, file=file, where=where)
    if id_column is not None:
        if mapping.get("id", id_column) != id_column:
            raise UserError(
                f"{file}: {where}.id_column = {id_column!r} disagrees with "
                f"{where}.columns.id = {mapping['id']!r}; keep one of them."
            )
        mapping["id"] = id_column
    if license is not None and not license.strip():
        raise UserError(f"{file}: {where}.license is empty; give a licence URL or remove it.")
    return mapping

def plan_columns(
    names: Iterable[str],
    mapping: Mapping[str, str],
    *,
    aliases: Mapping[str, tuple[str, ...]] = TABLE_ALIASES,
    extra: tuple[str, ...] | None = TABLE_EXTRA,
) -> ColumnPlan:
    """Decide which columns feed which fields. `extra=None` keeps every unused column."""
    present = list(dict.fromkeys(names))
    # Every spelling of a name ("License" and "license" in a table merged from two exports):
    # a licence column read in one spelling only would drop the other's claim unseen.
    by_lower: dict[str, list[str]] = {}
    for name in present:
        by_lower.setdefault(name.lower(), []).append(name)

    fields: dict[str, tuple[str, ...]] = {}
    for ours, candidates in aliases.items():
        if ours in mapping:
            fields[ours] = (mapping[ours],)
        else:
            fields[ours] = tuple(n for c in candidates for n in by_lower.get(c, ()))

    evidence = [n for c in LICENSE_COLUMNS for n in by_lower.get(c, ())]
    for ours in ("license", "license_url"):
        if ours in mapping and mapping[ours] not in evidence:
            evidence.insert(0, mapping[ours])

    used = {c for cols in fields.values() for c in cols} | set(evidence)
    if extra is None:
        kept = tuple(n for n in present if n not in used)
    else:
        kept = tuple(n for c in extra for n in by_lower.get(c, ()) if n not in used)
    return ColumnPlan(fields=fields, evidence=tuple(evidence), extra=kept)


def check_named_once(names: Iterable[str], where: str, plan: ColumnPlan | None = None) -> None:
    """Refuse a header (`where`: the file and which header) that names a column twice (of
    those `plan` reads, when given): a row read by name keeps one of the two cells, and a
    licence claim or a creator is lost unseen."""
    seen: set[str] = set()
    read = None if plan is None else \
        {c for cols in plan.fields.values() for c in cols} | set(plan.evidence) | set(plan.extra)
    for name in names:
        if name in seen and (read is None or name in read):
            raise UserError(
                f"{where} names column {name!r} twice, so one of its two cells would be lost "
                "on every row (a licence claim, or the creator a credit owes). Rename or "
                "remove one of them.")
        seen.add(name)


class KeyGivenTwice(ValueError):
    """A JSON object naming a key twice with two values (see `one_value_per_key`)."""


def one_value_per_key(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`json.loads`' object_pairs_hook for a row or a sidecar: a key repeated with another
    value (`{"license": "CC BY-NC 4.0", "license": "CC BY 4.0"}`) is refused; read as JSON
    reads it, the last one alone, the NC claim vanished and the image went in as CC BY."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj and obj[key] != value:
            raise KeyGivenTwice(
                f"names {key!r} twice, with different values ({obj[key]!r}, then {value!r}); "
                "JSON keeps only the last, so the other (a licence claim, a creator) would be "
                "lost unseen.")
        obj[key] = value
    return obj


def missing_mapped(mapping: Mapping[str, str], names: Iterable[str]) -> list[str]:
    """Explicitly mapped columns the file does not have (a typo in the recipe, usually)."""
    have = set(names)
    return [f"{ours} = {theirs!r}" for ours, theirs in mapping.items() if theirs not in have]


def clean(value: Any) -> str | None:
    """A cell as text, or None when it says nothing (None, NaN, empty, whitespace)."""
    if type(value) is str:  # the common case first: this runs for every cell of every row
        text = value.strip()
        return text if text and text not in NULL_WORDS else None
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        # ids stored as floats (a column with nulls, via pandas) must not gain a ".0"
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    text = str(value).strip()
    return None if not text or text in NULL_WORDS else text


def _first(row: Mapping[str, Any], columns: tuple[str, ...]) -> str | None:
    for column in columns:
        value = clean(row.get(column))
        if value is not None:
            return value
    return None


def row_evidence(row: Mapping[str, Any], plan: ColumnPlan) -> list[Evidence]:
    """The row's licence claims, in plan order (see the module docstring for the version)."""
    claims = row_claims(row, plan)
    return [Evidence(field=c, value=v) for c, v in claims.items() if c != VERSION_ASIDE]


def row_claims(row: Mapping[str, Any], plan: ColumnPlan) -> dict[str, str]:
    claims = {c: v for c in plan.evidence if (v := clean(row.get(c))) is not None}
    version_col = next((c for c in claims if c.lower() == "license_version"), None)
    if version_col is None:
        return claims
    version = claims.pop(version_col)
    license_col = next((c for c in claims if c.lower() == "license"), None)
    if license_col is not None and _is_code(claims[license_col]):
        code = claims.pop(license_col)
        return {PAIR_FIELDS[0]: code, PAIR_FIELDS[1]: version, **claims}
    return {**claims, VERSION_ASIDE: version}


VERSION_ASIDE = "license_version"  # kept in `extra` when it does not pair with a code


def _is_code(value: str) -> bool:
    """A short licence code such as "by-sa" or "cc0", not a URL or a sentence."""
    return "/" not in value and ":" not in value and " " not in value.strip()


def row_to_candidate(
    row: Mapping[str, Any],
    plan: ColumnPlan,
    *,
    source: str,
    fallback_id: str,
    fixed_license: str | None = None,
    resume: dict[str, Any] | None = None,
    url: str | None = None,
    local_path: str | None = None,
    extra: Iterable[tuple[str, str]] = (),
) -> Candidate:
    """One row as a Candidate. `url` overrides the row's (folder sources pass the file)."""

    def get(ours: str) -> str | None:
        columns = plan.fields.get(ours)
        return _first(row, columns) if columns else None

    claims = row_claims(row, plan)
    aside = claims.pop(VERSION_ASIDE, None)
    evidence = [Evidence(field=c, value=v) for c, v in claims.items()]
    if fixed_license:
        evidence.append(Evidence(field="recipe:license", value=fixed_license))
    kept = list(extra)
    kept.extend((c, v) for c in plan.extra if (v := clean(row.get(c))) is not None)
    if aside is not None:
        kept.append((VERSION_ASIDE, aside))
    sha1 = get("sha1")
    return Candidate(
        source=source,
        source_id=get("id") or fallback_id,
        url=url if url is not None else (get("url") or ""),
        evidence=tuple(evidence),
        landing_url=get("landing_url"),
        local_path=local_path,
        creator=get("creator"),
        creator_url=get("creator_url"),
        title=get("title"),
        caption=get("caption"),
        credit=get("credit"),
        expected_sha1=sha1.lower() if sha1 and _is_sha1(sha1) else None,
        extra=tuple(kept),
        resume=resume,
    )


def _is_sha1(text: str) -> bool:
    return len(text) == 40 and all(ch in "0123456789abcdefABCDEF" for ch in text)
