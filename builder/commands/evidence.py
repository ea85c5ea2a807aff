"""`cleanset evidence DIR KEY|URL [--json]`: what the sources answered when a candidate was
decided."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from builder.commands import place_argument
from builder.errors import UserError
from builder.recipe import is_url

if TYPE_CHECKING:
    from builder.evidence.shown import Shown

DESCRIPTION = """Print the archived HTTP responses (DIR/evidence/*.warc.gz) a sample or a
refused candidate was decided from: the source's API response (its licence fields), the
host signals (robots.txt, ai.txt, tdmrep.json) and the image response, each with its
request, date, status line, headers and body (JSON pretty-printed; an image's payload is
in its shard, so its digest is shown). For a sample a recheck took down, or one the last
recheck did not find unchanged, the recheck's finding and the answers it archived come
first. KEY is a sample key (0000000042), a candidate id (source:id) or the image or
landing page URL (an image URL also typed with another scheme or host case, utm_
parameters or a default port). Records are read by offset from the ledger's index, never by scanning
the archive. A build made by a cleanset before the archive existed has no records: its
decision (status, reason, detail) is shown from the ledger, and it is said so.

--json prints one JSON object per candidate found, per line: {"candidate_id", "build",
"seq", "status", "reason", "detail", "key", "url", "recheck": null or {"number",
"outcome", "refuse", "detail", "checked_at", "applied_by", "answers_archived",
"tool_version", "resumed_by"}, "build_archived", "records": [{"role", "kind", "file",
"offset", "record_id", "request_line", "request_headers", "target", "date", "status_line",
"response_headers", "body", "digest_ok", "intact"}]}. A body is {"type": "json", "json":
...}, {"type": "text", "text": ...}, {"type": "bytes", "size": N} or, for an image,
{"type": "revisit", "payload_sha256", "sample_sha256", "same_as_sample"}; bodies are
whole.

Exit 0; 1 when a record shown is not what was archived (changed since: its digest or its
id no longer matches its content, so it proves nothing; each is marked WARNING, or
"intact": false); 2 when DIR or KEY is not found or a record cannot be read (in --json,
nothing is printed for that candidate)."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "evidence", help="print the archived responses a sample or candidate was decided from",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", type=place_argument, help="the output directory of a build")
    p.add_argument("wanted", metavar="KEY|URL",
                   help="a sample key, a candidate id (source:id), or the image or landing "
                   "page URL")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per candidate, per line (JSON Lines), for scripts")
    p.set_defaults(func=run, only_reads=True)  # an OSError is the copy's (cli.py)


def run(args: argparse.Namespace) -> int:
    if is_url(args.dir):
        raise UserError(f"evidence {args.dir}: give a local output directory; download the "
                        "published dataset's ledger.sqlite and evidence/ first.")
    from builder.audit import note_pending_takedown
    from builder.evidence.show import show
    from builder.evidence.show_json import candidate_json
    from builder.evidence.show_text import candidate_lines

    note_pending_takedown(Path(args.dir))
    unproven: list[str] = []
    for index, found in enumerate(show(Path(args.dir), args.wanted)):
        found = dataclasses.replace(found, records=_noting(found.records, unproven))
        if args.json:
            print(json.dumps(candidate_json(found)))
            continue
        if index:
            print()
        for line in candidate_lines(found):
            print(line)
    if unproven:
        # Shown with a WARNING each ("intact": false); the exit code says it too, for a
        # script that checks.
        print(f"cleanset evidence: {len(unproven)} record(s) shown are not what was archived "
              f"({', '.join(unproven)}): changed since they were written, they prove nothing. "
              f"Restore {Path(args.dir) / 'evidence'} from a copy; `cleanset verify "
              f"{args.dir}` names every changed record.", file=sys.stderr)
        return 1
    return 0


def _noting(records: Iterator[Shown], unproven: list[str]) -> Iterator[Shown]:
    """The records as they are read, each one that is not intact added to `unproven`."""
    for shown in records:
        if not shown.intact:
            unproven.append(shown.where)
        yield shown
