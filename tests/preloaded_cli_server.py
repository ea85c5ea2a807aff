"""The preloaded CLI's server (tests/preloaded_cli.py): `python preloaded_cli_server.py SOCKET`.

Imports what cleanset's commands import, prints "ready", then forks a child per request on
SOCKET (a Unix seqpacket socket): the request is JSON {argv, env, cwd} with three file
descriptors, the command's stdin, stdout and stderr. The child becomes `python -m builder
ARGV` run there; the server answers {"pid"} at once and {"returncode"} when the child ends.
It ends when its stdin (held by the test process) closes.

Single-threaded, so nothing is midway in another thread when it forks; it closes the
descriptors a child got before it takes the next request, so no child holds another's pipes
open (a command's output ends when the command and its own children end).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from typing import Any

import builder.cli
from builder.executors.local import STAGE_MODULES

# What the commands import when they run. Not Ray, nor Hugging Face's libraries: they read
# their environment at import, so a command that needs them imports them itself.
PRELOADED = (*STAGE_MODULES, "builder.pipeline", "builder.audit", "builder.recheck",
             "builder.takedown", "builder.lookup", "builder.evidence.show",
             "builder.exports.papers", "builder.publish", "numpy", "cv2", "pyarrow.parquet",
             "faiss", "webdataset")
MAIN = os.path.join(os.path.dirname(builder.cli.__file__), "__main__.py")  # as `-m builder`


def preload() -> None:
    builder.cli.make_parser()  # imports every command's module
    for name in PRELOADED:
        # An optional extra not installed: the command that needs it says so itself.
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def child(request: dict[str, Any], fds: list[int], inherited: list[int]) -> None:
    """Become the command; never returns."""
    code = 1
    try:
        for fd in inherited:
            os.close(fd)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        os.chdir(request["cwd"])
        sys.path[0] = os.getcwd()  # as `python -m` started there puts it
        os.environ.clear()
        os.environ.update(request["env"])
        time.tzset()
        tempfile.tempdir = None  # worked out again from this command's TMPDIR
        sys.argv = [MAIN, *request["argv"]]
        try:
            builder.cli.run()  # ends the process itself, except as below
        except SystemExit as exc:  # a success with a thread still running: the ordinary exit
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
        threading._shutdown()  # type: ignore[attr-defined]  # as the interpreter's exit does
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
    finally:
        os._exit(code)


def serve(address: str) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(address)
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(sys.stdin, selectors.EVENT_READ, "parent")
    children: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, its connection)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        for key, _ in selector.select():
            if key.data == "parent":  # the test process closed our stdin, or died
                return
            if key.data == "accept":
                conn, _ = listener.accept()
                message, fds, _, _ = socket.recv_fds(conn, 1 << 22, 3)
                if not message or len(fds) != 3:
                    conn.close()
                    for fd in fds:
                        os.close(fd)
                    continue
                inherited = [listener.fileno(), selector.fileno(), conn.fileno(),
                             sys.stdin.fileno(), *children,
                             *(c.fileno() for _, c in children.values())]
                pid = os.fork()
                if pid == 0:
                    child(json.loads(message), fds, inherited)
                for fd in fds:
                    os.close(fd)
                pidfd = os.pidfd_open(pid)
                children[pidfd] = (pid, conn)
                selector.register(pidfd, selectors.EVENT_READ, "child")
                conn.send(json.dumps({"pid": pid}).encode())
            else:
                pid, conn = children.pop(key.fd)
                selector.unregister(key.fd)
                os.close(key.fd)
                _, status = os.waitpid(pid, 0)
                with contextlib.suppress(OSError):  # the test gave up on it (its timeout)
                    conn.send(json.dumps(
                        {"returncode": os.waitstatus_to_exitcode(status)}).encode())
                conn.close()


if __name__ == "__main__":
    preload()
    serve(sys.argv[1])
