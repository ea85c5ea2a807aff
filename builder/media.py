"""The image check: what the bytes really are, whether they decode, and their perceptual hashes.

One function, `check_image`, turns fetched bytes into an `ImageInfo` or a `Rejection`:

1. the format comes from the magic bytes, never from the URL or the Content-Type;
2. the header is parsed and its size checked against the pixel cap *before* any pixel is decoded;
3. the image is decoded once — a reduced decode for JPEG (DCT scaling) — which is also what
   proves the bytes are complete;
4. that decode is brought to one canonical 128x128 image (EXIF orientation applied, first
   frame, alpha flattened on white; RGB, or grey in v4), and PDQ and pHash are computed from
   it, so the hashes cost little and do not drift with the size of the original.

Steps 3 and 4 follow the dataset's hash pipeline (builder/canonical.py). In v3 and v4 a JPEG
whose marker structure reaches its EOI (builder/jpeg_markers.py) is decoded by OpenCV, a third
faster than Pillow (v4 decodes it straight to grey, cheaper still); any other JPEG, one OpenCV
refuses, and every other format are decoded by Pillow, whose decode is what notices
truncation, as in v2.

The original bytes are never re-encoded; the caller keeps them. Everything here is a pure
function of the bytes and the config, safe to call from threads and processes at once: no
Pillow global is read-modify-written.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import struct
import zlib

import cv2
import numpy as np
from PIL import (
    GifImagePlugin,
    Image,
    ImageFile,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    WebPImagePlugin,
)

from builder import canonical
from builder.canonical import DRAFT_SIZE, Hashes
from builder.jpeg_markers import reaches_eoi
from builder.png_inflate import restored
from builder.png_pixels import plain_image
from builder.recipe import ImageConfig
from builder.records import ImageInfo, Reason, Rejection

# The hash pipeline a new dataset is built with. Hashes from different pipelines are not
# comparable: a dataset keeps the one it was built with (builder/dedup.py), so every pipeline
# a dataset may have been built with stays here. Add a new one, never change one.
HASH_PIPELINE = canonical.V4
HASH_PIPELINES = (canonical.V2, canonical.V3, canonical.V4)

# OpenCV's own thread pool would split each small resize over every core and spin waiting
# for more work; the executors already run one image per thread (img2dataset does the same).
# Measured on the throughput benchmark: ~0.6 ms CPU per image less. One call per process.
cv2.setNumThreads(1)

# OpenCV's reduced JPEG decodes by DCT scale: the same scales Pillow's draft chooses from.
_CV2_REDUCED = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
# v4's: libjpeg outputs the Y component alone (or converts CMYK to grey), so it skips the
# chroma IDCT, upsampling and colour conversion.
_CV2_REDUCED_GREY = {
    1: cv2.IMREAD_GRAYSCALE,
    2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
    4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
    8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
}

MIME = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "gif": "image/gif",
    "tiff": "image/tiff",
}
EXT = {"jpeg": "jpg", "png": "png", "webp": "webp", "gif": "gif", "tiff": "tif"}

# The plugin classes parse only the header when constructed. Calling them directly, rather
# than Image.open, keeps Pillow's process-global MAX_IMAGE_PIXELS out of the decision: the
# recipe's own cap is checked against the header, per call, with no shared state.
_OPENERS: dict[str, type[ImageFile.ImageFile]] = {
    "jpeg": JpegImagePlugin.JpegImageFile,
    "png": PngImagePlugin.PngImageFile,
    "webp": WebPImagePlugin.WebPImageFile,
    "gif": GifImagePlugin.GifImageFile,
    "tiff": TiffImagePlugin.TiffImageFile,
}

# What Pillow raises on bytes it cannot make sense of. Anything else is our bug and propagates.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    struct.error,
    zlib.error,
)

_EXIF_ORIENTATION = 0x0112


def sniff_format(data: bytes) -> str | None:
    """The image format the magic bytes announce: jpeg, png, webp, gif or tiff; else None."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):  # classic and BigTIFF
        return "tiff"
    return None


def _describe_non_image(data: bytes) -> str:
    """A short, loggable guess at what a non-image payload is, for the ledger's detail."""
    if not data:
        return "empty body"
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
        return "looks like HTML"
    if head.startswith(b"%pdf"):
        return "looks like PDF"
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "looks like SVG (vector images are not accepted)"
    if head.startswith((b"{", b"[")):
        return "looks like JSON"
    return f"unrecognised leading bytes {data[:8].hex()}"


def check_image(
    data: bytes, config: ImageConfig, *, perceptual: bool = True,
    pipeline: str = HASH_PIPELINE, sha256: str | None = None,
) -> ImageInfo | Rejection:
    """Validate `data` as an image under `config`; hash it perceptually unless told not to.

    `pipeline` is the dataset's hash pipeline (one of HASH_PIPELINES). Returns ImageInfo with
    the original width/height (as stored, before EXIF orientation) or a Rejection: not_image,
    corrupt_image, decompression_bomb or too_small. `sha256`: of `data`, when the caller
    already has it (the fetcher hashes every response for the evidence archive).
    """
    if pipeline not in HASH_PIPELINES:
        raise ValueError(f"unknown hash pipeline {pipeline!r}; known: {HASH_PIPELINES}")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Process-wide switch that makes truncated files decode "successfully"; someone set it.
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True in this process; the image check "
            "cannot detect truncated images. Leave it False."
        )
    fmt = sniff_format(data)
    if fmt is None:
        return Rejection(Reason.NOT_IMAGE, _describe_non_image(data))
    if fmt not in config.formats:
        return Rejection(
            Reason.NOT_IMAGE,
            f"format {fmt} is not in [image] formats {list(config.formats)}",
        )
    opened = _open_header(data, fmt, config)
    if isinstance(opened, Rejection):
        return opened
    im, width, height = opened
    if width < config.min_width or height < config.min_height:
        return Rejection(
            Reason.TOO_SMALL,
            f"{width}x{height} is below the minimum {config.min_width}x{config.min_height}",
        )
    if pipeline in (canonical.V3, canonical.V4) and fmt == "jpeg":
        decoded = _decode_jpeg_cv2(data, im, width, height, grey=pipeline == canonical.V4)
    elif fmt == "png":
        decoded = _decode_png(data, im)
    else:
        decoded = _decode(im, fmt, want_reduced=perceptual)
    if isinstance(decoded, Rejection):
        return decoded
    pdq = pdq_quality = phash = None
    if perceptual:
        # The decoded image's own EXIF where Pillow decoded it (a PNG's eXIf chunk may follow
        # its image data; asked of the header, Pillow would decode the original again).
        shown = decoded if isinstance(decoded, Image.Image) else im
        pdq, pdq_quality, phash = _hashes(decoded, _orientation(shown), pipeline)
    return ImageInfo(
        mime=MIME[fmt],
        ext=EXT[fmt],
        width=width,
        height=height,
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
        sha1=hashlib.sha1(data).hexdigest(),
        pdq=pdq,
        pdq_quality=pdq_quality,
        phash=phash,
    )


def _open_header(
    data: bytes, fmt: str, config: ImageConfig
) -> tuple[ImageFile.ImageFile, int, int] | Rejection:
    """Parse only the header and enforce the pixel cap before a single pixel is decoded."""
    try:
        im = _OPENERS[fmt](io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # raised by some plugins while parsing frames
        return Rejection(Reason.DECOMPRESSION_BOMB, str(exc))
    except _DECODE_ERRORS as exc:
        return _failure(fmt, "header", exc)
    width, height = im.size
    if width <= 0 or height <= 0:
        return Rejection(Reason.CORRUPT_IMAGE, f"{fmt} header declares {width}x{height}")
    if width * height > config.max_pixels:
        return Rejection(
            Reason.DECOMPRESSION_BOMB,
            f"{width}x{height} = {width * height} pixels exceeds max_pixels {config.max_pixels}",
        )
    return im, width, height


def _decode(im: ImageFile.ImageFile, fmt: str, *, want_reduced: bool) -> Image.Image | Rejection:
    """Decode every byte of the first frame; for JPEG let libjpeg scale down while it does.

    DCT scaling still entropy-decodes the whole scan, so a truncated JPEG fails here as it
    would at full size.
    """
    try:
        if want_reduced and fmt == "jpeg":
            im.draft("RGB", DRAFT_SIZE)
        im.load()
    except Image.DecompressionBombError as exc:
        return Rejection(Reason.DECOMPRESSION_BOMB, str(exc))
    except _DECODE_ERRORS as exc:
        return _failure(fmt, "data", exc)
    return im


def _decode_png(data: bytes, header: ImageFile.ImageFile) -> Image.Image | Rejection:
    """Pillow's decode of the PNG with its image data inflated by ISA-L where that is plain
    (builder/png_inflate.py), and unfiltered by libspng where it is plainest
    (builder/png_pixels.py): the same pixels, ~1/3 of the CPU; else of the original bytes."""
    stored = restored(data)
    if stored is not None:
        plain = plain_image(stored, header)
        if plain is not None:
            return plain
        # Its head is the header's, parsed already: not expected to fail; if it does, or
        # the decode does, the original bytes get Pillow's own verdict below.
        with contextlib.suppress(*_DECODE_ERRORS):
            decoded = _decode(PngImagePlugin.PngImageFile(io.BytesIO(stored)), "png",
                              want_reduced=False)
            if isinstance(decoded, Image.Image):
                return decoded
    return _decode(header, "png", want_reduced=False)


def _failure(fmt: str, where: str, exc: BaseException) -> Rejection:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    # Pillow's ValueError for text/ICC chunks that would inflate without bound is a bomb too.
    if isinstance(exc, ValueError) and "too large" in str(exc).lower():
        return Rejection(Reason.DECOMPRESSION_BOMB, f"{fmt} {where}: {text}")
    return Rejection(Reason.CORRUPT_IMAGE, f"{fmt} {where}: {text}")


def _decode_jpeg_cv2(data: bytes, header: ImageFile.ImageFile, width: int, height: int, *,
                     grey: bool) -> np.ndarray | Image.Image | Rejection:
    """OpenCV's DCT-scaled decode (BGR, or grey HxW with `grey`: v3, v4) of a JPEG that
    plainly ends; else Pillow's verdict.

    OpenCV fills a truncated JPEG with grey instead of failing, so it only decodes files whose
    marker structure reaches EOI. The rest, and anything OpenCV refuses, go to Pillow's decode
    exactly as in v2: it rejects what is truncated or broken and decodes the odd file that is
    complete without an EOI (or that only Pillow reads).
    """
    if reaches_eoi(data):
        reduced = (_CV2_REDUCED_GREY if grey else _CV2_REDUCED)[_dct_scale(width, height)]
        try:
            pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8),
                                  reduced | cv2.IMREAD_IGNORE_ORIENTATION)
        except cv2.error:
            pixels = None
        wanted = () if grey else (3,)  # the shape after HxW: grey, or three channels
        if pixels is not None and pixels.shape[2:] == wanted:
            return pixels
    return _decode(header, "jpeg", want_reduced=True)


def _dct_scale(width: int, height: int) -> int:
    """The largest of 1, 2, 4, 8 that keeps both sides at least DRAFT_SIZE (as Pillow's
    draft chooses)."""
    fits = min(width // DRAFT_SIZE[0], height // DRAFT_SIZE[1])
    return next(scale for scale in (8, 4, 2, 1) if fits >= scale or scale == 1)


def _hashes(decoded: np.ndarray | Image.Image, orientation: int | None,
            pipeline: str) -> Hashes:
    """PDQ (256 bits as 64 hex, with quality 0-100) and pHash (64 bits as 16 hex)."""
    if pipeline == canonical.V2:
        assert isinstance(decoded, Image.Image)
        return canonical.hashes_v2(canonical.canonical_v2(decoded, orientation))
    if pipeline == canonical.V3:
        if isinstance(decoded, np.ndarray):
            return canonical.hashes_v3(canonical.canonical_v3_from_bgr(decoded, orientation))
        return canonical.hashes_v3(canonical.canonical_v3_from_pillow(decoded, orientation))
    if isinstance(decoded, np.ndarray):
        return canonical.hashes_v4(canonical.canonical_v4_from_grey(decoded, orientation))
    return canonical.hashes_v4(canonical.canonical_v4_from_pillow(decoded, orientation))


def _orientation(im: Image.Image) -> int | None:
    try:
        value = im.getexif().get(_EXIF_ORIENTATION)
    except _DECODE_ERRORS:  # broken EXIF does not make a broken image; hash it unrotated
        return None
    return value if isinstance(value, int) else None


def perceptual_hashes(data: bytes, config: ImageConfig | None = None, *,
                      pipeline: str = HASH_PIPELINE) -> Hashes:
    """PDQ, PDQ quality and pHash of image bytes in `pipeline`, for lookups and exclusion sets.

    Raises ValueError naming the rejection when the bytes are not an acceptable image.
    """
    info = check_image(data, config or ImageConfig(), pipeline=pipeline)
    if isinstance(info, Rejection):
        raise ValueError(f"{info.reason}: {info.detail}")
    assert info.pdq is not None and info.pdq_quality is not None and info.phash is not None
    return info.pdq, info.pdq_quality, info.phash


def hamming(a_hex: str, b_hex: str) -> int:
    """Bits that differ between two hex hashes of the same length."""
    if len(a_hex) != len(b_hex):
        raise ValueError(f"hashes differ in length: {len(a_hex)} vs {len(b_hex)} hex digits")
    return (int(a_hex, 16) ^ int(b_hex, 16)).bit_count()
