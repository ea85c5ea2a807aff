"""Does a JPEG's marker structure run from SOI to EOI within the bytes? A cheap completeness test.

OpenCV's decoder (libjpeg) does not fail on a truncated JPEG: it warns and fills the missing
rows with grey. Pillow fails because it notices the data ran out while libjpeg still wanted
more. The same fact can be read from the structure without decoding: the header segments are
walked by their declared lengths, each scan's entropy-coded data runs to the next marker
(0xFF followed by a byte other than 0x00 stuffing, a restart marker or fill), and a complete
file reaches EOI. A file whose bytes end first is what Pillow calls truncated; the image check
then lets Pillow's own decode judge it (builder/media.py), so this test only decides when a
file is plainly complete, and never accepts what Pillow would refuse.
"""

from __future__ import annotations

import numpy as np

_EOI = 0xD9
_SOS = 0xDA
# Markers without a length field: TEM and RST0-RST7 (SOI only ever comes first).
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


def reaches_eoi(data: bytes) -> bool:
    """True when the segments and scans of `data` (which starts with SOI) end with an EOI.

    Trailing bytes after EOI (a camera's trailer, a second image) do not matter, as they do
    not to libjpeg. False for anything that stops early or does not parse as segments.
    """
    end = len(data)
    pos = 2  # after SOI
    scan_markers: np.ndarray | None = None
    while pos + 2 <= end:
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == _EOI:
            return True
        if marker in _STANDALONE:
            pos += 2
            continue
        if pos + 4 > end:
            return False
        length = (data[pos + 2] << 8) | data[pos + 3]
        if length < 2:
            return False
        pos += 2 + length
        if marker == _SOS:
            if scan_markers is None:  # found once: progressive files have many scans
                scan_markers = _marker_positions(data, pos)
            pos = _next_marker(scan_markers, pos)
            if pos < 0:
                return False
    return False


def _marker_positions(data: bytes, start: int) -> np.ndarray:
    """Positions at or after `start` of every 0xFF that begins a marker inside scan data.

    In entropy-coded data a 0xFF is followed by 0x00 (a stuffed byte), by RST0-7 (which stay
    inside the scan) or by more 0xFF (fill); anything else ends the scan. Positions inside a
    later segment's body may be listed too; they are skipped because a search always starts
    past the segment it is in.
    """
    tail = np.frombuffer(data, dtype=np.uint8, offset=start)
    ff = np.flatnonzero(tail[:-1] == 0xFF)
    following = tail[ff + 1]
    ends_scan = (following != 0x00) & (following != 0xFF) & ((following < 0xD0)
                                                             | (following > 0xD7))
    return ff[ends_scan] + start


def _next_marker(positions: np.ndarray, pos: int) -> int:
    """The first listed marker at or after `pos`, or -1 when the data ends first."""
    index = int(np.searchsorted(positions, pos))
    return int(positions[index]) if index < len(positions) else -1
