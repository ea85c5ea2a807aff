"""What a denylist's PDQ lines cost each candidate of a build, by how many lines there are.

    python scripts/bench/denylist_pdq.py [--sizes 100,1000,10000,100000] [--queries 300]

Every build reads DIR/denylist.jsonl (a takedown writes a PDQ line for each work it removes)
and the recipe's list, and compares each candidate's PDQ hash with every PDQ line
(`Denylist.by_pdq`, called by the opt-out gate once the bytes are known; a recheck and
`cleanset lookup` call it once per sample). Prints microseconds of CPU per candidate at each
size, beside the same search written as a loop over Python ints (how cleanset searched before
the fifteenth pass), measured in the same run, as a ratio.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from builder.optout.denylist import Denylist, Entry  # noqa: E402


def python_loop(codes: list[int], entries: list[Entry], pdq: str,
                max_distance: int) -> tuple[Entry, int] | None:
    """The reference: the nearest entry by a scan over Python ints."""
    value = int(pdq, 16)
    best = min(((bin(value ^ h).count("1"), e) for h, e in zip(codes, entries, strict=True)),
               key=lambda p: p[0])
    return (best[1], best[0]) if best[0] <= max_distance else None


def cpu_us(fn, queries: list[str]) -> float:  # type: ignore[no-untyped-def]
    start = time.thread_time()
    for query in queries:
        fn(query)
    return (time.thread_time() - start) / len(queries) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000,100000")
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    rng = random.Random(21)
    print(f"{'PDQ lines':>10} {'cleanset us':>12} {'Python loop us':>15} {'ratio':>7}")
    for size in (int(s) for s in args.sizes.split(",")):
        codes = [rng.getrandbits(256) for _ in range(size)]
        deny = Denylist()
        for n, code in enumerate(codes):
            deny.add(Entry("pdq", f"{code:064x}", "takedown", f"denylist.jsonl:{n + 1}"))
        # Half the queries are a listed work a few bits off, half are not listed.
        queries = [f"{rng.choice(codes) ^ 1 << rng.randrange(256) if n % 2 else rng.getrandbits(256):064x}"
                   for n in range(args.queries)]
        for query in queries[:20]:  # the same answers, or the figures mean nothing
            assert deny.by_pdq(query, 31) == python_loop(codes, deny.pdq, query, 31)
        deny.by_pdq(queries[0], 31)  # the codes are made at the first search
        ours = cpu_us(lambda q, deny=deny: deny.by_pdq(q, 31), queries)
        few = queries[: max(3, args.queries * 1000 // max(size, 1000))]  # the loop is slow
        loop = cpu_us(lambda q, c=codes, d=deny: python_loop(c, d.pdq, q, 31), few)
        print(f"{size:>10} {ours:>12.1f} {loop:>15.1f} {loop / ours:>6.0f}x")


if __name__ == "__main__":
    main()
