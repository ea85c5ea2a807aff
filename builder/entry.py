"""The `cleanset` program's entry point (`[project.scripts]`, `python -m builder`).

Nothing but `sys` is loaded before a Ctrl-C is caught: one while builder.cli and what it
needs load (~20 ms, more on a loaded machine; cli.py catches Ctrl-C from then on) printed
Python's traceback instead of cleanset's one line."""

from __future__ import annotations

import sys


def run() -> None:
    try:
        from builder.cli import run as run_program
    except KeyboardInterrupt:
        print("cleanset: interrupted before it started; nothing changed.", file=sys.stderr)
        raise SystemExit(130) from None
    run_program()
