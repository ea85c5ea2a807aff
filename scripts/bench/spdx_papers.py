"""Time spdx.json for a large dataset: build the document, validate it, write it.

    python scripts/bench/spdx_papers.py [--samples 100000] [--compare 2000]

Fills a scratch ledger with synthetic sample rows (no images needed: the SPDX document is
made from the ledger only), then times each step. `--compare N` also runs spdx-tools' own
(quadratic) validation on an N-sample document and checks both report the same messages.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from builder.exports.papers import gather_facts  # noqa: E402
from builder.exports.spdx import build_document, validate_document, write_spdx  # noqa: E402
from builder.ledger import Ledger  # noqa: E402

LICENSES = ["CC0-1.0", "CC-BY-4.0", "CC-BY-SA-4.0", "CC-PDM-1.0",
            "LicenseRef-US-Government-Work", "CC-BY-SA-3.0-DE"]


def fill(ledger: Ledger, n: int) -> None:
    ledger.set_meta("dataset_name", "bench")
    ledger.set_meta("dataset_version", "1")
    ledger.begin()
    for i in range(n):
        key = f"{i:010d}"
        lic = LICENSES[i % len(LICENSES)]
        prov = {"attribution": {"text": f'"Work {i}" by Creator {i % 997} is licensed under {lic}.'},
                "source": {"file_url": f"https://example.org/{i}.jpg",
                           "landing_url": f"https://example.org/w/{i}"},
                "optout": {"checked": [{"signal": "x-robots-tag", "result": "allowed"}]}}
        ledger.add_sample({
            "key": key, "shard": i // 1000, "build": 1, "seq": i,
            "sha256": f"{i:064x}", "sha1": f"{i:040x}", "license": lic, "source": "bench",
            "source_id": str(i), "file_url": f"https://example.org/{i}.jpg",
            "landing_url": f"https://example.org/w/{i}", "creator": f"Creator {i % 997}",
            "title": f"Work {i}", "width": 64, "height": 64, "mime": "image/jpeg", "ext": "jpg",
            "bytes": 1000, "provenance": json.dumps(prov)})
    ledger.commit()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--compare", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(Path(tmp) / "ledger.sqlite")
        fill(ledger, args.samples)
        facts = gather_facts(ledger)
        t0 = time.perf_counter()
        doc = build_document(ledger, facts)
        t1 = time.perf_counter()
        messages = validate_document(doc)
        t2 = time.perf_counter()
        write_spdx(ledger, Path(tmp) / "spdx.json", facts)  # build + validate + write
        t3 = time.perf_counter()
        size = (Path(tmp) / "spdx.json").stat().st_size
        print(f"{args.samples} files: build {t1 - t0:.1f} s, validate {t2 - t1:.1f} s "
              f"({len(messages)} messages), write_spdx total {t3 - t2:.1f} s, "
              f"{size / 1e6:.0f} MB")
        if args.compare:
            _compare(Path(tmp), args.compare)


def _compare(tmp: Path, n: int) -> None:
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    ledger = Ledger(tmp / "small.sqlite")
    fill(ledger, n)
    doc = build_document(ledger, gather_facts(ledger))
    doc.relationships[5].related_spdx_element_id = "SPDXRef-missing"  # one known problem
    t0 = time.perf_counter()
    ours = sorted(m.validation_message for m in validate_document(doc))
    t1 = time.perf_counter()
    theirs = sorted(m.validation_message for m in validate_full_spdx_document(doc))
    t2 = time.perf_counter()
    print(f"{n} files: ours {t1 - t0:.2f} s, spdx-tools {t2 - t1:.2f} s, "
          f"same messages: {ours == theirs} ({len(ours)})")


if __name__ == "__main__":
    main()
