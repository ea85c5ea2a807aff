"""The image check: what the bytes really are, whether they decode, and their perceptual hashes.

One function, `check_image`, turns fetched bytes into an `ImageInfo` or a `Rejection`:

1. the format comes from the magic bytes, never from the URL or the Content-Type;
2. the header is parsed and its size checked against the pixel cap *before* any pixel is decoded;
3. the image is decoded once — a reduced decode for JPEG (`draft`, DCT scaling) — which is also
   what proves the bytes are complete;
4. that decode is brought to one canonical 128x128 RGB image (EXIF orientation applied, first
   frame, alpha flattened on white), and PDQ and pHash are computed from it, so the hashes cost
   little and do not drift with the size of the original.

The original bytes are never re-encoded; the caller keeps them. Everything here is a pure
function of the bytes and the config, safe to call from threads and processes at once: no
Pillow global is read-modify-written.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib

import imagehash
import numpy as np
import pdqhash
from PIL import (
    GifImagePlugin,
    Image,
    ImageFile,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    WebPImagePlugin,
)

from builder.recipe import ImageConfig
from builder.records import ImageInfo, Reason, Rejection

# Bump whenever anything below changes a hash: the size, the resampling filter, the mode
# handling, the background, or the hash functions. Hashes from different pipelines are not
# comparable, so the dedup index must refuse to mix them.
HASH_PIPELINE = "canon128-draft256-bilinear-white-pdq-phash-v2"

# PDQ reduces every input to 64x64 and pHash to 32x32, so a 128x128 canonical image keeps all
# they look at. Measured on this machine against 512x512: the same recall per edit and the
# same false matches in scripts/bench/hash_robustness.py, at about half the cost (resize +
# PDQ + pHash fall from ~5 ms to ~0.7 ms; a JPEG is decoded at a smaller DCT scale).
CANONICAL_SIZE = (128, 128)
# A JPEG is decoded at the smallest DCT scale that keeps at least this size. Not the
# canonical size itself: a DCT-scaled decode landing right on it makes JPEG re-encoding
# artefacts move PDQ by ~30 bits on small images (2 bits with this margin).
DRAFT_SIZE = (256, 256)
BACKGROUND = (255, 255, 255)  # what transparent pixels are flattened onto
_RESAMPLE = Image.Resampling.BILINEAR

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

# EXIF orientation tag value -> the transpose that makes the image upright (as ImageOps does).
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
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
    data: bytes, config: ImageConfig, *, perceptual: bool = True
) -> ImageInfo | Rejection:
    """Validate `data` as an image under `config`; hash it perceptually unless told not to.

    Returns ImageInfo with the original width/height (as stored, before EXIF orientation) or a
    Rejection: not_image, corrupt_image, decompression_bomb or too_small.
    """
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
    decoded = _decode(im, fmt, want_reduced=perceptual)
    if isinstance(decoded, Rejection):
        return decoded
    pdq = pdq_quality = phash = None
    if perceptual:
        pdq, pdq_quality, phash = _hashes(canonical_image(decoded))
    return ImageInfo(
        mime=MIME[fmt],
        ext=EXT[fmt],
        width=width,
        height=height,
        sha256=hashlib.sha256(data).hexdigest(),
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


def _failure(fmt: str, where: str, exc: BaseException) -> Rejection:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    # Pillow's ValueError for text/ICC chunks that would inflate without bound is a bomb too.
    if isinstance(exc, ValueError) and "too large" in str(exc).lower():
        return Rejection(Reason.DECOMPRESSION_BOMB, f"{fmt} {where}: {text}")
    return Rejection(Reason.CORRUPT_IMAGE, f"{fmt} {where}: {text}")


def canonical_image(im: Image.Image) -> Image.Image:
    """The fixed 128x128 RGB image all perceptual hashes are computed from.

    Resize first, then orient: the resize is per axis, so it commutes with the eight EXIF
    transposes, and transposing 128x128 is cheaper than transposing the original.
    """
    orientation = _orientation(im)
    small = _to_resizable_mode(im).resize(CANONICAL_SIZE, _RESAMPLE)
    rgb = _flatten_to_rgb(small)
    if orientation in _ORIENTATION:
        rgb = rgb.transpose(_ORIENTATION[orientation])
    return rgb


def _orientation(im: Image.Image) -> int | None:
    try:
        value = im.getexif().get(_EXIF_ORIENTATION)
    except _DECODE_ERRORS:  # broken EXIF does not make a broken image; hash it unrotated
        return None
    return value if isinstance(value, int) else None


def _to_resizable_mode(im: Image.Image) -> Image.Image:
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


def _flatten_to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("RGBA", "LA"):
        rgba = im.convert("RGBA")
        base = Image.new("RGB", im.size, BACKGROUND)
        base.paste(rgba, mask=rgba.getchannel("A"))
        return base
    return im.convert("RGB") if im.mode != "RGB" else im


def _hashes(canonical: Image.Image) -> tuple[str, int, str]:
    """PDQ (256 bits as 64 hex, with quality 0-100) and pHash (64 bits as 16 hex)."""
    bits, quality = pdqhash.compute(np.asarray(canonical))
    # pdqhash lists bit 255 first, so big-endian packing gives the reference hex layout.
    pdq = np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex()
    phash = str(imagehash.phash(canonical))
    return pdq, int(quality), phash


def perceptual_hashes(data: bytes, config: ImageConfig | None = None) -> tuple[str, int, str]:
    """PDQ, PDQ quality and pHash of image bytes, for lookups and exclusion sets.

    Raises ValueError naming the rejection when the bytes are not an acceptable image.
    """
    info = check_image(data, config or ImageConfig())
    if isinstance(info, Rejection):
        raise ValueError(f"{info.reason}: {info.detail}")
    assert info.pdq is not None and info.pdq_quality is not None and info.phash is not None
    return info.pdq, info.pdq_quality, info.phash


def hamming(a_hex: str, b_hex: str) -> int:
    """Bits that differ between two hex hashes of the same length."""
    if len(a_hex) != len(b_hex):
        raise ValueError(f"hashes differ in length: {len(a_hex)} vs {len(b_hex)} hex digits")
    return (int(a_hex, 16) ^ int(b_hex, 16)).bit_count()
