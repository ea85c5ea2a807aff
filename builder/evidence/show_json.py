"""`cleanset evidence --json`: one JSON object per candidate, holding what the text shows.

Bodies are whole (the text cuts one at show_text.BODY_LIMIT characters) and tagged by what
they are, so a script never has to guess: `{"type": "json", "json": ...}` (parsed),
`{"type": "text", "text": ...}` (also JSON holding NaN or Infinity, which strict JSON
readers refuse), `{"type": "bytes", "size": N}` (not UTF-8 text) or, for an
image, `{"type": "revisit", "payload_sha256", "sample_sha256", "same_as_sample"}`. Headers
are [name, value] pairs, in the order archived (a name may repeat).
"""

from __future__ import annotations

from typing import Any

from builder.evidence.show import CandidateEvidence, Finding
from builder.evidence.shown import Binary, Body, Json, Revisit, Shown


def candidate_json(evidence: CandidateEvidence) -> dict[str, Any]:
    """The candidate's object; reads every record it relied on."""
    cand = evidence.found
    return {
        "candidate_id": cand.candidate_id, "build": cand.build, "seq": cand.seq,
        "status": cand.status, "reason": cand.reason, "detail": cand.detail,
        "key": cand.key, "url": cand.url,
        "recheck": None if evidence.finding is None else _finding(evidence.finding),
        "build_archived": evidence.build_archived,
        "records": [record_json(shown) for shown in evidence.records],
    }


def _finding(finding: Finding) -> dict[str, Any]:
    return {"number": finding.recheck, "outcome": finding.outcome, "refuse": finding.refuse,
            "detail": finding.detail, "checked_at": finding.checked_at,
            "applied_by": finding.applied_by, "answers_archived": finding.archived,
            "tool_version": finding.tool_version, "resumed_by": list(finding.resumed_by)}


def record_json(shown: Shown) -> dict[str, Any]:
    link = shown.link
    return {
        "role": link.role, "kind": link.kind, "file": link.file, "offset": link.offset,
        "record_id": link.record_id, "request_line": shown.request_line,
        "request_headers": _pairs(shown.request_headers), "target": shown.target,
        "date": shown.date, "status_line": shown.status_line,
        "response_headers": _pairs(shown.response_headers), "body": _body(shown.body),
        "digest_ok": shown.digest_ok, "intact": shown.intact,
    }


def _pairs(headers: list[tuple[str, str]]) -> list[list[str]]:
    return [[name, value] for name, value in headers]


def _body(body: Body) -> dict[str, Any]:
    if isinstance(body, Revisit):
        return {"type": "revisit", "payload_sha256": body.payload_sha256,
                "sample_sha256": body.sample_sha256, "same_as_sample": body.same_as_sample}
    if isinstance(body, Json):
        # NaN or Infinity in the body would make the line itself unreadable to a strict
        # JSON reader (jq): such a body is given as the text it is.
        return {"type": "json", "json": body.value} if body.strict else \
            {"type": "text", "text": body.text}
    if isinstance(body, Binary):
        return {"type": "bytes", "size": body.size}
    return {"type": "text", "text": body.text}
