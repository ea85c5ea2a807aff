"""Run the stages on this machine: threads (the default) or worker processes."""

from __future__ import annotations

import os
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from builder.records import Candidate
from builder.stages import StagePlan, Workbench


class ThreadExecutor:
    """Threads keep many downloads in flight; Pillow, hashlib and zlib release the GIL while
    they decode and hash, so the CPU work spreads over the cores too."""

    def __init__(self, plan: StagePlan, *, workers: int) -> None:
        self.bench = plan.build()
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="stage")
        self.max_inflight = max(4 * workers, 64)

    def submit(self, candidate: Candidate) -> Future[Any]:
        return self.pool.submit(self.bench.run, candidate)

    def summary_lines(self) -> list[str]:
        return list(self.bench.optout.summary_lines())

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.bench.close()


_WORKER_BENCH: Workbench | None = None


def _init_worker(plan: StagePlan) -> None:
    global _WORKER_BENCH
    _WORKER_BENCH = plan.build()


def _run_in_worker(candidate: Candidate) -> Any:
    assert _WORKER_BENCH is not None
    return _WORKER_BENCH.run(candidate)


class ProcessExecutor:
    """Worker processes, each with its own stages (and its own HTTP pool and host caches).

    Opt-out counts stay in the workers; the summary says so rather than showing zeros.
    """

    def __init__(self, plan: StagePlan, *, workers: int, processes: int | None = None) -> None:
        self.processes = processes or os.cpu_count() or 2
        self.pool = ProcessPoolExecutor(self.processes, initializer=_init_worker,
                                        initargs=(plan,))
        self.max_inflight = max(4 * workers, 64)

    def submit(self, candidate: Candidate) -> Future[Any]:
        return self.pool.submit(_run_in_worker, candidate)

    def summary_lines(self) -> list[str]:
        return [f"  stages ran in {self.processes} worker processes "
                "(per-signal opt-out counts are in the ledger's reasons)"]

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
