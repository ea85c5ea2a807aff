"""The per-candidate stages: each takes one record and returns the next record or a Rejection.

They know nothing of the ledger, the shards or who schedules them (a thread, a process, a
Ray worker); the pipeline strings them together and records the outcome.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from builder import clock
from builder.records import (
    Candidate,
    Checked,
    Fetched,
    HttpInfo,
    Licensed,
    Reason,
    Rejection,
    decided_license,
)

Stage = Callable[[Any], Any]
_PREPARED_KEPT = 256


@dataclass(frozen=True)
class StageSpec:
    """A named stage, and the reason to record if it fails in a way nobody foresaw."""

    name: str
    run: Stage
    on_error: Reason


def licence_gate(candidate: Candidate, *, policy: Any) -> Licensed | Rejection:
    from builder.licensing import decide

    decision = decide(candidate.evidence, policy)
    if isinstance(decision, Rejection):
        return decision
    return Licensed(candidate=candidate, license=decision)


def fetch_stage(licensed: Licensed, *, fetcher: Any, max_bytes: int,
                redirects: Callable[[], Any] | None = None) -> Fetched | Rejection:
    """Download the image. `redirects`: makes the opt-out gate's guard that checks each
    redirect's target before it is followed (builder.optout.RedirectGuard)."""
    cand = licensed.candidate
    if cand.local_path is not None:
        return _read_local(licensed, max_bytes)
    if not cand.url:
        return Rejection(Reason.HTTP_ERROR, "the source gave no URL for this item")
    guard = redirects() if redirects is not None else None
    response = fetcher.fetch(cand.url, max_bytes=max_bytes, before_redirect=guard)
    if isinstance(response, Rejection):
        return response
    return Fetched(
        licensed=licensed,
        data=response.data,
        retrieved_at=clock.now_iso(),
        http=HttpInfo(
            status=response.status,
            etag=response.header("etag"),
            last_modified=response.header("last-modified"),
            content_type=response.header("content-type"),
            headers=response.headers,
        ),
        optout=licensed.optout + (tuple(guard.trail) if guard is not None else ()),
        sha256=response.sha256,
    )


def _read_local(licensed: Licensed, max_bytes: int) -> Fetched | Rejection:
    """A folder source's file. A name that is not UTF-8 cannot be recorded (the ledger, the
    provenance and the papers are UTF-8): refused for good, naming the file with its odd
    bytes escaped. A file that cannot be read (permissions, I/O error) says nothing about
    the image: `connection_error`, a transient reason, so running the same command again
    retries it once the file is readable."""
    path = licensed.candidate.local_path
    assert path is not None
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        return Rejection(
            Reason.HTTP_ERROR,
            f"the file name is not UTF-8: {shown} (its non-UTF-8 bytes shown as \\xNN); "
            "rename the file (or the folder so named) to UTF-8, e.g. convmv -f latin1 -t utf8")
    try:
        size = os.path.getsize(path)
        if size > max_bytes:
            return Rejection(Reason.TOO_LARGE, f"{size} bytes > max_bytes {max_bytes}")
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        return Rejection(
            Reason.CONNECTION_ERROR,
            f"cannot read the local file {path}: {exc.strerror or exc}; make it readable "
            "and run the same command again to retry it")
    if len(data) > max_bytes:
        return Rejection(Reason.TOO_LARGE, f"more than max_bytes {max_bytes}")
    empty = HttpInfo(status=None, etag=None, last_modified=None, content_type=None)
    return Fetched(licensed=licensed, data=data, retrieved_at=clock.now_iso(), http=empty,
                   optout=licensed.optout)


def image_check(fetched: Fetched, *, config: Any, pipeline: str | None = None
                ) -> Checked | Rejection:
    """`pipeline`: the dataset's hash pipeline; None for the one a new dataset gets."""
    from builder.media import HASH_PIPELINE, check_image

    info = check_image(fetched.data, config, pipeline=pipeline or HASH_PIPELINE,
                       sha256=fetched.sha256)
    if isinstance(info, Rejection):
        return _maybe_cut_in_transit(info, fetched.http)
    expected = fetched.licensed.candidate.expected_sha1
    if expected and expected.lower() != info.sha1:
        return _maybe_cut_in_transit(Rejection(
            Reason.CORRUPT_IMAGE,
            f"sha1 {info.sha1} differs from the source's stated sha1 {expected.lower()}",
        ), fetched.http)
    return Checked(fetched=fetched, image=info, optout=fetched.optout)


def _maybe_cut_in_transit(rejection: Rejection, http: HttpInfo) -> Rejection:
    """A body sent with neither Content-Length nor chunked framing ends where the server
    closes the connection, so a transfer cut short (a server restarted, a proxy timing out)
    arrives as a clean, shorter body: its image then reads as damaged, for good. Which of
    the two it was cannot be told from here, so it is the network's (transient, retried by
    the next run), as a cut framed body already is (the fetcher sees that one)."""
    if rejection.reason is not Reason.CORRUPT_IMAGE or not _ends_at_close(http):
        return rejection
    return Rejection(
        Reason.CONNECTION_ERROR,
        f"{rejection.detail}; the server sent no Content-Length and closed the connection, "
        "so a transfer cut short cannot be told from a damaged file: retried by the next run")


def _ends_at_close(http: HttpInfo) -> bool:
    if http.status is None:  # a local file: read whole
        return False
    names = {name.lower(): value for name, value in http.headers}
    return ("content-length" not in names
            and "chunked" not in names.get("transfer-encoding", "").lower())


def run_stages(record: Any, stages: list[StageSpec]) -> Any:
    """Push one record through the stages; stop at the first Rejection.

    An exception nobody foresaw (a bug, or input stranger than any test) must not lose the
    candidate or stop a days-long build: it becomes a Rejection naming the stage and error.
    """
    for stage in stages:
        known = decided_license(record)  # a refusal past the gate still names the licence
        try:
            outcome = stage.run(record)
        except Exception as exc:  # noqa: BLE001 - recorded, never swallowed silently
            outcome = Rejection(stage.on_error,
                                f"{stage.name}: unexpected {type(exc).__name__}: {exc}")
        if isinstance(outcome, Rejection):
            return outcome.with_license(known)
        record = outcome
    return record


@dataclass(frozen=True)
class StagePlan:
    """Everything needed to build the per-candidate stages, picklable.

    An executor ships the plan to wherever the stages run (this process's threads, worker
    processes, Ray workers) and each place builds its own stages once: HTTP connection pools
    and per-host robots.txt caches cannot travel between processes.
    """

    recipe: Any
    policy: Any
    out: Any
    # The dataset's (builder/dedup.py dataset_hash_pipeline): every build into a dataset
    # hashes as its first build did. None: the pipeline a new dataset gets.
    hash_pipeline: str | None = None
    # The build the evidence archive records for: exchanges are made into its WARC records
    # where the stages ran, off the build's one ordered writer. None: left raw.
    evidence_build: int | None = None

    def build(self) -> Workbench:
        from builder.fetch import Fetcher
        from builder.optout import OptoutGate

        recipe = self.recipe
        fetcher = Fetcher(recipe.fetch, trusted_hosts=recipe.fetch.trusted_hosts)
        optout = OptoutGate.from_recipe(recipe, fetcher=fetcher, out=self.out,
                                        policy=self.policy)
        stages = [
            StageSpec("licence", partial(licence_gate, policy=self.policy),
                      Reason.LICENSE_UNRECOGNIZED),
            StageSpec("optout-before-fetch", optout.before_fetch, Reason.OPTOUT_UNCHECKED),
            StageSpec("fetch", partial(fetch_stage, fetcher=fetcher,
                                       max_bytes=recipe.fetch.max_bytes,
                                       redirects=optout.redirect_guard), Reason.HTTP_ERROR),
            StageSpec("optout-headers", optout.after_fetch, Reason.OPTOUT_UNCHECKED),
            StageSpec("image", partial(image_check, config=recipe.image,
                                       pipeline=self.hash_pipeline), Reason.CORRUPT_IMAGE),
            StageSpec("optout-embedded", optout.after_check, Reason.OPTOUT_UNCHECKED),
        ]
        return Workbench(stages=stages, fetcher=fetcher, optout=optout,
                         evidence_build=self.evidence_build)


@dataclass
class Workbench:
    """The stages built from a plan, with the resources they hold."""

    stages: list[StageSpec]
    fetcher: Any
    optout: Any
    evidence_build: int | None = None
    # Exchanges cited by many candidates (a host's robots.txt) are prepared once.
    prepared: OrderedDict[Any, Any] = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, candidate: Candidate) -> Any:
        """The outcome, carrying every HTTP exchange its stages relied on (host files, the
        image) back to the build process for the evidence archive, as records ready to
        write when the plan names the build."""
        from builder.fetch import recording

        with recording() as taped:
            outcome = run_stages(candidate, self.stages)
        if taped and isinstance(outcome, Checked | Rejection):
            outcome = replace(outcome, exchanges=self._for_archive(taped))
        return outcome

    def _for_archive(self, taped: list[Any]) -> tuple[Any, ...]:
        if self.evidence_build is None:
            return tuple(taped)
        from builder.evidence.warc import prepare
        from builder.sources import _keys

        secrets = _keys.registered()  # a new secret makes a cached record stale
        out = []
        for exchange in taped:
            with self.lock:
                known = self.prepared.get((exchange, secrets))
            if known is None:
                known = prepare(self.evidence_build, exchange, _keys.scrub)
                with self.lock:
                    self.prepared[(exchange, secrets)] = known
                    if len(self.prepared) > _PREPARED_KEPT:
                        self.prepared.popitem(last=False)
            out.append(known)
        return tuple(out)

    def close(self) -> None:
        self.fetcher.close()
