"""`cleanset verify`, the evidence part: every WARC record intact, every pointer true.

Each file is read member by member (one gzip member per record): the member must
decompress with its CRC, start with the gzip header the writer makes, and hold one WARC
record whose `WARC-Block-Digest` matches its block (revisit records included, which
`warcio check` skips). Then the ledger's index must name records that are there, at their
offsets, each still holding what was archived under its id (a response's id is a hash of
its block, `warc.record_id`: a record rewritten with its digests recomputed keeps a digest
that matches but no longer its id), and every sample's provenance `evidence` must point at
one of them; an image record's payload digest must be the sample's sha256. A changed byte
is reported with the file and the offset of the record it falls in.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from builder.evidence.archive import DIRNAME, has_schema
from builder.evidence.warc import hex_of_label, record_id, sha256_label
from builder.ledger import Ledger
from builder.shards import file_sha256

CHUNK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b\x08\x00\x00\x00\x00\x00"  # deflate, no flags, mtime 0: as written


@dataclass(frozen=True)
class Scanned:
    """What one record at an offset is, as far as verify needs to know."""

    record_id: str
    warc_type: str
    payload_digest: str | None  # hex sha256 of a revisit's payload (the image)
    target_uri: str = ""
    block_sha256: str = ""  # hex, of the record's block as it is now

    def holds_archived(self, build: int) -> bool:
        """Whether this response (or revisit) is still what was archived under its id: the
        id is a UUIDv5 over the build, the target and the sha256 of the block (warc.py), so a
        record rewritten after it was written, its digests recomputed to match, fails here."""
        return record_id(build, self.target_uri, self.block_sha256) == self.record_id


@dataclass(frozen=True)
class ScannedFile:
    records: dict[int, Scanned]
    damaged_at: int | None  # where reading stopped at damage (already reported)

    def unreadable(self, offset: int) -> bool:
        return self.damaged_at is not None and offset >= self.damaged_at


class Damaged(Exception):
    def __init__(self, offset: int, why: str) -> None:
        super().__init__(why)
        self.offset = offset


def check_evidence(out: Path, ledger: Ledger) -> list[str]:
    db = ledger.db
    if not has_schema(db):
        return []  # built before the archive existed: nothing to check
    problems: list[str] = []
    rows = db.execute("SELECT name, size, complete, sha256 FROM evidence_files").fetchall()
    known = {name for name, *_ in rows}
    folder = out / DIRNAME
    on_disk = {p.name for p in folder.glob("*.warc.gz")} if folder.is_dir() else set()
    for name in sorted(on_disk - known):
        problems.append(f"{DIRNAME}/{name}: not in the ledger (not written by this dataset's "
                        "builds, or left by a build that stopped before its first commit)")
    scanned: dict[str, ScannedFile] = {}
    for name, size, complete, sha in rows:
        where = f"{DIRNAME}/{name}"
        path = folder / name
        if not path.is_file():
            problems.append(f"{where}: in the ledger but the file is missing")
            continue
        actual = path.stat().st_size
        if complete and sha and file_sha256(path) != sha:
            problems.append(f"{where}: file sha256 differs from the one recorded when it was "
                            "completed")
        elif not complete and actual != size:
            problems.append(f"{where}: {actual} bytes, the ledger committed {size}; an "
                            "interrupted build wrote past its last commit (the same build "
                            "command resumes and cuts them off)")
        scanned[where] = scan_file(path, problems, where)
    problems.extend(_check_index(db, scanned))
    problems.extend(_check_samples(ledger, scanned, {f"{DIRNAME}/{name}" for name in known}))
    return problems


def scan_file(path: Path, problems: list[str], where: str) -> ScannedFile:
    """Every record by offset; damage is added to `problems` (scanning stops at the first:
    past a broken gzip member no offset can be trusted)."""
    found: dict[int, Scanned] = {}
    with path.open("rb") as stream:
        try:
            for offset, raw in gzip_members(stream):
                found[offset] = _parse(offset, raw)
        except Damaged as exc:
            problems.append(f"{where}: record at offset {exc.offset}: {exc}; the file was "
                            "changed after it was written (restore it from a copy)")
            return ScannedFile(found, exc.offset)
    return ScannedFile(found, None)


def gzip_members(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """(offset, decompressed bytes) of each gzip member, reading the file in chunks."""
    offset = 0
    pending = stream.read(CHUNK)
    while pending:
        while len(pending) < len(GZIP_MAGIC) and (more := stream.read(CHUNK)):
            pending += more
        if not pending.startswith(GZIP_MAGIC):
            raise Damaged(offset, "not a gzip member as the archive writes them")
        inflater = zlib.decompressobj(31)
        parts: list[bytes] = []
        consumed = 0
        try:
            while not inflater.eof:
                if not pending:
                    pending = stream.read(CHUNK)
                    if not pending:
                        raise Damaged(offset, "the file ends inside this record")
                parts.append(inflater.decompress(pending))
                used = len(pending) - len(inflater.unused_data)
                consumed += used
                pending = inflater.unused_data if inflater.eof else b""
        except zlib.error as exc:
            raise Damaged(offset, f"gzip data is corrupt ({exc})") from None
        yield offset, b"".join(parts)
        offset += consumed
        if not pending:
            pending = stream.read(CHUNK)


def _parse(offset: int, raw: bytes) -> Scanned:
    head, sep, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", errors="replace").split("\r\n")
    if not sep or not lines[0].startswith("WARC/"):
        raise Damaged(offset, "no WARC record header")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    try:
        length = int(fields.get("content-length", ""))
    except ValueError:
        raise Damaged(offset, "no valid Content-Length") from None
    block = rest[:length]
    if len(block) != length:
        raise Damaged(offset, f"block shorter than its Content-Length {length}")
    stated = fields.get("warc-block-digest")
    if stated is None:
        raise Damaged(offset, "no WARC-Block-Digest")
    if hex_of_label(stated) != hashlib.sha256(block).hexdigest():
        raise Damaged(offset, f"WARC-Block-Digest {stated} does not match the block "
                      f"(record {fields.get('warc-record-id', '?')})")
    payload = fields.get("warc-payload-digest")
    return Scanned(fields.get("warc-record-id", ""), fields.get("warc-type", ""),
                   hex_of_label(payload) if payload and fields.get("warc-type") == "revisit"
                   else None, fields.get("warc-target-uri", ""), hashlib.sha256(block).hexdigest())


def scan_at(stream: IO[bytes], offset: int) -> Scanned:
    """The record whose gzip member starts at `offset` (raises Damaged)."""
    stream.seek(offset)
    for _, raw in gzip_members(stream):
        return _parse(offset, raw)
    raise Damaged(offset, "the file ends before this offset")


def _check_index(db: Any, scanned: dict[str, ScannedFile]) -> list[str]:
    problems = []
    for rid, build, file, offset in db.execute(
            "SELECT record_id, build, file, offset FROM evidence_records ORDER BY file, offset"):
        if file not in scanned or scanned[file].unreadable(offset):
            continue  # the file is reported missing, or damaged before this record
        at = scanned[file].records.get(offset)
        if at is None:
            problems.append(f"{file}: record {rid} is not at offset {offset} as the "
                            "ledger says")
        elif at.record_id != rid:
            problems.append(f"{file}: offset {offset} holds {at.record_id}, the ledger says "
                            f"{rid}")
        elif not at.holds_archived(build):
            problems.append(f"{file}: record {rid} at offset {offset} no longer holds what "
                            "was archived under its id (rewritten after it was written, its "
                            "digests recomputed); restore the file from a copy")
    dangling = db.execute("SELECT COUNT(*) FROM evidence_links l WHERE NOT EXISTS (SELECT 1 "
                          "FROM evidence_records r WHERE r.record_id = l.record_id)").fetchone()
    if dangling[0]:
        problems.append(f"ledger: {dangling[0]} evidence links name records it does not index")
    return problems


def _check_samples(ledger: Ledger, scanned: dict[str, ScannedFile],
                   known: set[str]) -> list[str]:
    problems = []
    for row in ledger.iter_samples():
        evidence = json.loads(row["provenance"]).get("evidence")
        if evidence is None:
            continue  # provenance_version 1: built before the archive existed
        pointers = [*evidence.get("api", []), *evidence.get("signals", [])]
        image = evidence.get("image")
        for pointer in [*pointers, *([image] if image else [])]:
            problem = _check_pointer(pointer, scanned, known)
            if problem:
                problems.append(f"{row['key']}: provenance evidence {problem}")
        if image and image.get("file") in scanned:
            at = scanned[image["file"]].records.get(image["offset"])
            if at is not None and at.payload_digest not in (None, row["sha256"]):
                problems.append(f"{row['key']}: its image record {image['record_id']} has "
                                f"payload digest {sha256_label(at.payload_digest)}, not the "
                                "sample's sha256")
    return problems


def _check_pointer(pointer: dict[str, Any], scanned: dict[str, ScannedFile],
                   known: set[str]) -> str | None:
    file, offset, record_id = pointer.get("file"), pointer.get("offset"), pointer.get("record_id")
    if file not in scanned:
        if file in known:
            # A file of this dataset that is missing is reported once, for the file: a line
            # per pointer called it "not an archive file of this dataset" (as if provenance
            # named a file the builds never wrote), five times per sample.
            return None
        return f"names {file}, which is not an archive file of this dataset"
    if scanned[file].unreadable(offset):  # type: ignore[arg-type]
        return None  # the damage is reported once, for the file
    at = scanned[file].records.get(offset)  # type: ignore[arg-type]
    if at is None:
        return f"points at {file} offset {offset}, where no record starts"
    if at.record_id != record_id:
        return f"points at {record_id} but {file} offset {offset} holds {at.record_id}"
    return None
