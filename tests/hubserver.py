"""A Hugging Face hub on 127.0.0.1 serving one dataset repository of Parquet files, as
`datasets.load_dataset(NAME, streaming=True)` reads it (huggingface_hub's dataset info, tree
listing and ranged file downloads), with files that can be made to answer 503.

Only what that reading asks for is spoken; anything else answers 404, which the hub client
reads as "no such file" (README.md, dataset_infos.json, a loading script).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SHA = "c" * 40  # the repository's one commit


@dataclass
class Hub:
    repo: str
    files: dict[str, bytes]  # path in the repository -> bytes
    busy: set[str] = field(default_factory=set)  # paths answering 503 (Retry-After: 0)
    port: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def parquet(rows: list[dict[str, Any]]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


def _handler(hub: Hub) -> type[BaseHTTPRequestHandler]:
    repo = re.escape(hub.repo)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_HEAD(self) -> None:  # noqa: N802 - http.server's names
            self.do_GET()

        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0]
            if re.fullmatch(rf"/api/datasets/{repo}(/revision/[^/]+)?", path):
                return self._json({"id": hub.repo, "sha": SHA, "private": False,
                                   "disabled": False, "gated": False, "cardData": {},
                                   "siblings": [{"rfilename": f} for f in hub.files]})
            if m := re.fullmatch(rf"/api/datasets/{repo}/tree/[^/]+(/.*)?", path):
                return self._json(self._tree((m.group(1) or "").strip("/")))
            if m := re.fullmatch(rf"/datasets/{repo}/resolve/[^/]+/(.+)", path):
                return self._file(m.group(1))
            return self._send(404, b"{}", {"X-Error-Code": "EntryNotFound"})

        def _tree(self, folder: str) -> list[dict[str, Any]]:
            entries: list[dict[str, Any]] = []
            for name, data in hub.files.items():
                if folder and not name.startswith(folder + "/"):
                    continue
                rest = name[len(folder) + 1:] if folder else name
                if "/" in rest:
                    sub = (folder + "/" if folder else "") + rest.split("/", 1)[0]
                    if sub not in [e["path"] for e in entries]:
                        entries.append({"type": "directory", "path": sub, "size": 0,
                                        "oid": "d" * 40})
                else:
                    entries.append({"type": "file", "path": name, "size": len(data),
                                    "oid": hashlib.sha1(data).hexdigest()})
            return entries

        def _file(self, name: str) -> None:
            if name in hub.busy:
                return self._send(503, b"busy", {"Retry-After": "0"})
            data = hub.files.get(name)
            if data is None:
                return self._send(404, b"not found", {"X-Error-Code": "EntryNotFound"})
            headers = {"ETag": f'"{hashlib.sha1(data).hexdigest()}"', "X-Repo-Commit": SHA,
                       "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
            wanted = self.headers.get("Range")
            if self.command == "GET" and wanted:
                start, _, end = wanted.split("=", 1)[1].partition("-")
                first, last = int(start), min(int(end) if end else len(data) - 1, len(data) - 1)
                headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
                return self._send(206, data[first:last + 1], headers)
            return self._send(200, data, headers)

        def _json(self, value: Any) -> None:
            self._send(200, json.dumps(value).encode(), {"Content-Type": "application/json"})

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    return Handler


@contextmanager
def hub_server(hub: Hub) -> Iterator[Hub]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.port = server.server_port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
