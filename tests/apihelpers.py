"""Helpers for the API source tests: a source run in-process, the server's request log,
and a full CLI build whose outputs are searched for a leaked key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pytest_httpserver import HTTPServer

from builder.recipe import FetchConfig
from builder.records import Candidate
from builder.sources import source_module
from builder.sources.base import SourceContext
from tests.conftest import make_image

FAST_FETCH = FetchConfig(allow_private_addresses=True, timeout_s=5, retries=2, backoff_s=0.01,
                         max_retry_after_s=5)


def open_source(kind: str, tmp_path: Path, **keys: Any) -> Any:
    """A source built exactly as a recipe would build it (Config.check included)."""
    module = source_module(kind, file="recipe.toml", where="sources[0]")
    config = module.Config(**keys)
    config = config.check(file=tmp_path / "recipe.toml", base=tmp_path, where="sources[0]")
    context = SourceContext(recipe_file=tmp_path / "recipe.toml", base_dir=tmp_path,
                            fetch=FAST_FETCH)
    return module.SOURCE(kind, config, context)


def requests_to(httpserver: HTTPServer, path: str) -> list[dict[str, list[str]]]:
    """Query parameters of every request the server received for `path`, in order."""
    return [{k: req.args.getlist(k) for k in req.args}
            for req, _ in httpserver.log if req.path == path]


def headers_to(httpserver: HTTPServer, path: str) -> list[dict[str, str]]:
    return [dict(req.headers) for req, _ in httpserver.log if req.path == path]


def serve_images(httpserver: HTTPServer, count: int, prefix: str = "/img") -> list[str]:
    """`count` distinct JPEGs, and plain 404s for the opt-out files a build asks the host for
    (pytest-httpserver answers unknown paths with 500, which robots.txt rules read as
    "disallow everything")."""
    for path in ("/robots.txt", "/ai.txt", "/.well-known/tdmrep.json"):
        httpserver.expect_request(path).respond_with_data("not here", status=404)
    urls = []
    for i in range(count):
        path = f"{prefix}/{i}.jpg"
        httpserver.expect_request(path).respond_with_data(make_image(100 + i, (64, 48)),
                                                          content_type="image/jpeg")
        urls.append(httpserver.url_for(path))
    return urls


def ids(cands: list[Candidate]) -> list[str]:
    return [c.source_id for c in cands]


def ledger_rows(out: Path) -> list[dict[str, Any]]:
    return pq.read_table(out / "candidates.parquet").to_pylist()


def files_containing(root: Path, needle: str) -> list[Path]:
    """Every file under `root` whose bytes contain `needle` (shards, ledger, parquet, json)."""
    raw = needle.encode()
    return [p for p in root.rglob("*") if p.is_file() and raw in p.read_bytes()]
