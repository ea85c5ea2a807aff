"""Run the stages on this machine: all in threads of this process, or in worker processes
(each with its own threads) that send back what they learned and the bytes."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from builder.executors.batches import Batcher
from builder.records import Candidate
from builder.stages import StagePlan, Workbench


class ThreadExecutor:
    """Every stage in threads of this process: simplest, and enough when the network, not
    the CPU, is the limit (Pillow and hashlib release the GIL while they work)."""

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


_WORKER: tuple[Workbench, ThreadPoolExecutor] | None = None


def _init_worker(plan: StagePlan, threads: int) -> None:
    global _WORKER
    _WORKER = (plan.build(), ThreadPoolExecutor(threads, thread_name_prefix="stage"))


def _run_batch(candidates: list[Candidate]) -> list[Any]:
    """In a worker process: every stage of a batch of candidates, downloads overlapping."""
    assert _WORKER is not None
    bench, pool = _WORKER
    return list(pool.map(bench.run, candidates))


class ProcessExecutor:
    """Worker processes, each running every stage with its own threads and HTTP pool.

    Threads alone serialise on the GIL once pixels are involved (PDQ and pHash hold it, and
    the writer then waits to get it back after every write); here this process only reads
    sources, decides in order and writes, while each worker downloads, decodes and hashes.
    Batches amortise the pickling: the image bytes come back once, with their outcome.
    """

    def __init__(self, plan: StagePlan, *, workers: int, processes: int | None = None,
                 batch_size: int = 32) -> None:
        self.processes = processes or os.cpu_count() or 2
        threads = max(2, workers // self.processes)
        # forkserver: never fork a process that already runs threads
        context = multiprocessing.get_context("forkserver")
        self.pool = ProcessPoolExecutor(self.processes, mp_context=context,
                                        initializer=_init_worker, initargs=(plan, threads))
        self.batches = Batcher(lambda batch: self.pool.submit(_run_batch, batch), batch_size)
        self.max_inflight = max(4 * workers, 3 * self.processes * batch_size)

    def submit(self, candidate: Candidate) -> Future[Any]:
        return self.batches.submit(candidate)

    def summary_lines(self) -> list[str]:
        return [f"  stages ran in {self.processes} worker processes "
                "(per-signal opt-out counts are in the ledger's reasons)"]

    def close(self) -> None:
        self.batches.drop_pending()
        self.pool.shutdown(wait=True, cancel_futures=True)
