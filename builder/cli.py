"""The `cleanset` command line: build, verify, lookup, takedown, report, licenses."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from builder import __version__
from builder.errors import UserError
from builder.recipe import is_url

if TYPE_CHECKING:
    from builder.pipeline import BuildOptions
    from builder.recipe import Recipe


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def make_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(prog="cleanset", description=__doc__)
    parser.add_argument("--version", action="version", version=f"cleanset {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log per-stage details")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_ArgumentParser)

    p = sub.add_parser("build", help="build (or resume) a dataset from a recipe")
    p.add_argument("recipe", type=Path, help="recipe .toml file")
    p.add_argument("--out", metavar="DIR|URL", help="output directory, or an fsspec URL (s3://bucket/name, gs://..., "
                   "file://...) built in --stage, then published (default: [dataset] output)")
    p.add_argument("--stage", type=Path, metavar="DIR",
                   help="with a URL output: the local directory it is built in before publishing "
                   "(default: $XDG_CACHE_HOME/cleanset/stage/<sha256 of the URL>)")
    p.add_argument("--limit", type=_positive_int, help="consider at most N candidates")
    p.add_argument("--workers", type=_positive_int, help="concurrent fetch/check workers")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--executor", choices=("threads", "processes", "ray"),
                   help="where the per-candidate stages run (default: [executor] kind)")
    p.add_argument("--ray-address", help="Ray cluster address (executor ray), e.g. auto")
    p.add_argument("--write-shards", choices=("driver", "workers"),
                   help="who writes the shards (overrides [executor] write_shards; workers: "
                        "Ray workers, onto a filesystem shared with this machine)")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("verify", help="re-read every shard and check it against its records")
    p.add_argument("dir", help="an output directory, or the URL it was published to")
    p.set_defaults(func=cmd_verify)

    _add_module_commands(sub)
    return parser


def _add_module_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Commands whose arguments live beside their code (each module has add_parser/run)."""
    from builder import licensing_cli, lookup, report_cli, takedown_cli

    for module in (licensing_cli, takedown_cli, lookup, report_cli):
        module.add_parser(sub)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def cmd_build(args: argparse.Namespace) -> int:
    from builder.pipeline import build
    from builder.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    target = args.out if args.out is not None else recipe.default_output()
    if is_url(target):
        where = "--out" if args.out is not None else f"{recipe.file}: [dataset] output ="
        return _build_and_publish(recipe, target, where, args)
    if args.stage is not None:
        raise UserError(f"--stage {args.stage}: only a URL output (s3://..., file://...) is "
                        "staged; a local --out is built in place. Drop --stage.")
    summary = build(recipe, _build_options(Path(target), args))
    for line in summary.lines():
        print(line)
    return 0


def _build_options(out: Path, args: argparse.Namespace) -> BuildOptions:
    from builder.pipeline import BuildOptions

    return BuildOptions(out=out, limit=args.limit, workers=args.workers,
                        progress=False if args.no_progress else None,
                        executor=args.executor, ray_address=args.ray_address,
                        write_shards=args.write_shards)


def _build_and_publish(recipe: Recipe, url: str, where: str, args: argparse.Namespace) -> int:
    """Build into the local stage (pulling the published state into an empty one), publish."""
    from builder import publish
    from builder.pipeline import build

    with publish.staged(url, args.stage, where=where, nothing="Nothing was built") as (remote,
                                                                                      stage):
        summary = build(recipe, _build_options(stage, args))
        for line in summary.lines():
            print(line)
        result = publish.publish(stage, remote,
                                 progress=not args.no_progress and sys.stderr.isatty())
        for line in result.lines():
            print(line)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from builder.audit import verify

    if is_url(args.dir):
        return _verify_url(args.dir)
    problems, checked = verify(Path(args.dir))
    return _report_verify(problems, checked, Path(args.dir))


def _verify_url(url: str) -> int:
    """Download the published files into a temporary directory, check them against the marker,
    then run the same verify as for a local directory."""
    from builder.audit import verify
    from builder.publish import download_published, open_remote

    remote = open_remote(url, where="verify", writing=False)
    with tempfile.TemporaryDirectory(prefix="cleanset-verify-") as tmp:
        problems = download_published(remote, Path(tmp))
        more, checked = verify(Path(tmp))
    return _report_verify(problems + more, checked, url)


def _report_verify(problems: list[str], checked: int, where: Path | str) -> int:
    for problem in problems:
        print(f"PROBLEM {problem}")
    if problems:
        print(f"verify: {len(problems)} problem(s) in {where}")
        return 1
    print(f"verify: OK: {checked} samples in {where} match their provenance, manifest, "
          "ledger and policy")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return int(args.func(args))
    except UserError as exc:
        print(f"cleanset: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        # `cleanset licenses | head`: the reader left; that is not our error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("cleanset: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130
    except OSError as exc:
        # Disk full, permissions changed mid-build...: nothing committed is lost; say what broke.
        print(f"cleanset: fatal: {exc}. Everything committed so far is kept; fix the cause and "
              "run the same command again to resume.", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
