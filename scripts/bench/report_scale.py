"""How long `cleanset report` takes on a large dataset, and how long Chromium takes to render it.

    python scripts/bench/report_scale.py [--samples 1000000] [--work DIR]

Builds the bundled offline example for real, then fills its ledger synthetically up to
--samples samples (copies of the real rows with new keys, creators, sources, licences and
retrieval dates; one rejected candidate per four samples, spread over the reasons; one
duplicate per fifty). Then times, in this process:
  - scan:   reading every sample's provenance once (SELECT provenance FROM samples) — the
            reference: no report can avoid looking at each sample once;
  - report: `write_report` end to end (every query, the HTML, the atomic write);
  - render: headless Chromium loading report.html and taking a 1280 px screenshot (when
            /usr/bin/chromium exists).
and prints each with its ratio to the scan measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from builder.exports.report import write_report  # noqa: E402
from builder.pipeline import BuildOptions, build  # noqa: E402
from builder.provenance import dumps  # noqa: E402
from builder.recipe import load_recipe  # noqa: E402

LICENCES = ("CC0-1.0", "CC-BY-4.0", "CC-BY-SA-4.0", "CC-PDM-1.0", "CC-BY-2.0", "CC-BY-SA-3.0")
REASONS = ("license_not_allowed", "license_missing", "duplicate_exact", "duplicate_near",
           "http_error", "optout_robots_txt", "timeout", "corrupt_image")
CHROMIUM = Path("/usr/bin/chromium")


def fill(out: Path, samples: int) -> None:
    db = sqlite3.connect(out / "ledger.sqlite")
    template = db.execute("SELECT * FROM samples ORDER BY key LIMIT 1").fetchone()
    columns = [d[0] for d in db.execute("SELECT * FROM samples LIMIT 0").description]
    base = dict(zip(columns, template, strict=True))
    provenance = json.loads(base["provenance"])
    existing = db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
    db.execute("BEGIN")
    marks = ", ".join("?" for _ in columns)
    batch: list[tuple[object, ...]] = []
    for i in range(existing, samples):
        key = f"{i:010d}"
        lic = LICENCES[i % len(LICENCES)]
        provenance["key"] = key
        provenance["retrieved_at"] = f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}T12:00:00Z"
        row = {**base, "key": key, "seq": i, "shard": i // 1000, "license": lic,
               "source": f"source-{i % 7}", "creator": f"creator {i % 5003}",
               "sha256": f"{i:064x}", "provenance": dumps(provenance).decode()}
        batch.append(tuple(row[c] for c in columns))
        if len(batch) == 10_000:
            db.executemany(f"INSERT INTO samples VALUES ({marks})", batch)
            batch.clear()
    db.executemany(f"INSERT INTO samples VALUES ({marks})", batch)
    rejected = [(1, 10_000_000 + i, f"bench:{i}", f"source-{i % 7}",
                 f"https://host{i % 300}.example/{i}.jpg", "rejected", REASONS[i % len(REASONS)],
                 f"robots.txt: Disallow /{i}" if REASONS[i % len(REASONS)] == "optout_robots_txt"
                 else f"detail {i}", None, None, "2026-01-01T00:00:00Z")
                for i in range(samples // 4)]
    db.executemany("INSERT INTO candidates (build, seq, candidate_id, source, url, status, "
                   "reason, detail, key, license, decided_at) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rejected)
    db.executemany(
        "INSERT OR IGNORE INTO duplicates (build, seq, winner, exact, candidate_id, source, "
        "license, sha256) VALUES (1, ?, ?, ?, ?, 'mirror', 'CC-BY-4.0', ?)",
        [(20_000_000 + i, f"{(i * 37) % samples:010d}", i % 2, f"dup:{i}", f"{i:064x}")
         for i in range(samples // 50)])
    db.execute("COMMIT")
    db.close()


def timed(what: str, fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    seconds = time.perf_counter() - start
    print(f"  {what:<8} {seconds:8.2f} s", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="cleanset-report-bench-"))
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    build(load_recipe(REPO / "examples/offline/recipe.toml"),
          BuildOptions(out=out, progress=False))
    print(f"filling the ledger to {args.samples:,} samples ...", flush=True)
    fill(out, args.samples)
    print(f"{args.samples:,} samples, ledger {(out / 'ledger.sqlite').stat().st_size / 1e9:.2f} GB")

    def scan() -> None:
        db = sqlite3.connect(out / "ledger.sqlite")
        for _ in db.execute("SELECT provenance FROM samples"):
            pass
        db.close()

    reference = timed("scan", scan)
    report = timed("report", lambda: write_report(out))
    print(f"  report.html {(out / 'report.html').stat().st_size / 1e3:.0f} KB")
    print(f"report / scan: {report / reference:.2f}x")
    if CHROMIUM.exists():
        profile = work / "chromium-profile"
        render = timed("render", lambda: subprocess.run(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             f"--user-data-dir={profile}", f"--screenshot={work / 'report.png'}",
             "--window-size=1280,4000", (out / "report.html").as_uri()],
            check=True, capture_output=True, timeout=300))
        print(f"render / scan: {render / reference:.2f}x")
    print(f"work directory: {work}")


if __name__ == "__main__":
    main()
