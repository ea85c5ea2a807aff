"""The near-duplicate index and its rule, on real generated images and on synthetic codes."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from builder.dedup import Hashes, NearIndex, load_index
from builder.media import perceptual_hashes
from builder.recipe import DedupConfig

RULE = DedupConfig()


def photo(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A photo-like scene: a smooth colour field with hard-edged shapes on it."""
    rng = np.random.default_rng(seed)
    coarse = (rng.random((4, 5, 3)) * 255).astype(np.uint8)
    im = Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(im)
    w, h = size
    for _ in range(8):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(20, w // 2)), y0 + int(rng.integers(20, h // 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.integers(0, 2) else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    return im


def jpeg(im: Image.Image, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def variants(seed: int) -> dict[str, bytes]:
    """The original and the edits the issue names: re-encoded q=40, resized 50%, cropped 2.5%."""
    im = photo(seed)
    w, h = im.size
    dx, dy = round(w * 0.025), round(h * 0.025)
    return {
        "original": jpeg(im),
        "q40": jpeg(im, 40),
        "half": jpeg(im.resize((w // 2, h // 2), Image.Resampling.LANCZOS)),
        "crop": jpeg(im.crop((dx, dy, w - dx, h - dy))),
    }


def hashes_of(data: bytes) -> Hashes:
    return Hashes(*perceptual_hashes(data))


def flipped(pdq_hex: str, bits: range) -> str:
    value = int(pdq_hex, 16)
    for bit in bits:
        value ^= 1 << bit
    return f"{value:064x}"


def test_reencoded_resized_and_cropped_copies_match_the_original() -> None:
    for seed in (1, 2, 4):
        found = variants(seed)
        index = NearIndex(RULE)
        index.add("orig", hashes_of(found.pop("original")))
        for name, data in found.items():
            matches = index.search(hashes_of(data))
            assert [m.key for m in matches] == ["orig"], (seed, name)


def test_distinct_images_do_not_match() -> None:
    index = NearIndex(RULE)
    for seed in range(10):
        index.add(f"k{seed}", hashes_of(jpeg(photo(seed))))
    for seed in range(100, 110):
        assert index.search(hashes_of(jpeg(photo(seed)))) == []


def test_crop_needs_the_joint_rule_pdq_alone_at_31_misses_it() -> None:
    found = variants(1)
    pdq_only = NearIndex(DedupConfig(pdq_max_distance_with_phash=0))
    pdq_only.add("orig", hashes_of(found["original"]))
    assert pdq_only.search(hashes_of(found["crop"])) == []


def test_flat_images_with_low_pdq_quality_never_match_near() -> None:
    flat = jpeg(Image.new("RGB", (200, 200), (120, 120, 120)))
    other_flat = jpeg(Image.new("RGB", (200, 200), (121, 119, 120)))
    assert hashes_of(flat).pdq_quality is not None
    assert (hashes_of(flat).pdq_quality or 0) < RULE.min_pdq_quality
    index = NearIndex(RULE)
    assert index.add("flat", hashes_of(flat)) is False
    index.add("photo", hashes_of(jpeg(photo(1))))
    assert index.search(hashes_of(other_flat)) == []


def test_matches_come_nearest_first_with_their_distances() -> None:
    base = hashes_of(jpeg(photo(1)))
    assert base.pdq is not None
    index = NearIndex(RULE)
    index.add("far", Hashes(flipped(base.pdq, range(20)), 100, base.phash))
    index.add("near", Hashes(flipped(base.pdq, range(3)), 100, base.phash))
    matches = index.search(base)
    assert [(m.key, m.pdq_distance, m.phash_distance) for m in matches] == [
        ("near", 3, 0), ("far", 20, 0)]


def test_joint_rule_boundaries_are_inclusive_and_phash_must_be_close_beyond_31() -> None:
    base = hashes_of(jpeg(photo(2)))
    assert base.pdq is not None and base.phash is not None
    far_phash = f"{int(base.phash, 16) ^ ((1 << 11) - 1):016x}"  # 11 bits away
    index = NearIndex(RULE)
    index.add("pdq31", Hashes(flipped(base.pdq, range(31)), 100, far_phash))
    index.add("pdq32", Hashes(flipped(base.pdq, range(32)), 100, far_phash))
    index.add("pdq80", Hashes(flipped(base.pdq, range(80)), 100, base.phash))
    index.add("pdq81", Hashes(flipped(base.pdq, range(81)), 100, base.phash))
    assert [m.key for m in index.search(base)] == ["pdq31", "pdq80"]


def test_no_chaining_only_admitted_images_are_compared() -> None:
    """A admitted; B (25 bits from A) refused as its copy; C (50 bits from A, 25 from B) stays."""
    a = hashes_of(jpeg(photo(4)))
    assert a.pdq is not None and a.phash is not None
    far_phash = f"{int(a.phash, 16) ^ 0xFFFF:016x}"
    b = Hashes(flipped(a.pdq, range(25)), 100, far_phash)
    c = Hashes(flipped(a.pdq, range(50)), 100, far_phash)
    index = NearIndex(RULE)
    index.add("A", a)
    assert [m.key for m in index.search(b)] == ["A"]  # B is refused, so never indexed
    assert index.search(c) == []  # C~B, but B is not admitted: C is kept


def test_numpy_fallback_gives_the_same_matches_as_faiss() -> None:
    rng = np.random.default_rng(7)
    rows = []
    for i in range(2000):
        rows.append((f"{i:06d}", bytes(rng.integers(0, 256, 32, dtype=np.uint8)).hex(), 100,
                     f"{int(rng.integers(0, 2**63)):016x}"))
    # plant near copies of the first rows among the queries
    queries = [Hashes(flipped(r[1], range(i % 40)), 100, r[3]) for i, r in enumerate(rows[:50])]
    queries += [Hashes(bytes(rng.integers(0, 256, 32, dtype=np.uint8)).hex(), 100,
                       "0" * 16) for _ in range(20)]
    fast = load_index(rows, RULE).search_many(queries)
    slow = load_index(rows, RULE, use_faiss=False).search_many(queries)
    assert fast == slow
    assert sum(1 for m in fast if m) == 50


def _synthetic(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return (rng.integers(0, 256, (n, 32), dtype=np.uint8),
            rng.integers(0, 2**64, n, dtype=np.uint64))


def _near_queries(rng: np.random.Generator, pdq: np.ndarray, phash: np.ndarray,
                  count: int) -> list[Hashes]:
    """Copies of indexed codes at every PDQ distance 0..90 and pHash distance 0..13, so the
    rule's boundaries (31; 10 with 80) are crossed from both sides, plus unrelated codes."""
    queries = []
    for i in range(count):
        target = int(rng.integers(0, len(pdq)))
        bits = np.unpackbits(pdq[target].copy())
        bits[rng.choice(256, i % 91, replace=False)] ^= 1
        ph = int(phash[target])
        for bit in rng.choice(64, i % 14, replace=False):
            ph ^= 1 << int(bit)
        queries.append(Hashes(np.packbits(bits).tobytes().hex(), 100, f"{ph:016x}"))
    for _ in range(count // 4):
        queries.append(Hashes(rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex(), 100,
                              f"{int(rng.integers(0, 2**64, dtype=np.uint64)):016x}"))
    return queries


def test_a_query_s_matches_come_nearest_first_ties_in_the_order_they_were_indexed() -> None:
    rng = np.random.default_rng(5)
    query = rng.integers(0, 256, 32, dtype=np.uint8)

    def flipped(count: int) -> np.ndarray:
        bits = np.unpackbits(query.copy())
        bits[rng.choice(256, count, replace=False)] ^= 1
        return np.packbits(bits)

    distances = {"far": 20, "near-a": 5, "unrelated": 120, "near-b": 5, "mid": 12}
    for use_faiss in (True, False):
        index = NearIndex(RULE, use_faiss=use_faiss)
        index.add_codes(list(distances), np.stack([flipped(d) for d in distances.values()]),
                        np.zeros(len(distances), dtype=np.uint64))
        asked = Hashes(query.tobytes().hex(), 100, f"{0:016x}")
        found = index.search(asked)
        assert [(m.key, m.pdq_distance) for m in found] == [
            ("near-a", 5), ("near-b", 5), ("mid", 12), ("far", 20)]
        assert index.search_many([asked]) == [found]


def test_multi_index_hashing_finds_exactly_what_a_full_scan_finds() -> None:
    rng = np.random.default_rng(11)
    pdq, phash = _synthetic(rng, 50_000)
    keys = [f"{i:06d}" for i in range(len(pdq))]
    hashed, scanned = NearIndex(RULE), NearIndex(RULE, use_hashing=False)
    # Added in uneven steps with searches between, so codes sit on both sides of a rebuild.
    queries = _near_queries(rng, pdq, phash, 400)
    lo = 0
    for step in (1, 7, 20_000, 3, 25_000, 4_989):
        for index in (hashed, scanned):
            index.add_codes(keys[lo:lo + step], pdq[lo:lo + step], phash[lo:lo + step])
        lo += step
        sample = queries[:: 7]
        assert hashed.search_many(sample) == scanned.search_many(sample)
        # one query at a time (the build's way) answers as the batch does, tables or not
        assert [hashed.search(q) for q in sample] == hashed.search_many(sample)
    assert lo == len(pdq)
    assert hashed._hashed > 0, "the index never moved codes into its chunk tables"
    found = hashed.search_many(queries)
    assert found == scanned.search_many(queries)
    for index in (hashed, scanned):
        assert [index.search(q) for q in queries] == found
    matched = sum(1 for f in found if f)
    assert 150 < matched < 400  # boundaries both ways: some copies match, far ones do not


def test_large_set_chunk_layout_finds_every_code_within_the_radius() -> None:
    """The 21/21/22-bit chunks used from 4M codes up, checked against brute force."""
    from builder.dedup import LARGE_CHUNKS, _ChunkTable, _Layout

    rng = np.random.default_rng(12)
    pdq, phash = _synthetic(rng, 20_000)
    for words, codes, radius in ((4, pdq.view(np.uint64), 31), (1, phash[:, None], 10)):
        table = _ChunkTable(_Layout(words, LARGE_CHUNKS, radius), codes)
        queries = codes[:300].copy()
        for row in range(len(queries)):  # move each query row % (radius + 6) bits away
            for bit in rng.choice(64 * words, row % (radius + 6), replace=False):
                queries[row, bit // 64] ^= np.uint64(1 << int(bit % 64))
        rows, ids = table.candidates(queries)
        probed = set(zip(rows.tolist(), ids.tolist(), strict=True))
        distance = np.bitwise_count(codes[None, :, :] ^ queries[:, None, :]).sum(axis=2)
        truth = set(zip(*np.nonzero(distance <= radius), strict=True))
        assert truth <= probed
        assert len(truth) >= 180  # most rows are within the radius
