"""Throughput and memory of the near-duplicate index at scale (builder/dedup.py).

    python scripts/bench/near_index.py [--n 1000000] [--queries 5000] [--threads 2]

Prints: insert throughput (one at a time, as the pipeline admits, and in bulk), query
throughput one query at a time (the pipeline's `_admit`) and batched (`cleanset lookup` of a
portfolio), memory per hash, the time to rebuild the index from a ledger holding N samples
(what every build into an existing DIR does at start), and recall of planted near copies.
"""

from __future__ import annotations

import argparse
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from builder.dedup import Hashes, NearIndex, faiss, open_ledger_index  # noqa: E402
from builder.ledger import Ledger  # noqa: E402
from builder.recipe import DedupConfig  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def flip(code: np.ndarray, bits: np.ndarray) -> np.ndarray:
    out = np.unpackbits(code.copy())
    out[bits] ^= 1
    return np.packbits(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--single-inserts", type=int, default=100_000)
    args = parser.parse_args()
    if faiss is not None:
        faiss.omp_set_num_threads(args.threads)
    rule = DedupConfig()
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (args.n, 32), dtype=np.uint8)
    phash = rng.integers(0, 2**63, args.n, dtype=np.uint64)
    keys = [f"{i:010d}" for i in range(args.n)]
    print(f"multi-index hashing (16 x 16-bit chunks); scan of new codes: "
          f"{'faiss ' + faiss.__version__ if faiss else 'numpy'}, "
          f"{args.threads} threads; rule radius {max(rule.max_distance, rule.pdq_max_distance_with_phash)}")

    before = rss_mb()
    index = NearIndex(rule)
    start = time.perf_counter()
    for lo in range(0, args.n, 65_536):
        index.add_codes(keys[lo:lo + 65_536], codes[lo:lo + 65_536], phash[lo:lo + 65_536],
                        defer=True)
    appended = time.perf_counter() - start
    index.compact()
    bulk = time.perf_counter() - start
    print(f"chunk tables built in {bulk - appended:.2f} s")
    per_hash = (rss_mb() - before) * 1024 * 1024 / args.n
    key_bytes = sys.getsizeof(keys[-1]) + 8  # the str and its slot in the list
    print(f"bulk insert: {args.n:,} hashes in {bulk:.2f} s = {args.n / bulk:,.0f}/s; "
          f"memory {per_hash:.0f} bytes/hash in the code arrays + {key_bytes} for the key = "
          f"{per_hash + key_bytes:.0f} bytes/hash")

    single = NearIndex(rule)
    m = min(args.single_inserts, args.n)
    start = time.perf_counter()
    for i in range(m):
        single.add(keys[i], Hashes(codes[i].tobytes().hex(), 100, f"{int(phash[i]):016x}"))
    t = time.perf_counter() - start
    print(f"single insert (pipeline path, hex in): {m / t:,.0f}/s")
    del single

    # Queries: half planted near copies of indexed codes (5..31 bits flipped), half random.
    q = args.queries
    targets = rng.integers(0, args.n, q // 2)
    planted = [Hashes(flip(codes[t], rng.choice(256, int(rng.integers(5, 32)), replace=False))
                      .tobytes().hex(), 100, f"{int(phash[t]):016x}") for t in targets]
    randoms = [Hashes(rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex(), 100,
                      f"{int(rng.integers(0, 2**63)):016x}") for _ in range(q - len(planted))]
    queries = planted + randoms

    ones = min(q, 300)
    start = time.perf_counter()
    for h in queries[:ones]:
        index.search(h)
    t = time.perf_counter() - start
    print(f"query one at a time: {ones / t:,.0f} queries/s ({t / ones * 1e3:.2f} ms each)")

    start = time.perf_counter()
    results = index.search_many(queries)
    t = time.perf_counter() - start
    print(f"query batched ({q:,} at once): {q / t:,.0f} queries/s")
    batched = q / t

    # The reference, measured in the same run: the same codes in a flat scan only (FAISS
    # IndexBinaryFlat range search, the exact method the hashing must beat).
    flat = NearIndex(rule, use_hashing=False)
    flat.add_codes(keys, codes, phash)
    subset = queries[::4]
    start = time.perf_counter()
    flat_results = flat.search_many(subset)
    flat_rate = len(subset) / (time.perf_counter() - start)
    assert flat_results == results[::4], "multi-index hashing and the flat scan disagree"
    print(f"flat scan reference (batched): {flat_rate:,.0f} queries/s -> multi-index hashing "
          f"{batched / flat_rate:.2f}x, same answers on {len(subset):,} queries")
    del flat

    hit = sum(1 for t_, r in zip(targets, results[:len(planted)], strict=True)
              if any(mm.key == keys[t_] for mm in r))
    false = sum(1 for r in results[len(planted):] if r)
    print(f"planted near copies found: {hit}/{len(planted)}; random queries matched: {false}")

    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(Path(tmp) / "ledger.sqlite")
        db: sqlite3.Connection = ledger.db
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO samples(key, shard, build, seq, sha256, sha1, pdq, pdq_quality, phash,"
            " license, source, source_id, width, height, mime, ext, bytes, provenance)"
            " VALUES (?, 0, 1, 0, '', '', ?, 100, ?, 'CC0-1.0', 's', ?, 1, 1, 'image/jpeg',"
            " 'jpg', 1, '{}')",
            ((keys[i], codes[i].tobytes().hex(), f"{int(phash[i]):016x}", keys[i])
             for i in range(args.n)))
        db.execute("COMMIT")
        start = time.perf_counter()
        loaded = open_ledger_index(ledger, rule)
        t = time.perf_counter() - start
        print(f"rebuild from ledger at build start: {len(loaded):,} hashes in {t:.2f} s")
        ledger.close()


if __name__ == "__main__":
    main()
