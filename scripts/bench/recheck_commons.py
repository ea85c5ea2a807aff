"""Time to recheck N Commons samples against a local MediaWiki replay.

    python scripts/bench/recheck_commons.py [--files 10000] [--work DIR]

Builds a dataset with the real pipeline from a local replay of the Commons action API
(`generator=categorymembers`, 50 files a page, tiny generated JPEGs on the same host), then
drifts 1% of the files (relicensed to CC BY-NC, deleted, re-uploaded) and times
`cleanset recheck` end to end, in process: recipe, one `prop=imageinfo&pageids=` request per
50 samples, the host's robots.txt / ai.txt / tdmrep.json once, every verdict judged and
recorded in the ledger chunk by chunk. No image is downloaded by the recheck.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image
from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Request, Response

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from builder.pipeline import BuildOptions, build  # noqa: E402
from builder.recheck import RecheckOptions, recheck  # noqa: E402
from builder.recipe import load_recipe  # noqa: E402

BATCH = 50
BY_SA = {"LicenseShortName": "CC BY-SA 4.0", "License": "cc-by-sa-4.0",
         "LicenseUrl": "https://creativecommons.org/licenses/by-sa/4.0"}
BY_NC = {"LicenseShortName": "CC BY-NC 2.0", "License": "cc-by-nc-2.0",
         "LicenseUrl": "https://creativecommons.org/licenses/by-nc/2.0"}


def tiny_jpeg(seed: int) -> bytes:
    rng = random.Random(seed)
    img = Image.new("RGB", (8, 6))
    img.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256))
                 for _ in range(48)])
    buf = io.BytesIO()
    img.resize((32, 24)).save(buf, "JPEG", quality=85)
    return buf.getvalue()


class Replay:
    """Commons on 127.0.0.1: categorymembers paging, imageinfo by pageids, the uploads."""

    def __init__(self, files: int) -> None:
        self.server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
        self.server.start()
        self.images = {f"/upload/{i}.jpg": tiny_jpeg(i) for i in range(files)}
        self.pages = [self._page(i) for i in range(files)]
        self.deleted: set[int] = set()
        self.api_requests = 0
        self.server.expect_request("/w/api.php").respond_with_handler(self._api)
        for path in ("/robots.txt", "/ai.txt", "/.well-known/tdmrep.json"):
            self.server.expect_request(path).respond_with_data("", status=404)
        self.server.expect_request("/upload/").respond_with_data("", status=404)
        for path, data in self.images.items():
            self.server.expect_request(path).respond_with_data(data, content_type="image/jpeg")

    @property
    def api(self) -> str:
        return self.server.url_for("/w/api.php")

    def _page(self, i: int) -> dict[str, Any]:
        data = self.images[f"/upload/{i}.jpg"]
        meta = {k: {"value": v} for k, v in BY_SA.items()}
        meta["Artist"] = {"value": f"Photographer {i % 101}"}
        return {"pageid": 1000 + i, "ns": 6, "title": f"File:Bench {i}.jpg",
                "imageinfo": [{"url": self.server.url_for(f"/upload/{i}.jpg"),
                               "descriptionurl": f"https://commons.example/wiki/File:{i}",
                               "sha1": hashlib.sha1(data).hexdigest(), "mime": "image/jpeg",
                               "extmetadata": meta}]}

    def _api(self, request: Request) -> Response:
        self.api_requests += 1
        args = request.args
        if "pageids" in args:
            wanted = [int(i) - 1000 for i in args["pageids"].split("|")]
            pages = [self.pages[i] if i not in self.deleted else
                     {"pageid": 1000 + i, "missing": True} for i in wanted]
            body: dict[str, Any] = {"batchcomplete": True, "query": {"pages": pages}}
        else:
            start = int(args.get("gcmcontinue", "file|0").split("|")[1])
            body = {"batchcomplete": True,
                    "query": {"pages": self.pages[start:start + BATCH]}}
            if start + BATCH < len(self.pages):
                body["continue"] = {"gcmcontinue": f"file|{start + BATCH}",
                                    "continue": "gcmcontinue||"}
        return Response(json.dumps(body), content_type="application/json")

    def drift(self, share: float) -> int:
        """Relicense, delete and re-upload `share` of the files each; how many changed."""
        rng = random.Random(7)
        chosen = rng.sample(range(len(self.pages)), 3 * int(len(self.pages) * share))
        third = len(chosen) // 3
        for i in chosen[:third]:
            meta = self.pages[i]["imageinfo"][0]["extmetadata"]
            meta.update({k: {"value": v} for k, v in BY_NC.items()})
        self.deleted.update(chosen[third:2 * third])
        for i in chosen[2 * third:]:
            self.pages[i]["imageinfo"][0]["sha1"] = "a" * 40
        return len(chosen)

    def stop(self) -> None:
        self.server.clear()
        self.server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    work = args.work or Path(tempfile.mkdtemp(prefix="cleanset-recheck-bench-"))
    replay = Replay(args.files)
    try:
        recipe = work / "recipe.toml"
        recipe.write_text(f"""
[dataset]
name = "recheck-bench"
samples_per_shard = 1000
[policy]
use = "commercial"
[[sources]]
kind = "wikimedia"
api = "{replay.api}"
category = "Bench"
[fetch]
allow_private_addresses = true
user_agent = "cleanset-bench/0.1 (https://example.org/contact)"
workers = 8
[image]
min_width = 8
min_height = 8
[dedup]
near = false
""")
        out = work / "built"
        started = time.monotonic()
        summary = build(load_recipe(recipe), BuildOptions(out=out, progress=False))
        print(f"built {summary.total_samples} Commons samples in "
              f"{time.monotonic() - started:.1f} s")
        changed = replay.drift(0.01)
        replay.api_requests = 0
        started = time.monotonic()
        result = recheck(RecheckOptions(out=out, progress=False))
        seconds = time.monotonic() - started
        for line in result.lines()[:9]:
            print(line)
        print(f"recheck of {result.row.total} samples ({changed} drifted on purpose): "
              f"{seconds:.1f} s, {result.row.total / seconds:.0f} samples/s, "
              f"{replay.api_requests} API requests, {result.host_requests} host files")
    finally:
        replay.stop()


if __name__ == "__main__":
    main()
