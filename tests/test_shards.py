"""Shard members are written from a header template: the same bytes as tarfile and webdataset."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest
import webdataset as wds

from builder.shards import SHARD_MTIME, OpenShard, read_shard_members, write_whole_shard


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
