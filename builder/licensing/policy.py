"""Policies (licenses/policies/*.toml): which catalogue entries a build admits, and why not.

A policy admits an entry when its `family` is listed (or its id is in `ids`), it is not in
`exclude`, and — for statements valid in one jurisdiction only — the policy has
`scoped = true` and the recipe declares that same jurisdiction.
"""

from __future__ import annotations

import difflib
import hashlib
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from builder.errors import UserError
from builder.licensing.catalogue import Catalogue, LicenseInfo, licenses_dir, load_catalogue

_KEYS = {"name", "description", "families", "ids", "exclude", "scoped"}


@dataclass(frozen=True)
class Policy:
    name: str
    description: str = ""
    families: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    scoped: bool = False
    jurisdiction: str | None = None
    source: str | None = None  # "licenses/policies/NAME.toml", or the path the recipe gave
    sha256: str | None = None  # of the policy file's bytes: shows when a policy was edited

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description,
            "families": list(self.families), "ids": list(self.ids),
            "exclude": list(self.exclude), "scoped": self.scoped,
            "jurisdiction": self.jurisdiction, "source": self.source, "sha256": self.sha256,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Policy:
        """The policy exactly as recorded in a build (verify re-checks against this)."""
        return cls(name=data["name"], description=data.get("description", ""),
                   families=tuple(data.get("families", ())), ids=tuple(data.get("ids", ())),
                   exclude=tuple(data.get("exclude", ())), scoped=bool(data.get("scoped")),
                   jurisdiction=data.get("jurisdiction"), source=data.get("source"),
                   sha256=data.get("sha256"))


def policies_dir() -> Path:
    return licenses_dir() / "policies"


def known_policies() -> list[str]:
    return sorted(p.stem for p in policies_dir().glob("*.toml"))


def load_policy(use: str, *, jurisdiction: str | None = None,
                base_dir: Path | None = None, named_by: str = "[policy] use =") -> Policy:
    """`use` names a policy in licenses/policies/ or is a path to a policy TOML (relative to
    base_dir, the recipe's folder; else to the current directory). `jurisdiction` comes from
    the recipe's [policy] table. `named_by` is where the user wrote `use`, for the error."""
    path = _resolve(use, base_dir, named_by)
    try:
        raw = path.read_bytes()
        data = tomllib.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"policy file {path}: cannot read it ({exc}); fix the TOML.") from None
    unknown = set(data) - _KEYS
    if unknown:
        raise UserError(f"policy file {path}: unknown key(s) {sorted(unknown)}; "
                        f"allowed: {sorted(_KEYS)}.")
    # Recorded in every build: machine-independent, so identical inputs give identical shards.
    shipped = path.parent == policies_dir() and path.stem == use
    source = f"licenses/policies/{path.name}" if shipped else use
    policy = replace(_build(data, path, jurisdiction), source=source,
                     sha256=hashlib.sha256(raw).hexdigest())
    _check_references(policy, path, load_catalogue())
    return policy


def _resolve(use: str, base_dir: Path | None, named_by: str) -> Path:
    named = policies_dir() / f"{use}.toml"
    if "/" not in use and "\\" not in use and not use.endswith(".toml") and named.is_file():
        return named
    path = Path(use).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if path.is_file():
        return path
    close = difflib.get_close_matches(use, known_policies(), n=1)
    guess = f" Did you mean {close[0]!r}?" if close else ""
    relative = "the recipe" if base_dir is not None else "the current directory"
    raise UserError(
        f"{named_by} {use!r}: no such policy.{guess} Use one of "
        f"{', '.join(known_policies())} (files in {policies_dir()}), or a path to a policy "
        f"TOML relative to {relative}.")


def _build(data: dict[str, Any], path: Path, jurisdiction: str | None) -> Policy:
    def strings(key: str) -> tuple[str, ...]:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UserError(f"policy file {path}: `{key}` must be a list of strings.")
        return tuple(value)

    scoped = data.get("scoped", False)
    if not isinstance(scoped, bool):
        raise UserError(f"policy file {path}: `scoped` must be true or false.")
    return Policy(
        name=str(data.get("name", path.stem)), description=str(data.get("description", "")),
        families=strings("families"), ids=strings("ids"), exclude=strings("exclude"),
        scoped=scoped, jurisdiction=jurisdiction.strip().upper() or None if jurisdiction else None)


def _check_references(policy: Policy, path: Path, cat: Catalogue) -> None:
    families = {e.family for e in cat.entries.values()}
    for fam in policy.families:
        if fam not in families:
            raise UserError(f"policy file {path}: family {fam!r} is not in the catalogue; "
                            f"known families: {', '.join(sorted(families))}.")
    for lid in policy.ids + policy.exclude:
        if lid not in cat.entries:
            raise UserError(f"policy file {path}: id {lid!r} is not in the catalogue "
                            "(licenses/*.toml); check its spelling.")


def entry_admitted(info: LicenseInfo, policy: Policy) -> bool:
    return why_not(info, policy) is None


def why_not(info: LicenseInfo, policy: Policy) -> str | None:
    """None when admitted; else a sentence for the ledger naming the id and the reason."""
    reason = refusal(info, policy)
    if reason is None:
        return None
    return f"{info.id} ({info.short}): {reason}; policy {policy.name} admits " \
           f"{', '.join(policy.families) or 'no families'}"


def refusal(info: LicenseInfo, policy: Policy) -> str | None:
    """The short reason a policy refuses an entry ("NonCommercial", "holds in US only..."),
    or None when it admits it."""
    if info.id in policy.exclude:
        return "excluded by the policy"
    listed = info.id in policy.ids or info.family in policy.families
    if listed and info.jurisdiction:
        if not policy.scoped:
            return (f"holds in {info.jurisdiction} only and the policy admits no "
                    "jurisdiction-scoped statements")
        if policy.jurisdiction != info.jurisdiction:
            return (f"holds in {info.jurisdiction} only; the recipe declares jurisdiction "
                    f"{policy.jurisdiction or 'none'} (set [policy] jurisdiction = "
                    f"\"{info.jurisdiction}\" if the dataset is used only there)")
    return None if listed else _traits(info)


def _traits(info: LicenseInfo) -> str:
    traits = []
    if not info.commercial:
        traits.append("NonCommercial")
    if not info.derivatives:
        traits.append("NoDerivatives")
    if info.share_alike:
        traits.append("ShareAlike")
    if info.kind in ("statement", "assertion") and info.family != "public-domain":
        traits.append(f"a rights statement ({info.family}), not a licence")
    return ", ".join([*traits, f"family {info.family} not admitted"])
