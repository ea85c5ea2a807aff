"""`cleanset ARGS` in a process forked from one that has imported cleanset already.

Two thirds of the suite's CPU went into starting Python and importing cleanset (NumPy,
OpenCV, Arrow, faiss, spdx-tools: ~0.5 s of a verify's 0.67 s, ~0.9 s of a small build's
1.2 s) once per command, over ~1,200 commands. A server per test process
(tests/preloaded_cli_server.py) imports them once; each command is a child forked from it
that takes the caller's stdin, stdout and stderr (passed over a Unix socket), working
directory, environment and arguments, runs `builder.cli.run()` -- the real program, from
its first line -- and exits. Its exit status is
its own (a kill -9 is -9, as subprocess reports it).

What a fresh interpreter would read at start-up (PYTHON*, locale, malloc and thread-count
variables, anything a library reads at import) cannot be given to an imported process: a
command whose environment differs from the server's in any variable not in CALL_TIME_ENV
runs as a fresh `python -m builder`, as does every command when
CLEANSET_TEST_FRESH_PROCESSES=1 (the whole suite as before, to rule the server out).
Commands a test starts and signals itself (conftest.start_cli) are always fresh processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SERVER = Path(__file__).with_name("preloaded_cli_server.py")

# Variables cleanset and the libraries it calls read when a command runs, not at import: a
# command may set these and still be forked from the server.
CALL_TIME_ENV = ("CLEANSET_", "SOURCE_DATE_EPOCH", "TMPDIR", "HOME", "PATH", "TZ",
                 "EUROPEANA_API_KEY", "SI_API_KEY", "OPENVERSE_TOKEN", "AIC_", "AWS_",
                 "PYTEST_")  # pytest names the running test in PYTEST_CURRENT_TEST

class PreloadedCli:
    """One server per test process, started on first use."""

    def __init__(self, base_env: Callable[[], dict[str, str]]) -> None:
        self._base_env = base_env  # what a command's environment is when a test adds nothing
        self._lock = threading.Lock()
        self._server: subprocess.Popen[bytes] | None = None
        self._address = ""
        self._env: dict[str, str] = {}
        self._broken = False

    def usable(self, env: dict[str, str]) -> bool:
        if os.environ.get("CLEANSET_TEST_FRESH_PROCESSES") == "1" or self._broken:
            return False
        base = self._env or self._base_env()
        changed = {k for k in env.keys() | base.keys() if env.get(k) != base.get(k)}
        return all(k.startswith(CALL_TIME_ENV) for k in changed)

    def run(self, args: list[str], env: dict[str, str], cwd: Path | None,
            timeout: float) -> subprocess.CompletedProcess[str] | None:
        """The command's CompletedProcess, or None when the server could not run it (the
        caller then runs a fresh process)."""
        address = self._start()
        if address is None:
            return None
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        request = json.dumps({"argv": list(args), "env": env,
                              "cwd": str(cwd or Path.cwd())}).encode()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            try:
                sock.connect(address)
                stdin = _stdin_fd()
                try:
                    socket.send_fds(sock, [request], [stdin, out_w, err_w])
                finally:
                    if stdin != 0:
                        os.close(stdin)
                started = sock.recv(4096)
            finally:
                os.close(out_w)
                os.close(err_w)
            if not started:
                raise OSError("the preloaded CLI server closed the connection")
        except OSError:
            for fd in (out_r, err_r):
                os.close(fd)
            sock.close()
            self._broken = True
            return None
        pid = json.loads(started)["pid"]
        outputs: dict[int, bytes] = {}
        readers = [threading.Thread(target=_read_all, args=(fd, outputs), daemon=True)
                   for fd in (out_r, err_r)]
        for reader in readers:
            reader.start()
        sock.settimeout(timeout)
        try:
            ended = sock.recv(4096)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            raise subprocess.TimeoutExpired([sys.executable, "-m", "builder", *args],
                                            timeout) from None
        finally:
            sock.close()
        for reader in readers:  # grandchildren (workers) may hold the pipes a moment longer
            reader.join()
        returncode = json.loads(ended)["returncode"]
        return subprocess.CompletedProcess(
            [sys.executable, "-m", "builder", *args], returncode,
            outputs[out_r].decode(errors="replace"), outputs[err_r].decode(errors="replace"))

    def _start(self) -> str | None:
        with self._lock:
            if self._server is not None and self._server.poll() is None:
                return self._address
            if self._broken:
                return None
            self._env = self._base_env()
            self._address = tempfile.mktemp(prefix="cleanset-cli-", suffix=".sock")
            self._server = subprocess.Popen(
                [sys.executable, str(SERVER), self._address], env=self._env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                cwd=REPO)
            assert self._server.stdout is not None
            # "ready" after its imports (~1 s); a server that never says it is not waited for.
            said, _, _ = select.select([self._server.stdout], [], [], 120)
            ready = self._server.stdout.readline() if said else b""
            if ready.strip() != b"ready":
                self._broken = True
                self._server.kill()
                return None
            return self._address

    def close(self) -> None:
        if self._server is not None:
            # Its stdin closing is its signal to end (also when this process dies).
            with contextlib.suppress(OSError):
                assert self._server.stdin is not None
                self._server.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._server.wait(10)
            if self._server.poll() is None:
                self._server.kill()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._address)


def _stdin_fd() -> int:
    try:
        os.fstat(0)
        return 0
    except OSError:
        return os.open(os.devnull, os.O_RDONLY)


def _read_all(fd: int, into: dict[int, bytes]) -> None:
    chunks = []
    with open(fd, "rb", closefd=True) as stream:
        while chunk := stream.read1(1 << 16):
            chunks.append(chunk)
    into[fd] = b"".join(chunks)
