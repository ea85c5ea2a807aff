"""Worker processes and their batches when a build stops: Ctrl-C is the build process's to
handle, and batches the stopping pool never ran resolve quietly."""

from __future__ import annotations

import logging
import multiprocessing
import signal
from concurrent.futures import Future, ProcessPoolExecutor

import pytest

from builder.executors.batches import Batcher
from builder.executors.local import _init_worker
from builder.licensing import load_policy
from builder.records import Candidate
from builder.stages import StagePlan
from tests.conftest import one_url_recipe, write_jsonl, write_recipe


def test_worker_processes_leave_ctrl_c_to_the_build_process(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A terminal's Ctrl-C reaches every process of the group; an idle worker used to die on
    # it printing a traceback while the build process was stopping the pool itself.

    recipe = one_url_recipe(tmp_path)
    plan = StagePlan(recipe=recipe, policy=load_policy("commercial"), out=tmp_path)
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(1, mp_context=context, initializer=_init_worker,
                             initargs=(plan, 1)) as pool:
        assert pool.submit(signal.getsignal, signal.SIGINT).result() == signal.SIG_IGN


def test_a_batch_the_stopping_pool_cancelled_cancels_its_candidates_without_an_error(
        caplog: pytest.LogCaptureFixture) -> None:
    sent: list[Future[list[object]]] = []

    def send(batch: list[Candidate]) -> Future[list[object]]:
        sent.append(Future())
        return sent[-1]

    batcher = Batcher(send, batch_size=2)
    futures = [batcher.submit(Candidate(source="s", source_id=str(i), url=f"https://e.org/{i}"))
               for i in range(2)]
    with caplog.at_level(logging.ERROR):
        assert sent[0].cancel()  # what shutdown(cancel_futures=True) does to a queued batch

    assert all(f.cancelled() for f in futures)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_the_fork_server_ignores_ctrl_c_while_it_still_imports_the_stages(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """multiprocessing's fork server ignores SIGINT only once it has imported the modules
    it preloads (~0.4 s), and a Ctrl-C in a build's first second printed its traceback. The
    server is started ignoring it: a SIGINT sent to it the moment it exists (still
    importing) leaves it running, silent, forking workers; the build process keeps its own
    Ctrl-C handler."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    write_jsonl(tmp_path / "urls.jsonl", [{"url": "https://example.org/a.jpg",
                                           "license": "CC0-1.0"}])
    write_recipe(tmp_path / "recipe.toml", """
[dataset]
name = "signals"
[[sources]]
kind = "table"
path = "urls.jsonl"
""")
    # In a process of its own: the fork server is one per process, started by whoever asks
    # first (an earlier test here, another way).
    build_process = f"""
import multiprocessing.forkserver, os, signal
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, however started
from pathlib import Path
from builder.executors.local import ProcessExecutor
from builder.licensing import load_policy
from builder.recipe import load_recipe
from builder.stages import StagePlan
out = Path({str(tmp_path)!r})
plan = StagePlan(recipe=load_recipe(out / "recipe.toml"), policy=load_policy("commercial"),
                 out=out)
executor = ProcessExecutor(plan, workers=2, processes=1)
os.kill(multiprocessing.forkserver._forkserver._forkserver_pid, signal.SIGINT)
try:
    print(executor.pool.submit(os.getppid).result()
          == multiprocessing.forkserver._forkserver._forkserver_pid)
finally:
    executor.close()
print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ran = subprocess.run([sys.executable, "-c", build_process], capture_output=True,
                         text=True, cwd=tmp_path, env=env)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["True", "True"]  # a worker forked by that same server
    assert "Traceback" not in ran.stderr and "KeyboardInterrupt" not in ran.stderr


def test_ctrl_c_inside_a_held_block_arrives_as_it_ends() -> None:
    """Worker processes are forked inside such a block: a Ctrl-C half-way through a fork
    left a half-started worker that printed a traceback."""
    from builder.executors.local import _ctrl_c_held

    runner_s = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        reached_the_end = False
        with pytest.raises(KeyboardInterrupt), _ctrl_c_held():
            signal.raise_signal(signal.SIGINT)  # a real SIGINT, as a terminal sends it
            reached_the_end = True
        assert reached_the_end
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, runner_s)
