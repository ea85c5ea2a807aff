"""TOML recipe -> typed, validated Recipe. Every user mistake is a UserError naming the key.

Paths inside a recipe (source files, denylists, eval sets) are relative to the recipe
file; `[dataset] output` is relative to the current directory, like any CLI output path, or
an fsspec URL (`s3://bucket/dataset`: built in a local stage, then published; see publish.py).
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from builder.config import did_you_mean, from_table
from builder.errors import UserError
from builder.sources import source_module
from builder.sources.base import SourceContext

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class DatasetConfig:
    name: str
    output: str | None = None
    samples_per_shard: int = 1000
    description: str = ""
    max_per_creator: int | None = None
    # The image member's extension. img2dataset's convention is one name for every sample
    # ("jpg"), original bytes inside; Hugging Face `datasets` needs every sample to have the
    # same members, so mixed formats under their own names ("by-format") cannot be loaded there.
    image_ext: str = "jpg"
    # Who answers for the dataset, quoted by the papers (card, Croissant, SPDX): a web page,
    # an email address or URL for requests (takedowns), and how to cite it.
    homepage: str | None = None
    contact: str | None = None
    citation: str | None = None

    def __post_init__(self) -> None:
        _check_dataset_contacts(self)
        if self.image_ext not in ("jpg", "png", "webp", "gif", "tif", "by-format"):
            raise ValueError(
                f"image_ext = {self.image_ext!r} must be one of jpg, png, webp, gif, tif, by-format."
            )
        if not NAME_RE.match(self.name):
            raise ValueError(
                f"name = {self.name!r} must be 1-64 characters of a-z, 0-9, '_' or '-', "
                "starting with a letter or digit."
            )
        if not 1 <= self.samples_per_shard <= 1_000_000:
            raise ValueError("samples_per_shard must be between 1 and 1000000.")
        if self.max_per_creator is not None and self.max_per_creator < 1:
            raise ValueError("max_per_creator must be at least 1 (or absent for no cap).")
        if self.output is not None:
            _check_output(self.output)


EMAIL_RE = re.compile(r"^[^@\s<>()\[\],;:\"]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


def is_http_url(text: str) -> bool:
    """An absolute http(s) URL with a host and no whitespace."""
    try:
        parts = urlsplit(text)
        host = parts.hostname  # raises on a malformed IPv6 literal ("http://[::1")
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(host) and not any(
        c.isspace() for c in text)


def _check_dataset_contacts(dataset: DatasetConfig) -> None:
    if dataset.homepage is not None and not is_http_url(dataset.homepage):
        raise ValueError(f"homepage = {dataset.homepage!r} is not an http(s) URL. Give the "
                         "dataset's web page, e.g. \"https://example.org/my-dataset\".")
    contact = dataset.contact
    if contact is not None and contact.lower().startswith("mailto:"):
        raise ValueError(f"contact = {contact!r}: write the address without \"mailto:\", "
                         f"e.g. \"{contact[len('mailto:'):]}\".")
    if contact is not None and not (EMAIL_RE.match(contact) or is_http_url(contact)):
        raise ValueError(f"contact = {contact!r} is neither an email address nor an http(s) "
                         "URL. Give where rights holders can write, e.g. "
                         "\"datasets@example.org\" or \"https://example.org/contact\".")
    if dataset.citation is not None and not dataset.citation.strip():
        raise ValueError("citation is empty. Give how to cite the dataset (plain text or "
                         "BibTeX), or remove the key.")


@dataclass(frozen=True)
class PolicyConfig:
    use: str = "commercial"
    jurisdiction: str | None = None


@dataclass(frozen=True)
class FetchConfig:
    user_agent: str = "cleanset/0.1 (+https://github.com/cleanset/cleanset)"
    allow_private_addresses: bool = False
    timeout_s: float = 20.0
    max_bytes: int = 50_000_000
    retries: int = 3
    backoff_s: float = 0.5
    max_retry_after_s: float = 120.0
    workers: int = 16
    per_host_connections: int = 8
    per_host_rps: float | None = None
    # Hosts (as written in URLs) exempt from the private-address guard, e.g. an internal
    # mirror; every other host, including redirect targets, stays guarded.
    trusted_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive.")
        if self.max_bytes < 1:
            raise ValueError("max_bytes must be positive.")
        if not 0 <= self.retries <= 20:
            raise ValueError("retries must be between 0 and 20.")
        if not 1 <= self.workers <= 512:
            raise ValueError("workers must be between 1 and 512.")
        if self.per_host_connections < 1:
            raise ValueError("per_host_connections must be at least 1.")
        if self.per_host_rps is not None and self.per_host_rps <= 0:
            raise ValueError("per_host_rps must be positive.")
        if not self.user_agent.strip():
            raise ValueError("user_agent must not be empty; name your tool and a contact.")


@dataclass(frozen=True)
class ImageConfig:
    max_pixels: int = 89_478_485  # Pillow's own bomb threshold
    min_width: int = 1
    min_height: int = 1
    formats: tuple[str, ...] = ("jpeg", "png", "webp", "gif", "tiff")

    def __post_init__(self) -> None:
        known = {"jpeg", "png", "webp", "gif", "tiff"}
        bad = [f for f in self.formats if f not in known]
        if bad:
            raise ValueError(f"formats: {bad[0]!r} is not one of {sorted(known)}.")
        if self.max_pixels < 1:
            raise ValueError("max_pixels must be positive.")


@dataclass(frozen=True)
class DedupConfig:
    exact: bool = True
    near: bool = True
    max_distance: int = 31
    phash_max_distance: int = 10
    pdq_max_distance_with_phash: int = 80
    min_pdq_quality: int = 50
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.max_distance <= 256:
            raise ValueError("max_distance must be between 0 and 256 (bits of PDQ).")
        if not 0 <= self.phash_max_distance <= 64:
            raise ValueError("phash_max_distance must be between 0 and 64.")
        if not 0 <= self.pdq_max_distance_with_phash <= 256:
            raise ValueError("pdq_max_distance_with_phash must be between 0 and 256.")


@dataclass(frozen=True)
class ExecutorConfig:
    """Where the per-candidate stages run. The dataset is the same whichever is chosen."""

    kind: str = "auto"  # auto | threads | processes | ray
    processes: int | None = None  # auto, processes: worker count (default: one per core)
    ray_address: str | None = None  # ray: "auto", "ray://host:10001", or None for a local Ray
    batch_size: int = 128  # ray: candidates per task (128 measured fastest here)
    # ray: the dedup indexes (near and exact) split over this many Ray actors (0: in the driver)
    index_parts: int = 0
    # ray: who writes the shards: "driver" (this process) or "workers" (Ray workers, onto a
    # filesystem they share with the driver; the driver renames and records them)
    write_shards: str = "driver"

    def __post_init__(self) -> None:
        if self.kind not in ("auto", "threads", "processes", "ray"):
            raise ValueError(f"kind = {self.kind!r} must be one of auto, threads, processes, "
                             "ray.")
        if self.processes is not None and self.processes < 1:
            raise ValueError("processes must be at least 1.")
        if not 1 <= self.batch_size <= 10_000:
            raise ValueError("batch_size must be between 1 and 10000.")
        if self.write_shards not in ("driver", "workers"):
            raise ValueError(f"write_shards = {self.write_shards!r} must be \"driver\" or "
                             "\"workers\".")
        if not 0 <= self.index_parts <= 4096:
            raise ValueError("index_parts must be between 0 (the index in the driver) and 4096.")


@dataclass(frozen=True)
class SourceSpec:
    kind: str
    name: str
    config: Any


@dataclass(frozen=True)
class Recipe:
    file: Path
    sha256: str
    dataset: DatasetConfig
    policy: PolicyConfig
    sources: tuple[SourceSpec, ...]
    fetch: FetchConfig = field(default_factory=FetchConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        return self.file.parent

    def default_output(self) -> str:
        """Where `build` writes without --out: a local directory (a leading ~ expanded, as a
        shell would) or an fsspec URL."""
        output = self.dataset.output or f"shards/{self.dataset.name}"
        return output if is_url(output) else os.path.expanduser(output)


_URL_RE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*::)*[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(text: str) -> bool:
    """`scheme://...` (or an fsspec chain `a::b://...`); anything else is a local path. No
    fsspec import: a local output never loads it."""
    return bool(_URL_RE.match(text))


def _check_output(output: str) -> None:
    if not output.strip():
        # The OS reads "" as the current directory: never build into it by accident.
        raise ValueError('output = "" would build into the current directory; give the '
                         'output directory (e.g. output = "shards/my-dataset") or remove the '
                         "key for the default shards/<name>.")
    if not is_url(output):
        if output.startswith("~") and os.path.expanduser(output).startswith("~"):
            raise ValueError(f"output = {output!r}: {output.split('/')[0]} is no user's home "
                             "directory here; give the path in full.")
        return  # a local directory, checked when the build opens it
    from builder.publish import protocol_problem  # fsspec only when a URL is given

    problem = protocol_problem(output)
    if problem:
        raise ValueError(f"output = {output!r}: {problem}.")


# -- the User-Agent's contact ------------------------------------------------------------------
# Domains reserved for documentation (RFC 2606): a contact there reaches nobody.
PLACEHOLDER_DOMAINS = ("example.org", "example.com", "example.net")
# Kinds whose candidates are local files; every other kind sends requests to someone's server.
LOCAL_KINDS = frozenset({"folder"})
# Kinds whose operators require a contact to reach whoever runs the client, and why.
CONTACT_REQUIRED = {
    "wikimedia": "Wikimedia's User-Agent policy "
                 "(https://meta.wikimedia.org/wiki/User-Agent_policy) requires a way to reach "
                 "you and blocks clients without one",
}
CONTACT_EXAMPLE = 'user_agent = "cleanset/0.1 (https://your.site/contact; you@your.domain)"'
_UA_URL_RE = re.compile(r"https?://([^/\s;()<>]+)", re.IGNORECASE)
_UA_EMAIL_RE = re.compile(r"[^\s@;:()<>]+@([^\s@;()<>]+\.[A-Za-z]{2,})")


def user_agent_problem(user_agent: str) -> str | None:
    """Why `user_agent` gives the sites a build asks no way to reach whoever runs it
    ("no contact", or the placeholder domain it names), or None when it has a contact."""
    hosts = [h.rsplit("@", 1)[-1].split(":")[0] for h in _UA_URL_RE.findall(user_agent)]
    hosts += _UA_EMAIL_RE.findall(user_agent)
    if not hosts:
        return "has no contact (no URL and no e-mail)"
    for host in hosts:
        host = host.lower().rstrip(".")
        for domain in PLACEHOLDER_DOMAINS:
            if host == domain or host.endswith(f".{domain}"):
                return f"still names the placeholder {domain}, which reaches nobody"
    return None


def check_user_agent_contact(recipe: Recipe) -> str | None:
    """Refuse (UserError) a recipe whose sources require a contact the User-Agent lacks;
    otherwise the warning to show when network sources will be asked without one, or None.

    Kept apart from `load_recipe` so that loading a recipe (tests, other commands) stays
    free of it; `cleanset build` calls it before anything is created."""
    problem = user_agent_problem(recipe.fetch.user_agent)
    network = [s for s in recipe.sources if s.kind not in LOCAL_KINDS]
    if problem is None or not network:
        return None
    setting = f"[fetch] user_agent = {recipe.fetch.user_agent!r}"
    for spec in network:
        if spec.kind in CONTACT_REQUIRED:
            raise UserError(
                f"{recipe.file}: {setting} {problem}, and source {spec.name!r} (kind "
                f"{spec.kind}) needs a real contact: {CONTACT_REQUIRED[spec.kind]}. Set your "
                f"own URL or e-mail in [fetch], e.g. {CONTACT_EXAMPLE}. Nothing was built."
            )
    names = ", ".join(repr(s.name) for s in network)
    return (f"{recipe.file}: {setting} {problem}; the servers of source(s) {names} cannot "
            "reach you (the AIC's and Wikimedia's policies ask for a real contact, and "
            f"operators block clients they cannot reach). Set yours in [fetch], e.g. "
            f"{CONTACT_EXAMPLE}.")


SECTIONS = {"dataset", "policy", "sources", "fetch", "image", "dedup", "executor"}
# Sections other modules own; they validate their own tables (see `Recipe.extra`).
EXTENSION_SECTIONS = {"optout", "evidence", "recheck"}


def load_recipe(path: str | Path, *, recorded: bytes | None = None) -> Recipe:
    """The recipe in `path`; with `recorded`, the text a build recorded from `path` (since
    edited there), read as if it were still in `path`: its paths relative to that folder."""
    file = Path(path)
    if recorded is None:
        if not file.exists():
            raise UserError(f"{file}: recipe not found. Give the path to a recipe .toml file.")
        if not file.is_file():
            raise UserError(f"{file}: is not a file. Give the path to a recipe .toml file.")
    raw = file.read_bytes() if recorded is None else recorded
    try:
        # A UTF-8 byte order mark (Windows editors' "UTF-8 with BOM") is not TOML, but it
        # is no reason to refuse the file: tomllib would say "Invalid statement" at 1:1.
        table = tomllib.loads(raw.decode("utf-8").removeprefix("\ufeff"))
    except UnicodeDecodeError:
        raise UserError(f"{file}: is not UTF-8 text; a recipe must be a UTF-8 TOML file.") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{file}: not valid TOML: {exc}. Fix the syntax at that line.") from None
    unknown = sorted(set(table) - SECTIONS - EXTENSION_SECTIONS)
    if unknown:
        raise UserError(
            f"{file}: unknown section [{unknown[0]}]."
            f"{did_you_mean(unknown[0], SECTIONS | EXTENSION_SECTIONS)} Known sections: "
            f"{', '.join(sorted(SECTIONS | EXTENSION_SECTIONS))}."
        )
    if "dataset" not in table:
        raise UserError(f"{file}: missing [dataset] section with at least `name = \"...\"`.")
    dataset = from_table(DatasetConfig, table["dataset"], file=file, where="dataset")
    policy = from_table(PolicyConfig, table.get("policy", {}), file=file, where="policy")
    fetch = from_table(FetchConfig, table.get("fetch", {}), file=file, where="fetch")
    image = from_table(ImageConfig, table.get("image", {}), file=file, where="image")
    dedup = from_table(DedupConfig, table.get("dedup", {}), file=file, where="dedup")
    executor = from_table(ExecutorConfig, table.get("executor", {}), file=file, where="executor")
    # Everything that can be checked offline is checked here, before the build creates its
    # output directory: a typo must not leave a half-made dataset behind.
    _check_policy(policy, file)
    _check_exclusions(dedup, file)
    sources = _load_sources(table.get("sources"), file)
    from builder.optout import load_optout  # [optout] errors stop the build before any work

    load_optout(table.get("optout", {}), file=file, base=file.parent)
    from builder.evidence.archive import load_evidence_config
    from builder.recheck_log import load_recheck_config

    load_evidence_config(table.get("evidence", {}), file=file)
    load_recheck_config(table.get("recheck", {}), file=file)
    _preflight_sources(sources, file, fetch)  # the recipe's keys first, then the data files
    return Recipe(
        file=file.resolve(),
        sha256=hashlib.sha256(raw).hexdigest(),
        dataset=dataset,
        policy=policy,
        sources=sources,
        fetch=fetch,
        image=image,
        dedup=dedup,
        executor=executor,
        extra={k: table[k] for k in EXTENSION_SECTIONS if k in table},
    )


def _check_policy(policy: PolicyConfig, file: Path) -> None:
    """The policy named, and its file, load (the build loads it again, recording it)."""
    from builder.licensing import load_policy

    try:
        load_policy(policy.use, jurisdiction=policy.jurisdiction, base_dir=file.parent)
    except UserError as exc:
        raise UserError(f"{file}: {exc}") from None


def _check_exclusions(dedup: DedupConfig, file: Path) -> None:
    from builder.dedup import image_files

    for i, ex in enumerate(dedup.exclude):
        path = file.parent / ex
        if not path.exists():
            raise UserError(
                f"{file}: dedup.exclude[{i}] = {ex!r}: no such file or directory. "
                "Paths are relative to the recipe file."
            )
        if not image_files(path):
            # An evaluation set that excludes nothing would pass silently: say so instead.
            raise UserError(
                f"{file}: dedup.exclude[{i}] = {ex!r}: holds no image files (.jpg, .png, "
                ".webp, ...), so nothing would be excluded. Point it at the evaluation images."
            )


def _preflight_sources(specs: tuple[SourceSpec, ...], file: Path, fetch: FetchConfig) -> None:
    """Sources that can read their input offline (table, folder) read enough of it now to
    refuse a bad or empty one, naming the file, before anything is written."""
    context = SourceContext(recipe_file=file, base_dir=file.parent, fetch=fetch)
    for spec in specs:
        module = source_module(spec.kind, file=str(file), where="sources")
        if hasattr(module.SOURCE, "preflight"):
            module.SOURCE(spec.name, spec.config, context).preflight()


def _check_recipe_licence(licence: Any, file: Path, where: str) -> None:
    """A source's `license` read as the licence gate reads it: one it does not recognise
    would refuse every candidate of the source (license_unrecognized) in a build that
    "finishes" and is then "already complete"."""
    if not isinstance(licence, str) or not licence.strip():
        return
    from builder.licensing import load_catalogue, read_claims
    from builder.records import Evidence

    claims = read_claims((Evidence("recipe:license", licence),))
    if claims and all(c.spdx for c in claims):
        return
    import difflib

    known: dict[str, str] = {}  # upper-cased id, and id without its version -> the id
    for spdx in load_catalogue().entries:
        known.setdefault(spdx.upper(), spdx)
        known.setdefault(re.sub(r"-\d.*$", "", spdx).upper(), spdx)
    close = difflib.get_close_matches(licence.strip().upper(), list(known), n=1, cutoff=0.6)
    hint = f" Did you mean {known[close[0]]!r}?" if close else ""
    raise UserError(f"{file}: {where}.license = {licence!r} is not a licence cleanset "
                    f"recognises, so every image of this source would be refused.{hint} "
                    "Give an SPDX id (CC0-1.0, CC-BY-4.0), a Creative Commons URL or name; "
                    f"`cleanset licenses check {licence!r}` shows how a string is read.")


def _load_sources(raw: Any, file: Path) -> tuple[SourceSpec, ...]:
    if raw is None:
        raise UserError(f"{file}: no [[sources]]. Add at least one, e.g. kind = \"folder\".")
    if not isinstance(raw, list) or not raw:
        raise UserError(f"{file}: `sources` must be an array of tables ([[sources]]).")
    specs: list[SourceSpec] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        where = f"sources[{i}]"
        if not isinstance(entry, dict):
            raise UserError(f"{file}: {where} must be a table.")
        entry = dict(entry)
        kind = entry.pop("kind", None)
        if not isinstance(kind, str):
            raise UserError(f"{file}: {where}.kind is missing; say which kind of source it is.")
        name = entry.pop("name", kind if kind not in seen else f"{kind}-{i}")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise UserError(
                f"{file}: {where}.name = {name!r} must be 1-64 characters of a-z, 0-9, '_', '-'."
            )
        if name in {s.name for s in specs}:
            raise UserError(f"{file}: {where}.name = {name!r} is used twice; names must differ.")
        seen.add(kind)
        module = source_module(kind, file=str(file), where=where)
        config = from_table(module.Config, entry, file=file, where=where)
        check = getattr(config, "check", None)
        if check is not None:
            config = check(file=file, base=file.parent, where=where)
        _check_recipe_licence(getattr(config, "license", None), file, where)
        specs.append(SourceSpec(kind=kind, name=name, config=config))
    return tuple(specs)
