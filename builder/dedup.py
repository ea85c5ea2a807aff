"""The near-duplicate index: which admitted images a new image is a copy of.

The rule (issue 9, calibrated by scripts/bench/hash_robustness.py): two images are near
duplicates when both PDQ hashes have quality >= `min_pdq_quality` and

    PDQ distance <= max_distance
    or (pHash distance <= phash_max_distance and PDQ distance <= pdq_max_distance_with_phash)

PDQ alone misses small crops; pHash alone matches unrelated images at scale; together they
catch crops without false matches. Low-quality PDQ hashes (flat images) never match near:
exact (sha256) duplicates are the pipeline's job and still apply to them.

Search is exact: a FAISS `IndexBinaryFlat` range search over the 256-bit PDQ codes at the
wider of the two PDQ radii, then the joint rule on the few candidates it returns. Without
faiss the same scan runs in numpy (same results, slower). Only admitted images are added, so
matches never chain (A~B and B~C does not make C a duplicate of A unless C~A).

Scaling past 10M codes: a flat scan costs 32 bytes per code per query. Shard the codes over
several IndexBinaryFlat (faiss.IndexBinaryShards, one per core or machine) and merge range
results; or index the two branches separately with multi-index hashing - PDQ <= 31 over 256
bits (8 chunks of 32 bits, one chunk within 3 bits) and pHash <= 10 over 64 bits, then check
PDQ <= 80 on those candidates - which touches a small fraction of the codes per query.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from builder.errors import UserError
from builder.ledger import Ledger
from builder.recipe import DedupConfig

log = logging.getLogger("cleanset.dedup")

PDQ_BYTES = 32

try:  # faiss is an extra; the numpy scan gives the same answers, slower
    import faiss  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - depends on the installation
    faiss = None


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


_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint16)


def _popcount64(values: np.ndarray) -> np.ndarray:
    return _POPCOUNT8[values.view(np.uint8).reshape(-1, 8)].sum(axis=1)


class NearIndex:
    """PDQ codes (with pHash and key alongside) of admitted images, searchable by the rule."""

    def __init__(self, config: DedupConfig, *, use_faiss: bool = True) -> None:
        self.config = config
        self.radius = max(config.max_distance, config.pdq_max_distance_with_phash)
        self.keys: list[str] = []
        # Grown by doubling, so admitting images one by one stays linear overall.
        self._phash = np.zeros(1024, dtype=np.uint64)
        self._matrix = np.zeros((0, PDQ_BYTES), dtype=np.uint8)
        if faiss is not None and use_faiss:
            self._faiss = faiss.IndexBinaryFlat(PDQ_BYTES * 8)
        else:
            if use_faiss:
                log.warning("faiss is not installed: near-duplicate search uses a numpy scan "
                            "(same results, slower). pip install 'cleanset[faiss]' for speed.")
            self._faiss = None
            self._matrix = np.zeros((1024, PDQ_BYTES), dtype=np.uint8)

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

    def add_codes(self, keys: Sequence[str], pdq: np.ndarray, phash: np.ndarray) -> None:
        """Bulk add: `pdq` is (n, 32) uint8, `phash` (n,) uint64, already quality-filtered."""
        if not len(keys):
            return
        pdq = np.ascontiguousarray(pdq, dtype=np.uint8)
        start, end = len(self.keys), len(self.keys) + len(keys)
        self._phash = _fit(self._phash, end)
        self._phash[start:end] = phash
        if self._faiss is not None:
            self._faiss.add(pdq)
        else:
            self._matrix = _fit(self._matrix, end)
            self._matrix[start:end] = pdq
        self.keys.extend(keys)

    # -- searching ----------------------------------------------------------------------
    def search(self, hashes: Hashes) -> list[Match]:
        return self.search_many([hashes])[0]

    def search_many(self, queries: Sequence[Hashes]) -> list[list[Match]]:
        """Matches per query, nearest first (ties: first indexed first). One batched scan."""
        results: list[list[Match]] = [[] for _ in queries]
        usable = [i for i, q in enumerate(queries) if self.usable(q)]
        if not usable or not self.keys:
            return results
        codes = np.stack([pdq_code(queries[i].pdq or "") for i in usable])
        phashes = np.array([phash_int(queries[i].phash or "") for i in usable], dtype=np.uint64)
        for row, (ids, pdq_d) in enumerate(self._range(codes)):
            ph_d = _popcount64(self._phash[ids] ^ phashes[row]) if len(ids) else ids
            keep = (pdq_d <= self.config.max_distance) | (
                (ph_d <= self.config.phash_max_distance)
                & (pdq_d <= self.config.pdq_max_distance_with_phash))
            order = sorted(np.flatnonzero(keep), key=lambda j: (int(pdq_d[j]), int(ids[j])))
            results[usable[row]] = [
                Match(self.keys[int(ids[j])], int(pdq_d[j]), int(ph_d[j])) for j in order]
        return results

    def _range(self, codes: np.ndarray) -> Iterable[tuple[np.ndarray, np.ndarray]]:
        """(indexed positions, PDQ distances) within `self.radius` of each query code."""
        if self._faiss is not None:
            # faiss returns distances strictly below the radius it is given.
            # One query at a time (the pipeline's case): faiss would wake its OpenMP pool for
            # every call, costing ~50 ms; a single thread answers in microseconds.
            threads = faiss.omp_get_max_threads()
            if len(codes) < 64:
                faiss.omp_set_num_threads(1)
            try:
                lims, dist, ids = self._faiss.range_search(np.ascontiguousarray(codes),
                                                           self.radius + 1)
            finally:
                faiss.omp_set_num_threads(threads)
            for q in range(len(codes)):
                yield ids[lims[q]:lims[q + 1]].astype(np.int64), dist[lims[q]:lims[q + 1]]
            return
        matrix = self._matrix[:len(self.keys)]
        for code in codes:
            dist = _POPCOUNT8[matrix ^ code].sum(axis=1)
            ids = np.flatnonzero(dist <= self.radius)
            yield ids, dist[ids]


def _fit(array: np.ndarray, size: int) -> np.ndarray:
    if size <= len(array):
        return array
    grown = np.zeros((max(size, 2 * len(array)), *array.shape[1:]), dtype=array.dtype)
    grown[:len(array)] = array
    return grown


def nearest(matches: Sequence[Match]) -> Match | None:
    return matches[0] if matches else None


def load_index(rows: Iterable[tuple[str, str | None, int | None, str | None]],
               config: DedupConfig, *, batch: int = 65_536, use_faiss: bool = True) -> NearIndex:
    """An index of (key, pdq hex, pdq quality, phash hex) rows, e.g. the ledger's samples."""
    index = NearIndex(config, use_faiss=use_faiss)
    keys: list[str] = []
    pdq: list[bytes] = []
    phash: list[int] = []

    def flush() -> None:
        if keys:
            codes = np.frombuffer(b"".join(pdq), dtype=np.uint8).reshape(-1, PDQ_BYTES)
            index.add_codes(keys, codes, np.array(phash, dtype=np.uint64))
        keys.clear()
        pdq.clear()
        phash.clear()

    for key, pdq_hex, quality, phash_hex in rows:
        if pdq_hex is None or phash_hex is None or (quality or 0) < config.min_pdq_quality:
            continue
        keys.append(key)
        pdq.append(bytes.fromhex(pdq_hex))
        phash.append(int(phash_hex, 16))
        if len(keys) >= batch:
            flush()
    flush()
    return index


def near_detail(match: Match) -> str:
    """The ledger `detail` of a near duplicate: whose copy it is and how near."""
    return f"near {match.key} pdq={match.pdq_distance} phash={match.phash_distance}"


# -- the build's view: the ledger's admitted samples, and the evaluation set ------------------

RULE_FIELDS = ("max_distance", "phash_max_distance", "pdq_max_distance_with_phash",
               "min_pdq_quality")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".tif", ".tiff"})


def open_ledger_index(ledger: Ledger, config: DedupConfig) -> NearIndex:
    """The index of every sample already in the output directory (earlier builds included).

    Refuses a directory whose hashes came from another hash pipeline: distances between
    hashes of different pipelines mean nothing.
    """
    from builder.media import HASH_PIPELINE

    recorded = ledger.get_meta("hash_pipeline")
    if recorded is not None and recorded != HASH_PIPELINE and ledger.sample_count():
        raise UserError(
            f"{ledger.path.parent}: its samples were hashed with pipeline {recorded!r}, this "
            f"cleanset hashes with {HASH_PIPELINE!r}; their near-duplicate distances are not "
            "comparable. Build into a new --out, or use the cleanset version that made it."
        )
    if recorded != HASH_PIPELINE:
        ledger.set_meta("hash_pipeline", HASH_PIPELINE)
    # `cleanset lookup` applies the rule of the latest build into the directory.
    rule = {name: getattr(config, name) for name in RULE_FIELDS}
    ledger.set_meta("dedup_rule", json.dumps(rule, sort_keys=True))
    started = time.perf_counter()
    rows = ledger.db.execute("SELECT key, pdq, pdq_quality, phash FROM samples ORDER BY key")
    index = load_index(rows, config)
    log.info("near-duplicate index: %d hashes loaded in %.2f s (%s)", len(index),
             time.perf_counter() - started, "faiss" if index.uses_faiss else "numpy")
    return index


def image_files(path: Path) -> list[Path]:
    """`path` itself, or every image file under the folder `path`, in sorted order."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(path).parts))


class Exclusions:
    """The evaluation images no candidate may copy (`[dedup] exclude`), hashed once."""

    def __init__(self, config: DedupConfig) -> None:
        self.by_sha256: dict[str, str] = {}
        self.index = NearIndex(config)

    @classmethod
    def load(cls, paths: Sequence[str], base: Path, config: DedupConfig) -> Exclusions:
        from builder.media import perceptual_hashes

        excl = cls(config)
        for entry in paths:
            for file in image_files(base / entry):
                data = file.read_bytes()
                name = str(file.relative_to(base)) if file.is_relative_to(base) else str(file)
                excl.by_sha256.setdefault(hashlib.sha256(data).hexdigest(), name)
                try:
                    pdq, quality, phash = perceptual_hashes(data)
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
