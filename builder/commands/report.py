"""`cleanset report DIR [--out FILE]`: write DIR/report.html, or FILE (licence mix, sources,
refusals, creators). Apart from that page, DIR is only read, so a read-only copy can be
reported with --out."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from builder.commands import path_argument, place_argument
from builder.errors import UserError
from builder.recipe import is_url


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "report", help="write DIR/report.html with charts about the dataset",
        description="Write DIR/report.html (or --out FILE): licence mix, sources, refusal "
                    "reasons, per-creator concentration, sizes and formats, as one "
                    "self-contained HTML page. Nothing else in DIR is written; with --out, DIR is only "
                    "read (a read-only copy can be reported).")
    # A string, not a Path: Path("file:///pub") would fold a URL into "file:/pub".
    p.add_argument("dir", type=place_argument, help="a cleanset output directory (a local one: a published URL is "
                   "refused, naming the stage)")
    p.add_argument("--out", type=_report_file, metavar="FILE",
                   help="write the report here instead of DIR/report.html (for a DIR you "
                        "cannot write, e.g. a read-only copy; a directory gets report.html)")
    # An OSError is the copy's (cli.py). Stopped, it has written nothing (the page is
    # replaced whole, never half-written): "resume" would have an auditor wonder what it left.
    p.set_defaults(func=run, only_reads=True, interrupted_said=(
        "the report was not written (nothing in the dataset changed); run the same command "
        "again to write it."))


def _report_file(text: str) -> Path:
    # "-" reads as standard output to a shell user; it would be a file named "-" here.
    if text == "-":
        raise argparse.ArgumentTypeError(
            "'-': the report is a page written to a file, not to standard output; give a "
            "path, e.g. --out report.html")
    path = path_argument(text)
    # Path() drops a trailing slash, so "--out reports/" for a folder not made yet once
    # wrote the page as a file named "reports". The slash says a directory was meant.
    if text.endswith(("/", os.sep)) and not path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{text}: no such directory (the trailing '/' names one); create it first, or "
            f"give a FILE, e.g. --out {text.rstrip('/' + os.sep) or '.'}.html")
    return path


def run(args: argparse.Namespace) -> int:
    from builder.exports.report import write_report

    if is_url(args.dir):
        raise UserError(_needs_local_directory(args.dir))
    from builder.audit import note_pending_takedown

    note_pending_takedown(Path(args.dir))
    path = write_report(Path(args.dir), args.out)
    print(f"report: wrote {path}")
    return 0


def _needs_local_directory(url: str) -> str:
    """The refusal for a published URL, naming the local directories that would do."""
    from builder.publish import default_stage

    stage = default_stage(url)
    if (stage / "ledger.sqlite").exists():
        where = f"The stage it was built in is here: `cleanset report {stage}`."
    else:
        where = (f"Give the stage it was built in (`--stage` of the build; by default {stage} "
                 "on the machine that built it) or a local copy of it (downloaded with your "
                 "storage's own tool), e.g. `cleanset report ./my-copy`.")
    return (f"report {url}: needs a local directory, not a URL (it reads the whole ledger "
            f"and writes report.html beside it). {where}")
