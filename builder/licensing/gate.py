"""The licence gate: a candidate's evidence + a policy -> LicenseDecision or Rejection.

Runs on metadata only, before any download, and never touches the network.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from license_expression import AND, OR, ExpressionError, LicenseSymbol, LicenseWithExceptionSymbol

from builder.licensing.catalogue import Catalogue, LicenseInfo, load_catalogue
from builder.licensing.normalise import (
    _VERSION_RE,
    clean,
    is_empty,
    normalise,
    parse_expression,
    spdx_exceptions,
)
from builder.licensing.policy import Policy, refusal, why_not
from builder.records import Evidence, LicenseDecision, Reason, Rejection


@dataclass(frozen=True)
class Claim:
    """One evidence field read as a licence claim; `spdx` is None when unrecognised."""

    field: str
    value: str
    text: str  # what was normalised (Openverse pairs are joined)
    spdx: str | None

    def quote(self) -> str:
        return f"{self.field}={self.text!r}"


def read_claims(evidence: tuple[Evidence, ...], cat: Catalogue | None = None) -> list[Claim]:
    """The claims among the evidence: informational fields and empty values are skipped."""
    cat = cat or load_catalogue()
    by_field = {e.field.lower(): str(e.value) for e in evidence}
    claims = []
    for ev in evidence:
        value = str(ev.value)
        spec = cat.field_spec(ev.field)
        key = " ".join(clean(value).lower().split())
        if spec.informational or is_empty(value) or key in spec.refuse_unlicensed:
            continue  # a source's "not public domain" flag is no licence claim either
        text = value
        if spec.pair:
            paired = by_field.get(spec.pair.lower())
            has_version = any(_VERSION_RE.match(t) for t in key.split())
            if paired and not is_empty(paired) and not has_version:
                text = f"{clean(value)} {clean(paired)}"
        if spec.pair:  # the code as joined with its version: "cc0 1.0", never "cc0 nc"
            key = " ".join(clean(text).lower().split())
        head, _, rest = key.partition(" ")
        if key in spec.values or (spec.pair and head in spec.values and _VERSION_RE.match(rest)):
            spdx: str | None = spec.values.get(key) or spec.values[head]
        elif spec.exclusive:
            spdx = None
        else:
            spdx = normalise(spec.prefix + text if spec.prefix else text, cat)
        claims.append(Claim(ev.field, value, text, spdx))
    return claims


def decide(evidence: tuple[Evidence, ...], policy: Policy,
           catalogue: Catalogue | None = None) -> LicenseDecision | Rejection:
    """Every claim must be recognised and agree; then the policy admits it or says why not.

    Strict on purpose: one recognised and one unrecognised claim is `license_unrecognized`
    (we cannot tell that the unreadable one does not restrict the work)."""
    cat = catalogue or load_catalogue()
    vetoed = source_refusal(evidence, cat, unlicensed=False)
    if vetoed is not None:
        return Rejection(Reason.LICENSE_NOT_ALLOWED, vetoed)
    claims = read_claims(evidence, cat)
    if not claims:
        stated = source_refusal(evidence, cat, unlicensed=True)
        if stated is not None:
            return Rejection(Reason.LICENSE_NOT_ALLOWED, stated)
        empty = sorted({e.field for e in evidence if is_empty(str(e.value))})
        said = sorted({e.field for e in evidence if not is_empty(str(e.value))})
        parts = ([f"informational fields only: {', '.join(said)}"] if said else []) + \
            ([f"empty: {', '.join(empty)}"] if empty else [])
        where = f" ({'; '.join(parts)})" if parts else ""
        return Rejection(Reason.LICENSE_MISSING, f"no licence claim in the metadata{where}")
    unknown = [c for c in claims if c.spdx is None]
    if unknown:
        others = [c.quote() for c in claims if c.spdx is not None]
        detail = f"{unknown[0].quote()} names no licence in the catalogue"
        if others:
            detail += f" (alongside {', '.join(others)}; every claim must be recognised)"
        return Rejection(Reason.LICENSE_UNRECOGNIZED, detail)
    first = claims[0]
    for other in claims[1:]:
        if other.spdx != first.spdx:
            return Rejection(Reason.LICENSE_CONFLICT,
                             f"{first.quote()} means {first.spdx} but {other.quote()} "
                             f"means {other.spdx}")
    assert first.spdx is not None
    expr = first.spdx
    verdict = cat.remember(("admit", expr, policy), lambda: _admit(expr, policy, cat))
    if isinstance(verdict, Rejection):
        return verdict
    return replace(verdict, evidence=tuple(evidence))


def source_refusal(evidence: tuple[Evidence, ...], cat: Catalogue, *,
                   unlicensed: bool) -> str | None:
    """The detail of a refusal the source itself states (licenses/fields.toml `refuse`, or
    with `unlicensed` `refuse_unlicensed`), in the source's own words and no more: a
    not-public-domain flag is not read as "all rights reserved". Any `quoted` field the
    record carries (a copyright notice) is quoted after it."""
    for ev in evidence:
        spec = cat.field_spec(ev.field)
        refusals = spec.refuse_unlicensed if unlicensed else spec.refuse
        value = clean(str(ev.value))
        template = refusals.get(" ".join(value.lower().split()))
        if template is None:
            continue
        notices = [f"{_short_name(e.field)}={clean(str(e.value))!r}" for e in evidence
                   if cat.field_spec(e.field).quoted and not is_empty(str(e.value))]
        detail = template.replace("{value}", value)
        return f"{detail}; {', '.join(notices)}" if notices else detail
    return None


def _short_name(field: str) -> str:
    """`aic:copyright_notice` -> `copyright_notice`: the name the source itself uses."""
    return field.rsplit(":", 1)[-1]


def _admit(expr: str, policy: Policy, cat: Catalogue) -> LicenseDecision | Rejection:
    """The verdict for one normalised expression (evidence is filled in by the caller)."""
    try:
        tree = parse_expression(expr)
    except ExpressionError:
        return Rejection(Reason.LICENSE_UNRECOGNIZED, f"{expr!r} is not a valid expression")
    options = list(tree.args) if isinstance(tree, OR) else [tree]
    admitted = [o for o in options if _admitted(o, policy, cat)]
    if not admitted:
        # The claim was understood: the refusal names the id, so candidates.parquet can
        # count what was turned away by licence.
        return Rejection(Reason.LICENSE_NOT_ALLOWED, _why(options, expr, policy, cat),
                         license=expr)
    best = max(admitted, key=lambda o: _permissiveness(o, cat))  # max keeps the first of ties
    return _decision(best, policy, cat, chosen_from=expr if len(options) > 1 else None)


def is_admitted(spdx_id: str, policy: Policy, catalogue: Catalogue | None = None) -> bool:
    """Whether a recorded licence (id or expression) passes the policy; for `verify`."""
    cat = catalogue or load_catalogue()
    try:
        return _admitted(parse_expression(spdx_id), policy, cat)
    except (ExpressionError, AttributeError, TypeError):
        return False


def _admitted(node: object, policy: Policy, cat: Catalogue) -> bool:
    if isinstance(node, LicenseWithExceptionSymbol):
        # A dataset an older cleanset built may record "CC-BY-4.0 WITH NC": verify and the
        # report name it, as the normaliser now refuses it.
        if node.exception_symbol.key.lower() not in spdx_exceptions():
            return False
        node = node.license_symbol
    if isinstance(node, LicenseSymbol):
        info = cat.entries.get(node.key)
        return info is not None and why_not(info, policy) is None
    if isinstance(node, AND):
        return all(_admitted(a, policy, cat) for a in node.args)
    if isinstance(node, OR):
        return any(_admitted(a, policy, cat) for a in node.args)
    return False


def _why(options: list[object], expr: str, policy: Policy, cat: Catalogue) -> str:
    if len(options) == 1 and len(_infos(options[0], cat)) == 1:
        reason = why_not(_infos(options[0], cat)[0], policy)
        if reason:
            return reason
    parts = []
    for info in dict.fromkeys(i for o in options for i in _infos(o, cat)):
        reason = refusal(info, policy)
        if reason:
            parts.append(f"{info.id}: {reason}")
    admits = ", ".join(policy.families) or "no families"
    return f"{expr} is not admitted by policy {policy.name} (admits {admits}): " + "; ".join(parts)


def _infos(node: object, cat: Catalogue) -> list[LicenseInfo]:
    if isinstance(node, LicenseWithExceptionSymbol):
        node = node.license_symbol
    if isinstance(node, LicenseSymbol):
        info = cat.entries.get(node.key)
        return [info] if info else []
    return [i for arg in getattr(node, "args", ()) for i in _infos(arg, cat)]


def _permissiveness(node: object, cat: Catalogue) -> tuple[bool, bool, bool, bool]:
    infos = _infos(node, cat)
    return (all(i.commercial for i in infos), all(i.derivatives for i in infos),
            not any(i.share_alike for i in infos), not any(i.attribution_required for i in infos))


def _decision(node: object, policy: Policy, cat: Catalogue,
              chosen_from: str | None) -> LicenseDecision:
    infos = _infos(node, cat)
    spdx = str(node.render("{symbol.key}")) if hasattr(node, "render") else str(node)
    if len(infos) == 1:
        url, name = infos[0].url, infos[0].name
        if isinstance(node, LicenseWithExceptionSymbol):
            name = f"{name} with {node.exception_symbol.key}"
    else:
        url, name = None, " AND ".join(i.name for i in infos)
    return LicenseDecision(
        spdx=spdx, url=url, name=name,
        attribution_required=any(i.attribution_required for i in infos),
        share_alike=any(i.share_alike for i in infos),
        evidence=(), policy=policy.name, chosen_from=chosen_from)
