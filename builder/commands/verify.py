"""`cleanset verify DIR|URL`: re-read every shard and check it against its records.

Exit 0 only when everything holds; else one `PROBLEM` line each and exit 1. It never changes
the directory it checks.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from builder.commands import place_argument
from builder.output_dir import PUBLISHED_MARKER
from builder.recipe import is_url


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "verify", help="re-read every shard and check it against its records",
        description="Re-hash every image in every shard against its provenance, the manifest "
                    "and the ledger; check each licence against the build's recorded policy "
                    "and the ledger's accounting. Exit 0 when all hold, else one PROBLEM line "
                    "each and exit 1. Never changes the directory.")
    p.add_argument("dir", type=place_argument, help="an output directory, or the URL it was published to")
    p.set_defaults(func=run, only_reads=True)  # an OSError is the copy's (cli.py)


def run(args: argparse.Namespace) -> int:
    from builder.audit import verify

    if is_url(args.dir):
        return _verify_url(args.dir)
    from builder.takedown_journal import pending_takedown

    problems, checked = verify(Path(args.dir))
    interrupted = pending_takedown(Path(args.dir)) is not None
    return _report_verify(problems, checked, Path(args.dir), takedown_interrupted=interrupted)


def _verify_url(url: str) -> int:
    """Download the published files into a temporary directory, check them against the marker,
    then run the same verify as for a local directory."""
    from builder.audit import verify
    from builder.publish import download_published, open_remote, unlisted_shards

    remote = open_remote(url, where="verify", writing=False)
    with tempfile.TemporaryDirectory(prefix="cleanset-verify-") as tmp:
        problems = download_published(remote, Path(tmp))
        problems += unlisted_shards(remote)
        more, checked = verify(Path(tmp), shown_as=url)
    return _report_verify(problems + more, checked, url)


def _report_verify(problems: list[str], checked: int, where: Path | str, *,
                   takedown_interrupted: bool = False) -> int:
    for problem in problems:
        print(f"PROBLEM {problem}")
    if problems:
        print(f"verify: {len(problems)} problem(s) in {where}")
        if takedown_interrupted:
            # Its papers are half-way between two versions: finishing it rewrites them, and
            # the other problems are most likely that same half-way state.
            print(f"verify: finish the interrupted takedown first (`cleanset takedown {where}`), "
                  "then verify again")
        elif is_url(str(where)) and any(f"differs from {PUBLISHED_MARKER}" in p or
                                        f"missing at {where}" in p for p in problems):
            print(f"verify: a file at {where} differs from its marker or is missing: remove "
                  "the damaged one there and run again the command that published it (the "
                  "same build, or the takedown of this URL, with the same stage); a file "
                  "missing at the URL is uploaded again")
        elif any(problem.endswith(f".tar: {lost_shard()}") for problem in problems):
            print("verify: a shard the ledger records is missing: restore the dataset's "
                  "shards/ from a copy (the ledger records each shard's sha256), then verify "
                  "again; no build adds to it until then")
        elif any(problem.startswith("evidence/") and problem.endswith(lost_shard())
                 for problem in problems):
            # Said of an archive file in the same words as of a shard (evidence/check.py)
            print("verify: an evidence file the ledger records is missing: restore the "
                  "dataset's evidence/ from a copy (the ledger records each file's sha256), "
                  "then verify again")
        elif any(_about_a_paper(problem) for problem in problems):
            # The papers derive from the ledger alone, so no problem in them is lasting.
            print("verify: the papers derive from the ledger; run the same `cleanset build "
                  "RECIPE --out DIR` again to rewrite them")
        return 1
    print(f"verify: OK: {checked} samples in {where} match their provenance, manifest, "
          "ledger and policy")
    return 0


def lost_shard() -> str:
    from builder.audit import LOST_SHARD

    return LOST_SHARD


def _about_a_paper(problem: str) -> bool:
    from builder.exports.papers import PAPERS

    return problem.startswith(PAPERS)
