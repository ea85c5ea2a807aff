"""Shard members are written from a header template: the same bytes as tarfile and webdataset."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest
import webdataset as wds

from builder.shards import (
    SHARD_MTIME,
    BackgroundAppend,
    OpenShard,
    read_shard_members,
    write_whole_shard,
)


def samples() -> list[tuple[str, dict[str, bytes]]]:
    """Members of awkward sizes: empty, one byte, a whole block, a block and one, large."""
    sizes = [0, 1, 511, 512, 513, 1024, 100_000]
    return [(f"{i:010d}", {"jpg": bytes([i % 251]) * size, "json": b'{"key": %d}' % i,
                           "txt": b"" if i % 2 else "caption é".encode()})
            for i, size in enumerate(sizes)]


def webdataset_bytes(items: list[tuple[str, dict[str, bytes]]]) -> bytes:
    """What webdataset's TarWriter (on a plain tarfile, USTAR) writes for the same samples."""
    class Plain(wds.TarWriter):
        @staticmethod
        def tarmode(fileobj: object, compress: object = None) -> str:
            return "w"

    buf = io.BytesIO()
    writer = Plain(buf, user="cleanset", group="cleanset", mode=0o444, encoder=False,
                   mtime=SHARD_MTIME)
    writer.tarstream.format = tarfile.USTAR_FORMAT
    for key, members in items:
        writer.write({"__key__": key, **members})
    writer.close()
    return buf.getvalue()


def test_a_shard_holds_the_bytes_webdataset_and_tarfile_write_for_the_same_samples(
        tmp_path: Path) -> None:
    items = samples()
    path = tmp_path / "000000.tar"

    data_end, size, sha = write_whole_shard(path, items)

    expected = webdataset_bytes(items)
    assert path.read_bytes() == expected
    assert (size, sha) == (len(expected), hashlib.sha256(expected).hexdigest())
    assert expected[data_end:] == b"\0" * (len(expected) - data_end)
    names = [name for name, _ in read_shard_members(path)]
    assert names == [f"{key}.{ext}" for key, members in items for ext in sorted(members)]


def test_an_open_shard_resumed_mid_way_ends_byte_identical_with_the_same_digest(
        tmp_path: Path) -> None:
    items = samples()
    first = OpenShard(tmp_path, 0)
    for key, members in items[:3]:
        first.write(key, members)
    durable = first.sync()
    first.write(*items[3])  # written but never made durable: a crash loses it
    first.abandon()

    resumed = OpenShard(tmp_path, 0, data_end=durable, samples=3)
    for key, members in items[3:]:
        resumed.write(key, members)
    final, size, sha = resumed.finalize()

    expected = webdataset_bytes(items)
    assert final.read_bytes() == expected
    assert sha == hashlib.sha256(expected).hexdigest() and size == len(expected)


def test_a_member_name_longer_than_ustar_holds_is_refused_as_tarfile_refuses_it(
        tmp_path: Path) -> None:
    items = [("0000000001", {"x" * 95: b"data", "json": b"{}"})]

    with pytest.raises(ValueError, match="name is too long"):
        webdataset_bytes(items)
    with pytest.raises(ValueError, match="name is too long"):
        write_whole_shard(tmp_path / "000001.tar", items)


def test_a_shard_of_many_bundles_and_views_is_written_whole_in_order(tmp_path: Path) -> None:
    """Several MiB: the writer thread gets many bundles, images as views (as from a spool)."""
    items = [(f"{i:010d}", {"jpg": memoryview(bytes([i]) * (200_000 + 777 * i)),
                            "json": b'{"n": %d}' % i, "txt": b"x" * (i % 3)})
             for i in range(40)]
    shard = OpenShard(tmp_path, 0)
    for key, members in items[:25]:
        shard.write(key, members)
    durable = shard.sync()
    assert (tmp_path / "000000.tar.tmp").stat().st_size == durable  # all of it on disk
    for key, members in items[25:]:
        shard.write(key, members)
    final, size, sha = shard.finalize()

    plain = [(key, {ext: bytes(data) for ext, data in members.items()}) for key, members in items]
    expected = webdataset_bytes(plain)
    assert final.read_bytes() == expected
    assert (size, sha) == (len(expected), hashlib.sha256(expected).hexdigest())


def test_a_write_the_shard_thread_could_not_make_is_raised_to_the_writer(
        tmp_path: Path) -> None:
    """A failed write (here: a file open for reading only; in life, a full disk) reaches the
    writer at its next call, and the thread writes nothing after it."""
    path = tmp_path / "000000.tar.tmp"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)
    try:
        sink = BackgroundAppend(hashlib.sha256(), fd)
        sink.append([b"a" * (BackgroundAppend.BUNDLE + 1)], BackgroundAppend.BUNDLE + 1)
        with pytest.raises(OSError) as raised:
            sink.drain()
        assert raised.value.errno == errno.EBADF
        with pytest.raises(OSError):
            sink.append([b"b"], 1)
        sink.stop()
        assert not sink.thread.is_alive()
    finally:
        os.close(fd)
    assert path.stat().st_size == 0
