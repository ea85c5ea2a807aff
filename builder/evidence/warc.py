"""Exchanges as WARC 1.1 records (ISO 28500), written and read with `warcio`.

An exchange becomes two records, each its own gzip member so it can be read by offset:

- a `response` holding the status line, the headers and the body as read (API pages,
  robots.txt, ai.txt, tdmrep.json, landing pages, and an image's error page), or, for an
  image that was received, a `revisit` record with the WARC 1.1 identical-payload-digest
  profile: status line and headers only, `WARC-Payload-Digest` the sha256 of the bytes,
  which are the sample's bytes in its shard (revisit records are how crawlers and replay
  tools already say "this payload is stored elsewhere");
- the `request` that asked for it (`WARC-Concurrent-To` the response).

Bodies are recorded after content decoding (urllib3 undoes gzip and chunking as it reads),
so `Content-Encoding`, `Transfer-Encoding` and a `Content-Length` that counted encoded
bytes are renamed `X-Archive-Orig-*`, as pywb does, and the real length is given.

Redaction: API keys never reach the archive. Credential query parameters (`wskey`,
`api_key`, ...) are dropped from target URIs, credential headers (`Authorization`,
`X-Api-Key`, ...) keep their name with the value `***`, and any key registered by a source
(builder.sources._keys) is scrubbed from every URI, header and body before digests are made.

Record ids are UUIDv5 over the build, the target URI and the sha256 of the record block, so
the same answer asked twice in a build (a resumed page, a robots.txt asked by two worker
processes) is one record, and identical input gives identical ids. Dates are the retrieval
times, which follow SOURCE_DATE_EPOCH (builder/clock.py).
"""

from __future__ import annotations

import base64
import hashlib
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from typing import IO, Any
from urllib.parse import quote, urlsplit

from warcio.archiveiterator import ArchiveIterator
from warcio.recordbuilder import RecordBuilder
from warcio.statusandheaders import StatusAndHeaders
from warcio.utils import Digester
from warcio.warcwriter import WARCWriter

from builder.records import CREDENTIAL_HEADERS, Exchange

NAMESPACE = uuid.UUID("5b0f3c1e-2a7d-5e44-9c0b-6f1e0d6c1a57")  # cleanset evidence records
REVISIT_PROFILE = RecordBuilder.REVISIT_PROFILE_1_1
SECRET_HEADERS = CREDENTIAL_HEADERS
# Names the archive renames because the recorded body is decoded (see the module docstring).
DECODED = frozenset({"content-encoding", "transfer-encoding"})
REDACTION_NOTE = (
    "API keys removed: credential query parameters (wskey, api_key, apikey, key, "
    "access_token, token) are dropped from URIs, credential headers (Authorization, "
    "X-Api-Key, Cookie...) are recorded as ***, and every key read from the environment "
    "is replaced by *** in URIs, headers and bodies, before digests are computed.")
IMAGE_NOTE = (
    "Image responses are revisit records (profile identical-payload-digest): status line "
    "and headers only; WARC-Payload-Digest is the sha256 of the image bytes, which are "
    "the sample's bytes in its shard (provenance sha256). Error pages are kept whole.")
DECODING_NOTE = (
    "Bodies are recorded as read after content decoding; Content-Encoding, "
    "Transfer-Encoding and the encoded Content-Length are renamed X-Archive-Orig-*. Request "
    "records list the request line and headers cleanset sent. Retried attempts are not "
    "kept: each record is the answer that counted.")


@dataclass(frozen=True)
class Pointer:
    """Where a response record is: what provenance, the manifest and the ledger hold."""

    file: str  # evidence/NAME.warc.gz, relative to the output directory
    record_id: str  # <urn:uuid:...>
    offset: int  # of the record's gzip member in the file

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "record_id": self.record_id, "offset": self.offset}


@dataclass(frozen=True)
class Pair:
    """An exchange made ready to write: its records, and what the ledger indexes."""

    record_id: str
    kind: str
    target_uri: str
    status: int
    response: Any  # warcio ArcWarcRecord
    request: Any


@dataclass(frozen=True)
class Prepared:
    """An exchange made into its two records, gzip members ready to append, where the fetch
    ran (a worker thread, process or Ray task): the build's one writer only places them."""

    build: int
    record_id: str
    kind: str
    target_uri: str
    status: int
    payload_sha256: str
    records: bytes  # the response (or revisit) record, then the request record


class _Sha256Writer(WARCWriter):
    """warcio's writer with sha256 digests (warcio's default is sha1)."""

    @staticmethod
    def _create_digester() -> Digester:
        return Digester("sha256")


def writer(out: IO[bytes]) -> WARCWriter:
    return _Sha256Writer(out, gzip=True, warc_version="1.1")


# zlib's default 256 KB of match state per member costs ~20 us to set up, more than
# compressing a record of headers; a member that small needs a fraction of it.
_SMALL_RECORD = 16 << 10


def render(record: Any) -> bytes:
    """`record` as the gzip member warcio's gzip writer makes of it (one member per record,
    so it reads by offset), without that writer's flush of the file after every record."""
    raw = BytesIO()
    _Sha256Writer(raw, gzip=False, warc_version="1.1").write_record(record)
    return _gzip(raw.getvalue())


def record_id(*parts: object) -> str:
    return f"<urn:uuid:{uuid.uuid5(NAMESPACE, chr(10).join(map(str, parts)))}>"


def sha256_label(hex_digest: str) -> str:
    """A sha256 in the WARC convention (base32), from the hex form provenance uses."""
    return _label(bytes.fromhex(hex_digest))


def _label(digest: bytes) -> str:
    return "sha256:" + base64.b32encode(digest).decode("ascii")


def hex_of_label(label: str) -> str | None:
    """The hex form of a `sha256:BASE32` digest, or None for another algorithm/encoding."""
    algorithm, _, value = label.partition(":")
    if algorithm.lower() != "sha256":
        return None
    if len(value) == 64:
        return value.lower()
    try:
        return base64.b32decode(value).hex()
    except ValueError:
        return None


def make_pair(build: int, ex: Exchange, scrub: Any) -> Pair:
    """The records of one exchange; `scrub(text) -> text` removes registered secrets."""
    seen = _Scrubbed.of(ex, scrub)
    target = seen.target
    http = StatusAndHeaders(seen.status_line, seen.response, protocol=ex.protocol)
    body = None if ex.body is None else scrub_bytes(ex.body, scrub)
    block = http.to_ascii_bytes() + (body or b"")
    rid = record_id(build, target, hashlib.sha256(block).hexdigest())
    fields = {"WARC-Record-ID": rid, "WARC-Date": ex.retrieved_at, "WARC-Target-URI": target}
    build_records = writer(BytesIO())
    if body is None:
        response = build_records.create_revisit_record(
            target, sha256_label(ex.payload_sha256), target, ex.retrieved_at,
            http_headers=http, warc_headers_dict=fields)
        response.rec_headers.replace_header("WARC-Profile", REVISIT_PROFILE)
    else:
        if ex.truncated:
            fields["WARC-Truncated"] = "length"
        response = build_records.create_warc_record(
            target, "response", payload=BytesIO(body), length=len(body), http_headers=http,
            warc_headers_dict=fields)
    request = build_records.create_warc_record(
        target, "request",
        http_headers=StatusAndHeaders(seen.request_line, seen.request, is_http_request=True),
        warc_headers_dict={"WARC-Record-ID": record_id(rid, "request"),
                           "WARC-Date": ex.retrieved_at, "WARC-Target-URI": target,
                           "WARC-Concurrent-To": rid})
    return Pair(rid, ex.kind, target, ex.status, response, request)


def prepare(build: int, ex: Exchange, scrub: Any) -> Prepared:
    """`ex` as the archive writes it: records made, secrets scrubbed, gzipped."""
    fast = _revisit_pair_bytes(build, ex, scrub) if ex.body is None else None
    if fast is not None:
        rid, target, records = fast
        return Prepared(build, rid, ex.kind, target, ex.status, ex.payload_sha256,
                        _gzip(records[0]) + _gzip(records[1]))
    pair = make_pair(build, ex, scrub)
    return Prepared(build, pair.record_id, pair.kind, pair.target_uri, pair.status,
                    ex.payload_sha256, render(pair.response) + render(pair.request))


def _revisit_pair_bytes(build: int, ex: Exchange, scrub: Any
                        ) -> tuple[str, str, tuple[bytes, bytes]] | None:
    """An image's revisit and request records, byte for byte what make_pair and warcio's
    writer produce (tests/test_evidence_records.py holds them to it), laid out directly.

    Every image of a build takes this path: warcio's record builder spent ~0.2 ms of Python
    per image on ~1 KB of headers, more than the rest of the archive's work. Anything
    outside plain ASCII (warcio would percent-encode it) or holding a line break goes
    through warcio instead (None)."""
    seen = _Scrubbed.of(ex, scrub)
    target = seen.target
    first = " ".join(part for part in (ex.protocol, seen.status_line) if part)
    texts = [target, ex.retrieved_at, first, seen.request_line,
             *(x for pair in (*seen.response, *seen.request) for x in pair)]
    if not all(text.isascii() and "\r" not in text and "\n" not in text for text in texts):
        return None
    http = _head(first, seen.response)
    rid = record_id(build, target, hashlib.sha256(http).hexdigest())
    revisit = _record([("WARC-Record-ID", rid), ("WARC-Date", ex.retrieved_at),
                       ("WARC-Target-URI", target), ("WARC-Type", "revisit"),
                       ("WARC-Profile", REVISIT_PROFILE),
                       ("WARC-Refers-To-Target-URI", target),
                       ("WARC-Refers-To-Date", ex.retrieved_at),
                       ("WARC-Payload-Digest", sha256_label(ex.payload_sha256))],
                      "response", http)
    asked = _head(seen.request_line, seen.request)
    request_record = _record([("WARC-Record-ID", record_id(rid, "request")),
                              ("WARC-Date", ex.retrieved_at), ("WARC-Target-URI", target),
                              ("WARC-Concurrent-To", rid), ("WARC-Type", "request"),
                              ("WARC-Payload-Digest", _EMPTY_SHA256)],
                             "request", asked)
    return rid, target, (revisit, request_record)


_EMPTY_SHA256 = _label(hashlib.sha256(b"").digest())


def _head(first: str, headers: list[tuple[str, str]]) -> bytes:
    """An HTTP head as warcio's StatusAndHeaders.to_ascii_bytes lays it out."""
    lines = (f"{first}\r\n" if first else "") + "".join(f"{name}: {value}\r\n"
                                                        for name, value in headers)
    return (lines + "\r\n").encode("ascii")


def _record(fields: list[tuple[str, str]], msgtype: str, block: bytes) -> bytes:
    """A WARC record whose block is an HTTP head, as warcio's writer lays it out."""
    fields = [*fields, ("WARC-Block-Digest", _label(hashlib.sha256(block).digest())),
              ("Content-Type", f"application/http; msgtype={msgtype}"),
              ("Content-Length", str(len(block)))]
    text = "WARC/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in fields)
    return (text + "\r\n").encode("ascii") + block + b"\r\n\r\n"


def _gzip(data: bytes) -> bytes:
    mem_level = 2 if len(data) <= _SMALL_RECORD else 8
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS + 16, mem_level)
    return packer.compress(data) + packer.flush()


def _as_recorded(ex: Exchange) -> list[tuple[str, str]]:
    decoded = any(name.lower() in DECODED for name, _ in ex.headers)
    out = []
    for name, value in ex.headers:
        lower = name.lower()
        if lower in DECODED or (decoded and lower == "content-length"):
            out.append((f"X-Archive-Orig-{name}", value))
        else:
            out.append((name, value))
    if decoded and ex.body is not None:
        out.append(("Content-Length", str(len(ex.body))))
    return out


@dataclass(frozen=True)
class _Scrubbed:
    """What the records of an exchange say, secrets removed: both ways of writing them
    (warcio's builder, and the direct layout of an image's records) start from this."""

    target: str  # the URI asked, credentials and registered secrets removed
    status_line: str
    response: list[tuple[str, str]]  # headers as recorded (see _as_recorded)
    request_line: str
    request: list[tuple[str, str]]

    @classmethod
    def of(cls, ex: Exchange, scrub: Any) -> _Scrubbed:
        target = as_uri(scrub(_strip_credentials(ex.url)))
        parts = urlsplit(target)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(
            target=target, status_line=f"{ex.status} {ex.reason}".rstrip(),
            response=[(name, scrub(value)) for name, value in _as_recorded(ex)],
            # http.client always asks in HTTP/1.1, whatever version the server answers in.
            request_line=f"{ex.method} {path} HTTP/1.1",
            request=[(name, "***" if name.lower() in SECRET_HEADERS else scrub(value))
                     for name, value in ex.request])


def as_uri(url: str) -> str:
    """`url` as a URI (RFC 3987 section 3.1): characters outside ASCII, and spaces, percent-
    encoded as UTF-8, everything else as it was. A URL list may hold an IRI as a browser
    shows it (`/wiki/Datei:Müller.jpg`); the request that went out was percent-encoded so
    (urllib3 does it), and a WARC-Target-URI must be a URI."""
    if url.isascii() and " " not in url:
        return url
    return quote(url, safe=_URI_KEEP)


# What as_uri leaves alone: RFC 3986's reserved and unreserved characters, and '%' (an
# existing escape stays one escape).
_URI_KEEP = ":/?#[]@!$&'()*+,;=-._~%"


def _strip_credentials(url: str) -> str:
    """`url` without credential query parameters, every other byte as it was sent (the
    sources' own `strip_secrets` re-encodes the whole query)."""
    from urllib.parse import unquote_plus

    from builder.sources._keys import SECRET_PARAMS

    head, mark, query = url.partition("?")
    if not mark:
        return url
    query, hash_mark, fragment = query.partition("#")
    kept = [part for part in query.split("&")
            if unquote_plus(part.partition("=")[0]).lower() not in SECRET_PARAMS]
    if len(kept) == len(query.split("&")):
        return url
    return head + (f"?{'&'.join(kept)}" if kept else "") + hash_mark + fragment


def scrub_bytes(data: bytes, scrub: Any) -> bytes:
    """`data` with registered secrets removed, when it is text that holds any."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data
    cleaned = scrub(text)
    return data if cleaned == text else cleaned.encode("utf-8")


def warcinfo(name: str, fields: dict[str, str], date: str) -> Any:
    """The record each file starts with: what made it, what it holds, what was removed."""
    payload = "".join(f"{k}: {v}\r\n" for k, v in fields.items()).encode("utf-8")
    return writer(BytesIO()).create_warc_record(
        "", "warcinfo", payload=BytesIO(payload), length=len(payload),
        warc_content_type="application/warc-fields",
        warc_headers_dict={"WARC-Record-ID": record_id("warcinfo", name, *fields.values()),
                           "WARC-Date": date, "WARC-Filename": name})


def metadata(target: str, rid: str, date: str, body: bytes) -> Any:
    """A `metadata` record (a takedown's log entry, as JSON)."""
    return writer(BytesIO()).create_warc_record(
        target, "metadata", payload=BytesIO(body), length=len(body),
        warc_content_type="application/json",
        warc_headers_dict={"WARC-Record-ID": rid, "WARC-Date": date})


# -- reading --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReadRecord:
    """One record as read back: its WARC headers, HTTP status line and headers, body."""

    offset: int
    warc_type: str
    record_id: str
    target_uri: str
    date: str
    fields: list[tuple[str, str]]
    status_line: str
    http_headers: list[tuple[str, str]]
    body: bytes
    digest_ok: bool | None  # None: nothing warcio could check (a revisit)


def read_at(stream: IO[bytes], offset: int, count: int = 2) -> list[ReadRecord]:
    """Up to `count` records from `offset` on (a response and its request), checking digests."""
    stream.seek(offset)
    out = []
    for record in records(stream):
        out.append(record)
        if len(out) == count:
            break
    return out


class _QuietIterator(ArchiveIterator):  # type: ignore[misc]
    # warcio writes a damaged record's raw bytes to stderr as a warning; the commands that
    # read records name a damaged one themselves, in one readable line.
    INC_RECORD = ""


def records(stream: IO[bytes]) -> Iterator[ReadRecord]:
    """Every record from the stream's position on; offsets are the stream's own."""
    iterator = _QuietIterator(stream, check_digests=True)
    for record in iterator:
        body = record.content_stream().read()
        http = record.http_headers
        line = "" if http is None else f"{http.protocol} {http.statusline}".strip()
        rec = record.rec_headers
        yield ReadRecord(
            offset=iterator.get_record_offset(), warc_type=rec.get_header("WARC-Type"),
            record_id=rec.get_header("WARC-Record-ID") or "",
            target_uri=rec.get_header("WARC-Target-URI") or "",
            date=rec.get_header("WARC-Date") or "", fields=list(rec.headers),
            status_line=line, http_headers=list(http.headers) if http else [], body=body,
            digest_ok=record.digest_checker.passed)
