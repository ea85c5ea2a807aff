"""`cleanset report DIR [--out FILE]`: write DIR/report.html, or FILE (licence mix, sources,
refusals, creators). DIR is only read, so a read-only copy can be reported with --out."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "report", help="write DIR/report.html with charts about the dataset",
        description="Write DIR/report.html (or --out FILE): licence mix, sources, refusal "
                    "reasons, per-creator concentration, sizes and formats, as one "
                    "self-contained HTML page. DIR itself is only read.")
    p.add_argument("dir", type=Path, help="a cleanset output directory")
    p.add_argument("--out", type=Path, metavar="FILE",
                   help="write the report here instead of DIR/report.html (for a DIR you "
                        "cannot write, e.g. a read-only copy; a directory gets report.html)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from builder.exports.report import write_report

    path = write_report(args.dir, args.out)
    print(f"report: wrote {path}")
    return 0
