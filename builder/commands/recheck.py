"""`cleanset recheck DIR|URL [--json] [--source NAME]... [--sample N [--seed S]]
[--recipe PATH]... [--apply --reason TEXT] [--stage DIR] [--no-progress]`.

Exit 0 when no sample would now be refused (or --apply took them down), 3 when some would
(so a scheduled job can alert), 4 when none would but some could not be checked
(`unreachable`: not an all-clear), 2 for bad arguments or input, 1 for a fatal error (a
source that keeps failing: run the same command again to resume).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from builder.commands import note_unpublished_stage, place_argument
from builder.errors import UserError
from builder.recipe import is_url

EXIT_REFUSED = 3
# Nothing refused, but some samples could not be asked about (a host down, an API's answer
# that said nothing of them): a scheduled job must not read that as "all clean".
EXIT_UNCHECKED = 4


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "recheck", help="ask the sources again: licence changes, deletions, new opt-outs",
        description="Ask every source again about every sample (API metadata in batches, a "
                    "HEAD on file URLs, local files re-hashed) and every host's robots.txt, "
                    "ai.txt and tdmrep.json, without downloading any image. Each sample gets "
                    "one outcome: unchanged, license_changed, deleted, content_changed, "
                    "optout or unreachable, and refuse=true when a build today would refuse "
                    "it. Recorded in the ledger; resumable. Exit 0: nothing would now be "
                    "refused; 3: something would; 4: nothing would, but some samples could "
                    "not be checked (unreachable); 2: bad arguments; 1: fatal.")
    p.add_argument("dir", type=place_argument, metavar="DIR|URL", help="the dataset's output directory, or the URL "
                   "it was published to (rechecked in the local stage)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per sample on stdout (key, source, outcome, refuse, "
                        "detail); the summary goes to stderr")
    p.add_argument("--source", action="append", default=[], metavar="NAME",
                   help="only the samples of this source (repeatable)")
    p.add_argument("--sample", type=int, metavar="N",
                   help="a random sample of N samples (seeded; the seed is reported)")
    p.add_argument("--seed", type=int, metavar="S", help="with --sample: the seed to use")
    p.add_argument("--recipe", action="append", default=[], type=Path, metavar="PATH",
                   help="the recipe a build was made from, when its recorded path is gone or "
                        "changed (repeatable)")
    p.add_argument("--apply", action="store_true",
                   help="take down every sample a build today would refuse (needs --reason)")
    p.add_argument("--reason", metavar="TEXT",
                   help="with --apply: why (kept in the ledger, takedowns.jsonl and the "
                        "denylist, after the recheck's number)")
    p.add_argument("--stage", type=Path, metavar="DIR", help="with a URL: the local stage to work in "
                   "(default: the build's; pulled from the URL if empty)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from builder.recheck import RecheckOptions

    _check_arguments(args)
    say = _say(args.json)
    options = RecheckOptions(
        out=Path(args.dir), sources=tuple(args.source), sample=args.sample, seed=args.seed,
        recipes=tuple(args.recipe), apply_reason=args.reason if args.apply else None,
        progress=False if args.no_progress else None, emit=_print_json if args.json else None)
    if is_url(args.dir):
        return _recheck_url(args, options, say)
    if args.stage is not None:
        raise UserError("recheck: --stage is for a dataset published to a URL; with a local "
                        "directory, leave it out.")
    try:
        result = _run(options)
    except BrokenPipeError:
        args.output_closed_said = _closed_while_printing(args.apply, Path(args.dir))
        raise
    except KeyboardInterrupt:
        from builder.recheck import is_writable

        if not is_writable(Path(args.dir)):
            # "run the same command again to resume" sent a user hours into a recheck of a
            # read-only copy to start it over without knowing
            args.interrupted_said = ("this directory is read-only, so nothing was recorded "
                                     "and the same command starts over (a writable copy "
                                     "keeps what it judged and resumes).")
        raise
    args.output_closed_said = _CLOSED_AFTER if result.recorded else _CLOSED_UNRECORDED
    if result.takedown is not None and result.takedown.matches:
        note_unpublished_stage(Path(args.dir))
    return _report(result, say)


# A reader that leaves (`--json | head -1`) does so once every sample is judged (the
# verdicts print then), and the recheck is recorded as finished: "run it again to finish
# it" sent users to ask every source again (hours, on a large dataset) for nothing.
_CLOSED_AFTER = ("after the recheck had finished: it is recorded (and --apply's takedown "
                 "made), so there is nothing to resume; `cleanset report DIR` lists what it "
                 "found.")


_CLOSED_UNRECORDED = ("after the recheck had judged every sample; this directory is "
                      "read-only, so nothing was recorded and there is nothing to resume (the "
                      "same command asks every source again).")


def _closed_while_printing(apply: bool, out: Path) -> str:
    from builder.recheck import is_writable

    if not is_writable(out):
        return _CLOSED_UNRECORDED
    if not apply:
        return ("while the recheck printed its verdicts: it had judged every sample and is "
                "recorded as finished, so there is nothing to resume (the same command asks "
                "every source again); `cleanset report DIR` lists what it found.")
    return ("while the recheck printed its verdicts: it had judged every sample and is "
            "recorded, but --apply's takedown, if it found samples to take down, was not "
            "made. Run the same command again with its output going somewhere that stays "
            "open: it takes down what this recheck found without asking the sources again.")


def _check_arguments(args: argparse.Namespace) -> None:
    if args.apply and not (args.reason and args.reason.strip()):
        raise UserError("recheck: --apply needs --reason TEXT (it is kept in the ledger, "
                        "takedowns.jsonl and the denylist).")
    if args.reason is not None and not args.apply:
        raise UserError("recheck: --reason goes with --apply; without --apply nothing is "
                        "taken down.")
    if args.sample is not None and args.sample < 1:
        raise UserError(f"recheck: --sample {args.sample}: give a number of samples, at "
                        "least 1.")
    if args.seed is not None and args.sample is None:
        raise UserError("recheck: --seed goes with --sample N.")


def _run(options: Any) -> Any:
    from builder.recheck import recheck

    return recheck(options)


def _report(result: Any, say: Any) -> int:
    from builder.drift import Outcome

    for line in result.lines():
        say(line)
    if result.row.refused and result.takedown is None:
        return EXIT_REFUSED
    return EXIT_UNCHECKED if result.row.counts.get(Outcome.UNREACHABLE.value) else 0


def _recheck_url(args: argparse.Namespace, options: Any, say: Any) -> int:
    """Recheck in the local stage (pulled from the URL when empty). A plain recheck publishes
    nothing (its record stays in the stage's ledger); --apply publishes the takedown."""
    from dataclasses import replace

    from builder import publish

    url = args.dir
    with publish.staged(url, args.stage, where="recheck", nothing="Nothing was rechecked",
                        writing=args.apply, say=say) as (remote, stage):
        if not (stage / publish.LEDGER).exists():
            raise UserError(f"{url}: no dataset is published there (no marker, no ledger); "
                            "nothing was rechecked.")
        result = _run(replace(options, out=stage))
        code = _report(result, say)
        if result.takedown is not None and result.takedown.matches:
            published = publish.publish(stage, remote, progress=sys.stderr.isatty(),
                                        what="takedown")
            for line in published.lines():
                say(line)
        else:
            say(f"recheck: recorded in the stage's ledger ({stage}); nothing published")
    return code


def _say(to_stderr: bool) -> Any:
    if to_stderr:
        return lambda line: print(line, file=sys.stderr)
    return print


def _print_json(verdict: dict[str, Any]) -> None:
    print(json.dumps(verdict, ensure_ascii=False))
