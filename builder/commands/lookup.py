"""`cleanset lookup DIR|URL PATH...`: is this work (or any work of this portfolio) in the dataset?"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from builder.commands import path_argument, place_argument, site_argument
from builder.errors import UserError
from builder.recipe import is_url

DESCRIPTION = """Hash each image as the build does (sha256, PDQ, pHash) and look it up in the
dataset's index (from the ledger, never a shard scan). Prints one JSON line per image:
{"query": PATH, "matches": [{"key", "distance", "exact", "license", "source_url",
"landing_url", "creator", "found_as", ...}]}. found_as is "sample" for a sample in the
shards, "duplicate" for a copy the build refused as a duplicate but recorded. A work no
longer in it gets "taken_down" (which takedown, when, why) or "refused" (a candidate whose
bytes a build downloaded and refused: why, when, from where). An image that
cannot be read or decoded gets "error" and no matches (one over 512 MiB: exact copies only).

--site HOST (repeatable, with or without images) answers for a whole site, also for works a
build refused before it downloaded them (its robots.txt, a licence): one JSON line per HOST,
{"site", "denylisted", "candidates": [{"candidate", "build", "source", "url", "found_as",
"key", "license", "reason", "detail", "decided_at"}]}, every candidate whose image URL (or,
for a sample, landing page) is on HOST or a subdomain, or a build refused as on the site;
found_as is "sample", "duplicate", "refused", "taken_down" or "unreachable" (not decided:
the next build asks again). "denylisted" is {"site", "since", "reason"} when a takedown
--site of HOST or a parent domain keeps later builds off it, else null.

Exit 0 (also when nothing matched); 2 for a missing DIR or PATH, a folder that cannot be
opened, or a HOST that is not a host name."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "lookup", help="find images (or a portfolio folder) in a built dataset",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", type=place_argument, help="the output directory of a build, or the URL it was published "
                   "to (only its ledger is downloaded)")
    p.add_argument("paths", type=path_argument, nargs="*", metavar="PATH",
                   help="an image file, or a folder of images (a portfolio)")
    p.add_argument("--site", type=site_argument, action="append", default=[], metavar="HOST",
                   help="every candidate from this site (artist.example, or a URL on it): "
                        "what became of it")
    p.set_defaults(func=run, only_reads=True,
                   unknown_hint="images go before the options: lookup DIR PATH... --site HOST")  # an OSError is the copy's (cli.py)


def run(args: argparse.Namespace) -> int:
    if not args.paths and not args.site:
        raise UserError("lookup: give an image or a folder of images (PATH), or --site HOST; "
                        "nothing was looked up.")
    if is_url(args.dir):
        lines = _lookup_url(args.dir, args.paths, args.site)
    else:
        from builder.audit import note_pending_takedown, note_unfinished_build

        note_pending_takedown(Path(args.dir))
        lines = _answers(Path(args.dir), args.paths, args.site)
        note_unfinished_build(Path(args.dir), "lookup")
    for line in lines:
        print(json.dumps(line, sort_keys=False))
    return 0


def _answers(out: Path, paths: list[Path], sites: list[str]) -> list[dict[str, Any]]:
    from builder.lookup import lookup, lookup_sites

    return [*(lookup(out, paths) if paths else []), *(lookup_sites(out, sites) if sites else [])]


def _lookup_url(url: str, paths: list[Path], sites: list[str]) -> list[dict[str, Any]]:
    """Against a published dataset: its ledger holds the index and the provenance, so only
    it (and the takedowns' log and denylist) is downloaded and checked against the marker,
    not the shards."""
    import tempfile

    from builder.publish import LEDGER, download_published, open_remote
    from builder.takedown_journal import DENYLIST, LOG

    remote = open_remote(url, where="lookup", writing=False)
    with tempfile.TemporaryDirectory(prefix="cleanset-lookup-") as tmp:
        # and what its takedowns removed, when there were any: a work taken down is
        # answered with its takedown
        problems = download_published(remote, Path(tmp), only={LEDGER},
                                      optional={DENYLIST, LOG})
        if problems:
            raise UserError(f"lookup {url}: {'; '.join(problems)} (`cleanset verify {url}` "
                            "lists every difference); nothing was looked up.")
        return _answers(Path(tmp), paths, sites)
