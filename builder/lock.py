"""One build (or takedown) at a time per output directory."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from builder.errors import BuildLockedError


class OutputLock:
    def __init__(self, out: Path, file: str = ".lock") -> None:
        self.path = out / file
        self.out = out
        self.fd: int | None = None

    def __enter__(self) -> OutputLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self.fd, 64).decode(errors="replace").strip() or "another process"
            os.close(self.fd)
            self.fd = None
            raise BuildLockedError(
                f"{self.out}: another cleanset process (pid {holder}) is working on this "
                "output directory. Wait for it to finish, or build into another --out."
            ) from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
