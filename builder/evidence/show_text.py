"""`cleanset evidence` as text: a candidate, the recheck's finding, then per record its
role, file, offset and id, the request line and headers, the WARC-Date, the status line,
the response headers and the body (JSON pretty-printed, a long one cut; an image's payload
is in its shard, so its digest is shown, beside the sample's)."""

from __future__ import annotations

import json
from collections.abc import Iterator

from builder.evidence.show import CandidateEvidence, Finding, Found
from builder.evidence.shown import Binary, Body, Json, Revisit, Shown, Text

BODY_LIMIT = 200_000  # characters of a text body shown; the rest is counted, not printed
BUILD_HEADING = "  the build's records, which admitted it:"


def candidate_lines(evidence: CandidateEvidence) -> Iterator[str]:
    """The lines of one candidate, each record's as it is read."""
    cand, finding = evidence.found, evidence.finding
    yield f"candidate {cand.candidate_id} (build {cand.build}, seq {cand.seq}): {_outcome(cand)}"
    yield f"  url: {cand.url}"
    # The build's records follow a recheck's under a heading: shown alone, after a finding,
    # they read as if they were the recheck's.
    heading_due = finding is not None and not _unarchived(finding)
    if finding is not None:
        yield from _finding_lines(finding)
    any_build_record = False
    for shown in evidence.records:
        if heading_due and not shown.link.role.startswith("recheck "):
            yield from ("", BUILD_HEADING)
            heading_due = False
        any_build_record |= not shown.link.role.startswith("recheck ")
        yield ""
        yield from record_lines(shown)
    if heading_due:
        yield from ("", BUILD_HEADING)
    if not any_build_record:
        yield _no_record_line(cand, evidence.build_archived)


def _outcome(cand: Found) -> str:
    if cand.status == "accepted":
        return f"accepted as sample {cand.key}"
    if cand.status == "removed":
        return f"accepted as sample {cand.key}, since removed ({cand.detail})"
    return f"rejected, {cand.reason}: {cand.detail}"


def _unarchived(finding: Finding) -> bool:
    """A refusal whose answers no record holds: a recheck archives the answer behind every
    refusal since recheck_archive.py, so it was made by a cleanset before that."""
    return (finding.applied_by is not None or finding.refuse) and not finding.archived


def _finding_lines(finding: Finding) -> Iterator[str]:
    # Which cleanset decided the finding, beside its date (unsaid for a recheck by a
    # cleanset that did not record it).
    when = (f"{finding.checked_at}, by {finding.ran_by}" if finding.ran_by
            else f"{finding.checked_at}")
    if finding.applied_by is None:
        verdict = "a build today would refuse it" if finding.refuse else "not a refusal"
        which = "the last recheck" if finding.latest else "the last recheck to ask about it"
        yield (f"  {which}, {finding.recheck} ({when}), found: "
               f"{finding.outcome} ({verdict}): {finding.detail}")
    else:
        yield (f"  {finding.applied_by} followed recheck {finding.recheck} "
               f"({when}): {finding.outcome}: {finding.detail}")
    if _unarchived(finding):
        yield (f"  recheck {finding.recheck}'s answers are not archived (a recheck before this "
               "cleanset kept its verdicts in the ledger, not the responses); the records "
               "below are the build's, which admitted it")


def _no_record_line(cand: Found, build_archived: bool) -> str:
    if "://" not in (cand.url or ""):  # a folder's file: its url is its path
        return "  no archived response: a local file, read from disk; no server was asked"
    if not build_archived:
        return (f"  no archived response: build {cand.build} was made by a cleanset that kept "
                "no evidence archive yet; the ledger's decision above is the record of it")
    return ("  no archived response: refused before any request, or no answer came"
            + (" (see the detail above)" if cand.status == "rejected" else ""))


def record_lines(shown: Shown) -> Iterator[str]:
    link = shown.link
    yield f"== {link.kind} ({link.role}) {link.file} offset {link.offset} {link.record_id}"
    if shown.request_line is not None:
        yield f"  request: {shown.request_line}"
        yield from (f"    {name}: {value}" for name, value in shown.request_headers)
    yield f"  target: {shown.target}"
    yield f"  date: {shown.date}"
    yield f"  status: {shown.status_line}"
    yield from (f"    {name}: {value}" for name, value in shown.response_headers)
    if shown.digest_ok is False:
        yield "  WARNING: the record's digest does not match its content (changed since written)"
    elif not shown.holds_archived:
        yield ("  WARNING: this record is not what was archived under its id: its content was "
               "changed after it was written and its digests recomputed; it proves nothing")
    yield from _body_lines(shown.body)


def _body_lines(body: Body) -> Iterator[str]:
    if isinstance(body, Revisit):
        yield f"  payload: not in the archive; sha256 {body.payload_sha256}"
        if body.sample_sha256 is not None:
            same = "the same as" if body.same_as_sample else "DIFFERENT from"
            yield f"    {same} the sample's image in the shard (sha256 {body.sample_sha256})"
        return
    yield from (f"  {line}" for line in _body_text(body).splitlines())


def _body_text(body: Text | Json | Binary) -> str:
    if isinstance(body, Binary):
        return f"({body.size} bytes, not text)"
    text = json.dumps(body.value, indent=2, ensure_ascii=False) if isinstance(body, Json) \
        else body.text
    if not text:
        return "(empty body)"
    if len(text) > BODY_LIMIT:
        return f"{text[:BODY_LIMIT]}\n... ({len(text) - BODY_LIMIT} more characters)"
    return text
