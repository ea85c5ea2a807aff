"""cleanset: build clean-licensed image datasets (build), check them (verify), find works in
them (lookup), show what the sources answered for them (evidence), remove works (takedown),
ask the sources again for licence changes, deletions and opt-outs since the build
(recheck), compare versions (diff), chart them (report) and explain the licence catalogue
(licenses). `cleanset COMMAND --help` for each."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import errno
import logging
import os
import shutil
import signal
import sqlite3
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from builder import interrupts
from builder.commands import command_modules
from builder.display import EscapingStream
from builder.errors import UserError


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


class _Version(argparse.Action):
    """`--version`: cleanset's version and a digest of its code (builder/identity.py), worked
    out only when asked: every other command would pay for reading the package."""

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from builder.identity import tool_version

        print(f"cleanset {tool_version()}")
        parser.exit()


def make_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(prog="cleanset", description=__doc__)
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="the version and a digest of the installed code, then exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log per-stage details")
    # The same flag after the subcommand (`cleanset build -v ...`); SUPPRESS keeps a
    # subcommand that did not see it from resetting the value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log per-stage details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_ArgumentParser)
    for module in command_modules():
        module.add_parser(_WithCommonFlags(sub, common))
    return parser


class _WithCommonFlags:
    """The subparsers action, handing every command the global flags as parents."""

    def __init__(self, sub: argparse._SubParsersAction, common: argparse.ArgumentParser  # type: ignore[type-arg]
                 ) -> None:
        self._sub = sub
        self._common = common

    def add_parser(self, name: str, **kwargs: object) -> argparse.ArgumentParser:
        parents = [self._common, *kwargs.pop("parents", [])]  # type: ignore[misc]
        return self._sub.add_parser(name, parents=parents, **kwargs)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    interrupts.install()
    try:
        # Declaring the commands imports them (and the build's stages, ~0.25 s): a Ctrl-C
        # in a command's first moments lands here.
        parser = make_parser()
        args, unknown = parser.parse_known_args(argv)
    except KeyboardInterrupt as exc:
        # No command has started: "resume" would have a user wonder what it had begun.
        return _interrupted(exc, said="it had not started, so nothing changed.")
    except ModuleNotFoundError as exc:
        return _incomplete(exc)
    if unknown:
        # e.g. `lookup DIR --site HOST IMAGE`: argparse has taken the positionals already
        hint = getattr(args, "unknown_hint", None)
        parser.error(f"unrecognized arguments: {' '.join(unknown)}"
                     + (f" ({hint})" if hint else ""))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return int(args.func(args))
    except UserError as exc:
        print(f"cleanset: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        return _output_closed(reads_only=getattr(args, "only_reads", False)
                              or getattr(args, "dry_run", False),
                              said=getattr(args, "output_closed_said", None))
    except KeyboardInterrupt as exc:
        reads_only = getattr(args, "dry_run", False) or getattr(args, "only_reads", False)
        # A command that only reads (verify, lookup, diff, a dry run) has nothing to resume:
        # told to, an auditor would wonder what of the copy it had changed.
        return _interrupted(exc, said=getattr(args, "interrupted_said", None) or (
            "it only reads, so nothing changed." if reads_only else None))
    except ModuleNotFoundError as exc:
        return _incomplete(exc)
    except sqlite3.DatabaseError as exc:
        # A ledger damaged on disk (truncated by a bad copy, overwritten) fails on whichever
        # query reads the damaged page first: name the file and the way back, not the query.
        place = _output_place(args, ("dir", "out"))  # report's --out is its page, not DIR
        ledger = place / "ledger.sqlite" if place is not None else "ledger.sqlite"
        print(f"cleanset: fatal: the ledger ({ledger}) cannot be used: {exc}. "
              f"{_ledger_fix(exc, place)}", file=sys.stderr)
        return 1
    except OSError as exc:
        if getattr(args, "only_reads", False) or getattr(args, "dry_run", False):
            # An auditor's command met a file of the copy it may not read, or a directory
            # where a file should be: nothing was written, so there is nothing to resume.
            print(f"cleanset: error: {_unreadable(exc)} Nothing was changed.", file=sys.stderr)
            return 2
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            # A Python file write names no file: say which disk, as a full ledger's does.
            place = _output_place(args, ("dir", "out"))
            where = f"the disk holding {place}" if place is not None else "the disk"
            print(f"cleanset: fatal: {where} is full ({exc}). Everything committed so far is "
                  "kept; free some space, then run the same command again to resume.",
                  file=sys.stderr)
            return 1
        # Permissions changed mid-build...: nothing committed is lost; say what broke.
        print(f"cleanset: fatal: {exc}. Everything committed so far is kept; fix the cause and "
              "run the same command again to resume.", file=sys.stderr)
        return 1


def _unreadable(exc: OSError) -> str:
    """What a command that only reads could not read, and what to do about it."""
    if exc.filename is None:
        return f"{exc.strerror or exc}: cannot read the dataset."
    path = Path(os.fsdecode(exc.filename))
    if isinstance(exc, PermissionError):
        # Name the directory this user may not enter, not a file below it it never reached.
        shut = next((d for d in reversed(path.parents) if d.is_dir() and
                     not os.access(d, os.R_OK | os.X_OK)), None)
        return (f"{shut or path}: this user may not read it ({exc.strerror}). Ask for read "
                "access to the output directory, or audit a copy you can read.")
    if isinstance(exc, IsADirectoryError):
        return (f"{path}: is a directory where the dataset keeps a file (a damaged copy?). "
                "Restore that file from a good copy of the dataset.")
    return (f"{path}: cannot be read ({exc.strerror or exc}). Restore it from a good copy "
            "of the dataset, or audit a copy you can read.")


def _incomplete(exc: ModuleNotFoundError) -> int:
    """A dependency a command imports is missing: most often a checkout updated (a new base
    dependency) without installing it again. The import fails before the command's work
    starts (a build has at most made its empty output directory by then), so the same
    command, once reinstalled, simply runs."""
    print(f"cleanset: fatal: {exc}: cleanset's installation is incomplete or older than its "
          "code (a checkout updated without reinstalling?). Install it again (pip install -e "
          ". in its checkout, or pip install --upgrade cleanset), then run the same command "
          "again.", file=sys.stderr)
    return 1


def _output_closed(*, reads_only: bool, said: str | None = None) -> int:
    """`cleanset recheck --json | head -1`: the reader left before the command finished.
    Not an error of ours, but the command stopped there (a recheck's `--apply` never ran):
    exit 141, as a shell reports a process SIGPIPE ended, never 0, and say so on stderr.
    A command that only reads (`licenses list | head`) has nothing to keep or finish; one
    whose work was done before it printed says so (`args.output_closed_said`, set by the
    command): told to run again to finish it, a finished takedown then answered "already
    removed", and a finished recheck asked every source again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's last flush cannot fail
    # `said`: the command's own word on where it stopped (`args.output_closed_said`)
    said = said or ("before it finished; " + (
        "it only reads, so nothing changed." if reads_only else
        "what it had committed is kept. Run it again with its output going somewhere "
        "that stays open to finish it."))
    with contextlib.suppress(OSError):  # stderr may be the same closed pipe
        print("cleanset: stopped: its output was closed (broken pipe) " + said,
              file=sys.stderr)
    return 141


def _interrupted(exc: KeyboardInterrupt, *, said: str | None = None) -> int:
    """`said`: the command's own word on what a rerun does (`args.interrupted_said`)."""
    said = said or "run the same command again to resume."
    if isinstance(exc, interrupts.HungUp):
        with contextlib.suppress(OSError):  # the terminal it wrote to may be gone
            print(f"cleanset: hung up (SIGHUP: the terminal closed?); {said}", file=sys.stderr)
        return 128 + signal.SIGHUP  # 129, as a shell reports a process SIGHUP ended
    if isinstance(exc, interrupts.Terminated):
        print(f"cleanset: terminated (SIGTERM); {said}", file=sys.stderr)
        return 128 + signal.SIGTERM  # 143, as a shell reports a process SIGTERM ended
    print(f"cleanset: interrupted; {said}", file=sys.stderr)
    return 130


# Below this much free space a failed ledger write is read as the disk being full: SQLite
# says "disk I/O error" (or, its commit undone, "cannot rollback") when its journal cannot grow.
NEARLY_FULL_BYTES = 64 << 20


def _ledger_fix(exc: sqlite3.DatabaseError, place: Path | None) -> str:
    if "readonly" in str(exc):
        return ("This user cannot write the directory or its ledger: fix the permissions, or "
                "run it on a writable copy.")
    if "full" in str(exc) or (place is not None and _free_bytes(place) < NEARLY_FULL_BYTES):
        where = f"the disk holding {place}" if place is not None else "the disk"
        return (f"{where[0].upper()}{where[1:]} is full: the ledger is not damaged and everything "
                "committed is kept. Free some space, then run the same command again to "
                "resume.")
    return ("If it was damaged (an interrupted copy, a file written over it), restore the "
            "directory from a good copy; `cleanset verify DIR` checks one.")


def _output_place(args: argparse.Namespace, names: tuple[str, ...] = ("out", "dir")
                  ) -> Path | None:
    """The local directory a command works in, when its arguments name one."""
    for name in names:
        value = getattr(args, name, None)
        if isinstance(value, str | Path) and str(value) and "://" not in str(value):
            return Path(value)
    return None


def _free_bytes(place: Path) -> int:
    for path in (place, *place.absolute().parents):
        with contextlib.suppress(OSError):
            return shutil.disk_usage(path).free
    return NEARLY_FULL_BYTES


def limit_malloc_arenas() -> None:
    """Two glibc malloc arenas per process, this one and the worker processes it starts.

    glibc gives threads that allocate at once arenas of their own (up to 8 per core), and a
    build's dozen threads passing ~100 KB images around fragment them: the processes of a
    10,000-image build held 700 MB at their peak, 563 MB with two arenas, at the same speed
    (docs/performance-round2.md). A MALLOC_ARENA_MAX the user set is kept; elsewhere than
    Linux (or without glibc's mallopt) nothing changes.
    """
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return
    os.environ["MALLOC_ARENA_MAX"] = "2"  # read by every process started from here on
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 2)  # this process: its threads start later


_M_ARENA_MAX = -8  # glibc's malloc.h


def run() -> NoReturn:
    """The `cleanset` program: main(), then end the process without tearing the interpreter
    down, which unloads every extension module one by one (OpenCV, faiss, Arrow, SQLite...)
    and takes 0.3 s after the work is done and reported.

    Everything a command writes is closed (and synced) before main() returns; the exit
    handlers still run (logging's flush, multiprocessing's reaping of its processes). After
    a success, a thread still running takes the ordinary exit, which waits for it; after a
    failure or Ctrl-C it does not: what such a thread does (a stage's fetch from a host that
    does not answer, held up to its timeout) is thrown away, and Ctrl-C must not wait for
    it. An exception main() did not handle takes the ordinary exit.
    """
    limit_malloc_arenas()
    # What cleanset prints carries the sources' text (a creator's name in the build's
    # summary, a file's name, a server's answer in `cleanset evidence`): no escape sequence
    # in it may reach the terminal. JSON output reads back the same (the escapes are JSON's).
    sys.stdout = EscapingStream(sys.stdout)  # type: ignore[assignment]
    sys.stderr = EscapingStream(sys.stderr)  # type: ignore[assignment]
    code = main()
    if code == 0 and any(t.is_alive() and not t.daemon for t in threading.enumerate()
                         if t is not threading.main_thread()):
        raise SystemExit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # A reader that left, a closed stream: nothing more to say.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
