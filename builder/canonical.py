"""The canonical image and its perceptual hashes, in each hash pipeline a dataset may be built with.

A hash pipeline is everything between the decoded pixels and the PDQ + pHash hex: the size,
the resampling, the mode handling, the background, the hash functions. Distances between
hashes of different pipelines mean nothing, so a dataset records its pipeline (ledger meta
`hash_pipeline`) and every later build, lookup and takedown into it hashes with that one.

v2 (Pillow): the decode (a JPEG DCT-scaled by `draft` to at least 256 px) is resized with
Pillow's antialiased BILINEAR to 128x128; PDQ runs on the 128x128 image and pHash is
imagehash's (Pillow LANCZOS to 32x32, scipy DCT).

v3 (OpenCV, a fifth of v2's cost after the decode): the decode (a JPEG DCT-scaled by OpenCV
to at least 256 px) has each axis halved with 2-pixel means while it is at least 512 px,
then one bilinear step of at most 2x (so nothing aliases) to 256x256 and one halving to
128x128.
PDQ runs on that image as in v2; pHash is imagehash's recipe computed as two small matrix
products (see _phash_rows) instead of Pillow's resize and scipy's DCT. On
scripts/bench/hash_robustness.py v3 matches v2's recall on every edit within 2 points, with
no false match among 101,025 unrelated pairs (docs/performance-round2.md).

v4 (luma, v3 on one channel): PDQ and pHash only ever read luminance (PDQ's
0.299/0.587/0.114 is JPEG's own Y; pHash reads the grey image), so v4 keeps only that from
the decode on. A JPEG that reaches EOI is decoded by OpenCV straight to grey at v3's DCT scale
(libjpeg skips the chroma IDCT, upsampling and colour conversion; a CMYK JPEG OpenCV converts
to grey itself); every other image is decoded by Pillow as in v3, flattened on white and
converted to 8-bit grey once, at full size, by Pillow (ITU-R 601-2 weights). The grey image then goes through v3's `shrink`
and orientation, on one channel instead of three. pHash is v3's matrix pHash of that image;
PDQ gets its 64x64 pixels stacked to three equal channels, whose PDQ luma is the grey itself.
On the throughput corpus's JPEGs the image check costs 1.30 ms against v3's 1.78 (decode
0.85 vs 1.11, canonical image 0.17 vs 0.37). Hashes are within a few bits of v3's (median 0;
tests/test_media.py), and on scripts/bench/hash_robustness.py every edit's recall is within
2 points of v2's and v3's, with no false match among 101,025 unrelated pairs
(docs/performance-round2.md).

Every pipeline hands PDQ only the 64x64 pixels it reads (pdq_of_canonical): same bits.
Every pipeline flattens transparency on white, takes the first frame and applies the EXIF
orientation after the resize (the resize is per axis, so it commutes with the transposes).
"""

from __future__ import annotations

import cv2
import imagehash
import numpy as np
import pdqhash
from PIL import Image

V2 = "canon128-draft256-bilinear-white-pdq-phash-v2"
V3 = "canon128-cv2reduced256-halve-linear256-halve-white-pdq-phash-v3"
V4 = "canon128-cv2reduced256luma-halve-linear256-halve-white-pdq-phash-v4"

CANONICAL_SIZE = (128, 128)
# A JPEG is decoded at the smallest DCT scale that keeps at least this size. Not the
# canonical size itself: a DCT-scaled decode landing right on it makes JPEG re-encoding
# artefacts move PDQ by ~30 bits on small images (2 bits with this margin).
DRAFT_SIZE = (256, 256)
_WORK = 256  # v3's and v4's bilinear step lands here, then one halving to 128
BACKGROUND = (255, 255, 255)  # what transparent pixels are flattened onto

# EXIF orientation tag value -> the transpose that makes the image upright (as ImageOps does).
ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

Hashes = tuple[str, int, str]  # PDQ hex (64), PDQ quality 0-100, pHash hex (16)


# -- v2 -------------------------------------------------------------------------------------
def canonical_v2(im: Image.Image, orientation: int | None) -> Image.Image:
    """v2's 128x128 RGB image: Pillow BILINEAR (antialiased) on the decoded mode."""
    small = to_resizable_mode(im).resize(CANONICAL_SIZE, Image.Resampling.BILINEAR)
    rgb = flatten_to_rgb(small)
    if orientation in ORIENTATION:
        rgb = rgb.transpose(ORIENTATION[orientation])
    return rgb


def hashes_v2(canonical: Image.Image) -> Hashes:
    bits, quality = pdq_of_canonical(np.asarray(canonical))
    phash = str(imagehash.phash(canonical))
    return _pdq_hex(bits), int(quality), phash


# -- v3 -------------------------------------------------------------------------------------
def canonical_v3_from_pillow(im: Image.Image, orientation: int | None) -> np.ndarray:
    """v3's 128x128 RGB array from a Pillow decode (every format but a clean JPEG)."""
    rgb = np.asarray(flatten_to_rgb(to_resizable_mode(im)))
    return _oriented(shrink(rgb), orientation)


def canonical_v3_from_bgr(bgr: np.ndarray, orientation: int | None) -> np.ndarray:
    """v3's 128x128 RGB array from an OpenCV decode (BGR channel order)."""
    return _oriented(np.ascontiguousarray(shrink(bgr)[:, :, ::-1]), orientation)


def shrink(pixels: np.ndarray) -> np.ndarray:
    """Any HxWx3 or HxW array to 128x128 without aliasing: each axis halved (2-pixel means) while
    it is at least 512 px, one bilinear step of at most 2x to 256x256, one halving to 128.

    A bilinear resize by exactly 2 samples midway between two pixels, so it is the 2-pixel
    mean, on OpenCV's fast path for one axis alone too (INTER_AREA, the same means, is 5x
    slower for a 2x1 step). Ending with a halving from 256 rather than one bilinear step
    to 128 keeps recall on crops and watermarks (scripts/bench/hash_robustness.py).
    """
    while True:
        height, width = pixels.shape[:2]
        halve_w, halve_h = width >= 2 * _WORK, height >= 2 * _WORK
        if not (halve_w or halve_h):
            break
        # An odd last row or column is dropped so the step is exactly 2x.
        rows = height - height % 2 if halve_h else height
        cols = width - width % 2 if halve_w else width
        size = (cols // 2 if halve_w else cols, rows // 2 if halve_h else rows)
        pixels = cv2.resize(pixels[:rows, :cols], size, interpolation=cv2.INTER_LINEAR)
    work = cv2.resize(pixels, (_WORK, _WORK), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(work, CANONICAL_SIZE, interpolation=cv2.INTER_LINEAR)


def _oriented(pixels: np.ndarray, orientation: int | None) -> np.ndarray:
    """RGB (HxWx3) or grey (HxW) pixels turned upright."""
    if orientation not in ORIENTATION:
        return pixels
    return np.asarray(Image.fromarray(pixels).transpose(ORIENTATION[orientation]))


def hashes_v3(canonical: np.ndarray) -> Hashes:
    bits, quality = pdq_of_canonical(canonical)
    phash = _matrix_phash(cv2.cvtColor(canonical, cv2.COLOR_RGB2GRAY))
    return _pdq_hex(bits), int(quality), phash


def _matrix_phash(grey: np.ndarray) -> str:
    """imagehash's pHash of a 128x128 grey image, as two matrix products (see _phash_rows)."""
    low = _PHASH_ROWS @ grey.astype(np.float32) @ _PHASH_ROWS.T  # the 8x8 lowest frequencies
    return np.packbits(low > _median64(low)).tobytes().hex()


def _median64(low: np.ndarray) -> np.float32:
    """np.median of the 64 coefficients, the same float32 (the mean of the 32nd and 33rd),
    in a sixth of its time: np.median's generic machinery costs more than the sorting."""
    middle = np.partition(low.ravel(), (31, 32))
    return np.float32((middle[31] + middle[32]) / np.float32(2))


def _phash_rows(size: int = CANONICAL_SIZE[0], reduced: int = 32, kept: int = 8) -> np.ndarray:
    """The 8x128 matrix R with R @ grey @ R.T = imagehash's pHash coefficients of `grey`.

    imagehash resizes to 32x32 with Pillow's antialiased Lanczos, takes the unnormalised
    DCT-II of that and keeps its 8x8 lowest frequencies. Both steps are linear and separable,
    so one matrix per axis (DCT rows times Lanczos weights, built as Pillow builds them) does
    both at once: the same bits as imagehash on all but a few coefficients that sit on the
    median (Pillow rounds its 32x32 to 8 bits), for a twentieth of the cost.
    """
    scale = size / reduced
    support = 3.0 * scale  # Lanczos-3, stretched by the reduction as Pillow does
    weights = np.zeros((reduced, size))
    for out in range(reduced):
        centre = (out + 0.5) * scale
        first = max(int(centre - support + 0.5), 0)
        last = min(int(centre + support + 0.5), size)
        offsets = (np.arange(first, last) - centre + 0.5) / scale
        taps = np.where(np.abs(offsets) < 3, np.sinc(offsets) * np.sinc(offsets / 3), 0.0)
        weights[out, first:last] = taps / taps.sum()
    freq = np.arange(kept)[:, None]
    dct = 2 * np.cos(np.pi * freq * (2 * np.arange(reduced) + 1) / (2 * reduced))
    return (dct @ weights).astype(np.float32)


_PHASH_ROWS = _phash_rows()


# -- v4 -------------------------------------------------------------------------------------
def canonical_v4_from_pillow(im: Image.Image, orientation: int | None) -> np.ndarray:
    """v4's 128x128 grey array from a Pillow decode (every format but a clean JPEG)."""
    return _oriented(shrink(luma(im)), orientation)


def canonical_v4_from_grey(grey: np.ndarray, orientation: int | None) -> np.ndarray:
    """v4's 128x128 grey array from OpenCV's grey decode of a JPEG."""
    return _oriented(shrink(grey), orientation)


def luma(im: Image.Image) -> np.ndarray:
    """The 8-bit grey of any decoded mode, transparency flattened on white first (as v3)."""
    resizable = to_resizable_mode(im)
    if resizable.mode == "L":  # grey to RGB and back is the identity: skip both
        return np.asarray(resizable)
    # Pillow's own conversion (ITU-R 601-2 weights, as PDQ's): in C, on the decoded image,
    # without first copying all three channels out (a quarter of that copy plus cvtColor).
    return np.asarray(flatten_to_rgb(resizable).convert("L"))


def hashes_v4(grey: np.ndarray) -> Hashes:
    """PDQ and pHash of v4's 128x128 grey image: v3's hashes of an image whose channels
    are all `grey`, without making that image."""
    # PDQ wants three channels; (Y, Y, Y) has PDQ luma Y. Only the 64x64 pixels PDQ reads
    # are stacked (pdq_of_canonical): cv2.merge does it in a third of np.repeat's time.
    read = np.ascontiguousarray(grey[1::2, 1::2])
    bits, quality = pdqhash.compute(cv2.merge((read, read, read)))
    return _pdq_hex(bits), int(quality), _matrix_phash(grey)


# -- shared ---------------------------------------------------------------------------------
def pdq_of_canonical(rgb: np.ndarray) -> tuple[np.ndarray, int]:
    """PDQ of a 128x128 image, from the 64x64 pixels PDQ itself would use: a third of the cost.

    PDQ reduces its input to 64x64 with a box filter whose window, (128 + 127) // 128 = 1
    pixel at this size, keeps single pixels; its decimation then reads pixel 2i + 1 of each
    axis. Handing it those pixels gives the same bits and quality (tests/test_media.py).
    """
    return pdqhash.compute(np.ascontiguousarray(rgb[1::2, 1::2]))


def _pdq_hex(bits: np.ndarray) -> str:
    # pdqhash lists bit 255 first, so big-endian packing gives the reference hex layout.
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex()


def to_resizable_mode(im: Image.Image) -> Image.Image:
    """Bring any decoded mode to one of L, LA, RGB, RGBA, which resize handles with filtering."""
    mode = im.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        return im
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        return im.convert("RGBA" if has_alpha else "RGB")
    if mode == "1":
        return im.convert("L")
    if mode.startswith(("I", "F")):
        return _high_depth_to_l(im)
    if mode == "La":
        return im.convert("LA")
    if mode == "RGBa":
        return im.convert("RGBA")
    return im.convert("RGB")  # CMYK, YCbCr, RGBX, LAB, HSV


def _high_depth_to_l(im: Image.Image) -> Image.Image:
    """16-bit and float greyscale to 8 bits by scaling, not clipping (clipping turns it white)."""
    arr = np.asarray(im).astype(np.float64)
    if im.mode == "F":
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    elif im.mode.startswith("I;16") or arr.max() > 255:
        arr = arr / 257.0
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))


def flatten_to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("RGBA", "LA"):
        rgba = im.convert("RGBA")
        base = Image.new("RGB", im.size, BACKGROUND)
        base.paste(rgba, mask=rgba.getchannel("A"))
        return base
    return im.convert("RGB") if im.mode != "RGB" else im
