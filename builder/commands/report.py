"""`cleanset report DIR`: write DIR/report.html (licence mix, sources, refusals, creators)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "report", help="write DIR/report.html with charts about the dataset",
        description="Write DIR/report.html: licence mix, sources, refusal reasons, per-creator "
                    "concentration, sizes and formats, as one self-contained HTML page.")
    p.add_argument("dir", type=Path, help="a cleanset output directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from builder.exports.report import write_report

    path = write_report(args.dir)
    print(f"report: wrote {path}")
    return 0
