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

For `cleanset recheck`, a source module also defines `rechecker(name, config, context)`: an
object that asks the source again about samples it gave (`Item`s) and says what it states
about each today (`Now`), without downloading any image. It only reports facts; what they
mean (licence changed, deleted, ...) is decided in one place, builder/drift.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from builder.records import Candidate, Evidence

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


@dataclass(frozen=True)
class Item:
    """One sample as the dataset recorded it: what a source needs to ask about it again."""

    key: str
    source_id: str
    file_url: str | None
    landing_url: str | None
    api_url: str | None
    path: str | None  # folder sources: the image's path relative to the folder
    sha1: str
    sha256: str
    bytes: int
    etag: str | None
    last_modified: str | None
    extra: tuple[tuple[str, str], ...] = ()

    def extra_value(self, name: str) -> str | None:
        return next((v for k, v in self.extra if k == name), None)


PRESENT, GONE, UNREACHABLE = "present", "gone", "unreachable"


@dataclass(frozen=True)
class Now:
    """What a source says about one sample today. `None` fields are facts it does not
    state (a HEAD says nothing about the licence; an API says nothing about ETags)."""

    state: str  # PRESENT | GONE (the source says it is gone) | UNREACHABLE (transient)
    detail: str = ""
    evidence: tuple[Evidence, ...] | None = None  # the licence claims it makes today
    sha1: str | None = None  # the SHA-1 it states for the file today
    sha256: str | None = None  # a local file's sha256 today
    file_url: str | None = None  # the file it offers today (when it states no checksum)
    etag: str | None = None
    last_modified: str | None = None
    length: int | None = None
    headers: tuple[tuple[str, str], ...] = ()  # a HEAD's headers, for opt-out headers
    served_from: str | None = None  # where a HEAD's redirects ended, when not at the file URL
    # The source's whole record of it (a local sidecar): a licence field left out of it was
    # removed. From an API, a field left out may be a partial answer: nothing is known.
    record_is_whole: bool = False
    # The answers it was read from when they are its own (a HEAD); an API's pages, shared by
    # a batch, are taped by the recheck around the whole ask.
    exchanges: tuple[Any, ...] = ()


class Rechecker(Protocol):
    """What a source answers of its samples today. One that requests each file URL itself
    (a HEAD) sets `follows_file_urls = True`: its `Now.served_from` says where each URL
    redirects today; for the others the recheck reads where the build's bytes came from."""

    batch: int  # items per `ask`: what one request (or one round of requests) can answer

    def ask(self, items: Sequence[Item]) -> dict[str, Now]:
        """`Now` for every item, by `Item.key`. Raises (SourceError, exit 1) only when the
        source itself keeps failing; an item it cannot answer for is UNREACHABLE."""
        ...

    def close(self) -> None: ...
