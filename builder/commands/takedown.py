"""`cleanset takedown DIR (--key K | --url U | --sha256 H | --image PATH | --creator NAME |
--site HOST)...
--reason TEXT [--dry-run]`.

Exits 0 when it removed something (or completed an interrupted takedown) or, with --dry-run,
listed what it would remove; 1 when nothing matched (a work an earlier takedown removed is
named as such, with its date and reason); 2 for a malformed --key / --sha256 or no selector
when there is no interrupted takedown to finish.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from builder.commands import note_unpublished_stage, place_argument, site_argument
from builder.errors import UserError
from builder.recipe import is_url


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "takedown", help="remove works from a dataset and denylist them for good",
        usage="cleanset takedown [-h] DIR|URL (--key K | --url U | --sha256 H | --image PATH "
              "| --creator NAME | --site HOST)... --reason TEXT [--dry-run] [--stage DIR]\n"
              "       cleanset takedown DIR|URL   (finish an interrupted takedown)",
        description="Remove the matching samples (rewriting only the shards that hold them), "
                    "update ledger, manifest and papers, log to takedowns.jsonl and denylist "
                    "the works. Selectors are repeatable and combine (any match is removed). "
                    "With no selector, completes an interrupted takedown.")
    p.add_argument("dir", type=place_argument, help="the dataset's output directory, or the URL it was published "
                   "to (s3://, gs://, file://...: taken down in the local stage, then published)")
    p.add_argument("--stage", type=Path, help="with a URL: the local stage to work in "
                   "(default: the build's, derived from the URL; pulled from the URL if empty)")
    p.add_argument("--key", action="append", default=[], help="a sample key")
    p.add_argument("--url", action="append", default=[],
                   help="the image's file URL, landing page URL, or the URL it was fetched from")
    p.add_argument("--sha256", action="append", default=[], help="sha256 of the image bytes")
    p.add_argument("--image", action="append", default=[], type=Path, metavar="PATH",
                   help="an image file: its exact copies and near duplicates (PDQ/pHash)")
    p.add_argument("--creator", action="append", default=[], metavar="NAME",
                   help="every work credited to this creator (case-insensitive)")
    p.add_argument("--site", action="append", default=[], metavar="HOST", type=site_argument,
                   help="every sample whose file, landing or fetched URL is on this host or "
                        "its subdomains (artist.example, or a URL on it); the site is "
                        "denylisted too, so later builds refuse its images (also when "
                        "nothing of it is in the dataset yet)")
    p.add_argument("--reason", metavar="TEXT",
                   help="required with any selector: why (kept in the ledger, takedowns.jsonl "
                        "and the denylist)")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed; change "
                   "nothing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from builder.takedown import Selectors, takedown

    sel = Selectors(keys=tuple(args.key), urls=tuple(args.url), sha256s=tuple(args.sha256),
                    images=tuple(args.image), creators=tuple(args.creator),
                    sites=tuple(args.site))
    if args.stage is not None and not is_url(args.dir):
        raise UserError("takedown: --stage is for a dataset published to a URL; with a local "
                        "directory, leave it out.")
    sel.check_shapes()  # here, so a URL's stage is not pulled for a typo
    if not args.dry_run and not sel.empty() and not (args.reason and args.reason.strip()):
        raise UserError("takedown: --reason TEXT is required (it is kept in the ledger, "
                        "takedowns.jsonl and the denylist).")
    if is_url(args.dir):
        return _takedown_url(args, sel)
    _note_pending(Path(args.dir), args, sel)
    result = takedown(Path(args.dir), sel, args.reason, dry_run=args.dry_run)
    if not args.dry_run:
        # Committed whole before a line is printed (cli.py says so when that is cut).
        args.output_closed_said = ("after the takedown had finished: nothing is left to run, "
                                   "only its listing was cut short (takedowns.jsonl records "
                                   "it).")
        if result.matches or result.denylisted_sites:
            note_unpublished_stage(Path(args.dir))
    return _report(result, sel, args.dir)


def _note_pending(out: Path, args: argparse.Namespace, sel: Any) -> None:
    """A dry run reads the ledger as it is: beside an interrupted takedown it lists works
    that takedown is removing as "would remove", so it says so, as lookup and diff do."""
    if args.dry_run and not sel.empty() and out.is_dir():
        from builder.audit import note_pending_takedown

        note_pending_takedown(out)


def _report(result: Any, sel: Any, where: str, *, lines: bool = True) -> int:
    for line in result.lines() if lines else ():
        print(line)
    if not result.matches and not sel.empty() and not result.denylisted_sites:
        if result.already_removed and result.completed_pending:
            # The same command again after it was stopped: what it asked for is done now.
            print(f"takedown: {result.completed_pending}, completed above, removed it; "
                  f"nothing left to remove in {where}")
        elif result.already_removed:
            print(f"takedown: nothing left to remove in {where}; nothing changed")
        else:
            print(f"takedown: nothing in {where} matches; nothing changed")
        return 0 if result.completed_pending else 1
    return 0


def _takedown_url(args: argparse.Namespace, sel: Any) -> int:
    """The takedown in the local stage (pulled from the URL when empty), then published: the
    removed shards go from the URL only after the new marker is there."""
    import sys

    from builder import publish
    from builder.exports.papers import require_writers
    from builder.takedown import takedown

    url = args.dir
    if not args.dry_run:
        require_writers()  # before the stage is made or pulled, as takedown() checks
    with publish.staged(url, args.stage, where="takedown", nothing="Nothing was taken down",
                        writing=not args.dry_run) as (remote, stage):
        if not (stage / publish.LEDGER).exists():
            raise UserError(f"{url}: no dataset is published there (no marker, no ledger); "
                            "nothing was taken down.")
        _note_pending(stage, args, sel)
        try:
            result = takedown(stage, sel, args.reason, dry_run=args.dry_run)
        except UserError:
            # "Nothing to finish" in the stage; a takedown done there but stopped before its
            # publish still has to reach the URL.
            if args.dry_run or not sel.empty() or not _publish_unpublished(stage, remote):
                raise
            return 0
        if args.dry_run:
            return _report(result, sel, url)
        if not result.matches and not result.denylisted_sites:
            # An earlier takedown of the same works may have been stopped after the stage,
            # before the URL: its works are still published there.
            for line in result.lines():
                print(line)
            if _publish_unpublished(stage, remote):
                return 0
            return _report(result, sel, url, lines=False)
        code = _report(result, sel, url)
        published = publish.publish(stage, remote, progress=sys.stderr.isatty(), what="takedown")
        args.output_closed_said = ("after the takedown and its publish had finished: nothing "
                                   "is left to run, only its listing was cut short "
                                   "(takedowns.jsonl records it).")
        for line in published.lines():
            print(line)
    return code


def _publish_unpublished(stage: Any, remote: Any) -> bool:
    """Publish what the stage holds and the URL does not; whether there was anything."""
    import sys

    from builder import publish

    published = publish.publish(stage, remote, progress=sys.stderr.isatty(), what="takedown")
    if not (published.marker_written or published.removed):
        return False
    for line in published.lines():
        print(line)
    print(f"takedown: published the takedown {stage} held and {remote.url} did not")
    return True
