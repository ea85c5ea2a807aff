"""`cleanset diff OLD [NEW] [--from N --to M] [--json]`: keys removed and added between two
output directories (or published URLs), or between two versions of one. Exits 0."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from builder.commands import place_argument
from builder.errors import UserError
from builder.recipe import is_url

MANIFEST = "manifest.parquet"


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "diff", help="keys removed and added between two versions or two directories",
        description="`diff OLD NEW` compares two output directories by their manifests; "
                    "`diff DIR --from N --to M` two versions of one directory (default: the "
                    "previous version to the current one). DIR, OLD and NEW may be the URLs "
                    "datasets were published to: only the file compared (the manifest, or "
                    "the ledger for versions) is downloaded.")
    # Plain strings, not Paths: Path("file:///pub") would fold the URL into "file:/pub".
    p.add_argument("old", type=place_argument, metavar="OLD",
                   help="an output directory or published URL (with --from/--to: the one "
                        "whose versions to compare)")
    p.add_argument("new", type=place_argument, nargs="?", metavar="NEW",
                   help="a second output directory or published URL, compared with OLD by "
                        "their manifests")
    p.add_argument("--from", dest="from_version", type=int, metavar="N",
                   help="the older version (default: the one before --to)")
    p.add_argument("--to", dest="to_version", type=int, metavar="M",
                   help="the newer version (default: the current one)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=run, only_reads=True)  # an OSError is the copy's (cli.py)


def run(args: argparse.Namespace) -> int:
    from builder.publish import LEDGER
    from builder.versions import diff_directories, diff_versions, version_of

    if args.new is not None:
        if args.from_version is not None or args.to_version is not None:
            raise UserError("diff: give two directories, or one directory with --from/--to, "
                            "not both.")
        with ExitStack() as stack:
            old = stack.enter_context(_local(args.old, MANIFEST))
            new = stack.enter_context(_local(args.new, MANIFEST))
            result = diff_directories(old, new)
        result.old, result.new = _label(args.old), _label(args.new)
    else:
        with _local(args.old, LEDGER) as out:
            current = version_of(out)
            if current is None:
                from builder.ledger import require_dataset

                require_dataset(out, hint="Or the URL it was published to (or two of them to "
                                "compare their manifests).")
            to = current if args.to_version is None else args.to_version
            start = max(to - 1, 0) if args.from_version is None else args.from_version
            result = diff_versions(out, start, to)
        result.old, result.new = f"{_label(args.old)}@{start}", f"{_label(args.old)}@{to}"
    for note in result.notes:
        print(f"cleanset: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_json(), sort_keys=True))
    else:
        for line in result.lines():
            print(line)
    return 0


def _label(where: str) -> str:
    return where if is_url(where) else str(Path(where))


@contextmanager
def _local(where: str, name: str) -> Iterator[Path]:
    """`where` itself when it is a directory; for a published URL, a temporary directory
    holding only its file `name`, downloaded and checked against the publish marker (the
    same way `lookup URL` fetches only the ledger). A local directory with an interrupted
    takedown gets the note lookup and report give: its manifest, ledger and shards may each
    be at the version before or after it, so "nothing removed" may not be so."""
    if not is_url(where):
        from builder.audit import note_pending_takedown

        note_pending_takedown(Path(where))
        yield Path(where)
        return
    from builder.publish import download_published, open_remote

    remote = open_remote(where, where="diff", writing=False)
    with tempfile.TemporaryDirectory(prefix="cleanset-diff-") as tmp:
        problems = download_published(remote, Path(tmp), only={name})
        if problems:
            raise UserError(f"diff {where}: {'; '.join(problems)} (`cleanset verify {where}` "
                            "lists every difference); nothing was compared.")
        try:
            yield Path(tmp)
        except UserError as exc:  # name the URL the user gave, not our temporary copy
            raise UserError(str(exc).replace(tmp, where)) from None
