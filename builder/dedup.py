"""The near-duplicate index: which admitted images a new image is a copy of.

The rule (issue 9, calibrated by scripts/bench/hash_robustness.py): two images are near
duplicates when both PDQ hashes have quality >= `min_pdq_quality` and

    PDQ distance <= max_distance
    or (pHash distance <= phash_max_distance and PDQ distance <= pdq_max_distance_with_phash)

PDQ alone misses small crops; pHash alone matches unrelated images at scale; together they
catch crops without false matches. Low-quality PDQ hashes (flat images) never match near:
exact (sha256) duplicates are the pipeline's job and still apply to them.

Search is exact, in two tiers:
- most codes sit in a multi-index hash (Norouzi et al., "Fast search in Hamming space with
  multi-index hashing"): the 256 PDQ bits as 16 chunks of 16 bits, the 64 pHash bits as 4.
  Two codes within 31 bits agree to within 1 bit on at least one of the 16 chunks (pigeonhole:
  16 chunks x 2 bits > 31), so probing each chunk's bucket and its 16 one-bit neighbours finds
  every PDQ <= 31 candidate; likewise pHash <= 10 implies one of 4 chunks within 2 bits. Each
  bucket is a slice of a sorted id array found by direct addressing (65,536 buckets per
  chunk), the candidates are then checked against the full rule. At 1M uniform codes that is
  ~4,000 PDQ and ~8,000 pHash candidates per query instead of 1M.
- codes added since the last rebuild sit in a flat scan (FAISS `IndexBinaryFlat`, or numpy);
  the hash is rebuilt when they outgrow max(32,768, 1/8 of the hashed codes), so admitting
  images one at a time stays amortised O(1) and a query never scans more than 1/8 of the set.
A rule wide enough to make the probes cost more than a scan (PDQ radius >= 48 or pHash
radius >= 16) keeps everything in the flat scan: same answers, slower. Only admitted images
are added, so matches never chain (A~B and B~C does not make C a duplicate of A unless C~A).

Scaling past 10M codes: buckets grow with the set (1M codes: ~15 per bucket; 10M: ~150), so
query cost grows linearly; split the codes by id range over several indexes (one per core or
Ray actor, each up to a few million codes), broadcast each query batch and merge - the
answers are the union, so the result is the same exact search.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import combinations
from math import comb
from pathlib import Path

import numpy as np

from builder.errors import UserError
from builder.ledger import Ledger, rows_of
from builder.recipe import DedupConfig

log = logging.getLogger("cleanset.dedup")

PDQ_BYTES = 32
PDQ_WORDS = PDQ_BYTES // 8

try:  # faiss is an extra; the numpy scan gives the same answers, slower
    import faiss  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - depends on the installation
    faiss = None


@functools.cache
def _say_faiss_missing() -> None:
    """Once per process: a build opens several indexes, and one line tells the whole story."""
    log.warning("faiss is not installed: near-duplicate search scans new codes with numpy "
                "(same results, slower). pip install 'cleanset[faiss]'.")


@dataclass(frozen=True)
class Match:
    """An indexed image a query is a near duplicate of, and how near."""

    key: str
    pdq_distance: int
    phash_distance: int


@dataclass(frozen=True)
class Hashes:
    """One image's perceptual hashes as the ledger stores them (hex)."""

    pdq: str | None
    pdq_quality: int | None
    phash: str | None


def pdq_code(pdq_hex: str) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(pdq_hex), dtype=np.uint8)


def phash_int(phash_hex: str) -> int:
    return int(phash_hex, 16)


# Chunk widths per 64-bit word. Small sets use 16-bit chunks (4 per word: 65,536 buckets
# each); from LARGE_SET codes up, 21/21/22-bit chunks (3 per word), so buckets stay near one
# code each and the probes, not the candidates, set the cost.
SMALL_CHUNKS = (16, 16, 16, 16)
LARGE_CHUNKS = (21, 21, 22)
LARGE_SET = 1 << 22
MAX_PROBES = 20_000  # per query; a rule needing more probes is answered by a flat scan
QUERY_BATCH = 128  # queries per vectorised probe: bounds the candidate arrays to ~20 MB
SEARCH_THREADS = min(4, os.cpu_count() or 1)
MIN_HASHED = 32_768  # below this many codes a flat scan is as fast as probing


def _masks(width: int, bits: int) -> np.ndarray:
    """Every XOR mask of `width` bits with at most `bits` bits set (0 first)."""
    masks = [0]
    for count in range(1, bits + 1):
        masks.extend(sum(1 << b for b in chosen)
                     for chosen in combinations(range(width), count))
    return np.array(masks, dtype=np.int64)


@dataclass(frozen=True)
class _Layout:
    """How a code of `words` 64-bit words is cut into chunks, and how far each is probed.

    Pigeonhole: m chunks, distance <= d, so some chunk differs in at most d // m bits.
    """

    words: int
    widths: tuple[int, ...]  # per word, from the low bits
    radius: int

    @property
    def chunks(self) -> int:
        return self.words * len(self.widths)

    @property
    def bits(self) -> int:
        return self.radius // self.chunks

    @property
    def probes(self) -> int:
        return self.words * sum(sum(comb(w, i) for i in range(self.bits + 1))
                                for w in self.widths)

    def split(self, codes64: np.ndarray) -> np.ndarray:
        """(n, words) uint64 -> (n, chunks) int64 chunk values."""
        words, shifts, masks = [], [], []
        for word in range(self.words):
            shift = 0
            for width in self.widths:
                words.append(word)
                shifts.append(shift)
                masks.append((1 << width) - 1)
                shift += width
        return ((codes64[:, words] >> np.array(shifts, dtype=np.uint64))
                & np.array(masks, dtype=np.uint64)).astype(np.int64)


class _ChunkTable:
    """For each chunk position, the code ids sorted by that chunk's value.

    The buckets of every chunk live in one flat `offsets` array: chunk c's bucket v is
    `ids[offsets[base[c] + v]:offsets[base[c] + v + 1]]`, found by direct addressing.
    """

    def __init__(self, layout: _Layout, codes64: np.ndarray) -> None:
        values = layout.split(codes64)
        n = len(values)
        widths = [w for _ in range(layout.words) for w in layout.widths]
        sizes = [(1 << w) + 1 for w in widths]
        self.base = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        index_type = np.int32 if n * len(widths) < 2**31 else np.int64
        self.ids = np.empty(len(widths) * n, dtype=index_type)
        self.offsets = np.empty(sum(sizes), dtype=index_type)
        # A one-word code is kept beside its id in bucket order, so candidates are checked by
        # reading runs of memory instead of one random read each (~2x faster for pHash).
        self.sorted_codes = (np.empty(len(widths) * n, dtype=np.uint64) if layout.words == 1
                             else None)
        for c, width in enumerate(widths):
            # 16-bit keys sort by radix in numpy: ~20x faster than 64-bit ones.
            column = values[:, c].astype(np.uint16 if width <= 16 else np.uint32)
            order = np.argsort(column, kind="stable")
            self.ids[c * n:(c + 1) * n] = order
            if self.sorted_codes is not None:
                self.sorted_codes[c * n:(c + 1) * n] = codes64[order, 0]
            at = int(self.base[c])
            self.offsets[at] = c * n
            bucket_ends = np.cumsum(np.bincount(column, minlength=1 << width)) + c * n
            self.offsets[at + 1:at + sizes[c]] = bucket_ends
        self.layout = layout
        # Every probe of a query as (chunk it reads, XOR mask, bucket base), flattened so one
        # vectorised expression makes all of them whatever the chunk widths.
        masks = [_masks(w, layout.bits) for w in widths]
        self.probe_chunk = np.concatenate([np.full(len(m), c) for c, m in enumerate(masks)])
        self.probe_mask = np.concatenate(masks)
        self.probe_base = self.base[self.probe_chunk]

    def _positions(self, codes64: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query row, position in `ids`) of every code sharing a probed bucket with a query."""
        values = self.layout.split(codes64)
        q = len(values)
        probes = (values[:, self.probe_chunk] ^ self.probe_mask) + self.probe_base
        starts = self.offsets[probes].ravel().astype(np.int64)
        counts = self.offsets[probes + 1].ravel() - starts
        total = int(counts.sum())
        if not total:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        ends = np.cumsum(counts)
        positions = np.arange(total, dtype=np.int64) + np.repeat(starts - (ends - counts), counts)
        rows = np.repeat(np.arange(q, dtype=np.int64), counts.reshape(q, -1).sum(axis=1))
        return rows, positions

    def candidates(self, codes64: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query row, id) for every id sharing a probed bucket with a query; may repeat."""
        rows, positions = self._positions(codes64)
        return rows, self.ids[positions].astype(np.int64)

    def within(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query row, id) of one-word codes within the layout's radius; may repeat."""
        assert self.sorted_codes is not None
        rows, positions = self._positions(codes[:, None])
        keep = np.flatnonzero(
            np.bitwise_count(self.sorted_codes[positions] ^ codes[rows]) <= self.layout.radius)
        return rows[keep], self.ids[positions[keep]].astype(np.int64)


class NearIndex:
    """PDQ codes (with pHash and key alongside) of admitted images, searchable by the rule."""

    def __init__(self, config: DedupConfig, *, use_faiss: bool = True,
                 use_hashing: bool = True) -> None:
        self.config = config
        self.radius = max(config.max_distance, config.pdq_max_distance_with_phash)
        self.keys: list[str] = []
        # Grown by doubling, so admitting images one by one stays linear overall.
        self._pdq = np.zeros((1024, PDQ_BYTES), dtype=np.uint8)
        self._phash = np.zeros(1024, dtype=np.uint64)
        self._hashable = use_hashing and all(
            _Layout(words, widths, radius).probes <= MAX_PROBES
            for widths in (SMALL_CHUNKS, LARGE_CHUNKS)
            for words, radius in ((PDQ_WORDS, config.max_distance),
                                  (1, config.phash_max_distance)))
        self._hashed = 0  # codes [0, _hashed) are in the chunk tables, the rest are scanned
        self._pdq_table: _ChunkTable | None = None
        self._phash_table: _ChunkTable | None = None
        if faiss is not None and use_faiss:
            self._faiss = faiss.IndexBinaryFlat(PDQ_BYTES * 8)  # the scanned codes only
        else:
            if use_faiss:
                _say_faiss_missing()
            self._faiss = None

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def uses_faiss(self) -> bool:
        return self._faiss is not None

    def usable(self, hashes: Hashes) -> bool:
        """Whether these hashes can take part in near matching at all."""
        return (hashes.pdq is not None and hashes.phash is not None
                and (hashes.pdq_quality or 0) >= self.config.min_pdq_quality)

    # -- adding -------------------------------------------------------------------------
    def add(self, key: str, hashes: Hashes) -> bool:
        """Index an admitted image; False (not indexed) when its hashes cannot match near."""
        if not self.usable(hashes):
            return False
        assert hashes.pdq is not None and hashes.phash is not None
        self.add_codes([key], pdq_code(hashes.pdq)[None, :],
                       np.array([phash_int(hashes.phash)], dtype=np.uint64))
        return True

    def add_codes(self, keys: Sequence[str], pdq: np.ndarray, phash: np.ndarray, *,
                  defer: bool = False) -> None:
        """Bulk add: `pdq` is (n, 32) uint8, `phash` (n,) uint64, already quality-filtered.

        `defer`: the caller adds more and calls `compact()` at the end (one rebuild, not one
        per call).
        """
        if not len(keys):
            return
        pdq = np.ascontiguousarray(pdq, dtype=np.uint8)
        start, end = len(self.keys), len(self.keys) + len(keys)
        self._phash = _fit(self._phash, end)
        self._phash[start:end] = phash
        self._pdq = _fit(self._pdq, end)
        self._pdq[start:end] = pdq
        self.keys.extend(keys)
        if (not defer and self._hashable
                and end - self._hashed > max(MIN_HASHED, self._hashed // 8)):
            self.compact()
        elif self._faiss is not None:
            self._faiss.add(pdq)

    def compact(self) -> None:
        """Move every scanned code into the chunk tables (a bulk load calls this once)."""
        n = len(self.keys)
        if not self._hashable or self._hashed == n:
            return
        widths = LARGE_CHUNKS if n >= LARGE_SET else SMALL_CHUNKS
        self._pdq_table = _ChunkTable(_Layout(PDQ_WORDS, widths, self.config.max_distance),
                                      self._pdq64()[:n])
        self._phash_table = _ChunkTable(_Layout(1, widths, self.config.phash_max_distance),
                                        self._phash[:n, None])
        self._hashed = n
        if self._faiss is not None:
            self._faiss.reset()

    # -- searching ----------------------------------------------------------------------
    def search(self, hashes: Hashes) -> list[Match]:
        """search_many's answer for one query (the build's case, once per candidate),
        without the batching: most queries match nothing and return after the probe."""
        if not self.usable(hashes) or not self.keys:
            return []
        assert hashes.pdq is not None and hashes.phash is not None
        code = pdq_code(hashes.pdq)[None, :]
        phash = np.array([phash_int(hashes.phash)], dtype=np.uint64)
        _, ids = self._pairs(code, phash)
        if not len(ids):
            return []
        ids = np.unique(ids)  # a code probed through two chunks comes twice
        pdq_d = np.bitwise_count(self._pdq64()[ids] ^ code.view(np.uint64)).sum(axis=1)
        ph_d = np.bitwise_count(self._phash[ids] ^ phash)
        keep = (pdq_d <= self.config.max_distance) | (
            (ph_d <= self.config.phash_max_distance)
            & (pdq_d <= self.config.pdq_max_distance_with_phash))
        ids, pdq_d, ph_d = ids[keep], pdq_d[keep], ph_d[keep]
        return [Match(self.keys[int(ids[j])], int(pdq_d[j]), int(ph_d[j]))
                for j in np.lexsort((ids, pdq_d))]

    def search_many(self, queries: Sequence[Hashes]) -> list[list[Match]]:
        """Matches per query, nearest first (ties: first indexed first)."""
        results: list[list[Match]] = [[] for _ in queries]
        usable = [i for i, q in enumerate(queries) if self.usable(q)]
        if not usable or not self.keys:
            return results
        codes = np.stack([pdq_code(queries[i].pdq or "") for i in usable])
        phashes = np.array([phash_int(queries[i].phash or "") for i in usable], dtype=np.uint64)
        batches = [slice(lo, lo + QUERY_BATCH) for lo in range(0, len(usable), QUERY_BATCH)]

        def run(batch: slice) -> tuple[np.ndarray, ...]:
            return self._search_batch(codes[batch], phashes[batch])

        # numpy releases the GIL in the gathers that dominate, so threads use every core.
        if len(batches) > 1 and SEARCH_THREADS > 1:
            with ThreadPoolExecutor(SEARCH_THREADS) as pool:
                answers = list(pool.map(run, batches))
        else:
            answers = [run(batch) for batch in batches]
        for batch, (rows, ids, pdq_d, ph_d) in zip(batches, answers, strict=True):
            for j in np.lexsort((ids, pdq_d, rows)):
                found = results[usable[batch.start + int(rows[j])]]
                key = self.keys[int(ids[j])]
                if not found or found[-1].key != key:  # a code probed through two chunks
                    found.append(Match(key, int(pdq_d[j]), int(ph_d[j])))
        return results

    def _search_batch(self, codes: np.ndarray, phashes: np.ndarray) -> tuple[np.ndarray, ...]:
        """(query row, id, PDQ distance, pHash distance) of every match of these queries."""
        rows, ids = self._pairs(codes, phashes)
        pdq_d = np.bitwise_count(self._pdq64()[ids] ^ codes.view(np.uint64)[rows]).sum(axis=1)
        ph_d = np.bitwise_count(self._phash[ids] ^ phashes[rows])
        keep = (pdq_d <= self.config.max_distance) | (
            (ph_d <= self.config.phash_max_distance)
            & (pdq_d <= self.config.pdq_max_distance_with_phash))
        return rows[keep], ids[keep], pdq_d[keep], ph_d[keep]

    def _pdq64(self) -> np.ndarray:
        return self._pdq.view(np.uint64)

    def _pairs(self, codes: np.ndarray, phashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query row, id) candidates: every true match is among them, possibly twice."""
        parts = [self._scan(codes)]
        if not self._hashed:
            return parts[0]
        if self._pdq_table is not None and self._phash_table is not None:
            rows, ids = self._pdq_table.candidates(codes.view(np.uint64))
            parts.append(self._within(rows, ids, codes.view(np.uint64), self.config.max_distance))
            parts.append(self._phash_table.within(phashes))
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))

    def _within(self, rows: np.ndarray, ids: np.ndarray, codes64: np.ndarray,
                radius: int) -> tuple[np.ndarray, np.ndarray]:
        """The (row, id) pairs whose PDQ codes are within `radius`, a 64-bit word at a time.

        Most candidates are already too far after two of the four words, so the later words
        are compared only for the few left; word columns keep the temporaries small.
        """
        db = self._pdq64()
        distance = np.zeros(len(ids), dtype=np.uint16)
        for word in range(PDQ_WORDS):
            distance += np.bitwise_count(db[ids, word] ^ codes64[rows, word])
            if word % 2:
                keep = np.flatnonzero(distance <= radius)
                rows, ids, distance = rows[keep], ids[keep], distance[keep]
        return rows, ids

    def _scan(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query row, id) within `self.radius` of each query among the unhashed codes."""
        first, n = self._hashed, len(self.keys)
        if first == n:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        if self._faiss is not None:
            # One query at a time (the pipeline's case): faiss would wake its OpenMP pool for
            # every call, costing ~50 ms; a single thread answers in microseconds.
            threads = faiss.omp_get_max_threads()
            if len(codes) < 64:
                faiss.omp_set_num_threads(1)
            try:
                # faiss returns distances strictly below the radius it is given.
                lims, _, ids = self._faiss.range_search(np.ascontiguousarray(codes),
                                                        self.radius + 1)
            finally:
                faiss.omp_set_num_threads(threads)
            rows = np.repeat(np.arange(len(codes), dtype=np.int64), np.diff(lims).astype(np.int64))
            return rows, ids.astype(np.int64) + first
        scanned = self._pdq64()[first:n]
        rows_out, ids_out = [], []
        for row, code in enumerate(codes.view(np.uint64)):
            ids = np.flatnonzero(np.bitwise_count(scanned ^ code).sum(axis=1) <= self.radius)
            rows_out.append(np.full(len(ids), row, dtype=np.int64))
            ids_out.append(ids + first)
        return np.concatenate(rows_out), np.concatenate(ids_out)


def _fit(array: np.ndarray, size: int) -> np.ndarray:
    if size <= len(array):
        return array
    grown = np.zeros((max(size, 2 * len(array)), *array.shape[1:]), dtype=array.dtype)
    grown[:len(array)] = array
    return grown


def nearest(matches: Sequence[Match]) -> Match | None:
    return matches[0] if matches else None


def code_batches(rows: Iterable[tuple[str, str | None, int | None, str | None]],
                 config: DedupConfig, *, batch: int = 65_536
                 ) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
    """(keys, (n, 32) uint8 PDQ codes, (n,) uint64 pHashes) of the rows that can match near,
    `batch` at a time, from (key, pdq hex, pdq quality, phash hex) rows."""
    keys: list[str] = []
    pdq: list[bytes] = []
    phash: list[int] = []
    for key, pdq_hex, quality, phash_hex in rows:
        if pdq_hex is None or phash_hex is None or (quality or 0) < config.min_pdq_quality:
            continue
        keys.append(key)
        pdq.append(bytes.fromhex(pdq_hex))
        phash.append(int(phash_hex, 16))
        if len(keys) >= batch:
            yield keys, _codes(pdq), np.array(phash, dtype=np.uint64)
            keys, pdq, phash = [], [], []
    if keys:
        yield keys, _codes(pdq), np.array(phash, dtype=np.uint64)


def _codes(pdq: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(pdq), dtype=np.uint8).reshape(-1, PDQ_BYTES)


def load_index(rows: Iterable[tuple[str, str | None, int | None, str | None]],
               config: DedupConfig, *, batch: int = 65_536, use_faiss: bool = True) -> NearIndex:
    """An index of (key, pdq hex, pdq quality, phash hex) rows, e.g. the ledger's samples."""
    index = NearIndex(config, use_faiss=use_faiss)
    for keys, pdq, phash in code_batches(rows, config, batch=batch):
        index.add_codes(keys, pdq, phash, defer=True)
    index.compact()
    return index


def near_detail(match: Match) -> str:
    """The ledger `detail` of a near duplicate: whose copy it is and how near."""
    return f"near {match.key} pdq={match.pdq_distance} phash={match.phash_distance}"


# -- the build's view: the ledger's admitted samples, and the evaluation set ------------------

RULE_FIELDS = ("max_distance", "phash_max_distance", "pdq_max_distance_with_phash",
               "min_pdq_quality")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".tif", ".tiff"})


def open_ledger_index(ledger: Ledger, config: DedupConfig) -> NearIndex:
    """The index of every sample already in the output directory (earlier builds included)."""
    record_dedup_rule(ledger, config)
    started = time.perf_counter()
    index = load_index(ledger_hash_rows(ledger), config)
    log.info("near-duplicate index: %d hashes loaded in %.2f s (%s)", len(index),
             time.perf_counter() - started, "faiss" if index.uses_faiss else "numpy")
    return index


def dataset_hash_pipeline(db: sqlite3.Connection, where: Path) -> str:
    """The hash pipeline the dataset whose ledger is `db` was built with: every build, lookup
    and takedown into it hashes with that one (distances across pipelines mean nothing).

    The ledger meta records it; a dataset from before that meta existed says it in its
    samples' provenance (and was hashed with v2, the last pipeline before the meta); a new
    dataset gets builder.media.HASH_PIPELINE. A pipeline this cleanset does not have is a
    user error naming the directory.
    """
    from builder.canonical import V2
    from builder.media import HASH_PIPELINE, HASH_PIPELINES

    row = db.execute("SELECT value FROM meta WHERE key = 'hash_pipeline'").fetchone()
    recorded = row[0] if row else _sample_pipeline(db, V2)
    if recorded is None:
        return HASH_PIPELINE
    if recorded not in HASH_PIPELINES:
        raise UserError(
            f"{where}: its samples were hashed with pipeline {recorded!r}, which this cleanset "
            f"does not have (it has {', '.join(HASH_PIPELINES)}); near-duplicate distances "
            "between pipelines are not comparable. Use the cleanset version that made it, or "
            "build into a new --out.")
    return recorded


def _sample_pipeline(db: sqlite3.Connection, default: str) -> str | None:
    """The pipeline named in the first sample's provenance; None without samples."""
    row = db.execute("SELECT provenance FROM samples ORDER BY key LIMIT 1").fetchone()
    if row is None:
        return None
    try:
        named = json.loads(row[0]).get("hash_pipeline")
    except (TypeError, ValueError, AttributeError):
        named = None
    return named if isinstance(named, str) else default


def record_dedup_rule(ledger: Ledger, config: DedupConfig) -> None:
    """`cleanset lookup` applies the rule of the latest build into the directory."""
    rule = {name: getattr(config, name) for name in RULE_FIELDS}
    ledger.set_meta("dedup_rule", json.dumps(rule, sort_keys=True))


def ledger_hash_rows(ledger: Ledger) -> Iterator[tuple[str, str | None, int | None, str | None]]:
    """(key, pdq, pdq quality, phash) of every sample, in key order, the uncommitted too."""
    yield from rows_of(
        ledger.db.execute("SELECT key, pdq, pdq_quality, phash FROM samples ORDER BY key"))


def image_files(path: Path) -> list[Path]:
    """`path` itself, or every image file under the folder `path` (hidden files and folders
    skipped, links to folders not followed), in sorted order.

    Also what is named as an image but is not a file to read (a broken link, a pipe): left
    out, a portfolio's broken link read as "not in the dataset" and an evaluation image as
    excluded; each caller names it instead (and must not open a pipe: it would wait).

    A folder that cannot be listed is a UserError naming it: skipped in silence (as
    `Path.rglob` does), its images would be missing from a lookup's answer ("none of my
    works is in the dataset") or from an evaluation set that must exclude them all.
    """
    if path.is_file():
        return [path]

    def unreadable(exc: OSError) -> None:
        raise UserError(f"{exc.filename}: this folder cannot be read ({exc.strerror}), so its "
                        "images would be left out. Make it readable to this user, or give "
                        "the folders inside it that are.")

    found: list[Path] = []
    for folder, dirs, files in os.walk(path, onerror=unreadable):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(folder, f) for f in files
                  if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(found)


def _evaluation_bytes(file: Path) -> bytes:
    """An evaluation image's bytes; one that cannot be read stops the build before it starts:
    skipped, its copies would be admitted into the training set it must stay out of."""
    why = None if file.is_file() else (
        "a broken link" if file.is_symlink() and not file.exists() else
        "not a file (a pipe or a device)")
    if why is None:
        try:
            return file.read_bytes()
        except OSError as exc:
            why = f"cannot be read ({exc.strerror or exc})"
    raise UserError(f"[dedup] exclude: {file} is {why}, so candidates copying it could not be "
                    "refused. Fix it or remove it from the evaluation folder. Nothing was built.")


class Exclusions:
    """The evaluation images no candidate may copy (`[dedup] exclude`), hashed once."""

    def __init__(self, config: DedupConfig) -> None:
        self.by_sha256: dict[str, str] = {}
        self.index = NearIndex(config)

    @classmethod
    def load(cls, paths: Sequence[str], base: Path, config: DedupConfig, *,
             pipeline: str) -> Exclusions:
        """Hash every evaluation image in the dataset's hash `pipeline`."""
        from builder.media import perceptual_hashes

        excl = cls(config)
        for entry in paths:
            for file in image_files(base / entry):
                data = _evaluation_bytes(file)
                name = str(file.relative_to(base)) if file.is_relative_to(base) else str(file)
                excl.by_sha256.setdefault(hashlib.sha256(data).hexdigest(), name)
                try:
                    pdq, quality, phash = perceptual_hashes(data, pipeline=pipeline)
                except ValueError as exc:
                    log.warning("dedup.exclude: %s is not a usable image (%s); only its exact "
                                "bytes are excluded", file, exc)
                    continue
                excl.index.add(name, Hashes(pdq, quality, phash))
        if paths:
            log.info("evaluation exclusion: %d files, %d near-searchable",
                     len(excl.by_sha256), len(excl.index))
        return excl

    def overlap(self, sha256: str, hashes: Hashes) -> str | None:
        """The ledger detail when the image copies an evaluation image, else None."""
        name = self.by_sha256.get(sha256)
        if name is not None:
            return f"same sha256 as evaluation image {name}"
        matches = self.index.search(hashes)
        if matches:
            m = matches[0]
            return (f"near evaluation image {m.key} pdq={m.pdq_distance} "
                    f"phash={m.phash_distance}")
        return None
