"""Run the stages on this machine: all in threads, or downloads in threads and pixels in
worker processes."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from builder.records import Candidate, Checked, Fetched
from builder.stages import StagePlan, Workbench, run_stages


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


_WORKER_BENCH: Workbench | None = None


def _init_worker(plan: StagePlan) -> None:
    global _WORKER_BENCH
    _WORKER_BENCH = plan.build()


def _run_cpu_stages(fetched: Fetched) -> Any:
    """In a worker process: decode, hash, embedded signals. The image bytes are not sent
    back (the parent still has them): only what the stages learned travels."""
    assert _WORKER_BENCH is not None
    outcome = run_stages(fetched, _WORKER_BENCH.cpu_stages)
    if isinstance(outcome, Checked):
        outcome = replace(outcome, fetched=replace(outcome.fetched, data=b""))
    return outcome


class ProcessExecutor:
    """Downloads in threads here; decoding and hashing in `processes` worker processes.

    Threads alone serialise on the GIL as soon as pixels are involved (PDQ and pHash hold
    it, and the writer thread then waits to get it back after every write); measured on 2
    cores, this split uses both cores where threads used little more than one.
    """

    def __init__(self, plan: StagePlan, *, workers: int, processes: int | None = None) -> None:
        self.bench = plan.build()
        self.processes = processes or os.cpu_count() or 2
        self.threads = ThreadPoolExecutor(workers, thread_name_prefix="stage")
        # forkserver: never fork a process that already runs threads
        context = multiprocessing.get_context("forkserver")
        self.pool = ProcessPoolExecutor(self.processes, mp_context=context,
                                        initializer=_init_worker, initargs=(plan,))
        self.max_inflight = max(4 * workers, 64)

    def submit(self, candidate: Candidate) -> Future[Any]:
        outer: Future[Any] = Future()
        io = self.threads.submit(run_stages, candidate, self.bench.io_stages)
        io.add_done_callback(lambda done: self._to_cpu(done, outer))
        return outer

    def _to_cpu(self, io: Future[Any], outer: Future[Any]) -> None:
        try:
            fetched = io.result()
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on `outer`
            outer.set_exception(exc)
            return
        if not isinstance(fetched, Fetched):
            outer.set_result(fetched)  # a Rejection before download, or of the download
            return
        try:
            cpu = self.pool.submit(_run_cpu_stages, fetched)
        except RuntimeError as exc:  # the pool is shutting down
            outer.set_exception(exc)
            return

        def finish(done: Future[Any]) -> None:
            try:
                outcome = done.result()
            except BaseException as exc:  # noqa: BLE001
                outer.set_exception(exc)
                return
            if isinstance(outcome, Checked):
                outcome = replace(outcome, fetched=replace(outcome.fetched, data=fetched.data))
            outer.set_result(outcome)

        cpu.add_done_callback(finish)

    def summary_lines(self) -> list[str]:
        lines = list(self.bench.optout.summary_lines())
        lines.append(f"  decode and hashing ran in {self.processes} worker processes "
                     "(embedded-signal counts are in the rejection reasons)")
        return lines

    def close(self) -> None:
        self.threads.shutdown(wait=True, cancel_futures=True)
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.bench.close()
