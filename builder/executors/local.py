"""Run the stages on this machine: all in threads of this process, in worker processes (each
with its own threads) that send back what they learned and the bytes, or, by default, the
first in threads and the rest in worker processes once the build proves large."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import select
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from typing import Any

from builder.errors import BuildStoppedError
from builder.executors.batches import Batcher
from builder.executors.spool import SpooledBatch, receive, spool_images
from builder.faults import crash_point
from builder.records import Candidate
from builder.sources._keys import register_all, registered
from builder.stages import StagePlan, Workbench

log = logging.getLogger(__name__)


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

    def close(self, *, wait: bool = True) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=True)
        if wait:  # otherwise the threads still fetching keep the bench until they give up
            self.bench.close()


def usable_cores() -> int:
    """The cores this process may run on (a container or `taskset` limits them; the
    machine's count would start worker processes that only take turns)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# multiprocessing's forkserver listens on a Unix socket at TMPDIR/pymp-XXXXXXXX/listener-
# XXXXXXXX, and a socket path holds at most 107 bytes.
_SOCKET_PATH_MAX = 107
_SOCKET_PATH_SUFFIX = len("/pymp-XXXXXXXX/listener-XXXXXXXX")


def processes_blocked() -> str | None:
    """Why worker processes cannot start on this machine, or None."""
    temp = tempfile.gettempdir()
    if len(os.fsencode(temp)) + _SOCKET_PATH_SUFFIX > _SOCKET_PATH_MAX:
        return (f"the temporary directory {temp} is too long a path for the Unix socket "
                f"worker processes are started through (at most "
                f"{_SOCKET_PATH_MAX - _SOCKET_PATH_SUFFIX} bytes): set TMPDIR to a shorter "
                "one, e.g. TMPDIR=/tmp")
    return None


_WORKER: tuple[Workbench, ThreadPoolExecutor] | None = None
# What the stages import, loaded once by the forkserver that worker processes fork from;
# the rest is what a worker imported on its first batch (python -X importtime): the
# executor itself, the evidence records, the table source the plan names, IDNA for host
# names, C2PA (an optional extra: the forkserver skips what is not installed).
STAGE_MODULES = ("builder.stages", "builder.fetch", "builder.media", "builder.optout",
                 "builder.licensing", "builder.executors.local", "builder.evidence.warc",
                 "builder.sources.table", "encodings.idna", "numpy.ma", "c2pa")


def _init_worker(plan: StagePlan, threads: int, build_pid: int | None = None,
                 spool_dir: str | None = None) -> None:
    global _WORKER
    # Ctrl-C reaches the whole process group: the build process stops the build (it stops
    # the workers and exits 130); a worker would only print a traceback. (Forked from a
    # server started ignoring it, a worker ignores it already: see _start_fork_server.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # so is a closed terminal's SIGHUP
    if build_pid is not None:
        threading.Thread(target=_end_with_build, args=(build_pid, spool_dir),
                         name="build-watch", daemon=True).start()
    _WORKER = (plan.build(), ThreadPoolExecutor(threads, thread_name_prefix="stage"))


def _end_with_build(build_pid: int, spool_dir: str | None) -> None:
    """In a worker process: exit as soon as the build process is gone, its spool with it.

    A build process killed outright (the kernel's OOM killer, `kill -9`) cannot stop its
    workers, and they never notice on their own: each holds both ends of the pool's pipes,
    so a worker stays blocked sending its last batch's outcome to nobody, keeping its memory
    (~130 MB), the fork server, multiprocessing's resource tracker and the spool of images
    alive for good. Their work was never committed; the same command redoes it."""
    _wait_for_exit(build_pid)
    if spool_dir is not None:
        shutil.rmtree(spool_dir, ignore_errors=True)
    os._exit(1)


def _wait_for_exit(pid: int) -> None:
    """Return once process `pid` has ended: woken by the kernel where it has pidfds
    (Linux 5.3+), else by looking once a second."""
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):  # no pidfd_open here (macOS, an older kernel)
        while _exists(pid):
            time.sleep(1.0)
        return
    select.select([handle], [], [])


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # PermissionError: another user's now
        return False
    return True


def _run_batch(candidates: list[Candidate], secrets: tuple[str, ...], spool_dir: str | None
               ) -> list[Any] | SpooledBatch:
    """In a worker process: every stage of a batch of candidates, downloads overlapping.
    `secrets`: the API keys the build process knows, scrubbed here too (logs, evidence).
    The images go back through a file in `spool_dir` (builder/executors/spool.py)."""
    assert _WORKER is not None
    crash_point("worker_batch")  # the OOM killer ending a worker, for the tests
    register_all(secrets)
    bench, pool = _WORKER
    return spool_images(list(pool.map(bench.run, candidates)), spool_dir)


class ProcessExecutor:
    """Worker processes, each running every stage with its own threads and HTTP pool.

    Threads alone serialise on the GIL once pixels are involved (PDQ and pHash hold it, and
    the writer then waits to get it back after every write); here this process only reads
    sources, decides in order and writes, while each worker downloads, decodes and hashes.
    Batches amortise the pickling: the image bytes come back once, with their outcome.
    """

    def __init__(self, plan: StagePlan, *, workers: int, processes: int | None = None,
                 batch_size: int = 32) -> None:
        self.processes = processes or usable_cores()
        threads = max(2, workers // self.processes)
        plan = split_host_limits(plan, self.processes)
        # forkserver: never fork a process that already runs threads. The server imports
        # what every worker needs once, and each worker forks from it with those modules
        # loaded (0.34 s of CPU per worker otherwise).
        context = _start_fork_server()
        self.spool = tempfile.mkdtemp(prefix="cleanset-spool-")
        self.pool = ProcessPoolExecutor(
            self.processes, mp_context=context, initializer=_init_worker,
            initargs=(plan, threads, os.getpid(), self.spool))
        self.batches = Batcher(self._send, batch_size, wrap_error=_worker_died,
                               receive=receive)
        self.max_inflight = self.inflight_for(workers, self.processes, batch_size)

    @staticmethod
    def inflight_for(workers: int, processes: int, batch_size: int = 32) -> int:
        """Enough candidates in flight to keep every process's batches coming."""
        return max(4 * workers, 3 * processes * batch_size)

    def submit(self, candidate: Candidate) -> Future[Any]:
        return self.batches.submit(candidate)

    def summary_lines(self) -> list[str]:
        return [f"  stages ran in {self.processes} worker processes "
                "(per-signal opt-out counts are in the ledger's reasons)"]

    def _send(self, batch: list[Candidate]) -> Future[Any]:
        # A submit may fork a worker (the pool starts them as batches come); Ctrl-C in the
        # middle of that left a worker half-started, which then printed a traceback when it
        # found the stopped pool's semaphores gone. Held back, it arrives right after.
        with _ctrl_c_held():
            try:
                return self.pool.submit(_run_batch, batch, registered(), self.spool)
            except BrokenProcessPool as exc:
                raise _worker_died(batch, exc) from None

    def close(self, *, wait: bool = True) -> None:
        self.batches.drop_pending()
        try:
            if not wait:
                self._stop_workers()
            self.pool.shutdown(wait=True, cancel_futures=True)
        finally:
            # What no outcome came back for (a worker that died mid-batch); the images
            # received are unlinked already and live on in their mappings.
            shutil.rmtree(self.spool, ignore_errors=True)

    def _stop_workers(self) -> None:
        """Terminate the worker processes now. A stopping build throws away what they run,
        and a batch stuck on a slow host held Ctrl-C up to its fetches' timeouts (18 s on a
        host that accepts and never answers, up to a batch's candidates in turn); the same
        command redoes that work. Python 3.14's terminate_workers() does this; before it,
        the pool's own table of processes is the only way to reach them."""
        terminate = getattr(self.pool, "terminate_workers", None)
        if terminate is not None:
            terminate()
            return
        for process in list((getattr(self.pool, "_processes", None) or {}).values()):
            process.terminate()


class WorkerDiedError(BuildStoppedError):
    """A worker process ended in the middle of its batch (the kernel's OOM killer, kill -9):
    the pool is unusable, and the build stops where it had committed."""


def _worker_died(batch: list[Candidate], error: BaseException) -> BaseException:
    """A dead worker breaks the whole pool: every batch in flight fails with
    multiprocessing's BrokenProcessPool, which reached the user as a traceback."""
    if not isinstance(error, BrokenProcessPool):
        return error
    return WorkerDiedError(
        "a worker process of this build ended abruptly (killed by the kernel's out-of-memory "
        "killer, or by kill -9?), so the build stopped. Every decision committed so far is "
        "kept: run the same command again to resume it; if memory is short, with fewer "
        "worker processes ([executor] processes) or --executor threads.")


def warm_up(kind: str, *, processes: int | None, per_host_connections: int,
            expected: int) -> None:
    """Start the server worker processes fork from now, while this process still starts up,
    if the build will need worker processes: `kind` "processes", or the default executor
    with `expected` (a cheap estimate of the candidates) past its switch. The server spends
    ~0.5 s of CPU importing the stages; started at the switch, the first batch waited for
    it while the other core idled through this process's own start-up. (A build that ends
    up not needing it leaves it idle; it exits with this process.)"""
    if kind == "auto":
        cores = processes or usable_cores()
        wanted = (expected > AutoExecutor.SWITCH_AFTER
                  and AutoExecutor.may_switch(cores, per_host_connections))
    else:
        wanted = kind == "processes"
    if wanted and processes_blocked() is None:
        _start_fork_server()


def _handles_ctrl_c() -> bool:
    """Whether this thread may change what SIGINT does: the main thread, with a handler
    Python installed (signal.signal can put back only such a one)."""
    return (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is not None)


def _start_fork_server() -> multiprocessing.context.BaseContext:
    """Start the server worker processes fork from, preloading the stages and ignoring
    Ctrl-C for its whole life (unless it runs already); its multiprocessing context.

    A terminal's Ctrl-C reaches the whole process group; multiprocessing's server ignores it
    only once it has imported what it preloads (~0.4 s), and a Ctrl-C before printed its
    traceback. A process started while SIGINT is ignored keeps ignoring it (exec keeps an
    ignored signal, and Python then leaves it so), and so does every worker forked from it.
    The build process ignores Ctrl-C only for the few milliseconds of that start."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(STAGE_MODULES))
    if not _handles_ctrl_c():
        return context  # the server starts with the first worker, as multiprocessing does it
    # SIGHUP too (a closed terminal signals the whole group): the build process stops the
    # build; the server and multiprocessing's resource tracker, started with it, died of it
    # ("resource_tracker: process died unexpectedly").
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    previous_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGHUP, previous_hup)
    return context


@contextlib.contextmanager
def _ctrl_c_held() -> Iterator[None]:
    """A Ctrl-C arriving inside the block delivered as it ends."""
    if not _handles_ctrl_c():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            signal.raise_signal(signal.SIGINT)


def split_host_limits(plan: StagePlan, parts: int) -> StagePlan:
    """The plan with [fetch] per_host_connections and per_host_rps shared out over `parts`
    processes, each of which enforces its own: together they keep to what the recipe says
    one host may get (at least one connection each; AutoExecutor stays in threads when
    there are fewer connections than processes)."""
    fetch = plan.recipe.fetch
    if parts <= 1:
        return plan
    shared = replace(
        fetch, per_host_connections=max(1, fetch.per_host_connections // parts),
        per_host_rps=None if fetch.per_host_rps is None else fetch.per_host_rps / parts)
    return replace(plan, recipe=replace(plan.recipe, fetch=shared))


class AutoExecutor:
    """The default: threads for a small build, worker processes for a large one.

    A build starts in threads of this process, which costs nothing to start (a test, the
    bundled example, a re-run that only retries a few). Once SWITCH_AFTER candidates have
    been submitted on a machine with more than one core, the rest go to one worker process
    per core (ProcessExecutor), which runs ~1.3x faster on two cores and scales with them;
    the per-host politeness limits are shared out among them (split_host_limits).
    Which executor ran a candidate never changes what is decided (builder/executors).
    """

    SWITCH_AFTER = 128

    def __init__(self, plan: StagePlan, *, workers: int, processes: int | None = None) -> None:
        self.plan = plan
        self.workers = workers
        self.processes = processes
        self.threads = ThreadExecutor(plan, workers=workers)
        self.pool: ProcessExecutor | None = None
        self.submitted = 0
        cores = processes or usable_cores()
        self.switches = self.may_switch(cores, plan.recipe.fetch.per_host_connections)
        self.blocked = processes_blocked() if self.switches else None
        if self.blocked is not None:
            self.switches = False
        self.max_inflight = self.threads.max_inflight
        if self.switches:  # the bound the worker processes will need (read once, up front)
            self.max_inflight = max(self.max_inflight,
                                    ProcessExecutor.inflight_for(workers, cores))

    @staticmethod
    def may_switch(cores: int, per_host_connections: int) -> bool:
        """Whether worker processes would take over here: more than one core, and as many
        connections to a host as processes to share them out among."""
        return 1 < cores <= per_host_connections

    def submit(self, candidate: Candidate) -> Future[Any]:
        self.submitted += 1
        if self.blocked and self.submitted == self.SWITCH_AFTER + 1:
            log.warning("the stages stay in threads: %s", self.blocked)
        if self.pool is None and self.switches and self.submitted > self.SWITCH_AFTER:
            self.pool = ProcessExecutor(self.plan, workers=self.workers,
                                        processes=self.processes)
        return (self.pool or self.threads).submit(candidate)

    def summary_lines(self) -> list[str]:
        if self.pool is None:
            stayed = ([f"  stages ran in threads, not worker processes: {self.blocked}"]
                      if self.blocked and self.submitted > self.SWITCH_AFTER else [])
            return stayed + self.threads.summary_lines()
        return [f"  the first {self.SWITCH_AFTER} candidates' stages ran in threads, the rest "
                f"in {self.pool.processes} worker processes (per-signal opt-out counts are "
                "in the ledger's reasons)"]

    def close(self, *, wait: bool = True) -> None:
        try:
            if self.pool is not None:
                self.pool.close(wait=wait)
        finally:
            self.threads.close(wait=wait)
