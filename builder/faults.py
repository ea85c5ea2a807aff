"""Deterministic crash injection for the crash-safety tests: a real SIGKILL at a named point.

`CLEANSET_CRASH_AT="point:n"` kills this process (kill -9, no cleanup, no flush) the n-th time
execution reaches `point`. `CLEANSET_STOP_AT="point"` stops it there instead (SIGSTOP, until
the test sends SIGCONT), for the tests of two commands started at the same time: what the
other does while this one stands between two steps. Unset in normal use; a look at the
environment at each point is the only cost.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_counts: Counter[str] = Counter()


def crash_point(point: str) -> None:
    # Read where asked, not at import: the tests' preloaded CLI (tests/preloaded_cli.py)
    # imports this module once and forks each command with its own environment.
    spec = os.environ.get("CLEANSET_CRASH_AT")
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name != point:
        return
    _counts[point] += 1
    if _counts[point] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def stop_point(point: str) -> None:
    if point == os.environ.get("CLEANSET_STOP_AT"):
        os.kill(os.getpid(), signal.SIGSTOP)
