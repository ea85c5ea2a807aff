"""Helpers for the API source tests: a protocol-speaking handler with scripted failures,
a SourceContext pointed at loopback, and reading a build's ledger."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Request, Response

from builder.recipe import FetchConfig
from builder.sources.base import SourceContext
from tests.conftest import make_image

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(path: str) -> Any:
    return json.loads((FIXTURES / path).read_text(encoding="utf-8"))


def context(tmp_path: Path, **fetch: Any) -> SourceContext:
    config = FetchConfig(**{"allow_private_addresses": True, "timeout_s": 5, "retries": 2,
                            "backoff_s": 0.01, "user_agent": "cleanset-test/0.1 "
                            "(https://ci.cleanset.test/contact)", **fetch})
    recipe = tmp_path / "recipe.toml"
    return SourceContext(recipe_file=recipe, base_dir=tmp_path, fetch=config)


class ApiServer:
    """Answers one API path with `answer(args) -> JSON`, after any scripted failures.

    `fail(*responses)` queues (status, body, headers) answered before the protocol's own
    answer, one per request, to play 429 / 500 / malformed JSON sequences.
    """

    def __init__(self, httpserver: HTTPServer, path: str,
                 answer: Callable[[dict[str, str], str], Any]) -> None:
        self.httpserver = httpserver
        self.path = path
        self.answer = answer
        self.failures: list[tuple[int, str, dict[str, str]]] = []
        self.requests: list[tuple[str, dict[str, str], dict[str, str]]] = []
        httpserver.expect_request(_prefix(path)).respond_with_handler(self._handle)
        # No robots.txt (404) means no rules: the images on this host may be fetched.
        httpserver.expect_request("/robots.txt").respond_with_data("", status=404)

    @property
    def url(self) -> str:
        return self.httpserver.url_for(self.path)

    def fail(self, *responses: tuple[int, str, dict[str, str]]) -> None:
        self.failures.extend(responses)

    def _handle(self, request: Request) -> Response:
        args = dict(request.args.items())
        self.requests.append((request.path, args, dict(request.headers.items())))
        if self.failures:
            status, body, headers = self.failures.pop(0)
            return Response(body, status=status, headers=headers,
                            content_type="application/json")
        result = self.answer(args, request.path)
        if isinstance(result, Response):
            return result
        return Response(json.dumps(result), content_type="application/json")


def _prefix(path: str) -> Any:
    return re.compile("^" + re.escape(path.rstrip("/")) + "(/.*)?$")


def serve_image(httpserver: HTTPServer, path: str, seed: int) -> tuple[str, str]:
    """Serve a distinct JPEG at `path`; (its URL, its sha1)."""
    data = make_image(seed, (64, 48))
    httpserver.expect_request(path).respond_with_data(data, content_type="image/jpeg")
    return httpserver.url_for(path), hashlib.sha1(data).hexdigest()


def ledger(out: Path) -> dict[str, dict[str, Any]]:
    """candidates.parquet rows by source_id."""
    rows = pq.read_table(out / "candidates.parquet").to_pylist()
    return {r["candidate_id"].split(":", 1)[1]: r for r in rows}


def recipe_text(name: str, source: str) -> str:
    return f"""
[dataset]
name = "{name}"
samples_per_shard = 4

[policy]
use = "commercial"

[[sources]]
{source}

[fetch]
allow_private_addresses = true
user_agent = "cleanset-test/0.1 (https://ci.cleanset.test/contact)"
timeout_s = 5
retries = 1
backoff_s = 0.01
workers = 2

[image]
min_width = 8
min_height = 8
"""
