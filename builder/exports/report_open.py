"""What is still open before a licensing lead signs a dataset off: each a sentence of the
report's sign-off section, saying what is unresolved and the command that resolves it.

The page once answered "Rechecked: 0 drifted, 0 would now be refused" for a recheck that
could not reach a host, said nothing on the page of an interrupted takedown (only a note on
stderr), and nothing of a build stopped at `--limit`, of samples still in the dataset that
the last recheck would refuse, or of a paper edited since cleanset wrote it. Each of those
is listed here; an empty list is the only case in which the page says nothing is open.
"""

from __future__ import annotations

import html
from typing import Any

from builder.display import visible
from builder.exports.report_data import ReportData, transient_reasons
from builder.recheck_log import days_between


def open_items(data: ReportData) -> list[str]:
    """Each unresolved matter as an HTML sentence, the most serious first."""
    items: list[str] = []
    out = _e(data.out)
    if data.pending_takedown:
        items.append(
            f"<b>A takedown is unfinished</b>: {_e(data.pending_takedown)}"
            + _pending_what(data.pending_record) + " was interrupted "
            "(<code>.takedown.json</code> is there), so shards, ledger and papers may each "
            "show the version before it or after it, and this page may describe the version "
            f"before it. Run <code>cleanset takedown {out}</code> to finish it, then report "
            "again.")
    for build in data.builds:
        if build.finished_at is None:
            items.append(f"<b>Build {build.build} has not finished</b> (interrupted, or "
                         "still running): what its sources hold beyond what it reached is "
                         "not in the dataset. Run the same <code>cleanset build</code> to "
                         "finish it.")
        elif not build.exhausted:
            items.append(f"<b>Build {build.build} stopped before reading its sources to the "
                         "end</b> (<code>--limit</code>): the dataset is part of what its "
                         "recipe describes. The same <code>cleanset build</code> without "
                         "<code>--limit</code> continues it.")
    items.extend(_policy_items(data))
    items.extend(_paper_items(data))
    items.extend(_recheck_items(data))
    transient = sum(n for r, n in data.reasons.items() if r in transient_reasons())
    if transient:
        items.append(f"<b>{transient:,} candidates were not decided</b>: the network failed "
                     "(timeouts, server errors), which is neither an admission nor a "
                     "refusal. Running the same build again retries them (see Refusals, "
                     "transient).")
    if data.recipe_claim_only:
        items.append(
            f"<b>{data.recipe_claim_only:,} images rest only on the recipe's own licence "
            "claim</b> (<code>recipe:license</code>: the recipe's author stated the licence "
            "for every row or file; the source itself stated none): check that statement "
            "before signing. Their <code>.json</code> has <code>license.evidence</code> with "
            "that one claim.")
    return items


def _pending_what(record: dict[str, Any]) -> str:
    """What an interrupted takedown removes, when and why: the History section cannot say
    (takedowns.jsonl gets its line only once it is finished)."""
    if not record:
        return ""
    keys = record.get("keys", [])
    selectors = "; ".join(f"{_e(kind)} {_e(', '.join(values))}"
                          for kind, values in record.get("selectors", {}).items() if values)
    return (f" (started {_e(record.get('when', '?'))}, removing {len(keys):,} images"
            + (f" by {selectors}" if selectors else "")
            + f"; reason: {_e(record.get('reason', ''))})")


def _policy_items(data: ReportData) -> list[str]:
    from builder.licensing import Policy, is_admitted

    policies = {b.build: b.policy for b in data.builds}
    refused: dict[str, int] = {}
    for (build, lic), n in data.licences_by_build.items():
        policy = policies.get(build)
        if policy is None or not is_admitted(lic, Policy.from_json(policy)):
            refused[lic] = refused.get(lic, 0) + n
    if not refused:
        return []
    listed = ", ".join(f"<code>{_e(lic)}</code> ({n:,})" for lic, n in sorted(refused.items()))
    return [f"<b>{sum(refused.values()):,} images carry a licence the policy of their build "
            f"does not admit</b>: {listed}. <code>cleanset verify {_e(data.out)}</code> names "
            "each; take them down before signing."]


def _paper_items(data: ReportData) -> list[str]:
    missing = [p.name for p in data.papers if p.actual is None]
    changed = [p.name for p in data.papers
               if p.actual is not None and p.recorded is not None and p.actual != p.recorded]
    items = []
    if missing:
        items.append(f"<b>Papers missing</b>: {_codes(missing)}. Running the same build "
                     "again writes them.")
    if changed:
        items.append(f"<b>Papers changed since cleanset wrote them</b>: {_codes(changed)} "
                     "(their sha256 is not the one the ledger recorded: edited or damaged). "
                     "Running the same build again rewrites them from the ledger.")
    return items


def _recheck_items(data: ReportData) -> list[str]:
    from builder.recheck_log import describe_scope

    items = []
    running = data.running_recheck
    if running is not None:
        found = data.running_counts.get(True, 0)
        so_far = (f" It has already found <b>{found:,} images still in the dataset that "
                  "would now be refused</b>: "
                  + _findings(data.running_open, found, refuse=True)
                  + f"Finished with <code>cleanset recheck {_e(data.out)} --apply --reason "
                  "TEXT</code>, it takes them down." if found else "")
        items.append(f"<b>Recheck {running.recheck} has not finished</b> ({running.done:,} of "
                     f"{running.total:,} samples judged): run <code>cleanset recheck "
                     f"{_e(data.out)}</code> again to finish it." + so_far)
    if data.earlier_refused:
        items.append(f"<b>{data.earlier_refused:,} images still in the dataset would now be "
                     "refused by an earlier recheck, and no recheck since asked about them</b> "
                     "(the later ones covered part of the dataset, or it was abandoned for "
                     "one of another scope): "
                     + _findings(data.earlier_open, data.earlier_refused, refuse=True)
                     + f" <code>cleanset evidence {_e(data.out)} KEY</code> shows the answer "
                     f"each was found in; <code>cleanset recheck {_e(data.out)} --apply "
                     "--reason TEXT</code> asks every source again and takes down what it "
                     "still finds.")
    if not data.rechecks:
        # On build day every sample was checked by its build: a lead may sign then. What
        # goes stale is the sources' word, so only an old first build is an open matter.
        built = min((b.finished_at for b in data.builds if b.finished_at), default=None)
        age = days_between(built, data.generated_at)
        if age is None or age > data.recheck_max_age:
            since = f"built {age:,} days ago" if age is not None else "built"
            items.append(f"<b>Never rechecked</b> ({since}): whether the sources still state "
                         "the same licences, still hold the files and still consent is "
                         "unknown since the build. Run <code>cleanset recheck "
                         f"{_e(data.out)}</code>.")
        return items
    last = data.rechecks[-1]
    # Dated by its start: a recheck resumed weeks later holds verdicts from its first day.
    age = days_between(last.started_at, data.generated_at)
    if age is not None and age > data.recheck_max_age:
        items.append(f"<b>The last recheck is {age:,} days old</b> (started "
                     f"{_e(last.started_at)}, finished {_e(last.finished_at)}; older than "
                     f"{data.recheck_max_age:,} days, the recipe's <code>[recheck] "
                     f"max_age_days</code>): run <code>cleanset recheck {_e(data.out)}</code> "
                     "again.")
    if last.scope.get("sources") or last.scope.get("sample") is not None:
        items.append(f"<b>The last recheck covered part of the dataset</b> "
                     f"({_e(describe_scope(last.scope))}: {last.total:,} samples).")
    if data.added_since_recheck:
        items.append(f"<b>{data.added_since_recheck:,} images were added after the last "
                     f"recheck</b> (of version {last.version}) and were never rechecked.")
    refused = data.recheck_counts.get(True, 0)
    unreachable = data.recheck_counts.get(False, 0)
    if refused:
        items.append(f"<b>{refused:,} images still in the dataset would now be refused"
                     f"</b> (recheck {last.recheck}, {_e(last.finished_at)}): "
                     + _findings(data.recheck_open, refused, refuse=True)
                     + f" <code>cleanset evidence {_e(data.out)} KEY</code> shows the answer "
                     "each was found in (a recheck by a cleanset before 2026-12-07 archived "
                     "none: its finding alone); "
                     f"<code>cleanset recheck {_e(data.out)} --apply --reason TEXT</code> "
                     + ("(the command this recheck was run with, stopped before its "
                        "takedown) takes them down without asking the sources again."
                        if data.apply_owed else "takes them down."))
    if unreachable:
        items.append(f"<b>{unreachable:,} images could not be checked</b> by recheck "
                     f"{last.recheck} (unreachable: nothing is known of them since they were "
                     "last seen; not an all-clear): "
                     + _findings(data.recheck_open, unreachable, refuse=False)
                     + f" Run <code>cleanset recheck {_e(data.out)}</code> again.")
    return items


def _findings(found: list[Any], count: int, *, refuse: bool) -> str:
    findings = [f for f in found if f.refuse == refuse]
    shown = "".join(f"<li><code>{_e(f.key)}</code> {_e(f.outcome)}"
                    + (f" (recheck {f.recheck})" if f.recheck is not None else "")
                    + f": {_e(_short(f.detail))}</li>" for f in findings)
    more = count - len(findings)
    tail = (f"<li>…and {more:,} more (<code>recheck_results</code> in the ledger)</li>"
            if more > 0 else "")
    return f"<ul>{shown}{tail}</ul>"


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _codes(values: list[str]) -> str:
    return ", ".join(f"<code>{_e(v)}</code>" for v in values)


def _e(value: Any) -> str:
    # Every string on the page goes through here, sources' text included: a control or
    # bidi-override character is shown as its escape, not rendered (visible).
    return html.escape(visible(str(value)))
