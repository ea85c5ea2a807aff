"""A misbehaving HTTP server on 127.0.0.1 for end-to-end fault tests.

werkzeug (pytest-httpserver) always speaks correct HTTP; real servers do not. This one reads
a request off a raw socket and answers according to a per-path `Fault`: reset the connection,
lie about Content-Length, drip bytes, stream forever, redirect in circles. Each path may hold
a script of faults (one per request), so "503, 503, then the image" is one entry.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

Handler = Callable[[socket.socket, "FaultServer"], None]


@dataclass
class FaultServer:
    listener: socket.socket
    stop: threading.Event = field(default_factory=threading.Event)
    scripts: dict[str, list[Handler]] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def route(self, path: str, *handlers: Handler) -> None:
        """Answer the n-th request for `path` with handlers[n]; the last one repeats."""
        self.scripts[path] = list(handlers)

    def _next(self, path: str) -> Handler:
        with self.lock:
            n = self.hits[path]
            self.hits[path] += 1
        script = self.scripts.get(path) or [status(404)]
        return script[min(n, len(script) - 1)]

    def serve_forever(self) -> None:
        self.listener.settimeout(0.1)  # wake up to notice `stop`; close() alone would not
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, suppress(OSError):
            conn.settimeout(30)
            path = _read_request_path(conn)
            if path is not None:
                self._next(path)(conn, self)


def _read_request_path(conn: socket.socket) -> str | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
        if len(data) > 1 << 20:
            return None
    parts = data.split(b"\r\n", 1)[0].split()
    return parts[1].decode("latin-1").split("?", 1)[0] if len(parts) >= 2 else None


@contextmanager
def fault_server() -> Iterator[FaultServer]:
    listener = socket.create_server(("127.0.0.1", 0))
    server = FaultServer(listener)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        listener.close()
        thread.join(10)


# --- the faults --------------------------------------------------------------------------


def _head(code: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {code} X"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def ok(body: bytes, content_type: str = "image/jpeg") -> Handler:
    def handle(conn: socket.socket, _: FaultServer) -> None:
        conn.sendall(_head(200, {"Content-Type": content_type,
                                 "Content-Length": str(len(body)), "Connection": "close"}) + body)
    return handle


def status(code: int, headers: dict[str, str] | None = None) -> Handler:
    def handle(conn: socket.socket, _: FaultServer) -> None:
        conn.sendall(_head(code, {"Content-Length": "0", "Connection": "close",
                                  **(headers or {})}))
    return handle


def redirect(location: str, code: int = 302) -> Handler:
    return status(code, {"Location": location})


def reset() -> Handler:
    """Close with SO_LINGER 0: the client sees ECONNRESET, not a clean end of stream."""
    def handle(conn: socket.socket, _: FaultServer) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return handle


def reset_mid_body(body: bytes) -> Handler:
    def handle(conn: socket.socket, _: FaultServer) -> None:
        conn.sendall(_head(200, {"Content-Type": "image/jpeg",
                                 "Content-Length": str(len(body))}) + body[: len(body) // 2])
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return handle


def cut_in_headers() -> Handler:
    """A status line and one header, then the connection closes before the blank line that
    ends the headers: with no Content-Length seen, the end of the stream reads as the end
    of an empty body."""
    def handle(conn: socket.socket, _: FaultServer) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n")
    return handle


def until_close(body: bytes, keep: float = 1.0) -> Handler:
    """An HTTP/1.0 answer with no Content-Length: the body ends where the connection closes.
    With `keep` < 1 only that share of `body` is sent, then a clean close (a FIN, no reset):
    a transfer cut short that the client cannot tell from the whole body."""
    def handle(conn: socket.socket, _: FaultServer) -> None:
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\n\r\n"
                     + body[: int(len(body) * keep)])
    return handle


def declared_length(body: bytes, length: int) -> Handler:
    """Send `body` whole but declare `length`: longer is a truncated body, shorter a cut one."""
    def handle(conn: socket.socket, _: FaultServer) -> None:
        conn.sendall(_head(200, {"Content-Type": "image/jpeg", "Content-Length": str(length),
                                 "Connection": "close"}) + body)
    return handle


def silent(seconds: float) -> Handler:
    """Accept the request and say nothing for `seconds` (or until the server stops)."""
    def handle(conn: socket.socket, server: FaultServer) -> None:
        server.stop.wait(seconds)
    return handle


def drip(interval: float = 0.05) -> Handler:
    """Headers, then one body byte per interval, forever: each read succeeds, the whole never ends."""
    def handle(conn: socket.socket, server: FaultServer) -> None:
        conn.sendall(_head(200, {"Content-Type": "image/jpeg", "Content-Length": "1000000"}))
        while not server.stop.is_set():
            conn.sendall(b"\xff")
            server.stop.wait(interval)
    return handle


def endless(chunk: int = 64 * 1024, limit: int = 20 * 1024 * 1024) -> Handler:
    """A body with no Content-Length that streams `limit` bytes (or until the client leaves)."""
    def handle(conn: socket.socket, server: FaultServer) -> None:
        conn.sendall(_head(200, {"Content-Type": "image/jpeg", "Connection": "close"}))
        block = b"\xff\xd8\xff" + b"\0" * (chunk - 3)
        sent = 0
        while sent < limit and not server.stop.is_set():
            conn.sendall(block)
            sent += len(block)
    return handle
