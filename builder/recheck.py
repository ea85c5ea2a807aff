"""`cleanset recheck`: ask every source again about every sample (or a seeded random sample)
and say what changed since the build, without downloading any image.

    ledger samples (key order, a chunk at a time)
      -> each source's rechecker (its API in batches, a HEAD, or the local file)   -> Now
      -> each host's robots.txt / ai.txt / tdmrep.json, read once per host         -> signals
         (and each sample's landing page, with `[optout] landing_page = true`)
      -> builder.drift.judge, under the policy recorded for the sample's build      -> Verdict
      -> ledger: the chunk's verdicts and progress, one transaction (resumable)

The sources and the politeness settings (user agent, rates, retries, private-address guard)
come from the recipe each build recorded, read again from its path when the file is still
there with the same sha256, or from `--recipe PATH`. A plain recheck changes no shard,
manifest or paper: it adds its record to the ledger, and the answers behind every verdict
that is not `unchanged` to the evidence archive (builder/evidence/recheck_archive.py).
`--apply` then takes down every sample a build today would refuse, through builder.takedown.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import sqlite3
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any

from tqdm import tqdm

from builder import clock, interrupts
from builder.drift import Outcome, Recorded, Verdict, judge
from builder.errors import UserError
from builder.evidence.archive import record_targets
from builder.evidence.recheck_archive import RecheckArchive
from builder.faults import crash_point, stop_point
from builder.fetch import Fetcher, recording
from builder.identity import tool_version
from builder.ledger import (
    LEDGER_FILE,
    RECIPE_TEXT_META,
    Ledger,
    check_not_emptied,
    require_dataset,
)
from builder.licensing import Policy
from builder.lock import OutputLock, ReadLock
from builder.optout import load_optout
from builder.optout.config import OptoutConfig
from builder.optout.consent import HostConsent
from builder.optout.denylist import Denylist
from builder.optout.hostfiles import origin
from builder.recheck_log import (
    RecheckLog,
    RecheckRow,
    apply_asked,
    days_between,
    describe_scope,
    recheck_config,
)
from builder.recipe import Recipe, load_recipe
from builder.records import Evidence, Exchange
from builder.sources import source_module
from builder.sources._recheck import HeadRechecker
from builder.sources.base import UNREACHABLE, Item, Now, Rechecker, SourceContext
from builder.takedown_journal import DENYLIST

log = logging.getLogger("cleanset.recheck")

SAMPLE_COLUMNS = ("key, build, source, source_id, file_url, landing_url, sha1, sha256, license,"
                  " bytes, provenance")
REFUSED_SHOWN = 20  # refused samples listed in the summary; --json lists every one
UNCHECKED_SHOWN = 5  # unreachable ones: often a whole host's, alike but for the URL


@dataclass(frozen=True)
class RecheckOptions:
    out: Path
    sources: tuple[str, ...] = ()  # () = every source
    sample: int | None = None  # a random sample of this many samples
    seed: int | None = None  # the sample's seed (reported; random when not given)
    recipes: tuple[Path, ...] = ()  # --recipe: for builds whose recorded recipe is gone
    apply_reason: str | None = None  # --apply --reason TEXT
    progress: bool | None = None  # None: a bar only on a terminal
    emit: Callable[[dict[str, Any]], None] | None = None  # --json: each sample's verdict
    # Samples per ledger transaction; the env var lets the crash tests commit often.
    chunk: int = field(default_factory=lambda: int(os.environ.get("CLEANSET_RECHECK_CHUNK",
                                                                  "500")))


@dataclass
class RecheckResult:
    row: RecheckRow
    seconds: float
    resumed: bool
    recorded: bool  # False for a read-only DIR: nothing was written there
    host_requests: int
    refused: list[Verdict]  # the first REFUSED_SHOWN
    notes: list[str] = field(default_factory=list)
    takedown: Any = None  # builder.takedown.TakedownResult with --apply
    pages_read: int = 0  # landing pages, with [optout] landing_page = true
    unchecked: list[Verdict] = field(default_factory=list)  # the first UNCHECKED_SHOWN

    def lines(self) -> list[str]:
        row = self.row
        # A read-only directory's recheck has no number: the one its scratch record gave it
        # (always 1) is, in that directory's ledger, another recheck's.
        name = str(row.recheck) if self.recorded else "(not recorded)"
        out = [f"cleanset recheck {name} finished: {row.total} samples rechecked "
               f"({describe_scope(row.scope)}), {self.host_requests} host files"
               + (f" and {self.pages_read} landing pages" if self.pages_read else "")
               + " read, "
               f"{self.seconds:.1f} s" + (" (resumed)" if self.resumed else "")]
        out += [f"  note: {n}" for n in self.notes]
        for outcome in Outcome:
            out.append(f"  {outcome.value}: {row.counts.get(outcome.value, 0)}")
        out.append(f"  would now be refused: {row.refused}")
        unchecked = row.counts.get(Outcome.UNREACHABLE.value, 0)
        if unchecked:
            out.append(f"  could not be checked: {unchecked} (unreachable above: nothing is "
                       "known of them since they were last seen; the same command asks "
                       "again, exit 4 until it can)")
            out += [f"    {v.key} ({v.source}): {v.detail}" for v in self.unchecked]
            if unchecked > len(self.unchecked):
                out.append(f"    ... and {unchecked - len(self.unchecked)} more (--json lists "
                           "every sample)")
        out += [f"    {v.key} ({v.source}) {v.outcome.value}: {v.detail}" for v in self.refused]
        if row.refused > len(self.refused):
            out.append(f"    ... and {row.refused - len(self.refused)} more (--json lists "
                       "every sample)")
        if not self.recorded:
            out.append("  not recorded: the directory is read-only (a writable copy keeps "
                       "the record and can resume)")
        if self.takedown is not None:
            out += [f"  {line}" for line in self.takedown.lines()
                    if not line.startswith("removed ")]
        elif row.refused and self.recorded:
            out.append("  take them down with the same command plus --apply --reason TEXT")
        elif row.refused:
            out.append("  take them down with --apply --reason TEXT where the directory can "
                       "be written (the original, or a writable copy)")
        return out


# -- the command ----------------------------------------------------------------------------
def recheck(options: RecheckOptions) -> RecheckResult:
    out = options.out
    _check_directory(out)
    if options.apply_reason is not None:  # before the recheck, not after it at --apply
        from builder.takedown import require_utf8

        require_utf8(options.apply_reason, "recheck: --reason")
    started = time.monotonic()
    writable = is_writable(out)
    if not writable and options.apply_reason is not None:
        raise UserError(f"{out}: is read-only; --apply takes samples down, which rewrites "
                        "shards. Run it where the directory can be written.")
    with OutputLock(out) if writable else nullcontext():
        # Held from the recheck through --apply's takedown: a command that took the
        # directory between the two made the apply fail after hours of rechecking.
        result = _recheck(options, writable=writable)
        if options.apply_reason is not None and result.row.refused:
            stop_point("recheck_applying")
            try:
                result.takedown = _apply(out, result.row, options.apply_reason)
            except UserError as exc:
                # The takedown's "Nothing changed" read as if the whole recheck were lost.
                said = UserError(
                    f"recheck {result.row.recheck} is finished and recorded "
                    f"({result.row.refused} sample(s) refused), but its --apply takedown "
                    f"stopped: {exc} Once that is fixed, the same command takes down what "
                    "this recheck found without asking the sources again.")
                said.exit_code = exc.exit_code
                raise said from exc
    result.seconds = time.monotonic() - started
    return result


def _check_directory(out: Path) -> None:
    require_dataset(out, hint="(Or the URL it was published to.)")
    check_not_emptied(out / LEDGER_FILE)


def is_writable(out: Path) -> bool:
    return os.access(out, os.W_OK) and os.access(out / LEDGER_FILE, os.W_OK)


def _recheck(options: RecheckOptions, *, writable: bool) -> RecheckResult:
    """The recheck itself; a writable directory's writer lock is the caller's."""
    out = options.out
    finished = None  # an interrupted takedown this recheck finished first
    with ExitStack() as stack:
        if writable:
            from builder.takedown import complete_pending_locked

            finished = complete_pending_locked(out)
        else:
            stack.enter_context(ReadLock(out, "recheck"))
            if (out / ".takedown.json").exists():
                raise UserError(f"{out}: holds an interrupted takedown; run `cleanset takedown "
                                f"{out}` where the directory can be written, then recheck.")
        ledger = Ledger(out / LEDGER_FILE, readonly=not writable)
        stack.callback(ledger.close)
        db = ledger.db if writable else _scratch_db(stack)
        run = _Recheck(options, ledger, db)
        stack.callback(run.close)
        result = run.execute()
        result.recorded = writable
        if writable and finished is not None:
            result.notes.insert(0, f"finished the interrupted takedown {finished} first "
                                   "(see takedowns.jsonl)")
        return result


def _scratch_db(stack: ExitStack) -> sqlite3.Connection:
    """Where a recheck of a read-only directory keeps its record while it runs."""
    scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cleanset-recheck-")))
    db = sqlite3.connect(str(scratch / "recheck.sqlite"), isolation_level=None,
                         check_same_thread=False)
    stack.callback(db.close)
    return db


def _apply(out: Path, row: RecheckRow, reason: str) -> Any:
    """Take down every refused sample in one takedown (one new version); each key's entry in
    takedowns.jsonl names its recheck outcome and what changed."""
    from builder.takedown import Selectors, takedown

    ledger = Ledger(out / LEDGER_FILE)
    try:
        refused = list(RecheckLog(ledger.db).verdicts(row.recheck, refused_only=True))
    finally:
        ledger.close()
    notes = tuple((v.key, f"recheck {row.recheck}: {v.outcome.value}: {v.detail}")
                  for v in refused)
    selectors = Selectors(keys=tuple(v.key for v in refused), notes=notes,
                          recheck=row.recheck)  # marked applied as the takedown commits
    return takedown(out, selectors, f"recheck {row.recheck}: {reason.strip()}", locked=True)


# -- one recheck ----------------------------------------------------------------------------
class _Recheck:
    def __init__(self, options: RecheckOptions, ledger: Ledger, db: sqlite3.Connection) -> None:
        self.options = options
        self.out = options.out
        self.ledger = ledger
        self.db = db  # where the record goes: created only once everything checked out
        self.checkers: dict[tuple[str, ...], Rechecker] = {}  # one per source config
        self.checker_of: dict[tuple[str, int], Rechecker] = {}  # (source, build) ->
        self.host_fetcher: Fetcher | None = None
        self.notes: list[str] = []
        self.host_files_index: dict[str, list[str]] | None = None
        self.max_age_days = recheck_config(ledger.db).max_age_days
        self.scope_sources = self._scope_sources()
        self.where, self.where_args = _source_filter(self.scope_sources)
        try:
            self._prepare()  # every user error (recipe, keys) before anything is recorded
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for checker in self.checkers.values():
            checker.close()
        if self.host_fetcher is not None:
            self.host_fetcher.close()

    # -- what to ask, and how -------------------------------------------------------------
    def _scope_sources(self) -> list[str]:
        known = [s for (s,) in self.ledger.db.execute(
            "SELECT DISTINCT source FROM samples ORDER BY source")]
        unknown = [s for s in self.options.sources if s not in known]
        if unknown:
            raise UserError(f"--source {unknown[0]}: no sample of {self.out} comes from a "
                            f"source of that name. Its sources: {', '.join(known) or 'none'}.")
        return sorted(set(self.options.sources)) or known

    def _prepare(self) -> None:
        db = self.ledger.db
        builds = {b.build: b for b in self.ledger.builds()}
        if not builds:
            raise UserError(f"{self.out}: the ledger records no build; nothing to recheck.")
        used = [b for (b,) in db.execute(
            f"SELECT DISTINCT build FROM samples {self.where} ORDER BY build", self.where_args)]
        recipes = _resolve_recipes(self.out, [builds[b] for b in used], self.options.recipes,
                                   self.notes, recorded_text=self._recorded_text)
        self.policies = {b: Policy.from_json(json.loads(builds[b].policy)) for b in used}
        # Each sample is asked about with the source as its own build configured it: the
        # newest build's source of that name once asked for every sample, and a folder
        # source pointed at another folder for a new version called every image of the
        # earlier versions deleted (they are in the folder their build read). Builds whose
        # source reads the same share one rechecker.
        for name, build in db.execute(f"SELECT DISTINCT source, build FROM samples "
                                      f"{self.where}", self.where_args):
            recipe = recipes[build]
            spec = _source_spec(name, recipe)
            same = (name, spec.kind, repr(spec.config), str(recipe.base_dir), repr(recipe.fetch))
            if same not in self.checkers:
                self.checkers[same] = _open_rechecker(spec, recipe)
                if isinstance(self.checkers[same], HeadRechecker):
                    self.checkers[same].witnesses = self._files_on_host
            self.checker_of[(name, build)] = self.checkers[same]
        latest = recipes[max(used)] if used else None
        if latest is None:
            self.optout, self.denylist = OptoutConfig(), Denylist()
            self.consent = None
            return
        # The denylists a build into the dataset would read today: the recipe's (an opt-out
        # registry's export, refreshed since) and the dataset's own (its takedowns).
        self.optout, self.denylist = load_optout(latest.extra.get("optout", {}),
                                                 file=latest.file, base=latest.base_dir)
        self.denylist.load(Path(self.out) / DENYLIST, required=False)
        self.host_fetcher = Fetcher(latest.fetch, trusted_hosts=latest.fetch.trusted_hosts)
        self.consent = HostConsent(self.host_fetcher, self.optout,
                                   workers=latest.fetch.workers)

    def _files_on_host(self, host: str) -> list[str]:
        """A few file URLs of the dataset's samples on `host` (scheme://host[:port]): what
        a HEAD rechecker asks to tell a file gone from a host answering 404 to everything.
        The first ask indexes every sample's host, a few URLs each (one pass, not one per
        host)."""
        if self.host_files_index is None:
            index: dict[str, list[str]] = defaultdict(list)
            for (url,) in self.ledger.db.execute(
                    "SELECT file_url FROM samples WHERE file_url IS NOT NULL ORDER BY key"):
                urls = index[origin(url) or ""]
                if len(urls) < HeadRechecker.witnesses_asked + 1 and url not in urls:
                    urls.append(url)
            self.host_files_index = dict(index)
        return self.host_files_index.get(host, [])

    def _recorded_text(self, build: int) -> str | None:
        return self.ledger.get_meta(RECIPE_TEXT_META.format(build=build))

    # -- the loop -------------------------------------------------------------------------
    def execute(self) -> RecheckResult:
        self.record = RecheckLog(self.db)
        owed = self._owed_takedown()
        row, resumed = (owed, True) if owed is not None else self._start_or_resume()
        if self.options.apply_reason is not None and owed is None:
            with self.record.transaction():
                self.record.ask_apply(row.recheck, self.options.apply_reason)
        # The answers behind each verdict that is not `unchanged`, and every host file read,
        # kept with the dataset's evidence; a read-only copy's recheck (a scratch record)
        # keeps none.
        archive = RecheckArchive(self.out, self.db, recheck=row.recheck,
                                 dataset=self.ledger.get_meta("dataset_name") or "dataset") \
            if self.db is self.ledger.db else None
        bar = tqdm(desc="recheck", unit=" samples", total=row.total, initial=row.done,
                   disable=_progress_off(self.options.progress), dynamic_ncols=True)
        try:
            last = row.last_key
            while (chunk := self._next_chunk(row, last)):
                interrupts.check()
                verdicts, relied = self._judge(chunk)
                last = chunk[-1].item.key
                with self.record.transaction():
                    if archive is not None:
                        archive.keep(chunk[0].item.key, (
                            (v.key, relied[v.key]) for v in verdicts
                            if v.outcome is not Outcome.UNCHANGED and relied[v.key]),
                            host_files=self._host_files(chunk))
                    self.record.record(row.recheck, verdicts, last)
                crash_point("recheck_chunk")
                bar.update(len(chunk))
        finally:
            bar.close()
        try:
            stop_point("recheck_judged")  # every sample judged, nothing printed yet
            if self.options.emit is not None:  # before finish(), which drops unchanged rows
                for verdict in self.record.verdicts(row.recheck):
                    self.options.emit(verdict.to_json())
        except KeyboardInterrupt:
            # Ctrl-C or SIGTERM (`--json | less`, the pager holding the output): left
            # running, every sample judged, so the same command asks no source again and
            # prints it all. Finished here, the rerun started a new recheck of every sample.
            raise
        except BaseException:
            # Every sample is judged: the recheck is finished whatever became of its output.
            # Left running when `--json | head -1` closed the pipe, the same command resumed
            # it, printed into a closed pipe again, and never finished.
            if owed is None:
                self._finish(row)
            raise
        if owed is None:
            self._finish(row)
        row = self.record.get(row.recheck)
        refused = list(islice(self.record.verdicts(row.recheck, refused_only=True),
                              REFUSED_SHOWN))
        unchecked = list(islice(self.record.verdicts(row.recheck, outcome=Outcome.UNREACHABLE),
                                UNCHECKED_SHOWN))
        requests = self.consent.requests if self.consent is not None else 0
        pages = self.consent.pages_read if self.consent is not None else 0
        return RecheckResult(row=row, seconds=0.0, resumed=resumed, recorded=True,
                             host_requests=requests, refused=refused, notes=self.notes,
                             pages_read=pages, unchecked=unchecked)

    def _finish(self, row: RecheckRow) -> None:
        with self.record.transaction():
            self.record.finish(row.recheck)

    def _owed_takedown(self) -> RecheckRow | None:
        """The last recheck, when this same command (--apply, same scope, same dataset
        version) finished it and was stopped before its takedown: what it refuses is taken
        down without asking every source again."""
        if self.options.apply_reason is None or self.db is not self.ledger.db:
            return None
        last = self.record.latest()
        if last is None or last.status != "finished" or last.applied is not None or \
                not last.refused or not apply_asked(self.db, last.recheck) or \
                not self._same_command(last, *self._scope()[:2]):
            return None
        age = days_between(last.finished_at, clock.wall_iso())
        if age is not None and age > self.max_age_days:
            return None  # too old to act on: the sources are asked again
        self.notes.append(f"recheck {last.recheck} finished at {last.finished_at} and was "
                          "stopped before its takedown: taking down what it found, without "
                          "asking the sources again")
        return last

    def _scope(self) -> tuple[dict[str, Any], int | None, int]:
        """The scope this command asks for as a recheck records it, its seed, and how many
        samples are in it."""
        total = int(self.ledger.db.execute(f"SELECT COUNT(*) FROM samples {self.where}",
                                           self.where_args).fetchone()[0])
        sample = self.options.sample
        seed = self.options.seed
        if sample is not None and sample >= total:
            sample, seed = None, None
        # The scope as recorded (a --sample covering every sample is recorded as none), so
        # the same command finds its own unfinished recheck: compared as given, a killed
        # `--sample N` of a dataset under N samples started afresh on every run.
        return ({"sources": list(self.options.sources and self.scope_sources),
                 "sample": sample}, seed, total)

    def _same_command(self, row: RecheckRow, wanted: dict[str, Any], seed: int | None) -> bool:
        """Whether `row` is a recheck of this command's scope on the dataset as it is."""
        version = int(self.ledger.get_meta("dataset_version") or 0)
        return row.version == version and \
            {k: row.scope.get(k) for k in wanted} == wanted and \
            seed in (None, row.scope.get("seed"))

    def _start_or_resume(self) -> tuple[RecheckRow, bool]:
        running = self.record.running()
        wanted, seed, total = self._scope()
        sample = wanted["sample"]
        if self.options.sample is not None and sample is None:
            self.notes.append(f"--sample {self.options.sample} covers all {total} samples "
                              "in scope")
        if running is not None and self._same_command(running, wanted, seed):
            if self._fresh_enough(running):
                return self._note_this_cleanset(running), True
        elif running is not None:
            self._note_abandoned(running)
        if sample is not None and seed is None:
            seed = random.SystemRandom().randrange(2**31)
        scope = {**wanted, "seed": seed}
        with self.record.transaction():
            if running is not None:
                self.record.abandon(running.recheck)
            keys = self._choose(total, sample, seed) if sample is not None else ()
            version = int(self.ledger.get_meta("dataset_version") or 0)
            recheck = self.record.start(scope, version, sample or total, keys,
                                        tool_version=tool_version())
        return self.record.get(recheck), False

    def _note_abandoned(self, running: RecheckRow) -> None:
        """Said aloud: an unfinished recheck of another scope or dataset version is dropped
        for this one (hours of a large recheck, once without a word)."""
        version = int(self.ledger.get_meta("dataset_version") or 0)
        why = (f"the dataset is at version {version} now, it rechecked version "
               f"{running.version}" if running.version != version
               else "this recheck asks about another scope")
        self.notes.append(f"recheck {running.recheck} ({describe_scope(running.scope)}, "
                          f"{running.done} of {running.total} samples judged) was unfinished "
                          f"and is abandoned: {why}. Its verdicts are kept in the ledger; "
                          f"the same command as recheck {running.recheck} starts it afresh")

    def _note_this_cleanset(self, running: RecheckRow) -> RecheckRow:
        """A recheck started by one cleanset and resumed by another (an upgrade between a
        Ctrl-C and the rerun) is named as made by both, the one that started it first, as a
        build so resumed is (ledger.build_tools)."""
        this = tool_version()
        if this == running.tool_version or this in running.resumed_by:
            return running
        with self.record.transaction():
            self.record.note_resumed_by(running, this)
        started = running.ran_by or "a cleanset that did not record its version"
        self.notes.append(f"recheck {running.recheck} was run by {started}; cleanset {this} "
                          "goes on with it (the ledger names each)")
        return self.record.get(running.recheck)

    def _fresh_enough(self, running: RecheckRow) -> bool:
        """Whether an unfinished recheck may be finished: it keeps the verdicts it made when
        they were made, and is dated by its start. One killed months ago was finished "now"
        with verdicts that old; past `[recheck] max_age_days` it is started afresh instead."""
        age = days_between(running.started_at, clock.wall_iso())
        if age is not None and age > self.max_age_days:
            self.notes.append(f"recheck {running.recheck}, started {running.started_at} "
                              f"({age} days ago) and never finished, was abandoned: its "
                              f"verdicts are older than {self.max_age_days} days; every "
                              "sample is judged afresh")
            return False
        if age:
            self.notes.append(f"resumed recheck {running.recheck}, started "
                              f"{running.started_at} ({age} days ago): the {running.done} "
                              "samples judged then keep those verdicts (the recheck is dated "
                              "by its start)")
        return True

    def _choose(self, total: int, sample: int, seed: int | None) -> Iterator[str]:
        """`sample` keys picked by a seeded RNG from the scope's keys in key order: the same
        seed on the same dataset version picks the same samples."""
        picks = sorted(random.Random(seed).sample(range(total), sample))
        cursor = self.ledger.db.execute(f"SELECT key FROM samples {self.where} ORDER BY key",
                                        self.where_args)
        wanted = iter(picks)
        target = next(wanted, None)
        for index, (key,) in enumerate(cursor):
            if target is None:
                break
            if index == target:
                yield key
                target = next(wanted, None)

    def _next_chunk(self, row: RecheckRow, after: str | None) -> list[Recorded]:
        size = max(1, self.options.chunk)
        db = self.ledger.db
        if row.scope.get("sample") is not None:
            keys = self.record.sample_keys(row.recheck, after, size)
            if not keys:
                return []
            marks = ",".join("?" for _ in keys)
            rows = db.execute(f"SELECT {SAMPLE_COLUMNS} FROM samples WHERE key IN ({marks}) "
                              "ORDER BY key", keys)
        else:
            clause = f"{self.where} {'AND' if self.where else 'WHERE'} key > ?"
            rows = db.execute(f"SELECT {SAMPLE_COLUMNS} FROM samples {clause} ORDER BY key "
                              "LIMIT ?", (*self.where_args, after or "", size))
        read = [_recorded(r) for r in rows]
        # Where a redirect took each build's image bytes (its image record in the archive).
        targets = record_targets(db, (record for _, record in read if record))
        return [replace(rec, served_from=target) if (target := targets.get(record or ""))
                and target != rec.item.file_url else rec for rec, record in read]

    def _judge(self, chunk: list[Recorded]) -> tuple[list[Verdict], dict[str, list[Exchange]]]:
        """Each sample's verdict, and the answers it relied on (for the archive)."""
        answers: dict[str, Now] = {}
        pages: dict[str, list[Exchange]] = {}  # an API's pages, shared by a batch
        by_checker: dict[tuple[str, int], list[Item]] = defaultdict(list)
        for rec in chunk:
            by_checker[(rec.source, rec.build)].append(rec.item)
        for which, items in by_checker.items():
            checker = self.checker_of[which]
            for start in range(0, len(items), checker.batch):
                batch = items[start:start + checker.batch]
                with recording() as taped:
                    answers.update(checker.ask(batch))
                pages.update((item.key, list(taped)) for item in batch)
        missing = Now(UNREACHABLE, "the source gave no answer for it")
        nows = {rec.item.key: answers.get(rec.item.key, missing) for rec in chunk}
        # Where a HEAD's redirects lead today is asked as the file's own host is: a build
        # reads the files of each redirect's target before following it. A source asked
        # through its API says nothing of its file URLs: where the build's bytes came from
        # stands for where the file is served.
        targets = {rec.item.key: self._served_from(rec, nows[rec.item.key]) for rec in chunk}
        urls = [u for rec in chunk for u in (rec.item.file_url, targets[rec.item.key][0]) if u]
        if self.consent is not None:
            self.consent.warm(urls, [rec.item.landing_url for rec in chunk
                                     if rec.item.file_url and rec.item.landing_url])
        verdicts, relied = [], {}
        for rec in chunk:
            now = nows[rec.item.key]
            url, page = rec.item.file_url, rec.item.landing_url
            host = self.consent.signals(url, page) if self.consent is not None and url else []
            target, when = targets[rec.item.key] if self.consent is not None and url else (
                None, "")
            if target:
                host += [replace(signal, said=f"{signal.said} (redirect to {target}{when})")
                         for signal in self.consent.signals(target)]
            verdicts.append(judge(rec, now, host, policy=self.policies[rec.build],
                                  optout=self.optout, denylist=self.denylist))
            relied[rec.item.key] = [
                *pages.get(rec.item.key, ()), *now.exchanges,
                *(self.consent.exchanges(url, page) if host else ()),
                *(self.consent.exchanges(target) if target and self.consent is not None
                  and origin(target) != origin(url) else ())]
        return verdicts, relied

    def _served_from(self, rec: Recorded, now: Now) -> tuple[str | None, str]:
        """Where the sample's file is served from when not its URL, and since when: today's
        redirect where the source's rechecker follows the URL (a HEAD), else the build's."""
        if getattr(self.checker_of[(rec.source, rec.build)], "follows_file_urls", False):
            return now.served_from, ""
        return rec.served_from, " when built"

    def _host_files(self, chunk: list[Recorded]) -> list[Exchange]:
        """The host files the chunk's samples were judged by (after `_judge`), each host's
        once."""
        if self.consent is None:
            return []
        hosts = {origin(u): u for rec in chunk if (u := rec.item.file_url)}
        return [ex for url in hosts.values() for ex in self.consent.exchanges(url)]


def _source_filter(sources: list[str]) -> tuple[str, tuple[str, ...]]:
    marks = ",".join("?" for _ in sources)
    return (f"WHERE source IN ({marks})", tuple(sources)) if sources else ("WHERE 0", ())


def _progress_off(progress: bool | None) -> bool | None:
    return None if progress is None else not progress


def _recorded(row: tuple[Any, ...]) -> tuple[Recorded, str | None]:
    """The sample as the ledger records it, and the id of its image's record in the
    evidence archive (none for a local file or a ledger from before the archive)."""
    (key, build, source, source_id, file_url, landing_url, sha1, sha256, license_id, size,
     provenance) = row
    prov = json.loads(provenance)
    src = prov.get("source") or {}
    http = prov.get("http") or {}
    evidence = tuple(Evidence(str(e.get("field")), str(e.get("value")))
                     for e in (prov.get("license") or {}).get("evidence") or [])
    item = Item(key=key, source_id=source_id, file_url=file_url, landing_url=landing_url,
                api_url=src.get("api_url"), path=src.get("path"), sha1=sha1, sha256=sha256,
                bytes=size, etag=http.get("etag"), last_modified=http.get("last_modified"),
                extra=tuple((str(e.get("name")), str(e.get("value")))
                            for e in prov.get("extra") or []))
    creator = (prov.get("attribution") or {}).get("creator")
    image = (prov.get("evidence") or {}).get("image") or {}
    record = image.get("record_id") if isinstance(image, dict) else None
    return Recorded(item=item, source=source, build=build, license=license_id,
                    evidence=evidence, creator=creator if isinstance(creator, str) else None,
                    pdq=prov.get("pdq") if isinstance(prov.get("pdq"), str) else None), (
        record if isinstance(record, str) else None)


# -- recipes --------------------------------------------------------------------------------
def _resolve_recipes(out: Path, builds: list[Any], given: tuple[Path, ...],
                     notes: list[str], *,
                     recorded_text: Callable[[int], str | None]) -> dict[int, Recipe]:
    """The recipe of each build: a --recipe with the recorded sha256, else the recorded
    file if unchanged, else the text the ledger kept of it (noted), else a --recipe that is
    an edited copy (noted), else exit 2."""
    offered = [load_recipe(path) for path in given]
    found: dict[int, Recipe] = {}
    for build in builds:
        recipe = next((r for r in offered if r.sha256 == build.recipe_sha256), None)
        if recipe is None:
            recipe = _recorded_recipe(build)
        if recipe is None:
            # Edited in place for the next version (or gone): the build's own text, as the
            # ledger kept it, says which folder and settings its samples came from; an
            # edited copy may point elsewhere (a folder source at the new version's folder
            # found every earlier image "deleted").
            recipe = _recipe_from_ledger(build, recorded_text(build.build))
            if recipe is not None:
                notes.append(f"build {build.build}: its recipe {build.recipe_path} "
                             f"{_recipe_state(build)}; read as the ledger recorded it "
                             f"(sha256 {build.recipe_sha256[:12]})")
        if recipe is None and offered:
            recipe = offered[0]
            notes.append(f"build {build.build}: using {recipe.file} (sha256 "
                         f"{recipe.sha256[:12]}), not the recipe it was built from "
                         f"({build.recipe_path}, sha256 {build.recipe_sha256[:12]})")
        if recipe is None:
            raise UserError(_recipe_missing(out, build))
        found[build.build] = recipe
    used = {id(r) for r in found.values()}
    for recipe in offered:
        if id(recipe) not in used:  # silently ignored, it would read as the one in use
            notes.append(f"--recipe {recipe.file} was not used: every build's own recipe is "
                         "unchanged, or kept in the ledger (or another --recipe is that file)")
    return found


def _recorded_recipe(build: Any) -> Recipe | None:
    path = Path(build.recipe_path)
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() != build.recipe_sha256:
        return None
    return load_recipe(path)


def _recipe_from_ledger(build: Any, text: str | None) -> Recipe | None:
    """The recipe text the build recorded, read as if still at its path; None when the
    ledger kept none (a build of an older cleanset) or it no longer loads there (its data
    files moved with it)."""
    if text is None:
        return None
    raw = text.encode("utf-8")
    if hashlib.sha256(raw).hexdigest() != build.recipe_sha256:
        return None
    try:
        return load_recipe(build.recipe_path, recorded=raw)
    except UserError:
        return None


def _recipe_state(build: Any) -> str:
    return "has changed since" if Path(build.recipe_path).is_file() else "is gone"


def _recipe_missing(out: Path, build: Any) -> str:
    path = Path(build.recipe_path)
    return (f"{out}: build {build.build} was made from the recipe {path} (sha256 "
            f"{build.recipe_sha256[:12]}...), which {_recipe_state(build)}; recheck reads its sources and "
            "[fetch] settings from it. Give it with --recipe PATH (the same file, or a copy "
            "whose sources keep their names).")


def _source_spec(name: str, recipe: Recipe) -> Any:
    spec = next((s for s in recipe.sources if s.name == name), None)
    if spec is None:
        raise UserError(f"{recipe.file}: has no source named {name!r}, which samples of this "
                        f"dataset come from. Give the recipe that built them with --recipe "
                        "PATH.")
    return spec


def _open_rechecker(spec: Any, recipe: Recipe) -> Rechecker:
    name = spec.name
    module = source_module(spec.kind, file=str(recipe.file), where=f"source {name!r}")
    opener = getattr(module, "rechecker", None)
    if opener is None:
        raise UserError(f"source {name!r} (kind {spec.kind}) cannot be rechecked by this "
                        "version of cleanset; leave it out with --source.")
    context = SourceContext(recipe_file=recipe.file, base_dir=recipe.base_dir,
                            fetch=recipe.fetch)
    checker: Rechecker = opener(spec.name, spec.config, context)
    return checker

