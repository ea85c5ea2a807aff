"""One archived record as `cleanset evidence` shows it: read at its offset, held to its
digest and to its id, its body made plain (JSON parsed, text, a byte count, or an image's
revisit with its payload digest beside the sample's).

A `Link` is what the ledger says of a record a candidate relied on (role, file, offset,
id); `read(out, link)` reads only that record and the request after it. The text and the
JSON views (`show_text.py`, `show_json.py`) both render the `Shown` it returns.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from builder.errors import UserError
from builder.evidence.archive import DIRNAME
from builder.evidence.warc import ReadRecord, hex_of_label, read_at

Headers = list[tuple[str, str]]


@dataclass(frozen=True)
class Link:
    """A record a candidate relied on, as the ledger indexes it."""

    role: str  # api, signal, image; "recheck N" for what recheck N archived
    kind: str  # api, robots.txt, ai.txt, tdmrep.json, landing, image, head...
    file: str  # evidence/NAME.warc.gz, relative to the output directory
    offset: int
    record_id: str
    build: int  # the namespace its id was made in: the build, or -N for recheck N
    sample_sha256: str | None = None  # the image record of an admitted sample: compared


@dataclass(frozen=True)
class Revisit:
    """An image response: its payload is the sample's bytes, in the shard, not here."""

    payload_sha256: str  # hex; the digest label as written when it is not a sha256
    sample_sha256: str | None  # what it is compared with (None: no sample to compare)

    @property
    def same_as_sample(self) -> bool | None:
        return None if self.sample_sha256 is None else self.payload_sha256 == self.sample_sha256


@dataclass(frozen=True)
class Text:
    text: str  # UTF-8 text that is not JSON ("" for an empty body)


@dataclass(frozen=True)
class Json:
    value: object  # the body parsed as JSON
    text: str  # as archived
    strict: bool  # False: it holds NaN or Infinity, which Python reads but RFC 8259 does not


@dataclass(frozen=True)
class Binary:
    size: int  # bytes of a body that is not UTF-8 text


Body = Revisit | Text | Json | Binary


@dataclass(frozen=True)
class Shown:
    link: Link
    request_line: str | None  # None: no request record follows the response
    request_headers: Headers
    target: str
    date: str
    status_line: str
    response_headers: Headers
    body: Body
    digest_ok: bool | None  # None: nothing warcio could check (a revisit)
    holds_archived: bool  # its id is still the hash of its content (check.Scanned)

    @property
    def intact(self) -> bool:
        """False: changed since it was written (its digest or its id no longer matches its
        content), so it proves nothing."""
        return self.digest_ok is not False and self.holds_archived

    @property
    def where(self) -> str:
        return f"{self.link.file} offset {self.link.offset}"


def read(out: Path, link: Link) -> Shown:
    """The record `link` names, with the request written after it. A record that cannot be
    read at all, or is not the one the ledger names, is a UserError (exit 2)."""
    path = out / link.file
    if not link.file.startswith(f"{DIRNAME}/") or not path.is_file():
        raise UserError(f"{path}: the evidence file the ledger names is missing. Restore "
                        f"{out / DIRNAME} from a copy; `cleanset verify {out}` lists what "
                        "else is missing.")
    with path.open("rb") as stream:
        try:
            records = read_at(stream, link.offset)
            holds = _holds_archived(stream, link.offset, link.build)
        except Exception as exc:  # noqa: BLE001 - a damaged archive is reported, not a crash
            # warcio quotes the damaged bytes in its message: kept to a readable line.
            raise UserError(f"{path}: cannot read the record at offset {link.offset} "
                            f"({type(exc).__name__}: {_readable(str(exc))}). The file was "
                            f"changed; `cleanset verify {out}` names every damaged "
                            "record.") from None
    if not records or records[0].record_id != link.record_id:
        found = (_readable(records[0].record_id) or "a record without a WARC-Record-ID") \
            if records else "no record"
        raise UserError(f"{path}: offset {link.offset} holds {found}, not {link.record_id}. "
                        f"The file was changed; `cleanset verify {out}` names what differs.")
    response = records[0]
    request = records[1] if len(records) > 1 and records[1].warc_type == "request" else None
    return Shown(
        link=link, request_line=None if request is None else request.status_line,
        request_headers=[] if request is None else request.http_headers,
        target=response.target_uri, date=response.date, status_line=response.status_line,
        response_headers=response.http_headers, body=_body(response, link.sample_sha256),
        digest_ok=response.digest_ok, holds_archived=holds)


def _readable(text: str, limit: int = 120) -> str:
    """Damaged bytes, as warcio quotes them, kept to one printable line."""
    said = " ".join(text.split())
    if len(said) <= limit and said.isprintable():
        return said
    return said.encode("ascii", "backslashreplace").decode()[:limit] + "..."


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


def _body(record: ReadRecord, sample_sha256: str | None) -> Body:
    if record.warc_type == "revisit":
        label = dict(record.fields).get("WARC-Payload-Digest", "")
        return Revisit(hex_of_label(label) or label, sample_sha256)
    try:
        text = record.body.decode("utf-8")
    except UnicodeDecodeError:
        return Binary(len(record.body))
    constants: list[str] = []  # NaN, Infinity: what json.loads reads beyond RFC 8259

    def constant(name: str) -> float:
        constants.append(name)
        return float(name)

    with contextlib.suppress(ValueError):  # not JSON: kept as it is
        return Json(json.loads(text, parse_constant=constant), text, strict=not constants)
    return Text(text)
