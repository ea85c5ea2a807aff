"""What cleanset's per-candidate stages alone can do on this machine: the ceiling of a build.

    python scripts/bench/stages_alone.py RECIPE [--processes 2] [--threads 8] [--limit N]

Runs the stages a build runs (licence gate, opt-out checks, fetch, image check with its
decode and hashes, the evidence records) over the recipe's candidates in worker processes
made as the processes executor makes them (forkserver, each with its own threads, batches of
32), with no build process behind them: no ordered decisions, no dedup, no shard or ledger
writes, no papers. A build cannot go faster than this on the same cores; `throughput.py`
prints it beside cleanset and img2dataset, measured in the same run.

Prints candidates/s and the workers' CPU per candidate.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

# PYTHONPATH (a tree to measure, e.g. an earlier commit) comes first; this repository last
sys.path.append(str(Path(__file__).resolve().parents[2]))

_BENCH: tuple[Any, ThreadPoolExecutor] | None = None


def _start(plan: Any, threads: int) -> None:
    global _BENCH
    _BENCH = (plan.build(), ThreadPoolExecutor(threads))


def _batch(candidates: list[Any]) -> float:
    """The batch's stages; the CPU seconds this process spent on them."""
    assert _BENCH is not None
    bench, pool = _BENCH
    start = time.process_time()
    list(pool.map(bench.run, candidates))
    return time.process_time() - start


def _ready(_: int) -> int:
    return os.getpid()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8, help="per process")
    parser.add_argument("--limit", type=int, default=0, help="candidates (0: all)")
    args = parser.parse_args()
    os.environ.setdefault("SOURCE_DATE_EPOCH", "1700000000")

    from builder.executors.local import STAGE_MODULES
    from builder.licensing import load_policy
    from builder.pipeline import _Cursor, enumerate_candidates
    from builder.recipe import load_recipe
    from builder.stages import StagePlan

    recipe = load_recipe(args.recipe)
    policy = load_policy(recipe.policy.use, jurisdiction=recipe.policy.jurisdiction,
                         base_dir=recipe.base_dir)
    with tempfile.TemporaryDirectory() as out:
        plan = StagePlan(recipe=recipe, policy=policy, out=Path(out), evidence_build=1)
        candidates = [s.candidate for s in enumerate_candidates(recipe, _Cursor(0, 0, None))]
        candidates = candidates[:args.limit or None]
        batches = [candidates[i:i + 32] for i in range(0, len(candidates), 32)]
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(STAGE_MODULES))
        with ProcessPoolExecutor(args.processes, mp_context=context, initializer=_start,
                                 initargs=(plan, args.threads)) as pool:
            list(pool.map(_ready, range(2 * args.processes)))  # every worker started
            start = time.perf_counter()
            cpu = sum(pool.map(_batch, batches))
            wall = time.perf_counter() - start
    print(f"stages alone: {len(candidates) / wall:.1f} candidates/s "
          f"({args.processes} processes x {args.threads} threads, {len(candidates)} candidates "
          f"in {wall:.2f} s), workers' CPU {cpu * 1e3 / len(candidates):.2f} ms per candidate")


if __name__ == "__main__":
    main()
