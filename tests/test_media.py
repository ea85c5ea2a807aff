"""The image check: real format from bytes, one guarded decode, canonical perceptual hashes."""

from __future__ import annotations

import io
import struct
import zlib
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFile, ImageOps

from builder.canonical import V2, V3, V4, canonical_v4_from_pillow, hashes_v2, pdq_of_canonical
from builder.jpeg_markers import reaches_eoi
from builder.media import (
    HASH_PIPELINE,
    check_image,
    hamming,
    perceptual_hashes,
    sniff_format,
)
from builder.recipe import ImageConfig
from builder.records import ImageInfo, Reason, Rejection

CONFIG = ImageConfig()
EXAMPLE_IMAGES = Path(__file__).resolve().parents[1] / "examples" / "offline" / "images"


# --- generated images -----------------------------------------------------------------------


def scene(seed: int, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A photo-like RGB image: smooth random colour field plus a few hard-edged shapes."""
    rng = np.random.default_rng(seed)
    coarse = (rng.random((6, 8, 3)) * 255).astype(np.uint8)
    im = Image.fromarray(coarse, "RGB").resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(im)
    w, h = size
    for _ in range(6):
        x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
        x1 = x0 + int(rng.integers(20, w // 3))
        y1 = y0 + int(rng.integers(20, h // 3))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
    return im


def encode(im: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def accepted(data: bytes, config: ImageConfig = CONFIG, pipeline: str = HASH_PIPELINE
             ) -> ImageInfo:
    result = check_image(data, config, pipeline=pipeline)
    assert isinstance(result, ImageInfo), result
    return result


def rejected(data: bytes, config: ImageConfig = CONFIG, pipeline: str = HASH_PIPELINE
             ) -> Rejection:
    result = check_image(data, config, pipeline=pipeline)
    assert isinstance(result, Rejection), result
    return result


# Every dataset keeps its hash pipeline, so every hashing property holds in each of them.
each_pipeline = pytest.mark.parametrize("pipeline", [V2, V3, V4], ids=["v2", "v3", "v4"])
# The pipelines that decode a JPEG reaching its EOI with OpenCV (v4 straight to grey).
opencv_pipelines = pytest.mark.parametrize("pipeline", [V3, V4], ids=["v3", "v4"])


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def crafted_png(width: int, height: int, extra_chunks: bytes = b"") -> bytes:
    """A PNG whose header claims any size, with a few bytes of pixel data: a bomb's shape."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + extra_chunks
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


# --- format from the bytes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mime", "ext"),
    [
        ("JPEG", "image/jpeg", "jpg"),
        ("PNG", "image/png", "png"),
        ("WEBP", "image/webp", "webp"),
        ("GIF", "image/gif", "gif"),
        ("TIFF", "image/tiff", "tif"),
    ],
)
def test_each_supported_format_is_accepted_with_mime_ext_and_original_size(fmt, mime, ext):
    data = encode(scene(1, (320, 200)), fmt)

    info = accepted(data)

    assert (info.mime, info.ext, info.width, info.height) == (mime, ext, 320, 200)
    assert sniff_format(data) == fmt.lower()


def test_hashes_of_the_original_bytes_are_recorded_as_hex():
    import hashlib

    data = encode(scene(2), "PNG")

    info = accepted(data)

    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.sha1 == hashlib.sha1(data).hexdigest()
    assert len(info.pdq) == 64 and len(info.phash) == 16
    assert 0 <= info.pdq_quality <= 100


def test_html_page_served_as_a_jpg_is_not_an_image():
    html = b"<!DOCTYPE html><html><head><title>Login</title></head><body></body></html>"

    rejection = rejected(html)

    assert rejection.reason is Reason.NOT_IMAGE
    assert "HTML" in rejection.detail


@pytest.mark.parametrize(
    "payload",
    [b"", b"just some text\n", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", b"\xff\xd8", b"RIFF\x00\x00"],
)
def test_empty_text_pdf_and_too_short_magic_are_not_images(payload):
    assert rejected(payload).reason is Reason.NOT_IMAGE


def test_a_format_left_out_of_the_recipe_is_refused_naming_the_format():
    config = ImageConfig(formats=("jpeg", "png"))

    rejection = rejected(encode(scene(3), "WEBP"), config)

    assert rejection.reason is Reason.NOT_IMAGE
    assert "webp" in rejection.detail


def test_magic_bytes_of_a_format_with_a_broken_header_are_corrupt_not_missing():
    data = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40

    assert rejected(data).reason is Reason.CORRUPT_IMAGE


# --- corrupt and truncated ------------------------------------------------------------------


@each_pipeline
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "TIFF"])
def test_truncated_image_is_corrupt(fmt, pipeline):
    data = encode(scene(4), fmt)

    assert rejected(data[: len(data) // 2], pipeline=pipeline).reason is Reason.CORRUPT_IMAGE


@each_pipeline
def test_reduced_jpeg_decode_still_reads_every_byte_and_catches_truncation(pipeline):
    data = encode(scene(5, (2400, 1800)), "JPEG", quality=90)
    probe = Image.open(io.BytesIO(data))
    probe.draft("RGB", (512, 512))
    assert probe.size[0] < 2400  # the check's JPEG decode really is DCT-scaled for this size

    assert isinstance(check_image(data, CONFIG, pipeline=pipeline), ImageInfo)
    for cut in (len(data) // 2, len(data) - 2000):
        assert rejected(data[:cut], pipeline=pipeline).reason is Reason.CORRUPT_IMAGE


def test_process_wide_load_truncated_images_mode_is_refused_loudly(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)

    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        check_image(encode(scene(6), "PNG"), CONFIG)


# --- decompression bombs and size limits ----------------------------------------------------


def test_png_header_claiming_ten_billion_pixels_is_a_bomb_before_any_pixel_is_decoded():
    bomb = crafted_png(100_000, 100_000)
    assert len(bomb) < 200

    rejection = rejected(bomb)

    assert rejection.reason is Reason.DECOMPRESSION_BOMB
    assert "100000x100000" in rejection.detail


def test_recipe_pixel_cap_applies_below_pillows_own_limit():
    data = encode(scene(7, (1000, 1000)), "JPEG")

    assert rejected(data, ImageConfig(max_pixels=999_999)).reason is Reason.DECOMPRESSION_BOMB
    assert isinstance(check_image(data, ImageConfig(max_pixels=1_000_000)), ImageInfo)


def test_recipe_pixel_cap_above_pillows_own_limit_is_honoured_from_the_header():
    # 200M pixels is past 2x Pillow's MAX_IMAGE_PIXELS, where Image.open would raise; the
    # recipe's cap decides instead, and the tiny IDAT is then found corrupt, not a bomb.
    bomb = crafted_png(20_000, 10_000)
    config = ImageConfig(max_pixels=300_000_000)

    assert rejected(bomb, config).reason is Reason.CORRUPT_IMAGE
    assert rejected(bomb).reason is Reason.DECOMPRESSION_BOMB


def test_png_text_chunk_that_inflates_without_bound_is_a_bomb():
    ztxt = png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"\x00" * 20_000_000))

    rejection = rejected(crafted_png(8, 8, ztxt))

    assert rejection.reason is Reason.DECOMPRESSION_BOMB


def test_image_below_minimum_width_or_height_is_too_small():
    config = ImageConfig(min_width=256, min_height=256)

    assert rejected(encode(scene(8, (255, 400)), "PNG"), config).reason is Reason.TOO_SMALL
    assert rejected(encode(scene(8, (400, 255)), "PNG"), config).reason is Reason.TOO_SMALL
    assert isinstance(check_image(encode(scene(8, (256, 256)), "PNG"), config), ImageInfo)


# --- perceptual hashes ----------------------------------------------------------------------


def test_hash_pipeline_version_is_named():
    assert HASH_PIPELINE.startswith("canon128-") and "pdq" in HASH_PIPELINE


@each_pipeline
def test_same_bytes_give_the_same_hashes(pipeline):
    data = encode(scene(9), "JPEG")

    assert accepted(data, pipeline=pipeline) == accepted(data, pipeline=pipeline)


@each_pipeline
def test_hashes_survive_a_half_size_resize_and_a_quality_40_reencode(pipeline):
    original = scene(10, (1024, 768))
    base = accepted(encode(original, "PNG"), pipeline=pipeline)
    variants = [
        encode(original.resize((512, 384), Image.Resampling.LANCZOS), "PNG"),
        encode(original, "JPEG", quality=40),
    ]

    for data in variants:
        info = accepted(data, pipeline=pipeline)
        assert hamming(base.pdq, info.pdq) <= 16
        assert hamming(base.phash, info.phash) <= 6


@each_pipeline
def test_unrelated_images_are_far_apart(pipeline):
    infos = [accepted(encode(scene(100 + i), "JPEG"), pipeline=pipeline) for i in range(6)]

    for i, a in enumerate(infos):
        for b in infos[i + 1 :]:
            assert hamming(a.pdq, b.pdq) > 80
            assert hamming(a.phash, b.phash) > 10


@each_pipeline
def test_flat_single_colour_image_has_low_pdq_quality(pipeline):
    flat = Image.new("RGB", (640, 480), (120, 160, 200))

    assert accepted(encode(flat, "PNG"), pipeline=pipeline).pdq_quality <= 49
    assert accepted(encode(scene(11), "PNG"), pipeline=pipeline).pdq_quality >= 50


@each_pipeline
def test_exif_rotated_image_hashes_like_its_upright_twin(pipeline):
    upright = scene(12, (640, 480))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # how a sideways camera stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    assert ImageOps.exif_transpose(Image.open(io.BytesIO(data))).size == (640, 480)

    rotated = accepted(data, pipeline=pipeline)
    twin = accepted(encode(upright, "JPEG", quality=95), pipeline=pipeline)
    unrotated = accepted(encode(stored, "JPEG", quality=95), pipeline=pipeline)

    assert (rotated.width, rotated.height) == (480, 640)  # as stored in the file
    assert hamming(rotated.pdq, twin.pdq) <= 8
    assert hamming(rotated.phash, twin.phash) <= 4
    assert hamming(unrotated.pdq, twin.pdq) > 80


@each_pipeline
def test_transparent_pixels_are_flattened_on_white(pipeline):
    shape = Image.new("RGBA", (400, 300), (0, 0, 0, 0))
    ImageDraw.Draw(shape).ellipse((50, 40, 300, 260), fill=(200, 30, 30, 255))
    on_white = Image.new("RGB", (400, 300), (255, 255, 255))
    on_white.paste(shape, mask=shape.getchannel("A"))

    transparent = accepted(encode(shape, "PNG"), pipeline=pipeline)
    flat = accepted(encode(on_white, "PNG"), pipeline=pipeline)

    assert hamming(transparent.pdq, flat.pdq) <= 4
    assert hamming(transparent.phash, flat.phash) <= 2


@each_pipeline
@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("P", "PNG"),
        ("P", "GIF"),
        ("L", "PNG"),
        ("LA", "PNG"),
        ("1", "PNG"),
        ("I;16", "PNG"),
        ("CMYK", "JPEG"),
        ("CMYK", "TIFF"),
        ("RGBA", "WEBP"),
        ("F", "TIFF"),
    ],
)
def test_every_common_mode_reaches_a_meaningful_hash(mode, fmt, pipeline):
    rgb = scene(13)
    if mode == "I;16":
        grey = np.asarray(rgb.convert("L")).astype(np.uint16) * 257
        im = Image.fromarray(grey)  # uint16 -> I;16
    elif mode == "F":
        im = Image.fromarray(np.asarray(rgb.convert("L")).astype(np.float32) / 255.0)
    elif mode == "LA":
        im = rgb.convert("LA")
    else:
        im = rgb.convert(mode)
    reference = accepted(encode(rgb.convert("L").convert("RGB"), "PNG"))

    info = accepted(encode(im, fmt), pipeline=pipeline)

    assert info.pdq_quality >= 50
    if mode in ("L", "LA", "I;16", "F"):  # same luminance as the reference, other bit depths
        assert hamming(info.pdq, reference.pdq) <= 16


@each_pipeline
def test_animated_gif_is_hashed_from_its_first_frame(pipeline):
    first, second = scene(14), scene(15)
    buf = io.BytesIO()
    first.save(buf, "GIF", save_all=True, append_images=[second], duration=100, loop=0)

    animated = accepted(buf.getvalue(), pipeline=pipeline)
    still = accepted(encode(first, "GIF"), pipeline=pipeline)

    assert hamming(animated.pdq, still.pdq) <= 16


def test_pdq_of_the_pixels_pdq_reads_equals_pdq_of_the_whole_canonical_image():
    import pdqhash

    for seed in range(8):
        canonical = np.asarray(scene(300 + seed, (128, 128)))
        bits, quality = pdqhash.compute(canonical)

        fast_bits, fast_quality = pdq_of_canonical(canonical)

        assert (fast_bits == bits).all() and fast_quality == quality


def test_v2_hashes_are_unchanged_by_the_faster_pdq():
    import imagehash
    import pdqhash

    canonical = scene(310, (128, 128))
    bits, quality = pdqhash.compute(np.asarray(canonical))
    pdq = np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex()

    assert hashes_v2(canonical) == (pdq, int(quality), str(imagehash.phash(canonical)))


def test_v3_phash_is_imagehash_phash_but_for_a_few_coefficients_on_the_median():
    import imagehash

    for seed in range(10):
        data = encode(scene(320 + seed), "PNG")
        canonical = Image.open(io.BytesIO(data)).convert("RGB").resize((128, 128))
        reference = str(imagehash.phash(canonical))

        ours = accepted(encode(canonical, "PNG"), pipeline=V3).phash

        assert hamming(ours, reference) <= 4


def test_the_phash_threshold_is_numpys_median_to_the_bit_ties_included():
    from builder.canonical import _median64

    rng = np.random.default_rng(5)
    for draw in range(3000):
        if draw % 3 == 0:  # few distinct values: the middle two tie
            low = rng.integers(-4, 4, (8, 8)).astype(np.float32)
        else:
            low = (rng.standard_normal((8, 8)) * 10.0 ** rng.integers(-3, 7)).astype(np.float32)
        ours, reference = _median64(low), np.median(low)
        assert ours.dtype == reference.dtype and ours == reference


def jpeg_kinds() -> dict[str, bytes]:
    """Baseline, progressive, greyscale, CMYK, restart markers, and EXIF with a thumbnail."""
    import cv2

    im = scene(21, (360, 270))
    thumb = encode(im.resize((64, 48)), "JPEG")  # a whole JPEG, EOI included, inside APP1
    exif = Image.Exif()
    exif[0x0112] = 6
    exif_bytes = exif.tobytes()
    app1 = b"\xff\xe1" + (len(exif_bytes) + len(thumb) + 2).to_bytes(2, "big")
    plain = encode(im, "JPEG", quality=85)
    ok, with_rst = cv2.imencode(".jpg", np.asarray(im)[:, :, ::-1],
                                [cv2.IMWRITE_JPEG_RST_INTERVAL, 2])
    assert ok
    return {
        "baseline": plain,
        "progressive": encode(im, "JPEG", quality=85, progressive=True),
        "grey": encode(im.convert("L"), "JPEG"),
        "cmyk": encode(im.convert("CMYK"), "JPEG"),
        "restart": with_rst.tobytes(),
        "thumbnail": plain[:2] + app1 + exif_bytes + thumb + plain[2:],
    }


def test_jpeg_marker_walk_reaches_eoi_only_when_the_file_is_whole():
    for name, data in jpeg_kinds().items():
        assert reaches_eoi(data), name
        assert reaches_eoi(data + b"trailer after EOI"), name
        for cut in range(2, len(data) - 1, 97):
            assert not reaches_eoi(data[:cut]), (name, cut)
        assert not reaches_eoi(data[:-2]), name


@opencv_pipelines
def test_opencv_pipelines_refuse_exactly_the_truncated_and_corrupted_jpegs_v2_refuses(pipeline):
    rng = np.random.default_rng(22)
    for name, data in jpeg_kinds().items():
        damaged = [data[:cut] for cut in range(2, len(data), 211)]
        damaged += [data[:-cut] for cut in range(1, 12)]
        for _ in range(40):  # bytes overwritten anywhere after SOI
            copy = bytearray(data)
            for at in rng.integers(2, len(data), int(rng.integers(1, 6))):
                copy[int(at)] = int(rng.integers(0, 256))
            damaged.append(bytes(copy))
        for _ in range(20):  # a run of bytes lost from the middle
            at = int(rng.integers(2, len(data) - 600))
            damaged.append(data[:at] + data[at + int(rng.integers(1, 500)):])
        for bad in damaged:
            v2 = check_image(bad, CONFIG, pipeline=V2)
            ours = check_image(bad, CONFIG, pipeline=pipeline)
            assert isinstance(ours, Rejection) == isinstance(v2, Rejection), (name, len(bad))
            if isinstance(v2, Rejection):
                assert ours.reason is v2.reason


@opencv_pipelines
def test_a_clean_jpeg_hashes_like_the_same_pixels_stored_as_png(pipeline):
    im = scene(23, (900, 700))

    as_jpeg = accepted(encode(im, "JPEG", quality=95), pipeline=pipeline)
    as_png = accepted(encode(im, "PNG"), pipeline=pipeline)

    assert hamming(as_jpeg.pdq, as_png.pdq) <= 8
    assert hamming(as_jpeg.phash, as_png.phash) <= 2


def v4_test_images() -> dict[str, bytes]:
    """Generated photos of many sizes in every format v4 decodes one way or the other, and
    the bundled example images."""
    images = {}
    for seed in range(16):
        im = scene(400 + seed, (300 + seed * 83 % 1300, 250 + seed * 61 % 900))
        images[f"scene{seed}.jpg"] = encode(im, "JPEG", quality=85)
        images[f"scene{seed}.{('png', 'webp', 'gif', 'tif')[seed % 4]}"] = encode(
            im, ("PNG", "WEBP", "GIF", "TIFF")[seed % 4])
    for path in sorted(EXAMPLE_IMAGES.iterdir()):
        if path.suffix.lower() in (".jpg", ".png"):
            images[path.name] = path.read_bytes()
    return images


def test_v4_hashes_are_within_a_few_bits_of_v3s_on_photos_and_the_bundled_examples():
    # Measured: PDQ at most 6 bits apart (median 0), pHash at most 2.
    pdq_distances = []
    for name, data in v4_test_images().items():
        v3, v4 = accepted(data, pipeline=V3), accepted(data, pipeline=V4)
        pdq_distances.append(hamming(v3.pdq, v4.pdq))
        assert hamming(v3.pdq, v4.pdq) <= 10, name
        assert hamming(v3.phash, v4.phash) <= 4, name
        assert abs(v3.pdq_quality - v4.pdq_quality) <= 5, name
    assert len(pdq_distances) >= 40 and np.median(pdq_distances) <= 2


def test_a_cmyk_jpeg_hashes_in_v4_within_a_few_bits_of_its_rgb_original():
    for seed in range(4):
        im = scene(500 + seed, (700, 600))
        cmyk_bytes = encode(im.convert("CMYK"), "JPEG", quality=90)
        assert Image.open(io.BytesIO(cmyk_bytes)).mode == "CMYK" and reaches_eoi(cmyk_bytes)

        cmyk = accepted(cmyk_bytes, pipeline=V4)
        rgb = accepted(encode(im, "JPEG", quality=90), pipeline=V4)

        assert hamming(cmyk.pdq, rgb.pdq) <= 8
        assert hamming(cmyk.phash, rgb.phash) <= 2


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_v4s_canonical_grey_image_of_a_transparent_png_is_flattened_on_white(mode):
    shape = Image.new("RGBA", (400, 300), (0, 0, 0, 0))  # transparent black
    ImageDraw.Draw(shape).rectangle((100, 75, 299, 224), fill=(20, 20, 20, 255))
    if mode == "P":  # a palette whose entry 0, black, is the transparent one
        stored = Image.new("P", shape.size, 0)
        stored.putpalette([0, 0, 0, 20, 20, 20])
        ImageDraw.Draw(stored).rectangle((100, 75, 299, 224), fill=1)
        data = encode(stored, "PNG", transparency=0)
    else:
        data = encode(shape.convert(mode), "PNG")
    decoded = Image.open(io.BytesIO(data))
    decoded.load()

    grey = canonical_v4_from_pillow(decoded, None)

    assert grey.shape == (128, 128) and grey.dtype == np.uint8
    assert grey[:24, :].min() == 255 and grey[-24:, :].min() == 255  # transparent: white
    assert grey[48:80, 48:80].max() <= 25  # the opaque square keeps its own grey


def test_an_unknown_hash_pipeline_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown hash pipeline"):
        check_image(encode(scene(24), "PNG"), CONFIG, pipeline="canon512-v1")


def test_perceptual_hashes_can_be_skipped_but_the_image_is_still_validated():
    data = encode(scene(16), "JPEG")

    info = check_image(data, CONFIG, perceptual=False)

    assert isinstance(info, ImageInfo) and info.pdq is None and info.phash is None
    truncated = check_image(data[: len(data) // 2], CONFIG, perceptual=False)
    assert isinstance(truncated, Rejection) and truncated.reason is Reason.CORRUPT_IMAGE


def test_perceptual_hashes_of_bytes_match_check_image_and_refuse_non_images():
    data = encode(scene(17), "WEBP")
    info = accepted(data)

    assert perceptual_hashes(data) == (info.pdq, info.pdq_quality, info.phash)
    with pytest.raises(ValueError, match="not_image"):
        perceptual_hashes(b"<html></html>")


def test_hamming_counts_differing_bits_and_refuses_mixed_lengths():
    assert hamming("00", "ff") == 8
    assert hamming("f0f0", "f0f1") == 1
    assert hamming("a" * 64, "a" * 64) == 0
    with pytest.raises(ValueError, match="length"):
        hamming("ff", "ffff")


# --- concurrency ----------------------------------------------------------------------------


def _batch() -> list[bytes]:
    fmts = ["JPEG", "PNG", "WEBP", "GIF", "TIFF"]
    good = [encode(scene(200 + i, (500, 400)), fmts[i % 5]) for i in range(10)]
    bad = [good[0][:3000], b"<html>", crafted_png(100_000, 100_000)]
    return good + bad


@each_pipeline
def test_results_are_identical_from_many_threads_at_once(pipeline):
    batch = _batch() * 3
    sequential = [check_image(d, CONFIG, pipeline=pipeline) for d in batch]

    with ThreadPoolExecutor(max_workers=8) as pool:
        threaded = list(pool.map(lambda d: check_image(d, CONFIG, pipeline=pipeline), batch))

    assert threaded == sequential


@each_pipeline
def test_results_are_identical_from_worker_processes(pipeline):
    batch = _batch()
    sequential = [check_image(d, CONFIG, pipeline=pipeline) for d in batch]

    with ProcessPoolExecutor(max_workers=2) as pool:
        in_processes = list(pool.map(partial(check_image, pipeline=pipeline), batch,
                                     [CONFIG] * len(batch)))

    assert in_processes == sequential
