"""The dedup indexes split over Ray actors answer exactly as the single index and the ledger do,
also after a part's actor is killed and rebuilt from the rows."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import pytest

from builder.dedup import Hashes, load_index
from builder.recipe import DedupConfig

ray = pytest.importorskip("ray")

from builder.executors.ray_index import RayNearIndex, part_of  # noqa: E402


@pytest.fixture
def local_ray() -> Iterator[None]:
    # Per test, not per module: xdist interleaves other modules' tests in this process, and
    # a Ray left running (its threads allocate) would skew their tracemalloc measurements.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def flip(code: bytes, bits: list[int]) -> bytes:
    out = bytearray(code)
    for b in bits:
        out[b // 8] ^= 1 << (b % 8)
    return bytes(out)


def corpus(n: int, seed: int) -> tuple[list[tuple[str, str, int, str]], list[Hashes]]:
    """Indexed rows and queries: near copies at distances around the rule's edges, ties
    between two indexed codes, and unrelated codes."""
    rng = np.random.default_rng(seed)
    rows = []
    codes = [rng.bytes(32) for _ in range(n)]
    phashes = [int(rng.integers(0, 2**63)) for _ in range(n)]
    for i in range(n):
        # every 10th code has a twin at the same distance from the queries below: a tie
        code = codes[i - 1] if i % 10 == 9 else codes[i]
        rows.append((f"{i:010d}", code.hex(), 100, f"{phashes[i]:016x}"))
    queries = []
    for i in range(0, n, 3):
        d = int(rng.integers(0, 90))
        pdq = flip(codes[i], list(rng.choice(256, d, replace=False)))
        ph = phashes[i] ^ (int(rng.integers(0, 2**12)) if d > 31 else 0)
        queries.append(Hashes(pdq.hex(), 100, f"{ph:016x}"))
    queries += [Hashes(rng.bytes(32).hex(), 100, f"{int(rng.integers(0, 2**63)):016x}")
                for _ in range(50)]
    return rows, queries


def test_parts_give_the_single_index_answers_in_the_same_order(local_ray: None) -> None:
    config = DedupConfig()
    rows, queries = corpus(3000, seed=5)
    single = load_index(rows, config)
    split = RayNearIndex(config, 3, reload=lambda: iter(rows))
    try:
        assert len(split) == len(single) == 3000
        want = single.search_many(queries)
        assert sum(1 for m in want if m) > 700  # the queries really hit, ties included
        assert any(len(m) > 1 and m[0].pdq_distance == m[1].pdq_distance for m in want)
        assert split.search_many(queries) == want
        # adds after the start are seen by the next query, in any part
        for i, q in enumerate(queries[-50:]):
            key = f"{5000 + i:010d}"
            assert split.add(key, q) and single.add(key, q)
        assert split.search_many(queries) == single.search_many(queries)
    finally:
        split.close()


def test_a_killed_part_is_rebuilt_from_the_rows_and_answers_the_same(local_ray: None) -> None:
    config = DedupConfig()
    rows, queries = corpus(600, seed=6)
    single = load_index(rows, config)
    shas = [sha_of(i) for i in range(300)]
    split = RayNearIndex(config, 2, reload=lambda: iter(rows), reload_shas=lambda: iter(shas))
    try:
        victim = part_of(rows[0][0], 2)
        ray.kill(split.actors[victim], no_restart=True)
        assert split.search_many(queries) == single.search_many(queries)
        assert split.rebuilds == 1
        assert all(split.seen(sha) for sha in shas)  # both kinds of part came back whole
        assert not split.seen(sha_of(300))
    finally:
        split.close()


def test_unusable_hashes_are_not_indexed(local_ray: None) -> None:
    split = RayNearIndex(DedupConfig(), 2, reload=lambda: iter(()))
    try:
        assert not split.add("0000000001", Hashes("00" * 32, 10, "0" * 16))  # flat image
        assert len(split) == 0
    finally:
        split.close()


def test_a_prefetched_answer_also_sees_what_was_admitted_after_it_was_asked(
        local_ray: None) -> None:
    """The reconcile: asked at one moment, used later, equal to a query made when used."""
    config = DedupConfig()
    rows, queries = corpus(1000, seed=7)
    first, later = rows[:600], rows[600:]
    single = load_index(first, config)
    # a small slack, so recent adds are dropped many times during the test
    split = RayNearIndex(config, 2, reload=lambda: iter(first), recent_slack=4)
    try:
        answered = []
        for lo in range(0, len(queries), 30):  # asked a batch at a time, as the build does
            chunk = queries[lo:lo + 30]
            asked = split.prefetch([(query, None) for query in chunk])
            for offset, (query, prefetched) in enumerate(zip(chunk, asked, strict=True)):
                # between asking and using, samples near the later queries are admitted
                key, pdq, quality, phash = later[lo + offset]
                hashes = Hashes(pdq, quality, phash)
                split.add(key, hashes)
                single.add(key, hashes)
                answered.append(split.search_prefetched(prefetched) == single.search(query))
                split.settle(prefetched)
        assert all(answered)
        hits_from_later = sum(1 for q in queries
                              if any(int(m.key) >= 600 for m in single.search(q)))
        assert hits_from_later > 50  # the samples admitted after asking really matter
        assert split.recent_from > 200  # and the recent adds were trimmed on the way
    finally:
        split.close()


def sha_of(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def test_the_exact_parts_answer_seen_now_and_asked_ahead(local_ray: None) -> None:
    config = DedupConfig()
    indexed = [sha_of(i) for i in range(0, 4000, 2)]  # the even ones
    split = RayNearIndex(config, 3, reload=lambda: iter(()), reload_shas=lambda: iter(indexed),
                         recent_slack=4)
    flat = Hashes("00" * 32, 10, "0" * 16)  # unusable for near: only the sha256 counts
    try:
        assert split.seen(sha_of(10)) and not split.seen(sha_of(11))
        known = set(indexed)
        for lo in range(1, 600, 40):  # odd ones, asked ahead, some admitted meanwhile
            shas = [sha_of(i) for i in range(lo, lo + 40, 2)]
            asked = split.prefetch([(None, sha) for sha in shas])
            for n, (sha, prefetched) in enumerate(zip(shas, asked, strict=True)):
                if n % 3 == 0:  # admitted after the question was sent
                    later = shas[min(n + 1, len(shas) - 1)]
                    split.add(f"{lo * 100 + n:010d}", flat, later)
                    known.add(later)
                assert split.seen_prefetched(prefetched) == (sha in known), sha
                split.settle(prefetched)
        assert split.recent_from > 0  # the recent adds were trimmed on the way
        assert all(split.seen(sha) for sha in known)
        assert not any(split.seen(sha_of(i)) for i in range(1001, 1200, 2))
    finally:
        split.close()
