"""The source interface: a source only yields Candidates; it writes nothing.

A source module defines a frozen `Config` dataclass (its recipe keys; every key but `kind`
and `name`) and a class taking `(name, config, context)` with a `candidates(resume)`
generator. Each yielded Candidate carries `resume`: the state after it, so a resumed build
hands the last committed state back instead of paging from the start.

A source that reads local input (table, folder) also has `preflight()`: it reads just enough
of that input, offline, to refuse a malformed or empty one with a UserError. The recipe
loader calls it, so such input is refused before the build creates its output directory.

A source may also define `summary_lines() -> list[str]`: indented lines for the build's
summary about what it met on the way (e.g. rate limits it waited out); the pipeline asks
every source it opened once the build ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from builder.records import Candidate

if TYPE_CHECKING:
    from builder.recipe import FetchConfig


@dataclass(frozen=True)
class SourceContext:
    """What a source may know about the build: where the recipe is, how to be polite."""

    recipe_file: Path
    base_dir: Path
    fetch: FetchConfig


class Source(Protocol):
    name: str

    def candidates(self, resume: dict[str, Any] | None) -> Iterator[Candidate]: ...
