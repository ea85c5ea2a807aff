"""A PNG's image data inflated by ISA-L, handed to Pillow uncompressed.

Most of a photo-like PNG's decode is zlib's inflate: 5 of Pillow's 7 ms for a 900 KB PNG of
1110x685 (the throughput benchmark's PNGs), the same in OpenCV. ISA-L (`isal`) inflates
the same stream in ~2.5 ms. `restored` inflates the image data (the IDAT chunks, one zlib
stream) with it and writes the PNG again with that data in one IDAT chunk as an
uncompressed ("stored") zlib stream; Pillow's own PNG decoder then does everything else on
the same decompressed bytes: unfiltering, interlacing, palettes, transparency, and every
check it makes on the rest of the file, whose bytes are unchanged.

Only a plainly whole image takes this way: a zlib stream ISA-L reads to its end with a
matching Adler-32, nothing after it, exactly the bytes the header's size, colour type, bit
depth and interlacing call for, and one run of IDAT chunks inside the file. Anything else
returns None, and Pillow decodes the original bytes as it always did, so it alone gives the
verdict on whatever is truncated, corrupt or odd. The output is bounded by what the header
declares (already held to the recipe's pixel cap), so no stream inflates past it, and an image
of more than LARGEST bytes of image data is left to Pillow too.
"""

from __future__ import annotations

import struct

from isal import isal_zlib

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Channels per colour type (PNG spec 11.2.2): grey, RGB, palette, grey+alpha, RGBA.
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
# Adam7's passes: first column, first row, column step, row step.
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))
_STORED_BLOCK = 0xFFFF  # the most a stored deflate block holds
# The inflated data is held twice (as inflated, and stored in the PNG again) next to the
# image Pillow decodes, where Pillow alone holds one row at a time: past ~20 megapixels of
# RGB (a camera's photo, several decoded at once in a worker's threads), Pillow alone.
LARGEST = 64 << 20


def restored(data: bytes) -> bytes | None:
    """`data`, a PNG, with its image data stored uncompressed, or None (see the module)."""
    expected = _raw_size(data)
    if expected is None or expected > LARGEST:
        return None
    run = _idat_run(data)
    if run is None:
        return None
    start, end, parts = run
    stream = b"".join(parts)
    if not _plain_zlib_header(stream):
        return None
    inflater = isal_zlib.decompressobj()
    try:
        raw = inflater.decompress(stream, expected + 1)
    except isal_zlib.error:
        return None
    if len(raw) != expected or not inflater.eof or inflater.unused_data:
        return None
    return b"".join([data[:start], *_idat_chunk(raw, stream[-4:]), data[end:]])


def _raw_size(data: bytes) -> int | None:
    """The bytes of filtered scanlines the IHDR chunk calls for, or None."""
    if data[:8] != _SIGNATURE or data[12:16] != b"IHDR" or len(data) < 33:
        return None
    (length, width, height, depth, colour, compression, filtering,
     interlace) = struct.unpack(">I4xIIBBBBB", data[8:29])
    if (length != 13 or depth not in _DEPTHS.get(colour, ()) or compression or filtering
            or interlace not in (0, 1) or not width or not height):
        return None
    bits = _CHANNELS[colour] * depth
    if not interlace:
        return height * (1 + (width * bits + 7) // 8)
    size = 0
    for x0, y0, dx, dy in _ADAM7:
        columns, rows = (width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy
        if columns and rows:
            size += rows * (1 + (columns * bits + 7) // 8)
    return size


def _idat_run(data: bytes) -> tuple[int, int, list[memoryview]] | None:
    """Where the one run of IDAT chunks starts and ends, and their payloads; None when a
    chunk runs past the end of the file, there is no IEND, or IDAT chunks are apart."""
    view = memoryview(data)
    position, start, end, parts = 8, None, None, []
    while position + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        following = position + 12 + length
        if length > 0x7FFFFFFF or following > len(data):
            return None
        if kind == b"IDAT":
            if end is not None:
                return None  # a second run: not a valid PNG, left to Pillow
            if start is None:
                start = position
            parts.append(view[position + 8:position + 8 + length])
        elif start is not None and end is None:
            end = position
        if kind == b"IEND":
            return (start, end, parts) if start is not None and end is not None else None
        position = following
    return None


def _plain_zlib_header(stream: bytes) -> bool:
    """Deflate, a window of at most 32 KB, no preset dictionary, check bits right: what zlib
    accepts (Pillow's inflate refuses the rest, and ISA-L may not look)."""
    if len(stream) < 6:
        return False
    method, flags = stream[0], stream[1]
    return (method & 0x0F == 8 and method >> 4 <= 7 and not flags & 0x20
            and (method << 8 | flags) % 31 == 0)


def _idat_chunk(raw: bytes, adler: bytes) -> list[bytes | memoryview]:
    """One IDAT chunk holding `raw` as a stored zlib stream (its Adler-32 is the original
    stream's, checked by the inflate: the same bytes)."""
    view = memoryview(raw)
    pieces: list[bytes | memoryview] = [b"IDAT", b"\x78\x01"]
    for offset in range(0, len(raw), _STORED_BLOCK):
        block = view[offset:offset + _STORED_BLOCK]
        final = offset + _STORED_BLOCK >= len(raw)
        pieces += [struct.pack("<BHH", final, len(block), len(block) ^ 0xFFFF), block]
    pieces.append(adler)
    crc = 0
    for piece in pieces:
        crc = isal_zlib.crc32(piece, crc)
    length = sum(len(piece) for piece in pieces) - 4
    return [struct.pack(">I", length), *pieces, struct.pack(">I", crc)]
