"""WebDataset shards, written atomically and reproducibly.

A shard is written as `NNNNNN.tar.tmp` and renamed to `NNNNNN.tar` only when complete. While
it is open, the pipeline records in the ledger the byte offset after the last member it has
made durable (`data_end`); a resumed build truncates the temporary file to that offset and
appends from there. Tar members are independent 512-byte-aligned records with fixed mtime,
owner and mode, so a resumed shard is byte-identical to one written without interruption.

Members are written by `_TarMembers`, which lays out the same ustar headers as Python's
tarfile (through webdataset's TarWriter, which shards were first written with) from a
precomputed template: tarfile builds a TarInfo, copies it and encodes a dozen fields per
member, which cost the build's one ordered writer more than the bytes themselves.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import queue
import re
import sys
import tarfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

from builder.errors import UserError

SHARD_MTIME = 1_577_836_800  # 2020-01-01T00:00:00Z: fixed so identical input gives identical bytes
KEY_RE = re.compile(r"^[0-9a-z_-]+$")


def shard_name(shard: int) -> str:
    return f"{shard:06d}.tar"


def shard_number(name: str) -> int | None:
    """The shard a file name of `shard_name`'s names (six digits, seven from shard
    1,000,000), or None for any other name: `2024.tar` in shards/ is nobody's shard of ours."""
    stem, dot, ext = name.partition(".")
    if ext != "tar" or not stem.isascii() or not stem.isdigit():
        return None
    number = int(stem)
    return number if shard_name(number) == name else None


def shard_path(shards_dir: Path, shard: int) -> Path:
    return shards_dir / shard_name(shard)


def temp_path(shards_dir: Path, shard: int) -> Path:
    return shards_dir / (shard_name(shard) + ".tmp")


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


BLOCK = tarfile.BLOCKSIZE  # 512
RECORD = tarfile.RECORDSIZE  # 20 blocks: tarfile pads the archive's end to a whole record
_OWNER = "cleanset"
_MODE = 0o444


def _header_template() -> tuple[bytes, bytes, int]:
    """The ustar header fields around name and size that every member shares, and the sum of
    their bytes (the checksum counts its own field as eight spaces)."""
    reference = _tarfile_header("x", 0)
    between = reference[100:124]  # mode, uid, gid
    after = reference[136:148] + b"        " + reference[156:]  # mtime, chksum, type, ...
    return between, after, sum(between) + sum(after)


def _tarfile_header(name: str, size: int) -> bytes:
    """The header tarfile writes for one of our members: the reference _TarMembers matches,
    and what it falls back to for a name that does not fit ustar's 100 bytes."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = SHARD_MTIME
    info.mode = _MODE
    info.uname = info.gname = _OWNER
    return info.tobuf(tarfile.USTAR_FORMAT, tarfile.ENCODING, "surrogateescape")


_BETWEEN, _AFTER, _FIXED_SUM = _header_template()
_MAX_SIZE = 8**11 - 1  # what 11 octal digits hold; ustar cannot say more


class _TarMembers:
    """Lays samples out as tar members and hands their bytes, in order, to `sink` (which
    writes and hashes them); `offset` is where the next member starts (the durable offset
    the ledger records once the sink has written everything before it)."""

    def __init__(self, sink: BackgroundAppend, offset: int) -> None:
        self.sink = sink
        self.offset = offset

    def write_sample(self, key: str, members: dict[str, bytes]) -> int:
        """One member per extension, in sorted order (as webdataset writes them); the bytes
        of data written."""
        if not KEY_RE.match(key):
            raise ValueError(f"unsafe sample key {key!r}")
        parts: list[bytes] = []
        total = 0
        for ext in sorted(members):
            data = members[ext]
            self._member(parts, f"{key}.{ext}", data)
            total += len(data)
        self._write(parts)
        return total

    def _member(self, parts: list[bytes], name: str, data: bytes) -> None:
        size = len(data)
        if size > _MAX_SIZE:
            raise ValueError(f"{name}: {size} bytes is more than a ustar member holds")
        parts.append(self._header(name, size))
        parts.append(data)
        if size % BLOCK:
            parts.append(_ZEROS[:-size % BLOCK])

    def _write(self, parts: list[bytes]) -> None:
        written = sum(len(part) for part in parts)
        self.sink.append(parts, written)
        self.offset += written

    @staticmethod
    def _header(name: str, size: int) -> bytes:
        encoded = name.encode(tarfile.ENCODING, "surrogateescape")
        if len(encoded) > 100:
            return _tarfile_header(name, size)
        padded = encoded.ljust(100, b"\0")
        size_field = b"%011o\0" % size
        checksum = _FIXED_SUM + sum(padded) + sum(size_field)
        # tarfile writes the checksum as six octal digits, a NUL, and keeps the last space.
        after = b"%06o\0 " % checksum + _AFTER[20:]
        return padded + _BETWEEN + size_field + _AFTER[:12] + after

    def close(self) -> None:
        """The end-of-archive: two zero blocks, then zeros to a whole record, as tarfile."""
        end = b"\0" * (2 * BLOCK)
        end += b"\0" * (-(self.offset + len(end)) % RECORD)
        self._write([end])


_ZEROS = bytes(BLOCK)
_IOV_MAX = 1024  # what Linux takes in one writev


def writev_all(fd: int, parts: list[bytes]) -> None:
    """Every byte of `parts`, in order, however many calls a short write takes."""
    views = [memoryview(part) for part in parts if part]
    while views:
        done = os.writev(fd, views[:_IOV_MAX])
        while views and done >= len(views[0]):
            done -= len(views[0])
            views.pop(0)
        if done:
            views[0] = views[0][done:]


def _sync_file_range() -> Callable[[int, int, int], None] | None:
    """Linux's sync_file_range(fd, offset, count, SYNC_FILE_RANGE_WRITE): starts writing a
    range back to the disk and returns at once. None where there is no such call."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.sync_file_range
    except (AttributeError, OSError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    write = 2  # SYNC_FILE_RANGE_WRITE

    def start_writeback(fd: int, offset: int, count: int) -> None:
        call(fd, offset, count, write)  # advisory: a failure here shows up at the fsync

    return start_writeback


_START_WRITEBACK = _sync_file_range() if sys.platform.startswith("linux") else None


class BackgroundAppend:
    """Appends the parts given to `append` to the file `fd` (open for reading too), in
    order, and feeds them to `digest`, on a thread of its own.

    The one ordered writer of a build spent ~75 us per 172 KB sample handing it to the
    kernel and ~0.15 ms hashing its shard; `writev` and hashlib both let go of the GIL, so
    a thread does them beside the writer (on another core when there is one) instead of in
    its way. Each bundle's writeback to the disk is started as soon as it is written, so the
    fsync at a commit waits for the last bundle rather than for the whole window (~64 -> 5
    us per sample here). A write that fails (disk full) is raised to the writer at its next
    `append` or `drain`; nothing after a failed bundle is written."""

    # Parts are handed over in bundles of about this many bytes: every hand-over wakes the
    # thread, and a wake-up per sample cost the writer more than the work it moved away.
    BUNDLE = 1 << 20

    def __init__(self, digest: Any, fd: int, offset: int = 0,
                 path: Path | None = None) -> None:
        self.digest = digest
        self.fd = fd
        self.path = path  # named in a write error (os.writev's own names no file)
        self.written = offset  # where the thread's next bundle goes
        self.buffer = bytearray()
        self.error: BaseException | None = None
        # Bounded (~32 MiB): a writer far ahead of its thread would hold every image it wrote.
        self.bundles: queue.Queue[tuple[list[bytes], int] | None] = queue.Queue(maxsize=32)
        self.bundle: list[bytes] = []
        self.bundled = 0
        self.thread = threading.Thread(target=self._run, name="shard-append", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.bundles.get()) is not None:
            try:
                if self.error is None:
                    self._write(*item)
            except OSError as exc:
                self.error = (OSError(exc.errno, exc.strerror, str(self.path))
                              if self.path is not None and exc.filename is None else exc)
            except BaseException as exc:  # noqa: BLE001 - handed to the writer, see _raise
                self.error = exc
            finally:
                self.bundles.task_done()
        self.bundles.task_done()

    def _write(self, parts: list[bytes], size: int) -> None:
        writev_all(self.fd, parts)
        if _START_WRITEBACK is not None:
            _START_WRITEBACK(self.fd, self.written, size)
        # Hashed from one buffer read back from the page cache, not part by part: every call
        # that lets go of the GIL may wait up to the switch interval (5 ms) to get it back
        # while the writer runs Python, and hashing a bundle's dozens of parts one by one kept
        # this thread waiting more than working (it fell ~30 MB behind at every commit).
        if len(self.buffer) < size:
            self.buffer = bytearray(size)
        view = memoryview(self.buffer)[:size]
        if os.preadv(self.fd, [view], self.written) != size:
            raise OSError(errno.EIO, "read back fewer bytes than were just written (truncated "
                          "by another program?)", str(self.path or self.fd))
        self.digest.update(view)
        self.written += size

    def append(self, parts: list[bytes], size: int) -> None:
        """`parts`, `size` bytes in all, after what was given so far."""
        self._raise()
        self.bundle.extend(parts)
        self.bundled += size
        if self.bundled >= self.BUNDLE:
            self._hand_over()

    def _hand_over(self) -> None:
        if self.bundle:
            self.bundles.put((self.bundle, self.bundled))
            self.bundle, self.bundled = [], 0

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def drain(self) -> None:
        """Return once everything given so far is written (and hashed)."""
        self._hand_over()
        self.bundles.join()
        self._raise()

    def hexdigest(self) -> str:
        """The digest of everything given so far; no append may follow."""
        self.drain()
        self.stop()
        return str(self.digest.hexdigest())

    def stop(self) -> None:
        """End the thread once it has done what it was given (errors stay unraised)."""
        if self.thread.is_alive():
            self._hand_over()
            self.bundles.put(None)
            self.thread.join()


def write_whole_shard(path: Path, samples: Iterable[tuple[str, dict[str, bytes]]]
                      ) -> tuple[int, int, str]:
    """Write a complete shard to `path` in one go (a worker writing for the driver), durably;
    (data_end, size, sha256), data_end being where the end-of-archive blocks start. The same
    bytes as OpenShard writing the same samples."""
    with path.open("w+b", buffering=0) as file:  # read too: the thread hashes what it wrote
        sink = BackgroundAppend(hashlib.sha256(), file.fileno(), path=path)
        try:
            writer = _TarMembers(sink, 0)
            for key, members in samples:
                writer.write_sample(key, members)
            data_end = writer.offset
            writer.close()
            sha256 = sink.hexdigest()
        finally:
            sink.stop()
        os.fsync(file.fileno())
        size = writer.offset
    return data_end, size, sha256


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
        # Unbuffered: _TarMembers writes each sample in one writev (see there).
        self.file: BinaryIO = self.tmp.open("r+b", buffering=0)
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
        self.sink = BackgroundAppend(self.digest, self.file.fileno(), data_end, self.tmp)
        self.writer = _TarMembers(self.sink, data_end)

    def write(self, key: str, members: dict[str, bytes]) -> int:
        size = self.writer.write_sample(key, members)
        self.samples += 1
        return size

    @property
    def data_end(self) -> int:
        return self.writer.offset

    def sync(self) -> int:
        """Make every member written so far durable; return the durable offset."""
        self.sink.drain()
        os.fsync(self.file.fileno())
        return self.data_end

    def finalize(self) -> tuple[Path, int, str]:
        """Close the tar, make it durable and move it to its final name."""
        self.writer.close()  # the end-of-archive blocks; our file stays open
        sha256 = self.sink.hexdigest()
        os.fsync(self.file.fileno())
        self.file.close()
        final = shard_path(self.shards_dir, self.shard)
        os.replace(self.tmp, final)
        fsync_dir(self.shards_dir)
        return final, final.stat().st_size, sha256

    def abandon(self) -> None:
        """Close without finishing (on error); the temporary file stays for the resume."""
        self.sink.stop()
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
