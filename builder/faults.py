"""Deterministic crash injection for the crash-safety tests: a real SIGKILL at a named point.

`CLEANSET_CRASH_AT="point:n"` kills this process (kill -9, no cleanup, no flush) the n-th time
execution reaches `point`. `CLEANSET_STOP_AT="point"` stops it there instead (SIGSTOP, until
the test sends SIGCONT), for the tests of two commands started at the same time: what the
other does while this one stands between two steps. Unset in normal use; reading two
environment variables once per process is the only cost.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_counts: Counter[str] = Counter()
_asked: tuple[str, str] | None = None  # CLEANSET_CRASH_AT, CLEANSET_STOP_AT


def _settings() -> tuple[str, str]:
    # Read at the first point reached, not at import, and again in a forked child: the tests'
    # preloaded CLI (tests/preloaded_cli.py) imports this module once and forks each command
    # with its own environment. Once per process, not at every point (one is per candidate).
    global _asked
    if _asked is None:
        _asked = (os.environ.get("CLEANSET_CRASH_AT", ""), os.environ.get("CLEANSET_STOP_AT", ""))
    return _asked


def _forget() -> None:
    global _asked
    _asked = None
    _counts.clear()


os.register_at_fork(after_in_child=_forget)


def crash_point(point: str) -> None:
    spec = _settings()[0]
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name != point:
        return
    _counts[point] += 1
    if _counts[point] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def stop_point(point: str) -> None:
    stop = _settings()[1]
    if stop and point == stop:
        os.kill(os.getpid(), signal.SIGSTOP)
