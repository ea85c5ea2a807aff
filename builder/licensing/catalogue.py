"""The licence catalogue: licenses/*.toml read into lookup tables, validated once.

Everything a licence *is* lives in the TOML files; this module only loads, expands (the
Creative Commons family x version x port grid) and indexes it. Errors in the data are
UserErrors naming the file and key, because a team edits these files by hand.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from builder.errors import UserError

_BOOL_KEYS = ("commercial", "derivatives", "attribution_required", "share_alike")
_ID_RE = re.compile(r"^(LicenseRef-)?[A-Za-z0-9][A-Za-z0-9.+-]*$")
_KINDS = {"licence", "dedication", "mark", "statement", "assertion"}


_PACKAGE = Path(__file__).resolve().parents[1]  # builder/
# An installed wheel carries the catalogue as builder/licenses/ (pyproject.toml maps it);
# a checkout (editable install, PYTHONPATH) has it beside builder/, at the repository's top.
_DEFAULT_DIR = next((d for d in (_PACKAGE / "licenses", _PACKAGE.parent / "licenses")
                     if (d / "catalogue.toml").is_file()), _PACKAGE.parent / "licenses")


def licenses_dir() -> Path:
    """The catalogue folder: $CLEANSET_LICENSES, else the one shipped with cleanset."""
    override = os.environ.get("CLEANSET_LICENSES")
    if override:
        return Path(override)
    return _DEFAULT_DIR


@dataclass(frozen=True)
class LicenseInfo:
    """What one catalogue entry allows and asks. `jurisdiction` is set for statements that
    hold in one jurisdiction only; `port` is a CC jurisdiction port (which is valid worldwide)."""

    id: str
    name: str
    short: str
    url: str | None
    family: str
    kind: str
    commercial: bool
    derivatives: bool
    attribution_required: bool
    share_alike: bool
    jurisdiction: str | None = None
    port: str | None = None
    credit: str = "is licensed under {short}"
    notes: str = ""

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class FieldSpec:
    """How one evidence field is read (licenses/fields.toml)."""

    informational: bool = False
    exclusive: bool = False
    values: dict[str, str] = field(default_factory=dict)
    pair: str | None = None
    prefix: str = ""
    # Values that are the source's own refusal (cleaned value -> detail, `{value}` filled
    # in): `refuse` decides whatever the other fields say (Commons' NonFree=true);
    # `refuse_unlicensed` decides only when no field names a licence (Copyrighted=True,
    # is_public_domain=false). Neither is a licence: no catalogue id stands for them.
    refuse: dict[str, str] = field(default_factory=dict)
    refuse_unlicensed: dict[str, str] = field(default_factory=dict)
    quoted: bool = False  # informational text quoted in such a refusal (a copyright notice)


@dataclass(frozen=True)
class CCGrid:
    """Creative Commons families, for parsing URLs and short names into ids."""

    by_elements: dict[frozenset[str], str]  # {"by","sa"} -> "CC-BY-SA"
    by_slug: dict[str, str]  # "by-nd-nc" -> "CC-BY-NC-ND"
    ids: dict[tuple[str, str, str | None], str]  # (family, version, port) -> id
    ports: frozenset[str]
    port_names: dict[str, str]  # "germany" -> "de"
    port_name_re: re.Pattern[str] | None = None  # matches any port name, longest first


@dataclass(frozen=True)
class Catalogue:
    entries: dict[str, LicenseInfo]
    by_lower_id: dict[str, str]
    urls: dict[str, str]  # normalised URL key -> id
    aliases: dict[str, str]  # cleaned lower-case alias -> id
    patterns: tuple[tuple[re.Pattern[str], str], ...]
    fields: dict[str, FieldSpec]  # lower-case field name -> spec
    cc: CCGrid
    files: tuple[str, ...]
    # Results of pure functions of (catalogue, input): claim strings repeat millions of times.
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    def remember(self, key: Any, compute: Any) -> Any:
        if key in self.memo:
            return self.memo[key]
        if len(self.memo) > 200_000:
            self.memo.clear()  # bounded: a build over arbitrary free text must not grow forever
        value = self.memo[key] = compute()
        return value

    def field_spec(self, name: str) -> FieldSpec:
        return self.fields.get(name.lower(), _GENERIC)


_GENERIC = FieldSpec()


def load_catalogue(directory: Path | None = None) -> Catalogue:
    return _load_cached(str(directory or licenses_dir()))


@lru_cache(maxsize=8)
def _load_cached(directory: str) -> Catalogue:
    root = Path(directory).resolve()
    files = sorted(root.glob("*.toml"))
    if not files:
        raise UserError(f"licence catalogue {root} holds no *.toml files: point CLEANSET_LICENSES "
                        "at the repository's licenses/ folder.")
    builder = _Builder()
    for path in files:
        builder.add_file(path)
    return builder.finish(tuple(p.name for p in files))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"{path}: cannot read licence data ({exc}); fix the TOML syntax.") from None


class _Builder:
    """Accumulates entries from several files, then indexes them (url/alias keys are made by
    the normaliser, imported late to keep one definition of 'the same string')."""

    def __init__(self) -> None:
        self.entries: dict[str, LicenseInfo] = {}
        self.lower_ids: set[str] = set()
        self.origin: dict[str, str] = {}
        self.raw_urls: list[tuple[str, str, str]] = []  # (url, id, file)
        self.raw_aliases: list[tuple[str, str, str]] = []
        self.patterns: list[tuple[re.Pattern[str], str]] = []
        self.fields: dict[str, FieldSpec] = {}
        self.cc: CCGrid | None = None

    def add_file(self, path: Path) -> None:
        data = _read_toml(path)
        unknown = set(data) - {"license", "pattern", "fields", "creativecommons"}
        if unknown:
            raise UserError(f"{path}: unknown top-level key(s) {sorted(unknown)}; licence data "
                            "files may hold [[license]], [[pattern]], [fields.*], [creativecommons].")
        for i, raw in enumerate(data.get("license", [])):
            self._add_entry(raw, where=f"{path} [[license]] #{i + 1}")
        for i, raw in enumerate(data.get("pattern", [])):
            where = f"{path} [[pattern]] #{i + 1}"
            try:
                self.patterns.append((re.compile(raw["regex"]), raw["id"]))
            except (KeyError, re.error) as exc:
                raise UserError(f"{where}: needs a valid `regex` and an `id` ({exc}).") from None
        for name, raw in data.get("fields", {}).items():
            self._add_field(name, raw, where=f"{path} [fields.{name}]")
        if "creativecommons" in data:
            self._add_cc(data["creativecommons"], where=f"{path} [creativecommons]")

    def _add_entry(self, raw: dict[str, Any], *, where: str, origin: str | None = None) -> None:
        try:
            lid = raw["id"]
            if not _ID_RE.match(lid):
                raise ValueError(f"id {lid!r} is not an SPDX id or LicenseRef-[A-Za-z0-9.-]+")
            if lid.lower() in self.lower_ids:
                raise ValueError(f"id {lid!r} is already defined in {self.origin[lid]}")
            kind = raw.get("kind", "licence")
            if kind not in _KINDS:
                raise ValueError(f"kind {kind!r} is not one of {sorted(_KINDS)}")
            for key in _BOOL_KEYS:
                if not isinstance(raw.get(key), bool):
                    raise ValueError(f"`{key}` must be true or false")
            info = LicenseInfo(
                id=lid, name=str(raw["name"]), short=str(raw.get("short", raw["name"])),
                url=raw.get("url"), family=str(raw["family"]), kind=kind,
                commercial=raw["commercial"], derivatives=raw["derivatives"],
                attribution_required=raw["attribution_required"], share_alike=raw["share_alike"],
                jurisdiction=raw.get("jurisdiction"), port=raw.get("port"),
                credit=str(raw.get("credit", "is licensed under {short}")),
                notes=str(raw.get("notes", "")),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise UserError(f"{where}: {exc}; see the key list at the top of "
                            "licenses/catalogue.toml.") from None
        self.entries[lid] = info
        self.lower_ids.add(lid.lower())
        self.origin[lid] = origin or where
        for url in ([info.url] if info.url else []) + list(raw.get("urls", [])):
            self.raw_urls.append((url, lid, where))
        for alias in raw.get("aliases", []):
            self.raw_aliases.append((alias, lid, where))

    def _add_field(self, name: str, raw: dict[str, Any], *, where: str) -> None:
        allowed = {"informational", "exclusive", "values", "pair", "prefix", "refuse",
                   "refuse_unlicensed", "quoted"}
        if set(raw) - allowed:
            raise UserError(f"{where}: unknown key(s) {sorted(set(raw) - allowed)}; "
                            f"allowed: {sorted(allowed)}.")

        def table(key: str) -> dict[str, str]:
            return {_clean_key(k): str(v) for k, v in raw.get(key, {}).items()}

        self.fields[name.lower()] = FieldSpec(
            informational=bool(raw.get("informational", False)),
            exclusive=bool(raw.get("exclusive", False)), values=table("values"),
            pair=raw.get("pair"), prefix=str(raw.get("prefix", "")),
            refuse=table("refuse"), refuse_unlicensed=table("refuse_unlicensed"),
            quoted=bool(raw.get("quoted", False)))

    def _add_cc(self, raw: dict[str, Any], *, where: str) -> None:
        prefix = raw.get("url_prefix", "https://creativecommons.org/licenses/")
        spdx_ports = set(raw.get("spdx_ids", []))
        port_only = set(raw.get("port_only_versions", []))
        ports: dict[str, list[str]] = raw.get("ports", {})
        names: dict[str, str] = raw.get("jurisdictions", {})
        by_elements: dict[frozenset[str], str] = {}
        by_slug: dict[str, str] = {}
        ids: dict[tuple[str, str, str | None], str] = {}
        for fam in raw.get("family", []):
            fid = fam["id"]
            by_elements[frozenset(fam["elements"])] = fid
            for slug in fam["slugs"]:
                by_slug[slug] = fid
            for version in fam["versions"]:
                variants: list[str | None] = [] if version in port_only else [None]
                variants += list(ports.get(version, []))
                for port in variants:
                    lid = _cc_id(fid, version, port, spdx_ports)
                    ids[(fid, version, port)] = lid
                    self._add_entry(_cc_entry(fam, version, port, lid, prefix, names),
                                    where=f"{where} family {fid} {version} {port or ''}",
                                    origin=where)
        all_ports = frozenset(p for plist in ports.values() for p in plist)
        port_names = {n.lower(): code for code, n in names.items()}
        alternation = "|".join(re.escape(n) for n in sorted(port_names, key=len, reverse=True))
        port_re = re.compile(rf"\b({alternation})\b") if port_names else None
        self.cc = CCGrid(by_elements, by_slug, ids, all_ports, port_names, port_re)

    def finish(self, files: tuple[str, ...]) -> Catalogue:
        from builder.licensing.normalise import clean, url_key

        def check(lid: str, where: str) -> str:
            if lid not in self.entries:
                raise UserError(f"{where}: refers to id {lid!r}, which no [[license]] defines.")
            return lid

        urls: dict[str, str] = {}
        for url, lid, where in self.raw_urls:
            key = url_key(url)
            if key is None:
                raise UserError(f"{where}: {url!r} is not a URL.")
            if urls.get(key, lid) != lid:
                raise UserError(f"{where}: URL {url!r} already means {urls[key]}.")
            urls[key] = check(lid, where)
        aliases: dict[str, str] = {}
        for alias, lid, where in self.raw_aliases:
            key = clean(alias).lower()
            if aliases.get(key, lid) != lid:
                raise UserError(f"{where}: alias {alias!r} already means {aliases[key]}.")
            aliases[key] = check(lid, where)
        for _, lid in self.patterns:
            check(lid, "licenses [[pattern]]")
        for name, spec in self.fields.items():
            for lid in spec.values.values():
                check(lid, f"licenses [fields.{name}]")
        cc = self.cc or CCGrid({}, {}, {}, frozenset(), {})
        return Catalogue(
            entries=dict(self.entries), by_lower_id={k.lower(): k for k in self.entries},
            urls=urls, aliases=aliases, patterns=tuple(self.patterns), fields=dict(self.fields),
            cc=cc, files=files)


def _clean_key(text: str) -> str:
    return " ".join(str(text).lower().split())


def _cc_id(family: str, version: str, port: str | None, spdx_ports: set[str]) -> str:
    base = f"{family}-{version}"
    if port is None:
        # SPDX lists every unported version of the six BY families; the legacy ones only SA.
        legacy = not family.startswith("CC-BY")
        return base if not legacy or base in spdx_ports else f"LicenseRef-{base}"
    ported = f"{base}-{port.upper()}"
    return ported if ported in spdx_ports else f"LicenseRef-{ported}"


def _cc_entry(fam: dict[str, Any], version: str, port: str | None, lid: str, prefix: str,
              names: dict[str, str]) -> dict[str, Any]:
    slug = fam.get("slug_by_version", {}).get(version, fam["slugs"][0])
    url = f"{prefix}{slug}/{version}/" + (f"{port}/" if port else "")
    if port:
        scope = names.get(port, port.upper())
    else:
        scope = {"4.0": "International", "3.0": "Unported"}.get(version, "Generic")
    short_family = fam["id"].removeprefix("CC-")
    entry = {
        "id": lid,
        "name": f"Creative Commons {fam['name']} {version} {scope}",
        "short": f"CC {short_family} {version}" + (f" {port.upper()}" if port else ""),
        "url": url,
        "family": fam["id"],
        "kind": "licence",
        "port": port,
    }
    for key in _BOOL_KEYS:
        entry[key] = fam[key]
    return entry
