"""`cleanset build RECIPE [--out DIR|URL] ...`: build, or resume, a dataset from a recipe.

Exit 0 when the build finished (rejections are normal), 2 for a bad recipe or arguments, 1 for
a fatal error (an API that keeps failing, a full disk): run the same command again to resume.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from builder.commands import check_not_half_a_url, expand_home, path_argument
from builder.errors import UserError
from builder.recipe import is_url

if TYPE_CHECKING:
    from builder.pipeline import BuildOptions
    from builder.recipe import Recipe


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "build", help="build (or resume) a dataset from a recipe",
        description="Build the dataset a recipe describes, or resume its unfinished build in the "
                    "same output directory. Exit 0 when the build finished (rejections are "
                    "normal), 2 for a bad recipe or arguments, 1 for a fatal error.")
    p.add_argument("recipe", type=path_argument, help="recipe .toml file")
    p.add_argument("--out", type=_output_path, metavar="DIR|URL", help="output directory, or an fsspec URL (s3://bucket/name, gs://..., "
                   "file://...) built in --stage, then published (default: [dataset] output)")
    p.add_argument("--stage", type=_stage_path, metavar="DIR",
                   help="with a URL output: the local directory it is built in before publishing "
                   "(default: $XDG_CACHE_HOME/cleanset/stage/<first 16 hex digits of the URL's "
                   "sha256>)")
    p.add_argument("--limit", type=_positive_int, metavar="N", help="consider at most N candidates")
    p.add_argument("--workers", type=_positive_int, metavar="N", help="concurrent fetch/check workers")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--executor", choices=("auto", "threads", "processes", "ray"),
                   help="where the per-candidate stages run (default: [executor] kind)")
    p.add_argument("--ray-address", help="Ray cluster address (executor ray), e.g. auto")
    p.add_argument("--write-shards", choices=("driver", "workers"),
                   help="who writes the shards (overrides [executor] write_shards; workers: "
                        "Ray workers, onto a filesystem shared with this machine)")
    p.add_argument("--allow-looser-policy", action="store_true",
                   help="let a build into an existing dataset admit licences its last "
                        "build's policy refused (refused by default: a recipe of another "
                        "dataset pointed at this one by mistake)")
    p.add_argument("--rename-dataset", action="store_true",
                   help="let a build into an existing dataset whose recipe names another "
                        "[dataset] name add its images and rename it (refused by default: "
                        "the wrong --out)")
    p.set_defaults(func=run)


def _output_path(text: str) -> str:
    # An empty path is the current directory to the OS: a typo (or an unset shell variable)
    # must not turn the working directory into a dataset.
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "an empty or blank path (an empty path means the current directory); give the "
            "output directory, e.g. shards/my-dataset")
    check_not_half_a_url(text)
    return expand_home(text)


def _stage_path(text: str) -> Path:
    return Path(_output_path(text))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def run(args: argparse.Namespace) -> int:
    from builder.pipeline import build
    from builder.recipe import check_user_agent_contact, load_recipe

    recipe = load_recipe(args.recipe)
    # Before anything is created: a source that requires a contact refuses to start.
    warning = check_user_agent_contact(recipe)
    if warning:
        print(f"cleanset: warning: {warning}", file=sys.stderr)
    target = args.out if args.out is not None else recipe.default_output()
    if is_url(target):
        where = "--out" if args.out is not None else f"{recipe.file}: [dataset] output ="
        return _build_and_publish(recipe, target, where, args, warning)
    if args.stage is not None:
        raise UserError(f"--stage {args.stage}: only a URL output (s3://..., file://...) is "
                        "staged; a local --out is built in place. Drop --stage.")
    key = "--out" if args.out is not None else f"{recipe.file}: [dataset] output ="
    summary = build(recipe, _build_options(Path(target), args, key))
    # Committed whole before its summary is printed (cli.py says so when that is cut).
    args.output_closed_said = ("after the build had finished: only its summary was cut "
                               "short (the ledger and the papers record it).")
    _print_summary(summary.lines(), warning)
    return 0


def _print_summary(lines: list[str], warning: str | None) -> None:
    """The build's summary; a User-Agent without a real contact is repeated at its end, where
    it is still in sight when a long build is done."""
    for line in lines:
        print(line)
    if warning:
        print(f"  warning: {warning}")


def _build_options(out: Path, args: argparse.Namespace, out_key: str) -> BuildOptions:
    from builder.pipeline import BuildOptions

    return BuildOptions(out=out, out_key=out_key, limit=args.limit, workers=args.workers,
                        progress=False if args.no_progress else None,
                        executor=args.executor, ray_address=args.ray_address,
                        write_shards=args.write_shards,
                        allow_looser_policy=args.allow_looser_policy,
                        rename_dataset=args.rename_dataset)


def _build_and_publish(recipe: Recipe, url: str, where: str, args: argparse.Namespace,
                       warning: str | None) -> int:
    """Build into the local stage (pulling the published state into an empty one), publish."""
    from builder import publish
    from builder.exports.papers import require_writers
    from builder.pipeline import build

    require_writers()  # before the stage is made or pulled, as build() checks before shards
    with publish.staged(url, args.stage, where=where, nothing="Nothing was built") as (remote,
                                                                                      stage):
        summary = build(recipe, _build_options(stage, args, "--stage"))
        _print_summary(summary.lines(), warning)
        result = publish.publish(stage, remote,
                                 progress=not args.no_progress and sys.stderr.isatty())
        args.output_closed_said = ("after the build and its publish had finished: only its "
                                   "summary was cut short (the ledger and the papers record "
                                   "it).")
        for line in result.lines():
            print(line)
    return 0
