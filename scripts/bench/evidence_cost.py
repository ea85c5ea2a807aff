"""What the evidence archive costs: bytes per sample by source kind, and build time.

    git archive 61701ed | tar -x -C /tmp/cleanset-before   # the tree before the archive
    python scripts/bench/evidence_cost.py --baseline /tmp/cleanset-before [--images 1000]

1. serves the throughput benchmark's seeded corpus (scripts/bench/throughput.py) on
   127.0.0.1, and a MediaWiki action API listing the same images in pages of 50 with the
   extmetadata of a real Commons file (tests/fixtures/wikimedia/page.json);
2. builds a table source (URL list) and a wikimedia source over them and prints the
   archive's size per 1,000 samples for each, split by record kind (from the ledger's index:
   a record's size is the distance to the next one);
3. builds the table source alternately with the baseline tree and this one (same command,
   same executor, PYTHONPATH switched), --rounds times each, and prints the median wall
   times and the CPU time of the build process (the driver, where the archive is written).
   Ratios within one run: absolute numbers on a shared machine drift.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import shutil
import sqlite3
import statistics
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from throughput import (  # noqa: E402 - the benchmark next door
    CC0,
    free_port,
    make_corpus,
    run_measured,
    start_server,
    write_bench_recipe,
)

REPO = Path(__file__).resolve().parents[2]
PAGE = json.loads((REPO / "tests/fixtures/wikimedia/page.json").read_text(encoding="utf-8"))
BATCH = 50


def serve_commons(urls: list[str]) -> tuple[ThreadingHTTPServer, str]:
    """A MediaWiki action API over `urls`: generator=categorymembers with gcmcontinue."""
    pages = []
    for i, url in enumerate(urls):
        page = copy.deepcopy(PAGE)
        page["pageid"], page["title"] = 1000 + i, f"File:Bench {i}.jpg"
        page["imageinfo"][0]["url"] = url
        page["imageinfo"][0].pop("sha1", None)  # the corpus holds duplicates on purpose
        pages.append(page)

    class Api(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            args = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
            if not self.path.startswith("/w/api.php"):
                self.send_error(404)
                return
            start = int(args.get("gcmcontinue", "file|0").split("|")[1])
            body = {"batchcomplete": True, "query": {"pages": pages[start:start + BATCH]}}
            if start + BATCH < len(pages):
                body["continue"] = {"gcmcontinue": f"file|{start + BATCH}",
                                    "continue": "gcmcontinue||"}
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/w/api.php"


def build(tree: Path, recipe: Path, out: Path, executor: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the build process: the driver, which writes the archive;
    the worker processes are the forkserver's children, so their time is not in it)."""
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000", "PYTHONPATH": str(tree)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, code, _ = run_measured([sys.executable, "-m", "builder", "build", str(recipe),
                                  "--out", str(out), "--no-progress", "--executor", executor],
                                 env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        raise SystemExit(f"build with {tree} failed ({code})")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall, cpu


def sizes_by_kind(out: Path) -> tuple[Counter[str], int, int]:
    """(compressed bytes by record kind, archive bytes, samples)."""
    by_kind: Counter[str] = Counter()
    with sqlite3.connect(out / "ledger.sqlite") as db:
        rows = db.execute("SELECT file, offset, kind FROM evidence_records "
                          "ORDER BY file, offset").fetchall()
        ends = {f"evidence/{name}": size for name, size in db.execute(
            "SELECT name, size FROM evidence_files")}
        samples = db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
    for (file, offset, kind), following in zip(rows, [*rows[1:], None], strict=True):
        end = following[1] if following and following[0] == file else ends[file]
        by_kind[kind] += end - offset
    total = sum(p.stat().st_size for p in (out / "evidence").glob("*.warc.gz"))
    return by_kind, total, samples


def report_size(label: str, out: Path) -> None:
    by_kind, total, samples = sizes_by_kind(out)
    per = 1000 / max(samples, 1)
    parts = ", ".join(f"{kind} {n * per / 1e3:.0f} KB" for kind, n in by_kind.most_common())
    print(f"{label:10s} {samples} samples, archive {total / 1e6:.2f} MB = "
          f"{total * per / 1e6:.2f} MB per 1,000 samples ({total / max(samples, 1):.0f} B "
          f"per sample): {parts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True,
                        help="a checkout of cleanset before the evidence archive")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--executor", default="processes", choices=("threads", "processes"))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cleanset-evidence-bench"))
    args = parser.parse_args()

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    names = make_corpus(work, args.images, args.seed)
    port = free_port()
    image_urls = [f"http://127.0.0.1:{port}/{n}" for n in names]
    urls = work / "urls.parquet"
    pq.write_table(pa.table({"url": image_urls, "license": [CC0] * len(names)}), urls)
    table = write_bench_recipe(work / "table.toml", urls, 1000, args.workers)
    server = start_server(work, port)
    commons, api = serve_commons(image_urls)
    wiki = write_bench_recipe(work / "wiki.toml", urls, 1000, args.workers)
    wiki.write_text(wiki.read_text().replace(
        f'kind = "table"\npath = "{urls}"',
        f'kind = "wikimedia"\napi = "{api}"\ncategory = "Bench"\nbatch = {BATCH}'))
    try:
        build(REPO, wiki, work / "out-wiki", args.executor)
        report_size("wikimedia", work / "out-wiki")
        times: dict[str, list[float]] = {"before": [], "with archive": []}
        cpus: dict[str, list[float]] = {"before": [], "with archive": []}
        for r in range(args.rounds):
            order = [("before", args.baseline), ("with archive", REPO)]
            for label, tree in order if r % 2 == 0 else order[::-1]:
                wall, cpu = build(tree, table, work / "out-table", args.executor)
                times[label].append(wall)
                cpus[label].append(cpu)
                print(f"round {r + 1}: {label:12s} {wall:6.1f} s wall  {cpu:6.1f} s driver CPU")
        report_size("table", work / "out-table")
    finally:
        server.terminate()
        server.wait()
        commons.shutdown()
    for name, values in (("wall time", times), ("driver CPU time", cpus)):
        before, after = (statistics.median(values[k]) for k in ("before", "with archive"))
        print(f"{name}, median of {args.rounds}: {before:.1f} s before, {after:.1f} s with "
              f"the archive: {100 * (after - before) / before:+.1f}%")


if __name__ == "__main__":
    main()
