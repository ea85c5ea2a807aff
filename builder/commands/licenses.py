"""`cleanset licenses`: list the catalogue and policies; `licenses check STRING` explains how a
licence claim normalises and what every policy decides about it, and why; `licenses policies`
prints docs/policies.md.

Exit status: 0, except `check` on a string that names no licence in the catalogue (1), and a
`--policy` that does not load or a `--family` the catalogue does not have (2, naming it).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any

from builder.errors import UserError
from builder.licensing import (
    Policy,
    decide,
    known_policies,
    license_info,
    load_catalogue,
    load_policy,
    read_claims,
)
from builder.records import Evidence, LicenseDecision


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "licenses", help="list the licence catalogue and policies, or check a licence string",
        description="Without an action: list the catalogue and the policies.")
    p.set_defaults(func=run, licenses_action="list", only_reads=True)
    actions = p.add_subparsers(dest="licenses_action")
    lst = actions.add_parser("list", help="list catalogue entries and policies")
    lst.add_argument("--family", help="only entries of this family (e.g. CC-BY-SA, public-domain)")
    lst.add_argument("--json", action="store_true", help="one JSON object per entry")
    chk = actions.add_parser("check", help="how a licence string normalises, per policy")
    chk.add_argument("string", help='the claim as a source states it, e.g. "CC BY-SA 4.0"')
    chk.add_argument("--field", default="license",
                     help="the evidence field it came from (default: license), e.g. flickr:license")
    chk.add_argument("--jurisdiction", help='the recipe\'s [policy] jurisdiction, e.g. "US"')
    chk.add_argument("--policy", action="append", dest="policies", metavar="NAME_OR_PATH",
                     help="check only these policies (repeatable; default: every shipped one)")
    chk.add_argument("--json", action="store_true", help="print the result as JSON")
    actions.add_parser(
        "policies", help="what each shipped policy admits, as Markdown (docs/policies.md)",
        description="Print, per shipped policy, every catalogue entry it admits with example "
                    "claims: the source of docs/policies.md.")


def run(args: argparse.Namespace) -> int:
    action = getattr(args, "licenses_action", "list")
    if action == "check":
        return _check(args)
    if action == "policies":
        from builder.licensing.policy_doc import policies_markdown

        print(policies_markdown(), end="")
        return 0
    return _list(args)


def _list(args: argparse.Namespace) -> int:
    cat = load_catalogue()
    family = getattr(args, "family", None)
    if family:
        family = _known_family(family, {e.family for e in cat.entries.values()})
    entries = [e for e in cat.entries.values() if not family or e.family == family]
    if getattr(args, "json", False):
        for e in entries:
            print(json.dumps(e.to_json(), sort_keys=True))
        return 0
    families = Counter(e.family for e in entries)
    print(f"catalogue: {len(entries)} entries from {', '.join(cat.files)}")
    for fam, count in sorted(families.items()):
        print(f"  {fam:<26} {count:>4}")
    for e in sorted(entries, key=lambda e: e.id.lower()):
        scope = f" [{e.jurisdiction} only]" if e.jurisdiction else ""
        print(f"{e.id:<44} {e.family:<22} {e.short}{scope}")
    print("\npolicies:")
    for name in known_policies():
        pol = load_policy(name)
        print(f"  {name:<26} {pol.description}")
    return 0


def _known_family(family: str, families: set[str]) -> str:
    """The catalogue's spelling of `family`: an unknown one listed nothing, exit 0, as if
    the catalogue held no such licence."""
    by_lower = {f.lower(): f for f in families}
    if family.lower() in by_lower:
        return by_lower[family.lower()]
    from builder.config import did_you_mean

    raise UserError(f"licenses list --family {family!r}: no such family in the catalogue."
                    f"{did_you_mean(family, sorted(families))} Families: "
                    f"{', '.join(sorted(families))}.")


def _check(args: argparse.Namespace) -> int:
    evidence = (Evidence(args.field, args.string),)
    claims = read_claims(evidence)
    spdx = claims[0].spdx if claims else None
    # A policy the user named that does not load is their mistake, exit 2 naming it: as a
    # verdict ("bad_policy", exit 0) it read like that policy refusing the licence.
    policies = [load_policy(name, jurisdiction=args.jurisdiction, named_by="licenses check --policy")
                for name in args.policies or known_policies()]
    verdicts = [_verdict(evidence, policy) for policy in policies]
    info = license_info(spdx) if spdx else None
    result: dict[str, Any] = {
        "input": args.string, "field": args.field, "normalised": spdx,
        "claim": bool(claims), "license": info.to_json() if info else None,
        "policies": verdicts,
    }
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        _print_check(result)
    return 0 if spdx else 1


def _verdict(evidence: tuple[Evidence, ...], policy: Policy) -> dict[str, Any]:
    outcome = decide(evidence, policy)
    if isinstance(outcome, LicenseDecision):
        detail = f"admitted as {outcome.spdx}"
        if outcome.chosen_from:
            detail += f" (chosen from {outcome.chosen_from})"
        return {"policy": policy.name, "admitted": True, "reason": None, "detail": detail}
    return {"policy": policy.name, "admitted": False, "reason": str(outcome.reason),
            "detail": outcome.detail}


def _print_check(r: dict[str, Any]) -> None:
    print(f"input:      {r['input']!r} (field {r['field']})")
    if not r["claim"]:
        print("normalised: - (an informational field or an empty value: not a licence claim)")
    else:
        print(f"normalised: {r['normalised'] or '- (not recognised)'}")
    lic = r["license"]
    if lic:
        yes = {True: "yes", False: "no"}
        print(f"name:       {lic['name']}")
        print(f"url:        {lic['url'] or '-'}")
        print(f"family:     {lic['family']} ({lic['kind']})")
        print(f"terms:      commercial {yes[lic['commercial']]}, derivatives "
              f"{yes[lic['derivatives']]}, attribution {yes[lic['attribution_required']]}, "
              f"share-alike {yes[lic['share_alike']]}, jurisdiction "
              f"{lic['jurisdiction'] or 'any'}")
    width = max((len(v["policy"]) for v in r["policies"]), default=0)
    for v in r["policies"]:
        verdict = "admitted" if v["admitted"] else v["reason"]
        print(f"policy {v['policy']:<{width}}  {verdict}: {v['detail']}")
