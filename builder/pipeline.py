"""The build, top to bottom:

    recipe -> sources -> candidates -> [licence gate -> fetch -> image check]   (any thread)
           -> [exact dedup -> key -> shard -> ledger]                           (in source order)

The per-candidate stages run concurrently; their outcomes are taken back strictly in the
order the sources yielded the candidates, so keys, dedup winners and shard contents never
depend on timing. Every `commit_every` decisions the open shard and the open evidence file
are fsynced, then the ledger transaction recording those decisions commits: a crash loses
at most the uncommitted window, which the resumed build redoes identically.

Every HTTP answer a decision relied on (the source's API pages, fetched here; robots.txt
and the image, fetched by the stages and carried back with the outcome) is written to the
evidence archive as the decision is taken, in the same order (builder/evidence).

A candidate refused for a transient reason (the network, not the candidate: records.py
TRANSIENT_REASONS) keeps what a retry needs in its ledger row. The next run of the same
recipe first retries those, in seq order, updating each row in place, up to MAX_ATTEMPTS
runs per candidate; only when none is left is the build "already complete".

On Ray two pieces can leave this process: the dedup indexes (`index_parts`, asked ahead a
batch at a time and reconciled here, builder/executors/ray_index.py) and the shard writing
(`write_shards = "workers"`, builder/worker_shards.py); the decisions never do.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import sys
import time
import tomllib
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from builder import clock, clusters, interrupts
from builder.dedup import (
    Exclusions,
    Hashes,
    Match,
    dataset_hash_pipeline,
    ledger_hash_rows,
    near_detail,
    nearest,
    open_ledger_index,
    record_dedup_rule,
)
from builder.display import unescaped
from builder.errors import BuildStoppedError, UserError
from builder.evidence.archive import NO_EVIDENCE, Evidence, EvidenceArchive, load_evidence_config
from builder.executors import Executor, make_executor
from builder.exports.papers import record_dataset_meta, require_writers, write_papers
from builder.faults import crash_point, stop_point
from builder.fetch import recording
from builder.identity import describe_tools, tool_version
from builder.ledger import RECIPE_TEXT_META, BuildRow, Ledger, RetryRow
from builder.lock import OutputLock
from builder.output_dir import LEDGER, check_output_dir, check_still_alone
from builder.provenance import BuildStamp, dumps, make_provenance
from builder.recipe import Recipe, SourceSpec
from builder.records import (
    MAX_ATTEMPTS,
    TRANSIENT_REASONS,
    Candidate,
    Checked,
    Detached,
    Exchange,
    Exchanges,
    Reason,
    Rejection,
    decided_license,
    is_transient,
)
from builder.shards import (
    OpenShard,
    fsync_dir,
    shard_name,
    shard_number,
    shard_path,
    temp_path,
)
from builder.sources import source_module
from builder.sources._failures import SourceError
from builder.sources.base import SourceContext
from builder.stages import StagePlan
from builder.worker_shards import (
    ShardPlan,
    record_rewind_point,
    rewind_unwritten,
    shard_written,
)

if TYPE_CHECKING:
    from builder.executors.ray_index import RayNearIndex

log = logging.getLogger("cleanset.build")


class ShardWriteError(UserError):
    """A worker could not write a shard; the ledger rewinds to it on the next run."""

    exit_code = 1


MAX_SHARD_WRITES = 2  # shards sent to workers and not yet committed, before the driver waits
# Meta key: the last seq decided by an unfinished retry pass, so a crashed pass resumes after
# it instead of trying those candidates a second time.
RETRY_CURSOR = "retry_cursor"
# A Ray worker's shard being written: NNNNNN.tar.TOKEN.tmp (builder/executors/ray.py).
_WORKER_TEMPORARY = re.compile(r"\d{6,}\.tar\.[A-Za-z0-9_-]+\.tmp")


@dataclass(frozen=True)
class BuildOptions:
    out: Path
    out_key: str = "--out"  # how the user named `out` (flag or recipe key), for messages
    limit: int | None = None
    workers: int | None = None
    progress: bool | None = None  # None: a bar only on a terminal
    # Decisions per ledger transaction (and fsync of the open shard); the env var lets the
    # crash tests put many commits into a small build.
    executor: str | None = None  # overrides [executor] kind
    write_shards: str | None = None  # overrides [executor] write_shards
    ray_address: str | None = None
    # A new build whose policy admits licences the dataset's last build refused (a recipe of
    # another dataset, pointed at this --out by mistake) is refused unless this says so.
    allow_looser_policy: bool = False
    # ... and one whose recipe names another dataset (the same mistake, a policy as strict).
    rename_dataset: bool = False
    commit_every: int = field(
        default_factory=lambda: int(os.environ.get("CLEANSET_COMMIT_EVERY", "256")))
    # ... or once this many seconds have passed since the last commit: at a polite host's
    # rate (`per_host_rps = 1`) 256 decisions are four minutes of downloads, all thrown
    # away by a Ctrl-C and redone by the rerun.
    commit_seconds: float = field(
        default_factory=lambda: float(os.environ.get("CLEANSET_COMMIT_SECONDS", "30")))


@dataclass
class BuildSummary:
    out: Path
    build: int
    status: str
    considered: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    bytes: int = 0
    seconds: float = 0.0
    shards_written: int = 0
    total_samples: int = 0
    total_shards: int = 0
    by_source: Counter[str] = field(default_factory=Counter)  # accepted in this run
    by_creator: Counter[str] = field(default_factory=Counter)
    optout: list[str] = field(default_factory=list)  # the opt-out gate's per-signal counts
    warnings: list[str] = field(default_factory=list)  # printed right under the first line
    source_notes: list[str] = field(default_factory=list)  # e.g. API rate limits waited out
    # Of `rejected`'s duplicates, the items the dataset already holds, read again.
    reread: Counter[str] = field(default_factory=Counter)
    transient: Counter[str] = field(default_factory=Counter)  # not in `rejected`
    transient_attempts: Counter[int] = field(default_factory=Counter)  # attempt made -> count
    retried: int = 0  # candidates of earlier runs tried again in this one
    finished_takedown: str | None = None  # an interrupted takedown finished before the build

    @property
    def images_per_s(self) -> float:
        return self.accepted / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        rejected = sum(self.rejected.values())
        transient = sum(self.transient.values())
        out = [
            f"cleanset build {self.status}: {self.considered} candidates, {self.accepted} accepted, "
            f"{rejected} rejected, " + (f"{transient} transient, " if transient else "")
            + f"{self.shards_written} shards written, "
            f"{self.bytes / 1e6:.1f} MB, {self.seconds:.1f} s, {self.images_per_s:.1f} images/s",
        ]
        if self.finished_takedown:
            out.append(f"  finished the interrupted takedown {self.finished_takedown} first "
                       "(see takedowns.jsonl)")
        out.extend(f"  WARNING: {warning}" for warning in self.warnings)
        if self.retried:
            out.append(f"  retried {self.retried} candidates that failed for a transient "
                       "reason in an earlier run")
        for reason, n in sorted(self.rejected.items()):
            again = self.reread.get(reason, 0)
            out.append(f"  rejected {reason}: {n}" + (
                f" ({'all' if again == n else again} of them already in the dataset: the same "
                "items, read again)" if again else ""))
        if transient:
            out.append("  " + self.transient_line())
        for source, n in sorted(self.by_source.items()):
            out.append(f"  accepted from source {source}: {n}")
        if self.by_creator:
            top = sorted(self.by_creator.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
            out.append(f"  accepted from {len(self.by_creator)} creators; most: "
                       + ", ".join(f"{name} {n}" for name, n in top))
        out.extend(self.optout)
        out.extend(self.source_notes)
        out.append(f"  dataset: {self.total_samples} samples in {self.total_shards} shards "
                   f"at {self.out}")
        return out


    def transient_line(self) -> str:
        """How many failed for a passing reason, and whether running again retries them."""
        total = sum(self.transient.values())
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(self.transient.items()))
        head = f"{total} candidates failed for a transient reason ({reasons})"
        spent = sum(n for attempt, n in self.transient_attempts.items()
                    if attempt >= MAX_ATTEMPTS)
        left = total - spent
        if not left:
            return (f"{head}; they have had all {MAX_ATTEMPTS} attempts and are not retried "
                    "again (their reasons stay in the ledger)")
        tried = sorted(a for a in self.transient_attempts if a < MAX_ATTEMPTS)
        attempt = (f"attempt {tried[0]}" if len(tried) == 1
                   else f"attempts {tried[0]}-{tried[-1]}")
        line = (f"{head}; run the same command again to retry them ({attempt} of "
                f"{MAX_ATTEMPTS})")
        if spent:
            line += f"; {spent} of them had their last attempt and are not retried again"
        return line


@dataclass(frozen=True)
class _Work:
    """One candidate to decide: fresh from a source (with the source cursor after it), or
    one an earlier run refused for a transient reason (`retry`, its ledger row)."""

    order: int  # its place in this run's decisions (the Ray index's prefetch answers)
    seq: int  # its ledger row
    candidate: Candidate
    source_index: int = 0
    state: dict[str, Any] | None = None
    retry: RetryRow | None = None
    fetched: Exchanges = ()  # the source's API responses asked since the previous candidate
    api: Exchanges = ()  # those its data came from (a retry has none: it reuses the candidate)


@dataclass(frozen=True)
class Sourced:
    """A candidate as its source gave it: where the source resumes after it, the API
    responses asked since the previous candidate (`fetched`, archived before it is decided)
    and those its data came from (`api`, shared by every candidate of the same page)."""

    index: int  # of its [[sources]] entry
    candidate: Candidate
    state: dict[str, Any]
    fetched: Exchanges = ()
    api: Exchanges = ()


@dataclass
class _Cursor:
    """Where the next candidate comes from: the ledger's resume point for this build."""

    seq: int
    source_index: int
    source_resume: dict[str, Any] | None


def build(recipe: Recipe, options: BuildOptions) -> BuildSummary:
    out = options.out
    _check_options(recipe, options)
    _warm_up_workers(recipe, options)
    require_writers()  # before any shard: the papers are written at the end, from the ledger
    _prepare_output(out, options.out_key)
    with OutputLock(out, command="build"):
        from builder.takedown import complete_pending_locked

        # An interrupted takedown is finished before anything else, and said: the dataset
        # the build reports is smaller than the one its user last saw.
        finished = complete_pending_locked(out)
        ledger = Ledger(out / LEDGER)
        # No build recorded: the directory's first (another build of it may have finished
        # since this one checked it, and is then no stranger)
        first = ledger.latest_build() is None
        try:
            check_still_alone(out, key=options.out_key, was_new=first)
        except UserError:
            ledger.close()
            if first:  # its ledger, empty but for its tables, and shards/: this build's own
                for end in ("", "-wal", "-shm", "-journal"):
                    Path(f"{out / LEDGER}{end}").unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    (out / "shards").rmdir()
            raise
        try:
            summary = _build_locked(recipe, options, ledger)
        finally:
            ledger.close()
    summary.finished_takedown = finished
    return summary


def _build_locked(recipe: Recipe, options: BuildOptions, ledger: Ledger) -> BuildSummary:
    from builder.licensing import load_policy

    policy = load_policy(recipe.policy.use, jurisdiction=recipe.policy.jurisdiction,
                         base_dir=recipe.base_dir)
    # Every build into a dataset hashes as its first build did (refused before a build starts
    # when this cleanset lacks that pipeline).
    hash_pipeline = dataset_hash_pipeline(ledger.db, options.out)
    _check_shards_present(ledger, options.out)
    row = _start_or_resume(ledger, recipe, policy.to_json(), options)
    started = time.monotonic()
    if row is None:
        latest = ledger.latest_build()
        assert latest is not None
        summary = BuildSummary(out=options.out, build=latest.build, status="already complete")
        summary.source_notes.extend(_unread_changes(recipe, latest))
    else:
        _note_this_cleanset(ledger, row)
        if rewind_unwritten(ledger, row, options.out / "shards"):
            log.info("rewound to the first shard that no worker had written")
            row = ledger.build(row.build)
            assert row is not None
        if ledger.get_meta("hash_pipeline") is None:
            ledger.set_meta("hash_pipeline", hash_pipeline)
        run = _Run(recipe, options, ledger, row, policy, hash_pipeline)
        try:
            summary = run.execute()
        except (BuildStoppedError, SourceError):
            raise  # a SourceError already says what was kept and to run the command again
        except UserError as exc:
            committed = ledger.build(row.build)
            if committed is None or committed.next_seq == 0:
                raise  # nothing decided yet: the fixed recipe takes this build over
            raise BuildStoppedError(
                f"{exc} Build {row.build} stopped there; what it committed is kept: fix this "
                "and run the same command again to resume it.") from None
        summary.warnings.extend(_empty_source_warnings(recipe, ledger, row.build))
    write_papers(ledger, options.out)
    summary.seconds = time.monotonic() - started
    summary.total_samples = ledger.sample_count()
    summary.total_shards = len(ledger.shards())
    return summary


def _note_this_cleanset(ledger: Ledger, row: BuildRow) -> None:
    """A build started by one cleanset and resumed by another (an upgrade between a Ctrl-C
    and the rerun) was recorded as the first's alone; each sample's provenance names the one
    that wrote it, and the ledger now names every one that ran the build."""
    ran = ledger.tools(row)
    if tool_version() in ran:
        return
    ledger.note_tool(row, tool_version(), clock.wall_iso())
    print(f"cleanset: note: build {row.build} was run by {describe_tools(ran[0], ran[1:])}; "
          f"cleanset {tool_version()} goes on with it (the ledger names each, every sample's "
          "provenance the one that wrote it)", file=sys.stderr)


def _unread_changes(recipe: Recipe, latest: BuildRow) -> list[str]:
    """Why "already complete" adds nothing when a table or folder the recipe reads was
    changed after its build finished: the same recipe is not read again (a user who added
    rows to a table saw only "already complete" and 0 candidates)."""
    finished = _epoch(latest.finished_at)
    if finished is None:
        return []
    changed = []
    for spec in recipe.sources:
        path = getattr(spec.config, "path", None)
        if not isinstance(path, str) or "://" in path:
            continue
        with contextlib.suppress(OSError):
            # finished_at is to the second: a file written in that second is not "after"
            if Path(path).stat().st_mtime >= finished + 1:
                changed.append(f"{path} (source {spec.name!r})")
    if not changed:
        return []
    return [f"  note: {', '.join(changed)} changed after build {latest.build} finished reading "
            f"it ({latest.finished_at}); the same recipe does not read its sources again. "
            "To add what is new, change the recipe (a new source, a higher limit, or any "
            f"edit): that starts build {latest.build + 1}, which reads every source again and "
            "refuses what the dataset already holds as duplicates."]


def _epoch(iso: str | None) -> float | None:
    from datetime import datetime

    try:
        return datetime.fromisoformat(iso).timestamp() if iso else None
    except ValueError:
        return None


def _check_shards_present(ledger: Ledger, out: Path) -> None:
    """A shard deleted or moved by hand: no build reports "complete" over it or dedups new
    candidates against the samples it held (they would be refused as duplicates of images
    the dataset no longer has)."""
    missing = [s for s in ledger.shards()
               if s.complete and not (out / "shards" / shard_name(s.shard)).is_file()]
    if not missing:
        return
    named = "; ".join(f"{shard_name(s.shard)} ({s.samples} samples, sha256 {s.sha256})"
                      for s in missing[:5]) + (f"; and {len(missing) - 5} more"
                                               if len(missing) > 5 else "")
    raise UserError(f"{out / 'shards'}: {len(missing)} shard(s) the ledger records are "
                    f"missing: {named}. The directory was changed outside cleanset. Restore "
                    "them from a copy of the dataset (the sha256 tells a good copy; "
                    f"`cleanset verify {out}` checks it), then run the same command again; "
                    "with no copy, take their samples down (the keys verify lists as in no "
                    f"shard: `cleanset takedown {out} --key KEY ... --reason 'shard lost'`; "
                    "they are denylisted, as in any takedown). Nothing changed.")


def _check_options(recipe: Recipe, options: BuildOptions) -> None:
    """Executor settings that cannot work, refused before the output directory exists."""
    kind = options.executor or recipe.executor.kind
    if kind == "ray":
        _check_ray(options.ray_address or recipe.executor.ray_address)
        return
    if kind == "processes":
        from builder.executors.local import processes_blocked

        if (blocked := processes_blocked()) is not None:
            raise UserError(f"{recipe.file}: the processes executor cannot start here: "
                            f"{blocked}; or use --executor threads.")
    if (options.write_shards or recipe.executor.write_shards) == "workers":
        raise UserError(
            f"{recipe.file}: write_shards = \"workers\" (or --write-shards workers) needs the "
            "Ray executor ([executor] kind = \"ray\" or --executor ray); the local executors "
            "write shards in the build process.")
    parts = recipe.executor.index_parts
    if parts and recipe.dedup.near:
        raise UserError(f"{recipe.file}: [executor] index_parts = {parts} splits the "
                        "near-duplicate index over Ray actors and needs kind = \"ray\" "
                        "(or --executor ray); set index_parts = 0 otherwise.")


def _check_ray(address: str | None) -> None:
    """Ray installed, and something listening at a host:port address: refused before the
    output directory exists. (ray.init waits for an address nobody answers at, in silence,
    for as long as one lets it.)"""
    import importlib.util
    import socket

    if importlib.util.find_spec("ray") is None:
        raise UserError("executor 'ray' needs Ray, which is not installed: pip install "
                        "'cleanset[ray]', or use --executor auto. Nothing was written.")
    target = (address or "").removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", or unset: a private Ray on this machine
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise UserError(f"--ray-address / [executor] ray_address {address!r}: nothing answers "
                        f"there ({exc.strerror or exc}). Start the cluster (`ray start --head` "
                        "prints its address) or fix the address; leave it unset for a Ray on "
                        "this machine only. Nothing was written.") from None


def _warm_up_workers(recipe: Recipe, options: BuildOptions) -> None:
    """Worker processes' fork server started now if the build will want it, so that it
    imports the stages while this process starts up (builder/executors/local.py)."""
    kind = options.executor or recipe.executor.kind
    if kind not in ("auto", "processes"):
        return
    from builder.executors.local import warm_up

    warm_up(kind, processes=recipe.executor.processes,
            per_host_connections=recipe.fetch.per_host_connections,
            expected=_expected_candidates(recipe))


def _expected_candidates(recipe: Recipe) -> int:
    """What the sources can tell cheaply of the candidates they hold (a table's rows, from
    its metadata or size); a source that cannot tell counts none."""
    total = 0
    for spec in recipe.sources:
        module = source_module(spec.kind, file=str(recipe.file), where="sources")
        estimate = getattr(module, "expected_candidates", None)
        if estimate is not None:
            total += estimate(spec.config)
    return total


def _empty_source_warnings(recipe: Recipe, ledger: Ledger, build: int) -> list[str]:
    """One line per source that yielded no candidate at all in a build that read every source
    to its end. Local sources are refused earlier (builder/recipe.py); an API search may
    legitimately find nothing, but it is more often a typo in a query or a category, and
    the build is then complete: running it again will not ask again."""
    row = ledger.build(build)
    if row is None or not row.exhausted:
        return []
    seen = {name for (name,) in ledger.db.execute(
        "SELECT DISTINCT source FROM candidates WHERE build = ?", (build,))}
    warnings = []
    for spec in recipe.sources:
        if spec.name not in seen:
            warnings.append(
                f"source {spec.name!r} ({spec.kind}) yielded no candidates at all. Check its "
                f"settings in {recipe.file} (query, category, ids, api): this build is "
                "complete, so the same command will not ask again; a corrected recipe starts "
                "a new build in the same directory.")
            log.warning(warnings[-1])
    return warnings


def _prepare_output(out: Path, key: str) -> None:
    check_output_dir(out, key=key)  # refuses, creating nothing, what is not ours to write
    stop_point("output_checked")
    try:
        (out / "shards").mkdir(parents=True, exist_ok=True)
        probe = out / ".write-probe"
        probe.write_bytes(b"")
        stop_point("write_probe")
        # missing_ok: another command starting on the same directory shares the name and
        # may have removed it first (this one then said "cannot be used: No such file")
        probe.unlink(missing_ok=True)
    except PermissionError:
        raise UserError(
            f"{key} {out}: not writable by this user. Fix its permissions or choose another."
        ) from None
    except OSError as exc:
        raise UserError(f"{key} {out}: cannot be used: {exc.strerror or exc}.") from None


def _start_or_resume(ledger: Ledger, recipe: Recipe, policy: dict[str, Any],
                     options: BuildOptions) -> BuildRow | None:
    """The build to work on, or None when this recipe's build has nothing left to do."""
    limit = options.limit
    latest = ledger.latest_build()
    if latest is not None and latest.recipe_sha256 == recipe.sha256:
        read_all = latest.exhausted or (limit is not None and latest.next_seq >= limit)
        if (latest.finished_at is not None and read_all
                and not ledger.has_retryable(latest.build, max_attempts=MAX_ATTEMPTS,
                                             reasons=TRANSIENT_REASONS)):
            return None
        return latest
    if latest is not None and latest.finished_at is None:
        if _same_recipe_rewritten(ledger, latest, recipe):
            # Comments or layout only (the TOML reads the same): the build goes on with it.
            ledger.db.execute("UPDATE builds SET recipe_sha256 = ?, recipe_path = ? "
                              "WHERE build = ?", (recipe.sha256, str(recipe.file), latest.build))
            _record_recipe_text(ledger, latest.build, recipe)
            print(f"cleanset: note: {recipe.file} was edited since build {latest.build} "
                  "started from it, but reads the same (comments or layout only): resuming "
                  "the build with it", file=sys.stderr)
            return ledger.build(latest.build)
        if _nothing_decided(ledger, latest):
            return _take_over(ledger, latest, recipe, policy, options)
        raise UserError(_unfinished_elsewhere(ledger, latest, recipe))
    if latest is not None:
        _check_same_dataset(ledger, latest, recipe, policy, options)
    row = ledger.start_build(
        recipe_sha256=recipe.sha256, recipe_path=str(recipe.file),
        dataset_name=recipe.dataset.name, policy=policy, tool_version=tool_version(),
        started_at=clock.wall_iso(),
    )
    _record_recipe_text(ledger, row.build, recipe)
    return row


def _nothing_decided(ledger: Ledger, build: BuildRow) -> bool:
    """A build stopped before it decided a single candidate (an API refusing the recipe's
    request, a sidecar broken at the start): nothing in the dataset comes from its recipe."""
    return build.next_seq == 0 and ledger.db.execute(
        "SELECT (SELECT COUNT(*) FROM candidates WHERE build = ?) + "
        "(SELECT COUNT(*) FROM shards WHERE build = ?)", (build.build, build.build)
    ).fetchone()[0] == 0


def _take_over(ledger: Ledger, stopped: BuildRow, recipe: Recipe, policy: dict[str, Any],
               options: BuildOptions) -> BuildRow:
    """The recipe given (most often the one fixed after that stop) becomes the stopped
    build's: otherwise "fix the recipe" would end at "an unfinished build of another recipe"."""
    previous = next((b for b in reversed(ledger.builds())
                     if b.build < stopped.build and b.finished_at is not None), None)
    if previous is not None:
        _check_same_dataset(ledger, previous, recipe, policy, options)
    ledger.db.execute(
        "UPDATE builds SET recipe_sha256 = ?, recipe_path = ?, dataset_name = ?, policy = ?, "
        "tool_version = ?, exhausted = 0, source_index = 0, source_resume = NULL "
        "WHERE build = ?",
        (recipe.sha256, str(recipe.file), recipe.dataset.name,
         json.dumps(policy, sort_keys=True), tool_version(), stopped.build))
    # Nothing of the cleanset that started it is left in it: this one started it now.
    ledger.db.execute("DELETE FROM build_tools WHERE build = ?", (stopped.build,))
    _record_recipe_text(ledger, stopped.build, recipe)
    print(f"cleanset: note: build {stopped.build} stopped before deciding any candidate; it "
          f"goes on with {recipe.file} as it is now", file=sys.stderr)
    taken = ledger.build(stopped.build)
    assert taken is not None
    return taken


def _check_same_dataset(ledger: Ledger, latest: BuildRow, recipe: Recipe,
                        policy: dict[str, Any], options: BuildOptions) -> None:
    """A new build into a dataset that already has samples: one whose policy admits a
    licence the last build's refused would mix, say, NonCommercial images into a dataset
    published for commercial use, and its papers would quietly list both policies."""
    from builder.licensing import Policy, is_admitted, load_catalogue

    before = json.loads(latest.policy)
    if before != policy:
        old, new = Policy.from_json(before), Policy.from_json(policy)
        looser = sorted(spdx for spdx in load_catalogue().entries
                        if is_admitted(spdx, new) and not is_admitted(spdx, old))
        if looser and not options.allow_looser_policy:
            shown = ", ".join(looser[:6]) + (f" and {len(looser) - 6} more"
                                             if len(looser) > 6 else "")
            raise UserError(
                f"{recipe.file}: [policy] {new.name!r} admits licences that policy "
                f"{old.name!r} of build {latest.build} into {ledger.path.parent} refused "
                f"({shown}): this build would add such images to a dataset its earlier "
                "builds kept clear of them. If that is meant, run it again with "
                "--allow-looser-policy; otherwise build this recipe into another --out. "
                "Nothing changed.")
        print(f"cleanset: note: this build's policy {new.name!r} differs from "
              f"{old.name!r} of build {latest.build}; the papers list both", file=sys.stderr)
    named = ledger.get_meta("dataset_name")
    if named and named != recipe.dataset.name:
        if not options.rename_dataset:
            raise UserError(
                f"{recipe.file}: [dataset] name is {recipe.dataset.name!r}, but "
                f"{ledger.path.parent} holds dataset {named!r} ({ledger.sample_count()} "
                f"samples): this build would add this recipe's images to it and rename it. "
                "If --out is the wrong directory, build into another; if that dataset is "
                "meant to take this name and these images, run it again with "
                "--rename-dataset. Nothing changed.")
        print(f"cleanset: note: {recipe.file} names the dataset {recipe.dataset.name!r}; "
              f"{ledger.path.parent} was {named!r} until now, and its papers will say "
              f"{recipe.dataset.name!r}", file=sys.stderr)


def _record_recipe_text(ledger: Ledger, build: int, recipe: Recipe) -> None:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        raw = recipe.file.read_bytes()
        if hashlib.sha256(raw).hexdigest() == recipe.sha256:
            ledger.set_meta(RECIPE_TEXT_META.format(build=build), raw.decode("utf-8"))


def _same_recipe_rewritten(ledger: Ledger, latest: BuildRow, recipe: Recipe) -> bool:
    recorded = ledger.get_meta(RECIPE_TEXT_META.format(build=latest.build))
    if recorded is None or latest.recipe_path != str(recipe.file):
        return False
    try:
        return tomllib.loads(recorded.removeprefix("\ufeff")) == \
            tomllib.loads(recipe.file.read_text("utf-8").removeprefix("\ufeff"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False


def _unfinished_elsewhere(ledger: Ledger, latest: BuildRow, recipe: Recipe) -> str:
    out = ledger.path.parent
    key = RECIPE_TEXT_META.format(build=latest.build)
    kept = (f" (the text it started from is kept in the ledger: `sqlite3 {ledger.path} "
            f"\"SELECT value FROM meta WHERE key = '{key}'\"` prints it)"
            if ledger.get_meta(key) is not None else "")
    if latest.recipe_path == str(recipe.file):
        return (f"{out}: build {latest.build} started from {recipe.file} as it was before an "
                f"edit (sha256 {latest.recipe_sha256[:12]}, now {recipe.sha256[:12]}) and did "
                "not finish. An unfinished build resumes only with the recipe it started "
                f"from: undo the edit{kept}, run the same command to finish build "
                f"{latest.build}, then build the edited recipe into {out} (it extends the "
                f"dataset). {_close_where_stopped(latest, out)} Nothing changed.")
    return (f"{out}: holds an unfinished build of another recipe ({latest.recipe_path}, sha256 "
            f"{latest.recipe_sha256[:12]}){kept}. Finish it by running that recipe again, or "
            f"build this one into another --out. {_close_where_stopped(latest, out)} Nothing "
            "changed.")


def _close_where_stopped(stopped: BuildRow, out: Path) -> str:
    """The way out when the stopped build cannot finish as it was (a source it had not yet
    reached refuses the recipe's request, which is why the recipe was edited): without it,
    "finish it first" and "fix the recipe" sent the user round in a circle."""
    return (f"If build {stopped.build} cannot finish as it was (a source it had not reached "
            "yet refuses that recipe), close it where it stopped, keeping the "
            f"{stopped.next_seq} candidates it decided: run that recipe with --out {out} "
            f"--limit {stopped.next_seq}, then this one.")


def open_source(spec: SourceSpec, context: SourceContext) -> Any:
    module = source_module(spec.kind, file=str(context.recipe_file), where="sources")
    return module.SOURCE(spec.name, spec.config, context)


def enumerate_candidates(recipe: Recipe, start: _Cursor, *, opened: list[Any] | None = None,
                         trailing: list[Exchange] | None = None) -> Iterator[Sourced]:
    """Every candidate from the cursor on, in recipe order, with its resume state and API
    responses. Each source object is appended to `opened` (when given) as it is opened, so
    the build's summary can ask it what it met on the way (`summary_lines`, e.g. rate limits
    waited out); API responses asked after the last candidate go to `trailing`."""
    context = SourceContext(recipe_file=recipe.file, base_dir=recipe.base_dir, fetch=recipe.fetch)
    pending: list[Exchange] = []  # asked, not yet handed out with a candidate
    for index, spec in enumerate(recipe.sources):
        if index < start.source_index:
            continue
        resume = start.source_resume if index == start.source_index else None
        # Sources that cannot resume natively are re-read and skipped to where we were.
        skip = int(resume.get("__skip__", 0)) if resume else 0
        native = None if (resume is None or "__skip__" in resume) else resume
        consumed = skip
        source = open_source(spec, context)
        if opened is not None:
            opened.append(source)
        api: Exchanges = ()
        for position, (cand, fetched) in enumerate(_taped(source.candidates(native))):
            pending.extend(fetched)
            api = fetched or api
            if cand is None or position < skip:
                continue
            consumed += 1
            state = cand.resume if cand.resume is not None else {"__skip__": consumed}
            yield Sourced(index, cand, state, tuple(pending), api)
            pending = []
    if trailing is not None:
        trailing.extend(pending)


def _taped(candidates: Iterator[Candidate]) -> Iterator[tuple[Candidate | None, Exchanges]]:
    """Each candidate with the HTTP exchanges its source made to produce it; a last
    (None, exchanges) for what the source asked after its last candidate."""
    while True:
        with recording() as taped:
            cand = next(candidates, None)
        if cand is None:
            if taped:
                yield None, tuple(taped)
            return
        yield cand, tuple(taped)


@contextmanager
def _closing(executor: Executor) -> Iterator[Executor]:
    """Close `executor` when the block ends; when it ends stopping (Ctrl-C, an error), what
    is still running is thrown away, so without waiting for it (a host that never answers
    held Ctrl-C up to its fetches' timeouts)."""
    try:
        yield executor
    except BaseException:
        executor.close(wait=False)
        raise
    executor.close()


class _Run:
    def __init__(self, recipe: Recipe, options: BuildOptions, ledger: Ledger, row: BuildRow,
                 policy: Any, hash_pipeline: str) -> None:

        self.recipe = recipe
        self.options = options
        self.ledger = ledger
        self.row = row
        self.out = options.out
        self.shards_dir = options.out / "shards"
        self.per_shard = recipe.dataset.samples_per_shard
        self.image_ext = None if recipe.dataset.image_ext == "by-format" else recipe.dataset.image_ext
        self.hash_pipeline = hash_pipeline  # the dataset's (builder/dedup.py)
        self.stamp = BuildStamp(build=row.build, recipe_sha256=recipe.sha256,
                                policy=policy.name, dataset=recipe.dataset.name,
                                hash_pipeline=self.hash_pipeline)
        self.plan = StagePlan(recipe=recipe, policy=policy, out=options.out,
                              hash_pipeline=self.hash_pipeline, evidence_build=row.build)
        self.cursor = _Cursor(row.next_seq, row.source_index, row.source_resume)
        self.next_key = int(ledger.get_meta("next_key") or 0)
        self.shard: OpenShard | None = None
        self.since_commit = 0
        self.committed_at = time.monotonic()
        self.current_seq = self.cursor.seq
        self.current_order = 0
        self.exhausted = True  # every source read to its end (False: stopped at --limit)
        self.retrying = False  # deciding the retries of earlier runs' transient failures
        self.retry_cursor: int | None = None  # last retried seq not yet committed as done
        self.summary = BuildSummary(out=options.out, build=row.build, status="finished")
        # Dedup state: every sample already in DIR (earlier builds too), the eval set, the cap.
        clusters.ensure_schema(ledger.db)
        self.worker_shards = (options.write_shards or recipe.executor.write_shards) == "workers"
        self.planned: ShardPlan | None = None  # the shard being planned for a worker
        self.writing: deque[tuple[ShardPlan, Future[Any]]] = deque()  # sent, not committed
        self.executor: Any = None
        self.near: Any = None  # opened by execute(), once the executor (maybe Ray) is up
        self.remote: RayNearIndex | None = None  # self.near when it lives on Ray actors
        self.prefetched: dict[int, Any] = {}  # order -> its dedup answers, asked ahead
        self.prefetched_to = 0  # every order below this has been looked at by _prefetch
        self.index_note = ""
        self.sources: list[Any] = []  # the source objects this run opened, for the summary
        self.excluded = Exclusions.load(recipe.dedup.exclude, recipe.base_dir, recipe.dedup,
                                        pipeline=self.hash_pipeline)
        self.per_creator = clusters.concentration(ledger.db)[1]
        evidence = load_evidence_config(recipe.extra.get("evidence", {}), file=recipe.file)
        self.archive = EvidenceArchive(options.out, ledger.db, build=row.build,
                                       dataset=recipe.dataset.name,
                                       max_file_bytes=evidence.max_file_bytes)
        self.evidence: Evidence = NO_EVIDENCE  # the records of the candidate being decided

    # -- the loop -----------------------------------------------------------------------
    def execute(self) -> BuildSummary:
        self._clean_orphans()
        self._reopen_shard()
        self.archive.open()
        workers = self.options.workers or self.recipe.fetch.workers
        executor = make_executor(self.options.executor or self.recipe.executor.kind, self.plan,
                                 workers=workers, **self._executor_options())
        max_inflight = executor.max_inflight
        self.executor = executor
        if self.worker_shards:  # Ray only: build() checked the options (_check_options)
            executor.detach_bytes()
        limit = self.options.limit
        bar = tqdm(desc="cleanset", unit=" cand", disable=self._progress_off(), total=limit,
                   initial=self.cursor.seq if limit else 0, dynamic_ncols=True,
                   file=unescaped(sys.stderr))
        self.bar = bar
        inflight: deque[tuple[_Work, Future[Any]]] = deque()
        order = itertools.count()
        self.trailing: list[Exchange] = []  # API responses asked after the last candidate
        try:
            with _closing(executor):
                self.near = self._open_near_index()  # Ray actors need the executor's Ray
                self.ledger.begin()
                try:
                    self._decide_all(self._retries(order), inflight, max_inflight)
                    self._end_retry_pass()
                    self._decide_all(self._fresh(order), inflight, max_inflight)
                    for exchange in self.trailing:
                        self.archive.pointer(exchange)
                    if self.planned is not None:
                        self._send_shard()
                    self._commit_written(at_most=0)  # while the executor (Ray) is up
                finally:
                    self._close_near_index()
            self._finish(self.exhausted)
        except BaseException:
            for _, future in inflight:
                future.cancel()
            self.ledger.rollback()
            if self.shard is not None:
                self.shard.abandon()
            self.archive.abandon()
            raise
        finally:
            bar.close()
        self.summary.optout = executor.summary_lines() + ([self.index_note] if self.index_note
                                                          else [])
        self.summary.source_notes = [line for source in self.sources
                                     for line in getattr(source, "summary_lines", list)()]
        self.summary.status = "finished" if self.exhausted else f"stopped at --limit {limit}"
        return self.summary

    def _decide_all(self, work: Iterator[_Work], inflight: deque[tuple[_Work, Future[Any]]],
                    max_inflight: int) -> None:
        """Run every item's stages on the executor and decide them in the order given."""
        failed: SourceError | None = None
        try:
            for item in work:
                inflight.append((item, self.executor.submit(item.candidate)))
                while inflight and (len(inflight) >= max_inflight or inflight[0][1].done()):
                    self._prefetch(inflight)
                    self._decide(*inflight.popleft())
                    interrupts.check()
        except SourceError as exc:
            # An API that kept failing stops the build, but what its source had handed out
            # is decided and committed first: its error says everything decided so far is
            # kept, and the rerun resumes at the page that failed. Rolled back, the images
            # in flight and every decision since the last commit were fetched again.
            failed = exc
        while inflight:
            self._prefetch(inflight)
            self._decide(*inflight.popleft())
            interrupts.check()
        if failed is not None:
            self._commit()
            raise failed

    def _fresh(self, order: Iterator[int]) -> Iterator[_Work]:
        """The sources' candidates from the build's cursor on, up to --limit."""
        limit = self.options.limit
        seq = self.cursor.seq
        if self.row.exhausted:
            return  # read to the end already: this run only retried
        if limit is not None and seq >= limit:
            self.exhausted = False  # without opening a source (it may be the one offline)
            return
        # Never ask the sources for a candidate past --limit: asking for one more can fetch
        # a whole API page that no one will look at.
        wanted = None if limit is None else limit - seq
        stream = enumerate_candidates(self.recipe, self.cursor, opened=self.sources,
                                      trailing=self.trailing)
        try:
            for sourced in islice(stream, wanted):
                yield _Work(next(order), seq, sourced.candidate, source_index=sourced.index,
                            state=sourced.state, fetched=sourced.fetched, api=sourced.api)
                seq += 1
        finally:
            stream.close()  # the sources' clients, now rather than when collected
        if limit is not None and seq >= limit:
            self.exhausted = False

    def _retries(self, order: Iterator[int]) -> Iterator[_Work]:
        """Earlier runs' transient failures of this build with attempts left, in seq order,
        from where an interrupted retry pass stopped."""
        saved = self.ledger.get_meta(RETRY_CURSOR)
        after = json.loads(saved)["seq"] if saved else -1
        while True:
            page = self.ledger.retryable(self.row.build, after_seq=after,
                                         max_attempts=MAX_ATTEMPTS, reasons=TRANSIENT_REASONS)
            if not page:
                return
            if not self.retrying:
                self.retrying = True
                self.ledger.reopen_build(self.row.build)  # unfinished until the pass ends
                log.info("retrying candidates that failed for a transient reason")
            for row in page:
                yield _Work(next(order), row.seq, Candidate.from_json(row.candidate_json),
                            retry=row)
            after = page[-1].seq

    def _end_retry_pass(self) -> None:
        if self.ledger.get_meta(RETRY_CURSOR) is None and not self.retrying:
            return
        if self.worker_shards:
            # Retried samples have no rewind point a later run could use (their seqs are
            # behind the cursor), so their shards are written before the pass commits.
            if self.planned is not None:
                self._send_shard()
            self._commit_written(at_most=0)
        self.retrying = False
        self.retry_cursor = None
        self.ledger.delete_meta(RETRY_CURSOR)
        self._commit()

    def _prefetch(self, inflight: deque[tuple[_Work, Future[Any]]]) -> None:
        """Send the near-duplicate queries of every outcome already back, in one go, when the
        index is remote (a round trip per candidate would bound the build by the latency)."""
        if self.remote is None or not inflight:
            return
        start = max(self.prefetched_to - inflight[0][0].order, 0)
        orders: list[int] = []
        queries: list[tuple[Hashes | None, str | None]] = []
        for position in range(start, len(inflight)):
            work, future = inflight[position]
            if not future.done():
                break
            self.prefetched_to = work.order + 1
            outcome = future.result() if future.exception() is None else None
            if isinstance(outcome, Checked):
                image = outcome.image
                hashes = Hashes(image.pdq, image.pdq_quality, image.phash)
                orders.append(work.order)
                queries.append((hashes if self.remote.usable(hashes) else None,
                                image.sha256 if self.recipe.dedup.exact else None))
        if queries:
            self.prefetched.update(zip(orders, self.remote.prefetch(queries), strict=True))

    def _open_near_index(self) -> Any:
        dedup = self.recipe.dedup
        parts = self.recipe.executor.index_parts
        if not dedup.near:
            if parts:
                self.index_note = (f"  [executor] index_parts = {parts} not used: [dedup] near "
                                   "= false, and exact dedup alone stays in the ledger")
                log.warning(self.index_note.strip())
            return None
        if not parts:
            return open_ledger_index(self.ledger, dedup)
        from builder.executors.ray_index import RayNearIndex  # Ray: see _check_options

        record_dedup_rule(self.ledger, dedup)
        self.remote = RayNearIndex(dedup, parts, reload=lambda: ledger_hash_rows(self.ledger),
                                   reload_shas=self.ledger.sample_sha256s)
        return self.remote

    def _close_near_index(self) -> None:
        if self.remote is not None:
            self.index_note = (f"  dedup indexes split over {self.remote.parts} Ray actors "
                               f"({self.remote.rebuilds} parts rebuilt from the ledger)")
            self.remote.close()

    def _executor_options(self) -> dict[str, Any]:
        config = self.recipe.executor
        kind = self.options.executor or config.kind
        if kind in ("auto", "processes"):
            return {"processes": config.processes}
        if kind == "ray":
            return {"address": self.options.ray_address or config.ray_address,
                    "batch_size": config.batch_size, "num_cpus": config.processes}
        return {}

    def _progress_off(self) -> bool | None:
        if self.options.progress is None:
            return None  # tqdm decides: off when not a terminal
        return not self.options.progress

    # -- one decision, in source order --------------------------------------------------
    def _decide(self, work: _Work, future: Future[Any]) -> None:
        outcome = future.result()
        crash_point("decide")
        self.current_seq = work.seq
        self.current_order = work.order
        if self.writing:
            self._commit_written(at_most=MAX_SHARD_WRITES)
        for exchange in work.fetched:  # the source's pages, as it asked for them
            self.archive.pointer(exchange)
        self.evidence = self.archive.keep(work.seq, (*work.api, *outcome.exchanges),
                                          retry=work.retry is not None)
        if isinstance(outcome, Checked):
            admitted_as = decided_license(outcome)
            outcome = self._admit(outcome)
            if isinstance(outcome, Rejection):  # a duplicate, eval overlap, creator cap
                outcome = outcome.with_license(admitted_as)
        asked = self.prefetched.pop(work.order, None)
        if asked is not None:
            assert self.remote is not None
            self.remote.settle(asked)
        if isinstance(outcome, Rejection):
            self._record(work, "rejected", outcome.reason.value, outcome.detail, None,
                         outcome.license)
            self._count_rejection(work, outcome)
        else:
            key, spdx = outcome
            self._record(work, "accepted", None, None, key, spdx)
            self.summary.accepted += 1
        self.summary.considered += 1
        if work.retry is None:
            self.cursor = _Cursor(work.seq + 1, work.source_index, work.state)
        else:
            self.retry_cursor = work.seq
            self.summary.retried += 1
        self.since_commit += 1
        if self.summary.considered % 16 == 0 or self.since_commit == 1:
            self.bar.set_postfix(accepted=self.summary.accepted,
                                 rejected=sum(self.summary.rejected.values()), refresh=False)
        self.bar.update(1)
        # Worker-written shards of a retry pass commit with the pass (see _end_retry_pass).
        due = self.since_commit >= self.options.commit_every or \
            time.monotonic() - self.committed_at >= self.options.commit_seconds
        if due and not (self.retrying and self.worker_shards):
            self._commit()

    def _count_rejection(self, work: _Work, rejection: Rejection) -> None:
        if not rejection.transient:
            self.summary.rejected[rejection.reason.value] += 1
            return
        self.summary.transient[rejection.reason.value] += 1
        attempt = 1 if work.retry is None else work.retry.attempts + 1
        self.summary.transient_attempts[attempt] += 1

    def _admit(self, checked: Checked) -> tuple[str, str] | Rejection:
        image = checked.image
        hashes = Hashes(image.pdq, image.pdq_quality, image.phash)
        overlap = self.excluded.overlap(image.sha256, hashes)
        if overlap is not None:
            return Rejection(Reason.EVAL_OVERLAP, overlap)
        if self.recipe.dedup.exact:
            winner = self._exact_winner(image.sha256)
            if winner is not None:
                return self._duplicate(checked, winner, None)
        # Only admitted samples are indexed, so a match never chains through a rejected copy.
        match = nearest(self._near_matches(hashes)) if self.near is not None else None
        if match is not None:
            return self._duplicate(checked, match.key, match)
        cand = checked.fetched.licensed.candidate
        cap = self.recipe.dataset.max_per_creator
        if cap is not None and cand.creator and self.per_creator[cand.creator] >= cap:
            return Rejection(Reason.CREATOR_CAP, f"creator {cand.creator!r} already has {cap} "
                             "samples ([dataset] max_per_creator)")
        key = f"{self.next_key:010d}"
        self.next_key += 1
        self._write_sample(key, checked)
        if self.remote is not None:  # it holds the exact index too
            self.remote.add(key, hashes, image.sha256 if self.recipe.dedup.exact else None)
        elif self.near is not None:
            self.near.add(key, hashes)
        if cand.creator:
            self.per_creator[cand.creator] += 1
            self.summary.by_creator[cand.creator] += 1
        self.summary.by_source[cand.source] += 1
        return key, checked.fetched.licensed.license.spdx

    def _near_matches(self, hashes: Hashes) -> list[Match]:
        asked = self.prefetched.get(self.current_order)
        if self.remote is not None and asked is not None and asked.row is not None:
            return self.remote.search_prefetched(asked)
        return self.near.search(hashes)

    def _exact_winner(self, sha256: str) -> str | None:
        """The admitted sample with these bytes, if any. With the indexes on Ray actors a
        miss is answered there (asked ahead with the near query) and only a hit is looked
        up in the ledger; otherwise the ledger answers alone."""
        if self.remote is None:
            return self.ledger.key_for_sha256(sha256)
        asked = self.prefetched.get(self.current_order)
        if asked is not None and asked.sha_row is not None:
            maybe = self.remote.seen_prefetched(asked)
        else:
            maybe = self.remote.seen(sha256)
        return self.ledger.key_for_sha256(sha256, prefixes=False) if maybe else None

    def _duplicate(self, checked: Checked, winner: str, match: Match | None) -> Rejection:
        reason = Reason.DUPLICATE_EXACT if match is None else Reason.DUPLICATE_NEAR
        detail = f"same sha256 as {winner}" if match is None else near_detail(match)
        candidate_id = checked.fetched.licensed.candidate.candidate_id
        if self.ledger.sample_candidate_id(winner) == candidate_id:
            # The item that sample is, read again: a later build reads every source again.
            # Recorded as a copy, it made every sample of the manifest "found again as"
            # itself and the report count the whole dataset as exact copies.
            self.summary.reread[reason.value] += 1
            return Rejection(reason, f"{detail}: the same item, read again (not a copy)")
        if not clusters.recorded(self.ledger.db, winner, candidate_id):
            self._record_duplicate(checked, winner, match)
        return Rejection(reason, detail)

    def _record_duplicate(self, checked: Checked, winner: str, match: Match | None) -> None:
        clusters.record(self.ledger.db, build=self.row.build, seq=self.current_seq,
                        winner=winner, exact=match is None, checked=checked,
                        pdq_distance=match.pdq_distance if match else None,
                        phash_distance=match.phash_distance if match else None)

    def _write_sample(self, key: str, checked: Checked) -> None:
        if self.worker_shards and self.shard is None:
            self._plan_sample(key, checked)
            return
        if self.shard is None:
            number = self._next_shard_number()
            self.shard = OpenShard(self.shards_dir, number)
            self.ledger.upsert_shard(shard=number, build=self.row.build, samples=0, data_end=0,
                                     complete=False)
        provenance, provenance_json, ext, caption = self._sample_members(key, checked)
        members = {ext: checked.fetched.data, "json": provenance_json, "txt": caption}
        self.shard.write(key, members)
        self.summary.bytes += len(checked.fetched.data)
        self.ledger.add_sample(_sample_row(key, self.shard.shard, self.row.build,
                                           self.current_seq, checked, provenance,
                                           provenance_json, ext))
        if self.shard.samples >= self.per_shard:
            self._close_shard()

    def _next_shard_number(self) -> int:
        last = self.ledger.last_shard()
        # Never reuse a number, even one a takedown emptied and deleted: downstream copies
        # may still hold the old shard under that name.
        number = max(0 if last is None else last.shard + 1,
                     int(self.ledger.get_meta("next_shard") or 0))
        self.ledger.set_meta("next_shard", str(number + 1))
        return number

    def _sample_members(self, key: str, checked: Checked
                        ) -> tuple[dict[str, Any], bytes, str, bytes]:
        provenance = make_provenance(key, checked, self.stamp, evidence=self.evidence.to_json())
        ext = self.image_ext or checked.image.ext
        caption = checked.fetched.licensed.candidate.caption or ""
        # Every sample has the same three members: readers infer a schema from the first few.
        return provenance, dumps(provenance), ext, caption.encode("utf-8")

    # -- shards written by workers (builder/worker_shards.py) ----------------------------
    def _plan_sample(self, key: str, checked: Checked) -> None:
        if self.planned is None:
            number = self._next_shard_number()
            self.planned = ShardPlan(number)
            self.ledger.upsert_shard(shard=number, build=self.row.build, samples=0, data_end=0,
                                     complete=False)
            # self.cursor is still where this candidate came from
            record_rewind_point(self.ledger, number, build=self.row.build,
                                seq=self.current_seq, next_key=int(key),
                                source_index=self.cursor.source_index,
                                source_resume=self.cursor.source_resume)
        provenance, provenance_json, ext, caption = self._sample_members(key, checked)
        data = checked.fetched.data
        assert isinstance(data, Detached), "a worker-written shard needs detached bytes"
        self.planned.samples.append((key, ext, data, checked.image.sha256, provenance_json,
                                     caption))
        self.summary.bytes += len(data)
        self.ledger.add_sample(_sample_row(key, self.planned.number, self.row.build,
                                           self.current_seq, checked, provenance,
                                           provenance_json, ext))
        if len(self.planned.samples) >= self.per_shard:
            self._send_shard()

    def _send_shard(self) -> None:
        assert self.planned is not None
        plan, self.planned = self.planned, None
        self.ledger.upsert_shard(shard=plan.number, build=self.row.build,
                                 samples=len(plan.samples), data_end=0, complete=False)
        self.writing.append((plan, self.executor.write_shard(self.shards_dir, plan.number,
                                                             plan.samples)))

    def _commit_written(self, *, at_most: int) -> None:
        """Rename and record the shards workers have finished, in order, waiting for the
        oldest while more than `at_most` are out (their bytes fill the object store)."""
        while self.writing and (len(self.writing) > at_most or self.writing[0][1].done()):
            plan, future = self.writing.popleft()
            try:
                name, data_end, size, sha = future.result()
            except Exception as exc:  # noqa: BLE001 - whatever the worker raised, said plainly
                first = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
                raise ShardWriteError(
                    f"shard {plan.number}: a Ray worker could not write it into "
                    f"{self.shards_dir}: {type(exc).__name__}: {first}. With write_shards = "
                    "\"workers\" the output directory (or --stage) must be on a filesystem "
                    "every Ray worker shares with this process (NFS, Lustre, one machine). "
                    "Every decision committed so far is kept: fix the cause and run the same "
                    "command again.") from None
            crash_point("before_shard_rename")
            os.replace(self.shards_dir / name, shard_path(self.shards_dir, plan.number))
            fsync_dir(self.shards_dir)
            self.ledger.upsert_shard(shard=plan.number, build=self.row.build,
                                     samples=len(plan.samples), data_end=data_end,
                                     complete=True, size=size, sha256=sha)
            shard_written(self.ledger, plan.number)
            self.summary.shards_written += 1

    def _close_shard(self) -> None:
        assert self.shard is not None
        shard = self.shard
        data_end = shard.data_end
        crash_point("before_shard_rename")
        _, size, sha = shard.finalize()
        crash_point("after_shard_rename")
        self.ledger.upsert_shard(shard=shard.shard, build=self.row.build, samples=shard.samples,
                                 data_end=data_end, complete=True, size=size, sha256=sha)
        self.summary.shards_written += 1
        self.shard = None

    def _record(self, work: _Work, status: str, reason: str | None,
                detail: str | None, key: str | None, spdx: str | None) -> None:
        cand = work.candidate
        # A transient outcome keeps the candidate itself: the retry must not need the source.
        retry_with = cand.to_json() if is_transient(reason) else None
        if work.retry is not None:
            self.ledger.record_retry(
                work.retry, status=status, reason=reason, key=key, license=spdx,
                detail=_with_earlier(detail, work.retry), decided_at=clock.wall_iso(),
                retry_with=retry_with)
            return
        self.ledger.record_candidate(
            build=self.row.build, seq=work.seq, candidate_id=cand.candidate_id,
            source=cand.source, url=cand.url, status=status, reason=reason, detail=detail,
            key=key, license=spdx, decided_at=clock.wall_iso(), retry_with=retry_with,
        )

    # -- durability ---------------------------------------------------------------------
    def _commit(self) -> None:
        if self.shard is not None:
            data_end = self.shard.sync()  # the bytes first, then the ledger that points at them
            crash_point("after_shard_sync")
            self.ledger.upsert_shard(shard=self.shard.shard, build=self.row.build,
                                     samples=self.shard.samples, data_end=data_end,
                                     complete=False)
        self.archive.sync()  # its bytes too, before the rows that point at them commit
        self.ledger.advance(self.row.build, next_seq=self.cursor.seq,
                            source_index=self.cursor.source_index,
                            source_resume=self.cursor.source_resume)
        self.ledger.set_meta("next_key", str(self.next_key))
        if self.retry_cursor is not None:
            self.ledger.set_meta(RETRY_CURSOR, json.dumps({"seq": self.retry_cursor}))
        self.ledger.commit()
        crash_point("after_commit")
        stop_point("after_commit")
        self.ledger.begin()
        self.since_commit = 0
        self.committed_at = time.monotonic()

    def _finish(self, exhausted: bool) -> None:
        if self.shard is not None:
            self._close_shard()
        # A build stopped at --limit goes on appending to its open file when resumed.
        self.archive.finish(complete=exhausted)
        self.ledger.advance(self.row.build, next_seq=self.cursor.seq,
                            source_index=self.cursor.source_index,
                            source_resume=self.cursor.source_resume)
        self.ledger.set_meta("next_key", str(self.next_key))
        from builder.versions import build_has_unclaimed_keys, record_build_version

        # Also what a run of this build stopped before this one admitted: a resumed run
        # that admits nothing more still ends the build that grew the dataset.
        if self.summary.accepted or build_has_unclaimed_keys(self.ledger, self.row.build):
            # Every change to the dataset's content is a new version (cards, Croissant, diff).
            version = int(self.ledger.get_meta("dataset_version") or 0) + 1
            self.ledger.set_meta("dataset_version", str(version))
            record_build_version(self.ledger, note=f"build {self.row.build}")
        record_dataset_meta(self.ledger, self.recipe.dataset)
        # The report states the cap in force (the recipe is not kept beside the dataset).
        self.ledger.set_meta("max_per_creator", str(self.recipe.dataset.max_per_creator or ""))
        self.ledger.finish_build(self.row.build, finished_at=clock.wall_iso(),
                                 exhausted=exhausted)
        crash_point("before_finish_commit")
        self.ledger.commit()

    def _clean_orphans(self) -> None:
        """Remove shard files the ledger never committed (a crash after they were started)."""
        known = {s.shard: s for s in self.ledger.shards()}
        for path in sorted(self.shards_dir.iterdir()):
            name = path.name
            # Only names a build gives (shards.shard_name, .tmp, a worker's .TOKEN.tmp): a
            # `2024.tar` someone put there was deleted as a shard no ledger row names.
            is_tmp = name.endswith(".tar.tmp")
            number = shard_number(name.removesuffix(".tmp") if is_tmp else name)
            if number is None:
                if _WORKER_TEMPORARY.fullmatch(name):
                    path.unlink()  # a worker's temporary shard from a run that stopped
                continue
            row = known.get(number)
            if row is None or row.complete and is_tmp:
                path.unlink()

    def _reopen_shard(self) -> None:
        """Continue the shard this build left open, or its last partial one after --limit."""
        open_row = self.ledger.open_shard()
        if open_row is None:
            last = self.ledger.last_shard()
            if (last is None or last.build != self.row.build or last.samples >= self.per_shard
                    or self.row.exhausted or self.worker_shards):
                return
            open_row = last
            if not shard_path(self.shards_dir, last.shard).exists():
                return
        self.shard = OpenShard(self.shards_dir, open_row.shard, data_end=open_row.data_end,
                               samples=open_row.samples)
        self.ledger.begin()
        self.ledger.upsert_shard(shard=open_row.shard, build=open_row.build,
                                 samples=open_row.samples, data_end=open_row.data_end,
                                 complete=False)
        self.ledger.reopen_build(self.row.build)
        self.ledger.commit()
        assert temp_path(self.shards_dir, open_row.shard).exists()


def _with_earlier(detail: str | None, row: RetryRow) -> str:
    """The retried outcome's detail, followed by every earlier attempt's reason: the row is
    updated in place, and candidates.parquet must still show why it was refused before."""
    earlier = json.loads(row.earlier) if row.earlier else []
    reasons = [f"attempt {e['attempt']} {e['reason']}" for e in earlier]
    reasons.append(f"attempt {row.attempts} {row.reason}")
    note = f"attempt {row.attempts + 1} of {MAX_ATTEMPTS}; before: {', '.join(reasons)}"
    return f"{detail} ({note})" if detail else note


def _sample_row(key: str, shard: int, build: int, seq: int, checked: Checked,
                provenance: dict[str, Any], provenance_json: bytes,
                ext: str) -> dict[str, Any]:
    cand = checked.fetched.licensed.candidate
    lic = checked.fetched.licensed.license
    img = checked.image
    return {
        "key": key, "shard": shard, "build": build, "seq": seq,
        "sha256": img.sha256, "sha1": img.sha1, "pdq": img.pdq, "pdq_quality": img.pdq_quality,
        "phash": img.phash, "license": lic.spdx, "license_url": lic.url,
        "source": cand.source, "source_id": cand.source_id,
        "file_url": provenance["source"]["file_url"], "landing_url": cand.landing_url,
        "creator": cand.creator, "title": cand.title, "width": img.width, "height": img.height,
        "mime": img.mime, "ext": ext, "bytes": len(checked.fetched.data),
        "provenance": provenance_json.decode("utf-8"),
    }
