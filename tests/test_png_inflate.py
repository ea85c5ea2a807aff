"""PNG image data inflated by ISA-L: the same pixels as Pillow's own decode, and Pillow's
verdict, unchanged, on every PNG that is not plainly whole."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps, PngImagePlugin

from builder.media import check_image, hamming
from builder.png_inflate import LARGEST, restored
from builder.recipe import ImageConfig
from builder.records import ImageInfo, Rejection

CONFIG = ImageConfig(min_width=1, min_height=1)
SIGNATURE = b"\x89PNG\r\n\x1a\n"
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2))


def chunk(kind: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body)))


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out, position = [], 8
    while position < len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        out.append((data[position + 4:position + 8], data[position + 8:position + 8 + length]))
        position += 12 + length
    return out


def png_of(parts: list[tuple[bytes, bytes]]) -> bytes:
    return SIGNATURE + b"".join(chunk(kind, body) for kind, body in parts)


def photo(seed: int, size: tuple[int, int]) -> np.ndarray:
    """Smooth colour with grain: compresses like a photograph (every PNG filter in use)."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray((rng.random((5, 7, 3)) * 255).astype(np.uint8))
    smooth = np.asarray(coarse.resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
    return np.clip(smooth + rng.integers(-12, 13, smooth.shape), 0, 255).astype(np.uint8)


def encode(im: Image.Image, **params) -> bytes:
    out = io.BytesIO()
    im.save(out, "PNG", **params)
    return out.getvalue()


def interlaced(pixels: np.ndarray) -> bytes:
    """An Adam7 PNG of 8-bit RGB pixels (Pillow and OpenCV write none)."""
    height, width = pixels.shape[:2]
    raw = b"".join(b"\x00" + row.tobytes() for x0, y0, dx, dy in ADAM7
                   for row in pixels[y0::dy, x0::dx] if row.size)
    return png_of([(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1)),
                   (b"IDAT", zlib.compress(raw, 6)), (b"IEND", b"")])


def png_kinds() -> dict[str, bytes]:
    rgb = Image.fromarray(photo(1, (300, 200)))
    odd = Image.fromarray(photo(2, (37, 29)))
    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray(photo(3, (300, 200))[:, :, 0]))
    palette = rgb.quantize(64)
    palette.info["transparency"] = 5
    wide16 = (photo(4, (120, 90)).astype(np.uint16) * 257)[:, :, ::-1]
    frames = [rgb, Image.fromarray(photo(5, (300, 200)))]
    kinds = {
        "rgb": encode(rgb),
        "rgb, many IDAT chunks": encode(Image.fromarray(photo(6, (700, 500)))),
        "rgb, level 9": encode(rgb, compress_level=9),
        "rgb, stored already": encode(odd, compress_level=0),
        "rgba": encode(rgba),
        "grey": encode(rgb.convert("L")),
        "grey + alpha": encode(rgba.convert("LA")),
        "1 bit, odd width": encode(odd.convert("1")),
        "palette + transparency": encode(palette, transparency=5),
        "grey 16 bit": encode(Image.fromarray(wide16[:, :, 0])),
        "rgb 16 bit": cv2.imencode(".png", wide16)[1].tobytes(),
        "rgba 16 bit": cv2.imencode(".png", np.dstack([wide16, wide16[:, :, :1]]))[1].tobytes(),
        "interlaced, odd size": interlaced(photo(7, (37, 29))),
        "interlaced": interlaced(photo(8, (300, 200))),
        "animated": encode(frames[0], save_all=True, append_images=frames[1:]),
    }
    return kinds


def pillow_decode(data: bytes) -> Image.Image | None:
    """Pillow's own decode of the bytes as they are, or None where it refuses them."""
    try:
        im = PngImagePlugin.PngImageFile(io.BytesIO(data))
        im.load()
    except Exception:  # noqa: BLE001 - any refusal is the verdict compared
        return None
    return im


def same_image(one: Image.Image, two: Image.Image) -> bool:
    return (one.mode == two.mode and one.size == two.size
            and np.array_equal(np.asarray(one), np.asarray(two))
            and one.getpalette() == two.getpalette()
            and one.info.get("transparency") == two.info.get("transparency"))


@pytest.mark.parametrize("kind", list(png_kinds()))
def test_a_plain_png_is_inflated_by_isal_to_exactly_pillow_s_own_pixels(kind):
    data = png_kinds()[kind]
    stored = restored(data)

    assert stored is not None
    assert same_image(pillow_decode(stored), pillow_decode(data))
    idats = [body for name, body in chunks(stored) if name == b"IDAT"]
    assert len(idats) == 1 and zlib.decompress(idats[0])  # one stored zlib stream, checksummed
    assert [name for name, _ in chunks(stored) if name != b"IDAT"] == [
        name for name, _ in chunks(data) if name != b"IDAT"]
    assert isinstance(check_image(data, CONFIG), ImageInfo)


def test_every_damaged_png_gets_pillow_s_verdict_and_pillow_s_pixels():
    """Truncated anywhere, bytes overwritten or lost: the check refuses exactly what Pillow
    refuses, and where both accept, `restored` either gives Pillow's pixels or stays out."""
    rng = np.random.default_rng(31)
    checked = 0
    for name, data in png_kinds().items():
        if name in ("rgb, many IDAT chunks", "rgb, level 9"):
            continue  # the same structure as "rgb", ten times the bytes to try
        damaged = [data[:cut] for cut in range(8, len(data), max(1, len(data) // 60))]
        damaged += [data[:-cut] for cut in range(1, 16)]
        for _ in range(25):
            copy = bytearray(data)
            for at in rng.integers(33, len(data), int(rng.integers(1, 4))):
                copy[int(at)] = int(rng.integers(0, 256))
            damaged.append(bytes(copy))
        for _ in range(10):
            at = int(rng.integers(33, len(data) - 40))
            damaged.append(data[:at] + data[at + int(rng.integers(1, 30)):])
        for bad in damaged:
            theirs = pillow_decode(bad)
            ours = check_image(bad, CONFIG)
            assert isinstance(ours, Rejection) == (theirs is None), (name, len(bad))
            stored = restored(bad)
            if stored is not None:
                assert theirs is not None and same_image(pillow_decode(stored), theirs), name
            checked += 1
    assert checked > 1000


def test_a_png_that_is_not_plainly_whole_is_left_to_pillow():
    data = png_kinds()["rgb"]
    parts = chunks(data)
    head = [part for part in parts if part[0] not in (b"IDAT", b"IEND")]
    stream = b"".join(body for kind, body in parts if kind == b"IDAT")
    raw = zlib.decompress(stream)
    width, height = struct.unpack(">II", parts[0][1][:8])
    half = len(stream) // 2
    flags = stream[1] & 0xC0 | 0x20  # the level bits kept, FDICT set
    flags |= (31 - (stream[0] << 8 | flags) % 31) % 31  # FCHECK
    fdict = bytes([stream[0], flags]) + stream[2:]
    shorter = struct.pack(">II", width, height - 1) + parts[0][1][8:]
    cases = {
        "junk after the zlib stream": [*head, (b"IDAT", stream + b"junk"), (b"IEND", b"")],
        "two runs of IDAT": [*head, (b"IDAT", stream[:half]), (b"tEXt", b"a\x00b"),
                             (b"IDAT", stream[half:]), (b"IEND", b"")],
        "a preset dictionary": [*head, (b"IDAT", fdict), (b"IEND", b"")],
        "more data than the header's size": [(b"IHDR", shorter), *head[1:],
                                             (b"IDAT", stream), (b"IEND", b"")],
        "less data than the header's size": [*head, (b"IDAT", zlib.compress(raw[:-50])),
                                             (b"IEND", b"")],
        "no IEND": [*head, (b"IDAT", stream)],
    }
    for name, case in cases.items():
        assert restored(png_of(case)) is None, name
        bad = png_of(case)
        assert isinstance(check_image(bad, CONFIG), Rejection) == (pillow_decode(bad) is None)


def test_a_png_s_orientation_after_its_image_data_still_turns_its_hashes():
    """An eXIf chunk may follow the image data; the hashes follow its orientation."""
    im = Image.fromarray(photo(9, (300, 200)))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to show
    tagged = chunks(encode(im, exif=exif.tobytes()))
    exif_chunk = next(part for part in tagged if part[0] == b"eXIf")
    moved = [part for part in tagged if part[0] not in (b"eXIf", b"IEND")]
    after_data = png_of([*moved, exif_chunk, (b"IEND", b"")])
    shown = ImageOps.exif_transpose(pillow_decode(after_data))
    upright = check_image(encode(shown), CONFIG)
    unturned = check_image(encode(im), CONFIG)

    result = check_image(after_data, CONFIG)

    assert restored(after_data) is not None
    assert shown.size == (200, 300)
    assert hamming(result.pdq, upright.pdq) <= 8
    assert hamming(result.pdq, unturned.pdq) > 64


def test_a_png_of_more_image_data_than_is_inflated_in_memory_is_left_to_pillow():
    row = 1 + 4096 * 4  # RGBA, 8 bits

    def blank(rows: int) -> bytes:
        packer, empty = zlib.compressobj(1), bytes(row)
        stream = b"".join(packer.compress(empty) for _ in range(rows)) + packer.flush()
        return png_of([(b"IHDR", struct.pack(">IIBBBBB", 4096, rows, 8, 6, 0, 0, 0)),
                       (b"IDAT", stream), (b"IEND", b"")])

    assert restored(blank(LARGEST // row)) is not None
    assert restored(blank(LARGEST // row + 1)) is None
