"""Candidates sent to workers in batches, each candidate with its own future.

Shared by the executors that ship work elsewhere (worker processes, Ray): a batch pays the
shipping overhead once, and waiting on any candidate sends its batch if it is still
filling, because the pipeline waits on the oldest candidate and must never wait on a batch
that only more submissions would send.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any

from builder.records import Candidate

# given a batch, start running it and return a future of its outcomes, in order
Send = Callable[[list[Candidate]], "Future[list[Any]]"]
# given a failed batch and the error, the error its candidates should raise
WrapError = Callable[[list[Candidate], BaseException], BaseException]
# given what a batch sent back, its outcomes in order
Receive = Callable[[Any], list[Any]]


class _BatchedFuture(Future):  # type: ignore[type-arg]
    def __init__(self, batcher: Batcher) -> None:
        super().__init__()
        self._batcher = batcher

    def result(self, timeout: float | None = None) -> Any:
        if not self.done():
            self._batcher.flush()
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if not self.done():
            self._batcher.flush()
        return super().exception(timeout)


class Batcher:
    def __init__(self, send: Send, batch_size: int, wrap_error: WrapError | None = None,
                 receive: Receive | None = None) -> None:
        self.send = send
        self.batch_size = batch_size
        self.wrap_error = wrap_error
        self.receive = receive
        # Re-entrant: a batch already done resolves inside add_done_callback.
        self.lock = threading.RLock()
        self.pending: list[tuple[Candidate, _BatchedFuture]] = []
        self.batches = 0

    def submit(self, candidate: Candidate) -> Future[Any]:
        future = _BatchedFuture(self)
        with self.lock:
            self.pending.append((candidate, future))
            if len(self.pending) >= self.batch_size:
                self._send_locked()
        return future

    def flush(self) -> None:
        with self.lock:
            if self.pending:
                self._send_locked()

    def drop_pending(self) -> None:
        with self.lock:
            self.pending = []

    def _send_locked(self) -> None:
        batch, self.pending = self.pending, []
        candidates = [cand for cand, _ in batch]
        futures = [future for _, future in batch]
        self.batches += 1
        done = self.send(candidates)
        done.add_done_callback(lambda d: self._resolve(d, candidates, futures))

    def _resolve(self, done: Future[list[Any]], candidates: list[Candidate],
                 futures: list[_BatchedFuture]) -> None:
        if done.cancelled():  # the build is stopping (Ctrl-C): the batch never ran
            for future in futures:
                future.cancel()
            return
        error = done.exception()
        outcomes: list[Any] = [None] * len(futures)
        if error is None:
            try:
                outcomes = done.result() if self.receive is None else self.receive(done.result())
            except Exception as exc:  # noqa: BLE001 - the batch's candidates raise it
                error = exc
        if error is not None and self.wrap_error is not None:
            error = self.wrap_error(candidates, error)
        for future, outcome in zip(futures, outcomes, strict=True):
            try:
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(outcome)
            except InvalidStateError:
                pass  # cancelled while the build was stopping; nobody waits for it
