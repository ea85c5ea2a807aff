"""Throughput of the Ray executor vs the local ones, and the driver's per-sample ceiling.

    python scripts/bench/ray_throughput.py [--images 2000] [--rounds 3] [--batch-sizes 8,32,128]

1. the same seeded corpus and local server as scripts/bench/throughput.py (reused from it),
   in its own --workdir: make_corpus replaces a workdir's images when the count differs;
2. `cleanset build` over the same URL list with --executor threads, processes, and ray (a
   private local Ray, all CPUs) at each batch size, alternating the order per round;
   once with a private Ray started by the build (as `--executor ray` alone does), and at
   each batch size against a Ray head already running (as on a cluster: no start-up cost),
   then at the largest batch with the dedup indexes on Ray actors (--index-parts) and with
   the shards written by the workers;
3. the driver alone: the build run in this process with every outcome computed beforehand,
   so the time left is what the driver does per candidate (source enumeration, dedup,
   keys, shard writes, ledger): one driver cannot go faster than this, however many workers.

Prints candidates/s (min/median/max over rounds) and the driver's microseconds per candidate.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# PYTHONPATH (a tree to measure, e.g. an earlier commit) comes first; this repository last
sys.path.insert(0, str(HERE))
sys.path.append(str(REPO))

from throughput import (  # noqa: E402
    CC0,
    free_port,
    make_corpus,
    start_server,
    write_bench_recipe,
)


def write_recipe(work: Path, urls: Path, per_shard: int, workers: int, batch: int,
                 index_parts: int = 0) -> Path:
    return write_bench_recipe(work / f"ray-bench-{batch}-{index_parts}.toml", urls, per_shard,
                              workers, f"""
        [executor]
        batch_size = {batch}
        index_parts = {index_parts}
    """)


def run_build(recipe: Path, out: Path, executor: str, *extra: str) -> float:
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000", "PYTHONPATH": str(REPO),
           "RAY_AUTH_MODE": "token"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "builder", "build", str(recipe), "--out",
                           str(out), "--no-progress", "--executor", executor, *extra],
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{executor} build failed:\n{proc.stderr[-3000:]}")
    return wall


def start_ray_head(cpus: int) -> tuple[subprocess.Popen[str], str]:
    """A running Ray head, as on a cluster: builds connect to it and pay no start-up."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--port=0",
         f"--num-cpus={cpus}", "--include-dashboard=false", "--disable-usage-stats",
         "--block"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "ray start --address=" in line:
            address = line.split("--address=", 1)[1].strip().strip("'\"")
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, address
    raise SystemExit("ray start --head did not come up")


class _Precomputed:
    """An executor whose outcomes were all computed before the clock started."""

    def __init__(self, outcomes: dict[str, Any]) -> None:
        self.outcomes = outcomes
        self.max_inflight = 64

    def submit(self, candidate: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(self.outcomes[candidate.candidate_id])
        return future

    def summary_lines(self) -> list[str]:
        return []

    def close(self, *, wait: bool = True) -> None:
        pass


def driver_cost(recipe_path: Path, out: Path) -> tuple[float, float, int]:
    """(microseconds per candidate the driver spends, of them on a CPU, candidates) with the
    stages done. The CPU figure is what load on a shared machine does not inflate."""
    os.environ["SOURCE_DATE_EPOCH"] = "1700000000"
    from concurrent.futures import ThreadPoolExecutor

    from builder import pipeline
    from builder.licensing import load_policy
    from builder.pipeline import BuildOptions, _Cursor, enumerate_candidates
    from builder.recipe import load_recipe
    from builder.stages import StagePlan

    recipe = load_recipe(recipe_path)
    policy = load_policy(recipe.policy.use, jurisdiction=recipe.policy.jurisdiction,
                         base_dir=recipe.base_dir)
    # a new dataset's pipeline; the evidence records made where the stages run, as in a build
    bench = StagePlan(recipe=recipe, policy=policy, out=out, **_evidence_build(StagePlan)).build()
    cands = [s.candidate for s in enumerate_candidates(recipe, _Cursor(0, 0, None))]
    with ThreadPoolExecutor(16) as pool:
        outcomes = dict(zip((c.candidate_id for c in cands), pool.map(bench.run, cands),
                            strict=True))
    bench.close()
    shutil.rmtree(out, ignore_errors=True)
    # Instrumentation for this benchmark only: the pipeline gets the precomputed executor,
    # and the candidate loop is timed apart from opening the ledger and writing the papers.
    pipeline.make_executor = lambda *a, **k: _Precomputed(outcomes)
    execute = pipeline._Run.execute
    timed: list[float] = []
    cpu: list[float] = []

    def timed_execute(run: Any) -> Any:
        start, start_cpu = time.perf_counter(), time.process_time()
        try:
            return execute(run)
        finally:
            timed.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)

    pipeline._Run.execute = timed_execute  # type: ignore[method-assign]
    pipeline.build(recipe, BuildOptions(out=out, progress=False))
    return timed[0] / len(cands) * 1e6, cpu[0] / len(cands) * 1e6, len(cands)


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f}  ({min(values):.1f} .. {max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--per-shard", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--batch-sizes", default="8,32,128")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cleanset-ray-bench"))
    parser.add_argument("--index-parts", type=int, default=2,
                        help="also run the largest batch with the near-duplicate index split "
                             "over this many Ray actors (0: skip)")
    parser.add_argument("--driver-only", action="store_true",
                        help="measure only the driver alone (step 3): no Ray, no builds")
    args = parser.parse_args()

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    names = make_corpus(work, args.images, args.seed)
    total_mb = sum(os.path.getsize(work / "img" / n) for n in names) / 1e6
    print(f"corpus: {len(names)} files, {total_mb:.0f} MB; {os.cpu_count()} CPUs")
    port = free_port()
    urls = work / "urls.parquet"
    pq.write_table(pa.table({"url": [f"http://127.0.0.1:{port}/{n}" for n in names],
                             "license": [CC0] * len(names)}), urls)
    batches = [int(b) for b in args.batch_sizes.split(",")]
    recipes = {b: write_recipe(work, urls, args.per_shard, args.workers, b) for b in batches}
    split = write_recipe(work, urls, args.per_shard, args.workers, batches[-1], args.index_parts)
    # (label, executor, recipe, extra CLI arguments); "ray local" starts its own Ray each time
    configs: list[tuple[str, str, Path, tuple[str, ...]]] = [
        ("threads", "threads", recipes[batches[0]], ()),
        ("processes", "processes", recipes[batches[0]], ()),
        (f"ray local, batch {batches[-1]}", "ray", recipes[batches[-1]], ())]
    rates: dict[str, list[float]] = {}
    server = start_server(work, port)
    if args.driver_only:
        try:
            micros, cpu_micros, count = driver_cost(recipes[batches[0]], work / "out-driver")
        finally:
            server.terminate()
            server.wait()
        print(f"driver alone: {micros:.0f} us per candidate ({cpu_micros:.0f} us CPU) over "
              f"{count} candidates (ceiling {1e6 / micros:.0f} candidates/s for one driver)")
        return
    head, address = start_ray_head(os.cpu_count() or 2)
    configs += [(f"ray head, batch {b}", "ray", recipes[b], ("--ray-address", address))
                for b in batches]
    if args.index_parts:
        configs.append((f"ray head, batch {batches[-1]}, index in {args.index_parts} actors",
                        "ray", split, ("--ray-address", address)))
    configs.append((f"ray head, batch {batches[-1]}, workers write shards", "ray",
                    recipes[batches[-1]], ("--ray-address", address, "--write-shards",
                                           "workers")))
    try:
        run_build(recipes[batches[0]], work / "out-warm", "threads")  # warm caches
        for r in range(args.rounds):
            order = configs if r % 2 == 0 else configs[::-1]
            for label, executor, recipe, extra in order:
                wall = run_build(recipe, work / "out-ray-bench", executor, *extra)
                rates.setdefault(label, []).append(len(names) / wall)
                print(f"round {r + 1}: {label:40s} {wall:6.1f} s  "
                      f"{len(names) / wall:7.1f} candidates/s")
        micros, cpu_micros, count = driver_cost(recipes[batches[0]], work / "out-driver")
    finally:
        head.send_signal(signal.SIGTERM)
        head.wait()
        server.terminate()
        server.wait()
    print()
    print(f"{'candidates/s on this machine':40s} {'median':>8s}  (min .. max)")
    for label, values in rates.items():
        print(f"{label:40s} {fmt(values)}")
    print(f"driver alone: {micros:.0f} us per candidate ({cpu_micros:.0f} us CPU) over "
          f"{count} candidates (ceiling {1e6 / micros:.0f} candidates/s for one driver)")


def _evidence_build(plan: type) -> dict[str, int]:
    """Where the tree has it (#21), the evidence records are made with the stages."""
    return {"evidence_build": 1} if "evidence_build" in plan.__dataclass_fields__ else {}


if __name__ == "__main__":
    main()
