"""`cleanset diff OLD [NEW] [--from N --to M] [--json]`: keys removed and added between two
output directories, or between two versions of one. Exits 0."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from builder.errors import UserError


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "diff", help="keys removed and added between two versions or two directories",
        description="`diff OLD NEW` compares two output directories by their manifests; "
                    "`diff DIR --from N --to M` two versions of one directory (default: the "
                    "previous version to the current one).")
    p.add_argument("old", type=Path, metavar="OLD",
                   help="an output directory (with --from/--to: the one whose versions to compare)")
    p.add_argument("new", type=Path, nargs="?", metavar="NEW",
                   help="a second output directory, compared with OLD by their manifests")
    p.add_argument("--from", dest="from_version", type=int, metavar="N",
                   help="the older version (default: the one before --to)")
    p.add_argument("--to", dest="to_version", type=int, metavar="M",
                   help="the newer version (default: the current one)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from builder.versions import diff_directories, diff_versions, version_of

    if args.new is not None:
        if args.from_version is not None or args.to_version is not None:
            raise UserError("diff: give two directories, or one directory with --from/--to, "
                            "not both.")
        result = diff_directories(args.old, args.new)
    else:
        current = version_of(args.old)
        if current is None:
            raise UserError(f"{args.old}: no ledger.sqlite here; give a cleanset output "
                            "directory (or two directories to compare their manifests).")
        to = current if args.to_version is None else args.to_version
        start = max(to - 1, 0) if args.from_version is None else args.from_version
        result = diff_versions(args.old, start, to)
    if args.json:
        print(json.dumps(result.to_json(), sort_keys=True))
    else:
        for line in result.lines():
            print(line)
    return 0
