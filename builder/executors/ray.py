"""Run the stages on a Ray cluster; the driver (this process) only schedules and collects.

Candidates go out in batches (one Ray task each) so the per-task overhead, about a
millisecond, is paid once per batch rather than once per image. Each Ray worker process
builds the stages from the plan once and keeps them (HTTP pools, robots.txt caches) for every
later batch of the same build; inside a batch a thread pool keeps downloads overlapping.

Nothing a worker does is final: it returns outcomes, and the driver decides them in source
order and writes shards and ledger, exactly as with the local executors. So a worker killed
mid-batch costs only a re-run of that batch (Ray retries the task; the stages are idempotent:
a re-fetch is harmless), and the dataset is the same whoever ran which batch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray

from builder import interrupts
from builder.errors import UserError
from builder.executors.batches import Batcher
from builder.records import Candidate, Checked, Detached
from builder.shards import shard_name, write_whole_shard
from builder.sources._keys import register_all, registered
from builder.stages import StagePlan, Workbench

# A batch whose worker dies is re-run this many times before the build stops (and can be
# resumed). Worker deaths, not stage errors: the stages turn those into Rejections.
TASK_RETRIES = 5
# Environment the stages read; a remote worker does not inherit the driver's environment.
FORWARDED_ENV = ("SOURCE_DATE_EPOCH",)

class RayBatchLostError(UserError):
    """Ray could not run a batch even after retries (cluster gone, workers dying over and
    over). Nothing decided is lost: the ledger holds every committed decision."""

    exit_code = 1


# -- the worker side ------------------------------------------------------------------------

_CACHED: dict[str, tuple[Workbench, ThreadPoolExecutor]] = {}
_CACHE_LOCK = threading.Lock()


def _bench_for(token: str, plan_box: list[Any], threads: int
               ) -> tuple[Workbench, ThreadPoolExecutor]:
    """This worker process's stages for build `token`, built on its first batch."""
    with _CACHE_LOCK:
        if token not in _CACHED:
            for bench, pool in _CACHED.values():  # a long-lived worker serving a new build
                pool.shutdown(wait=False)
                bench.close()
            _CACHED.clear()
            # The plan travels as an object-store reference in a list, so Ray does not
            # fetch and unpickle it for every batch, only here, once per process.
            plan: StagePlan = ray.get(plan_box[0])
            _CACHED[token] = (plan.build(), ThreadPoolExecutor(threads,
                                                               thread_name_prefix="stage"))
        return _CACHED[token]


@ray.remote
def _run_batch(token: str, plan_box: list[Any], threads: int,
               candidates: list[Candidate], secrets: tuple[str, ...] = ()) -> list[Any]:
    register_all(secrets)  # the driver's API keys, scrubbed here too (logs, evidence)
    bench, pool = _bench_for(token, plan_box, threads)
    return list(pool.map(bench.run, candidates))


@ray.remote(num_returns=2)
def _run_batch_detached(token: str, plan_box: list[Any], threads: int,
                        candidates: list[Candidate], secrets: tuple[str, ...] = ()
                        ) -> tuple[list[Any], list[bytes]]:
    """The stages of a batch; the accepted bytes come back as a second object, which the
    driver never fetches: a shard writer task reads them where they are."""
    register_all(secrets)
    bench, pool = _bench_for(token, plan_box, threads)
    outcomes = list(pool.map(bench.run, candidates))
    data: list[bytes] = []
    for i, outcome in enumerate(outcomes):
        if isinstance(outcome, Checked) and isinstance(outcome.fetched.data, bytes):
            detached = Detached(ref=None, index=len(data), size=len(outcome.fetched.data))
            data.append(outcome.fetched.data)
            outcomes[i] = replace(outcome, fetched=replace(outcome.fetched, data=detached))
    return outcomes, data


@ray.remote
def _write_shard(shards_dir: str, number: int, token: str, samples: list[tuple[Any, ...]],
                 *batches: list[bytes]) -> tuple[str, int, int, str]:
    """Write one whole shard under a temporary name; the driver renames it and records it.

    Each image is checked against the sha256 the driver decided on: a batch whose object was
    lost and recomputed by Ray from a source that changed meanwhile must not slip in."""
    path = Path(shards_dir) / f"{shard_name(number)}.{token}.tmp"

    def members() -> Iterator[tuple[str, dict[str, bytes]]]:
        for key, ext, batch, index, sha256, provenance, caption in samples:
            data = batches[batch][index]
            if hashlib.sha256(data).hexdigest() != sha256:
                raise RuntimeError(f"sample {key}: its bytes changed since they were checked "
                                   "(a lost object recomputed from a changed source)")
            yield key, {ext: data, "json": provenance, "txt": caption}

    data_end, size, sha = write_whole_shard(path, members())
    return path.name, data_end, size, sha


# -- the driver side ------------------------------------------------------------------------

class RayExecutor:
    def __init__(self, plan: StagePlan, *, workers: int, address: str | None = None,
                 batch_size: int = 32, num_cpus: int | None = None) -> None:
        self.address = address
        self.owns_ray = not ray.is_initialized()
        if self.owns_ray:
            _connect(address, num_cpus)
            interrupts.take_back_sigterm()  # `kill PID` stops the build as Ctrl-C does
        self.cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.batch_size = batch_size
        self.threads = workers
        # Two batches per CPU: one running, one queued behind it, so no worker waits for
        # the driver between batches.
        self.max_inflight = max(2 * self.cpus * batch_size, 64)
        self.token = uuid.uuid4().hex
        self.plan_box = [ray.put(plan)]
        self.running: dict[Any, list[Candidate]] = {}  # in flight, to cancel when stopping
        self.lock = threading.Lock()
        self.batches = Batcher(self._send, batch_size, wrap_error=_lost)
        self.detached = False
        self.shard_writes = 0

    def submit(self, candidate: Candidate) -> Future[Any]:
        return self.batches.submit(candidate)

    def detach_bytes(self) -> None:
        """From now on, accepted bytes stay on the workers; `write_shard` writes them."""
        self.detached = True

    def _send(self, batch: list[Candidate]) -> Future[list[Any]]:
        if self.detached:
            return self._send_detached(batch)
        ref = _run_batch.options(max_retries=TASK_RETRIES, retry_exceptions=False).remote(
            self.token, self.plan_box, self.threads, batch, registered())
        with self.lock:
            self.running[ref] = batch
        done = ref.future()
        done.add_done_callback(lambda _: self._finished(ref))
        return done

    def _send_detached(self, batch: list[Candidate]) -> Future[list[Any]]:
        ref, data_ref = _run_batch_detached.options(
            max_retries=TASK_RETRIES, retry_exceptions=False).remote(
            self.token, self.plan_box, self.threads, batch, registered())
        with self.lock:
            self.running[ref] = batch
        outcomes: Future[list[Any]] = Future()

        def resolved(done: Future[list[Any]]) -> None:
            self._finished(ref)
            error = done.exception()
            if error is not None:
                outcomes.set_exception(error)
                return
            outcomes.set_result([_attach(outcome, data_ref) for outcome in done.result()])

        ref.future().add_done_callback(resolved)
        return outcomes

    def write_shard(self, shards_dir: Path, number: int,
                    samples: list[tuple[str, str, Detached, str, bytes, bytes]]
                    ) -> Future[tuple[str, int, int, str]]:
        """Have a worker write shard `number` from (key, ext, bytes, sha256, provenance,
        caption) samples; a future of (temporary file name, data_end, size, sha256)."""
        refs: list[Any] = []
        position: dict[Any, int] = {}
        specs = []
        for key, ext, data, sha256, provenance, caption in samples:
            if data.ref not in position:
                position[data.ref] = len(refs)
                refs.append(data.ref)
            specs.append((key, ext, position[data.ref], data.index, sha256, provenance, caption))
        ref = _write_shard.options(max_retries=TASK_RETRIES, retry_exceptions=False).remote(
            str(shards_dir), number, self.token, specs, *refs)
        self.shard_writes += 1
        return ref.future()

    def _finished(self, ref: Any) -> None:
        with self.lock:
            self.running.pop(ref, None)

    def summary_lines(self) -> list[str]:
        where = self.address or "a local Ray"
        lines = [f"  stages ran on {where} with {self.cpus} CPUs, in {self.batches.batches} "
                 f"batches of up to {self.batch_size} (per-signal opt-out counts are in the "
                 "ledger's reasons)"]
        if self.detached:
            lines.append(f"  {self.shard_writes} shards written by Ray workers")
        return lines

    def close(self, *, wait: bool = True) -> None:
        # Never waits for running work: what is unfinished is cancelled on the cluster.
        self.batches.drop_pending()
        with self.lock:
            unfinished = list(self.running)
        for ref in unfinished:  # only when stopping early: let the cluster drop the work
            ray.cancel(ref, force=False)
        if self.owns_ray:
            ray.shutdown()


def _attach(outcome: Any, data_ref: Any) -> Any:
    if isinstance(outcome, Checked) and isinstance(outcome.fetched.data, Detached):
        data = replace(outcome.fetched.data, ref=data_ref)
        return replace(outcome, fetched=replace(outcome.fetched, data=data))
    return outcome


def _lost(batch: list[Candidate], error: BaseException) -> BaseException:
    return RayBatchLostError(
        f"Ray could not run the batch {batch[0].candidate_id} .. {batch[-1].candidate_id} "
        f"after {TASK_RETRIES} retries: {type(error).__name__}: "
        f"{str(error).splitlines()[0] if str(error) else ''}. Every decision committed so far "
        "is kept: check the cluster (`ray status`) and run the same command again to resume.")


def _connect(address: str | None, num_cpus: int | None) -> None:
    env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    runtime_env = {"env_vars": env} if env else None
    quiet = {"logging_level": logging.WARNING, "log_to_driver": True}
    try:
        if address:
            ray.init(address=address, runtime_env=runtime_env, **quiet)
        else:
            # "local": always a private Ray for this build, never some cluster that happens
            # to be running on this machine.
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                     runtime_env=runtime_env, **quiet)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = f"--ray-address / [executor] ray_address {address!r}" if address else "local"
        raise UserError(
            f"{where}: cannot start or reach Ray: {exc}. Start a cluster with `ray start "
            "--head` and pass its address (or `auto` on a cluster node), or leave the "
            "address unset for a Ray on this machine only. A cluster with token "
            "authentication (Ray's default) also needs RAY_AUTH_MODE=token and its token "
            "(RAY_AUTH_TOKEN, or ~/.ray/auth_token; `ray get-auth-token` on the head)."
        ) from None
