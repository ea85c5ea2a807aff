"""One writer (build, takedown, publish) at a time per output directory; readers alongside.

The lock is a `flock` on the output directory itself, so it leaves no file behind and works
on a directory nobody may write to: a writer holds it exclusively, a reader (verify, lookup,
report, diff, takedown --dry-run) shared. A reader therefore never sees a directory half
rewritten, and a writer that starts while an audit runs is told so instead of changing the
files under it. Who holds the lock is read from /proc/locks (Linux), so the message can name
the pid, whether it reads or writes, and (from its command line) its command, without storing
anything.

Outputs of older versions hold a `.lock` file: it is locked too when it is there (so an older
cleanset still running is noticed) and never deleted (another process may have it open, and
deleting a lock file someone is about to lock is the classic way to get two holders). A
filesystem that refuses locks on directories (some NFS setups) falls back to that file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType

from builder.errors import BuildLockedError

LEGACY_FILE = ".lock"
# The commands a holder may be running, as they appear in its argv, to name it in messages.
_COMMANDS = frozenset({"build", "takedown", "recheck", "verify", "lookup", "report", "diff",
                       "evidence"})


class OutputLock:
    """Exclusive: held by a command that writes the directory (or, with `file`, the lock
    file of that name in it, e.g. the publish stage's own lock)."""

    shared = False

    def __init__(self, out: Path, file: str | None = None, *, command: str | None = None
                 ) -> None:
        self.out = out
        self.file = out / file if file is not None else None
        self.command = command  # "build": the message also offers another --out
        self._fds: list[int] = []

    def __enter__(self) -> OutputLock:
        try:
            if self.file is not None:
                self._lock_file(self.file, create=True)
            elif self._lock_directory():
                self._lock_legacy_file()
            else:
                self._lock_file(self.out / LEGACY_FILE, create=not self.shared)
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._release()

    # -- the two kinds of lock ------------------------------------------------------------
    def _lock_directory(self) -> bool:
        """Lock the directory's own descriptor; False when this filesystem cannot."""
        try:
            fd = os.open(self.out, os.O_RDONLY | os.O_DIRECTORY)
        except PermissionError:
            if self.shared:
                return True  # a reader that cannot list the directory still reads its files
            raise
        try:
            fcntl.flock(fd, self._mode() | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._locked(*holder(self.out)) from None
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EBADF, errno.ENOLCK, errno.EINVAL, errno.EOPNOTSUPP):
                return False
            raise
        self._fds.append(fd)
        return True

    def _lock_file(self, path: Path, *, create: bool) -> None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644) if create else os.open(
                path, os.O_RDONLY)
        except (FileNotFoundError, PermissionError):
            if create:
                raise
            return  # a reader with no lock file to check: no writer of ours uses one
        try:
            fcntl.flock(fd, self._mode() | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, reading = holder(path)
            pid = pid or _pid_written_in(fd)
            os.close(fd)
            raise self._locked(pid, reading) from None
        self._fds.append(fd)
        if create:  # for older versions, which read the holder's pid from the file
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())

    def _lock_legacy_file(self) -> None:
        """An older cleanset holds `.lock` while it works: respect it, without creating one."""
        legacy = self.out / LEGACY_FILE
        if legacy.is_file():
            with contextlib.suppress(OSError):
                self._lock_file(legacy, create=False)

    def _mode(self) -> int:
        return fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX

    def _release(self) -> None:
        for fd in reversed(self._fds):
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        self._fds = []

    def _locked(self, pid: int | None, reading: bool | None = None) -> BuildLockedError:
        who = f"{holder_command(pid)} (pid {pid})" if pid else "another cleanset process"
        doing = {True: "reading", False: "writing", None: "working on"}[reading]
        return BuildLockedError(
            f"{self.out}: {who} is {doing} this output directory. Wait for it to finish and "
            "run the same command again" + (" (or build into another --out)."
                                            if self.command == "build" else "."))


class ReadLock(OutputLock):
    """Shared: held by a command that only reads the directory (`command` names it in the
    message when a writer holds the directory: it stops rather than waits, exit 1)."""

    shared = True

    def __init__(self, out: Path, command: str) -> None:
        super().__init__(out)
        self.command = command

    def __enter__(self) -> ReadLock:
        super().__enter__()
        return self

    def _locked(self, pid: int | None, reading: bool | None = None) -> BuildLockedError:
        who = f"{holder_command(pid)} (pid {pid})" if pid else "another cleanset process"
        return BuildLockedError(
            f"{self.out}: {who} is writing this directory; run `cleanset {self.command}` again "
            "when it has finished.")


def holder_pid(path: Path) -> int | None:
    """The pid holding a flock on `path` (another process's), from /proc/locks; None when
    unknown (not Linux, or the holder is in another pid namespace or on another host)."""
    return holder(path)[0]


def holder(path: Path) -> tuple[int | None, bool | None]:
    """The pid holding a flock on `path` (another process's) and whether it holds it shared
    (a reader), from /proc/locks; (None, None) when unknown (not Linux, or the holder is in
    another pid namespace or on another host)."""
    try:
        st = os.stat(path)
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None, None
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
    same_inode: list[tuple[int, bool]] = []
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK" or not fields[4].isdigit():
            continue  # "->" lines are waiters, not holders; POSIX locks are not ours
        pid, (dev, _, ino) = int(fields[4]), fields[5].rpartition(":")
        if ino == str(st.st_ino) and pid not in (0, os.getpid()):
            if dev == device:
                return pid, fields[3] == "READ"
            same_inode.append((pid, fields[3] == "READ"))  # overlays report another device
    return same_inode[0] if len(same_inode) == 1 else (None, None)


def holder_command(pid: int) -> str:
    """"a build", "a verify"... when the holder's command line is cleanset's (`cleanset
    CMD`, `python -m builder CMD`), else generic: an argument that merely equals a command's
    name (a directory called `build`, `pytest -k build`) does not count."""
    try:
        argv = [a.decode(errors="replace")
                for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
    except OSError:
        argv = []
    for i, arg in enumerate(argv):
        if (arg == "-c" and i == 1) or (arg == "builder" and i and argv[i - 1] == "-m") or (
                Path(arg).name == "cleanset"):
            rest = [a for a in argv[i + 1 + (arg == "-c"):] if not a.startswith("-")]
            if rest and rest[0] in _COMMANDS:
                return f"a {rest[0]}"
            break
    return "another cleanset process"


def _pid_written_in(fd: int) -> int | None:
    text = os.read(fd, 64).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None
