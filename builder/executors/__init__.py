"""Executors only schedule the per-candidate stages; they never decide anything.

An executor takes candidates in source order and hands back, for each, a future of its
outcome (the Checked record or a Rejection). The pipeline takes those outcomes back in the
same order, so what an executor runs where, and when, cannot change the dataset.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Protocol

from builder.errors import UserError
from builder.records import Candidate
from builder.stages import StagePlan


class Executor(Protocol):
    # how many candidates may be in flight at once (bounds memory: each holds its bytes)
    max_inflight: int

    def submit(self, candidate: Candidate) -> Future[Any]: ...

    def summary_lines(self) -> list[str]: ...

    def close(self, *, wait: bool = True) -> None:
        """Release the executor. wait=False: the build is stopping (Ctrl-C, an error) and
        throws away the outcomes of what is still running, so do not wait for it."""
        ...


KINDS = ("auto", "threads", "processes", "ray")


def make_executor(kind: str, plan: StagePlan, *, workers: int, **options: Any) -> Executor:
    if kind == "auto":
        from builder.executors.local import AutoExecutor

        return AutoExecutor(plan, workers=workers, **options)
    if kind == "threads":
        from builder.executors.local import ThreadExecutor

        return ThreadExecutor(plan, workers=workers)
    if kind == "processes":
        from builder.executors.local import ProcessExecutor

        return ProcessExecutor(plan, workers=workers, **options)
    if kind == "ray":
        try:
            from builder.executors.ray import RayExecutor
        except ImportError as exc:
            raise UserError(
                f"executor 'ray' needs Ray: pip install 'cleanset[ray]' ({exc})"
            ) from None
        return RayExecutor(plan, workers=workers, **options)
    raise UserError(f"executor {kind!r} is not one of {', '.join(KINDS)}")
