"""Ctrl-C, SIGTERM and SIGHUP that a finalizer cannot swallow.

Python raises KeyboardInterrupt wherever the main thread is when the signal is handled. When
that is a finalizer (a `__del__`, a weakref callback; a Ray driver runs them all the time as
object references go), the interpreter prints "Exception ignored in ..." and carries on: a
build once ran on to exit 0 after a Ctrl-C. So the handlers also remember the signal, and
the long loops (a build's decisions, a recheck's chunks) call `check()` at each step, which
raises it again if it was lost.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any, NoReturn


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill PID`, a scheduler stopping a job): the command stops as Ctrl-C stops
    it, through the same clean-up (workers, spool, temporary files), instead of dying where
    it stood with multiprocessing's leftovers and no word."""


class HungUp(Terminated):
    """SIGHUP (the terminal closed, an ssh session dropped): stopped as SIGTERM stops it.
    Left to its default, a build ended there, exit 129, with no clean-up and no word."""


_received: type[KeyboardInterrupt] | None = None
_took_sigterm = False  # install() set the SIGTERM handler (nobody else had)
_unraisable = sys.unraisablehook


def install() -> None:
    """Take SIGINT and SIGTERM where nobody else has (a host program, a test runner's own
    handler); forget any signal an earlier command in this process received."""
    global _received, _took_sigterm
    _received = None
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
    _took_sigterm = signal.getsignal(signal.SIGTERM) is _on_sigterm
    # Not where it is ignored: `nohup cleanset build ...` must run on when the terminal goes.
    if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) == signal.SIG_DFL:
        signal.signal(signal.SIGHUP, _on_sighup)
    if sys.unraisablehook is not _quiet_about_ours:
        global _unraisable
        _unraisable = sys.unraisablehook
        sys.unraisablehook = _quiet_about_ours


def take_back_sigterm() -> None:
    """Put cleanset's SIGTERM handler back where a library replaced it since `install`:
    ray.init sets its own (`sys.exit(15)`) and a native one that prints a stack dump first,
    so `kill PID` ended a Ray build with that dump, exit 15 and none of the clean-up."""
    if _took_sigterm and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def check() -> None:
    """Raise the Ctrl-C or SIGTERM received earlier, if a finalizer swallowed it."""
    if _received is not None:
        raise _received()


def _quiet_about_ours(unraisable: Any) -> None:
    """The signal a finalizer swallowed is raised again by `check()`: no "Exception ignored"
    traceback above the one-line "interrupted" the command ends with."""
    if _received is not None and isinstance(unraisable.exc_value, _received):
        return
    _unraisable(unraisable)


def _on_sigint(signum: int, frame: object) -> NoReturn:
    global _received
    _received = KeyboardInterrupt
    raise KeyboardInterrupt


def _on_sigterm(signum: int, frame: object) -> NoReturn:
    global _received
    _received = Terminated
    raise Terminated


def _on_sighup(signum: int, frame: object) -> NoReturn:
    global _received
    _received = HungUp
    raise HungUp
