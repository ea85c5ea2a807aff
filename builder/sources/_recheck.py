"""What the sources' `rechecker`s share: batching, a fresh Candidate read as `Now`, and the
HEAD rechecker of the URL sources (table, hf).

A HEAD carries the file's status and validators (ETag, Last-Modified, Content-Length) and
its opt-out headers, never its bytes: `cleanset recheck` downloads no image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, NamedTuple, TypeVar

from builder.fetch import Fetcher, Response, recording
from builder.optout.hostfiles import origin
from builder.recipe import FetchConfig
from builder.records import Candidate, Rejection
from builder.sources._failures import RESUME, SourceError
from builder.sources._keys import NOT_FOUND
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


class ApiPresence:
    """Whether a per-record API that answered 404 is still where the recipe says it is.

    A 404 is those APIs' word for "this record is gone", and an API that has moved (a new
    version's path, a retired host answering 404 to everything) says it of every record:
    read as such, every sample was deleted, refused, and `recheck --apply` took the whole
    source down. The first 404 of a recheck asks, once, a page the API always answers
    (`probe`: its listing or its departments); only once that answers as the API does is a
    404 the record gone. Otherwise the recheck stops (exit 1) and nothing is judged deleted.
    """

    def __init__(self, source: str, probe: Callable[[], Any], *, url: str, what: str,
                 holds: str) -> None:
        self.source = source
        self.probe = probe
        self.url = url  # what `probe` asks, for the message (no secrets in it)
        self.what = what  # "departments list"
        self.holds = holds  # the key an answer of the API holds: "departments"
        self.confirmed = False

    def gone(self, url: str) -> Now:
        """The Now of a record whose URL answered 404, once the API is known to be there."""
        if not self.confirmed:
            answer = self.probe()
            if answer is NOT_FOUND:
                said = "HTTP 404 too"
            elif not isinstance(answer, dict) or not isinstance(answer.get(self.holds), list):
                said = f"an answer that is not the API's (no `{self.holds}` list)"
            else:
                said = ""
            if said:
                raise SourceError(
                    f"HTTP 404 for the record at {url}, and {said} from the API's own "
                    f"{self.what}; source {self.source!r} stopped at\n  {self.url}\n"
                    "The API is not where the recipe's `api` says (has it moved?), so no "
                    f"record of it is taken for deleted: check `api`. {RESUME}")
            self.confirmed = True
        return Now(GONE, f"HTTP 404 from {url}")


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
    its per-host limits, as in a build).

    A 404 is a file host's word for "no such file", and a host that has moved, or lost its
    files to a misconfiguration, says it of every file: read as such, every sample of the
    host was deleted and `recheck --apply` took them down. So a host's first 404 of a
    recheck is only taken for "gone" once the host is seen serving another file of ours
    (`witnesses`: other sample URLs on the host, given by the recheck); a host answering 404
    for every one of them leaves its 404s `unreachable`; a host holding one file of ours is
    asked for its root instead (`_probe_root`). A 410 is the host saying the file was removed
    on purpose: gone as before.
    """

    batch = 256
    witnesses_asked = 3  # other files of a host HEADed to tell "gone" from "moved"
    # Its Now.served_from is where each file URL redirects today (an API's rechecker asks the
    # API, so the recheck falls back on where the build's bytes came from).
    follows_file_urls = True

    def __init__(self, fetch: FetchConfig) -> None:
        self.fetcher = Fetcher(fetch, trusted_hosts=fetch.trusted_hosts)
        self.pool = ThreadPoolExecutor(max_workers=fetch.workers,
                                       thread_name_prefix="recheck-head")
        # host -> other file URLs of ours on it; set by the recheck, which has the ledger
        self.witnesses: Callable[[str], Sequence[str]] = lambda host: ()
        self.hosts: dict[str, _HostState] = {}  # what each host's 404s are taken for

    def ask(self, items: Sequence[Item]) -> dict[str, Now]:
        heads = dict(zip((i.key for i in items), self.pool.map(self._one, items), strict=True))
        for item in items:
            if heads[item.key].status is not None and heads[item.key].now.state == PRESENT:
                self.hosts[_host(item.file_url)] = _SERVING
        for item in items:
            host = _host(item.file_url)
            if heads[item.key].status == 404 and host not in self.hosts:
                self.hosts[host] = self._probe(host, item.file_url or "")
        return {i.key: self._judged(i, heads[i.key]) for i in items}

    def _one(self, item: Item) -> _Head:
        if not item.file_url:
            return _Head(Now(UNREACHABLE, "no file URL was recorded for it"), None)
        return self._head(item.file_url)

    def _head(self, url: str) -> _Head:
        with recording() as taped:  # in this pool thread: the recheck's own tape is not here
            answer = self.fetcher.head(url)
        status = None if isinstance(answer, Rejection) else answer.status
        return _Head(replace(now_from_head(url, answer), exchanges=tuple(taped)), status)

    def _probe(self, host: str, url: str) -> _HostState:
        """Whether `host`, which answered 404 for `url`, still serves other files of ours;
        holding no other, whether it answers at all (its root)."""
        others = [u for u in self.witnesses(host) if u != url][:self.witnesses_asked]
        if not others:
            return self._probe_root(host, url)
        heads = list(self.pool.map(self._head, others))
        exchanges = tuple(ex for head in heads for ex in head.now.exchanges)
        if any(head.now.state == PRESENT for head in heads):
            return _HostState("serving", exchanges)
        said = "HTTP 404" if all(h.status == 404 for h in heads) else "HTTP 404 or no answer"
        return _HostState("not serving", exchanges,
                          f"{host} answered {said} for every file of the dataset asked of it "
                          f"({', '.join([url, *others])}): it may have moved or answer 404 to "
                          "everything, so none of its files is taken for deleted on its word "
                          "(if they are gone, take them down by --key)")

    def _probe_root(self, host: str, url: str) -> _HostState:
        """A host holding one file of ours has no other to compare with: its root (`/`)
        tells a server that is there (any answer but a 404, 410 or 5xx: a page, a redirect,
        401, 403, 405...) from one that moved or answers 404 to everything, whose 404 says
        nothing of the file. Read as gone, such a file was taken down by `--apply` and
        denylisted for good on a misconfiguration's word."""
        root = self._head(f"{host}/")
        status = root.status
        if status is not None and status not in GONE_STATUSES and status < 500:
            return _HostState("one", root.now.exchanges)
        said = f"HTTP {status}" if status is not None else "no answer"
        return _HostState("not serving", root.now.exchanges,
                          f"{host} holds no other file of the dataset, and its root ({host}/) "
                          f"answered {said} too: it may have moved or answer 404 to "
                          "everything, so its file is not taken for deleted on its word (if it "
                          "is gone, take it down by --key)")

    def _judged(self, item: Item, head: _Head) -> Now:
        if head.status != 404:
            return head.now
        state = self.hosts[_host(item.file_url)]
        exchanges = head.now.exchanges + state.exchanges
        if state.kind == "not serving":
            return replace(head.now, state=UNREACHABLE, detail=f"{head.now.detail}; "
                           f"{state.detail}", exchanges=exchanges)
        return replace(head.now, exchanges=exchanges)

    def close(self) -> None:
        # Not waiting: after Ctrl-C a HEAD to a host that does not answer held the command
        # up to its timeout; its answer is thrown away (a finished recheck has none left).
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.fetcher.close()


class _Head(NamedTuple):
    now: Now
    status: int | None  # the HTTP status answered, None when no answer came


class _HostState(NamedTuple):
    kind: str  # "serving" | "not serving" | "one" (no other file of ours on it)
    exchanges: tuple[Any, ...]  # the witnesses' answers, kept with a 404's verdict
    detail: str = ""


_SERVING = _HostState("serving", ())


def _host(url: str | None) -> str:
    return origin(url or "") or ""
