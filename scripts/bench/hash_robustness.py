"""How well the canonical PDQ + pHash survive common edits, and how often unrelated images match.

    python scripts/bench/hash_robustness.py [--generated 450] [--images DIR] [--workers 2]
                                            [--pipelines v2,v3,v4]

Hashes every original and every edit with builder.media.check_image (the pipeline's own
code path) in each hash pipeline (every one the tree has, unless --pipelines picks), then prints side by side, per pipeline, the recall per
edit for PDQ alone and for the joint rule, and the false matches over all pairs of distinct
originals (450 originals = 101,025 pairs). Originals are generated photo-like scenes, plus
every image in --images (real examples).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from builder.dedup import IMAGE_SUFFIXES  # noqa: E402
from builder.media import HASH_PIPELINES, check_image, hamming  # noqa: E402
from builder.recipe import DedupConfig, ImageConfig  # noqa: E402
from builder.records import ImageInfo  # noqa: E402

CONFIG = ImageConfig()


def scene(seed: int, size: tuple[int, int] = (800, 600)) -> Image.Image:
    """Photo-like: smooth colour field, hard-edged shapes, lines, fine grain."""
    rng = np.random.default_rng(seed)
    grid = (int(rng.integers(3, 10)), int(rng.integers(3, 10)))
    coarse = (rng.random((*grid, 3)) * 255).astype(np.uint8)
    im = Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(im)
    w, h = size
    for _ in range(int(rng.integers(3, 12))):
        x0, y0 = int(rng.integers(-50, w)), int(rng.integers(-50, h))
        x1, y1 = x0 + int(rng.integers(20, w // 2)), y0 + int(rng.integers(20, h // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif kind == 1:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(2, 15)))
    grain = rng.normal(0, 8, (h, w, 3))
    arr = np.clip(np.asarray(im, dtype=np.float64) + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(arr).filter(ImageFilter.GaussianBlur(0.5))


def crop(frac: float) -> Callable[[Image.Image], Image.Image]:
    def edit(im: Image.Image) -> Image.Image:
        w, h = im.size
        dx, dy = round(w * frac), round(h * frac)
        return im.crop((dx, dy, w - dx, h - dy))

    return edit


def watermark(im: Image.Image) -> Image.Image:
    out = im.copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    draw.rectangle((w * 0.55, h * 0.85, w * 0.97, h * 0.95), fill=(255, 255, 255))
    draw.text((w * 0.57, h * 0.87), "(c) example.org", fill=(0, 0, 0))
    return out


def colour_shift(im: Image.Image) -> Image.Image:
    arr = np.asarray(im, dtype=np.int16) + np.array([12, -8, 6], dtype=np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "jpeg_q40": lambda im: im,  # the edit is in the encoding, see encode_edit
    "resize_50": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS),
    "crop_2.5pct": crop(0.025),
    "crop_5pct": crop(0.05),
    "pad_5pct": lambda im: ImageOps.expand(im, border=round(im.width * 0.05), fill=(0, 0, 0)),
    "colour_shift": colour_shift,
    "watermark": watermark,
    "rotate_3deg": lambda im: im.rotate(3, resample=Image.Resampling.BICUBIC, expand=False),
    "mirror": ImageOps.mirror,
}


def encode(im: Image.Image, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def original_bytes(item: tuple[str, int | str]) -> bytes:
    kind, ref = item
    if kind == "generated":
        return encode(scene(int(ref)))
    return Path(str(ref)).read_bytes()


Row = list  # per original: its hashes, then each edit's, in EDITS order (None when rejected)


def hash_item(item: tuple[str, int | str], pipelines: list[str]) -> dict[str, Row]:
    """Per pipeline, the hashes of the original and of each edit (the same bytes for all)."""
    data = original_bytes(item)
    im = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    files = [data] + [encode(edit(im), quality=40 if name == "jpeg_q40" else 92)
                      for name, edit in EDITS.items()]
    return {pipeline: [_hash(f, pipeline) for f in files] for pipeline in pipelines}


def _hash(data: bytes, pipeline: str) -> tuple[str, str, int, str] | None:
    info = check_image(data, CONFIG, pipeline=pipeline)
    if not isinstance(info, ImageInfo):
        return None
    return ("ok", info.pdq or "", info.pdq_quality or 0, info.phash or "")


def near(a: tuple[str, str, int, str], b: tuple[str, str, int, str], dedup: DedupConfig) -> bool:
    """The joint rule of issue 9: PDQ close, or pHash close and PDQ not far; low quality never."""
    if min(a[2], b[2]) < dedup.min_pdq_quality:
        return False
    pdq = hamming(a[1], b[1])
    if pdq <= dedup.max_distance:
        return True
    return (
        hamming(a[3], b[3]) <= dedup.phash_max_distance and pdq <= dedup.pdq_max_distance_with_phash
    )


def pairwise(hexes: list[str]) -> np.ndarray:
    """All-pairs Hamming distances of equal-length hex hashes (upper triangle, flattened)."""
    codes = np.array([np.frombuffer(bytes.fromhex(h), dtype=np.uint8) for h in hexes])
    out = []
    for i in range(len(codes) - 1):
        out.append(np.unpackbits(codes[i] ^ codes[i + 1 :], axis=1).sum(axis=1))
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generated", type=int, default=450)
    parser.add_argument("--images", type=Path, help="folder of real example images to add")
    parser.add_argument("--workers", type=int, default=2)
    tags = [p.rsplit("-", 1)[-1] for p in HASH_PIPELINES]
    parser.add_argument("--pipelines", default=",".join(tags),
                        help=f"which hash pipelines to compare, by their last part (default: "
                             f"every one, {','.join(tags)})")
    parser.add_argument("--calibrate", action="store_true",
                        help="also print recall and false matches per threshold")
    args = parser.parse_args()
    wanted = [p for p in HASH_PIPELINES if p.rsplit("-", 1)[-1] in args.pipelines.split(",")]
    if not wanted:
        parser.error(f"--pipelines {args.pipelines!r} names none of {', '.join(tags)}")
    items: list[tuple[str, int | str]] = [("generated", i) for i in range(args.generated)]
    if args.images:
        items += [("file", str(p)) for p in sorted(args.images.iterdir())
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]

    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(partial(hash_item, pipelines=wanted), items, chunksize=4))
    seconds = time.perf_counter() - start
    dedup = DedupConfig()
    print(f"{len(items)} originals, {len(EDITS)} edits each, hashed in each pipeline in "
          f"{seconds:.0f} s on {args.workers} workers")
    print(f"rule: PDQ <= {dedup.max_distance}, or pHash <= {dedup.phash_max_distance} and "
          f"PDQ <= {dedup.pdq_max_distance_with_phash}; PDQ quality >= {dedup.min_pdq_quality}")
    for name in wanted:
        print(f"  {name.rsplit('-', 1)[-1]} = {name}")
    stats = {p: pipeline_stats([r[p] for r in results if r[p][0] is not None], dedup)
             for p in wanted}
    tags = [p.rsplit("-", 1)[-1] for p in wanted]
    head = "".join(f" {t + ' ' + c:>12s}" for c in ("PDQ med", "pHash med", "PDQ<=31", "joint")
                   for t in tags)
    print(f"{'edit':14s}{head}")
    for edit in EDITS:
        cells = "".join(f" {stats[p]['edits'][edit][c]:>12}" for c in range(4) for p in wanted)
        print(f"{edit:14s}{cells}")
    for p, tag in zip(wanted, tags, strict=True):
        print(f"{tag}: {stats[p]['pairs']}")
    if args.calibrate:
        for p, tag in zip(wanted, tags, strict=True):
            print(f"-- {tag}")
            calibrate(*stats[p]["calibration"])


def pipeline_stats(rows: list[Row], dedup: DedupConfig) -> dict:
    """One pipeline's per-edit medians and recalls, and its unrelated pairs' false matches."""
    pdq_only = DedupConfig(pdq_max_distance_with_phash=0)  # joint branch can never fire
    edits = {}
    for k, name in enumerate(EDITS, start=1):
        pairs = [(r[0], r[k]) for r in rows if r[k] is not None]
        pdq_d = [hamming(a[1], b[1]) for a, b in pairs]
        ph_d = [hamming(a[3], b[3]) for a, b in pairs]
        alone = np.mean([near(a, b, pdq_only) for a, b in pairs])
        joint = np.mean([near(a, b, dedup) for a, b in pairs])
        edits[name] = (f"{np.median(pdq_d):.0f}", f"{np.median(ph_d):.0f}", f"{alone:.1%}",
                       f"{joint:.1%}")
    originals = [r[0] for r in rows]
    pdq = pairwise([o[1] for o in originals])
    ph = pairwise([o[3] for o in originals])
    quality = np.array([o[2] for o in originals])
    qi, qj = np.triu_indices(len(originals), k=1)
    usable = np.minimum(quality[qi], quality[qj]) >= dedup.min_pdq_quality
    joint_fp = usable & (
        (pdq <= dedup.max_distance)
        | ((ph <= dedup.phash_max_distance) & (pdq <= dedup.pdq_max_distance_with_phash))
    )
    pairs = (f"unrelated pairs {len(pdq):,}: min PDQ {pdq.min()}, min pHash {ph.min()}; "
             f"false matches PDQ<=31 {int(((pdq <= 31) & usable).sum())}, "
             f"joint {int(joint_fp.sum())}, pHash<=10 alone {int((ph <= 10).sum())}; "
             f"PDQ quality < {dedup.min_pdq_quality}: {int((quality < dedup.min_pdq_quality).sum())}"
             " originals")
    return {"edits": edits, "pairs": pairs, "calibration": (rows, pdq, ph, usable)}


# Edits a near-duplicate rule is expected to catch; mirror and rotation are reported above
# but PDQ is not designed to be invariant to them (mirror: use PDQ's dihedral hashes).
EXPECTED = ("jpeg_q40", "resize_50", "crop_2.5pct", "crop_5pct", "pad_5pct", "colour_shift",
            "watermark")


def calibrate(rows: list, pdq: np.ndarray, ph: np.ndarray, usable: np.ndarray) -> None:
    """Recall on the expected edits vs false matches among unrelated pairs, per threshold."""
    print(f"calibration over {len(pdq):,} unrelated pairs; recall over edits {', '.join(EXPECTED)}")
    print(f"{'PDQ<=':>6s} {'pHash<=':>8s} {'&PDQ<=':>7s} {'recall':>8s} {'false':>6s} {'rate':>10s}")
    names = list(EDITS)
    for max_d, ph_d, with_ph in ((31, 0, 0), (31, 8, 64), (31, 10, 80), (31, 10, 90),
                                 (31, 12, 80), (40, 10, 80), (48, 10, 80)):
        rule = DedupConfig(max_distance=max_d, phash_max_distance=ph_d,
                           pdq_max_distance_with_phash=with_ph)
        hits = [near(r[0], r[names.index(e) + 1], rule) for r in rows for e in EXPECTED
                if r[names.index(e) + 1] is not None]
        fp = int((usable & ((pdq <= max_d) | ((ph <= ph_d) & (pdq <= with_ph)))).sum())
        print(f"{max_d:6d} {ph_d:8d} {with_ph:7d} {np.mean(hits):8.1%} {fp:6d} "
              f"{fp / len(pdq):10.2e}")


if __name__ == "__main__":
    main()
