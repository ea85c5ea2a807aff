"""A plain PNG's pixels by libspng (builder/png_pixels.py): Pillow's own pixels and info for
the PNGs that take that way, Pillow's own decode and verdict for every other, and the same
hashes either way in every hash pipeline."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from builder import canonical
from builder.media import HASH_PIPELINES, check_image, hamming
from builder.png_inflate import restored
from builder.png_pixels import plain_image
from builder.records import ImageInfo, Reason, Rejection
from tests.test_png_inflate import (
    CONFIG,
    chunks,
    encode,
    photo,
    pillow_decode,
    png_kinds,
    png_of,
    same_image,
)

pytest.importorskip("pyspng")  # not installed where it has no wheel (Linux on ARM)

TAKEN = {"rgb", "rgb, many IDAT chunks", "rgb, level 9", "rgb, stored already", "rgba", "grey",
         "interlaced, odd size", "interlaced"}


def header_of(data: bytes) -> Image.Image:
    return PngImagePlugin.PngImageFile(io.BytesIO(data))


def pillow_hashes(data: bytes, pipeline: str) -> tuple[str, int, str]:
    """The hashes of Pillow's own decode of the bytes as they are, in `pipeline`."""
    im = pillow_decode(data)
    assert im is not None
    orientation = im.getexif().get(0x0112)
    if pipeline == canonical.V2:
        return canonical.hashes_v2(canonical.canonical_v2(im, orientation))
    if pipeline == canonical.V3:
        return canonical.hashes_v3(canonical.canonical_v3_from_pillow(im, orientation))
    return canonical.hashes_v4(canonical.canonical_v4_from_pillow(im, orientation))


@pytest.mark.parametrize("kind", list(png_kinds()))
def test_a_plain_png_gets_pillow_s_own_pixels_and_info_and_no_other_takes_this_way(kind):
    data = png_kinds()[kind]

    plain = plain_image(restored(data), header_of(data))

    assert (plain is not None) == (kind in TAKEN), kind
    if plain is not None:
        theirs = pillow_decode(data)
        assert same_image(plain, theirs) and plain.info == theirs.info, kind


@pytest.mark.parametrize("pipeline", HASH_PIPELINES)
def test_every_kind_of_png_hashes_as_pillow_s_own_decode_does_in_every_pipeline(pipeline):
    for kind, data in png_kinds().items():
        info = check_image(data, CONFIG, pipeline=pipeline)

        assert isinstance(info, ImageInfo), kind
        assert (info.pdq, info.pdq_quality, info.phash) == pillow_hashes(data, pipeline), kind


def rgb_with(before: list[tuple[bytes, bytes]] = (), after: list[tuple[bytes, bytes]] = ()
             ) -> bytes:
    """The "rgb" kind with chunks added before its image data and after it."""
    parts = chunks(png_kinds()["rgb"])
    data = [part for part in parts if part[0] == b"IDAT"]
    head = [part for part in parts if part[0] not in (b"IDAT", b"IEND")]
    return png_of([*head, *before, *data, *after, (b"IEND", b"")])


def test_text_that_inflates_without_bound_after_the_image_data_keeps_pillow_s_verdict():
    """What follows the image data is Pillow's to read: a zTXt chunk there that inflates past
    Pillow's limit makes the image a decompression bomb, on this way or any other."""
    bomb = zlib.compress(bytes(PngImagePlugin.MAX_TEXT_CHUNK + 1), 9)
    data = rgb_with(after=[(b"zTXt", b"Comment\x00\x00" + bomb)])

    result = check_image(data, CONFIG)

    assert plain_image(restored(data), header_of(data)) is None
    assert pillow_decode(data) is None
    assert isinstance(result, Rejection) and result.reason == Reason.DECOMPRESSION_BOMB


def test_a_colour_key_an_animation_or_text_after_the_data_are_left_to_pillow():
    key = rgb_with(before=[(b"tRNS", struct.pack(">HHH", 12, 34, 56))])
    text_after = rgb_with(after=[(b"tEXt", b"Author\x00someone")])
    one_frame = rgb_with(before=[(b"acTL", struct.pack(">II", 1, 0)),
                                 (b"fcTL", struct.pack(">IIIIIHHBB", 0, 300, 200, 0, 0, 1, 1,
                                                       0, 0))])

    for name, data in {"tRNS": key, "tEXt after": text_after, "acTL": one_frame}.items():
        assert restored(data) is not None, name
        assert plain_image(restored(data), header_of(data)) is None, name
        assert pillow_decode(data) is not None, name
        assert check_image(data, CONFIG).pdq == pillow_hashes(data, canonical.V4)[0], name


def test_a_png_s_orientation_before_its_image_data_turns_its_hashes_on_this_way():
    im = Image.fromarray(photo(9, (300, 200)))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to show
    data = encode(im, exif=exif.tobytes())
    names = [name for name, _ in chunks(data)]
    upright = check_image(encode(im.transpose(Image.Transpose.ROTATE_270)), CONFIG)

    result = check_image(data, CONFIG)

    assert names.index(b"eXIf") < names.index(b"IDAT")
    assert plain_image(restored(data), header_of(data)) is not None
    assert hamming(result.pdq, upright.pdq) <= 8
    assert result.pdq == pillow_hashes(data, canonical.V4)[0]


def test_a_png_libspng_refuses_gets_pillow_s_decode():
    """A critical chunk neither knows (its name's first letter upper case): libspng refuses
    the file, as the PNG standard says; Pillow skips the chunk, and the check is Pillow's."""
    data = rgb_with(before=[(b"CUST", b"x")])

    assert plain_image(restored(data), header_of(data)) is None
    theirs = pillow_decode(data)
    assert theirs is not None
    assert np.array_equal(np.asarray(theirs), photo(1, (300, 200)))
    assert check_image(data, CONFIG).pdq == pillow_hashes(data, canonical.V4)[0]
