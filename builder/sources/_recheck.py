"""What the sources' `rechecker`s share: batching, a fresh Candidate read as `Now`, and the
HEAD rechecker of the URL sources (table, hf).

A HEAD carries the file's status and validators (ETag, Last-Modified, Content-Length) and
its opt-out headers, never its bytes: `cleanset recheck` downloads no image.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TypeVar

from builder.fetch import Fetcher, Response, recording
from builder.recipe import FetchConfig
from builder.records import Candidate, Rejection
from builder.sources.base import GONE, PRESENT, UNREACHABLE, Item, Now

T = TypeVar("T")

GONE_STATUSES = frozenset({404, 410})
# A server that will not answer HEAD cannot be re-checked without a download, which recheck
# never does: that sample stays unverified (unreachable), not drifted.
NO_HEAD_STATUSES = frozenset({405, 501})


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def now_from_candidate(cand: Candidate, *, gone_without_url: bool = True,
                       image_field: tuple[str, bool] | None = None) -> Now:
    """What a source's own record of the item says today, as the build would read it.
    `image_field`: the record's field the image URL is read from, and whether today's
    record has that field at all. Left out (a partial answer, a renamed field) it says
    nothing of the image; only the field present and empty is the source's "no image"."""
    if gone_without_url and not cand.url:
        if image_field is not None and not image_field[1]:
            return Now(UNREACHABLE, f"today's record of it has no `{image_field[0]}` field at "
                                    "all: nothing is known of its image")
        return Now(GONE, "the source offers no image for it any more")
    return Now(PRESENT, evidence=cand.evidence, sha1=cand.expected_sha1, file_url=cand.url)


def now_from_head(url: str, answer: Response | Rejection) -> Now:
    if isinstance(answer, Rejection):
        return Now(UNREACHABLE, f"HEAD {url}: {answer.reason.value}: {answer.detail}")
    status = answer.status
    if status in GONE_STATUSES:
        return Now(GONE, f"HTTP {status} from {answer.url}")
    if status in NO_HEAD_STATUSES:
        return Now(UNREACHABLE, f"HTTP {status} to a HEAD from {answer.url}: the server does "
                                "not answer HEAD, and recheck downloads no image")
    if not answer.ok:
        return Now(UNREACHABLE, f"HTTP {status} from {answer.url}")
    length = (answer.header("content-length") or "").strip()
    return Now(PRESENT, file_url=None, etag=answer.header("etag"),
               last_modified=answer.header("last-modified"),
               length=int(length) if length.isdigit() else None, headers=answer.headers,
               served_from=answer.url if answer.url != url else None)


class HeadRechecker:
    """HEAD on each sample's file URL, many hosts at once (the Fetcher keeps each host to
    its per-host limits, as in a build)."""

    batch = 256

    def __init__(self, fetch: FetchConfig) -> None:
        self.fetcher = Fetcher(fetch, trusted_hosts=fetch.trusted_hosts)
        self.pool = ThreadPoolExecutor(max_workers=fetch.workers,
                                       thread_name_prefix="recheck-head")

    def ask(self, items: Sequence[Item]) -> dict[str, Now]:
        return dict(zip((i.key for i in items), self.pool.map(self._one, items), strict=True))

    def _one(self, item: Item) -> Now:
        if not item.file_url:
            return Now(UNREACHABLE, "no file URL was recorded for it")
        with recording() as taped:  # in this pool thread: the recheck's own tape is not here
            answer = self.fetcher.head(item.file_url)
        return replace(now_from_head(item.file_url, answer), exchanges=tuple(taped))

    def close(self) -> None:
        # Not waiting: after Ctrl-C a HEAD to a host that does not answer held the command
        # up to its timeout; its answer is thrown away (a finished recheck has none left).
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.fetcher.close()
