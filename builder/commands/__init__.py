"""The subcommands of `cleanset`, one module each: `add_parser(subparsers)` declares the
command's arguments and sets `func` to its `run(args) -> exit code`. A new command is a new
module here, listed in COMMANDS (in the order `cleanset --help` shows them)."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from types import ModuleType


def command_modules() -> list[ModuleType]:
    from builder.commands import (
        build,
        diff,
        evidence,
        licenses,
        lookup,
        recheck,
        report,
        takedown,
        verify,
    )

    return [build, verify, lookup, evidence, takedown, recheck, diff, report, licenses]


def place_argument(text: str) -> str:
    """argparse's `type` for a directory or URL: '' (a shell variable never set) would be
    read as the current directory."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty string; give a path")
    check_not_half_a_url(text)
    return expand_home(text)


_HALF_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/(?!/)")


def check_not_half_a_url(text: str) -> None:
    """`s3:/bucket/x`, `file:/tmp/x`: a URL short of a slash would be taken for a local
    path (a folder named `s3:` in the current directory)."""
    if _HALF_URL_RE.match(text):
        scheme, rest = text.split(":/", 1)
        rest = ("/" if scheme.lower() in ("file", "local") else "") + rest.lstrip("/")
        raise argparse.ArgumentTypeError(
            f"{text}: looks like a URL with one slash after '{scheme}:'; write "
            f"{scheme}://{rest} (or a plain path without '{scheme}:')")


def expand_home(text: str) -> str:
    """A leading ~ as the shell would have expanded it (`--out=~/x`, a quoted '~/x', a
    recipe's `output = "~/x"` reach us unexpanded): never a folder literally named ~."""
    if not text.startswith("~"):
        return text
    expanded = os.path.expanduser(text)
    if expanded.startswith("~"):
        raise argparse.ArgumentTypeError(f"{text}: {text.split('/')[0]} is no user's home "
                                         "directory here; give the path in full")
    return expanded


def path_argument(text: str) -> Path:
    """argparse's `type` for a local path, refusing '' as `place_argument` does."""
    return Path(place_argument(text))


def site_argument(text: str) -> str:
    """argparse's `type` for `--site`: the host it names (builder.urls.site_host)."""
    from builder.urls import site_host

    try:
        return site_host(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def note_unpublished_stage(out: Path) -> None:
    """After a takedown in `out`: when it is a URL output's stage, say that the URL still
    serves what was taken down (a takedown given the stage changes the stage alone, and the
    work stayed published with nothing said) and how to publish it."""
    import sys

    from builder.output_dir import STAGE_STATE

    if not (out / STAGE_STATE).is_dir():
        return
    from builder.publish import published_to

    url = published_to(out)
    how = (f"Publish it: `cleanset takedown {url} --stage {out}` (without a selector it "
           "publishes what the stage holds and the URL does not)" if url else
           "Publish it: `cleanset takedown URL --stage DIR` with the URL it came from "
           "(without a selector it publishes what the stage holds and the URL does not)")
    print(f"cleanset: note: {out} is the stage of the dataset published to "
          f"{url or 'a URL'}: the published copy still holds what this takedown removed. "
          f"{how}.", file=sys.stderr)
