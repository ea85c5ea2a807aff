"""`cleanset evidence DIR KEY|URL`: the archived responses that decided a sample or candidate.

The candidate is found in the ledger (by sample key, candidate id `source:id`, or the URL it
was fetched from or described at), its records by the ledger's links, and each record is
read at its offset: nothing else in the archive is read. Prints, per record, its role, file,
offset and id, the request line and headers (keys removed), the WARC-Date, the status line,
the response headers and the body (JSON pretty-printed; an image's payload is in its shard,
so its record holds the digest instead).
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from builder.errors import UserError
from builder.evidence.archive import DIRNAME, has_schema
from builder.evidence.recheck_archive import namespace, records_of
from builder.evidence.warc import ReadRecord, hex_of_label, read_at
from builder.ledger import reading, require_dataset

_KEY = re.compile(r"[0-9]{10,}")
BODY_LIMIT = 200_000  # characters of a text body shown; the rest is counted, not printed


@dataclass(frozen=True)
class Found:
    build: int
    seq: int
    candidate_id: str
    url: str
    status: str
    reason: str | None
    detail: str | None
    key: str | None
    sha256: str | None  # of the sample's image, when it was admitted


def show(out: Path, wanted: str, unproven: list[str] | None = None) -> Iterator[str]:
    """The lines to print for every candidate matching `wanted`. Each record shown that is
    not what was archived (its digest or its id no longer matches its content) is printed
    with a WARNING and added to `unproven` (file and offset), for the exit code."""
    unproven = [] if unproven is None else unproven
    require_dataset(out)  # a directory in the ledger's place is named by `reading`
    with reading(out, "evidence") as ledger:
        db = ledger.db
        if not has_schema(db):
            raise UserError(f"{out}: built before cleanset kept an evidence archive; its "
                            "ledger points at no records. A new build into another "
                            "--out keeps them.")
        found = _find(db, wanted)
        if not found and wanted.strip() != wanted:
            # A key pasted from a spreadsheet or a terminal with a space or newline around
            # it was "no candidate with key ...": an auditor read that the work was never in.
            found = _find(db, wanted.strip())
        if not found:
            raise UserError(f"{out}: no candidate with key, id or URL {wanted!r}. Give a "
                            "sample key (e.g. 0000000042, see manifest.parquet), a candidate "
                            "id (source:id, see candidates.parquet) or the image or landing "
                            "page URL.")
        for index, cand in enumerate(found):
            if index:
                yield ""
            yield from _candidate_lines(out, db, cand, unproven)


def _find(db: sqlite3.Connection, wanted: str) -> list[Found]:
    select = ("SELECT c.build, c.seq, c.candidate_id, c.url, c.status, c.reason, c.detail, "
              "c.key, (SELECT sha256 FROM samples s WHERE s.key = c.key) FROM candidates c ")
    order = " ORDER BY c.build, c.seq"
    if _KEY.fullmatch(wanted):
        rows = db.execute(select + "WHERE c.key = ?" + order, (wanted,)).fetchall()
    else:
        rows = db.execute(select + "WHERE c.candidate_id = ? OR c.url = ?" + order,
                          (wanted, wanted)).fetchall()
        if not rows:  # a landing page: samples and duplicates record it, candidates do not
            rows = db.execute(select + "WHERE c.key IN (SELECT key FROM samples WHERE "
                              "landing_url = ? OR file_url = ?)" + order,
                              (wanted, wanted)).fetchall()
    return [Found(*row) for row in rows]


def _candidate_lines(out: Path, db: sqlite3.Connection, cand: Found,
                     unproven: list[str]) -> Iterator[str]:
    if cand.status == "accepted":
        outcome = f"accepted as sample {cand.key}"
    elif cand.status == "removed":
        outcome = f"accepted as sample {cand.key}, since removed ({cand.detail})"
    else:
        outcome = f"rejected, {cand.reason}: {cand.detail}"
    yield f"candidate {cand.candidate_id} (build {cand.build}, seq {cand.seq}): {outcome}"
    yield f"  url: {cand.url}"
    if cand.status == "removed":
        yield from _recheck_lines(out, db, cand, unproven)
    elif cand.status == "accepted":
        yield from _last_recheck_lines(out, db, cand, unproven)
    links = db.execute(
        "SELECT l.role, r.record_id, r.file, r.offset, r.kind, r.build FROM evidence_links l "
        "JOIN evidence_records r ON r.record_id = l.record_id "
        "WHERE l.build = ? AND l.seq = ? ORDER BY l.position", (cand.build, cand.seq)).fetchall()
    if not links:
        if "://" not in (cand.url or ""):  # a folder's file: its url is its path
            yield "  no archived response: a local file, read from disk; no server was asked"
        else:
            yield ("  no archived response: refused before any request, or no answer came"
                   + (" (see the detail above)" if cand.status == "rejected" else ""))
        return
    for role, record_id, file, offset, kind, build in links:
        yield ""
        yield f"== {kind} ({role}) {file} offset {offset} {record_id}"
        yield from _record_lines(out, file, offset, record_id, cand.sha256 if role == "image"
                                 else None, build=build, unproven=unproven)


def _recheck_lines(out: Path, db: sqlite3.Connection, cand: Found, unproven: list[str]
                   ) -> Iterator[str]:
    """For a sample a `recheck --apply` took down: what the recheck found, and the answers
    it found it in (archived since recheck_archive.py; an older recheck's are not). The
    build's records follow, which admitted it: shown alone, they read as if nothing had ever
    refused it."""
    takedown = (cand.detail or "").partition(":")[0]
    if not _has_rechecks(db):
        return
    row = db.execute(
        "SELECT r.recheck, rr.outcome, rr.detail, rr.checked_at FROM rechecks r JOIN "
        "recheck_results rr ON rr.recheck = r.recheck WHERE r.applied = ? AND rr.key = ? "
        "AND rr.refuse = 1", (takedown, cand.key)).fetchone()
    if row is None:
        return
    recheck, outcome, detail, checked_at = row
    yield f"  {takedown} followed recheck {recheck} ({checked_at}): {outcome}: {detail}"
    if not records_of(db, recheck, cand.key):
        yield (f"  recheck {recheck}'s answers are not archived (a recheck before this "
               "cleanset kept its verdicts in the ledger, not the responses); the records "
               "below are the build's, which admitted it")
        return
    yield from _recheck_answers(out, db, recheck, cand.key, unproven)


def _last_recheck_lines(out: Path, db: sqlite3.Connection, cand: Found, unproven: list[str]
                        ) -> Iterator[str]:
    """For a sample still in the dataset: what the last finished recheck found of it, when
    that was not `unchanged` (it would now be refused, its licence or file changed, or it
    could not be checked), with the answers it found it in. The report lists such samples
    as open; the build's records below them are what admitted it."""
    if not _has_rechecks(db):
        return
    row = db.execute(
        "SELECT rr.recheck, rr.outcome, rr.refuse, rr.detail, rr.checked_at FROM "
        "recheck_results rr WHERE rr.key = ? AND rr.recheck = (SELECT MAX(recheck) FROM "
        "rechecks WHERE status = 'finished')", (cand.key,)).fetchone()
    if row is None:
        return
    recheck, outcome, refuse, detail, checked_at = row
    verdict = "a build today would refuse it" if refuse else "not a refusal"
    yield (f"  the last recheck, {recheck} ({checked_at}), found: {outcome} ({verdict}): "
           f"{detail}")
    yield from _recheck_answers(out, db, recheck, cand.key, unproven)


def _has_rechecks(db: sqlite3.Connection) -> bool:
    """False for a ledger no recheck has written to (or one older than rechecks)."""
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = "
                      "'recheck_results'").fetchone() is not None


def _recheck_answers(out: Path, db: sqlite3.Connection, recheck: int, key: str,
                     unproven: list[str]) -> Iterator[str]:
    """The answers recheck `recheck` archived for `key`, then the heading of the build's."""
    for record_id, file, offset, kind in records_of(db, recheck, key):
        yield ""
        yield f"== {kind} (recheck {recheck}) {file} offset {offset} {record_id}"
        yield from _record_lines(out, file, offset, record_id, None,
                                 build=namespace(recheck), unproven=unproven)
    yield ""
    yield "  the build's records, which admitted it:"


def _readable(text: str, limit: int = 120) -> str:
    """Damaged bytes, as warcio quotes them, kept to one printable line."""
    said = " ".join(text.split())
    if len(said) <= limit and said.isprintable():
        return said
    return said.encode("ascii", "backslashreplace").decode()[:limit] + "..."


def _record_lines(out: Path, file: str, offset: int, record_id: str,
                  sample_sha256: str | None, *, build: int | None = None,
                  unproven: list[str] | None = None) -> Iterator[str]:
    path = out / file
    if not file.startswith(f"{DIRNAME}/") or not path.is_file():
        raise UserError(f"{path}: the evidence file the ledger names is missing. Restore "
                        f"{out / DIRNAME} from a copy; `cleanset verify {out}` lists what "
                        "else is missing.")
    with path.open("rb") as stream:
        try:
            records = read_at(stream, offset)
            intact = None if build is None else _holds_archived(stream, offset, build)
        except Exception as exc:  # noqa: BLE001 - a damaged archive is reported, not a crash
            # warcio quotes the damaged bytes in its message: kept to a readable line.
            raise UserError(f"{path}: cannot read the record at offset {offset} "
                            f"({type(exc).__name__}: {_readable(str(exc))}). The file was "
                            f"changed; `cleanset verify {out}` names every damaged "
                            "record.") from None
    if not records or records[0].record_id != record_id:
        found = (_readable(records[0].record_id) or "a record without a WARC-Record-ID") \
            if records else "no record"
        raise UserError(f"{path}: offset {offset} holds {found}, not {record_id}. "
                        f"The file was changed; `cleanset verify {out}` names what differs.")
    response = records[0]
    request = records[1] if len(records) > 1 and records[1].warc_type == "request" else None
    if request is not None:
        yield f"  request: {request.status_line}"
        yield from (f"    {name}: {value}" for name, value in request.http_headers)
    yield f"  target: {response.target_uri}"
    yield f"  date: {response.date}"
    yield f"  status: {response.status_line}"
    yield from (f"    {name}: {value}" for name, value in response.http_headers)
    if response.digest_ok is False:
        yield "  WARNING: the record's digest does not match its content (changed since written)"
    elif intact is False:
        yield ("  WARNING: this record is not what was archived under its id: its content was "
               "changed after it was written and its digests recomputed; it proves nothing")
    if (response.digest_ok is False or intact is False) and unproven is not None:
        unproven.append(f"{file} offset {offset}")
    yield from _body_lines(response, sample_sha256)


def _holds_archived(stream: IO[bytes], offset: int, build: int) -> bool:
    """Whether the record at `offset` still holds what was archived under its id. Its digests
    only say the content is consistent with itself: whoever rewrote a record (a licence
    field, a status line) could recompute them. Its id is a hash of the content it was
    written with (warc.record_id), and the ledger and provenance hold the id."""
    from builder.evidence.check import Damaged, scan_at

    try:
        return scan_at(stream, offset).holds_archived(build)
    except Damaged:
        return False


def _body_lines(record: ReadRecord, sample_sha256: str | None) -> Iterator[str]:
    if record.warc_type == "revisit":
        label = dict(record.fields).get("WARC-Payload-Digest", "")
        digest = hex_of_label(label) or label
        yield f"  payload: not in the archive; sha256 {digest}"
        if sample_sha256 is not None:
            same = "the same as" if digest == sample_sha256 else "DIFFERENT from"
            yield f"    {same} the sample's image in the shard (sha256 {sample_sha256})"
        return
    yield from (f"  {line}" for line in _body_text(record).splitlines())


def _body_text(record: ReadRecord) -> str:
    body = record.body
    if not body:
        return "(empty body)"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return f"({len(body)} bytes, not text)"
    with contextlib.suppress(ValueError):  # not JSON: shown as it is
        text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    if len(text) > BODY_LIMIT:
        return f"{text[:BODY_LIMIT]}\n... ({len(text) - BODY_LIMIT} more characters)"
    return text
