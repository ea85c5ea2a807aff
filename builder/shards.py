"""WebDataset shards, written atomically and reproducibly.

A shard is written as `NNNNNN.tar.tmp` and renamed to `NNNNNN.tar` only when complete. While
it is open, the pipeline records in the ledger the byte offset after the last member it has
made durable (`data_end`); a resumed build truncates the temporary file to that offset and
appends from there. Tar members are independent 512-byte-aligned records with fixed mtime,
owner and mode, so a resumed shard is byte-identical to one written without interruption.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import webdataset as wds

from builder.errors import UserError

SHARD_MTIME = 1_577_836_800  # 2020-01-01T00:00:00Z: fixed so identical input gives identical bytes
KEY_RE = re.compile(r"^[0-9a-z_-]+$")
WRITE_BUFFER = 8 << 20


def shard_name(shard: int) -> str:
    return f"{shard:06d}.tar"


def shard_path(shards_dir: Path, shard: int) -> Path:
    return shards_dir / shard_name(shard)


def temp_path(shards_dir: Path, shard: int) -> Path:
    return shards_dir / (shard_name(shard) + ".tmp")


class _AppendableTarWriter(wds.TarWriter):
    """webdataset's TarWriter on a plain (not streamed) tarfile.

    Stream mode buffers whole records in memory, so the file never ends at a member boundary;
    plain mode writes each member through, which is what lets us record a durable offset.
    """

    @staticmethod
    def tarmode(fileobj: object, compress: object = None) -> str:
        return "w"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _HashingWriter:
    """The file object tarfile writes through: every byte also goes into the digest."""

    def __init__(self, file: BinaryIO, digest: Any) -> None:
        self.file = file
        self.digest = digest

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.file.write(data)

    def tell(self) -> int:
        return self.file.tell()


def _tar_writer(file: BinaryIO, digest: Any) -> _AppendableTarWriter:
    writer = _AppendableTarWriter(
        _HashingWriter(file, digest), user="cleanset", group="cleanset",
        mode=0o444, encoder=False, mtime=SHARD_MTIME,
    )
    # Our member names and sizes always fit a plain ustar header, which is exactly what the
    # PAX format writes for them, minus building (and discarding) a PAX dict for every
    # member: the same bytes for ~10% less of the writer's time.
    writer.tarstream.format = tarfile.USTAR_FORMAT
    return writer


def write_whole_shard(path: Path, samples: Iterable[tuple[str, dict[str, bytes]]]
                      ) -> tuple[int, int, str]:
    """Write a complete shard to `path` in one go (a worker writing for the driver), durably;
    (data_end, size, sha256), data_end being where the end-of-archive blocks start. The same
    bytes as OpenShard writing the same samples."""
    digest = hashlib.sha256()
    with path.open("wb", buffering=WRITE_BUFFER) as file:
        writer = _tar_writer(file, digest)
        for key, members in samples:
            if not KEY_RE.match(key):
                raise ValueError(f"unsafe sample key {key!r}")
            writer.write({"__key__": key, **members})
        data_end = int(writer.tarstream.offset)
        writer.close()
        file.flush()
        os.fsync(file.fileno())
        size = file.tell()
    return data_end, size, digest.hexdigest()


class OpenShard:
    """The one shard currently being filled."""

    def __init__(self, shards_dir: Path, shard: int, data_end: int = 0, samples: int = 0) -> None:
        self.shards_dir = shards_dir
        self.shard = shard
        self.samples = samples
        self.tmp = temp_path(shards_dir, shard)
        final = shard_path(shards_dir, shard)
        if not self.tmp.exists() and final.exists():
            # Crash after the rename but before the ledger recorded completion: the final file
            # holds everything committed plus what we are about to rewrite identically.
            os.replace(final, self.tmp)
        if not self.tmp.exists():
            if data_end:
                raise UserError(
                    f"{self.tmp}: the ledger says {samples} samples ({data_end} bytes) of shard "
                    f"{shard} were written, but the file is gone. The output directory was "
                    "modified outside cleanset; restore the file or build into a new directory."
                )
            self.tmp.touch()
        # A large buffer turns tarfile's many small writes into few syscalls: every syscall
        # releases the GIL, and getting it back from busy worker threads is what costs.
        self.file: BinaryIO = self.tmp.open("r+b", buffering=WRITE_BUFFER)
        size = self.file.seek(0, os.SEEK_END)
        if size < data_end:
            raise UserError(
                f"{self.tmp}: is {size} bytes but the ledger recorded {data_end} durable bytes; "
                "the file was truncated outside cleanset. Build into a new directory."
            )
        self.file.truncate(data_end)
        # The shard's sha256 is computed as it is written (after re-hashing what a resumed
        # shard already holds), instead of reading every finished shard back.
        self.digest = hashlib.sha256()
        self.file.seek(0)
        remaining = data_end
        while remaining:
            chunk = self.file.read(min(remaining, 1 << 20))
            if not chunk:
                break
            self.digest.update(chunk)
            remaining -= len(chunk)
        self.file.seek(data_end)
        self.writer = _tar_writer(self.file, self.digest)

    def write(self, key: str, members: dict[str, bytes]) -> int:
        if not KEY_RE.match(key):
            raise ValueError(f"unsafe sample key {key!r}")
        size = self.writer.write({"__key__": key, **members})
        self.samples += 1
        return size

    @property
    def data_end(self) -> int:
        return int(self.writer.tarstream.offset)

    def sync(self) -> int:
        """Make every member written so far durable; return the durable offset."""
        self.file.flush()
        os.fsync(self.file.fileno())
        return self.data_end

    def finalize(self) -> tuple[Path, int, str]:
        """Close the tar, make it durable and move it to its final name."""
        self.writer.close()  # writes the end-of-archive blocks; our file stays open
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        final = shard_path(self.shards_dir, self.shard)
        os.replace(self.tmp, final)
        fsync_dir(self.shards_dir)
        return final, final.stat().st_size, self.digest.hexdigest()

    def abandon(self) -> None:
        """Close without finishing (on error); the temporary file stays for the resume."""
        try:
            self.file.flush()
        finally:
            self.file.close()


def read_shard_members(path: Path) -> list[tuple[str, bytes]]:
    """Every member of a shard in order, as (name, bytes); for verify and takedown."""
    out: list[tuple[str, bytes]] = []
    with tarfile.open(path, "r:") as tar:
        for info in tar:
            if not info.isfile():
                continue
            f = tar.extractfile(info)
            out.append((info.name, f.read() if f else b""))
    return out
