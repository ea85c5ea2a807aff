"""A plain PNG's pixels by libspng, once its image data is stored uncompressed.

builder/png_inflate.py hands Pillow a PNG whose image data ISA-L has inflated and stored
again uncompressed. Pillow still takes ~3 ms over such a PNG of the throughput benchmark's
(1110x685 RGB): it reads the stored stream through its zlib decoder in 64 KB blocks and
unfilters row by row into its 4-byte pixels. libspng (`pyspng`) gives the same pixels from
the same bytes in ~0.5 ms, as an array Pillow then wraps.

Only the plainest PNGs take this way: those whose decoded image is nothing but their
scanlines unfiltered, which libspng and Pillow cannot read differently. 8 bits per channel;
grey, RGB or RGBA; no tRNS chunk (a colour key Pillow records as transparency,
which the canonical image flattens); no acTL (an animation, whose first frame Pillow composes);
and nothing but IEND after the image data, since what follows it is Pillow's to read and
judge (text that may inflate without bound, an eXIf chunk). The image is given the info of
the PNG's header, which is all Pillow's own decode would have. Anything else, or anything
libspng refuses, returns None and Pillow decodes as before, so Pillow alone still gives the
verdict on every file that is not plainly whole. Without pyspng (it has no wheel for Linux on
ARM) it is always None: the same pixels, more slowly.
"""

from __future__ import annotations

import struct

import numpy as np
from PIL import Image

try:
    import pyspng
except ImportError:  # pragma: no cover - the platforms pyproject.toml does not install it on
    pyspng = None

# Colour type -> Pillow's mode for 8 bits per channel, and its channels.
# (libspng 0.7 has no grey+alpha output for a grey+alpha PNG: "invalid format".)
_MODES = {0: ("L", 1), 2: ("RGB", 3), 6: ("RGBA", 4)}
_REFUSED_BEFORE_DATA = (b"tRNS", b"acTL")


def plain_image(stored: bytes, header: Image.Image) -> Image.Image | None:
    """The pixels of `stored` (a PNG as builder/png_inflate.py's `restored` gives it) as a
    Pillow image in the mode and with the info Pillow's own decode has, or None."""
    if pyspng is None or len(stored) < 33:
        return None
    width, height, depth, colour = struct.unpack(">IIBB", stored[16:26])
    mode, channels = _MODES.get(colour, (None, 0))
    if depth != 8 or mode is None or header.mode != mode or not _only_iend_after_data(stored):
        return None
    try:
        pixels = pyspng.load(stored)
    except (RuntimeError, ValueError):
        return None
    expected = (height, width) if channels == 1 else (height, width, channels)
    if pixels.dtype != np.uint8 or pixels.shape != expected:
        return None
    image = Image.frombuffer(mode, (width, height), pixels, "raw", mode, 0, 1)
    image.info = dict(header.info)
    return image


def _only_iend_after_data(stored: bytes) -> bool:
    """Whether the chunks before the one IDAT are none of _REFUSED_BEFORE_DATA and IEND
    follows it."""
    position = 8
    while position + 12 <= len(stored):
        length, kind = struct.unpack_from(">I4s", stored, position)
        position += 12 + length
        if kind in _REFUSED_BEFORE_DATA:
            return False
        if kind == b"IDAT":
            return stored[position + 4:position + 8] == b"IEND"
    return False
